"""The demo end to end at toy size (the real demo is sized for minutes, not seconds)."""
import json

import numpy as np
import pytest

from cbdm_aug.demo import DemoConfig, build_split, run_demo


def test_the_demo_split_holds_out_a_balanced_test_set_the_generator_never_sees(tmp_path):
    split = build_split(DemoConfig(), tmp_path, echo=lambda *_: None)
    d = np.load(split)
    assert np.bincount(d["y_test"]).tolist() == [30] * 10
    assert np.bincount(d["y_train"]).tolist() == [140, 108, 83, 64, 50, 38, 30, 23, 18, 14]
    train = {x.tobytes() for x in d["x_train"]}
    # sklearn digits has a few exact duplicate images; the held-out images are otherwise unseen
    assert sum(x.tobytes() in train for x in d["x_test"]) <= 3


@pytest.mark.slow
def test_the_demo_is_run_on_its_split_and_reports_paired_intervals(tmp_path):
    lines = []
    cfg = DemoConfig(preset="tiny", gen_steps=5, classifier_epochs=1, seeds=(0, 1))
    result = run_demo(cfg, tmp_path, echo=lines.append)
    text = "\n".join(map(str, lines))
    for name in ("control", "RandAugment", "control + synthetic", "RandAugment + synthetic"):
        assert f"| {name} " in text
    assert result["verdict"] in text and "test split of" in text
    for f in ("report.md", "samples.png", "per_class_accuracy.png", "generator/generator.json"):
        assert (tmp_path / f).exists(), f
    seed0 = json.loads((tmp_path / "arms" / "control" / "seed0" / "metrics.json").read_text())["metrics"]
    assert result["per_seed"]["control"]["balanced"][0] == pytest.approx(100 * seed0["balanced"])
