"""filter_cache with a stub classifier: low-confidence images and near-copies go, the rest stay in order."""
import json

import h5py
import numpy as np
import torch
from helpers import DARK_BRIGHT as NAMES
from helpers import stub_space

from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.cache.writer import write_cache
from cbdm_aug.evaluate.features import FeatureSpace
from cbdm_aug.evaluate.filter import filter_cache, kept_line, pass_counts, removed_table


def test_filter_drops_low_confidence_images_and_near_copies_and_records_why(tmp_path):
    rng = np.random.default_rng(0)
    dark = lambda n: rng.integers(0, 80, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    bright = lambda n: rng.integers(176, 256, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    train_x = np.concatenate([dark(10), bright(10)])
    train_y = np.repeat([0, 1], 10)
    good_dark, good_bright = dark(3), bright(3)
    images = np.concatenate([good_dark, bright(2), train_x[[4]], good_bright, dark(1)])
    labels = np.array([0] * 6 + [1] * 4)  # 2 bright images labelled dark, 1 dark labelled bright, 1 copy
    write_cache(tmp_path / "syn.h5", images, labels, class_names=NAMES, seeds=np.arange(10) + 50)

    record = filter_cache(tmp_path / "syn.h5", tmp_path / "out.h5", stub_space(), train_x, train_y,
                          confidence=0.9, progress=False)
    assert record["removed_low_confidence"] == {"dark": 2, "bright": 1}
    assert record["removed_near_copy"] == {"dark": 1, "bright": 0}
    assert record["kept"] == {"dark": 3, "bright": 3}
    assert record["removed_both"] == {"dark": 0, "bright": 0}
    assert "feature_quantile" not in record["criteria"] and "removed_far_from_class" not in record
    header = removed_table(record).splitlines()[0]
    assert [c in header for c in ("not recognised", "near-copy", "in both", "kept")] == [True] * 4
    with SyntheticCache(tmp_path / "out.h5") as syn:
        kept = np.stack([syn[i][0] for i in range(len(syn))])
        assert np.array_equal(kept, np.concatenate([good_dark, good_bright]))
        assert syn.seeds.tolist() == [50, 51, 52, 56, 57, 58]
        assert syn.attrs["plan"]["counts"] == {"dark": 3, "bright": 3}
    with h5py.File(tmp_path / "out.h5") as f:
        assert json.loads(f.attrs["filter"])["criteria"]["classifier_confidence_min"] == 0.9


def test_the_gate_drops_every_image_of_a_class_whose_samples_are_mostly_near_copies(tmp_path):
    rng = np.random.default_rng(1)
    dark = lambda n: rng.integers(0, 80, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    bright = lambda n: rng.integers(176, 256, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    train_x = np.concatenate([dark(10), bright(3)])
    train_y = np.array([0] * 10 + [1] * 3)
    # 'bright' (3 real images): 3 of its 4 samples are copies of them; 'dark': 1 copy of 4
    images = np.concatenate([dark(3), train_x[[0]], train_x[[10, 11, 12]], bright(1)])
    labels = np.array([0] * 4 + [1] * 4)
    write_cache(tmp_path / "syn.h5", images, labels, class_names=NAMES)

    record = filter_cache(tmp_path / "syn.h5", tmp_path / "out.h5", stub_space(), train_x, train_y,
                          confidence=0.9, max_copy_share=0.5, progress=False)
    assert record["removed_near_copy"] == {"dark": 1, "bright": 3}
    assert record["removed_gated"] == {"dark": 0, "bright": 1}  # the one novel-looking 'bright' goes too
    assert record["kept"] == {"dark": 3, "bright": 0}
    gate = record["gate"]
    assert gate["bright"]["used"] is False and gate["dark"]["used"] is True
    assert gate["bright"]["copy_share"] == 0.75 and gate["bright"]["real"] == 3
    assert gate["bright"]["why"].startswith("bright: 3 real images; 75% of its 4 generated images were near-copies")
    assert gate["bright"]["why"].endswith("none used (the gate drops a class at 50% or more)")
    # copies sit near 0 on the spacing scale, fresh samples near or above 1
    assert gate["bright"]["spacing_ratio"] < 0.1 < gate["dark"]["spacing_ratio"]
    # without the gate the class keeps what the filter kept, and the gate is still reported
    record = filter_cache(tmp_path / "syn.h5", tmp_path / "all.h5", stub_space(), train_x, train_y,
                          confidence=0.9, progress=False)
    assert record["kept"] == {"dark": 3, "bright": 1} and record["gate"]["bright"]["used"] is True


def test_near_copies_are_found_per_class_with_shuffled_training_labels_and_more_classes_than_a_batch_holds(tmp_path):
    # training labels in random order, a batch smaller than the cache: each class's vectors are
    # looked up by its own group, never another class's
    rng = np.random.default_rng(1)
    C = 7
    train_y = rng.permutation(np.repeat(np.arange(C), 5))
    train_x = rng.integers(0, 256, (len(train_y), 8, 8, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(C), 4)
    images = rng.integers(0, 256, (len(labels), 8, 8, 1), dtype=np.uint8)
    copies = {}
    for c in range(C):  # class c's first c % 3 images are copies of its own training images
        own = np.flatnonzero(train_y == c)
        for j in range(c % 3):
            images[4 * c + j] = train_x[own[j]]
        copies[str(c)] = c % 3
    images[4 * 6 + 3] = train_x[np.flatnonzero(train_y == 0)[0]]  # a copy of another class's image: not a copy
    names = [str(c) for c in range(C)]
    write_cache(tmp_path / "syn.h5", images, labels, class_names=names, seeds=np.arange(len(labels)))

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

        def forward(self, x):
            return torch.zeros(len(x), C) + self.w

    net = Uniform()
    space = FeatureSpace("classifier", "uniform stub", net, lambda x: torch.from_numpy(x).float(), C,
                         classifier=net, class_names=names)
    record = filter_cache(tmp_path / "syn.h5", tmp_path / "out.h5", space, train_x, train_y, confidence=0.0,
                          progress=False, batch_size=5)
    assert record["removed_near_copy"] == copies
    assert record["gate"]["2"]["copy_share"] == 0.5


def _weak_100_class_case():
    """100 classes of noisy 8x8 patterns (30 -> 5 images a class), a linear classifier trained for 3
    epochs (about 20% balanced accuracy, softmax peaks near 0.02), held-out real images (20 a class) and
    generated ones drawn like the real ones (60 a class)."""
    C, rng = 100, np.random.default_rng(0)
    mu = rng.normal(128, 14, (C, 8, 8, 1))
    draw = lambda y: np.clip(mu[y] + rng.normal(0, 40, (len(y), 8, 8, 1)), 0, 255).astype(np.uint8)  # noqa: E731
    counts = np.round(30 * (5 / 30) ** (np.arange(C) / (C - 1))).astype(int)
    train_y = np.repeat(np.arange(C), counts)
    train_x, held_y, gen_y = draw(train_y), np.repeat(np.arange(C), 20), np.repeat(np.arange(C), 60)
    held_x, gen_x = draw(held_y), draw(gen_y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, C))
    prepare = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # noqa: E731
    weight = torch.tensor(counts.mean() / counts, dtype=torch.float32)  # class-balanced, as the filter's is
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = prepare(train_x), torch.as_tensor(train_y)
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(32):
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    names = [f"c{i}" for i in range(C)]
    space = FeatureSpace("classifier", "weak linear stub", net, prepare, C, classifier=net, class_names=names)
    recall = (space.predict_proba(held_x).argmax(1).numpy() == held_y).reshape(C, -1).mean(1)
    return names, space, (train_x, train_y), (gen_x, gen_y), recall, (held_x, held_y)


def test_at_100_classes_a_weak_classifier_keeps_images_of_every_class_it_recognises_better_than_chance(tmp_path):
    names, space, (train_x, train_y), (gen_x, gen_y), recall, (held_x, held_y) = _weak_100_class_case()
    assert 0.1 < recall.mean() < 0.4  # weak, yet better than chance (1%) on most classes
    write_cache(tmp_path / "syn.h5", gen_x, gen_y, class_names=names)

    record = filter_cache(tmp_path / "syn.h5", tmp_path / "out.h5", space, train_x, train_y, progress=False)
    kept = np.array([record["kept"][n] for n in names])
    # recognised better than chance, by the filter's own criterion: at least 5 of a class's 20 held-out real
    # images score above its threshold, where chance (the 1% false-positive share) passes 1 in 100 (a class
    # at 3 of 20 can sit just above its threshold and its 60 generated images just below it)
    t = np.array([record["criteria"]["classifier_thresholds"][n] for n in names])
    own = space.predict_proba(held_x).numpy()[np.arange(len(held_y)), held_y]
    seen = np.bincount(held_y[own >= t[held_y]], minlength=len(names)) >= 5
    assert seen.sum() >= 50 and (kept[seen] > 0).all()
    assert (kept[recall >= 0.1] > 0).all()  # and every class it puts first for 2 or more of its 20
    assert record["criteria"]["classifier_threshold_rule"].startswith("its class's probability above all but 1%")
    assert len(record["criteria"]["classifier_thresholds"]) == 100 and record["criteria"]["classifier_rank"] is None

    old = filter_cache(tmp_path / "syn.h5", tmp_path / "old.h5", space, train_x, train_y, confidence=0.5,
                       top_share=None, false_positive_share=None, progress=False)  # the fixed 0.5 of long ago
    assert sum(old["kept"].values()) < 0.05 * len(gen_y)
    line = kept_line(old, "it recognises 20% of the real training images")
    assert line.startswith(f"the filter kept {sum(old['kept'].values())} of {len(gen_y):,} generated images (")
    assert "classes: " in line and "its classifier did not recognise them as their class (it recognises 20%" in line


def test_pass_counts_measure_a_first_batch_without_writing_anything(tmp_path):
    rng = np.random.default_rng(1)
    dark = lambda n: rng.integers(0, 80, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    bright = lambda n: rng.integers(176, 256, (n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    train_x, train_y = np.concatenate([dark(10), bright(10)]), np.repeat([0, 1], 10)
    write_cache(tmp_path / "first.h5", np.concatenate([dark(4), dark(3)]), np.array([0] * 4 + [1] * 3),
                class_names=NAMES)  # every "bright" image is dark: none can pass
    before = sorted(p.name for p in tmp_path.iterdir())
    assert pass_counts(tmp_path / "first.h5", stub_space(), train_x, train_y) == {"dark": (4, 4), "bright": (3, 0)}
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_each_classs_threshold_lets_through_at_most_its_share_of_the_other_classes_each_weighing_the_same():
    from cbdm_aug.evaluate.criteria import class_thresholds

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [1000, 100, 50])  # a head class, a middle one and a small one
    p = rng.dirichlet(np.ones(3), len(y))
    for share in (0.01, 0.05, 0.2):
        t = class_thresholds(p, y, share)
        for c in range(3):
            above = [(p[y == k, c] >= t[c]).mean() for k in range(3) if k != c]  # each other class's own share
            assert np.mean(above) <= share + 1e-12
            assert np.mean(above) > share - 0.011  # and within one image of it (a 50-image class's image: 1/100)
    assert class_thresholds(p[y == 0], y[y == 0], 0.01)[0] == 0.0  # no other class's images to compare: all pass


def test_a_rare_class_the_classifier_never_puts_first_still_passes_where_it_scores_above_the_others_images():
    """A class-balanced classifier trained on 3 images seldom puts the class first, even for its real images:
    the rank rule dropped every image of such a class (on our CIFAR-10 folder it passed 1-2% of the real
    held-out images of the 3-9-image classes, benchmarks/results/filter_fairness.md). The per-class threshold
    keeps an image that scores as the class above what the other classes' real images score."""
    from cbdm_aug.evaluate.criteria import class_thresholds, recognised

    rng = np.random.default_rng(1)
    head, rare = 0, 1
    y = np.repeat([head, rare], [500, 3])
    p_rare_of = lambda n, lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    real = np.where(y == rare, p_rare_of(len(y), 0.30, 0.45), p_rare_of(len(y), 0.0, 0.2))
    p = np.stack([1 - real, real], 1)  # the rare class is never first, for its own images neither
    gen = p_rare_of(40, 0.10, 0.45)  # generated images of the rare class, some no better than the head's images
    p_gen, labels = np.stack([1 - gen, gen], 1), np.full(40, rare)
    assert not recognised(p_gen, labels, 0.1, None).any()  # the rank rule: none
    kept = recognised(p_gen, labels, None, None, class_thresholds(p, y, 0.01))
    assert kept[gen > 0.2].all() and not kept[gen < 0.19].any()  # the head's images reach 0.2 at most
    assert 0 < kept.sum() < len(kept)


def test_the_filter_classifier_can_be_trained_with_the_arms_randaugment(tmp_path):
    """``CacheSettings.filter_augment="randaugment"`` reaches the filter classifier's own recipe."""
    import yaml

    from cbdm_aug.evaluate.features import train_classifier_space

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (24, 8, 8, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 8)
    train_classifier_space(images, labels, ["a", "b", "c"], tmp_path / "ra", epochs=1, progress=False, device="cpu",
                           augment="randaugment")
    train_classifier_space(images, labels, ["a", "b", "c"], tmp_path / "none", epochs=1, progress=False, device="cpu")
    read = lambda d: yaml.safe_load((tmp_path / d / "recipe.yaml").read_text())["data"]["augment"]  # noqa: E731
    assert (read("ra"), read("none")) == ("randaugment", "none")
