"""Per-class pictures on a budget (cbdm_aug.pictures) and the per-class plot past 20 classes."""
import numpy as np
from PIL import Image

from cbdm_aug.classify.report import binned_accuracy, per_class_figure, size_bins
from cbdm_aug.pictures import MAX_GRID_CLASSES, RAREST_ALWAYS, classes_to_show, labelled_rows


def _exp(n_classes, top, rho):
    return [int(top * (1 / rho) ** (i / (n_classes - 1))) for i in range(n_classes)]


def test_up_to_the_limit_every_class_is_shown_largest_first():
    assert classes_to_show([5, 10, 3]) == [1, 0, 2]


def test_a_thousand_classes_show_the_rarest_the_largest_and_sizes_in_between():
    counts = _exp(1000, 100, 100)
    shown = classes_to_show(counts)
    assert len(shown) == MAX_GRID_CLASSES and len(set(shown)) == len(shown)
    by_size = np.argsort(-np.asarray(counts), kind="stable")
    assert set(by_size[-RAREST_ALWAYS:]) <= set(shown) and by_size[0] == shown[0]
    sizes = [counts[c] for c in shown]
    assert sizes == sorted(sizes, reverse=True)
    assert len({s for s in sizes if 1 < s < 100}) >= 8  # sizes in between, not only the two ends


def test_a_grid_of_a_thousand_classes_stays_readable(tmp_path):
    counts = _exp(1000, 100, 100)
    rng = np.random.default_rng(0)
    rows = [(f"class {c} ({counts[c]})", rng.integers(0, 255, (8, 16, 16, 1), np.uint8)) for c in classes_to_show(counts)]
    w, h = labelled_rows(rows, tmp_path / "g.png", header="a note", per_row=8)
    assert Image.open(tmp_path / "g.png").size == (w, h) and h <= 4000 and w <= 4000


def test_size_bins_cover_every_class_once_on_a_log_scale():
    counts = _exp(100, 1000, 100)
    bins = size_bins(counts)
    covered = [sum(lo <= n <= hi for lo, hi in bins) for n in counts]
    assert covered == [1] * 100
    assert all(hi / lo < 4 for lo, hi in bins if lo > 1)
    acc = [0.5] * 50 + [1.0] * 50
    rows = binned_accuracy(counts, acc, bins)
    assert sum(r["classes"] for r in rows) == 100
    assert rows[-1]["mean"] == 50.0 and rows[0]["mean"] == 100.0  # the largest classes sit in the last bin


def test_the_per_class_plot_reads_plain_numbers_and_names_up_to_20_classes():
    counts = [30, 25, 22, 21, 20]
    fig = per_class_figure([("a", counts, [0.5, 0.6, 0.7, 0.8, 0.9])], {"few": 20}, "t", ["w", "x", "y", "z", "q"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)]
    assert not any("10^" in t or "times" in t or "×" in t for t in labels), labels
    assert {t.get_text() for t in ax.texts} == {"w", "x", "y", "z", "q"}


def test_past_20_classes_the_plot_is_binned_with_intervals():
    counts = _exp(100, 1000, 100)
    fig = per_class_figure([("a", counts, list(np.linspace(0.2, 1, 100)))], None, "t", [str(i) for i in range(100)])
    ax = fig.axes[0]
    assert not ax.texts  # no names on 100 points
    assert len(ax.lines) <= 3 * len(size_bins(counts))  # a point per bin (and its error bar), not per class
    assert "size bins" in ax.get_xlabel()


def test_a_binned_interval_is_cut_to_what_an_accuracy_can_be():
    counts = _exp(100, 1000, 100)
    acc = [0.0] * 9 + [0.2]  # near 0 in every bin: a t-interval reaches below 0
    acc = (acc * 10)[:100]
    assert min(r["mean"] - r["ci95"] for r in binned_accuracy(counts, acc, size_bins(counts))) < 0
    fig = per_class_figure([("a", counts, acc)], None, "t")
    lows = [seg[:, 1].min() for c in fig.axes[0].collections for seg in c.get_segments()]
    assert lows and min(lows) >= 0.0


def test_a_decade_wide_range_of_class_sizes_gets_more_than_one_axis_label():
    counts = [140, 97, 68, 47, 33, 23, 14]  # the demo's 140 -> 14: decades alone label only "100"
    fig = per_class_figure([("a", counts, [0.9] * 7)], None, "t")
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
    assert {"20", "50", "100"} <= set(shown), shown


def test_the_sample_grid_headings_fit_and_a_class_that_needed_no_top_up_is_not_none_kept(tmp_path):
    from PIL import Image

    from cbdm_aug.cache.writer import write_cache
    from cbdm_aug.pipeline.report import sample_grid

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (13, 8, 8, 1), dtype=np.uint8)
    labels = np.array([0] * 10 + [1] * 3)
    cache = tmp_path / "c.h5"
    write_cache(cache, rng.integers(0, 255, (4, 8, 8, 1), dtype=np.uint8), [1] * 4, class_names=["head", "tail"])
    sample_grid(images, labels, cache, ["head", "tail"], tmp_path / "s.png", wanted={"tail"})
    grid = np.asarray(Image.open(tmp_path / "s.png"))
    assert (grid[:, -3:] == 255).all()  # the right edge is blank: no heading runs off the picture
    sample_grid(images, labels, cache, ["head", "tail"], tmp_path / "all.png")  # every class asked for images
    assert Image.open(tmp_path / "all.png").size[0] > Image.open(tmp_path / "s.png").size[0]  # the longer heading
