"""A latent CBDM generator on a diffusers autoencoder (issue 33): the loss on latents is the pixel loss's
code path, flips pick the cached mirror, and fit-generator --autoencoder, generate, evaluate-generator,
export and run work end to end at 64 px on the CPU with tiny random autoencoders."""
import json
import shutil

import h5py
import pytest
import torch
from helpers import run_cli

from cbdm_aug.diffusion.autoencoder import AutoencoderRecord
from cbdm_aug.generator import module as module_mod
from cbdm_aug.generator.module import CBDMModule

UNET = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": [8, 8],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 4,
        "attention_head_dim": None, "num_class_embeds": 4}
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
LOSS = {"tau": 1.0, "gamma": 0.25, "target": "train", "p_uncond": 0.1}
FIT = ["--preset", "tiny", "--max-steps", 3, "--batch-size", 4, "--sample-every", 3, "--checkpoint-every", 3]


def _record(class_name="AutoencoderTiny", scaling=1.0, shift=0.0, channels=3):
    return AutoencoderRecord("/nowhere", None, class_name, "0" * 64,
                             {"scaling_factor": scaling, "shift_factor": shift, "latent_channels": channels,
                              "in_channels": 3, "block_out_channels": [8], "encoder_block_out_channels": [8]})


def _modules(record, hflip=False):
    torch.manual_seed(0)
    pixel = CBDMModule(UNET, [3, 3, 3], LOSS, SCHEDULE, hflip=hflip)
    latent = CBDMModule(UNET, [3, 3, 3], LOSS, SCHEDULE, hflip=hflip, latent=record.to_json())
    latent.unet.load_state_dict(pixel.unet.state_dict())
    return pixel, latent


def _batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8, generator=g)
    x0 = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    return images, torch.stack([x0, x0.flip(-1)], dim=1), torch.tensor([0, 1, 2, 0, 1, 2])


def test_the_cbdm_loss_on_latents_is_the_pixel_losss_code_path_on_shared_tensors(monkeypatch):
    calls = []
    real_loss = module_mod.cbdm_loss

    def recording(unet, x0, *args, **kw):
        calls.append(x0.clone())
        return real_loss(unet, x0, *args, **kw)

    monkeypatch.setattr(module_mod, "cbdm_loss", recording)
    images, moments, y = _batch()
    pixel, latent = _modules(_record())
    torch.manual_seed(1)
    loss_pixel = pixel.training_step((images, y), 0)
    torch.manual_seed(1)
    loss_latent = latent.training_step((moments, y), 0)  # latents that are the pixels themselves, scale 1
    assert torch.equal(calls[0], calls[1]) and torch.equal(loss_pixel, loss_latent)

    _, scaled = _modules(_record(scaling=0.5, shift=0.25))
    scaled.training_step((moments, y), 0)
    torch.testing.assert_close(calls[2], (moments[:, 0] - 0.25) * 0.5)  # the scaling is applied before the loss


def test_flips_pick_the_cached_mirror_and_the_posterior_is_drawn_at_every_step():
    _, moments, _ = _batch()
    _, latent = _modules(_record(), hflip=True)
    x0, cond = latent.latent_x0(moments.repeat(8, 1, 1, 1, 1), torch.Generator().manual_seed(0))
    views = [0 if torch.equal(x, moments[i % 6, 0]) else 1 if torch.equal(x, moments[i % 6, 1]) else None
             for i, x in enumerate(x0)]
    assert cond is None and set(views) == {0, 1}

    kl = _record("AutoencoderKL", channels=3)
    _, latent = _modules(kl)
    posterior = torch.cat([moments, torch.zeros_like(moments)], dim=2)  # mean, log-variance 0
    a, _ = latent.latent_x0(posterior)
    b, _ = latent.latent_x0(posterior)
    assert not torch.equal(a, b) and a.shape == moments[:, 0].shape


@pytest.fixture(scope="module")
def latent_run(tiny_autoencoders, rgb64_npz, tmp_path_factory):
    """A latent generator fitted at 64 px on the tiny AutoencoderKL, and a cache generated from it."""
    root = tmp_path_factory.mktemp("latent")
    capsys = _CapsysStandIn()
    code, out, err = run_cli(["fit-generator", rgb64_npz, "--autoencoder", tiny_autoencoders["AutoencoderKL"],
                              "--out", root / "gen", *FIT], capsys)
    assert code == 0, err
    code, _, err = run_cli(["generate", root / "gen", "--out", root / "syn.h5", "--steps", 2], capsys)
    assert code == 0, err
    return root, out


