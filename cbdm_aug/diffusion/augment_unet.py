"""The UNet of a generator trained with augmentation conditioning (``diffusion.augment``): diffusers'
``UNet2DModel`` plus ``augment_embedding``, a bias-free Linear(augment_dim, time-embedding width)
whose output is added to the time embedding, as the label embedding is (the reference's ADA UNet).

    unet(x_t, t, class_labels=y, augment_labels=a)   # a: float (N, augment_dim)
    unet(x_t, t, class_labels=y)                     # sampling: the zero vector, a term of exactly 0

Kept in its own module so that ``diffusion.unet`` imports diffusers only when a model is built.
diffusers' forward has no slot for a second embedding, so a forward hook on ``time_embedding`` adds
it; the vector is held only for the duration of the call. Subclassing keeps the state-dict keys,
``.dtype`` and ``.config`` of the plain model, plus ``augment_embedding.weight``.
"""
from __future__ import annotations

import torch
from diffusers import UNet2DModel


class AugmentConditionedUNet(UNet2DModel):
    def __init__(self, augment_dim: int, **config):
        super().__init__(**config)
        self.augment_embedding = torch.nn.Linear(augment_dim, self.time_embedding.linear_2.out_features, bias=False)
        self.time_embedding.register_forward_hook(self._add_augment)

    def forward(self, sample, timestep, class_labels=None, augment_labels=None, return_dict: bool = True):
        self.__dict__["_augment_labels"] = augment_labels
        try:
            return super().forward(sample, timestep, class_labels=class_labels, return_dict=return_dict)
        finally:
            self.__dict__["_augment_labels"] = None

    def _add_augment(self, module, inputs, emb):
        a = self.__dict__.get("_augment_labels")
        return emb if a is None else emb + self.augment_embedding(a.to(emb.dtype))
