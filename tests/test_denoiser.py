"""The GPU sampling paths, run on the CPU: the bf16/compiled denoiser wrapper, and generation with
it and with the background HDF5 writer. Same seed, device and dtype give the same cache."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import FAST_SAMPLER as FAST
from helpers import TINY_CLASSES as NAMES
from helpers import Killed, cache_arrays, kill_after

from cbdm_aug.cache import plan as plans
from cbdm_aug.cache.generate import generate_cache
from cbdm_aug.cache.reader import read_header
from cbdm_aug.cache.schema import CacheError
from cbdm_aug.diffusion.denoiser import Denoiser, choose
from cbdm_aug.diffusion.sampling import sample


def test_auto_settings_are_bf16_and_compiled_on_cuda_and_unchanged_on_cpu():
    assert choose("cpu") == ("fp32", False)
    assert choose("cuda") == ("bf16", True)
    assert choose("cuda:1", "fp32", False) == ("fp32", False)
    with pytest.raises(ValueError, match="precision must be one of"):
        Denoiser(torch.nn.Linear(1, 1), "fp16")


def test_the_wrapper_returns_float32_eps_close_to_the_fp32_unet(tiny_unet):
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor(500), torch.tensor([0, 1, 2, 3])
    ref = tiny_unet(x, t, class_labels=y).sample
    out = Denoiser(tiny_unet, "bf16")(x, t, class_labels=y).sample
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 keeps 8 bits of mantissa
    assert list(Denoiser(tiny_unet).state_dict()) == [f"unet.{k}" for k in tiny_unet.state_dict()]


def test_fp32_generation_with_the_background_writer_keeps_the_old_header_and_images(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 3)
    a = generate_cache(gen, tmp_path / "a.h5", plan, FAST, batch_size=2, progress=False)
    # The pre-writer-thread way, one batch at a time straight into the file, as a reference.
    x = sample(gen.unet, torch.as_tensor(cache_arrays(a)[1]), cache_arrays(a)[2].tolist(), image_size=8, channels=1,
               null_class=gen.null_class, sampler=FAST.sampler, steps=FAST.steps, guidance=FAST.guidance,
               schedule=gen.schedule)
    ref = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(cache_arrays(a)[0].astype(int) - ref.astype(int)).max() <= 2  # batch 9 vs 2: rounding only
    assert "precision" not in read_header(a)["sampler"]


def test_the_same_seed_device_and_dtype_give_the_same_cache(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 3)
    for precision in ("fp32", "bf16"):
        a, b = (cache_arrays(generate_cache(gen, tmp_path / f"{precision}{k}.h5", plan, FAST, batch_size=4,
                                       progress=False, precision=precision)) for k in range(2))
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert read_header(tmp_path / "bf160.h5")["sampler"]["precision"] == "bf16"


def test_a_killed_bf16_run_resumes_in_bf16_only(gen, tmp_path):
    plan = plans.fixed_plan(NAMES, 3)
    ref = generate_cache(gen, tmp_path / "ref.h5", plan, FAST, batch_size=2, progress=False, precision="bf16")
    out = tmp_path / "killed.h5"
    with pytest.raises(Killed):
        generate_cache(gen, out, plan, FAST, batch_size=2, progress=False, precision="bf16",
                       on_batch=kill_after(2))
    assert read_header(out, require_complete=False)["num_done"] == 4
    with pytest.raises(CacheError, match="other settings.*sampler"):
        generate_cache(gen, out, plan, FAST, batch_size=2, progress=False)
    generate_cache(gen, out, plan, FAST, batch_size=2, progress=False, precision="bf16")
    for a, b in zip(cache_arrays(ref), cache_arrays(out)):
        np.testing.assert_array_equal(a, b)


def test_a_failed_write_in_the_background_stops_the_run(gen, tmp_path, monkeypatch):
    from cbdm_aug.cache.writer import CacheWriter

    calls = []

    def failing(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, images)

    original = CacheWriter.write
    monkeypatch.setattr(CacheWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_cache(gen, tmp_path / "f.h5", plans.fixed_plan(NAMES, 3), FAST, batch_size=2, progress=False)
    assert read_header(tmp_path / "f.h5", require_complete=False)["num_done"] == 2


@pytest.mark.slow
def test_a_compiled_denoiser_samples_what_the_eager_one_does(gen, tmp_path, monkeypatch):
    # Dynamo traces the UNet as on a GPU; aot_eager skips inductor's C++ build, which takes minutes
    # on two CPU cores (the test below compiles with inductor). Tracing alone takes about a minute here.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    plan = plans.fixed_plan(NAMES, 2)
    a = cache_arrays(generate_cache(gen, tmp_path / "e.h5", plan, FAST, batch_size=6, progress=False))
    b = cache_arrays(generate_cache(gen, tmp_path / "c.h5", plan, FAST, batch_size=6, progress=False, compile=True))
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() <= 2


@pytest.mark.slow
def test_an_inductor_compiled_bf16_denoiser_samples_close_to_the_eager_one(tiny_unet):
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor(500), torch.tensor([0, 1, 2, 3])
    eager = Denoiser(tiny_unet, "bf16")(x, t, class_labels=y).sample
    compiled = Denoiser(tiny_unet, "bf16", compile=True)(x, t, class_labels=y).sample
    assert (compiled - eager).abs().max() < 0.05 * eager.abs().max()
