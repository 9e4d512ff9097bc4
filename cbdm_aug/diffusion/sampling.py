"""Samplers for a class-conditional epsilon-prediction UNet, with classifier-free guidance.

The noise schedule and the update rules are diffusers' schedulers; this module adds the guided
denoiser and per-image seeding. Each image draws all its noise from its own ``torch.Generator``,
so an image depends only on its seed and label, not on the batch it was generated in.
"""
from __future__ import annotations

import torch

from cbdm_aug.diffusion.sampler_settings import DEFAULT_STEPS, SAMPLER_NAMES

SAMPLERS = SAMPLER_NAMES  # defined, with the default settings, in the torch-free sampler_settings
STOCHASTIC = ("ddpm", "dpmpp-sde")  # samplers that draw noise at every step, per image
DEFAULT_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                    "beta_schedule": "linear"}


def make_scheduler(sampler: str, schedule: dict | None = None):
    """A diffusers scheduler for ``sampler``: ``ddpm`` (ancestral, "fixed large" variance, the
    paper's reference), ``ddim`` (eta=0), ``dpmpp`` (DPM-Solver++ 2M) or ``dpmpp-sde`` (its
    stochastic variant, SDE-DPM-Solver++ 2M)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    s = dict(DEFAULT_SCHEDULE, **(schedule or {}))
    if sampler == "ddpm":
        return DDPMScheduler(**s, variance_type="fixed_large", clip_sample=True)
    if sampler == "ddim":
        # No x0 clipping: DDIM reuses the model's eps after the clip, and on a checkpoint that is not
        # fully trained the clipped x0 and the unclipped eps disagree (the FIDs: docs/decisions.md).
        return DDIMScheduler(**s, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler(**s, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", final_sigmas_type="zero")
    if sampler == "dpmpp-sde":  # stochastic: fresh noise each step, like the ancestral reference
        return DPMSolverMultistepScheduler(**s, algorithm_type="sde-dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", final_sigmas_type="zero")
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def guided_eps(unet, x_t: torch.Tensor, t, y: torch.Tensor, null_class: int, guidance: float) -> torch.Tensor:
    """eps_hat = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null), both branches in one forward pass."""
    if guidance == 0:
        return unet(x_t, t, class_labels=y).sample
    y_null = torch.full_like(y, null_class)
    eps_y, eps_null = unet(torch.cat([x_t, x_t]), t, class_labels=torch.cat([y, y_null])).sample.chunk(2)
    return (1 + guidance) * eps_y - guidance * eps_null


FEEDBACK_KINDS = ("entropy", "loss")


def classifier_feedback(classifier: torch.nn.Module, kind: str = "entropy"):
    """The feedback criterion J(x0, y) -> float (N,) of a classifier that takes images in [-1, 1]:
    the entropy of its prediction or its cross-entropy loss for label y (Askari-Hemmat et al., TMLR
    2024, "Feedback-guided data synthesis"). Guidance ascends J: it steers towards images the
    classifier is unsure of or gets wrong."""
    import torch.nn.functional as F

    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"feedback kind must be one of {FEEDBACK_KINDS}, got {kind!r}")

    def criterion(x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = classifier(x0.float())
        if kind == "loss":
            return F.cross_entropy(logits, y, reduction="none")
        logp = logits.log_softmax(1)
        return -(logp.exp() * logp).sum(1)
    return criterion


def feedback_eps(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: torch.Tensor, y: torch.Tensor, feedback,
                 scale: float) -> torch.Tensor:
    """eps shifted so that the predicted clean image x0_hat = (x_t - sigma_t eps) / alpha_t moves by
    ``scale * sigma_t`` (RMS per image) along the gradient of ``feedback(x0_hat, y)``:
    eps' = eps - scale * alpha_t * g / rms(g). The gradient is taken at x0_hat, not through the UNet
    (one classifier backward pass per step), and the step shrinks with the noise level."""
    a, sigma = alpha_bar_t.sqrt(), (1 - alpha_bar_t).sqrt()
    with torch.enable_grad():
        x0 = ((x_t - sigma * eps) / a).clamp(-1, 1).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(feedback(x0, y).sum(), x0)
    g = g / g.pow(2).mean(dim=tuple(range(1, g.ndim)), keepdim=True).sqrt().clamp_min(1e-12)
    return eps - scale * a * g.to(eps.dtype)


def initial_noise(seeds, shape: tuple[int, int, int], device, dtype=torch.float32) -> tuple[torch.Tensor, list]:
    """x_T and one CPU generator per image, seeded by ``seeds`` (ints)."""
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, dtype)
    return x, generators


@torch.no_grad()
def sample(unet, labels: torch.Tensor, seeds, *, image_size: int, channels: int, null_class: int,
           sampler: str, steps: int | None, guidance: float,
           schedule: dict | None = None, progress: bool = False, feedback=None,
           feedback_scale: float = 0.0) -> torch.Tensor:
    """Generate one image per label; returns float (N, channels, image_size, image_size) in [-1, 1].

    ``labels`` is int64 (N,) on the model's device; ``seeds`` gives one int per image. ``sampler``,
    ``steps`` (None: the sampler's own count) and ``guidance`` w have no defaults here: callers take
    them from ``sampler_settings.SamplerSettings``, their one home. With
    ``feedback`` (e.g. ``classifier_feedback(...)``) and ``feedback_scale`` > 0, each step's guided
    eps is further steered by ``feedback_eps``.
    """
    if len(seeds) != len(labels):
        raise ValueError(f"need one seed per label: {len(seeds)} seeds for {len(labels)} labels")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    scheduler = make_scheduler(sampler, schedule)
    scheduler.set_timesteps(steps or DEFAULT_STEPS[sampler])
    device = labels.device
    dtype = next(unet.parameters()).dtype
    x, generators = initial_noise(seeds, (channels, image_size, image_size), device, dtype)
    x = x * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm
        timesteps = tqdm(timesteps, desc=f"{sampler} sampling", leave=False)
    for t in timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = guided_eps(unet, x_in, t.to(device), labels, null_class, guidance)
        if feedback is not None and feedback_scale > 0:
            ab = scheduler.alphas_cumprod[int(t)].to(device, torch.float32)
            eps = feedback_eps(eps, x_in, ab, labels, feedback, feedback_scale)
        # The ancestral sampler draws fresh noise each step: diffusers draws it per image from the
        # list of CPU generators, so it too depends only on each image's seed.
        x = scheduler.step(eps, t, x, generator=generators if sampler in STOCHASTIC else None).prev_sample
    return x.clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, H, W, C) on the CPU."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
