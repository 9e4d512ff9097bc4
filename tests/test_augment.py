"""Augmentation conditioning (cbdm_aug.diffusion.augment, the ADA variant of CBDM): the warps, the
conditioning vector, the conditioned UNet, and that p = 0 is exactly the unaugmented model and loss."""
import json

import pytest
import torch

from cbdm_aug.diffusion.augment import AUGMENT_DIM, FLIPS, GEOMETRIC, AugmentConfig, augment, sample_augment, warp
from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
from cbdm_aug.diffusion.unet import build_unet, check_unet_config, unet_config
from cbdm_aug.errors import ConfigError
from cbdm_aug.generator.module import CBDMModule


def _images(n=32, c=1, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_draws_the_identity_and_a_zero_vector_and_leaves_images_bit_for_bit():
    x = _images()
    out, cond = augment(x, AugmentConfig(0.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and torch.equal(cond, torch.zeros(len(x), AUGMENT_DIM))


def test_the_vector_is_zero_exactly_for_the_images_no_op_touched():
    mat, cond = sample_augment(2000, (8, 8), AugmentConfig(0.3, FLIPS + GEOMETRIC), torch.Generator().manual_seed(0))
    untouched = (mat - torch.eye(3)).abs().flatten(1).amax(1) == 0
    assert torch.equal(untouched, (cond == 0).all(1))
    # each of the 6 ops fires with probability p; a flip changes the image only half the time it fires
    share = untouched.float().mean().item()
    expected = (1 - 0.3) ** 4 * (1 - 0.3 / 2) ** 2
    assert abs(share - expected) < 0.03


def test_each_op_fires_with_probability_p_and_ops_left_out_never_do():
    _, cond = sample_augment(20000, (8, 8), AugmentConfig(0.12, GEOMETRIC), torch.Generator().manual_seed(1))
    assert torch.equal(cond[:, :2], torch.zeros(20000, 2))  # no flips for grey digits or letters
    for cols in ([2], [3, 4], [5, 6], [7, 8]):  # scale, rotation, anisotropy, translation
        rate = (cond[:, cols] != 0).any(1).float().mean().item()
        assert abs(rate - 0.12) < 0.01


def test_an_x_flip_mirrors_the_columns_and_a_y_flip_the_rows():
    x = _images(4)
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0])).expand(4, 3, 3)
    torch.testing.assert_close(warp(x, flip), x.flip(-1), atol=1e-5, rtol=0)
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0])).expand(4, 3, 3)
    torch.testing.assert_close(warp(x, flip), x.flip(-2), atol=1e-5, rtol=0)


def test_a_whole_pixel_translation_moves_the_image_by_that_many_pixels():
    x = _images(2, size=8)
    shift = torch.eye(3).expand(2, 3, 3).clone()
    shift[:, 0, 2] = 2.0  # two pixels to the right
    out = warp(x, shift)
    torch.testing.assert_close(out[..., 2:], x[..., :-2], atol=1e-5, rtol=0)


def test_the_warp_is_batched_each_image_gets_its_own_map():
    x = _images(16)
    mat, _ = sample_augment(16, (8, 8), AugmentConfig(1.0), torch.Generator().manual_seed(3))
    batch = warp(x, mat)
    one_by_one = torch.cat([warp(x[i:i + 1], mat[i:i + 1]) for i in range(16)])
    torch.testing.assert_close(batch, one_by_one)


def test_the_same_generator_state_gives_the_same_warps():
    x = _images()
    a = augment(x, AugmentConfig(0.5), generator=torch.Generator().manual_seed(7))
    b = augment(x, AugmentConfig(0.5), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_bad_probability_or_op_is_refused_with_the_value_named():
    with pytest.raises(ConfigError, match="--augment must be a probability in \\[0, 1\\], got 1.5"):
        AugmentConfig(1.5)
    with pytest.raises(ConfigError, match="unknown augmentation ops \\['shear'\\]"):
        AugmentConfig(0.1, ("shear",))
    assert AugmentConfig.for_data(0.1, flips=False).ops == GEOMETRIC
    assert AugmentConfig.for_data(0.1, flips=True).ops == FLIPS + GEOMETRIC


def test_the_conditioned_unet_with_no_vector_or_a_zero_vector_is_the_plain_unet():
    torch.manual_seed(0)
    cond = build_unet(unet_config("tiny", 8, 1, 3, augment_dim=AUGMENT_DIM))
    plain = build_unet(unet_config("tiny", 8, 1, 3))
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"augment_embedding.weight"}
    assert cond.augment_embedding.bias is None
    plain.load_state_dict({k: v for k, v in cond.state_dict().items() if k != "augment_embedding.weight"})
    x, t, y = _images(4), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ref = plain(x, t, class_labels=y).sample
        assert torch.equal(cond(x, t, class_labels=y).sample, ref)
        zero = cond(x, t, class_labels=y, augment_labels=torch.zeros(4, AUGMENT_DIM)).sample
        moved = cond(x, t, class_labels=y, augment_labels=torch.ones(4, AUGMENT_DIM)).sample
    torch.testing.assert_close(zero, ref)
    assert not torch.allclose(moved, ref)


