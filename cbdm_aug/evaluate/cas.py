"""Classification Accuracy Score (Ravuri and Vinyals, 2019): train a classifier on generated images
only, test it on real test images, per class. The recipe trainer does the training."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def classification_accuracy_score(fake_images: np.ndarray, fake_labels: np.ndarray, class_names: list[str],
                                  test_images: np.ndarray, test_labels: np.ndarray, train_counts,
                                  out_dir: str | Path, *, epochs: int = 4, model: str = "resnet8_cifar",
                                  seed: int = 0, progress: bool = True, device: str = "auto") -> dict:
    """Train ``model`` on uint8 (N, H, W, C) generated images and score it on the real test images.

    ``train_counts`` (the real training counts per class) only defines the many/medium/few groups
    of the result. Returns the trainer's metrics (``top1``, ``balanced``, ``per_class``, groups);
    the run folder is ``out_dir``.
    """
    from cbdm_aug.classify.train import train_on_arrays

    counts = np.asarray(train_counts)
    result = train_on_arrays(fake_images, fake_labels, test_images, test_labels, class_names, out_dir,
                             name="classification-accuracy-score", model=model, epochs=epochs, seed=seed,
                             device=device, progress=progress, command="cbdm-aug evaluate-generator (CAS)")
    from cbdm_aug.classify.metrics import shot_groups

    # The trainer groups classes by *its* training counts (balanced synthetic ones); regroup by
    # the real training counts, which is what many/medium/few mean.
    metrics = dict(result["metrics"])
    per_class = metrics["per_class"]
    groups = shot_groups(counts.tolist(), *_thresholds(counts))
    for name, ids in groups.items():
        vals = [per_class[i] for i in ids if per_class[i] is not None]
        metrics[name] = float(np.mean(vals)) if vals else None
    metrics["groups"] = groups
    return metrics


def _thresholds(counts: np.ndarray) -> tuple[int, int]:
    """The literature's many > 100 / few < 20 split, unless it leaves no few-shot class (e.g.
    MNIST-LT with n_max 5000); then the 30 % rarest classes are "few" and the 30 % commonest "many"."""
    if (counts < 20).any():
        return 100, 20
    s = np.sort(counts)
    k = max(1, int(round(0.3 * len(s))))
    return int(s[-k - 1]), int(s[k - 1]) + 1
