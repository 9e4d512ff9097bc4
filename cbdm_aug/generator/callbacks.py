"""Training callbacks: export the EMA generator with every checkpoint, and draw per-class grids."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from cbdm_aug.diffusion.sampling import sample
from cbdm_aug.generator.run_dir import save_generator


class ExportCallback(pl.Callback):
    """Writes the EMA weights and generator.json whenever a checkpoint is saved and at the end, so
    a killed run always leaves a loadable generator that matches its last checkpoint."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta = Path(out), meta

    def _export(self, trainer, module, finished: bool):
        if trainer.is_global_zero:
            save_generator(self.out, module.ema_unet,
                           {**self.meta, "step": int(trainer.global_step), "finished": finished})

    def on_save_checkpoint(self, trainer, module, checkpoint):
        self._export(trainer, module, finished=False)

    def on_train_end(self, trainer, module):
        self._export(trainer, module, finished=trainer.global_step >= (trainer.max_steps or 0))


def save_class_grid(images: torch.Tensor, path: Path, per_row: int, min_tile: int = 32) -> None:
    """Save [-1, 1] images (N, C, H, W), ``per_row`` to a row, upscaled so tiles are visible."""
    from torchvision.utils import save_image

    scale = max(1, -(-min_tile // images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    save_image((images + 1) / 2, tmp, nrow=per_row, padding=2, pad_value=1.0)
    tmp.replace(path)


@torch.no_grad()
def class_grid(unet, num_classes: int, image_size: int, channels: int, per_class: int = 8,
               guidance: float = 1.0, steps: int = 20, seed: int = 0) -> torch.Tensor:
    """One row of ``per_class`` samples for every class, with fixed seeds so grids are comparable."""
    device = next(unet.parameters()).device
    labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    seeds = [seed * 100_003 + i for i in range(len(labels))]
    was_training = unet.training
    unet.eval()
    x = sample(unet, labels, seeds, image_size=image_size, channels=channels, null_class=num_classes,
               sampler="dpmpp-sde", steps=steps, guidance=guidance)
    unet.train(was_training)
    return x


class SampleGridCallback(pl.Callback):
    """Every ``every`` steps, a PNG grid sampled from the EMA weights: one row per class."""

    def __init__(self, out: Path, every: int, per_class: int = 8, guidance: float = 1.0):
        self.dir = Path(out) / "samples"
        self.every, self.per_class, self.guidance = every, per_class, guidance

    def _draw(self, trainer, module):
        if not trainer.is_global_zero:
            return
        cfg = module.hparams.model_config
        x = class_grid(module.ema_unet, len(module.hparams.class_counts), cfg["sample_size"],
                       cfg["in_channels"], self.per_class, self.guidance)
        grid = self.dir / f"step_{trainer.global_step:07d}.png"
        save_class_grid(x.float(), grid, self.per_class)
        save_class_grid(x.float(), self.dir / "latest.png", self.per_class)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._draw(trainer, module)

    def on_train_end(self, trainer, module):
        self._draw(trainer, module)
