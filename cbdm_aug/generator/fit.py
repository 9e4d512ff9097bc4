"""Fit a CBDM generator: load the data, check the run folder, train with Lightning, export the EMA
weights. ``cbdm-aug fit-generator`` is a thin layer over ``fit``."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from cbdm_aug import __version__
from cbdm_aug.atomic import write_bytes_atomic
from cbdm_aug.data import LabeledImages, count_table, make_longtail, open_data
from cbdm_aug.data.convert import convert_images
from cbdm_aug.dicts import dict_changes
from cbdm_aug.diffusion.augment import AUGMENT_DIM, AugmentConfig
from cbdm_aug.diffusion.loss import CBDMLossConfig
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
from cbdm_aug.diffusion.unet import check_image_size, unet_config
from cbdm_aug.errors import ConfigError, is_disk_full
from cbdm_aug.generator.latents import LATENTS_NAME
from cbdm_aug.generator.run_dir import CONFIG_NAME, RunDirError, load_generator

log = logging.getLogger(__name__)

RUN_CONFIG = "run.json"
LOCK_FILES = (".lock", ".lock.takeover")  # cbdm_aug.locking's, of the command that writes the folder


@dataclass(frozen=True)
class DataConfig:
    path: str
    split: str = "train"
    longtail: str | None = None        # None, "exp" or "step"
    imbalance: float = 100.0
    max_per_class: int | None = None
    data_seed: int = 0
    image_size: int | None = None      # default: the data's
    channels: int | None = None        # default: the data's
    skip_bad: bool = False

    def __post_init__(self):
        # Checked here, before any image is decoded: the reader resizes every image to this size.
        check_image_size(self.image_size)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "cpu"
    max_steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int | None = None    # default: min(5000, max_steps // 10)
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    hflip: bool | None = None          # default: on for RGB, off for grey (digits are not symmetric)
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None       # default: bf16-mixed on GPU, 32-true on CPU
    sample_every: int = 500
    checkpoint_every: int = 250
    init_from: str | None = None
    # a finished generator run to go on from: its last checkpoint (weights, optimiser, EMA, step) trained on, on
    # this run's data, up to max_steps in all (its own steps counted): one optimisation whose data change
    continue_from: str | None = None
    compile: bool | None = None        # torch.compile the UNet; default: on for CUDA, off on CPU
    device_data: bool | None = None    # training images on the device; default: on CUDA when they fit
    balance_power: float = 1.0         # draw class c with probability ~ n_c ** balance_power: 1 as the
                                       # data, 0 class-balanced (a 5-image class is otherwise ~80 of 150k draws)
    augment_p: float = 0.0             # augmentation conditioning (diffusion.augment): each op's probability
    autoencoder: str | None = None     # a diffusers autoencoder folder: learn its latents (a latent generator)

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "sample_every", "checkpoint_every", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr <= 1:  # written so that NaN fails too
            raise ConfigError(f"--lr must be in (0, 1], got {self.lr}")
        if self.num_workers < 0:
            raise ConfigError(f"--num-workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.balance_power <= 1:
            raise ConfigError(f"--balance-power must be in [0, 1] (1: as the data, 0: class-balanced), "
                              f"got {self.balance_power}")
        AugmentConfig(self.augment_p)  # its check and message: "--augment must be a probability in [0, 1]"
        if self.init_from and self.continue_from:
            raise ConfigError("--init-from starts afresh from a generator's weights, --continue-from goes on with its "
                              "optimiser and step: give one")
        if self.autoencoder and self.augment_p > 0:
            raise ConfigError("--augment warps pixels, and a warped image's latent is not the warped latent; "
                              "with --autoencoder only flips apply (from the cached mirrored latents): drop --augment")


@dataclass(frozen=True)
class FitConfig:
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: CBDMLossConfig = field(default_factory=CBDMLossConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        return cls(DataConfig(**d["data"]), TrainConfig(**d["train"]), CBDMLossConfig(**d["loss"]))


# Settings that may change when a run resumes: they do not change what is being trained. compile and
# device_data change how a step runs (a compiled or eager UNet; batches gathered on the device or
# copied from the host), not the model, the objective or the data order.
_RESUMABLE = {("train", k) for k in ("max_steps", "num_workers", "accelerator", "devices", "num_nodes",
                                     "strategy", "sample_every", "checkpoint_every", "compile",
                                     "device_data")} | {("data", "skip_bad")}


def load_training_data(cfg: DataConfig, progress: bool = True) -> LabeledImages:
    """The long-tailed training set, at the model's resolution and channel count."""
    if cfg.longtail is None and (cfg.max_per_class is not None):
        raise ConfigError("--max-per-class only applies with --longtail exp|step")
    data = open_data(cfg.path, split=cfg.split, image_size=cfg.image_size, channels=cfg.channels,
                     skip_bad=cfg.skip_bad, progress=progress)
    if cfg.longtail is not None:
        data = make_longtail(data, cfg.longtail, cfg.imbalance, cfg.max_per_class, cfg.data_seed)
    size = cfg.image_size or data.image_size
    channels = cfg.channels or data.channels
    if channels not in (1, 3):
        raise ConfigError(f"--channels must be 1 or 3, got {channels}")
    check_image_size(size)
    images = convert_images(data.images, size, channels)
    return LabeledImages(images, data.labels, data.class_names, data.source, data.skipped)


