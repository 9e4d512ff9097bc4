"""cbdm_aug.generator.latents: the latent cache holds both mirrors (and the posterior), round-trips,
resumes after a stop with the same latents, and refuses another autoencoder's or data's file."""
import h5py
import numpy as np
import pytest
import torch

from cbdm_aug.diffusion.autoencoder import AutoencoderError, encode_moments, find_autoencoder, load_autoencoder
from cbdm_aug.generator.latents import encode_latents, read_latents


def _data(n=7):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), np.arange(n) % 3


def _encode(folder, path, **kw):
    record = find_autoencoder(folder)
    images, labels = _data()
    return encode_latents(path, load_autoencoder(record), record, images, labels, progress=False, **kw)


class _Stop(Exception):
    pass


def _stop_after(k):
    def on_batch(done):
        if done >= k:
            raise _Stop

    return on_batch


@pytest.mark.parametrize("name", ["AutoencoderKL", "AutoencoderTiny"])
def test_the_cache_round_trips_both_mirrors_and_the_posterior_where_there_is_one(tiny_autoencoders, tmp_path, name):
    path = _encode(tiny_autoencoders[name], tmp_path / "latents.h5", batch_size=3)
    latents = read_latents(path)
    images, labels = _data()
    vae = load_autoencoder(find_autoencoder(tiny_autoencoders[name]))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    for view, pixels in ((0, x), (1, x.flip(-1))):
        mean, logvar = encode_moments(vae, pixels)
        torch.testing.assert_close(latents.mean[:, view], mean, atol=1e-5, rtol=1e-5)
        if name == "AutoencoderKL":
            torch.testing.assert_close(latents.logvar[:, view], logvar, atol=1e-5, rtol=1e-5)
    assert (latents.logvar is None) == (name == "AutoencoderTiny")
    assert not torch.equal(latents.mean[:, 0], latents.mean[:, 1])  # the mirror is its own latent
    assert latents.labels.tolist() == labels.tolist()
    assert latents.moments.shape == (7, 2, 8 if name == "AutoencoderKL" else 4, 16, 16)


def test_a_stopped_encoding_resumes_to_the_same_latents(tiny_autoencoders, tmp_path):
    folder = tiny_autoencoders["AutoencoderKL"]
    whole = read_latents(_encode(folder, tmp_path / "whole.h5", batch_size=2))
    with pytest.raises(_Stop):
        _encode(folder, tmp_path / "part.h5", batch_size=2, on_batch=_stop_after(3))
    with h5py.File(tmp_path / "part.h5", "r") as f:
        assert f.attrs["num_done"] == 4 and not f.attrs["complete"]
    with pytest.raises(AutoencoderError, match="unfinished"):
        read_latents(tmp_path / "part.h5")
    seen = []
    _encode(folder, tmp_path / "part.h5", batch_size=5, on_batch=seen.append)  # the file's batch size wins
    resumed = read_latents(tmp_path / "part.h5")
    assert seen == [6, 7]
    assert torch.equal(resumed.mean, whole.mean) and torch.equal(resumed.logvar, whole.logvar)


def test_a_cache_of_another_autoencoder_or_other_images_is_refused(tiny_autoencoders, tmp_path):
    path = _encode(tiny_autoencoders["AutoencoderKL"], tmp_path / "latents.h5")
    with pytest.raises(AutoencoderError, match="latents of another autoencoder"):
        _encode(tiny_autoencoders["AutoencoderTiny"], path)
    record = find_autoencoder(tiny_autoencoders["AutoencoderKL"])
    images, labels = _data()
    with pytest.raises(AutoencoderError, match="latents of another training set"):
        encode_latents(path, load_autoencoder(record), record, images[::-1].copy(), labels, progress=False)
