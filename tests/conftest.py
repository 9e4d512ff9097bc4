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


@pytest.fixture(scope="session")
def toy_folders(tmp_path_factory):
    """A long-tailed training folder (12, 6, 3 images of 8x8) and a test folder (4 a class)."""
    from helpers import make_folder

    root = tmp_path_factory.mktemp("pipeline")
    make_folder(root / "train", counts=(12, 6, 3), size=8)
    make_folder(root / "test", counts=(4, 4, 4), size=8)
    return root


@pytest.fixture(scope="session")
def finished(toy_folders):
    """One finished toy ``cbdm-aug run`` on ``toy_folders`` (made once a session), its stdout, and its wall time.
    Class 2 (3 images) is too few to judge: the run refuses it generated images. Copy it before changing it."""
    import subprocess
    import time

    from helpers import CLI, ENV, TINY

    out = toy_folders / "run"
    t = time.time()
    r = subprocess.run([*CLI, "run", toy_folders / "train", "--test", toy_folders / "test", "--out", out, *TINY],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout, time.time() - t


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory):
    """An untrained tiny 8x8 generator of classes cat, dog, fish (real counts 6, 3, 1), saved and loaded."""
    import json

    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import Generator, save_generator

    names = ["cat", "dog", "fish"]
    torch.manual_seed(0)
    cfg = unet_config("tiny", 8, 1, len(names))
    meta = {"preset": "tiny", "model": cfg, "class_names": names, "class_counts": [6, 3, 1], "image_size": 8,
            "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "package_version": "test"}
    run = save_generator(tmp_path_factory.mktemp("tiny_generator"), build_unet(cfg), meta)
    unet = build_unet(cfg).eval().requires_grad_(False)
    return Generator(unet, json.loads((run / "generator.json").read_text()), run)
