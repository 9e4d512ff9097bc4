"""What ``cbdm-aug run`` trains: the user's options, the defaults chosen from the data and the device,
and, in one place each, the settings of the "+ synthetic" arm: how its generator is fitted
(``GeneratorSettings``), how its cache is made and filtered (``CacheSettings``) and how the classifier
uses the images (``ArmSettings``).

These are the settings that ``benchmarks/tail_gain.py`` measures, and it reads its defaults from
them: when a benchmark moves a default, change it here and nowhere else. The evidence behind each
default is in docs/decisions.md. This module stays torch-free (the CLI's ``--help`` reads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cbdm_aug.diffusion.sampler_settings import SAMPLING, SamplerSettings
from cbdm_aug.diffusion.unet import check_image_size
from cbdm_aug.errors import ConfigError
from cbdm_aug.evaluate.criteria import CONFIDENCE, MAX_COPY_SHARE, NEAR_COPY_RATIO, TOP_SHARE, check_criteria
from cbdm_aug.evaluate.evidence import MIN_JUDGED
from cbdm_aug.mixing import MIN_REAL_SHARE

# The classifier arms of a run: the two real-only recipes, and each of them + the synthetic images
ARMS = ("control", "randaugment", "control+synthetic", "randaugment+synthetic")
TWINS = {"control+synthetic": "control", "randaugment+synthetic": "randaugment"}  # synthetic arm: its real-only twin
ARM_TITLES = {"control": "control", "randaugment": "RandAugment", "control+synthetic": "control + synthetic",
              "randaugment+synthetic": "RandAugment + synthetic"}  # what reports and progress lines call them


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class GeneratorSettings:
    """How ``run`` fits its generator; the rest (size, preset, steps) is resolved from the data and device."""
    balance_power: float = 0.5          # class c drawn ~ n_c ** this in the generator's batches (docs/decisions.md)
    augment_p: float = 0.12             # augmentation-conditioned training, fit-generator --augment (docs/decisions.md)

    def __post_init__(self):
        _check(self.balance_power >= 0, f"balance_power must be >= 0, got {self.balance_power}")
        _check(0 <= self.augment_p <= 1, f"--augment must be a probability in [0, 1], got {self.augment_p}")


@dataclass(frozen=True)
class CacheSettings:
    """How the "+ synthetic" arm's cache is made and filtered; ``asdict`` of it is the cache stage's key."""
    top_up: int = 500                   # every class topped up to min(top_up, largest class) images, at most what
                                        # the arms can draw (mixing.synthetic_cap; docs/decisions.md)
    # how the images are sampled: SamplerSettings' fields, flat so that the stage key keeps its shape (``sampling``)
    sampler: str = SAMPLING.sampler
    sample_steps: int = SAMPLING.steps
    guidance: float = SAMPLING.guidance  # classifier-free guidance w
    filter: bool = True                 # False: the arms get every generated image, unfiltered
    filter_top_share: float | None = TOP_SHARE  # keep an image whose class is in the real-data classifier's top
                                        # ceil(share x classes), at >= chance (evaluate/criteria.py; docs/decisions.md)
    filter_confidence: float | None = CONFIDENCE  # and, if set, at least this probability (None: no fixed floor)
    near_copy_ratio: float = NEAR_COPY_RATIO  # and near-copies of a training image (filter-cache's criterion)
    max_copy_share: float | None = MAX_COPY_SHARE  # the per-class gate (evaluate/gate.py; None: off; docs/decisions.md)
    seed: int = SAMPLING.seed           # sampling seed of the cache
    first_batch: int = 16               # images of each class generated and filtered first: a class none of whose
                                        # first images pass gets no more (0: off; docs/decisions.md)

    def __post_init__(self):
        _check(self.top_up >= 1, f"top_up must be >= 1, got {self.top_up}")
        _check(self.first_batch >= 0, f"first_batch must be >= 0, got {self.first_batch}")
        object.__setattr__(self, "guidance", self.sampling.guidance)  # validated there; w=1 and 1.0 key alike
        check_criteria(self.filter_confidence, self.near_copy_ratio, self.max_copy_share, self.filter_top_share)

    @property
    def sampling(self) -> SamplerSettings:
        """How the cache is sampled, as ``generate_cache`` takes it."""
        return SamplerSettings(self.sampler, self.sample_steps, self.guidance, self.seed)


@dataclass(frozen=True)
class ArmSettings:
    """How the "+ synthetic" classifier arms use the cache."""
    synthetic_weight: float = 1.0       # loss weight of a synthetic image relative to a real one (docs/decisions.md)
    min_real_share: float | None = MIN_REAL_SHARE  # the sampler's real floor per class (None: none; docs/decisions.md)
    evidence: bool = True               # cross-fitted per-class decisions (evaluate/evidence.py); False: every class
    min_judged: int = MIN_JUDGED        # the cautious rule: a class with fewer real images gets none

    def __post_init__(self):
        _check(0 <= self.synthetic_weight <= 1e3, f"synthetic_weight must be in [0, 1000], got {self.synthetic_weight}")
        _check(self.min_real_share is None or 0 <= self.min_real_share <= 1,
               f"--min-real-share must be in [0, 1], got {self.min_real_share}")
        _check(self.min_judged >= 0, f"min_judged must be >= 0, got {self.min_judged}")


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for; None means "chosen from the data and the device" (see ``resolve``)."""
    data: str
    test: str | None = None
    holdout_per_class: int = 0
    skip_bad: bool = False              # skip unreadable image files (and say how many) instead of failing
    generator: str | None = None        # reuse this fitted generator run instead of fitting one
    autoencoder: str | None = None      # fit a latent generator on this diffusers autoencoder's latents
    preset: str | None = None
    gen_steps: int | None = None
    image_size: int | None = None
    model: str | None = None
    classifier_epochs: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    many_threshold: int = 100           # shot groups by real training images (the literature's split)
    few_threshold: int = 20
    fit: GeneratorSettings = field(default_factory=GeneratorSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    arm: ArmSettings = field(default_factory=ArmSettings)

    def __post_init__(self):
        if self.test and self.holdout_per_class:
            raise ConfigError("give --test or --holdout-per-class, not both")
        if self.holdout_per_class < 0:
            raise ConfigError(f"--holdout-per-class must be >= 0, got {self.holdout_per_class}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds must be distinct integers, got {list(self.seeds)}")
        for name in ("gen_steps", "classifier_epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        check_image_size(self.image_size)


@dataclass(frozen=True)
class Resolved:
    """Every setting of a run, made concrete."""
    image_size: int
    channels: int
    preset: str
    gen_steps: int
    gen_batch_size: int
    gen_lr: float
    gen_balance_power: float
    gen_augment_p: float
    model: str
    epochs: int
    filter_epochs: int      # the filter classifier's own: --classifier-epochs does not change the cache
    batch_size: int
    lr: float
    crop_padding: int
    hflip: bool


CPU_IMAGE_CAP = 16          # a CPU step at 16x16 costs a fraction of one at 28x28 (docs/decisions.md)
CPU_GEN_STEPS = 1200        # minutes on 2 cores: the budget of the best measured arm at rho=1000 (docs/decisions.md)
GPU_GEN_STEPS = 20000
DRAWS = 40_000              # classifier images drawn in a run: tail_gain's 4 epochs of MNIST-LT (docs/decisions.md)


def resolve(opts: RunOptions, num_images: int, image_size: int, channels: int, on_gpu: bool,
            generator_size: int | None = None) -> tuple[Resolved, list[str]]:
    """The concrete settings for data of ``num_images`` images of ``image_size`` px, and one line per
    choice that was not the user's, saying why."""
    why = []
    if opts.image_size:
        size = opts.image_size
    elif generator_size:
        size = generator_size
        why.append(f"image size {size}: the --generator's")
    elif not on_gpu and image_size > CPU_IMAGE_CAP:
        size = CPU_IMAGE_CAP
        why.append(f"image size {size} (your images are {image_size}x{image_size}): on a CPU a {size}x{size} "
                   f"run takes about a third of the time; --image-size {image_size} keeps them")
    else:
        size = min(image_size, 64)
        if size != image_size:
            why.append(f"image size {size} (your images are {image_size}): pass --image-size to change it")
    preset = opts.preset or ("cifar-paper" if on_gpu and size >= 32 else "small" if on_gpu else "cpu")
    if not opts.preset:
        why.append(f"generator preset {preset}: " + ("the GPU default" if on_gpu else "the ~1M-parameter UNet sized for a CPU"))
    steps = opts.gen_steps or (GPU_GEN_STEPS if on_gpu else CPU_GEN_STEPS)
    if not opts.gen_steps:
        why.append(f"{steps} generator steps: " + ("the GPU default" if on_gpu else
                   "the CPU default, minutes not hours; more steps give better images (--gen-steps)"))
    batch = 64 if num_images < 2000 else 128
    model = opts.model or ("resnet18" if size > 32 else "resnet32_cifar" if on_gpu else "resnet8_cifar")
    if not opts.model:
        why.append(f"classifier {model}: sized for {size}x{size} images on a {'GPU' if on_gpu else 'CPU'} (--model)")
    auto_epochs = max(4, min(30, round(DRAWS / num_images)))
    epochs = opts.classifier_epochs or auto_epochs
    if not opts.classifier_epochs:
        why.append(f"{epochs} classifier epochs: about {DRAWS:,} images drawn per run for your {num_images:,} (--classifier-epochs)")
    return Resolved(image_size=size, channels=channels, preset=preset, gen_steps=steps,
                    gen_batch_size=64 if not on_gpu else 128, gen_lr=1e-3 if not on_gpu else 2e-4,
                    gen_balance_power=opts.fit.balance_power, gen_augment_p=opts.fit.augment_p,
                    model=model, epochs=epochs, filter_epochs=auto_epochs, batch_size=batch, lr=0.1 * batch / 128,
                    crop_padding=1 if size <= 16 else size // 8, hflip=channels == 3), why