class _CapsysStandIn:
    """run_cli reads the output through capsys; a module-scoped fixture has none, so it prints through."""

    def readouterr(self):
        return "", ""


def test_fit_generator_on_an_autoencoder_records_it_and_trains_on_both_mirrors_latents(latent_run, tiny_autoencoders):
    root, _ = latent_run
    meta = json.loads((root / "gen" / "generator.json").read_text())
    ae = meta["autoencoder"]
    assert ae["class_name"] == "AutoencoderKL" and ae["path"] == str(tiny_autoencoders["AutoencoderKL"].resolve())
    assert len(ae["weights_sha256"]) == 64 and ae["config"]["latent_channels"] == 4
    assert meta["image_size"] == 64 and meta["channels"] == 3
    assert meta["model"]["sample_size"] == 16 and meta["model"]["in_channels"] == 4
    with h5py.File(root / "gen" / "latents.h5", "r") as f:
        assert f["mean"].shape == (14, 2, 4, 16, 16) and f["logvar"].shape == (14, 2, 4, 16, 16)
        assert f.attrs["complete"] and json.loads(f.attrs["autoencoder"])["weights_sha256"] == ae["weights_sha256"]
    assert (root / "gen" / "samples" / "latest.png").stat().st_size > 0


def test_generate_decodes_to_pixels_at_the_autoencoders_size_with_it_in_the_provenance(latent_run):
    root, _ = latent_run
    with h5py.File(root / "syn.h5", "r") as f:
        assert f["images"].shape[1:] == (64, 64, 3) and f.attrs["complete"]
        assert json.loads(f.attrs["generator"])["autoencoder"]["class_name"] == "AutoencoderKL"


def test_two_shards_of_a_latent_generator_merge_into_the_single_process_cache(latent_run, tmp_path, capsys):
    root, _ = latent_run
    for i in (0, 1):
        code, _, err = run_cli(["generate", root / "gen", "--out", tmp_path / f"part{i}.h5", "--steps", 2,
                                "--shard", f"{i}/2"], capsys)
        assert code == 0, err
    code, _, err = run_cli(["merge-shards", tmp_path / "merged.h5", tmp_path / "part0.h5", tmp_path / "part1.h5"],
                           capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "merged.h5", "r") as a, h5py.File(root / "syn.h5", "r") as b:
        assert a["images"].shape == b["images"].shape and (a["seeds"][()] == b["seeds"][()]).all()
        # batches differ (shard boundaries): equal up to float rounding of batched kernels, a level here and there
        assert abs(a["images"][()].astype(int) - b["images"][()].astype(int)).max() <= 2


