"""Fitting a CBDM generator: the Lightning module (``module.py``), the fit and its data (``fit.py``),
resumable checkpoints (``checkpoints.py``), callbacks and progress (``callbacks.py``, ``progress.py``),
the run folder every other command reads (``run_dir.py``) and ``cli.py`` (``fit-generator``).
"""
