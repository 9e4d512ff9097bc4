"""Conversion of uint8 image arrays to a model's resolution and channel count."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, the weights PIL's convert("L") uses.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def convert_images(images: np.ndarray, image_size: int, channels: int, batch: int = 4096) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, image_size, image_size, channels).

    Resizing is bilinear with antialiasing; RGB -> grey uses BT.601 luma, grey -> RGB repeats.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    n, h, w, c = images.shape
    if (h, w, c) == (image_size, image_size, channels):
        return images
    out = np.empty((n, image_size, image_size, channels), dtype=np.uint8)
    for i in range(0, n, batch):
        x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float()
        if c == 3 and channels == 1:
            x = (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif c == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if (h, w) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        out[i:i + batch] = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out
