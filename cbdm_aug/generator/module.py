"""The Lightning module that fits a CBDM generator: Adam with warm-up, an EMA of the weights with
warm-up, and the CBDM loss with its terms logged separately."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from timm.utils import ModelEmaV3

from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution
from cbdm_aug.diffusion.unet import build_unet

# EMA warm-up (timm ModelEmaV3, decay = 1 - (1 + step)^(-2/3), capped at ema_decay): a fixed 0.999 would
# still hold ~37% of the random initial weights after 1000 steps, and short CPU runs would sample noise.
EMA_WARMUP_POWER = 2 / 3


class CBDMModule(pl.LightningModule):
    def __init__(self, model_config: dict, class_counts: list[int], loss: dict, schedule: dict,
                 lr: float = 2e-4, warmup_steps: int = 5000, ema_decay: float = 0.9999,
                 hflip: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.unet = build_unet(model_config)
        self.ema = ModelEmaV3(self.unet, decay=ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
        # The EMA copy is updated by averaging, never by gradients; left trainable, DDP would find
        # its parameters unused by the loss and stop at the second step.
        self.ema.requires_grad_(False)
        self.loss_cfg = CBDMLossConfig(**loss)
        self.null_class = len(class_counts)
        self.register_buffer("alpha_bar", ddpm_alpha_bar(schedule), persistent=False)
        self.register_buffer("q_target", target_distribution(self.loss_cfg.target, class_counts).float(),
                             persistent=False)

    def training_step(self, batch, batch_idx):
        images, y = batch  # uint8 (N, H, W, C), int64 (N,)
        x0 = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        if self.hparams.hflip:
            flip = torch.rand(len(x0), device=x0.device) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        terms = cbdm_loss(self.unet, x0, y, self.alpha_bar, self.q_target, self.loss_cfg, self.null_class)
        loss = terms["loss"].mean()
        dm = terms["dm"].mean()
        self.log("loss", loss, prog_bar=True)
        self.log("dm", dm, prog_bar=True)
        if self.loss_cfg.tau > 0:
            # reg and commit have the same value and differ only in which branch they move; log the
            # weighted regulariser L_reg, and the raw distance between the y and y' predictions.
            self.log("reg", terms["l_reg"].mean(), prog_bar=True)
            keep = terms["keep"].float()
            self.log("dist_y_yprime", (terms["reg"] * keep).sum() / keep.sum().clamp_min(1))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ema.update(self.unet, step=self.global_step)

    @property
    def ema_unet(self) -> torch.nn.Module:
        """The EMA copy of the UNet: the weights that are exported and sampled from."""
        return self.ema.module

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.unet.parameters(), lr=self.hparams.lr)
        warmup = max(1, int(self.hparams.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
