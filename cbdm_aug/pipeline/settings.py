"""What ``cbdm-aug run`` trains: the user's options, the defaults chosen from the data and the device,
and, in one place, the configuration of the "+ synthetic" arm.

``SyntheticArm`` is the configuration that ``benchmarks/tail_gain.py`` measures; when a benchmark
moves a default, change it here and nowhere else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cbdm_aug.errors import ConfigError
from cbdm_aug.evaluate.evidence import MIN_JUDGED
from cbdm_aug.mixing import MIN_REAL_SHARE

# The classifier arms of a run: the two real-only recipes, and each of them + the synthetic images
ARMS = ("control", "randaugment", "control+synthetic", "randaugment+synthetic")
TWINS = {"control+synthetic": "control", "randaugment+synthetic": "randaugment"}  # synthetic arm: its real-only twin
ARM_TITLES = {"control": "control", "randaugment": "RandAugment", "control+synthetic": "control + synthetic",
              "randaugment+synthetic": "RandAugment + synthetic"}  # what reports and progress lines call them


@dataclass(frozen=True)
class SyntheticArm:
    """The "+ synthetic" arm: how its cache is made and filtered, and how the classifier uses it."""
    top_up: int = 500                   # every class topped up to min(top_up, largest class) images,
                                        # real + synthetic (tail_gain: 500 on MNIST-LT with n_max 5000)
    sampler: str = "dpmpp-sde"          # matched the 1000-step ddpm reference at 1/71 of its cost
    sample_steps: int = 20              # (benchmarks/results/sampler_quality.md)
    guidance: float = 1.0               # classifier-free guidance w
    filter_confidence: float | None = 0.5  # drop images the real-data classifier gives their class below
                                        # this probability (None: keep all); unfiltered images lost to
                                        # plain re-sampling on MNIST-LT (benchmarks/results/e2e_quality.md)
    near_copy_ratio: float = 0.5        # and near-copies of a training image (filter-cache's criterion)
    max_copy_share: float | None = 0.5  # the per-class gate (evaluate/gate.py): a class whose unfiltered
                                        # samples are near-copies at this share or more gets none of them
                                        # (None: off). "Mostly copies": the memorising class-balanced
                                        # generators of issue 17 sat at 0.50-0.79 on their 5/10-image classes
                                        # and the held-out letters' 3-image class at 0.75 (-14 points); the
                                        # generators kept here peak at 0.18 (a 3-image class, P=0) and the gate
                                        # removed nothing in any measured row (tail_gain_rho1000*.md)
    synthetic_weight: float = 1.0       # loss weight of a synthetic image relative to a real one (DiffuLT).
                                        # MNIST-LT rho=1000, balanced-batch CBDM: 1 gave +2.1 [+0.5, +3.6] few-shot
                                        # points over RandAugment, 0.3 gave +2.0 [-1.1, +5.2]
                                        # (benchmarks/results/tail_gain_rho1000.md)
    min_real_share: float | None = MIN_REAL_SHARE  # the sampler's real floor: at least this share of a class's
                                        # places go to its real images (None: no floor; docs/decisions.md)
    evidence: bool = True               # cross-fitted per-class evidence (evaluate/evidence.py) decides which
                                        # classes get generated images; False: every class the gate passed
    min_judged: int = MIN_JUDGED        # the cautious rule: a class with fewer real images gets none
    seed: int = 0                       # sampling seed of the cache
    gen_balance_power: float = 0.5      # the generator's own batches draw class c ~ n_c ** this. At rho=1000 a
                                        # CBDM on natural batches (1) had not learned its 5- and 10-image classes
                                        # (0-6% of samples recognised), on class-balanced ones (0) it memorised
                                        # them (100% near-copies by 1200 steps), on square-root ones (0.5) 81-88%
                                        # were recognised and none were copies (benchmarks/results/tail_probe_rho1000*.md)
    gen_augment_p: float = 0.12         # the generator's augmentation conditioning (fit-generator --augment, the
                                        # reference's 0.12). MNIST-LT rho=1000 n_max 3000 (13/6/3 images): the
                                        # 3-image class's near-copies 0.20 -> 0.00, few-shot +1.78 [+0.24, +3.32]
                                        # over P=0 (5 seeds); at n_max 5000 -0.17 [-1.48, +1.13] at 1200 steps,
                                        # +0.63 at 2400; P=0.3 cost -1.45 [-3.74, +0.84] (tail_gain_rho1000*.md)

    def __post_init__(self):
        if self.top_up < 1:
            raise ConfigError(f"top_up must be >= 1, got {self.top_up}")
        if self.sample_steps < 1:
            raise ConfigError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.filter_confidence is not None and not 0 <= self.filter_confidence <= 1:
            raise ConfigError(f"filter_confidence must be in [0, 1] or None, got {self.filter_confidence}")
        if not 0 <= self.synthetic_weight <= 1e3:
            raise ConfigError(f"synthetic_weight must be in [0, 1000], got {self.synthetic_weight}")
        if self.max_copy_share is not None and not 0 < self.max_copy_share <= 1:
            raise ConfigError(f"max_copy_share must be in (0, 1] or None, got {self.max_copy_share}")
        if self.min_real_share is not None and not 0 <= self.min_real_share <= 1:
            raise ConfigError(f"--min-real-share must be in [0, 1], got {self.min_real_share}")
        if self.min_judged < 0:
            raise ConfigError(f"min_judged must be >= 0, got {self.min_judged}")
        if not 0 <= self.gen_augment_p <= 1:  # as diffusion.augment.AugmentConfig; this module stays torch-free
            raise ConfigError(f"--augment must be a probability in [0, 1], got {self.gen_augment_p}")

    def cache_settings(self) -> dict:
        """The settings that make the cache (the rest only change how the classifier uses it)."""
        d = asdict(self)
        for k in ("synthetic_weight", "gen_balance_power", "gen_augment_p", "min_real_share", "evidence", "min_judged"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class RunOptions:
    """What the user asked for; None means "chosen from the data and the device" (see ``resolve``)."""
    data: str
    test: str | None = None
    holdout_per_class: int = 0
    skip_bad: bool = False              # skip unreadable image files (and say how many) instead of failing
    generator: str | None = None        # reuse this fitted generator run instead of fitting one
    preset: str | None = None
    gen_steps: int | None = None
    image_size: int | None = None
    model: str | None = None
    classifier_epochs: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "auto"
    many_threshold: int = 100           # shot groups by real training images (the literature's split)
    few_threshold: int = 20
    synthetic: SyntheticArm = field(default_factory=SyntheticArm)

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
        if self.image_size is not None and not 4 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size must be in [4, 1024], got {self.image_size}")


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


CPU_IMAGE_CAP = 16          # a CPU step at 16x16 costs ~1/2.5 of one at 28x28 (measured with the cpu UNet)
CPU_GEN_STEPS = 1200        # ~9 min of the cpu UNet at 16x16, batch 64, on 2 cores: the budget of the best
                            # measured arm at rho=1000 (square-root batches, +2.4 few-shot points over RandAugment)
GPU_GEN_STEPS = 20000
DRAWS = 40_000              # classifier images drawn in a run: 4 epochs of MNIST-LT (tail_gain's 4 x 12,406)


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
                    gen_balance_power=opts.synthetic.gen_balance_power, gen_augment_p=opts.synthetic.gen_augment_p,
                    model=model, epochs=epochs, filter_epochs=auto_epochs, batch_size=batch, lr=0.1 * batch / 128,
                    crop_padding=1 if size <= 16 else size // 8, hflip=channels == 3), why
