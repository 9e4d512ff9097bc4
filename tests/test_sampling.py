"""Classifier-feedback guidance (cbdm_aug.diffusion.sampling) and its `generate` options."""
import json

import pytest
import torch

from cbdm_aug.diffusion.sampling import classifier_feedback, feedback_eps, sample


class Linear(torch.nn.Module):
    """A fixed linear classifier on 1x8x8 images in [-1, 1], 3 classes."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 64, generator=g), requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


@pytest.mark.parametrize("kind", ["entropy", "loss"])
def test_feedback_moves_the_predicted_clean_image_uphill_on_the_criterion_by_scale_sigma(kind):
    J = classifier_feedback(Linear(), kind)
    g = torch.Generator().manual_seed(1)
    x_t, eps = torch.rand(4, 1, 8, 8, generator=g) - 0.5, torch.randn(4, 1, 8, 8, generator=g) * 0.1
    y = torch.tensor([0, 1, 2, 0])
    ab = torch.tensor(0.9)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert x0.abs().max() < 1  # inside the clamp, so the first-order picture holds exactly
    new = feedback_eps(eps, x_t, ab, y, J, scale=0.002)  # small: a first-order step
    x0_new = (x_t - (1 - ab).sqrt() * new) / ab.sqrt()
    step = (x0_new - x0).pow(2).mean(dim=(1, 2, 3)).sqrt()
    torch.testing.assert_close(step, torch.full((4,), 0.002 * (1 - ab).sqrt().item()))
    assert (J(x0_new, y) > J(x0, y)).all()


class ZeroImageDenoiser(torch.nn.Module):
    """The exact eps-predictor for data that is all zeros (eps = x_t / sigma_t): without feedback,
    every sample is the zero image, so any change comes from the feedback."""

    def __init__(self, tiny_unet):
        super().__init__()
        from cbdm_aug.diffusion.loss import ddpm_alpha_bar
        from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE

        self.unet = tiny_unet  # only for its parameters' dtype
        self.register_buffer("alpha_bar", ddpm_alpha_bar(DEFAULT_SCHEDULE))

    def forward(self, x, t, class_labels=None):
        from types import SimpleNamespace

        return SimpleNamespace(sample=x / (1 - self.alpha_bar[t.long()]).sqrt())


def test_with_feedback_an_image_does_not_depend_on_its_batch(tiny_unet):
    J = classifier_feedback(Linear(), "entropy")
    tiny_unet = ZeroImageDenoiser(tiny_unet)
    kw = dict(image_size=8, channels=1, null_class=3, sampler="dpmpp-sde", steps=4, guidance=1.0,
              feedback=J, feedback_scale=0.5)
    both = sample(tiny_unet, torch.tensor([0, 2]), [11, 12], **kw)
    one = sample(tiny_unet, torch.tensor([2]), [12], **kw)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)
    plain = sample(tiny_unet, torch.tensor([2]), [12], **{**kw, "feedback": None})
    assert plain.abs().max() < 1e-3 and one.abs().max() > 0.01


def test_an_unknown_feedback_kind_is_refused():
    with pytest.raises(ValueError, match="feedback kind"):
        classifier_feedback(Linear(), "margin")


def _classifier_run(path, classes, size=8):
    import timm

    import cbdm_aug.networks  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model("resnet8_cifar", num_classes=len(classes), in_chans=1)
    path.mkdir()
    torch.save({"state_dict": model.state_dict(), "model": "resnet8_cifar", "num_classes": len(classes),
                "in_chans": 1}, path / "model.pt")
    (path / "metrics.json").write_text(json.dumps({"data": {"image_size": size, "channels": 1},
                                                   "class_names": classes}))
    return path


def test_generate_with_a_feedback_classifier_records_it_and_refuses_a_mismatched_one(tmp_path, capsys):
    from helpers import run_cli

    from cbdm_aug.cache.reader import SyntheticCache, read_header
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import save_generator

    names = ["a", "b", "c"]
    cfg = unet_config("tiny", 8, 1, 3)
    torch.manual_seed(0)
    run = save_generator(tmp_path / "gen", build_unet(cfg), {
        "preset": "tiny", "model": cfg, "class_names": names, "class_counts": [6, 3, 1], "image_size": 8,
        "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "finished": True,
        "package_version": "test"})
    cls = _classifier_run(tmp_path / "cls", names)
    common = ["generate", run, "--per-class", 2, "--sampler", "dpmpp-sde", "--steps", 3, "--device", "cpu"]
    code, out, err = run_cli([*common, "--out", tmp_path / "fb.h5", "--feedback-classifier", cls,
                              "--feedback-scale", 0.7], capsys)
    assert code == 0, err
    fb = read_header(tmp_path / "fb.h5")["sampler"]["feedback"]
    assert fb["kind"] == "entropy" and fb["scale"] == 0.7 and len(fb["weights_sha256"]) == 64
    code, _, err = run_cli([*common, "--out", tmp_path / "plain.h5"], capsys)
    assert code == 0, err
    assert "feedback" not in read_header(tmp_path / "plain.h5")["sampler"]
    with SyntheticCache(tmp_path / "fb.h5") as a, SyntheticCache(tmp_path / "plain.h5") as b:
        assert a.seeds.tolist() == b.seeds.tolist()
        assert any((a[i][0] != b[i][0]).any() for i in range(len(a)))
    other = _classifier_run(tmp_path / "other", ["x", "y", "z"])
    code, _, err = run_cli([*common, "--out", tmp_path / "bad.h5", "--feedback-classifier", other], capsys)
    assert code != 0 and "--feedback-classifier" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
