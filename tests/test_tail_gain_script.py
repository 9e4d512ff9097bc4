"""benchmarks/tail_gain.py's pure parts: the folder-pair input (CIFAR-10's JPEG layout), the arm names and
the default arm's generator comparisons. The benchmark itself is hours of CPU and is not run here."""
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import tail_gain  # noqa: E402


def _folder(root: Path, counts: dict[str, int], size=8):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i:04d}.jpg")


def test_a_folder_pair_becomes_one_balanced_npz_once(tmp_path):
    _folder(tmp_path / "d" / "train", {"cat": 3, "dog": 2})
    _folder(tmp_path / "d" / "test", {"cat": 2, "dog": 2})
    out = tail_gain.folder_pair_npz(tmp_path / "d", tmp_path / "data.npz")
    with np.load(out) as z:
        assert z["x_train"].shape == (5, 8, 8, 3) and z["x_test"].shape == (4, 8, 8, 3)
        assert list(z["y_train"]) == [0, 0, 0, 1, 1] and list(z["class_names"]) == ["cat", "dog"]
    mtime = out.stat().st_mtime_ns
    assert tail_gain.folder_pair_npz(tmp_path / "d", out) == out and out.stat().st_mtime_ns == mtime


def test_a_folder_pair_with_other_test_classes_is_refused(tmp_path):
    _folder(tmp_path / "d" / "train", {"cat": 2, "dog": 2})
    _folder(tmp_path / "d" / "test", {"cat": 2, "emu": 2})
    with pytest.raises(SystemExit, match="differ"):
        tail_gain.folder_pair_npz(tmp_path / "d", tmp_path / "data.npz")
    assert not (tmp_path / "data.npz").exists()


def test_arm_names_and_the_default_arms_comparisons():
    args = Namespace(guidance=1.0, top_up=500, synthetic_weight=0.3)
    s = tail_gain.parse_arm("cbdm-sqrt-1200:g2:w1:top1000:share0.5:nofilter:nora", args)
    assert (s["gen"], s["guidance"], s["weight"], s["top_up"], s["share"], s["filter"], s["randaugment"]) == \
        ("cbdm-sqrt-1200", 2.0, 1.0, 1000, 0.5, False, False)
    d = tail_gain.parse_arm("ddpm-1200:notail", args)
    assert d["notail"] and not s["notail"] and not d["gate"]
    g = tail_gain.parse_arm("cbdm-sqrt-a12-1200:w1:gate", args)  # 'gate' is not a guidance 'g<w>'
    assert g["gate"] and g["guidance"] == 1.0 and g["gen"] == "cbdm-sqrt-a12-1200"
    assert (d["guidance"], d["weight"], d["top_up"], d["share"], d["filter"], d["randaugment"]) == \
        (1.0, 0.3, 500, None, True, True)  # the defaults
    e = tail_gain.parse_arm("cbdm-sqrt-a12-1200:w1:gate:floor0.5:evidence", args)  # issue 26's levers
    assert e["floor"] == 0.5 and e["evidence"] and e["gate"] and d["floor"] is None and not d["evidence"]
    assert tail_gain.ARM.synthetic_weight == 1.0  # the script's defaults are `cbdm-aug run`'s arm
    with pytest.raises(SystemExit, match="unknown arm option"):
        tail_gain.parse_arm("cbdm-1200:bogus", args)
    with pytest.raises(SystemExit, match="unknown arm option 'head0.7'"):  # real-guided starts were removed
        tail_gain.parse_arm("cbdm-1200:head0.7", args)
    assert tail_gain.compared_arms("cbdm-sqrt-1200:w1", "ddpm,ddpm-bal") == \
        {"ddpm": "ddpm-1200:w1", "ddpm-bal": "ddpm-bal-1200:w1"}
    assert tail_gain.compared_arms("cbdm-sqrt-1200:w1", "") == {}
    assert tail_gain.compared_arms("cbdm-sqrt-a12-1200:w1:gate", "ddpm-sqrt-a12") == \
        {"ddpm-sqrt-a12": "ddpm-sqrt-a12-1200:w1:gate"}
    assert tail_gain.lt_counts(100, 5000) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _args(argv=()):
    return tail_gain._parser().parse_args(list(argv))


def test_the_default_arm_is_runs_arm_built_from_its_settings():
    s = tail_gain.parse_arm(tail_gain.default_arm(), _args())
    cache, arm, fit = tail_gain.CACHE, tail_gain.ARM, tail_gain.FIT
    # the MNIST-LT rows at run's default are measured through `cbdm-aug run` itself (benchmarks/own_folders.py,
    # folders mnist-lt-3000 and mnist-lt-5000), which records the default in this script's words
    measured = json.loads((tail_gain.ROOT / "benchmarks/results/own_folders_mnist_lt_3000.json").read_text())
    assert tail_gain.default_arm() == measured["default_arm"], \
        "run's default moved: measure it (benchmarks/own_folders.py --folders mnist-lt-3000) and update docs/decisions.md"
    assert (s["weight"], s["floor"], s["evidence"], s["gate"], s["filter"], s["randaugment"], s["ra_real_only"]) == \
        (arm.synthetic_weight, arm.min_real_share, arm.evidence, cache.max_copy_share is not None, True, True,
         not arm.randaugment_synthetic)
    assert (s["guidance"], s["top_up"]) == (cache.guidance, cache.top_up)
    assert _args().gate_share == cache.max_copy_share
    family, ladder = tail_gain.default_generator()
    assert s["gen"] == f"{family}-{tail_gain.CPU_GEN_STEPS}"
    assert ladder == ["--tau", "1", "--balance-power", f"{fit.balance_power:g}", "--augment", f"{fit.augment_p:g}"]


def test_a_changed_default_changes_the_default_arm_with_no_string_typed_by_hand(monkeypatch):
    from cbdm_aug.pipeline.settings import ArmSettings, CacheSettings, GeneratorSettings

    monkeypatch.setattr(tail_gain, "FIT", GeneratorSettings(balance_power=0.0, augment_p=0.3))
    monkeypatch.setattr(tail_gain, "ARM", ArmSettings(synthetic_weight=0.3, min_real_share=None, evidence=False))
    monkeypatch.setattr(tail_gain, "CACHE", CacheSettings(max_copy_share=None, filter=False))
    assert tail_gain.default_arm() == f"cbdm-bal-a30-{tail_gain.CPU_GEN_STEPS}:w0.3:nofilter:rareal"
    s = tail_gain.parse_arm(tail_gain.default_arm(), _args())
    assert (s["weight"], s["filter"], s["gate"], s["floor"], s["evidence"]) == (0.3, False, False, None, False)
    monkeypatch.setattr(tail_gain, "CACHE", CacheSettings(filter_confidence=0.9))
    with pytest.raises(SystemExit, match="no arm option names"):  # refused, not measured as something else
        tail_gain.default_arm()


def test_print_default_gives_the_shell_scripts_the_arm_and_its_generator(capsys):
    tail_gain.main(["--print-default"])
    out = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    family, ladder = tail_gain.default_generator()
    assert out["DEFAULT_ARM"] == tail_gain.default_arm() and out["DEFAULT_GEN"] == family
    assert out["DEFAULT_GEN_STEPS"] == str(tail_gain.CPU_GEN_STEPS) and out["DEFAULT_GEN_OPTS"] == f"'{' '.join(ladder)}'"
    script = (Path(tail_gain.__file__).parent / "run_tail_gain_issue26.sh").read_text()
    assert "NEW=$DEFAULT_ARM\n" in script  # not a hand-typed token
