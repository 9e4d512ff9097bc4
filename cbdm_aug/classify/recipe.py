"""Classifier recipes: frozen dataclasses per concern, loaded from YAML and ``--set`` overrides.

Layers, in order: dataclass defaults, the recipe YAML, then ``--set section.key=value`` flags.
Every key is checked: an unknown key in the YAML or in ``--set`` is a ``RecipeError`` naming it
(timm's args files ignore such keys silently, so a typo trains the wrong thing). A ``--set``
value is parsed as YAML and converted to the field's type, so ``schedule.epochs=3`` is an int and
``data.max_per_class=null`` is None.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cbdm_aug.classify.losses import LOSSES
from cbdm_aug.errors import UserError
from cbdm_aug.mixing import MIN_REAL_SHARE

SAMPLING_MODES = ("none", "class-balanced", "synthetic")
AUGMENTS = ("none", "randaugment")


class RecipeError(UserError):
    """A bad recipe: the message names the key or value and says what is accepted."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RecipeError(message)


@dataclass(frozen=True)
class DataConfig:
    train: str = "digits"               # 'digits', an .npz file or an image folder (class subfolders)
    test: str | None = None             # test images; None: the npz's x_test/y_test, or the hold-out
    holdout_per_class: int = 0          # > 0: split this many images per class off `train` as the test set
    longtail: str = "exp"               # 'exp' | 'step' | 'none' (use `train` as it is)
    imbalance: float = 100.0            # rho = n_max / n_min
    max_per_class: int | None = None    # n_max; None: the smallest class's count
    split_seed: int = 0                 # which images the long-tail view / hold-out keep; not the run seed
    image_size: int | None = None       # resize to this square size; None: keep the data's size
    channels: int | None = None         # 1 or 3; None: keep the data's channels
    crop_padding: int = 0               # random crop after zero padding by this many pixels (0: off)
    hflip: bool = False                 # random horizontal flips
    augment: str = "none"               # 'none' | 'randaugment': a RandAugment policy (Cubuk et al. 2020,
                                        # torchvision's) on every training image, real and synthetic alike
    augment_synthetic: bool = True      # RandAugment the synthetic images too (False: the real ones only)
    augment_ops: int = 2                # RandAugment: operations per image
    augment_magnitude: int = 9          # RandAugment: magnitude, 0..30

    def __post_init__(self):
        _check(self.longtail in ("exp", "step", "none"), f"data.longtail must be 'exp', 'step' or 'none', got {self.longtail!r}")
        _check(self.holdout_per_class >= 0, f"data.holdout_per_class must be >= 0, got {self.holdout_per_class}")
        _check(self.imbalance >= 1, f"data.imbalance must be >= 1, got {self.imbalance}")
        _check(self.channels in (None, 1, 3), f"data.channels must be 1, 3 or null, got {self.channels}")
        _check(self.image_size is None or self.image_size >= 4, f"data.image_size must be >= 4, got {self.image_size}")
        _check(self.crop_padding >= 0, f"data.crop_padding must be >= 0, got {self.crop_padding}")
        _check(self.augment in AUGMENTS, f"data.augment must be one of {AUGMENTS}, got {self.augment!r}")
        _check(self.augment_ops >= 1, f"data.augment_ops must be >= 1, got {self.augment_ops}")
        _check(0 <= self.augment_magnitude <= 30, f"data.augment_magnitude must be in [0, 30], got {self.augment_magnitude}")
        _check(not (self.test and self.holdout_per_class), "give data.test or data.holdout_per_class, not both")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet32_cifar"        # any timm model name; *_cifar are registered by cbdm_aug.networks
    drop_rate: float = 0.0              # dropout before the classifier
    pretrained_file: str | None = None  # start from these local weights (a state_dict file for `name`, loaded
                                        # by timm, the head re-made for your classes); None: random init

    def __post_init__(self):
        _check(0 <= self.drop_rate < 1, f"model.drop_rate must be in [0, 1), got {self.drop_rate}")
        _check(self.pretrained_file is None or bool(str(self.pretrained_file).strip()),
               "model.pretrained_file must be a file path or null, got an empty string")


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"                   # 'sgd' | 'adamw'
    lr: float = 0.1
    momentum: float = 0.9               # SGD only
    nesterov: bool = False              # SGD only
    weight_decay: float = 2e-4

    def __post_init__(self):
        _check(self.name in ("sgd", "adamw"), f"optim.name must be 'sgd' or 'adamw', got {self.name!r}")
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int = 200
    batch_size: int = 128
    kind: str = "step"                  # 'step' | 'cosine' | 'constant', after the warm-up
    warmup_epochs: float = 5.0          # linear warm-up from lr / (warm-up steps) to lr
    milestones: tuple[int, ...] = (160, 180)  # 'step': epochs at which lr is multiplied by gamma
    gamma: float = 0.01                 # 'step': the factor at each milestone
    crt_epochs: int = 0                 # > 0: then classifier re-training (cRT, Kang et al. 2020): re-initialise
                                        # the last layer and train only it for this many epochs on the real
                                        # images, class-balanced, without synthetic ones (cosine from optim.lr)

    def __post_init__(self):
        _check(self.epochs >= 1, f"schedule.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"schedule.batch_size must be >= 1, got {self.batch_size}")
        _check(self.kind in ("step", "cosine", "constant"), f"schedule.kind must be 'step', 'cosine' or 'constant', got {self.kind!r}")
        _check(self.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        _check(self.crt_epochs >= 0, f"schedule.crt_epochs must be >= 0, got {self.crt_epochs}")
        _check(list(self.milestones) == sorted(self.milestones), f"schedule.milestones must be increasing, got {list(self.milestones)}")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "ce"                    # 'ce' | 'balanced-softmax' | 'logit-adjustment'
    tau: float = 1.0                    # logit adjustment's tau (Menon et al. 2021)
    label_smoothing: float = 0.0
    prior: str = "real"                 # the class prior of balanced-softmax / logit-adjustment: 'real'
                                        # training counts, or 'sampled': what the sampler draws per epoch
                                        # (real + synthetic), so the loss corrects only the imbalance left
    synthetic_weight: float = 1.0       # loss weight of a synthetic image relative to a real one (DiffuLT
                                        # uses about 0.3); the batch loss is the weighted mean

    def __post_init__(self):
        _check(self.prior in ("real", "sampled"), f"loss.prior must be 'real' or 'sampled', got {self.prior!r}")
        _check(self.kind in LOSSES, f"loss.kind must be one of {LOSSES}, got {self.kind!r}")
        _check(0 <= self.label_smoothing < 1, f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(0 <= self.synthetic_weight <= 1e3, f"loss.synthetic_weight must be in [0, 1000], got {self.synthetic_weight}")


@dataclass(frozen=True)
class SamplingConfig:
    mode: str = "none"                  # 'none' | 'class-balanced' (real only) | 'synthetic' (real + cache)
    cache: str | None = None            # 'synthetic': cache path(s), comma-separated
    target: str = "uniform"             # 'uniform' or comma-separated class weights
    num_samples: int | None = None      # samples per epoch; None: the number of real training images
    max_synthetic_share: float | None = None  # 'synthetic': bound on the synthetic share of an epoch
    share_file: str | None = None       # 'synthetic': the per-class decisions the generated images obey, e.g.
                                        # `cbdm-aug run`'s cache/decisions.json (cbdm_aug.mixing); None: the
                                        # file beside each cache, where there is one; 'all': every image
    min_real_share: float | None = MIN_REAL_SHARE  # 'synthetic': at least this share of a class's
                                        # places go to its real images (the sampler's own default)

    def __post_init__(self):
        _check(self.mode in SAMPLING_MODES, f"sampling.mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        _check(self.num_samples is None or self.num_samples >= 1, f"sampling.num_samples must be >= 1, got {self.num_samples}")
        _check(self.max_synthetic_share is None or 0 <= self.max_synthetic_share <= 1,
               f"sampling.max_synthetic_share must be in [0, 1], got {self.max_synthetic_share}")
        _check(self.min_real_share is None or 0 <= self.min_real_share <= 1,
               f"sampling.min_real_share must be in [0, 1], got {self.min_real_share}")
        _check(self.share_file is None or self.max_synthetic_share is None,
               "give sampling.max_synthetic_share or sampling.share_file, not both")
        if self.target != "uniform":
            try:
                [float(w) for w in self.target.split(",")]
            except ValueError:
                raise RecipeError(f"sampling.target must be 'uniform' or comma-separated numbers, got {self.target!r}") from None

    def target_weights(self):
        return "uniform" if self.target == "uniform" else [float(w) for w in self.target.split(",")]

    def cache_paths(self) -> list[str]:
        return [p.strip() for p in (self.cache or "").split(",") if p.strip()]


@dataclass(frozen=True)
class EvalConfig:
    many_threshold: int = 100           # many-shot: more than this many training images
    few_threshold: int = 20             # few-shot: fewer than this many; medium is in between
    batch_size: int = 512
    every: int = 0                      # also evaluate every this many epochs (0: only at the end)

    def __post_init__(self):
        _check(0 <= self.few_threshold <= self.many_threshold + 1,
               f"eval.few_threshold ({self.few_threshold}) must be in [0, many_threshold + 1]")


@dataclass(frozen=True)
class Recipe:
    name: str = "recipe"
    seed: int = 0                       # model init, augmentation and sampling order
    device: str = "auto"                # 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...
    num_workers: int = 0                # DataLoader workers
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        # sampling.cache is checked when training starts, not here: a shipped +synthetic recipe
        # leaves it unset (the user's cache path comes with --set) and must still load and dry-run.
        _check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")


def _coerce(value, tp, key: str):
    """``value`` as type ``tp`` (int, float, str, bool, X | None, tuple[X, ...]); RecipeError if it is not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(v, args[0], key) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise RecipeError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls, values: dict, prefix: str = ""):
    if not isinstance(values, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"unknown recipe key {prefix}{unknown[0]!s}; "
                          f"{prefix.rstrip('.') or 'the top level'} accepts: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def _apply_override(tree: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set expects key=value (for example schedule.epochs=3), got {assignment!r}")
    parts, cls, node = key.split("."), Recipe, tree
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise RecipeError(f"unknown recipe key {key!r} in --set; "
                              f"{'.'.join(parts[:i]) or 'the top level'} accepts: {', '.join(sorted(fields))}")
        tp = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                raise RecipeError(f"--set {key} names a section; set one of its keys, e.g. {key}.{dataclasses.fields(tp)[0].name}=...")
            node[part] = yaml.safe_load(raw) if raw.strip() else ""
        else:
            if not dataclasses.is_dataclass(tp):
                raise RecipeError(f"unknown recipe key {key!r} in --set: {'.'.join(parts[:i + 1])} is not a section")
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise RecipeError(f"{'.'.join(parts[:i + 1])}: expected a mapping in the recipe, got {node[part]!r}")
            node, cls = node[part], tp


def load_recipe(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe file")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe is a YAML mapping of sections, got {type(tree).__name__}")
    for assignment in overrides:
        _apply_override(tree, assignment)
    return _build(Recipe, tree)


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain dict (tuples as lists) that ``load_recipe`` reads back to an equal recipe."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v
    return plain(dataclasses.asdict(recipe))


def save_recipe(recipe: Recipe, path: str | Path, header: str = "") -> None:
    """Write the resolved recipe as YAML, with ``header`` as leading comment lines."""
    text = "".join(f"# {line}\n" for line in header.splitlines())
    text += yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
    Path(path).write_text(text)
