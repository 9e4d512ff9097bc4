"""What ``cbdm-aug run`` trains: the user's options, the defaults chosen from the data and the device,
and, in one place each, the settings of the "+ synthetic" arm: how its generator is fitted
(``GeneratorSettings``), how its cache is made and filtered (``CacheSettings``), how the classifier
uses the images (``ArmSettings``) and how every classifier of the run trains (``ClassifierSettings``).

These are the settings that ``benchmarks/tail_gain.py`` measures, and it reads its defaults from
them: when a benchmark moves a default, change it here and nowhere else. The evidence behind each
default is in docs/decisions.md. This module stays torch-free (the CLI's ``--help`` reads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cbdm_aug.diffusion.sampler_settings import SAMPLING, SamplerSettings
from cbdm_aug.diffusion.unet import check_image_size
from cbdm_aug.errors import ConfigError
from cbdm_aug.evaluate.criteria import (
    CONFIDENCE,
    MAX_COPY_SHARE,
    NEAR_COPY_RATIO,
    RUN_TOP_SHARE,
    check_criteria,
)
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
    filter_top_share: float | None = RUN_TOP_SHARE  # keep an image whose class is in the filter classifier's top
                                        # ceil(share x classes), at >= chance: the rank, under the RandAugment judge
                                        # below (issue 34, ninth pass; docs/decisions.md)
    filter_confidence: float | None = CONFIDENCE  # and, if set, at least this probability (None: no fixed floor)
    near_copy_ratio: float = NEAR_COPY_RATIO  # and near-copies of a training image (filter-cache's criterion)
    max_copy_share: float | None = MAX_COPY_SHARE  # the per-class gate (evaluate/gate.py; None: off; docs/decisions.md)
    seed: int = SAMPLING.seed           # sampling seed of the cache
    first_batch: int = 16               # images of each class generated and filtered first, at least: a class none
                                        # of whose first images pass gets no more (0: off; docs/decisions.md)
    first_share: float = 1 / 16         # and at least this share of the class's planned images (staged.first_sizes)
    filter_false_positive_share: float | None = None  # if set: keep an image the classifier scores as its class
                                        # above all but this share of the other classes' real images (filter-cache's
                                        # default, 0.01; evaluate/criteria.py class_thresholds; docs/decisions.md)
    filter_augment: str = "randaugment"  # the filter classifier's training augmentation: "randaugment" (the arms'
                                        # RandAugment: a stricter judge of a rare class's images, which under the
                                        # per-class threshold of a classifier without it let a 3-image class's 7-like
                                        # images take a 13-image class's border) or "none"; keyed only where not "none"


    def __post_init__(self):
        _check(self.top_up >= 1, f"top_up must be >= 1, got {self.top_up}")
        _check(self.first_batch >= 0, f"first_batch must be >= 0, got {self.first_batch}")
        _check(0 <= self.first_share <= 1, f"first_share must be in [0, 1], got {self.first_share}")
        _check(self.filter_augment in ("none", "randaugment"),
               f"filter_augment must be 'none' or 'randaugment', got {self.filter_augment!r}")
        object.__setattr__(self, "guidance", self.sampling.guidance)  # validated there; w=1 and 1.0 key alike
        check_criteria(self.filter_confidence, self.near_copy_ratio, self.max_copy_share, self.filter_top_share,
                       self.filter_false_positive_share)

    @property
    def criteria(self) -> dict:
        """The filter's per-image criteria, as ``filter_cache`` and ``pass_counts`` take them."""
        return {"confidence": self.filter_confidence, "top_share": self.filter_top_share,
                "false_positive_share": self.filter_false_positive_share, "near_copy_ratio": self.near_copy_ratio}

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
    min_judged: int = MIN_JUDGED        # a class with fewer real images is decided from proxies of its size
    randaugment_synthetic: bool = False  # the RandAugment arm's policy on the generated images too (False: its real
                                        # images only, the generated ones as sampled; docs/decisions.md)

    def __post_init__(self):
        _check(0 <= self.synthetic_weight <= 1e3, f"synthetic_weight must be in [0, 1000], got {self.synthetic_weight}")
        _check(self.min_real_share is None or 0 <= self.min_real_share <= 1,
               f"--min-real-share must be in [0, 1], got {self.min_real_share}")
        _check(self.min_judged >= 0, f"min_judged must be >= 0, got {self.min_judged}")


