"""Training callbacks: export the EMA generator with every checkpoint, and draw per-class grids."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cbdm_aug.diffusion.sampler_settings import SAMPLING
from cbdm_aug.diffusion.sampling import sample
from cbdm_aug.generator.run_dir import save_generator


class ExportCallback(pl.Callback):
    """Writes the EMA weights and generator.json whenever a checkpoint is saved and at the end, so
    a killed run always leaves a loadable generator that matches its last checkpoint. ``finished``: it reached
    its ``max_steps`` (whichever callback saved last)."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta = Path(out), meta

    def _export(self, trainer, module):
        if trainer.is_global_zero:
            save_generator(self.out, module.ema_unet, {**self.meta, "step": int(trainer.global_step),
                                                       "finished": trainer.global_step >= (trainer.max_steps or 0)})

    def on_save_checkpoint(self, trainer, module, checkpoint):
        self._export(trainer, module)

    def on_train_end(self, trainer, module):
        self._export(trainer, module)


class FinalStepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also saves ``last.ckpt`` at a finished run's last step where the
    interval did not land on it (Lightning saves it at the end only where no checkpoint was saved at all). A
    finished run's ``last.ckpt`` then holds its final state: ``--resume`` with more steps, or ``--continue-from``,
    goes on from there, not from up to ``--checkpoint-every`` steps before."""

    def on_train_end(self, trainer, module):
        from cbdm_aug.generator.checkpoints import LAST, checkpoint_step

        super().on_train_end(trainer, module)
        last = Path(self.dirpath) / LAST
        if 0 < trainer.global_step >= (trainer.max_steps or 0) and (
                not last.exists() or checkpoint_step(last) != trainer.global_step):
            trainer.save_checkpoint(last)


GRID_BATCH = 256  # images sampled at once for a progress grid: bounded, whatever the number of classes


@torch.no_grad()
def class_grid(unet, classes: list[int], num_classes: int, image_size: int, channels: int, per_class: int = 8,
               guidance: float = SAMPLING.guidance, steps: int = SAMPLING.steps, seed: int = 0,
               batch: int = GRID_BATCH) -> torch.Tensor:
    """``per_class`` samples for each class in ``classes`` (float [-1, 1] (len(classes) * per_class, C, H, W)),
    sampled ``batch`` at a time. Seeds are fixed by (class, position), so grids are comparable across steps."""
    device = next(unet.parameters()).device
    labels = torch.tensor(classes, device=device).repeat_interleave(per_class)
    seeds = [seed * 100_003 + c * per_class + j for c in classes for j in range(per_class)]
    was_training = unet.training
    unet.eval()
    out = [sample(unet, labels[i:i + batch], seeds[i:i + batch], image_size=image_size, channels=channels,
                  null_class=num_classes, sampler=SAMPLING.sampler, steps=steps, guidance=guidance).cpu()
           for i in range(0, len(labels), batch)]
    unet.train(was_training)
    return torch.cat(out)


class SampleGridCallback(pl.Callback):
    """Every ``every`` steps, a PNG grid sampled from the EMA weights: one labelled row per class, for
    at most ``pictures.MAX_GRID_CLASSES`` classes (the rarest, the largest, sizes in between)."""

    def __init__(self, out: Path, every: int, class_names: list[str] | None = None, per_class: int = 8,
                 guidance: float = SAMPLING.guidance, decoder: torch.nn.Module | None = None):
        self.dir = Path(out) / "samples"
        self.decoder = decoder  # a latent generator's LatentDecoder: the grid shows decoded images
        self.every, self.per_class, self.guidance, self.class_names = every, per_class, guidance, class_names

    def _draw(self, trainer, module):
        from cbdm_aug.diffusion.sampling import to_uint8
        from cbdm_aug.pictures import classes_to_show, labelled_rows, selection_note

        if not trainer.is_global_zero:
            return
        cfg, counts = module.hparams.model_config, list(module.hparams.class_counts)
        names = self.class_names or [str(c) for c in range(len(counts))]
        classes = classes_to_show(counts)
        x = class_grid(module.ema_unet, classes, len(counts), cfg["sample_size"], cfg["in_channels"],
                       self.per_class, self.guidance).float()
        if self.decoder is not None:
            x = self.decoder.to(module.device)(x.to(module.device)).cpu()
        x = to_uint8(x)
        rows = [(f"{names[c]} ({counts[c]})", x[k * self.per_class:(k + 1) * self.per_class].numpy())
                for k, c in enumerate(classes)]
        header = f"step {trainer.global_step}: {selection_note(len(classes), len(counts))}"
        grid = self.dir / f"step_{trainer.global_step:07d}.png"
        labelled_rows(rows, grid, header, per_row=self.per_class)
        labelled_rows(rows, self.dir / "latest.png", header, per_row=self.per_class)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._draw(trainer, module)

    def on_train_end(self, trainer, module):
        self._draw(trainer, module)
