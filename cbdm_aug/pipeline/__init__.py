"""``cbdm-aug run``: the whole pipeline on a user's long-tailed data, as resumable stages.

``settings.py`` (what the user asked for and the defaults resolved from the data; torch-free, for
``--help``), ``stages.py`` (each stage's record and reuse rule), ``run.py`` (the stages: data,
generator, evidence, the classifier arms), ``cache_stage.py`` (the generated images: top-up, first
batch, filter), ``report.py`` (the per-class answer and the verdict)
and ``cli.py``.
"""
