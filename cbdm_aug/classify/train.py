"""Train and evaluate one classifier from a ``Recipe``: a plain PyTorch loop over in-memory uint8
images, evaluated on a balanced test split.

The trainer is the application layer, so it is the one place that picks a device (``cuda`` when
available, else ``cpu``, unless the recipe names one) and seeds torch's global RNG: torchvision's
random transforms draw from it. Samplers get their own seeds.
"""
from __future__ import annotations

import io
import json
import logging
import math
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from cbdm_aug.atomic import write_bytes_atomic, write_text_atomic
from cbdm_aug.classify.pretrained import provenance
from cbdm_aug.classify.recipe import DataConfig, Recipe, RecipeError, save_recipe
from cbdm_aug.devices import resolve_device
from cbdm_aug.mixing import ALL_IMAGES, DecisionsError

log = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    """uint8 (N, H, W, C) images with int64 labels; items are ``(transform(image HWC uint8), label)``.

    Has torchvision's ``targets`` and ``classes`` so the plugin finds labels and class names
    without loading images, and a settable ``transform``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], transform=None):
        self.images, self.targets, self.classes, self.transform = images, labels, list(classes), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.targets[i])


def make_transform(image_size: int, channels: int, crop_padding: int = 0, hflip: bool = False,
                   augment: str = "none", augment_ops: int = 2, augment_magnitude: int = 9):
    """uint8 HWC array -> float (C, H, W) in [-1, 1], with the recipe's augmentation: a RandAugment
    policy (``augment='randaugment'``), then the random crop and flip.

    Images of another size or channel count (a synthetic cache) are first converted to
    ``image_size`` and ``channels``.
    """
    from torchvision.transforms import v2

    from cbdm_aug.data.convert import convert_images

    def to_tensor(x):
        x = np.asarray(x)
        x = x[..., None] if x.ndim == 2 else x
        if x.shape != (image_size, image_size, channels):
            x = convert_images(x[None], image_size, channels)[0]
        return torch.from_numpy(np.array(x, dtype=np.uint8)).permute(2, 0, 1)  # a copy: cache arrays are read-only

    steps = [to_tensor]
    if augment == "randaugment":
        steps.append(v2.RandAugment(num_ops=augment_ops, magnitude=augment_magnitude))
    if crop_padding:
        steps.append(v2.RandomCrop(image_size, padding=crop_padding))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]
    return v2.Compose(steps)


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]: the evaluation form of ``make_transform``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def load_data(cfg: DataConfig):
    """(train, test) ``LabeledImages`` of a recipe: hold-out, long-tail view, then resizing."""
    from cbdm_aug.data import DataError, balanced_holdout, make_longtail, open_data
    from cbdm_aug.data.convert import convert_images

    train = open_data(cfg.train, split="train", image_size=cfg.image_size, channels=cfg.channels)
    if cfg.holdout_per_class:
        train, test = balanced_holdout(train, cfg.holdout_per_class, cfg.split_seed)
    elif cfg.test:
        test = open_data(cfg.test, split="test", image_size=cfg.image_size or train.image_size,
                         channels=cfg.channels or train.channels)
    elif str(cfg.train).endswith(".npz"):
        test = open_data(cfg.train, split="test")
    else:
        raise RecipeError(f"data.train={cfg.train!r} has no test split: set data.test=PATH or "
                          "data.holdout_per_class=N")
    if test.class_names != train.class_names:
        raise DataError(f"test classes {test.class_names} differ from training classes {train.class_names}")
    if cfg.longtail != "none":
        train = make_longtail(train, cfg.longtail, cfg.imbalance, cfg.max_per_class, cfg.split_seed)
    size, channels = cfg.image_size or train.image_size, cfg.channels or train.channels
    for d in (train, test):
        d.images = convert_images(d.images, size, channels)
    return train, test


def build_model(recipe: Recipe, num_classes: int, in_chans: int) -> torch.nn.Module:
    import timm

    import cbdm_aug.networks  # noqa: F401 - registers the *_cifar models with timm

    m = recipe.model
    if not timm.is_model(m.name):
        raise RecipeError(f"model.name {m.name!r} is not a timm model; try resnet32_cifar, "
                          "resnet8_cifar or a name from timm.list_models()")
    if m.pretrained_file:
        from cbdm_aug.classify.pretrained import create_pretrained

        return create_pretrained(m.name, m.pretrained_file, num_classes, in_chans, drop_rate=m.drop_rate)
    return timm.create_model(m.name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                             drop_rate=m.drop_rate)


def _lr_factor(recipe: Recipe, steps_per_epoch: int):
    """Multiplier of the base lr before optimizer step ``step`` (0-based): linear warm-up, then
    step decay at epoch milestones, cosine to 0, or constant."""
    s = recipe.schedule
    warm = round(s.warmup_epochs * steps_per_epoch)
    total = s.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if s.kind == "step":
            return s.gamma ** sum(step // steps_per_epoch >= m for m in s.milestones)
        if s.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
        return 1.0
    return factor


class _Sourced(Dataset):
    """Items ``(image, label, is_synthetic)`` of a dataset with an ``is_synthetic`` array (all real
    when it has none), so the loss can weight the two sources."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.is_synthetic = np.asarray(getattr(dataset, "is_synthetic", np.zeros(len(dataset), bool)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, bool(self.is_synthetic[i])


