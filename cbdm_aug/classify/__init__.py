"""Classifier training and its measurement: recipes (frozen dataclasses from YAML, ``recipe.py``), the
training loop over real and synthetic images (``train.py``, ``device_data.py`` for data held on the
device), long-tail losses (``losses.py``), metrics per class and shot group (``metrics.py``), paired
differences over seeds (``paired.py``), reports (``report.py``) and ``cli.py`` (``train-classifier``,
``compare``).
"""
