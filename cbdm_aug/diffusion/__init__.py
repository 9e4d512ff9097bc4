"""The diffusion model: UNet presets on diffusers' ``UNet2DModel`` (``unet.py``, ``augment_unet.py`` for
augmentation conditioning), the CBDM loss (``loss.py``), the samplers with classifier-free guidance
(``sampling.py``) and their one torch-free settings type (``sampler_settings.py``: names, steps,
guidance, seed), non-leaking augmentation (``augment.py``) and the bf16/compiled wrapper the samplers
call on a GPU (``denoiser.py``). Pure functions of tensors; no Lightning, files or CLI here.
"""