def weighted_loss(per_sample: torch.Tensor, is_synthetic: torch.Tensor, synthetic_weight: float) -> torch.Tensor:
    """The batch loss: the mean of ``per_sample`` (B,) with synthetic samples weighted by
    ``synthetic_weight`` relative to real ones (weights normalised to sum to one, so the loss keeps the
    scale of a plain mean; a batch of only synthetic images with weight 0 gives 0)."""
    if synthetic_weight == 1.0:
        return per_sample.mean()
    w = torch.where(is_synthetic.to(per_sample.device), synthetic_weight, 1.0).to(per_sample.dtype)
    return (w * per_sample).sum() / w.sum().clamp_min(1e-12)


def build_training_set(recipe: Recipe, train, transform):
    """(dataset, sampler) for the recipe's sampling mode."""
    real = ArrayDataset(train.images, train.labels, train.class_names)
    smp = recipe.sampling
    if smp.mode == "none":
        real.transform = transform
        gen = torch.Generator().manual_seed(recipe.seed)
        return real, RandomSampler(real, generator=gen)
    from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

    if smp.mode == "class-balanced":
        real.transform = transform
        kw = sampler_settings(recipe, len(real))
        return real, BalancedSyntheticSampler(real, target=kw["target"], num_samples=kw["num_samples"], seed=kw["seed"])
    from cbdm_aug.plugin.dataset import RealSyntheticDataset

    d = recipe.data
    if d.augment == "randaugment" and not d.augment_synthetic:
        # RandAugment on the real images only (the real dataset's own transform runs first), and the
        # rest of the recipe's transform (crop, flip, scaling) on every image
        real.transform = _randaugment_uint8(d.augment_ops, d.augment_magnitude)
        transform = make_transform(train.image_size, train.channels, d.crop_padding, d.hflip)
    try:
        ds = RealSyntheticDataset(real, smp.cache_paths(), transform=transform, resize=True, convert=True,
                                  decisions=decisions_of(smp))
    except DecisionsError as e:
        raise RecipeError(f"sampling.share_file: {e}") from None
    return ds, BalancedSyntheticSampler(ds, **sampler_settings(recipe, len(real)))


def sampler_settings(recipe: Recipe, n_real: int) -> dict:
    """The ``BalancedSyntheticSampler`` keywords of a recipe's 'synthetic' mode on ``n_real`` real training
    images: the arm's mixing, which ``cbdm-aug run``'s report prints for the user's own loop. Its
    ``max_synthetic_share`` None leaves each class's share to the decisions the dataset carries."""
    smp = recipe.sampling
    # num_samples: the epoch of the real-only baseline (one draw per real image), a fair comparison
    return {"target": smp.target_weights(), "num_samples": smp.num_samples or n_real,
            "max_synthetic_share": smp.max_synthetic_share, "min_real_share": smp.min_real_share, "seed": recipe.seed}


