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
from cbdm_aug.cache.staged import generate_staged, replace_classes
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
    made, stopped = _generate(tiny_generator, tmp_path / "generated.h5", plan, CacheSettings(first_batch=2), train,
                              lambda: space, said.append, False, tmp_path)
    assert stopped == ["dog"]  # fish has nothing left to make after its first batch
    assert made.counts == (6, 2, 1)
    assert any("none of the first 2 generated images of 1 of 3 classes passed the filter (dog)" in s
               and "(4 images not made)" in s for s in said)
