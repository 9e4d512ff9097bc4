"""How images are sampled from a generator: which sampler, how many steps, how much guidance, which seed.

One frozen type for every way of making images: ``generate_cache`` (``cbdm_aug.cache.generate``), the
``generate`` and ``evaluate-generator`` commands, and ``run``'s cache stage (``CacheSettings``). Their
defaults and ``--help`` come from here; docs/decisions.md gives the evidence behind each default.
This module stays torch-free: the CLIs' ``--help`` and ``pipeline.settings`` read it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cbdm_aug.errors import ConfigError

SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp", "dpmpp-sde")  # the update rules of diffusion.sampling.make_scheduler
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpmpp": 20, "dpmpp-sde": 20}  # each sampler's own, when none is given
DEFAULT_SAMPLER = "dpmpp-sde"  # the 1000-step ddpm reference's quality at 1/71 of its cost (docs/decisions.md)


@dataclass(frozen=True)
class SamplerSettings:
    """What decides the images, besides the generator and the plan (not the batch size or the device).

    ``steps`` defaults to the default sampler's own count; ``SamplerSettings.of(sampler)`` gives another
    sampler its own (``DEFAULT_STEPS``). A cache records ``record()`` and resumes only with equal settings.
    """

    sampler: str = DEFAULT_SAMPLER
    steps: int = DEFAULT_STEPS[DEFAULT_SAMPLER]
    guidance: float = 1.0               # classifier-free guidance w (docs/decisions.md)
    seed: int = 0                       # base seed: image k of class c draws from cache.generate.image_seed(seed, c, k)
    feedback: dict | None = None        # classifier-feedback guidance: {"classifier", "weights_sha256", "kind", "scale"}

    def __post_init__(self):
        if self.sampler not in SAMPLER_NAMES:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLER_NAMES}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if isinstance(self.guidance, bool) or not isinstance(self.guidance, (int, float)) \
                or not 0 <= self.guidance < math.inf:  # NaN and inf would sample NaN images
            raise ConfigError(f"guidance must be finite and >= 0, got {self.guidance!r}")
        object.__setattr__(self, "guidance", float(self.guidance))  # w=1 and w=1.0 record alike
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 62:
            raise ConfigError(f"seed must be an integer in [0, 2**62), got {self.seed!r}")
        if self.feedback is not None and not 0 < self.feedback.get("scale", -1) < math.inf:
            raise ConfigError(f"feedback scale must be finite and > 0, got {self.feedback.get('scale')!r}")

    @classmethod
    def of(cls, sampler: str = DEFAULT_SAMPLER, steps: int | None = None, **rest) -> SamplerSettings:
        """Settings for ``sampler`` with ``steps``, or that sampler's own step count when None."""
        if sampler not in SAMPLER_NAMES:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {SAMPLER_NAMES}")
        return cls(sampler, DEFAULT_STEPS[sampler] if steps is None else steps, **rest)

    def record(self) -> dict:
        """The settings as a cache stores them (no ``feedback`` key without feedback, as before it existed)."""
        d = asdict(self)
        if d["feedback"] is None:
            del d["feedback"]
        return d


SAMPLING = SamplerSettings()  # the defaults, for CLI options and the settings that embed these fields