def decisions_of(smp):
    """The per-class decisions the generated images obey (``RealSyntheticDataset(decisions=)``): the recipe's
    ``sampling.share_file`` where it names one, none where it is ``all`` (every image: the evidence stage's
    probes), else the decisions file beside each cache (``cbdm-aug run`` writes one)."""
    if smp.share_file is None:
        return "auto"
    return None if smp.share_file == ALL_IMAGES else smp.share_file


def _randaugment_uint8(num_ops: int, magnitude: int):
    """uint8 HWC array -> RandAugmented uint8 HWC array."""
    from torchvision.transforms import v2

    policy = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    def apply(x):
        x = np.asarray(x)
        x = x[..., None] if x.ndim == 2 else x
        return policy(torch.from_numpy(np.array(x, dtype=np.uint8)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    return apply


def _check_sampling(recipe: Recipe) -> None:
    """Fail before the data is loaded when a +synthetic run has no cache to read."""
    smp = recipe.sampling
    if smp.mode != "synthetic":
        return
    if not smp.cache_paths():
        raise RecipeError("sampling.mode 'synthetic' needs a cache: --set sampling.cache=PATH.h5")
    missing = [p for p in smp.cache_paths() if not Path(p).exists()]
    if missing:
        raise RecipeError(f"sampling.cache: no such file {missing[0]}; make one with `cbdm-aug generate`")


def _epoch_draws(dataset, sampler, num_classes: int) -> dict[str, list[int]]:
    """Per-class images drawn in epoch 0, split into real and synthetic."""
    if hasattr(sampler, "plan"):
        idx = sampler.plan(0)
    else:
        idx = np.arange(len(dataset))
    labels = np.asarray(getattr(dataset, "labels", getattr(dataset, "targets", None)))[idx]
    syn = np.asarray(getattr(dataset, "is_synthetic", np.zeros(len(dataset), bool)))[idx]
    return {"real": np.bincount(labels[~syn], minlength=num_classes).tolist(),
            "synthetic": np.bincount(labels[syn], minlength=num_classes).tolist()}


@torch.inference_mode()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """Predicted class ids int64 (N,) for uint8 (N, H, W, C) images."""
    model.eval()
    out = [model(_to_input(images[i:i + batch_size]).to(device)).argmax(1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def make_loader(recipe: Recipe, dataset, sampler, device: torch.device, device_data: bool | None,
                 generator: torch.Generator):
    """The epoch's batches ``(x, y, is_synthetic)``: a host DataLoader, or (``device_data``; None: when
    the images fit, ``devices.fits_on_device``) a ``DeviceLoader`` that holds every image on ``device``, draws the same
    sampler's indices and augments there. Returns (loader, 'device' or 'loader')."""
    from cbdm_aug.classify import device_data as dd

    bs, d = recipe.schedule.batch_size, recipe.data
    drop_last = len(sampler) >= bs
    labels = np.asarray(dataset.labels if hasattr(dataset, "labels") else dataset.targets)
    if device_data is None:
        shape = getattr(dataset, "out_shape", None) or np.asarray(dataset.images).shape[1:]
        device_data = dd.fits_on_device(len(labels) * int(np.prod(shape)), device)
    if device_data:
        return dd.DeviceLoader(dd.dataset_images(dataset), labels, sampler, bs, drop_last, device,
                               is_synthetic=getattr(dataset, "is_synthetic", None), crop_padding=d.crop_padding,
                               hflip=d.hflip, policy=d.augment, ops=d.augment_ops, magnitude=d.augment_magnitude,
                               seed=recipe.seed, policy_on_synthetic=d.augment_synthetic), "device"
    return DataLoader(_Sourced(dataset), batch_size=bs, sampler=sampler, num_workers=recipe.num_workers,
                      drop_last=drop_last, generator=generator, pin_memory=device.type == "cuda",
                      persistent_workers=recipe.num_workers > 0), "loader"


def train_run(recipe: Recipe, out_dir: str | Path, progress: bool = True, command: str = "",
              device_data: bool | None = None) -> dict:
    """Train, evaluate and write one run folder; returns the metrics.json content. ``device_data``
    keeps the training images on the device and augments them there (``classify.device_data``);
    None: when they take under a tenth of the device's free memory (the host's available memory on a
    CPU, where the batch path is also the faster one)."""
    from cbdm_aug.classify.losses import ClassifierLoss
    from cbdm_aug.classify.metrics import classification_metrics
    from cbdm_aug.classify.report import write_run_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, out / "recipe.yaml", header=f"resolved recipe\n{command}".strip())
    _check_sampling(recipe)
    t0 = time.time()
    torch.manual_seed(recipe.seed)
    device = resolve_device(recipe.device)
    train, test = load_data(recipe.data)
    C = train.num_classes
    size, channels = train.image_size, train.channels
    real_counts = train.counts().tolist()
    log.info("train %s: %d images %s; test %d images; device %s", train.source, len(train), real_counts,
             len(test), device)

    d = recipe.data
    transform = make_transform(size, channels, d.crop_padding, d.hflip, d.augment, d.augment_ops, d.augment_magnitude)
    dataset, sampler = build_training_set(recipe, train, transform)
    synthetic_available = (np.bincount(np.asarray(dataset.labels)[np.asarray(dataset.is_synthetic)],
                                       minlength=C).tolist() if hasattr(dataset, "is_synthetic") else [0] * C)
    draws = _epoch_draws(dataset, sampler, C)
    g = torch.Generator().manual_seed(recipe.seed)
    loader, data_path = make_loader(recipe, dataset, sampler, device, device_data, g)

    model = build_model(recipe, C, channels)
    start = provenance(model, recipe.model.pretrained_file)  # before the first step: what it starts from
    model = model.to(device)
    prior_counts = (real_counts if recipe.loss.prior == "real"
                    else [r + s for r, s in zip(draws["real"], draws["synthetic"])])
    criterion = ClassifierLoss(recipe.loss.kind, prior_counts, recipe.loss.tau, recipe.loss.label_smoothing).to(device)
    o = recipe.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                              weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(recipe, len(loader)))

    ev = recipe.eval
    history = []

    def evaluate() -> float:
        return classification_metrics(predict(model, test.images, ev.batch_size, device), test.labels, real_counts)["top1"]

    _train_epochs(model, loader, sampler, criterion, opt, sched, recipe.schedule.epochs, device,
                  recipe.loss.synthetic_weight, ev.every, evaluate, history, progress, stage="")
    if recipe.schedule.crt_epochs:
        _classifier_retraining(recipe, model, train, transform, C, device, evaluate, history, progress)

    preds = predict(model, test.images, ev.batch_size, device)
    metrics = classification_metrics(preds, test.labels, real_counts, ev.many_threshold, ev.few_threshold)
    result = {
        "recipe": recipe.name, "seed": recipe.seed, "metrics": metrics, "class_names": train.class_names,
        "train_counts": {"real": real_counts, "synthetic_available": synthetic_available,
                         "epoch0_draws": draws, "loss_prior": list(prior_counts)},
        "data": {"train": train.source, "test": test.source, "image_size": size, "channels": channels},
        "pretrained": start,
        "history": history,
        "run": {"device": str(device), "data": data_path, "seconds": round(time.time() - t0, 1), "command": command,
                "torch": torch.__version__, "python": platform.python_version(), "machine": platform.node()},
    }
    # Whole files, renamed into place, metrics.json last: a run folder with metrics.json is a finished
    # run (`cbdm-aug run` reuses such seeds), and a kill leaves no half-written file.
    buffer = io.BytesIO()  # serialise first: a write error is then a plain OSError naming the file
    torch.save({"state_dict": model.state_dict(), "model": recipe.model.name, "num_classes": C,
                "in_chans": channels}, buffer)
    write_bytes_atomic(out / "model.pt", buffer.getvalue())
    write_run_report(result, out)
    write_text_atomic(out / "metrics.json", json.dumps(result, indent=1))
    return result


def _train_epochs(model, loader, sampler, criterion, opt, sched, epochs: int, device, synthetic_weight: float,
                  eval_every: int, evaluate, history: list, progress: bool, stage: str) -> None:
    """The SGD loop: ``epochs`` passes over ``loader`` (items ``(x, y, is_synthetic)``), one history
    row per epoch (test top-1 every ``eval_every`` epochs but the last)."""
    from tqdm.auto import tqdm

    from cbdm_aug.progress import on_terminal

    for epoch in range(epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if not stage:
            model.train()
        # Sums kept on the device (float64: the same numbers as Python floats) and read every 25
        # steps: a read waits for the step, and one per step kept a GPU idle between steps.
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        # off a terminal the per-epoch log line below is the progress: no carriage-return redraws
        bar = tqdm(loader, desc=f"{stage}epoch {epoch + 1}/{epochs}", leave=False, disable=not (progress and on_terminal()))
        for step, (x, y, syn) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = weighted_loss(criterion(logits, y), syn, synthetic_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.detach().double() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if not bar.disable and step % 25 == 0:
                bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}", lr=f"{opt.param_groups[0]['lr']:.3g}")
        row = {"epoch": epoch + 1, "loss": float(total_loss) / max(seen, 1), "train_acc": int(correct) / max(seen, 1),
               "lr": opt.param_groups[0]["lr"], **({"stage": stage.strip()} if stage else {})}
        if eval_every and (epoch + 1) % eval_every == 0 and epoch + 1 < epochs:
            row["test_top1"] = evaluate()
        history.append(row)
        log.info("%sepoch %d/%d loss %.4f train acc %.3f%s", stage, epoch + 1, epochs, row["loss"],
                 row["train_acc"], f" test top1 {row['test_top1']:.3f}" if "test_top1" in row else "")


def _classifier_retraining(recipe: Recipe, model, train, transform, num_classes: int, device, evaluate,
                           history: list, progress: bool) -> None:
    """cRT (Kang et al., ICLR 2020, sec. 3): keep the learned representation, re-initialise the last
    layer and train only it with class-balanced sampling of the real training images and plain
    cross-entropy. The backbone stays in eval mode, so its batch-norm statistics do not move."""
    from cbdm_aug.classify.losses import ClassifierLoss
    from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

    real = ArrayDataset(train.images, train.labels, train.class_names, transform)
    sampler = BalancedSyntheticSampler(real, target="uniform", num_samples=len(real), seed=recipe.seed + 10_007)
    bs = recipe.schedule.batch_size
    loader = DataLoader(_Sourced(real), batch_size=bs, sampler=sampler, drop_last=len(sampler) >= bs,
                        num_workers=recipe.num_workers, generator=torch.Generator().manual_seed(recipe.seed))
    for p in model.parameters():
        p.requires_grad_(False)
    model.reset_classifier(num_classes)
    model.to(device).eval()
    head = model.get_classifier()
    o = recipe.optim
    opt = torch.optim.SGD(head.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    total = recipe.schedule.crt_epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, total))))
    criterion = ClassifierLoss("ce", [1] * num_classes).to(device)
    _train_epochs(model, loader, sampler, criterion, opt, sched, recipe.schedule.crt_epochs, device, 1.0,
                  recipe.eval.every, evaluate, history, progress, stage="cRT ")
    for p in model.parameters():
        p.requires_grad_(True)


