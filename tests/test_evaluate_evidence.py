"""Properties of the cross-fitted per-class evidence (cbdm_aug.evaluate.evidence)."""
import json

import numpy as np
import pytest

from cbdm_aug.evaluate.evidence import Decision, assign_folds, cross_fit, decide, effects, tally, write_decisions
from cbdm_aug.mixing import read_shares


def test_folds_are_stratified_and_only_a_one_image_class_is_never_held_out():
    labels = np.repeat([0, 1, 2, 3], [30, 7, 3, 1])
    f = assign_folds(labels, 3, seed=0)
    assert set(f[labels == 3]) == {-1}
    for c, n in ((0, 30), (1, 7), (2, 3)):
        sizes = np.bincount(f[labels == c], minlength=3)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1  # dealt round-robin
    assert np.array_equal(f, assign_folds(labels, 3, seed=0))  # seeded
    assert not np.array_equal(f, assign_folds(labels, 3, seed=1))


def test_tally_counts_confusions_and_effects_are_in_points_of_per_class_recall():
    y = np.array([0, 0, 1, 1, 2])
    without = np.array([0, 1, 1, 0, 2])
    with_ = np.array([0, 0, 0, 0, 2])  # class 0 gets both its own right and takes both of class 1's
    t = tally(y, without, with_, 3)
    assert t["held"].tolist() == [2, 2, 1]
    assert t["without"].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert t["with"].tolist() == [[2, 0, 0], [2, 0, 0], [0, 0, 1]]
    fx = effects(t)
    assert fx["gain"].tolist() == [50.0, -50.0, 0.0]   # class 0: 1 -> 2 of 2; class 1: 1 -> 0 of 2
    assert fx["spill"].tolist() == [50.0, -50.0, 0.0]  # one more of class 1's 2 taken for 0; class 0 no longer loses one to 1
    assert fx["taken"].tolist() == [1, -1, 0] and fx["gained"].tolist() == [1, -1, 0]


def test_a_class_is_used_when_its_images_cost_the_probes_no_recall():
    names = ["head", "helped", "spills", "tiny", "none"]
    held = np.array([100, 10, 10, 0, 10])
    without = np.diag(held).astype(np.int64)
    without[1, 1], without[1, 0] = 5, 5      # helped: 5 of its 10
    without[2, 2], without[2, 0] = 5, 5      # spills: 5 of its 10
    with_ = without.copy()
    with_[1, 1], with_[1, 0] = 7, 3          # helped: +2 of 10 = +20 points
    with_[0, 0], with_[0, 1] = 98, 2         # ... and takes 2 of head's 100: -2 points of head's recall
    with_[2, 2], with_[2, 0] = 6, 4          # spills: +1 of 10 = +10 points
    with_[4, 4], with_[4, 2] = 8, 2          # ... but takes 2 of none's 10: -20 points
    t = {"held": held, "without": without, "with": with_}
    d = decide(names, [300, 30, 30, 3, 30], [0, 100, 100, 100, 0], t, min_judged=5)
    assert d["helped"].used and d["helped"].net == 18.0 and d["helped"].share == 1.0
    assert not d["spills"].used and d["spills"].net == -10.0 and d["spills"].share == 0.0
    assert not d["tiny"].used and not d["tiny"].judged and "too few to judge" in d["tiny"].why
    assert not d["head"].used and "no generated image" in d["head"].why
    assert all(len(e.why.splitlines()) == 1 and e.why.startswith(n) for n, e in d.items())
    assert d["helped"].estimate == d["helped"].net and d["helped"].source == "own"
    assert d["tiny"].source == d["head"].source == "rule" and d["tiny"].estimate is d["tiny"].lo is None


