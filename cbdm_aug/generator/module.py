"""The Lightning module that fits a CBDM generator: Adam with warm-up, an EMA of the weights with
warm-up, and the CBDM loss with its terms logged separately.

A latent generator (``latent``: the autoencoder's record) trains on cached posterior moments
(``generator.latents``) instead of pixels: a flip picks the cached mirror, z is drawn from the posterior
and scaled (``diffusion.autoencoder.to_latent``), and the same ``cbdm_loss`` runs on it."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from timm.utils import ModelEmaV3

from cbdm_aug.diffusion.augment import AugmentConfig, augment
from cbdm_aug.diffusion.autoencoder import AutoencoderRecord, to_latent
from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution
from cbdm_aug.diffusion.unet import build_unet

# EMA warm-up (timm ModelEmaV3, decay = 1 - (1 + step)^(-2/3), capped at ema_decay): a fixed 0.999 would
# still hold ~37% of the random initial weights after 1000 steps, and short CPU runs would sample noise.
EMA_WARMUP_POWER = 2 / 3


class TimmEma(ModelEmaV3):
    """timm's ModelEmaV3, which already updates every tensor in one ``_foreach_lerp_``, without its
    two ``state_dict()`` walks per update: for the paper UNet (329 tensors) they cost about 2-4 ms of
    host time a step, as much as the GPU needs for a third of a step. The tensor lists are built once
    and rebuilt when either model is moved or cast; the arithmetic is timm's, so the weights are too."""

    def apply_update_(self, model, decay: float):
        key = (next(self.module.parameters()).data_ptr(), next(model.parameters()).data_ptr())
        cached = self.__dict__.get("_lists")
        if cached is None or cached[0] != key:
            pairs = list(zip(self.module.state_dict(keep_vars=True).values(),
                             model.state_dict(keep_vars=True).values()))
            floats = [(e, m) for e, m in pairs if e.is_floating_point()]
            self.__dict__["_lists"] = cached = (key, [e for e, _ in floats], [m for _, m in floats],
                                                [(e, m) for e, m in pairs if not e.is_floating_point()])
        _, ema_values, model_values, others = cached
        for e, m in others:
            e.copy_(m)
        self._foreach_lerp_(ema_values, model_values, weight=1.0 - decay)


class CBDMModule(pl.LightningModule):
    def __init__(self, model_config: dict, class_counts: list[int], loss: dict, schedule: dict,
                 lr: float = 2e-4, warmup_steps: int = 5000, ema_decay: float = 0.9999,
                 hflip: bool = False, augment: dict | None = None, latent: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.unet = build_unet(model_config)
        self.ema = TimmEma(self.unet, decay=ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
        # The EMA copy is updated by averaging, never by gradients; left trainable, DDP would find
        # its parameters unused by the loss and stop at the second step.
        self.ema.requires_grad_(False)
        self.loss_cfg = CBDMLossConfig(**loss)
        # augmentation conditioning (diffusion.augment): {"p", "ops"}; None or p = 0 is off
        self.augment_cfg = AugmentConfig(augment["p"], tuple(augment["ops"])) if augment else AugmentConfig()
        self.null_class = len(class_counts)
        # the autoencoder whose latents are learnt (AutoencoderRecord.to_json()), or None: pixels
        self.latent = AutoencoderRecord.from_json(latent) if latent else None
        self.register_buffer("alpha_bar", ddpm_alpha_bar(schedule), persistent=False)
        self.register_buffer("q_target", target_distribution(self.loss_cfg.target, class_counts).float(),
                             persistent=False)

        self.compile_unet = False  # set by fit(); the compiled wrapper is made once on the device
        self.register_buffer("train_images", None, persistent=False)
        self.register_buffer("train_labels", None, persistent=False)

    def keep_data_on_device(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Hold the whole training set (uint8 (N, H, W, C), int64 (N,)) in buffers that move with the
        module, so batches are gathered on the device from int64 index batches (``training_step``)
        instead of being copied from a host DataLoader. Not saved in checkpoints."""
        self.train_images, self.train_labels = images, labels

    def on_fit_start(self):
        # On a CPU the UNet trains in channels-last layout: oneDNN's convolutions, most of a step, run
        # faster that way (0.54 against 0.60 s a step idle on 2 cores; docs/decisions.md). The same
        # Parameters are re-laid in place, so the optimizer, the EMA (which stays contiguous) and the
        # checkpoints see the same tensors; the export writes contiguous copies. Not measured on a GPU,
        # so not applied there.
        if self.device.type == "cpu":
            self.unet.to(memory_format=torch.channels_last)
        # torch.compile wraps the UNet without owning it: the weights, the EMA and the checkpoint keys
        # stay those of self.unet, so a run can resume with or without --compile.
        if self.compile_unet and "_denoiser" not in self.__dict__:
            self.__dict__["_denoiser"] = torch.compile(self.unet, dynamic=False)

    @property
    def denoiser(self):
        """The UNet as the loss calls it: compiled when fit() asked for it, else the module itself."""
        return self.__dict__.get("_denoiser", self.unet)

    def training_step(self, batch, batch_idx):
        if torch.is_tensor(batch):  # index batch: the data are on the device already
            data, y = self.train_images[batch], self.train_labels[batch]
        else:
            data, y = batch  # uint8 (N, H, W, C) images, or float32 latent moments (N, 2, c', h, w); int64 (N,)
        x0, cond = self.latent_x0(data) if self.latent is not None else self.pixel_x0(data)
        terms = cbdm_loss(self.denoiser, x0, y, self.alpha_bar, self.q_target, self.loss_cfg, self.null_class,
                          augment=cond)
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

    def pixel_x0(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (N, H, W, C) -> (x0 float (N, C, H, W) in [-1, 1], flipped and warped as configured;
        the augmentation vectors, or None)."""
        x0 = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        if self.hparams.hflip:
            flip = torch.rand(len(x0), device=x0.device) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        if self.augment_cfg.p > 0:  # at p = 0 nothing is drawn: the step is exactly the unaugmented one
            return augment(x0, self.augment_cfg)
        return x0, None

    def latent_x0(self, moments: torch.Tensor, generator: torch.Generator | None = None):
        """float32 (N, 2, c or 2c, h, w) cached moments (``generator.latents``) -> (x0 float (N, c, h, w), the
        scaled latent of a random view drawn from its posterior; None). Flips are the only latent-valid
        augmentation: the cached mirror is the mirrored image's latent, a pixel warp has no latent twin."""
        n = len(moments)
        view = torch.zeros(n, dtype=torch.int64, device=moments.device)
        if self.hparams.hflip:
            view = (torch.rand(n, generator=generator, device=generator.device if generator else moments.device)
                    < 0.5).long().to(moments.device)
        m = moments[torch.arange(n, device=moments.device), view].float()
        mean, logvar = m.chunk(2, dim=1) if self.latent.has_posterior else (m, None)
        return to_latent(self.latent, mean, logvar, generator), None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ema.update(self.unet, step=self.global_step)

    @property
    def ema_unet(self) -> torch.nn.Module:
        """The EMA copy of the UNet: the weights that are exported and sampled from."""
        return self.ema.module

    def configure_optimizers(self):
        # The fused kernel does the same Adam update for all tensors in one launch instead of a few
        # per tensor: on a GPU it saves launch overhead; the CPU path keeps torch's default.
        fused = next(self.unet.parameters()).device.type == "cuda"
        opt = torch.optim.Adam(self.unet.parameters(), lr=self.hparams.lr, fused=True if fused else None)
        warmup = max(1, int(self.hparams.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