def balance_weights(labels, power: float) -> torch.Tensor:
    """Per-image draw weights n_c ** (power - 1), so class c is drawn with probability ~ n_c ** power.

    labels: (N,) integer class indices; returns (N,) float64 weights."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    counts = torch.bincount(labels).double()
    return counts[labels] ** (power - 1.0)


def _diff(old: dict, new: dict) -> list[str]:
    """The settings that differ between two run configs, except those a resume may change."""
    return [f"{'.'.join(key)}: {a!r} != {b!r}" for key, a, b in dict_changes(old, new) if key not in _RESUMABLE]


def prepare_run_dir(out: Path, cfg: FitConfig, resume: bool, echo=print) -> Path | None:
    """Check ``out`` against ``cfg``; returns the checkpoint to resume from, if any."""
    from cbdm_aug.generator.checkpoints import resume_checkpoint

    existing = out / RUN_CONFIG
    if existing.exists():
        try:
            # Through the dataclasses, so a setting added since the run started reads as its default.
            old = FitConfig.from_dict(json.loads(existing.read_text())["config"]).to_dict()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            raise RunDirError(f"{existing}: unreadable run config (or one from a newer cbdm-aug); "
                              "choose another --out") from None
        diffs = _diff(old, cfg.to_dict())
        if diffs:
            raise RunDirError(f"{out} already holds a different run ({'; '.join(diffs[:3])}); "
                              f"choose another --out")
        if not resume:
            raise RunDirError(f"{out} already holds this run; pass --resume to continue it, "
                              f"or choose another --out")
        ckpt = resume_checkpoint(out / "checkpoints", echo)
        if ckpt is None:
            echo(f"{out} has no checkpoint yet: " + (f"going on from {cfg.train.continue_from}"
                                                      if cfg.train.continue_from else "starting from step 0"))
        return ckpt
    # a latent cache whose encoding was stopped before run.json was written resumes (generator.latents)
    if out.exists() and any(p.name not in LOCK_FILES and not p.name.lstrip(".").startswith(LATENTS_NAME)
                            for p in out.iterdir()):
        raise RunDirError(f"{out} is not empty and holds no cbdm-aug run; choose another --out")
    return None


# Environment variables that launchers set to a process's place in the job: Lightning's DDP
# subprocess launcher (LOCAL_RANK, NODE_RANK), torchrun (RANK, GROUP_RANK) and SLURM (SLURM_PROCID).
_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_first_process() -> bool:
    """Whether this process is global rank 0 of a (possibly multi-process) job, decided from the
    environment before any process group exists. Lightning's ``ddp`` re-runs the command line in
    its child processes, so every rank enters ``fit``; only rank 0 may check and write the run folder."""
    return all(int(os.environ.get(k) or 0) == 0 for k in _RANK_VARS)


class _Sampler(torch.utils.data.Sampler):
    """A sampler that only delegates, so Lightning shards it instead of replacing it."""

    def __init__(self, inner):
        self.inner = inner

    def __iter__(self):
        return iter(self.inner)

    def __len__(self):
        return len(self.inner)


def _on_gpu(accelerator: str) -> bool:
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def _resolved_train(cfg: TrainConfig, channels: int, data_bytes: int = 0) -> TrainConfig:
    on_gpu = _on_gpu(cfg.accelerator)
    return replace(cfg,
                   warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None
                   else min(5000, max(1, cfg.max_steps // 10)),
                   hflip=cfg.hflip if cfg.hflip is not None else channels == 3,
                   precision=cfg.precision or ("bf16-mixed" if on_gpu else "32-true"),
                   compile=cfg.compile if cfg.compile is not None else on_gpu,
                   device_data=cfg.device_data if cfg.device_data is not None
                   else on_gpu and not any(s in cfg.strategy for s in ("fork", "notebook"))
                   and _fits_on_gpu(data_bytes))


def _fits_on_gpu(nbytes: int) -> bool:
    """``devices.fits_on_device`` for this process's GPU (LOCAL_RANK under DDP, so no rank opens a
    context on GPU 0). Never asked for fork-based strategies, which need CUDA untouched."""
    from cbdm_aug.devices import fits_on_device

    return fits_on_device(nbytes, torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0)))


def _index_batch(indices):
    """The DataLoader's collate for device-resident data: the batch is its int64 indices."""
    return torch.as_tensor(indices, dtype=torch.int64)


