"""Judging generated images: feature spaces (``features.py``), generator metrics (FID, KID,
precision/recall, memorisation: ``metrics.py``), the Classification Accuracy Score (``cas.py``), the
cache filter and its thresholds (``filter.py``, ``criteria.py``), the per-class gate (``gate.py``) and
the cross-fitted per-class evidence behind ``run``'s decisions (``evidence.py``), with
``evaluate-generator``'s run, report and CLI (``run.py``, ``report.py``, ``cli.py``) and the package's
error type (``errors.py``).
"""