@dataclass(frozen=True)
class ClassifierSettings:
    """How ``run`` trains its classifier arms (and the evidence probes) when no ``--classifier-recipe`` is
    given: the one home of these numbers; each row of docs/decisions.md ("ClassifierSettings") says where
    it comes from, and which have no measurement of ours behind them."""
    draws: int = 40_000                 # images drawn per classifier run; epochs = draws / N (docs/decisions.md)
    min_epochs: int = 4                 # ... clipped to [min_epochs, max_epochs]
    max_epochs: int = 30
    lr_at_128: float = 0.1              # SGD lr at batch 128, scaled linearly with the batch (docs/decisions.md)
    weight_decay: float = 5e-4          # docs/decisions.md
    warmup_epochs: float = 0.5          # linear warm-up, then `schedule` (docs/decisions.md)
    schedule: str = "cosine"
    small_batch: int = 64               # batch under `small_data` training images, else `batch` (docs/decisions.md)
    batch: int = 128
    small_data: int = 2000
    cpu_model: str = "resnet8_cifar"    # the classifier by device and size (docs/decisions.md)
    gpu_model: str = "resnet32_cifar"
    large_model: str = "resnet18"       # above `large_size` px on either device
    large_size: int = 32
    eval_batch: int = 1000              # images per evaluation batch: speed only
    filter_model: str = "resnet8_cifar"  # the cache filter's classifier unless the user names weights or a recipe

    def __post_init__(self):
        _check(1 <= self.min_epochs <= self.max_epochs, f"epochs must satisfy 1 <= min <= max, got "
                                                        f"{self.min_epochs}, {self.max_epochs}")
        _check(self.draws >= 1 and self.lr_at_128 > 0 and self.weight_decay >= 0 and self.warmup_epochs >= 0,
               "draws, lr_at_128, weight_decay and warmup_epochs must be positive")
        _check(self.schedule in ("step", "cosine", "constant"), f"schedule must be step, cosine or constant, "
                                                               f"got {self.schedule!r}")

    def epochs(self, num_images: int) -> int:
        return max(self.min_epochs, min(self.max_epochs, round(self.draws / num_images)))

    def batch_size(self, num_images: int) -> int:
        return self.small_batch if num_images < self.small_data else self.batch

    def lr(self, batch_size: int) -> float:
        return self.lr_at_128 * batch_size / 128

    def model(self, size: int, on_gpu: bool) -> str:
        return self.large_model if size > self.large_size else self.gpu_model if on_gpu else self.cpu_model

    @staticmethod
    def crop_padding(size: int) -> int:
        """Random-crop padding: 1 px up to 16 px (a 4 px shift is a quarter of a 16 px image), else size / 8
        (4 px at 32, the CIFAR recipe's)."""
        return 1 if size <= 16 else size // 8