def test_cross_fit_holds_each_image_out_once_and_trains_on_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [12, 6, 2, 1])
    images = rng.integers(0, 255, (len(labels), 4, 4, 1), dtype=np.uint8)
    seen = []

    def probe(npz, with_synthetic, fold, run_dir):
        z = np.load(npz)
        seen.append((fold, with_synthetic, len(z["y_train"]), len(z["y_test"])))
        assert {2, 3} <= set(z["y_train"]) and 3 not in z["y_test"]  # every probe sees every class
        return z["y_test"] if with_synthetic else np.zeros(len(z["y_test"]), np.int64)  # "with" is perfect

    t = cross_fit(images, labels, ["a", "b", "c", "d"], probe, tmp_path, folds=3)
    assert t["held"].tolist() == [12, 6, 2, 0]
    assert sum(h for *_, h in seen) == 2 * 20 and all(tr + h == 21 for _, _, tr, h in seen)
    assert np.diag(t["with"]).tolist() == [12, 6, 2, 0] and np.diag(t["without"]).tolist() == [12, 0, 0, 0]
    assert t["without"][:, 0].tolist() == [12, 6, 2, 0]  # "without" calls everything class 0


def test_a_neighbour_that_takes_a_tiny_classes_held_out_image_is_refused():
    """The 3-image class is not judged, but its held-out images weigh 100/3 points each against the class
    whose generated images take them."""
    held = np.array([30, 3])
    without = np.diag(held).astype(np.int64)
    with_ = without.copy()
    with_[0, 0] = 30
    with_[1, 1], with_[1, 0] = 2, 1              # class 0's images now take one of the tiny class's 3
    d = decide(["big", "tiny"], [30, 3], [100, 100], {"held": held, "without": without, "with": with_}, min_judged=5)
    assert not d["big"].used and d["big"].spill == 33.33 and not d["tiny"].judged


def test_the_per_fold_nets_give_each_judged_class_an_interval_around_its_estimate(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [12, 9, 6])
    images = rng.integers(0, 255, (len(labels), 4, 4, 1), dtype=np.uint8)

    def probe(npz, with_synthetic, fold, run_dir):  # "with" gets class 1 right in folds 0 and 1 only
        y = np.load(npz)["y_test"]
        return np.where((y == 1) & (not with_synthetic or fold == 2), 0, y)

    t = cross_fit(images, labels, ["a", "b", "c"], probe, tmp_path, folds=3)
    assert t["fold_held"].sum(0).tolist() == t["held"].tolist() == [12, 9, 6] and t["fold_net"].shape == (3, 3)
    d = decide(["a", "b", "c"], [12, 9, 6], [5, 5, 5], t, min_judged=5)
    b = d["b"]
    assert b.estimate == b.net == pytest.approx(200 / 3, abs=0.01) and b.lo < b.estimate < b.hi  # 2 folds of 3
    assert d["c"].lo == d["c"].hi == d["c"].estimate == 0  # no fold moved it: a zero-width interval
    assert decide(["a", "b", "c"], [12, 9, 6], [5, 5, 5], {k: t[k] for k in ("held", "with", "without")})["b"].lo is None


def test_a_decision_round_trips_and_an_old_layout_record_still_reads(tmp_path):
    held = np.array([10, 10])
    t = {"held": held, "without": np.diag(held), "with": np.diag(held)}
    d = decide(["x", "y"], [10, 2], [5, 5], t, min_judged=5)
    assert {n: Decision.from_json(json.loads(json.dumps(e.to_json()))) for n, e in d.items()} == d
    old = {"real": 10, "synthetic": 5, "judged": True, "held": 10, "gain": 1.0, "spill": 3.0, "net": -2.0,
           "used": False, "why": "x: ... none used (net < 0)", "share": 0.0}  # a run folder of before issue 31
    e = Decision.from_json(old)
    assert (e.estimate, e.lo, e.hi, e.source, e.used) == (-2.0, None, None, "own", False)
    assert Decision.from_json({**old, "judged": False, "net": None}).source == "rule"
    write_decisions(tmp_path / "decisions.json", d)
    assert read_shares(tmp_path / "decisions.json") == {"x": 1.0, "y": 0.0}
    doc = json.loads((tmp_path / "decisions.json").read_text())
    assert {"estimate", "lo", "hi", "source"} <= set(doc["classes"]["x"])
