"""The training step's fast paths, run on the CPU: the cached EMA update, device-resident data and
a step that reads nothing back to the host."""
import functools
import json

import numpy as np
import pytest
import torch
from helpers import FAST_FIT as FAST
from helpers import make_folder, run_cli
from timm.utils import ModelEmaV3

from cbdm_aug.generator.module import EMA_WARMUP_POWER, CBDMModule, TimmEma

TINY = {"sample_size": 8, "in_channels": 3, "out_channels": 3, "block_out_channels": [8, 8],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 4,
        "attention_head_dim": None, "num_class_embeds": 4}
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def _perturb(model, k):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(torch.sin(torch.arange(p.numel(), dtype=p.dtype) + k + i).view_as(p) * 1e-2)


def test_the_cached_ema_update_gives_timm_model_ema_v3s_weights_bit_for_bit(tiny_unet):
    ours = TimmEma(tiny_unet, decay=0.999, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
    ref = ModelEmaV3(tiny_unet, decay=0.999, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
    for step in range(1, 6):
        _perturb(tiny_unet, step)
        if step == 3:  # a cast moves every tensor: the cached lists must follow
            for m in (tiny_unet, ours, ref):
                m.double()
        ours.update(tiny_unet, step=step)
        ref.update(tiny_unet, step=step)
    for a, b in zip(ours.module.state_dict().values(), ref.module.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_a_training_step_reads_no_value_back_to_the_host(monkeypatch):
    module = CBDMModule(TINY, [5, 3, 1], {"tau": 1.0, "gamma": 0.25, "target": "train", "p_uncond": 0.1},
                        SCHEDULE, hflip=True)
    images = torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    module.keep_data_on_device(images, labels)

    def refuse(*args, **kwargs):
        raise AssertionError("a host read-back (a GPU sync) in the training step")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    loss = module.training_step(torch.tensor([0, 2, 4, 5]), 0)  # an index batch: gathered on the device
    monkeypatch.undo()
    assert loss.shape == () and torch.isfinite(loss)


def test_device_data_trains_the_same_generator_as_the_host_dataloader(tmp_path, capsys):
    data = make_folder(tmp_path / "data", counts=(6, 4, 2), size=8, mode="RGB")
    weights = {}
    for flag in ("--device-data", "--no-device-data"):
        out = tmp_path / flag
        code, _, err = run_cli(["fit-generator", data, "--out", out, "--max-steps", 3, "--hflip", flag,
                                *FAST], capsys)
        assert code == 0, err
        resolved = json.loads((out / "run.json").read_text())["resolved"]["train"]
        assert resolved["device_data"] is (flag == "--device-data") and resolved["compile"] is False
        from safetensors.numpy import load_file

        weights[flag] = load_file(out / "ema.safetensors")
    # Same sampler order, same flips and noise from the same RNG calls: the same weights, bit for bit.
    a, b = weights.values()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_compile_and_device_data_may_change_when_a_run_resumes(tmp_path, capsys):
    data = make_folder(tmp_path / "data", counts=(6, 4, 2), size=8)
    out = tmp_path / "run"
    assert run_cli(["fit-generator", data, "--out", out, "--max-steps", 2, "--device-data", *FAST], capsys)[0] == 0
    code, stdout, err = run_cli(["fit-generator", data, "--out", out, "--max-steps", 4, "--resume",
                                 "--no-device-data", "--no-compile", *FAST], capsys)
    assert code == 0, err
    assert json.loads((out / "generator.json").read_text())["step"] == 4


@pytest.mark.slow
def test_a_compiled_unet_trains_and_exports_the_same_keys(tmp_path, capsys, monkeypatch):
    # Dynamo traces the training step's UNet as on a GPU; aot_eager compiles the backward too but skips
    # inductor's C++ build, which took 9 minutes for this tiny model on two busy CPU cores.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    data = make_folder(tmp_path / "data", counts=(6, 4, 2), size=8)
    out = tmp_path / "run"
    code, _, err = run_cli(["fit-generator", data, "--out", out, "--max-steps", 2, "--compile", *FAST], capsys)
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["resolved"]["train"]["compile"] is True
    from cbdm_aug import load_generator

    gen = load_generator(out)  # the compiled wrapper did not leak into the weights' names
    assert not any("_orig_mod" in k for k in gen.unet.state_dict())