@dataclass(frozen=True)
class RecipeFacts:
    """What ``resolve`` needs of a ``--classifier-recipe`` (``pipeline.run`` reads the file: the recipe
    module imports torch)."""
    path: str
    image_size: int | None
    model: str
    pretrained_file: str | None
    epochs: int
    batch_size: int
    lr: float
    crop_padding: int
    hflip: bool


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
    image_size: int | None = None       # the generator's size (and, on a CPU by default, the classifier's)
    classifier_size: int | None = None  # the classifier's size; None: see resolve
    model: str | None = None
    pretrained: str | None = None       # local weights the classifiers start from (model.pretrained_file)
    classifier_recipe: str | None = None  # a train-classifier recipe for the arms; run adds the arms' differences
    classifier_epochs: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    many_threshold: int = 100           # shot groups by real training images (the literature's split)
    few_threshold: int = 20
    fit: GeneratorSettings = field(default_factory=GeneratorSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    arm: ArmSettings = field(default_factory=ArmSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)

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
        if self.classifier_size is not None and self.classifier_size < 4:
            raise ConfigError(f"--classifier-size must be >= 4, got {self.classifier_size}")


@dataclass(frozen=True)
class Resolved:
    """Every setting of a run, made concrete."""
    image_size: int         # the generator's; its images are resized to classifier_size for the arms
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
    classifier_size: int    # the arms' and the evidence probes'
    pretrained: str | None  # local weights every classifier starts from
    recipe: str | None      # the --classifier-recipe the arms are built from
    filter_model: str       # the cache filter's classifier
    filter_size: int


CPU_IMAGE_CAP = 16          # the CPU generator's size: a step at 16x16 costs a fraction of one at 28x28 (docs/decisions.md)
CPU_GEN_STEPS = 1200        # minutes on 2 cores: the budget of the best measured arm at rho=1000 (docs/decisions.md)
GPU_GEN_STEPS = 20000
# With the evidence on, the generator's gen_steps are split: it is first fitted without the images its proxies are
# judged on (their images for the evidence come from it: no leak), then goes on on every image for this share of
# gen_steps, so the run's generator has the steps it had before and the stage its minutes (docs/decisions.md,
# "unseen proxies": 1200 + 300 steps took the alike folder's run to 20.4 min).
UNSEEN_CONTINUE = 0.2


def _generator_size(opts: RunOptions, image_size: int, on_gpu: bool, generator_size: int | None, why: list) -> int:
    if opts.image_size:
        return opts.image_size
    if generator_size:
        why.append(f"generator size {generator_size}: the --generator's")
        return generator_size
    if not on_gpu and image_size > CPU_IMAGE_CAP:
        why.append(f"generator size {CPU_IMAGE_CAP} (your images are {image_size}x{image_size}): on a CPU a "
                   f"{CPU_IMAGE_CAP}x{CPU_IMAGE_CAP} generator takes about a third of the time; --image-size "
                   f"{image_size} keeps them")
        return CPU_IMAGE_CAP
    size = min(image_size, 64)
    if size != image_size:
        why.append(f"generator size {size} (your images are {image_size}): pass --image-size to change it")
    return size


def _classifier_size(opts: RunOptions, image_size: int, gen_size: int, on_gpu: bool, recipe: RecipeFacts | None,
                     why: list) -> int:
    """The user's size, unless a CPU run names no weights or recipe: then the generator's, which says so."""
    if opts.classifier_size:
        return opts.classifier_size
    if recipe is not None and recipe.image_size:
        return recipe.image_size
    if on_gpu or opts.pretrained or recipe is not None or gen_size >= image_size:
        return image_size
    why.append(f"classifier size {gen_size}, the generator's (your images are {image_size}x{image_size}): on a CPU "
               f"each classifier run (4 arms a seed, 6-9 evidence probes) costs about 3.4x as much at 32 px as at "
               f"16 (docs/decisions.md); "
               f"--classifier-size {image_size} trains them at your size")
    return gen_size


def resolve(opts: RunOptions, num_images: int, image_size: int, channels: int, on_gpu: bool,
            generator_size: int | None = None, recipe: RecipeFacts | None = None) -> tuple[Resolved, list[str]]:
    """The concrete settings for data of ``num_images`` images of ``image_size`` px, and one line per
    choice that was not the user's, saying why. ``recipe``: the user's classifier recipe, which sets the
    arms' model, optimiser, schedule and size."""
    why = []
    size = _generator_size(opts, image_size, on_gpu, generator_size, why)
    preset = opts.preset or ("cifar-paper" if on_gpu and size >= 32 else "small" if on_gpu else "cpu")
    if not opts.preset:
        why.append(f"generator preset {preset}: " + ("the GPU default" if on_gpu else "the ~1M-parameter UNet sized for a CPU"))
    steps = opts.gen_steps or (GPU_GEN_STEPS if on_gpu else CPU_GEN_STEPS)
    if not opts.gen_steps:
        why.append(f"{steps} generator steps: " + ("the GPU default" if on_gpu else
                   "the CPU default, minutes not hours; more steps give better images (--gen-steps)"))
    cls_size = _classifier_size(opts, image_size, size, on_gpu, recipe, why)
    c = opts.classifier
    auto_epochs = c.epochs(num_images)
    if recipe is not None:
        why.append(f"classifier recipe {recipe.path}: its model, optimiser, schedule, resolution and weights; run "
                   "sets only the data paths, the shot groups and each arm's difference (RandAugment or not, "
                   "generated images or not)")
        model, epochs, batch, lr = recipe.model, recipe.epochs, recipe.batch_size, recipe.lr
        crop, hflip = recipe.crop_padding, recipe.hflip
    else:
        model, batch = c.model(cls_size, on_gpu), c.batch_size(num_images)
        epochs, lr, crop, hflip = auto_epochs, c.lr(batch), c.crop_padding(cls_size), channels == 3
        if not opts.model:
            why.append(f"classifier {model}: sized for {cls_size}x{cls_size} images on a {'GPU' if on_gpu else 'CPU'} (--model)")
        if not opts.classifier_epochs:
            why.append(f"{epochs} classifier epochs: about {c.draws:,} images drawn per run for your {num_images:,} "
                       "(--classifier-epochs)")
    model, epochs = opts.model or model, opts.classifier_epochs or epochs
    pretrained = opts.pretrained or (recipe.pretrained_file if recipe else None)
    mine = pretrained is not None or recipe is not None  # the filter judges with the user's classifier then
    why.append(f"sizes: generator {size}x{size}, classifier {cls_size}x{cls_size} (your images are "
               f"{image_size}x{image_size})" + ("; generated images are resized to the classifier's size"
                                                 if size != cls_size else ""))
    return Resolved(image_size=size, channels=channels, preset=preset, gen_steps=steps,
                    gen_batch_size=64 if not on_gpu else 128, gen_lr=1e-3 if not on_gpu else 2e-4,
                    gen_balance_power=opts.fit.balance_power, gen_augment_p=opts.fit.augment_p,
                    model=model, epochs=epochs, filter_epochs=auto_epochs, batch_size=batch, lr=lr,
                    crop_padding=crop, hflip=hflip, classifier_size=cls_size, pretrained=pretrained,
                    recipe=recipe.path if recipe else None, filter_model=model if mine else c.filter_model,
                    filter_size=cls_size if mine else size), why