def train_seeds(recipe: Recipe, seeds: list[int], out_dir: str | Path, progress: bool = True,
                command: str = "", device_data: bool | None = None, reuse=None, echo=None,
                title: str | None = None, stamp: dict | None = None) -> list[dict]:
    """Run ``recipe`` once per seed into ``out_dir/seed<N>`` and write the aggregate there; returns each
    seed's metrics.json content. ``reuse(seed_dir, recipe)`` says a finished seed folder is kept (else it is
    trained afresh); ``stamp``, what the recipe's files held (e.g. digests of the cache it reads), is written
    beside each trained seed as inputs.json and must match for a seed to be kept; ``echo`` gets a line per
    seed, naming the run ``title``."""
    import shutil

    from cbdm_aug.classify.report import aggregate_runs, write_aggregate_report

    out, title = Path(out_dir), title or recipe.name
    say = echo or (lambda line: None)
    runs = []
    for i, seed in enumerate(seeds):
        rs, sd = replace(recipe, seed=seed), out / f"seed{seed}"
        if reuse is not None and reuse(sd, rs) and _stamped(sd, stamp):
            say(f"  {title}, seed {seed}: reused")
            runs.append(json.loads((sd / "metrics.json").read_text()))
            continue
        if reuse is not None and sd.exists():
            shutil.rmtree(sd)
        t = time.time()
        say(f"  {title}, seed {seed} ({i + 1}/{len(seeds)}) ...")
        runs.append(train_run(rs, sd, progress, command, device_data))
        if stamp is not None:
            write_text_atomic(sd / "inputs.json", json.dumps(stamp, sort_keys=True))
        say(f"  {title}, seed {seed}: {time.time() - t:.0f} s")
    write_aggregate_report(aggregate_runs(runs), out)
    return runs