class _Indices(torch.utils.data.Dataset):
    """Dataset of the integers 0..n-1, fetched a batch at a time: with the images on the device,
    the host only draws indices, through the same sampler (and DDP sharding) as the host path."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def __getitems__(self, indices):
        return indices


def _quiet_lightning():
    import warnings

    # Lightning's tips and this module's intentionally-eval EMA copy are not news to our users.
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # A resumed run draws a fresh data order from the checkpointed step on; that is by design
    # (docs/generator.md: Resume), so Lightning's warning about a non-resumable loader is not news either.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    # --continue-from restores another run's checkpoint, whose ModelCheckpoint state names that run's folder;
    # this run keeps only its own last checkpoints, so nothing the warning lists is lost
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    # ... and its checkpoint callback's settings (the interval) are this run's, not those that wrote it: its state
    # is not needed to go on, and neither is an older run's (before FinalStepCheckpoint) on --resume
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided.*")


def _disk_full(out: Path, e: OSError) -> RunDirError:
    from cbdm_aug.generator.checkpoints import resume_checkpoint

    try:
        ckpt = resume_checkpoint(out / "checkpoints", echo=lambda *_: None)
    except RunDirError:
        ckpt = None
    kept = f"the last complete checkpoint, {ckpt}, is kept" if ckpt else "no checkpoint was completed"
    return RunDirError(f"disk full while writing {out} ({e.strerror or 'no space'}); {kept}: "
                       f"free space and rerun with --resume")


def fit(cfg: FitConfig, out: str | os.PathLike, resume: bool = False, progress: bool = True,
        echo=print) -> Path:
    """Train a generator as ``cfg`` says and write its run folder to ``out``; returns ``out``."""
    import pytorch_lightning as pl

    out = Path(out)
    _quiet_lightning()
    # A run started with --init-from resumes from its own checkpoint, which holds its weights; prepare_run_dir
    # refuses a folder whose run started from another generator (or from none).
    first_process = is_first_process()
    ckpt = _checkpoint_to_resume(out, cfg, resume, first_process, echo)  # before the (slow) data load: fail fast
    source = _continuation(cfg.train) if cfg.train.continue_from else None
    if ckpt is None and source is not None:
        ckpt = source["checkpoint"]
    data = load_training_data(cfg.data, progress=progress)
    train = _resolved_train(cfg.train, data.channels, data.images.nbytes)
    # resuming: keep the schedule the run started with; continuing: the schedule of the run it goes on from
    started = out / RUN_CONFIG if (out / RUN_CONFIG).exists() else source["run_config"] if source else None
    if started is not None:
        first = json.loads(started.read_text())["resolved"]["train"]
        train = replace(train, **{k: first[k] for k in ("warmup_steps", "hflip", "precision")})
    # flips are non-leaking only where the data are mirror-symmetric, which is what hflip says
    augment = AugmentConfig.for_data(train.augment_p, flips=train.hflip)
    record, latents = _latent_data(train, data, out, first_process, progress, echo)
    size, channels = ((data.image_size, data.channels) if record is None
                      else (data.image_size // record.factor, record.latent_channels))
    model_config = unet_config(train.preset, size, channels, data.num_classes,
                               augment_dim=AUGMENT_DIM if augment.p > 0 else 0)
    _describe_data(data, augment, echo)

    pl.seed_everything(train.seed, workers=True, verbose=False)
    module, init_meta = _build_module(cfg, train, data, model_config, augment, record)
    if source is not None:
        _check_same_model("--continue-from", source["record"]["run"], source["meta"], data.class_names, model_config)
    meta = _export_meta(cfg, train, data, model_config, augment, init_meta) | (
        {"continued_from": source["record"]} if source is not None else {}) | (
        {"autoencoder": record.to_json()} if record is not None else {})
    if first_process and not (out / RUN_CONFIG).exists():
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / RUN_CONFIG, json.dumps(
            {"config": cfg.to_dict(), "resolved": FitConfig(cfg.data, train, cfg.loss).to_dict(),
             "package_version": __version__}, indent=2).encode(), fsync=True)

    trainer = _trainer(train, out, meta, data.class_names, progress, echo, record)
    loader = _loader(train, data, module, trainer.world_size, latents)
    if ckpt is not None:
        echo(f"resuming from {ckpt}")
    try:
        trainer.fit(module, train_dataloaders=loader, ckpt_path=str(ckpt) if ckpt else None)
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise _disk_full(out, e) from None
    if trainer.global_step < train.max_steps and not trainer.interrupted:
        log.warning("training stopped at step %d of %d", trainer.global_step, train.max_steps)
    echo(f"generator written to {out} ({CONFIG_NAME}, ema.safetensors); samples in {out / 'samples'}")
    return out


def _continuation(train: TrainConfig) -> dict:
    """What ``--continue-from`` goes on from: the run's final checkpoint, its run.json and a record for
    generator.json. Refuses a run that has not finished (its last checkpoint short of its steps) or one that
    already has as many steps as this run asks for."""
    from cbdm_aug.generator.checkpoints import checkpoint_step, resume_checkpoint
    from cbdm_aug.generator.run_dir import read_meta

    src = Path(train.continue_from)
    config = src / RUN_CONFIG
    if not config.exists():
        raise RunDirError(f"--continue-from {src}: no generator run there ({RUN_CONFIG} is missing)")
    total = int(json.loads(config.read_text())["resolved"]["train"]["max_steps"])
    ckpt = resume_checkpoint(src / "checkpoints", echo=lambda *_: None)
    step = checkpoint_step(ckpt) if ckpt is not None else None
    if step != total:
        raise RunDirError(f"--continue-from {src}: its last checkpoint is at step {step or 0} of its {total}; "
                          f"finish it first (fit-generator ... --resume)")
    if train.max_steps <= total:
        raise RunDirError(f"--continue-from {src}: it already has {total} steps; --max-steps counts them too, "
                          f"so it must be more than {total}, got {train.max_steps}")
    meta = read_meta(src)
    return {"checkpoint": ckpt, "run_config": config, "meta": meta,
            "record": {"run": str(src), "step": total, "weights_sha256": meta.get("weights_sha256")}}


def _check_same_model(flag: str, run, meta: dict, class_names: list[str], model_config: dict) -> None:
    """A generator run that ``--init-from`` or ``--continue-from`` starts from must have this run's classes and
    model (its ``generator.json`` ``meta``)."""
    if meta.get("class_names") != class_names or meta.get("model") != model_config:
        raise RunDirError(f"{flag} {run}: its classes or model "
                          f"({meta.get('preset')}, {meta.get('image_size')}px) differ from this run's")


def _checkpoint_to_resume(out: Path, cfg: FitConfig, resume: bool, first_process: bool, echo) -> Path | None:
    """Rank 0 checks the run folder against ``cfg`` and picks the checkpoint; the other ranks, which
    rank 0 launched after it wrote run.json, take the same checkpoint without checking again."""
    from cbdm_aug.generator.checkpoints import resume_checkpoint

    if first_process:
        echo(f"run folder: {out}")
        return prepare_run_dir(out, cfg, resume, echo)
    return resume_checkpoint(out / "checkpoints", echo=lambda *_: None) if resume else None


def _latent_data(train: TrainConfig, data: LabeledImages, out: Path, first_process: bool, progress: bool, echo):
    """For a latent generator: (the autoencoder's record, the training set's cached latents), encoding them
    into ``out/latents.h5`` first where they are not there yet (resumably); (None, None) otherwise."""
    if not train.autoencoder:
        return None, None
    from cbdm_aug.diffusion.autoencoder import check_data_fits, find_autoencoder, load_autoencoder
    from cbdm_aug.generator.latents import encode_latents, read_latents

    record = find_autoencoder(train.autoencoder)
    latent_size = check_data_fits(record, data.image_size, data.channels)
    echo(f"autoencoder: {record.class_name} from {record.folder}, factor {record.factor}: "
         f"{data.image_size}x{data.image_size}x{data.channels} images -> "
         f"{latent_size}x{latent_size}x{record.latent_channels} latents, scaling factor {record.scaling_factor:g}")
    path = out / LATENTS_NAME
    if first_process:  # the other ranks start after rank 0 wrote them (Lightning launches them in trainer.fit)
        out.mkdir(parents=True, exist_ok=True)
        device = "cuda" if _on_gpu(train.accelerator) else "cpu"
        encode_latents(path, load_autoencoder(record, device), record, data.images, data.labels, progress=progress)
    return record, read_latents(path)


def _describe_data(data: LabeledImages, augment: AugmentConfig, echo) -> None:
    if augment.p > 0:
        echo(f"augmentation conditioning: each of {', '.join(augment.ops)} with probability {augment.p:g}; "
             "sampling uses the zero vector (no warp)")
    echo(f"training data: {data.source}, {len(data)} images, {data.image_size}x{data.image_size}x{data.channels}")
    echo(count_table(data.class_names, ("train", data.counts().tolist())))
    if data.skipped:
        echo("skipped " + ", ".join(f"{n} {why}" for why, n in data.skipped.items()) + " (see the log for names)")


def _build_module(cfg: FitConfig, train: TrainConfig, data: LabeledImages, model_config: dict,
                  augment: AugmentConfig, record=None):
    """(the LightningModule, the record of the generator it starts from with --init-from, or None)."""
    from cbdm_aug.generator.module import CBDMModule

    init_meta = base = None
    if train.init_from:
        base = load_generator(train.init_from)
        _check_same_model("--init-from", train.init_from, base.meta, data.class_names, model_config)
        init_meta = {"run": str(train.init_from), "weights_sha256": base.weights_sha256,
                     "step": base.meta.get("step")}
    module = CBDMModule(model_config, data.counts().tolist(), asdict(cfg.loss), DEFAULT_SCHEDULE, lr=train.lr,
                        warmup_steps=train.warmup_steps, ema_decay=train.ema_decay, hflip=train.hflip,
                        augment=augment.to_dict() if augment.p > 0 else None,
                        latent=record.to_json() if record is not None else None)
    if base is not None:
        module.unet.load_state_dict(base.unet.state_dict())
        module.ema.module.load_state_dict(base.unet.state_dict())
    module.compile_unet = train.compile
    return module, init_meta


def _export_meta(cfg: FitConfig, train: TrainConfig, data: LabeledImages, model_config: dict,
                 augment: AugmentConfig, init_meta: dict | None) -> dict:
    """What generator.json records beside the weights: enough to sample with nothing else."""
    return {
        "preset": train.preset, "model": model_config, "class_names": data.class_names,
        "class_counts": data.counts().tolist(), "image_size": data.image_size, "channels": data.channels,
        "loss": asdict(cfg.loss), "schedule": DEFAULT_SCHEDULE, "data": data.source,
        "train": {k: getattr(train, k) for k in ("max_steps", "batch_size", "lr", "warmup_steps",
                                                  "ema_decay", "hflip", "seed", "precision",
                                                  "balance_power", "augment_p")},
        "augment": augment.to_dict(),
        "init_from": init_meta, "package_version": __version__,
    }


def _trainer(train: TrainConfig, out: Path, meta: dict, class_names: list[str], progress: bool, echo, record=None):
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from cbdm_aug.generator.callbacks import ExportCallback, FinalStepCheckpoint, SampleGridCallback
    from cbdm_aug.generator.checkpoints import KeepPreviousCheckpointIO
    from cbdm_aug.generator.progress import StepProgress

    checkpoint = FinalStepCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=train.checkpoint_every,
                                     save_last=True, save_top_k=0, enable_version_counter=False)
    return pl.Trainer(
        max_steps=train.max_steps, max_epochs=-1, accelerator=train.accelerator,
        devices=int(train.devices) if str(train.devices).isdigit() else train.devices,
        num_nodes=train.num_nodes, strategy=train.strategy, precision=train.precision,
        gradient_clip_val=train.grad_clip, default_root_dir=out,
        logger=CSVLogger(out, name="logs"), log_every_n_steps=10,  # logs/version_N per (re)start
        callbacks=[checkpoint, ExportCallback(out, meta),
                   SampleGridCallback(out, train.sample_every, class_names, decoder=_grid_decoder(record)),
                   *([StepProgress(echo, refresh=25 if _on_gpu(train.accelerator) else 1)] if progress else [])],
        enable_progress_bar=False,  # StepProgress counts steps, the unit of --max-steps
        enable_model_summary=False, num_sanity_val_steps=0, plugins=[KeepPreviousCheckpointIO()],
    )


def _grid_decoder(record):
    """The progress grids' decoder of a latent generator (on the CPU until a grid moves it), or None."""
    if record is None:
        return None
    from cbdm_aug.diffusion.autoencoder import LatentDecoder, load_autoencoder

    return LatentDecoder(load_autoencoder(record), record)