def test_a_config_without_augment_dim_builds_the_model_of_every_earlier_run():
    config = unet_config("tiny", 8, 1, 3)
    assert "augment_dim" not in config and type(build_unet(config)).__name__ == "UNet2DModel"
    with pytest.raises(ConfigError, match="augment_dim must be an integer in \\[1, 64\\]"):
        check_unet_config({**config, "augment_dim": 10_000})


def test_both_cbdm_branches_see_the_same_augmented_x_t_and_vector():
    seen = []

    def unet(x, t, class_labels, augment_labels=None):
        seen.append((x, augment_labels))
        from types import SimpleNamespace
        return SimpleNamespace(sample=torch.zeros_like(x))

    x0, y = _images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    a = torch.randn(6, AUGMENT_DIM)
    cbdm_loss(unet, x0, y, ddpm_alpha_bar(DEFAULT_SCHEDULE), torch.tensor([0.5, 0.3, 0.2]), CBDMLossConfig(), 3,
              generator=torch.Generator().manual_seed(0), augment=a)
    x, aug = seen[0]
    assert torch.equal(x[:6], x[6:]) and torch.equal(aug, torch.cat([a, a]))


def _module(augment, seed=0):
    torch.manual_seed(seed)
    # as fit() builds it: the conditioned UNet only when p > 0
    cfg = unet_config("tiny", 8, 1, 3, augment_dim=AUGMENT_DIM if augment and augment["p"] > 0 else 0)
    return CBDMModule(cfg, [5, 3, 1], {"tau": 1.0, "gamma": 0.25, "target": "train", "p_uncond": 0.1},
                      DEFAULT_SCHEDULE, augment=augment)


def test_p_zero_is_todays_model_and_losses_exactly():
    images = torch.randint(0, 256, (8, 8, 8, 1), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 0, 1, 0])
    today, off = _module(None), _module({"p": 0.0, "ops": list(GEOMETRIC)})
    assert today.state_dict().keys() == off.state_dict().keys()
    for a, b in zip(today.state_dict().values(), off.state_dict().values()):
        assert torch.equal(a, b)
    for step in range(3):
        torch.manual_seed(100 + step)
        la = today.training_step((images, labels), step)
        torch.manual_seed(100 + step)
        lb = off.training_step((images, labels), step)
        assert torch.equal(la, lb)


def test_augmentation_changes_what_the_step_sees_and_trains_the_augment_embedding():
    images = torch.randint(0, 256, (8, 8, 8, 1), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 0, 1, 0])
    module = _module({"p": 1.0, "ops": list(GEOMETRIC)})
    torch.manual_seed(0)
    loss = module.training_step((images, labels), 0)
    loss.backward()
    grad = module.unet.augment_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_fit_generator_records_p_and_the_op_set_and_the_run_samples(tmp_path, capsys):
    from helpers import run_cli

    from cbdm_aug import load_generator

    code, _, err = run_cli(["fit-generator", "digits", "--preset", "tiny", "--max-steps", "3", "--batch-size", "8",
                            "--augment", "0.12", "--accelerator", "cpu", "--sample-every", "100",
                            "--out", tmp_path / "ada"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "ada" / "generator.json").read_text())
    assert meta["augment"] == {"p": 0.12, "ops": list(GEOMETRIC), "dim": AUGMENT_DIM}
    assert meta["model"]["augment_dim"] == AUGMENT_DIM and meta["train"]["augment_p"] == 0.12
    gen = load_generator(tmp_path / "ada")
    assert type(gen.unet).__name__ == "AugmentConditionedUNet"
    # --augment 0 fits the very weights of a run without the option
    for name, extra in (("plain", []), ("zero", ["--augment", "0"])):
        code, _, err = run_cli(["fit-generator", "digits", "--preset", "tiny", "--max-steps", "3", "--batch-size", "8",
                                *extra, "--accelerator", "cpu", "--sample-every", "100", "--out", tmp_path / name], capsys)
        assert code == 0, err
    plain, zero = (json.loads((tmp_path / n / "generator.json").read_text()) for n in ("plain", "zero"))
    assert plain["weights_sha256"] == zero["weights_sha256"] and "augment_dim" not in zero["model"]
    code, _, err = run_cli(["fit-generator", "digits", "--augment", "-1", "--out", tmp_path / "bad"], capsys)
    assert code != 0 and "--augment must be a probability in [0, 1], got -1.0" in err and "Traceback" not in err