def _stamped(seed_dir: Path, stamp: dict | None) -> bool:
    """Whether a seed folder was trained on the inputs ``stamp`` describes (always, without a stamp)."""
    if stamp is None:
        return True
    try:
        return json.loads((seed_dir / "inputs.json").read_text()) == json.loads(json.dumps(stamp, sort_keys=True))
    except (OSError, ValueError):
        return False


def train_on_arrays(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                    test_labels: np.ndarray, class_names: list[str], out_dir: str | Path, *, name: str,
                    model: str = "resnet8_cifar", epochs: int = 4, sampling: str = "none", seed: int = 0,
                    device: str = "auto", progress: bool = True, command: str = "", pretrained_file: str | None = None,
                    image_size: int | None = None, augment: str = "none") -> dict:
    """Train a classifier on in-memory uint8 (N, H, W, C) arrays with a short SGD + cosine schedule
    (lr 0.1, batch 128, 1-pixel shifts); returns the run's metrics.json content. Used for the
    evaluation's feature network, the Classification Accuracy Score and the cache filter. ``pretrained_file``:
    start from these local weights; ``image_size``: train at this size (None: the arrays'); ``augment``: the recipe's
    ``data.augment`` (``"randaugment"``: RandAugment on every training image, as the arms' RandAugment recipe)."""
    import tempfile

    from cbdm_aug.classify.recipe import DataConfig, ModelConfig, OptimConfig, SamplingConfig, ScheduleConfig
    from cbdm_aug.data.npz import write_npz

    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "arrays.npz"
        write_npz(npz, x_train=train_images, y_train=train_labels, x_test=test_images, y_test=test_labels,
                  class_names=class_names)
        recipe = Recipe(
            name=name, seed=seed, device=device,
            data=DataConfig(train=str(npz), longtail="none", crop_padding=1 if train_images.shape[1] >= 8 else 0,
                            image_size=image_size, augment=augment),
            model=ModelConfig(name=model, pretrained_file=pretrained_file), optim=OptimConfig(name="sgd", lr=0.1, weight_decay=5e-4),
            schedule=ScheduleConfig(epochs=epochs, batch_size=128, kind="cosine", warmup_epochs=0.5, milestones=()),
            sampling=SamplingConfig(mode=sampling),
        )
        return train_run(recipe, out_dir, progress=progress, command=command)
