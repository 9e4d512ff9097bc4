"""Classifiers from the user's own local weights (classify/pretrained.py) and at the user's own size, in
train-classifier and in every classifier ``cbdm-aug run`` trains: its arms, its evidence probes, its filter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbdm_aug.classify.pretrained import backbone_digest, file_sha256
from cbdm_aug.classify.recipe import RecipeError, load_recipe
from cbdm_aug.pipeline.settings import ARMS, TWINS, RunOptions, resolve

ROOT = Path(__file__).resolve().parent.parent


def _save(path, name="resnet8_cifar", num_classes=4, in_chans=3, **kw):
    import timm

    import cbdm_aug.networks  # noqa: F401

    torch.manual_seed(123)  # an initialisation no seed of the runs below makes
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kw)
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def _folder(root, counts, size=8):
    """Dark, full-range and bright noise classes: an untrained generator's noise looks like the middle one, so
    the filter keeps some of its images and the evidence stage has a class to judge."""
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        d = root / f"class {c}"
        d.mkdir(parents=True)
        lo, hi = ((0, 70), (0, 255), (185, 255))[c % 3]
        for i in range(n):
            Image.fromarray(rng.integers(lo, hi, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("weights") / "backbone.pt")


def test_a_classifier_from_a_saved_state_dict_starts_from_exactly_its_weights_with_a_head_for_the_new_classes(weights, tmp_path):
    from cbdm_aug.classify.train import train_on_arrays

    path, sd = weights
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (30, 8, 8, 3), dtype=np.uint8), np.arange(30) % 3
    m = train_on_arrays(x, y, x, y, ["a", "b", "c"], tmp_path / "run", name="t", epochs=1, device="cpu",
                        progress=False, pretrained_file=str(path))
    start = json.loads((tmp_path / "run" / "metrics.json").read_text())["pretrained"]
    assert start == m["pretrained"] and start["sha256"] == file_sha256(path)
    assert start["backbone_sha256"] == backbone_digest(sd, ("fc.",))
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]["fc.weight"].shape == (3, 64)


def test_the_same_file_through_timm_keeps_every_backbone_tensor_and_remakes_the_head_even_for_as_many_classes(weights):
    from cbdm_aug.classify.pretrained import create_pretrained

    path, sd = weights
    model = create_pretrained("resnet8_cifar", path, num_classes=4, in_chans=3)
    got = model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd if not k.startswith("fc."))
    assert not torch.equal(got["fc.weight"], sd["fc.weight"])  # its classes are someone else's


def _one_line_error(path, name="resnet8_cifar"):
    from cbdm_aug.classify.pretrained import create_pretrained

    with pytest.raises(RecipeError) as e:
        create_pretrained(name, path, num_classes=3, in_chans=3)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    assert "no such file" in _one_line_error(tmp_path / "nope.pt")


def test_a_truncated_file_is_one_line_naming_it(weights, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(weights[0].read_bytes()[:5000])
    assert "truncated" in _one_line_error(cut)


def test_weights_of_another_architecture_are_one_line_naming_the_file_and_a_tensor(tmp_path):
    path, _ = _save(tmp_path / "r20.pt", "resnet20_cifar")
    message = _one_line_error(path)
    assert "not weights for resnet8_cifar" in message and "layers." in message


def test_a_shape_mismatch_is_one_line_naming_the_tensor_and_both_shapes(tmp_path):
    from cbdm_aug.networks import CifarResNet

    path = tmp_path / "narrow.pt"
    torch.save(CifarResNet(1, widths=(8, 16, 32)).state_dict(), path)
    message = _one_line_error(path)
    assert "shape mismatch" in message and "conv1.weight" in message and "(8, 3, 3, 3)" in message


def test_train_classifier_with_a_bad_weights_file_says_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: resnet8_cifar, pretrained_file: {tmp_path / 'missing.pt'}}}\n"
                      "data: {train: digits, holdout_per_class: 5}\n")
    code, _, stderr = _cli("train-classifier", recipe, "--dry-run")
    assert code != 0 and "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.pt" in lines[0] and "no such file" in lines[0]


def test_without_weights_or_a_recipe_a_cpu_run_keeps_the_classifier_at_the_generator_size_and_says_so():
    r, why = resolve(RunOptions(data="x"), 735, 32, 3, on_gpu=False)
    assert (r.image_size, r.classifier_size, r.model, r.pretrained) == (16, 16, "resnet8_cifar", None)
    assert any("--classifier-size 32" in w for w in why) and any("generator 16x16, classifier 16x16" in w for w in why)
    r, _ = resolve(RunOptions(data="x", classifier_size=32), 735, 32, 3, on_gpu=False)
    assert (r.image_size, r.classifier_size, r.crop_padding) == (16, 32, 4)


def test_with_weights_the_classifier_trains_at_the_data_size_while_the_cpu_generator_stays_small(weights):
    r, why = resolve(RunOptions(data="x", pretrained=str(weights[0]), model="resnet8_cifar"), 735, 32, 3, on_gpu=False)
    assert (r.image_size, r.classifier_size, r.pretrained) == (16, 32, str(weights[0]))
    assert (r.filter_model, r.filter_size) == ("resnet8_cifar", 32)  # the filter judges with the user's classifier
    assert any("resized to the classifier's size" in w for w in why)
    r, _ = resolve(RunOptions(data="x"), 735, 100, 3, on_gpu=True)
    assert (r.image_size, r.classifier_size) == (64, 100)


def test_a_classifier_recipe_sets_the_arms_model_optimiser_schedule_and_size_and_run_adds_only_the_arm_differences(tmp_path):
    from dataclasses import replace

    from cbdm_aug.pipeline.run import arm_recipe, read_classifier_recipe

    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: resnet20_cifar, drop_rate: 0.1}\noptim: {name: adamw, lr: 0.003}\n"
                    "schedule: {epochs: 7, kind: step, milestones: [5], batch_size: 32}\n"
                    "data: {image_size: 12, crop_padding: 2, hflip: true, augment_magnitude: 5}\n"
                    "loss: {kind: balanced-softmax}\n")
    base, facts = read_classifier_recipe(str(path))
    opts = RunOptions(data="x", classifier_recipe=str(path))
    r, why = resolve(opts, 100, 32, 3, on_gpu=False, recipe=facts)
    assert (r.classifier_size, r.model, r.epochs, r.image_size) == (12, "resnet20_cifar", 7, 16)
    assert any("classifier recipe" in w and "each arm's difference" in w for w in why)
    arms = {a: arm_recipe(a, tmp_path, r, opts, "cpu", "c.h5" if a in TWINS else None, base=base) for a in ARMS}
    want = load_recipe(path)
    for a, rec in arms.items():
        assert (rec.model, rec.optim, rec.schedule) == (want.model, want.optim, want.schedule)
        assert rec.loss.kind == "balanced-softmax" and rec.data.image_size == 12 and rec.data.augment_magnitude == 5
        assert rec.data.augment == ("randaugment" if a.startswith("randaugment") else "none")
        assert rec.sampling.mode == ("synthetic" if a in TWINS else "class-balanced")
    # the control and its twin differ in the generated images only; RandAugment and control in the policy only
    c, cs = arms["control"], arms["control+synthetic"]
    assert replace(cs, name="control", sampling=c.sampling, loss=c.loss) == c
    assert replace(arms["randaugment"], name="control", data=c.data) == c


def test_a_bad_classifier_recipe_stops_run_in_one_line_naming_the_key(tmp_path):
    from cbdm_aug.pipeline.run import RunError, read_classifier_recipe

    path = tmp_path / "bad.yaml"
    path.write_text("model: {nme: resnet8_cifar}\n")
    with pytest.raises(RunError, match="--classifier-recipe unknown recipe key model.nme"):
        read_classifier_recipe(str(path))


def _cli(*args):
    """``cbdm-aug ARGS`` as the console script runs it, in this tree: (exit code, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "cbdm_aug.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, weights):
    root = tmp_path_factory.mktemp("pretrained-run")
    _folder(root / "train", (40, 20, 3))  # class 1 judged (evidence.MIN_JUDGED 20), topped up by 20
    _folder(root / "test", (3, 3, 3))
    args = ["run", str(root / "train"), "--test", str(root / "test"), "--out", str(root / "run"), "--preset", "tiny",
            "--gen-steps", "3", "--classifier-epochs", "1", "--seeds", "0,1", "--device", "cpu", "--no-progress",
            "--model", "resnet8_cifar", "--pretrained", str(weights[0])]
    code, stdout, stderr = _cli(*args)
    assert code == 0, stderr[-3000:]
    return root / "run", stdout


def test_every_arm_every_evidence_probe_and_the_filter_of_a_run_start_from_the_users_weights(pretrained_run, weights):
    out, _ = pretrained_run
    want = {"sha256": file_sha256(weights[0]), "backbone_sha256": backbone_digest(weights[1], ("fc.",))}
    runs = [out / "arms" / a / f"seed{s}" for a in ARMS for s in (0, 1)]
    probes = sorted(d for d in (out / "cache" / "evidence").glob("fold*-with*") if d.is_dir())
    third = [d for d in probes if d.name.endswith("-withheld")]  # a fold with an own proxy: its third probe
    assert len(runs) == 8 and len(probes) == 6 + len(third) and len(third) <= 3
    for d in [*runs, *probes, out / "cache" / "filter-classifier"]:
        start = json.loads((d / "metrics.json").read_text())["pretrained"]
        assert {k: start[k] for k in want} == want, d


def test_a_run_with_weights_reports_their_hash_and_both_sizes(pretrained_run, weights):
    out, stdout = pretrained_run
    report = (out / "report.md").read_text()
    assert file_sha256(weights[0]) in report and file_sha256(weights[0]) in stdout
    assert "generator 8x8, classifier 8x8" in report


def test_run_with_a_weights_file_of_another_architecture_stops_before_any_stage_in_one_line(tmp_path):
    _folder(tmp_path / "train", (4, 4))
    path, _ = _save(tmp_path / "r20.pt", "resnet20_cifar")
    code, _, stderr = _cli("run", tmp_path / "train", "--holdout-per-class", "1", "--out", tmp_path / "run",
                           "--model", "resnet8_cifar", "--pretrained", path, "--device", "cpu", "--no-progress")
    assert code != 0
    last = stderr.strip().splitlines()[-1]
    assert "--pretrained" in last and "r20.pt" in last and "not weights for resnet8_cifar" in last
    assert not (tmp_path / "run" / "generator").exists()
