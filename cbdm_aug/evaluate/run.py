"""``evaluate_generator``: sample (or read) a balanced set of images, compare it with real images
in one feature space, and write the report. ``cbdm-aug evaluate-generator`` is a thin layer over it."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cbdm_aug.diffusion.sampler_settings import SAMPLING, SamplerSettings
from cbdm_aug.evaluate import metrics as M
from cbdm_aug.evaluate.errors import EvaluateError
from cbdm_aug.evaluate.features import NOT_COMPARABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealData:
    """Where the real images come from, and how the generator's long-tailed split was built."""

    path: str
    split: str = "train"
    longtail: str | None = None
    imbalance: float = 100.0
    max_per_class: int | None = None
    data_seed: int = 0


@dataclass(frozen=True)
class EvalOptions:
    samples_per_class: int = 100
    real_per_class: int | None = None      # reference images per class; None: samples_per_class
    k: int = M.DEFAULT_K
    near_copy_ratio: float = M.NEAR_COPY_RATIO
    sampler: str = SAMPLING.sampler         # how RUN_DIR is sampled: SamplerSettings' defaults (docs/decisions.md)
    steps: int | None = None                # None: the sampler's own count (sampler_settings.DEFAULT_STEPS)
    guidance: float = SAMPLING.guidance
    seed: int = SAMPLING.seed               # also the seed of the subsets, KID and the feature classifier
    batch_size: int = 64
    feature_epochs: int = 4
    cas_epochs: int = 4
    tail_share: float = 0.3

    def __post_init__(self):
        if self.samples_per_class < self.k + 1:
            raise EvaluateError(f"--samples-per-class must be > --k ({self.k}) for precision/recall, "
                                f"got {self.samples_per_class}")
        if self.k < 1:
            raise EvaluateError(f"--k must be >= 1, got {self.k}")
        if self.real_per_class is not None and self.real_per_class < self.k + 1:
            raise EvaluateError(f"--real-per-class must be > --k ({self.k}), got {self.real_per_class}")
        if not 0 <= self.near_copy_ratio <= 1:
            raise EvaluateError(f"--near-copy-ratio must be in [0, 1], got {self.near_copy_ratio}")
        object.__setattr__(self, "steps", self.sampling.steps)  # validated, and concrete in the report

    @property
    def sampling(self) -> SamplerSettings:
        """How RUN_DIR's images are sampled, as ``generate_cache`` takes it."""
        return SamplerSettings.of(self.sampler, self.steps, guidance=self.guidance, seed=self.seed)


def load_real(real: RealData, image_size: int, channels: int, class_names: list[str]):
    """(all real images, the long-tailed training split), both as ``LabeledImages`` at the
    generator's resolution, with the generator's classes."""
    from cbdm_aug.data import make_longtail, open_data
    from cbdm_aug.data.convert import convert_images

    data = open_data(real.path, split=real.split, image_size=image_size, channels=channels)
    if list(data.class_names) != list(class_names):
        raise EvaluateError(f"{real.path}: classes {data.class_names} differ from the generator's {class_names}")
    data.images = convert_images(data.images, image_size, channels)
    train = (make_longtail(data, real.longtail, real.imbalance, real.max_per_class, real.data_seed)
             if real.longtail else data)
    return data, train


def real_from_run(run_dir: Path) -> dict:
    """The data settings the generator was fitted with (its run.json), or {}."""
    path = Path(run_dir) / "run.json"
    try:
        return json.loads(path.read_text())["config"]["data"]
    except (OSError, KeyError, ValueError, TypeError):
        return {}