def _loader(train: TrainConfig, data: LabeledImages, module, world_size: int, latents=None) -> torch.utils.data.DataLoader:
    """The training batches: images (or a latent generator's cached moments, ``latents``) and labels from
    the host, or, with the data on the device, the indices of the images there
    (``module.keep_data_on_device``); one sampler draws both."""
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    if latents is not None:
        images = latents.moments
    if train.device_data:  # the module carries the images to the device; the loader draws indices
        module.keep_data_on_device(images, labels)
        dataset = _Indices(len(labels))
        path = {"collate_fn": _index_batch, "pin_memory": _on_gpu(train.accelerator)}
    else:
        dataset = torch.utils.data.TensorDataset(images, labels)
        path = {"num_workers": train.num_workers, "persistent_workers": train.num_workers > 0}
    sampler_gen = torch.Generator().manual_seed(train.seed)
    # Enough indices per epoch that a tiny tail-only set still fills whole batches on every rank.
    # Under DDP, Lightning would swap a plain RandomSampler for a DistributedSampler over the
    # dataset (dropping num_samples, so a small set gave every rank zero batches and the run
    # "finished" at step 0); any other sampler it shards with DistributedSamplerWrapper.
    num_samples = max(len(dataset), train.batch_size * world_size)
    if train.balance_power == 1:  # as the data: the sampler every run before balance_power used
        inner = torch.utils.data.RandomSampler(dataset, num_samples=num_samples, generator=sampler_gen)
    else:
        inner = torch.utils.data.WeightedRandomSampler(
            balance_weights(data.labels, train.balance_power), num_samples, replacement=True, generator=sampler_gen)
    return torch.utils.data.DataLoader(dataset, batch_size=train.batch_size, sampler=_Sampler(inner),
                                       drop_last=True, **path)
