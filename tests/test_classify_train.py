import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import tiny_recipe

from cbdm_aug.classify.cli import compare, train_classifier


def test_a_tiny_recipe_trains_end_to_end_and_writes_every_output(tmp_path, tiny_npz):
    out = tmp_path / "run"
    result = CliRunner().invoke(train_classifier, [str(tiny_recipe(tmp_path, tiny_npz)), "--out", str(out),
                                                   "--no-progress", "--set", "loss.kind=balanced-softmax"])
    assert result.exit_code == 0, result.output
    for name in ("recipe.yaml", "metrics.json", "summary.md", "per_class.png", "model.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_counts"]["real"] == [40, 20, 10]
    assert m["train_counts"]["synthetic_available"] == [0, 0, 0]
    assert m["metrics"]["groups"] == {"many": [0], "medium": [1], "few": [2]}
    assert 0 <= m["metrics"]["top1"] <= 1 and len(m["metrics"]["per_class"]) == 3
    assert "balanced-softmax" in (out / "recipe.yaml").read_text()
    assert "overall" in result.output


def test_seeds_repeat_the_recipe_and_compare_reports_the_gain(tmp_path, tiny_npz):
    recipe = str(tiny_recipe(tmp_path, tiny_npz))
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(train_classifier, [recipe, "--out", str(a), "--seeds", "0,1", "--no-progress",
                                            "--set", "schedule.epochs=1"]).exit_code == 0
    agg = json.loads((a / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1] and (a / "seed0" / "metrics.json").is_file() and (a / "seed1").is_dir()
    assert set(agg["aggregate"]["top1"]) >= {"mean", "std", "min", "max"}
    result = runner.invoke(train_classifier, [recipe, "--out", str(b), "--no-progress", "--set",
                                              "sampling.mode=class-balanced", "--set", "schedule.epochs=1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(compare, [str(a), str(b), "--out", str(tmp_path / "cmp.png")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "few" in out and "±" in out and ("(+" in out or "(-" in out)
    assert (tmp_path / "cmp.png").is_file() and (tmp_path / "cmp.md").is_file()


@pytest.mark.parametrize("args,message", [
    (["missing.yaml", "--out", "x"], "no such recipe file"),
    (["{recipe}", "--out", "x", "--set", "schedule.epoch=1"], "unknown recipe key 'schedule.epoch'"),
    (["{recipe}", "--out", "x", "--set", "data.train=nowhere.npz"], "nowhere.npz"),
    (["{recipe}", "--out", "x", "--set", "sampling.mode=synthetic"], "needs a cache"),
])
def test_bad_input_is_a_one_line_error_not_a_traceback(tmp_path, tiny_npz, args, message):
    recipe = str(tiny_recipe(tmp_path, tiny_npz))
    args = [a.replace("{recipe}", recipe).replace("x", str(tmp_path / "out")) if a in ("{recipe}", "x") else a
            for a in args]
    result = CliRunner().invoke(train_classifier, args + ["--no-progress"])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_compare_rejects_a_folder_without_a_run(tmp_path):
    result = CliRunner().invoke(compare, [str(tmp_path)])
    assert result.exit_code != 0 and "not a classifier run" in result.output


def _train_with_cache(tmp_path, npz, cache_size, *extra_sets):
    """Train the tiny recipe for one epoch on the real set plus a cache of 10 and 25 random images of
    classes 1 and 2 (``cache_size`` pixels square); returns metrics.json's train_counts."""
    from cbdm_aug.cache.writer import write_cache

    rng = np.random.default_rng(1)
    labels = np.array([1] * 10 + [2] * 25)
    write_cache(tmp_path / "syn.h5", rng.integers(0, 255, (35, cache_size, cache_size, 1), dtype=np.uint8),
                labels, class_names=["0", "1", "2"])
    out = tmp_path / "run"
    args = [str(tiny_recipe(tmp_path, npz)), "--out", str(out), "--no-progress", "--set", "schedule.epochs=1",
            "--set", "sampling.mode=synthetic", "--set", f"sampling.cache={tmp_path / 'syn.h5'}"]
    for s in extra_sets:
        args += ["--set", s]
    result = CliRunner().invoke(train_classifier, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())["train_counts"]


def test_the_synthetic_mode_mixes_a_cache_in_through_the_plugin(tmp_path, tiny_npz):
    # 16x16 synthetic images for the two tail classes: the trainer resizes them to the real 8x8.
    counts = _train_with_cache(tmp_path, tiny_npz, 16)
    assert counts["synthetic_available"] == [0, 10, 25]
    draws = counts["epoch0_draws"]
    assert sum(draws["real"]) + sum(draws["synthetic"]) == 70  # the real set's size, as the baseline
    assert draws["synthetic"][0] == 0 and draws["synthetic"][2] > 0


def test_a_sampled_prior_makes_balanced_softmax_correct_only_what_the_sampler_leaves(tmp_path, tiny_npz):
    counts = _train_with_cache(tmp_path, tiny_npz, 8, "loss.kind=balanced-softmax", "loss.prior=sampled")
    draws = counts["epoch0_draws"]
    assert counts["loss_prior"] == [r + s for r, s in zip(draws["real"], draws["synthetic"])]
    assert counts["loss_prior"] != counts["real"]


def test_synthetic_weight_scales_only_the_synthetic_samples_of_the_batch_loss():
    import torch

    from cbdm_aug.classify.train import weighted_loss

    per_sample = torch.tensor([1.0, 2.0, 3.0, 4.0])
    syn = torch.tensor([False, False, True, True])
    assert weighted_loss(per_sample, syn, 1.0) == per_sample.mean()
    assert weighted_loss(per_sample, syn, 0.0) == torch.tensor(1.5)  # the real samples' mean
    expected = (1 + 2 + 0.3 * (3 + 4)) / (2 + 0.3 * 2)
    assert torch.isclose(weighted_loss(per_sample, syn, 0.3), torch.tensor(expected))
    assert weighted_loss(per_sample, torch.ones(4, dtype=torch.bool), 0.0) == 0


def test_a_weighted_synthetic_run_records_its_weight_and_trains(tmp_path, tiny_npz):
    counts = _train_with_cache(tmp_path, tiny_npz, 8, "loss.synthetic_weight=0.3")
    assert sum(counts["epoch0_draws"]["synthetic"]) > 0
    assert "synthetic_weight: 0.3" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_crt_retrains_only_the_last_layer_on_real_images(tmp_path, tiny_npz):
    import torch

    out = tmp_path / "run"
    args = [str(tiny_recipe(tmp_path, tiny_npz)), "--out", str(out), "--no-progress", "--set", "schedule.epochs=1"]
    assert CliRunner().invoke(train_classifier, args).exit_code == 0
    before = torch.load(out / "model.pt")["state_dict"]
    out2 = tmp_path / "crt"
    args = [str(tiny_recipe(tmp_path, tiny_npz)), "--out", str(out2), "--no-progress", "--set", "schedule.epochs=1",
            "--set", "schedule.crt_epochs=2"]
    result = CliRunner().invoke(train_classifier, args)
    assert result.exit_code == 0, result.output
    after = torch.load(out2 / "model.pt")["state_dict"]
    # same seed, same first stage: the backbone (weights and batch-norm statistics) is untouched by cRT
    for k in before:
        if not k.startswith("fc."):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    stages = [row.get("stage") for row in json.loads((out2 / "metrics.json").read_text())["history"]]
    assert stages == [None, "cRT", "cRT"]


def test_randaugment_changes_images_but_keeps_their_shape_and_range():
    import torch

    from cbdm_aug.classify.train import make_transform

    x = np.zeros((8, 8, 1), np.uint8)
    x[2:6, 3:5] = 255
    torch.manual_seed(0)
    plain = make_transform(8, 1)(x)
    tf = make_transform(8, 1, augment="randaugment", augment_ops=2, augment_magnitude=15)
    outs = [tf(x) for _ in range(20)]
    assert all(o.shape == (1, 8, 8) and o.dtype == torch.float32 and -1 <= o.min() and o.max() <= 1 for o in outs)
    assert sum(not torch.equal(o, plain) for o in outs) >= 10


def test_randaugment_of_the_real_images_only_leaves_the_synthetic_ones_as_generated(tmp_path, tiny_npz):
    import torch

    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import build_training_set, load_data, make_transform

    rng = np.random.default_rng(1)
    write_cache(tmp_path / "syn.h5", rng.integers(0, 255, (6, 8, 8, 1), dtype=np.uint8), np.array([2] * 6),
                class_names=["0", "1", "2"])
    sets = [f"data.train={tiny_npz}", "data.longtail=none", "sampling.mode=synthetic",
            f"sampling.cache={tmp_path / 'syn.h5'}", "data.augment=randaugment", "data.augment_magnitude=30"]
    torch.manual_seed(0)
    for only_real in (True, False):
        recipe = load_recipe(None, sets + [f"data.augment_synthetic={str(not only_real).lower()}"])
        train, _ = load_data(recipe.data)
        ds, _ = build_training_set(recipe, train, make_transform(8, 1, augment="randaugment", augment_magnitude=30))
        flags = np.asarray(ds.is_synthetic)
        syn, real = np.flatnonzero(flags)[:6], np.flatnonzero(~flags)[:20]
        # drawing an item twice gives the same tensor exactly when nothing random touches it
        syn_changes = any(not torch.equal(ds[int(i)][0], ds[int(i)][0]) for i in syn)
        real_changes = any(not torch.equal(ds[int(i)][0], ds[int(i)][0]) for i in real)
        assert syn_changes == (not only_real)
        assert real_changes  # the real images are RandAugmented either way


def test_a_recipe_obeys_the_decisions_beside_its_cache_unless_its_share_file_names_others(tmp_path, tiny_npz):
    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.classify.recipe import load_recipe
    from cbdm_aug.classify.train import build_training_set, load_data, make_transform

    write_cache(tmp_path / "syn.h5", np.zeros((9, 8, 8, 1), np.uint8), np.array([1] * 4 + [2] * 5),
                class_names=["0", "1", "2"])
    (tmp_path / "decisions.json").write_text(json.dumps({"0": 1.0, "1": 0.0, "2": 1.0}))
    (tmp_path / "other.json").write_text(json.dumps({"2": 0.0}))
    sets = [f"data.train={tiny_npz}", "data.longtail=none", "sampling.mode=synthetic",
            f"sampling.cache={tmp_path / 'syn.h5'}"]
    for share_file, synthetic in ((None, [0, 0, 5]), ("all", [0, 4, 5]), (tmp_path / "other.json", [0, 4, 0])):
        recipe = load_recipe(None, sets + ([f"sampling.share_file={share_file}"] if share_file else []))
        train, _ = load_data(recipe.data)
        ds, sampler = build_training_set(recipe, train, make_transform(8, 1))
        assert np.bincount(ds.labels[ds.is_synthetic], minlength=3).tolist() == synthetic
        assert np.all(sampler.quotas(0)["synthetic"] <= synthetic)
    with pytest.raises(Exception, match="sampling.share_file: decisions file .*no such file"):
        build_training_set(load_recipe(None, sets + [f"sampling.share_file={tmp_path / 'none.json'}"]), train,
                           make_transform(8, 1))
