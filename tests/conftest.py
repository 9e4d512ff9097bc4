"""Fixtures shared across test modules (plain helpers are in helpers.py). A test module never imports
another one's fixtures: pytest registers an imported fixture again in the importing module, and a
module- or session-scoped one then runs again there. The toy pipeline (``finished``) runs once a session.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cbdm_aug/cli.py: before torch loads OpenMP

import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import CLI, ENV, TINY, TINY_CLASSES, make_folder, tiny_generator_meta  # noqa: E402

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


# -- a tiny generator and its run folder -----------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved random-weight tiny generator of ``helpers.TINY_CLASSES`` (8x8, one channel)."""
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import save_generator

    torch.manual_seed(0)
    cfg = unet_config("tiny", 8, 1, len(TINY_CLASSES))
    return save_generator(tmp_path_factory.mktemp("run"), build_unet(cfg), tiny_generator_meta(cfg))


@pytest.fixture(scope="module")
def gen(run_dir):
    """``run_dir``'s generator, loaded for sampling."""
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import Generator

    torch.manual_seed(0)
    cfg = unet_config("tiny", 8, 1, len(TINY_CLASSES))
    unet = build_unet(cfg).eval().requires_grad_(False)
    meta = json.loads((run_dir / "generator.json").read_text())
    return Generator(unet, meta, run_dir)


@pytest.fixture
def tiny_run(tmp_path):
    """A saved random-weight tiny generator of classes a, b, c (6, 3 and 1 real images) in ``tmp_path/gen``."""
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import save_generator

    cfg = unet_config("tiny", 8, 1, 3)
    meta = {"preset": "tiny", "model": cfg, "class_names": ["a", "b", "c"], "class_counts": [6, 3, 1],
            "image_size": 8, "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0,
            "package_version": "test"}
    torch.manual_seed(0)
    return save_generator(tmp_path / "gen", build_unet(cfg), meta)


# -- a classifier's data ----------------------------------------------------------------------------------

@pytest.fixture
def tiny_npz(tmp_path):
    """3 classes of 8x8 grey images, each a bright row at a class-specific height plus noise."""
    rng = np.random.default_rng(0)

    def make(n_per_class):
        x = rng.integers(0, 60, size=(3 * n_per_class, 8, 8), dtype=np.uint8)
        y = np.repeat(np.arange(3), n_per_class)
        for i, c in enumerate(y):
            x[i, 1 + 3 * c] = 250
        return x, y

    x_train, y_train = make(40)
    x_test, y_test = make(10)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


# -- the toy pipeline: once a session ------------------------------------------------------------------

@pytest.fixture(scope="session")
def toy_folders(tmp_path_factory):
    """A long-tailed training folder (12, 6, 3 images of 8x8) and a test folder (4 a class)."""
    root = tmp_path_factory.mktemp("pipeline")
    make_folder(root / "train", counts=(12, 6, 3), size=8)
    make_folder(root / "test", counts=(4, 4, 4), size=8)
    return root


@pytest.fixture(scope="session")
def finished(toy_folders):
    """One finished toy ``cbdm-aug run`` on ``toy_folders`` (made once a session), its stdout, and its wall time.
    Classes 1 and 2 (6, 3 images) are too few to judge and no class can stand in for them: the run refuses them
    generated images (the cautious rule). Copy it before changing it."""
    out = toy_folders / "run"
    t = time.time()
    r = subprocess.run([*CLI, "run", toy_folders / "train", "--test", toy_folders / "test", "--out", out, *TINY],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout, time.time() - t


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory):
    """An untrained tiny 8x8 generator of ``helpers.TINY_CLASSES`` (real counts 6, 3, 1), saved and loaded."""
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import Generator, save_generator

    torch.manual_seed(0)
    cfg = unet_config("tiny", 8, 1, len(TINY_CLASSES))
    run = save_generator(tmp_path_factory.mktemp("tiny_generator"), build_unet(cfg), tiny_generator_meta(cfg))
    unet = build_unet(cfg).eval().requires_grad_(False)
    return Generator(unet, json.loads((run / "generator.json").read_text()), run)


# Tiny random diffusers autoencoders saved to folders, as `--autoencoder DIR` reads them (issue 33):
# both downsample 4x (three blocks), so 64 px images become 4x16x16 latents.
TINY_AUTOENCODERS = {
    "AutoencoderKL": {"block_out_channels": [4, 8, 8], "down_block_types": ["DownEncoderBlock2D"] * 3,
                      "up_block_types": ["UpDecoderBlock2D"] * 3, "latent_channels": 4, "norm_num_groups": 2,
                      "layers_per_block": 1},
    "AutoencoderTiny": {"encoder_block_out_channels": [8, 8, 8], "decoder_block_out_channels": [8, 8, 8],
                        "num_encoder_blocks": [1, 1, 1], "num_decoder_blocks": [1, 1, 1], "latent_channels": 4},
}


@pytest.fixture(scope="session")
def tiny_autoencoders(tmp_path_factory):
    """{class name: folder} of tiny random autoencoders saved with ``save_pretrained``."""
    import diffusers

    root = tmp_path_factory.mktemp("autoencoders")
    folders = {}
    for name, cfg in TINY_AUTOENCODERS.items():
        torch.manual_seed(0)
        getattr(diffusers, name)(**cfg).save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="session")
def rgb64_npz(tmp_path_factory):
    """A long-tailed .npz of smooth random 64x64 RGB images (classes of 8, 4 and 2) with a test split."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), (8, 4, 2))
    low = rng.integers(0, 256, (len(labels) + 6, 8, 8, 3)).astype(np.uint8)
    images = low.repeat(8, axis=1).repeat(8, axis=2)  # 8x8 blocks: images an autoencoder can tell apart
    path = tmp_path_factory.mktemp("rgb64") / "rgb64.npz"
    np.savez(path, x_train=images[:len(labels)], y_train=labels, x_test=images[len(labels):],
             y_test=np.arange(6) % 3, class_names=np.array(["a", "b", "c"]))
    return path
