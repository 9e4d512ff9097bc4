"""Two-step generation (``cache.staged``) and the cache stage's stop of a class none of whose first
images pass the filter."""
from dataclasses import replace

import numpy as np
import torch
from helpers import FAST_SAMPLER as FAST
from helpers import TINY_CLASSES as NAMES
from helpers import cache_arrays

from cbdm_aug.cache.generate import generate_cache, image_seed
from cbdm_aug.cache.plan import Plan
from cbdm_aug.cache.reader import SyntheticCache
from cbdm_aug.cache.staged import first_sizes, generate_staged, replace_classes
from cbdm_aug.evaluate.features import FeatureSpace
from cbdm_aug.pipeline.settings import CacheSettings


def test_a_class_that_goes_on_holds_exactly_the_images_of_a_one_step_cache_and_a_stopped_one_its_first_batch(
        tiny_generator, tmp_path):
    plan = Plan("file", tuple(NAMES), (5, 4, 1))
    asked = []

    def only_cat(first):
        asked.append(SyntheticCache(first).counts().tolist())
        return {"cat"}

    out, made = generate_staged(tiny_generator, tmp_path / "staged.h5", plan, FAST, 2, only_cat, batch_size=3,
                                progress=False)
    assert asked == [[2, 2, 1]] and made.counts == (5, 2, 1)
    one = cache_arrays(generate_cache(tiny_generator, tmp_path / "one.h5", plan, FAST, batch_size=3, progress=False))
    images, labels, seeds = cache_arrays(out)
    assert labels.tolist() == [0] * 5 + [1] * 2 + [2]
    assert seeds.tolist() == [image_seed(7, c, k) for c, n in enumerate(made.counts) for k in range(n)]
    keep = np.isin(one[2], seeds)
    assert np.array_equal(images, one[0][keep]) and np.array_equal(seeds, one[2][keep])
    with SyntheticCache(out) as syn:
        assert syn.attrs["plan"]["counts"] == {"cat": 5, "dog": 2, "fish": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "staged.h5"]  # the two parts are gone
    again = generate_staged(tiny_generator, out, plan, FAST, 2, lambda first: asked.append(first), progress=False)
    assert again[1] == made and len(asked) == 1  # a joined cache is reused as it is


def test_replacing_a_class_takes_its_images_from_the_other_cache_and_keeps_every_other_classs(tiny_generator, tmp_path):
    """The evidence's fold cache (issue 34): a proxy's images from the unseen generator, the rest the run's."""
    base = generate_cache(tiny_generator, tmp_path / "base.h5", Plan("file", tuple(NAMES), (3, 2, 2)), FAST,
                          progress=False)
    other = generate_cache(tiny_generator, tmp_path / "other.h5", Plan("file", tuple(NAMES), (0, 4, 0)),
                           replace(FAST, seed=99), progress=False)
    replace_classes(base, other, {1}, tmp_path / "fold.h5")
    b, o, f = (cache_arrays(p) for p in (base, other, tmp_path / "fold.h5"))
    assert f[1].tolist() == [0] * 3 + [1] * 4 + [2] * 2
    assert np.array_equal(f[0][f[1] == 1], o[0]) and np.array_equal(f[2][f[1] == 1], o[2])
    for c in (0, 2):
        assert np.array_equal(f[0][f[1] == c], b[0][b[1] == c])
    with SyntheticCache(tmp_path / "fold.h5") as syn:
        assert syn.attrs["plan"]["counts"] == {"cat": 3, "dog": 4, "fish": 2} and syn.attrs["plan"]["total"] == 9
    replace_classes(base, None, {0, 1, 2}, tmp_path / "empty.h5")  # none of them: an empty cache, still readable
    assert len(cache_arrays(tmp_path / "empty.h5")[1]) == 0


class _OnlyCat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([5.0, 0.0, 0.0]), requires_grad=False)

    def forward(self, x):
        return self.logits.expand(len(x), 3)  # every image is a cat


RANK = {"filter_top_share": 0.1, "filter_false_positive_share": None}  # only cats pass: the stub scores all alike, so
# no class stands above the others' real images, and the per-class threshold would pass none


def test_the_cache_stage_stops_a_class_none_of_whose_first_images_pass_and_says_so(tiny_generator, tmp_path):
    from cbdm_aug.data.sources import LabeledImages
    from cbdm_aug.pipeline.cache_stage import _generate

    net = _OnlyCat()
    space = FeatureSpace("classifier", "only cats", net, lambda x: torch.from_numpy(x).float(), 3,
                         classifier=net, class_names=NAMES)
    rng = np.random.default_rng(0)
    train = LabeledImages(rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8), np.array([0] * 6 + [1] * 3 + [2]),
                    NAMES, "test")
    said = []
    plan = Plan("file", tuple(NAMES), (6, 6, 1))
    made, stopped = _generate(tiny_generator, tmp_path / "generated.h5", plan, CacheSettings(first_batch=2, **RANK), train,
                              lambda: space, said.append, False, tmp_path)
    assert stopped == ["dog"]  # fish has nothing left to make after its first batch
    assert made.counts == (6, 2, 1)
    assert any("none of the first generated images of 1 of 3 classes passed the filter (dog (2): at least 2 a "
               "class, 6.2% of its plan)" in s and "(4 images not made)" in s for s in said)


def test_a_first_batch_grows_with_the_plan_so_a_class_that_would_keep_many_images_is_seldom_stopped():
    """Issue 34: a fixed 16 stopped our CIFAR folder's 9-image truck, whose images pass at about 3% (4 of 128) and
    would have kept about 50 of its 1,710: (0.97)^16 = 60% of the time. A sixteenth of the plan stops it 4% of the
    time, and never costs a stopped class more than a sixteenth of its plan."""
    assert first_sizes([1710, 216, 40, 10, 0], 16, 1 / 16) == (107, 16, 16, 10, 0)
    assert first_sizes([1710, 216], 16) == (16, 16)  # share 0: the fixed batch
    n, = first_sizes([1710], 16, 1 / 16)
    for kept in (48, 100):  # expected images the rest would keep: stopped by chance at most 5%
        assert (1 - kept / 1710) ** n <= 0.05
    assert 0.55 < (1 - 4 / 128) ** 16 < 0.65 and (1 - 4 / 128) ** n < 0.04


def test_the_cache_stage_sizes_each_classs_first_batch_from_its_plan(tiny_generator, tmp_path):
    from cbdm_aug.data.sources import LabeledImages
    from cbdm_aug.pipeline.cache_stage import _generate

    net = _OnlyCat()
    space = FeatureSpace("classifier", "only cats", net, lambda x: torch.from_numpy(x).float(), 3,
                         classifier=net, class_names=NAMES)
    train = LabeledImages(np.zeros((10, 8, 8, 1), np.uint8), np.array([0] * 6 + [1] * 3 + [2]), NAMES, "test")
    said = []
    plan = Plan("file", tuple(NAMES), (6, 12, 3))
    made, stopped = _generate(tiny_generator, tmp_path / "generated.h5", plan,
                              CacheSettings(first_batch=2, first_share=0.25, **RANK), train, lambda: space, said.append, False,
                              tmp_path)
    # first batches max(2, ceil(0.25 n)) = (2, 3, 2); only cats pass, so dog stops at 3 and fish at 2 of its 3
    assert stopped == ["dog", "fish"] and made.counts == (6, 3, 2)
    assert any("(dog (3), fish (2): at least 2 a class, 25.0% of its plan)" in s and "(10 images not made)" in s
               for s in said)