def _per_class_take(labels: np.ndarray, n: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices of at most ``n`` images of every class, drawn with ``seed``, in class order."""
    rng = np.random.default_rng(seed)
    order, cuts = M.class_slices(labels, num_classes)
    return np.concatenate([np.sort(rng.permutation(order[cuts[c]:cuts[c + 1]])[:n]) for c in range(num_classes)])


def synthetic_images(out: Path, *, run_dir: Path | None, cache: Path | None, class_names, image_size: int,
                     channels: int, opts: EvalOptions, device, progress: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """(uint8 images, labels, provenance) of ``samples_per_class`` generated images per class:
    read from ``cache``, or sampled from the run into ``out/samples.h5`` (resumable)."""
    from cbdm_aug.cache.reader import SyntheticCache
    from cbdm_aug.data.convert import convert_images

    if cache is None:
        from cbdm_aug.cache.generate import generate_cache
        from cbdm_aug.cache.plan import fixed_plan
        from cbdm_aug.generator.run_dir import load_generator

        gen = load_generator(run_dir, device)
        settings = opts.sampling
        plan = fixed_plan(gen.class_names, opts.samples_per_class, gen.meta.get("class_counts"))
        cache = out / "samples.h5"
        if not _reusable(cache, gen, plan, settings):
            generate_cache(gen, cache, plan, settings, batch_size=opts.batch_size, progress=progress,
                           command=f"cbdm-aug evaluate-generator {run_dir} --out {out}")
    with SyntheticCache(cache) as syn:
        if list(syn.class_names) != list(class_names):
            raise EvaluateError(f"{cache}: classes {syn.class_names} differ from {list(class_names)}")
        idx = _per_class_take(syn.labels, opts.samples_per_class, len(class_names), opts.seed)
        short = {class_names[c]: int(n) for c, n in enumerate(np.bincount(syn.labels[idx], minlength=len(class_names)))
                 if n < opts.k + 1}
        if short:
            raise EvaluateError(f"{cache}: too few images for precision/recall with k={opts.k} in classes {short}")
        ascending = np.argsort(idx, kind="stable")  # one read of the cache, in file order
        images = np.empty((len(idx), *syn.image_shape), np.uint8)
        images[ascending] = syn.batch(idx[ascending])
        labels = syn.labels[idx].copy()
        provenance = {"cache": str(cache), "sampler": syn.attrs["sampler"],
                      "weights_sha256": syn.attrs["generator"].get("weights_sha256")}
    return convert_images(images, image_size, channels), labels, provenance


def _reusable(cache: Path, gen, plan, settings) -> bool:
    """True for a complete ``cache`` from an earlier evaluation with the same generator and settings;
    an EvaluateError for one made otherwise. A partial file is resumed by ``generate_cache``."""
    from cbdm_aug.cache.reader import read_header

    if not cache.exists():
        return False
    h = read_header(cache, require_complete=False)
    if not h["complete"]:
        return False
    same = (h["generator"].get("weights_sha256") == gen.weights_sha256 and h["sampler"] == settings.record()
            and h["plan"]["counts"] == plan.to_dict()["counts"])
    if not same:
        raise EvaluateError(f"{cache} holds samples of another generator, sampler or count; delete it or "
                            f"use another --out")
    return True


def _class_block(c, fake_f, fake_l, ref_f, ref_l, opts):
    f, r = fake_f[fake_l == c], ref_f[ref_l == c]
    row = {"generated": int(len(f)), "reference": int(len(r))}
    try:
        row["kid"], row["kid_std"] = M.kid(r, f, subsets=50, seed=opts.seed)
    except ValueError:
        row["kid"] = row["kid_std"] = None
    try:
        row["precision"], row["recall"] = M.precision_recall(r, f, opts.k)
    except ValueError:
        row["precision"] = row["recall"] = None
    return row


def evaluate_generator(out: str | Path, real: RealData, opts: EvalOptions, *, run_dir: str | Path | None = None,
                       cache: str | Path | None = None, test: str | None = None,
                       inception_weights: str | Path | None = None, feature_net: str | Path | None = None,
                       device: str | torch.device = "cpu", progress: bool = True, command: str = "") -> dict:
    """Evaluate a generator run (or a synthetic cache) against real images; writes ``out/report.json``,
    ``out/report.md`` and PNGs, and returns the report."""
    from cbdm_aug.evaluate import features as F
    from cbdm_aug.evaluate.report import write_report

    t0 = time.time()
    out = Path(out)
    class_names, image_size, channels, train_counts_meta = _generator_shape(run_dir, cache, inception_weights)
    space = _given_space(inception_weights, feature_net, device)  # a bad file fails before any sampling
    out.mkdir(parents=True, exist_ok=True)

    train, ref_x, ref_l = _real_sets(real, opts, image_size, channels, class_names, train_counts_meta)
    C, train_counts = len(class_names), train.counts().tolist()
    fake_x, fake_l, provenance = synthetic_images(out, run_dir=Path(run_dir) if run_dir else None,
                                                  cache=Path(cache) if cache else None, class_names=class_names,
                                                  image_size=image_size, channels=channels, opts=opts,
                                                  device=device, progress=progress)
    test_data = _load_test(test, image_size, channels, class_names) if test is not None else None
    if space is None:
        space = F.train_classifier_space(ref_x, ref_l, class_names, out / "feature_net",
                                         test=(test_data.images, test_data.labels) if test_data else None,
                                         epochs=opts.feature_epochs, seed=opts.seed, progress=progress,
                                         device=str(device))
    if space.class_names is not None and space.class_names != class_names:
        raise EvaluateError(f"feature network classes {space.class_names} differ from {class_names}")

    ref_f = space.extract(ref_x, progress=progress, desc="real features")
    fake_f = space.extract(fake_x, progress=progress, desc="generated features")
    train_f = space.extract(train.images, progress=progress, desc="training-set features")
    per_class, near_copies = _per_class_rows(space, class_names, train_counts, train, train_f, fake_x, fake_l,
                                             fake_f, ref_f, ref_l, opts)
    whole = _whole_set(ref_f, fake_f, per_class, near_copies, opts)
    tail = M.tail_classes(train_counts, opts.tail_share)
    cas = None if test_data is None else _cas(fake_x, fake_l, class_names, test_data, train_counts, out, opts,
                                              device, progress)

    report = {
        "format": "cbdm-aug-generator-eval", "format_version": 1,
        "feature_space": {"name": space.name, "description": space.description, "dims": space.num_features,
                          "source": space.source, "note": NOT_COMPARABLE},
        "generator": {"run_dir": str(run_dir) if run_dir else None, **provenance},
        "real": {**asdict(real), "reference_per_class": np.bincount(ref_l, minlength=C).tolist(),
                 "train_counts": train_counts, "test": test},
        "options": asdict(opts),
        "class_names": class_names,
        "whole_set": whole,
        "tail": _tail_summary(per_class, tail, class_names, cas),
        "per_class": per_class,
        "cas": cas,
        "definitions": _definitions(opts, len(tail)),
        "run": {"seconds": round(time.time() - t0, 1), "command": command, "torch": torch.__version__},
    }
    write_report(report, out, fake_x, fake_l, train.images, train.labels)
    return report


def _real_sets(real: RealData, opts: EvalOptions, image_size: int, channels: int, class_names: list[str],
               train_counts_meta: list[int] | None):
    """(the long-tailed training split, reference images, their labels) at the generator's resolution."""
    data, train = load_real(real, image_size, channels, class_names)
    train_counts = train.counts().tolist()
    if train_counts_meta is not None and list(train_counts_meta) != train_counts:
        log.warning("the rebuilt training split has counts %s but the generator was fitted on %s; "
                    "memorisation is measured against the rebuilt split (check --longtail, "
                    "--imbalance, --max-per-class, --data-seed)", train_counts, train_counts_meta)
    ref_idx = _per_class_take(data.labels, opts.real_per_class or opts.samples_per_class, len(class_names),
                              opts.seed + 1)
    return train, data.images[ref_idx], data.labels[ref_idx]


def _whole_set(ref_f, fake_f, per_class: list[dict], near_copies, opts: EvalOptions) -> dict:
    whole = {"fid": M.fid(ref_f, fake_f)}
    whole["kid"], whole["kid_std"] = M.kid(ref_f, fake_f, seed=opts.seed)
    whole["precision"], whole["recall"] = M.precision_recall(ref_f, fake_f, opts.k)
    whole["near_copy_share"] = float(torch.cat(near_copies).float().mean())
    whole["nn_pixel_median"] = float(np.median([r["nn_pixel"]["median"] for r in per_class]))
    return whole


def _tail_summary(per_class: list[dict], tail, class_names: list[str], cas: dict | None) -> dict:
    """The tail classes' mean of each per-class metric (and of their CAS accuracy, with a test set)."""
    summary = {key: _mean([per_class[c][key] for c in tail]) for key in ("kid", "precision", "recall", "near_copy_share")}
    summary["classes"] = [class_names[c] for c in tail]
    if cas is not None:
        summary["cas"] = _mean([cas["per_class"][c] for c in tail])
    return summary


def _generator_shape(run_dir, cache, inception_weights) -> tuple[list[str], int, int, list[int] | None]:
    """(class names, image size, channels, training counts if recorded) of the run or the cache."""
    if run_dir is None and cache is None:
        raise EvaluateError("give a generator RUN_DIR or --cache")
    if cache is not None and not Path(cache).is_file():
        raise EvaluateError(f"--cache {cache}: no such file")
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise EvaluateError(f"--inception-weights {inception_weights}: no such file")
    if run_dir is not None:
        from cbdm_aug.generator.run_dir import read_meta

        meta = read_meta(run_dir)
        return (list(meta["class_names"]), int(meta["image_size"]), int(meta["channels"]),
                meta.get("class_counts"))
    from cbdm_aug.cache.reader import SyntheticCache, read_header

    h = read_header(cache)
    with SyntheticCache(cache) as syn:
        image_size, _, channels = syn.image_shape
    return list(h["class_names"]), image_size, channels, h["generator"].get("class_counts")


def _given_space(inception_weights, feature_net, device):
    """The feature space the user gave (Inception weights or a classifier run), or None."""
    from cbdm_aug.evaluate import features as F

    if inception_weights is not None:
        space = F.inception_space(inception_weights)
        space.network.to(device)
        return space
    if feature_net is not None:
        return F.load_classifier_space(feature_net, device)
    return None


def _load_test(test: str, image_size: int, channels: int, class_names: list[str]):
    from cbdm_aug.data import open_data
    from cbdm_aug.data.convert import convert_images

    test_data = open_data(test, split="test", image_size=image_size, channels=channels)
    if list(test_data.class_names) != class_names:
        raise EvaluateError(f"--test {test}: classes {test_data.class_names} differ from {class_names}")
    test_data.images = convert_images(test_data.images, image_size, channels)
    return test_data


def _per_class_rows(space, class_names, train_counts, train, train_f, fake_x, fake_l, fake_f, ref_f, ref_l, opts):
    """(one row of metrics per class, each class's near-copy flags)."""
    per_class, near_copies = [], []
    # the share of a class's samples that the feature network's classifier gives that class (p >= 0.5)
    recognised = None
    if space.classifier is not None:
        proba = space.predict_proba(fake_x)
        recognised = (proba[torch.arange(len(fake_l)), torch.as_tensor(fake_l)] >= 0.5).numpy()
    train_pix = M.pixel_vectors(train.images)
    fake_pix = M.pixel_vectors(fake_x)
    for c in range(len(class_names)):
        row = {"class": class_names[c], "train_count": int(train_counts[c]),
               **_class_block(c, fake_f, fake_l, ref_f, ref_l, opts)}
        fm, tm = fake_l == c, train.labels == c
        mem = M.memorisation(fake_pix[fm], fake_f[fm], train_pix[tm], train_f[tm], opts.near_copy_ratio)
        row["nn_pixel"] = M.summarise(mem["pixel"])
        row["nn_feature"] = M.summarise(mem["feature"])
        row["train_nn_median_pixel"] = mem["train_nn_median_pixel"]
        row["near_copy_share"] = float(mem["near_copy"].float().mean())
        row["recognised_share"] = float(recognised[fm].mean()) if recognised is not None and fm.any() else None
        per_class.append(row)
        near_copies.append(mem["near_copy"])
    return per_class, near_copies


def _cas(fake_x, fake_l, class_names, test_data, train_counts, out: Path, opts: EvalOptions, device,
         progress: bool) -> dict:
    """The classification accuracy score: a classifier trained on the generated images, tested on real ones."""
    from cbdm_aug.evaluate.cas import classification_accuracy_score

    cas = classification_accuracy_score(fake_x, fake_l, class_names, test_data.images, test_data.labels,
                                        train_counts, out / "cas", epochs=opts.cas_epochs, seed=opts.seed,
                                        progress=progress, device=str(device))
    return {k: cas[k] for k in ("top1", "balanced", "many", "medium", "few", "per_class", "groups")}


def _definitions(opts: EvalOptions, tail_classes: int) -> dict:
    return {
        "precision_recall": f"improved precision/recall (Kynkaanniemi et al. 2019), k={opts.k} nearest-neighbour radii",
        "kid": "KID (polynomial kernel, unbiased MMD^2), mean over random subsets; per class with all images of the class",
        "fid": "FID of the whole balanced set (not per class: biased with few images)",
        "near_copy": f"a generated image whose RMS pixel distance to its nearest same-class training image "
                     f"is below {opts.near_copy_ratio} x that training image's distance to its own nearest "
                     f"same-class neighbour (the 'train-train nn' column)",
        "tail": f"the {tail_classes} classes with the fewest training images",
    }


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
