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


def _tiny_generator_run(path, names):
    """A random-weight tiny 8x8 grey generator run with real counts 6, 3, 1."""
    from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE
    from cbdm_aug.diffusion.unet import build_unet, unet_config
    from cbdm_aug.generator.run_dir import save_generator

    cfg = unet_config("tiny", 8, 1, len(names))
    torch.manual_seed(0)
    return save_generator(path, build_unet(cfg), {
        "preset": "tiny", "model": cfg, "class_names": names, "class_counts": [6, 3, 1], "image_size": 8,
        "channels": 1, "schedule": DEFAULT_SCHEDULE, "loss": {}, "step": 0, "finished": True,
        "package_version": "test"})


def test_generate_with_a_feedback_classifier_records_it_and_refuses_a_mismatched_one(tmp_path, capsys):
    from helpers import run_cli

    from cbdm_aug.cache.reader import SyntheticCache, read_header
    names = ["a", "b", "c"]
    run = _tiny_generator_run(tmp_path / "gen", names)
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


# ---------------------------------------------------------------- real-guided generation (SDEdit)


def test_a_real_guided_start_at_full_strength_is_plain_sampling_and_a_weak_one_stays_near_its_start(tiny_unet):
    kw = dict(image_size=8, channels=1, null_class=3, sampler="dpmpp-sde", steps=10, guidance=1.0)
    labels, seeds = torch.tensor([0, 1, 2]), [5, 6, 7]
    x_start = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = sample(tiny_unet, labels, seeds, **kw)
    torch.testing.assert_close(sample(tiny_unet, labels, seeds, **kw, x_start=x_start, strength=1.0), plain)
    rms = lambda a: a.pow(2).mean().sqrt().item()  # noqa: E731
    weak = sample(tiny_unet, labels, seeds, **kw, x_start=x_start, strength=0.1)
    strong = sample(tiny_unet, labels, seeds, **kw, x_start=x_start, strength=0.9)
    assert rms(weak - x_start) < 0.5 * rms(plain - x_start)
    assert rms(weak - x_start) < rms(strong - x_start)


def test_a_real_guided_image_does_not_depend_on_its_batch(tiny_unet):
    kw = dict(image_size=8, channels=1, null_class=3, sampler="dpmpp-sde", steps=6, guidance=1.0, strength=0.5)
    x_start = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    both = sample(tiny_unet, torch.tensor([0, 2]), [11, 12], x_start=x_start, **kw)
    one = sample(tiny_unet, torch.tensor([2]), [12], x_start=x_start[1:], **kw)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


def test_a_bad_strength_or_start_shape_is_refused(tiny_unet):
    kw = dict(image_size=8, channels=1, null_class=3, sampler="ddim", steps=3)
    with pytest.raises(ValueError, match="strength"):
        sample(tiny_unet, torch.tensor([0]), [1], x_start=torch.zeros(1, 1, 8, 8), strength=0.0, **kw)
    with pytest.raises(ValueError, match="x_start"):
        sample(tiny_unet, torch.tensor([0]), [1], x_start=torch.zeros(2, 1, 8, 8), strength=0.5, **kw)


def test_real_sources_pick_the_own_class_or_a_larger_one_from_the_image_seed_alone():
    import numpy as np

    from cbdm_aug.cache.generate import real_sources

    real = np.array([0] * 6 + [1] * 3 + [2] * 1)
    labels = np.array([1, 1, 2, 2, 2, 0])
    seeds = np.arange(100, 106)
    same = real_sources(labels, seeds, real, "same")
    assert (real[same] == labels).all()
    head = real_sources(labels, seeds, real, "head")
    counts = np.bincount(real)
    assert all(counts[real[h]] > counts[c] or c == 0 for h, c in zip(head, labels))
    assert real[head[-1]] == 0  # the largest class has no larger one: its own
    # an image's source depends on its seed and label, not on the others in the plan
    assert real_sources(labels[2:3], seeds[2:3], real, "head")[0] == head[2]


def test_generate_real_guided_records_each_image_source_and_the_strength_and_filter_keeps_them(tmp_path, capsys):
    import numpy as np
    from helpers import run_cli

    from cbdm_aug.cache.reader import SyntheticCache, read_header
    names = ["a", "b", "c"]
    run = _tiny_generator_run(tmp_path / "gen", names)
    rng = np.random.default_rng(0)
    y = np.array([0] * 6 + [1] * 3 + [2])
    np.savez(tmp_path / "real.npz", x=rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8), y=y,
             class_names=np.array(names))
    common = ["generate", run, "--per-class", 3, "--sampler", "dpmpp-sde", "--steps", 4, "--device", "cpu"]
    code, out, err = run_cli([*common, "--out", tmp_path / "rg.h5", "--real-guided", "head", "--strength", 0.6,
                              "--real", tmp_path / "real.npz"], capsys)
    assert code == 0, err
    rg = read_header(tmp_path / "rg.h5")["sampler"]["real_guided"]
    assert rg["source"] == "head" and rg["strength"] == 0.6 and len(rg["images_sha256"]) == 64
    with SyntheticCache(tmp_path / "rg.h5") as c:
        src = c.sources
        n = np.bincount(y)
        assert len(src) == len(c) and all(n[y[s]] > n[lab] for s, lab in zip(src, c.labels) if lab > 0)
    code, out, err = run_cli(["inspect", tmp_path / "rg.h5"], capsys)
    assert "real-guided (head class, strength 0.6)" in out
    code, _, err = run_cli([*common, "--out", tmp_path / "plain.h5"], capsys)
    assert "real_guided" not in read_header(tmp_path / "plain.h5")["sampler"]
    with SyntheticCache(tmp_path / "plain.h5") as c:
        assert c.sources is None
    # the filter keeps each kept image's source (confidence 0: only near-copies go)
    code, _, err = run_cli(["filter-cache", tmp_path / "rg.h5", "--out", tmp_path / "rg-f.h5", "--real",
                            tmp_path / "real.npz", "--confidence", 0, "--quiet"], capsys)
    assert code == 0, err
    with SyntheticCache(tmp_path / "rg-f.h5") as f, SyntheticCache(tmp_path / "rg.h5") as c:
        by_seed = dict(zip(c.seeds.tolist(), c.sources.tolist()))
        assert [by_seed[s] for s in f.seeds.tolist()] == f.sources.tolist()
    # bad input: --real without --real-guided, and a real set with other classes
    code, _, err = run_cli([*common, "--out", tmp_path / "x.h5", "--real", tmp_path / "real.npz"], capsys)
    assert code != 0 and "--real-guided" in err
    np.savez(tmp_path / "other.npz", x=np.zeros((2, 8, 8, 1), np.uint8), y=np.array([0, 1]),
             class_names=np.array(["x", "y"]))
    code, _, err = run_cli([*common, "--out", tmp_path / "y.h5", "--real-guided", "same", "--real",
                            tmp_path / "other.npz"], capsys)
    assert code != 0 and "classes" in err and len(err.strip().splitlines()) == 1