def test_export_and_evaluate_generator_work_on_the_decoded_pixels(latent_run, rgb64_npz, tmp_path, capsys):
    root, _ = latent_run
    code, _, err = run_cli(["export", root / "syn.h5", "--out", tmp_path / "folder"], capsys)
    assert code == 0, err
    from PIL import Image

    pngs = sorted((tmp_path / "folder").rglob("*.png"))
    assert pngs and Image.open(pngs[0]).size == (64, 64)
    code, _, err = run_cli(["evaluate-generator", root / "gen", "--real", rgb64_npz, "--out", tmp_path / "eval",
                            "--samples-per-class", 4, "--steps", 2, "--feature-epochs", 1, "--cas-epochs", 1,
                            "--quiet"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["whole_set"]["near_copy_share"] is not None
    with h5py.File(tmp_path / "eval" / "samples.h5", "r") as f:
        assert f["images"].shape[1:] == (64, 64, 3)


def test_a_generator_whose_autoencoder_is_gone_stops_in_one_line(latent_run, tmp_path, capsys):
    root, _ = latent_run
    gen = shutil.copytree(root / "gen", tmp_path / "gen", ignore=shutil.ignore_patterns("checkpoints", "latents.h5"))
    meta = json.loads((gen / "generator.json").read_text())
    meta["autoencoder"]["path"] = str(tmp_path / "moved")
    (gen / "generator.json").write_text(json.dumps(meta))
    code, _, err = run_cli(["generate", gen, "--out", tmp_path / "s.h5", "--steps", 1], capsys)
    assert code != 0 and "is gone" in err and "Traceback" not in err


def test_a_tiny_autoencoder_fits_and_generates_at_64_px(tiny_autoencoders, rgb64_npz, tmp_path, capsys):
    code, _, err = run_cli(["fit-generator", rgb64_npz, "--autoencoder", tiny_autoencoders["AutoencoderTiny"],
                            "--out", tmp_path / "gen", *FIT], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "gen" / "latents.h5", "r") as f:
        assert "logvar" not in f and f["mean"].shape == (14, 2, 4, 16, 16)
    code, _, err = run_cli(["generate", tmp_path / "gen", "--out", tmp_path / "s.h5", "--steps", 1,
                            "--per-class", 2], capsys)
    assert code == 0, err
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["images"].shape == (6, 64, 64, 3)


@pytest.mark.parametrize("extra, message", [
    (["--augment", "0.1"], "--augment warps pixels"),
    (["--channels", "1"], "takes 3-channel images but the data has 1"),
    (["--image-size", "62"], "62 is not divisible by the autoencoder's downsampling factor 4; pass --image-size 60"),
])
def test_bad_latent_settings_are_one_line_errors(tiny_autoencoders, rgb64_npz, tmp_path, capsys, extra, message):
    code, _, err = run_cli(["fit-generator", rgb64_npz, "--autoencoder", tiny_autoencoders["AutoencoderKL"],
                            "--out", tmp_path / "gen", *FIT, *extra], capsys)
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "Error" in line][0].count(message) == 1  # one line says it all


def test_a_folder_that_is_not_an_autoencoder_is_one_line(rgb64_npz, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    code, _, err = run_cli(["fit-generator", rgb64_npz, "--autoencoder", tmp_path / "x", "--out", tmp_path / "gen",
                            *FIT], capsys)
    assert code == 2 and "not a diffusers autoencoder folder" in err and "Traceback" not in err


def test_fit_autoencoder_writes_a_folder_that_fit_generator_loads(rgb64_npz, tmp_path, capsys):
    code, out, err = run_cli(["fit-autoencoder", rgb64_npz, "--out", tmp_path / "ae", "--steps", 3, "--width", 4,
                              "--batch-size", 4, "--factor", 4, "--device", "cpu"], capsys)
    assert code == 0, err
    from cbdm_aug.diffusion.autoencoder import find_autoencoder

    record = find_autoencoder(tmp_path / "ae")
    assert record.class_name == "AutoencoderKL" and record.factor == 4 and record.scaling_factor != 0.18215


@pytest.mark.slow
def test_run_with_an_autoencoder_goes_end_to_end_at_64_px(tiny_autoencoders, rgb64_npz, tmp_path, capsys):
    code, out, err = run_cli(["run", rgb64_npz, "--out", tmp_path / "run", "--autoencoder",
                              tiny_autoencoders["AutoencoderKL"], "--preset", "tiny", "--gen-steps", 3,
                              "--classifier-epochs", 1, "--seeds", "0,1", "--device", "cpu", "--no-progress"], capsys)
    assert code == 0, err
    assert "latent generator on AutoencoderKL" in out and "augmentation conditioning off" in out
    assert json.loads((tmp_path / "run" / "generator" / "generator.json").read_text())["autoencoder"]
    with h5py.File(tmp_path / "run" / "cache" / "generated.h5", "r") as f:
        assert f["images"].shape[1:] == (64, 64, 3)
    assert (tmp_path / "run" / "report.md").is_file()


def test_fit_generator_resumes_a_latent_encoding_stopped_before_training(tiny_autoencoders, rgb64_npz, tmp_path,
                                                                           capsys):
    import numpy as np

    from cbdm_aug.diffusion.autoencoder import find_autoencoder, load_autoencoder
    from cbdm_aug.generator.latents import encode_latents, read_latents

    record = find_autoencoder(tiny_autoencoders["AutoencoderTiny"])
    with np.load(rgb64_npz) as d:
        images, labels = d["x_train"], d["y_train"]

    def stop(done):
        raise KeyboardInterrupt  # what a Ctrl-C during the encoding leaves: a partial latents.h5, no run.json

    (tmp_path / "gen").mkdir()
    with pytest.raises(KeyboardInterrupt):
        encode_latents(tmp_path / "gen" / "latents.h5", load_autoencoder(record), record, images, labels,
                       batch_size=4, progress=False, on_batch=stop)
    code, _, err = run_cli(["fit-generator", rgb64_npz, "--autoencoder", tiny_autoencoders["AutoencoderTiny"],
                            "--out", tmp_path / "gen", *FIT, "--max-steps", 1], capsys)
    assert code == 0, err
    fresh = encode_latents(tmp_path / "fresh.h5", load_autoencoder(record), record, images, labels, batch_size=4,
                           progress=False)
    assert torch.equal(read_latents(tmp_path / "gen" / "latents.h5").mean, read_latents(fresh).mean)
