import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cbdm_aug/cli.py: before torch loads OpenMP

import pytest  # noqa: E402
import torch  # noqa: E402

# Keep the default run fast and repeatable on 2 CPU cores.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_unet():
    from cbdm_aug.diffusion.unet import build_unet

    torch.manual_seed(0)
    cfg = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 8],
           "layers_per_block": 1, "down_block_types": ["DownBlock2D", "DownBlock2D"],
           "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 4,
           "attention_head_dim": None, "num_class_embeds": 4}
    return build_unet(cfg)
