"""benchmarks/tail_gain.py's pure parts: the folder-pair input (CIFAR-10's JPEG layout), the arm names and
the default arm's generator comparisons. The benchmark itself is hours of CPU and is not run here."""
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
