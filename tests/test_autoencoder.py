"""cbdm_aug.diffusion.autoencoder: finding and loading a diffusers autoencoder from a local folder, the
one-line errors, and the scaling that encode applies and decode undoes."""
import json
import shutil

import pytest
import torch

from cbdm_aug.diffusion.autoencoder import (
    AutoencoderError,
    AutoencoderRecord,
    LatentDecoder,
    check_data_fits,
    encode_moments,
    find_autoencoder,
    load_autoencoder,
    to_latent,
)


@pytest.mark.parametrize("name", ["AutoencoderKL", "AutoencoderTiny"])
def test_the_class_is_detected_from_config_json_and_the_record_round_trips(tiny_autoencoders, name):
    record = find_autoencoder(tiny_autoencoders[name])
    assert record.class_name == name and record.subfolder is None
    assert record.factor == 4 and record.latent_channels == 4 and record.in_channels == 3
    assert record.has_posterior == (name == "AutoencoderKL")
    assert record.scaling_factor == (0.18215 if name == "AutoencoderKL" else 1.0)
    assert AutoencoderRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert type(load_autoencoder(record)).__name__ == name


def test_a_pipeline_folder_is_read_through_its_vae_subfolder(tiny_autoencoders, tmp_path):
    shutil.copytree(tiny_autoencoders["AutoencoderKL"], tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    record = find_autoencoder(tmp_path / "pipe")
    assert record.subfolder == "vae"
    assert record.weights_sha256 == find_autoencoder(tiny_autoencoders["AutoencoderKL"]).weights_sha256
    assert type(load_autoencoder(record)).__name__ == "AutoencoderKL"


def test_a_folder_that_is_not_a_diffusers_autoencoder_is_one_clear_error(tmp_path, tiny_autoencoders):
    with pytest.raises(AutoencoderError, match="no such folder"):
        find_autoencoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AutoencoderError, match="not a diffusers autoencoder folder"):
        find_autoencoder(tmp_path / "empty")
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(AutoencoderError, match="'UNet2DModel', not a supported diffusers autoencoder"):
        find_autoencoder(unet)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_autoencoders["AutoencoderKL"] / "config.json", bare)
    with pytest.raises(AutoencoderError, match="no weights"):
        find_autoencoder(bare)


def test_weights_changed_after_the_record_was_made_are_refused(tiny_autoencoders, tmp_path):
    folder = shutil.copytree(tiny_autoencoders["AutoencoderTiny"], tmp_path / "ae")
    record = find_autoencoder(folder)
    with open(folder / "diffusion_pytorch_model.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(AutoencoderError, match="weights changed"):
        load_autoencoder(record)


def test_a_channel_mismatch_and_an_indivisible_size_are_one_line_each(tiny_autoencoders):
    record = find_autoencoder(tiny_autoencoders["AutoencoderKL"])
    assert check_data_fits(record, 64, 3) == 16
    with pytest.raises(AutoencoderError, match="takes 3-channel images but the data has 1; pass --channels 3"):
        check_data_fits(record, 64, 1)
    with pytest.raises(AutoencoderError, match="62 is not divisible by the autoencoder's downsampling factor 4; "
                                               "pass --image-size 60"):
        check_data_fits(record, 62, 3)


@pytest.mark.parametrize("name", ["AutoencoderKL", "AutoencoderTiny"])
def test_encode_applies_the_scaling_factor_and_decode_undoes_it(tiny_autoencoders, name):
    record = find_autoencoder(tiny_autoencoders[name])
    record = AutoencoderRecord(**{**record.to_json(), "config": {**record.config, "scaling_factor": 0.25,
                                                                 "shift_factor": 0.5}})
    vae = load_autoencoder(find_autoencoder(tiny_autoencoders[name]))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mean, logvar = encode_moments(vae, x)
    assert mean.shape == (2, 4, 16, 16) and (logvar is None) == (name == "AutoencoderTiny")
    latent = to_latent(record, mean)
    torch.testing.assert_close(latent, (mean - 0.5) * 0.25)
    decoded = LatentDecoder(vae, record)(latent)
    assert decoded.shape == x.shape and decoded.abs().max() <= 1
    torch.testing.assert_close(decoded, vae.decode(mean).sample.clamp(-1, 1))


def test_a_posterior_draw_is_seeded_and_centred_on_the_mean(tiny_autoencoders):
    record = find_autoencoder(tiny_autoencoders["AutoencoderKL"])
    mean, logvar = torch.zeros(4000, 4, 2, 2), torch.full((4000, 4, 2, 2), 2 * torch.tensor(0.5).log())
    a = to_latent(record, mean, logvar, torch.Generator().manual_seed(1))
    b = to_latent(record, mean, logvar, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 0.5 * record.scaling_factor) < 0.01 * record.scaling_factor
