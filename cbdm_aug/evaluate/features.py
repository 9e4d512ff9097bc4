"""Feature spaces for generator metrics, none of them downloaded at run time.

- ``inception``: torchmetrics' FID Inception-v3 (2048-d pool features) read from a local weights
  file (``feature_extractor_weights_path``), so numbers are comparable with papers. It needs
  ``torch-fidelity`` installed.
- ``classifier``: the penultimate features (``forward_head(..., pre_logits=True)``) of a small
  timm classifier trained by the recipe trainer on the user's real images with class-balanced
  re-sampling. Numbers in this space are comparable only with numbers from the same network.

A ``FeatureSpace`` maps uint8 (N, H, W, C) images to float (N, D) features, batch by batch.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cbdm_aug.errors import UserError

log = logging.getLogger(__name__)

NOT_COMPARABLE = ("Numbers computed in different feature spaces (Inception vs a trained classifier, "
                  "or two different classifiers) are not comparable with each other.")


class FeatureError(UserError):
    """A feature network that cannot be built or loaded."""


@dataclass
class FeatureSpace:
    """A frozen image -> feature network.

    ``network`` takes the input that ``_prepare`` makes and returns float (N, D). ``classifier``
    (or None) returns logits for the same input; ``filter-cache`` uses it.
    """

    name: str                     # "inception" or "classifier"
    description: str              # what the report prints
    network: torch.nn.Module
    prepare: object               # uint8 (N, H, W, C) numpy -> the network's input tensor
    num_features: int
    classifier: torch.nn.Module | None = None
    class_names: list[str] | None = None
    source: str = ""

    @torch.inference_mode()
    def extract(self, images: np.ndarray, batch_size: int = 256, progress: bool = False,
                desc: str = "features") -> torch.Tensor:
        """float32 (N, D) CPU features of uint8 (N, H, W, C) images."""
        from tqdm.auto import tqdm

        device = next(self.network.parameters()).device
        out = []
        for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
            out.append(self.network(self.prepare(images[i:i + batch_size]).to(device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_features)

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """float32 (N, num_classes) softmax probabilities of the classifier."""
        if self.classifier is None:
            raise FeatureError("this feature space has no classifier head (Inception); "
                               "use a classifier trained on the real data")
        device = next(self.classifier.parameters()).device
        out = [self.classifier(self.prepare(images[i:i + batch_size]).to(device)).float().softmax(1).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)


class _PreLogits(torch.nn.Module):
    """A timm classifier's penultimate features: (N, C, H, W) -> (N, num_features)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_features = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _classifier_prepare(image_size: int, channels: int):
    from cbdm_aug.data.convert import convert_images

    def prepare(images: np.ndarray) -> torch.Tensor:
        images = convert_images(np.ascontiguousarray(images), image_size, channels)
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return prepare


def load_classifier_space(run_dir: str | Path, device: str | torch.device = "cpu") -> FeatureSpace:
    """The feature space of a ``train-classifier`` run folder (its ``model.pt`` and ``metrics.json``)."""
    from cbdm_aug.networks import load_classifier_run

    model, info = load_classifier_run(run_dir, device)
    size, channels = int(info["data"]["image_size"]), int(info["data"]["channels"])
    return FeatureSpace(
        name="classifier",
        description=(f"penultimate features ({model.num_features}-d) of a {info['model']} classifier "
                     f"trained on real images with class-balanced re-sampling, at {size}x{size}x{channels} "
                     f"({run_dir})"),
        network=_PreLogits(model), prepare=_classifier_prepare(size, channels),
        num_features=int(model.num_features), classifier=model, class_names=list(info["class_names"]),
        source=str(run_dir))


def train_classifier_space(images: np.ndarray, labels: np.ndarray, class_names: list[str], out_dir: str | Path,
                           *, test: tuple[np.ndarray, np.ndarray] | None = None, epochs: int = 4,
                           model: str = "resnet8_cifar", seed: int = 0, progress: bool = True,
                           device: str = "auto", pretrained_file: str | None = None,
                           image_size: int | None = None, augment: str = "none") -> FeatureSpace:
    """Train a feature classifier on real uint8 (N, H, W, C) images with the recipe trainer.

    Class-balanced re-sampling (``sampling.mode=class-balanced``) keeps tail classes from being
    ignored. The run folder ``out_dir`` (model.pt, metrics.json, report) can be reused later with
    ``load_classifier_space``. ``test`` (images, labels) only scores the network; without it the
    training images are scored (training accuracy). ``pretrained_file`` (local weights for ``model``) and
    ``image_size`` (None: the images') make it the user's classifier, as ``cbdm-aug run``'s filter does.
    ``augment``: ``"randaugment"`` trains it with RandAugment (``CacheSettings.filter_augment``).
    """
    from cbdm_aug.classify.train import train_on_arrays

    out_dir = Path(out_dir)
    test_x, test_y = test if test is not None else (images, labels)
    result = train_on_arrays(images, labels, test_x, test_y, class_names, out_dir, name="evaluate-feature-net",
                             model=model, epochs=epochs, sampling="class-balanced", seed=seed, device=device,
                             progress=progress, command="cbdm-aug evaluate-generator (feature net)",
                             pretrained_file=pretrained_file, image_size=image_size, augment=augment)
    log.info("feature classifier: balanced accuracy %.3f on %s", result["metrics"]["balanced"],
             "the test images" if test is not None else "its training images")
    return load_classifier_space(out_dir)


class _InceptionInput(torch.nn.Module):
    def __init__(self, inception: torch.nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception(x).reshape(len(x), -1)


def inception_space(weights_path: str | Path) -> FeatureSpace:
    """torchmetrics' FID Inception-v3 (2048-d) from a local weights file; never downloads."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise FeatureError(f"--inception-weights {weights_path}: no such file; pass the local "
                           f"pt_inception-2015-12-05 weights file (torch-fidelity's FID Inception)")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights_path))
    except ModuleNotFoundError as e:
        raise FeatureError(f"the Inception feature space needs torch-fidelity ({e}); "
                           f"`pip install torch-fidelity`, or leave out --inception-weights") from None
    except Exception as e:  # noqa: BLE001 - a wrong or corrupt file
        raise FeatureError(f"{weights_path}: not usable Inception weights ({type(e).__name__}: {e})") from None

    def prepare(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # uint8, resized to 299 inside

    return FeatureSpace("inception", f"Inception-v3 pool features (2048-d) from {weights_path}, as in "
                        f"the FID literature", _InceptionInput(fid.inception), prepare, 2048, source=str(weights_path))
