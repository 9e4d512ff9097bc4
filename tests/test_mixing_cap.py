"""``mixing.synthetic_cap``, the most distinct generated images a class can draw in a run, against the
sampler that draws them."""
from types import SimpleNamespace

import numpy as np
import pytest

from cbdm_aug.mixing import synthetic_cap
from cbdm_aug.plugin.sampler import BalancedSyntheticSampler


def _dataset(real, pool):
    labels = np.concatenate([np.repeat(np.arange(len(real)), real), np.repeat(np.arange(len(real)), pool)])
    synthetic = np.concatenate([np.zeros(sum(real), bool), np.ones(pool * len(real), bool)])
    return SimpleNamespace(labels=labels, is_synthetic=synthetic, class_names=[f"c{i}" for i in range(len(real))])


@pytest.mark.parametrize("real, epoch_length, floor", [
    ([40, 17, 9, 3, 1], 70, 0.5),          # epoch length a multiple of the classes: 14 places each
    ([40, 17, 9, 3, 1], 73, 0.5),          # not a multiple: largest-remainder gives 14 or 15
    ([40, 17, 9, 3, 1, 0], 70, 0.3),       # a class with no real image is exempt from the floor
    ([40, 17, 9, 3, 1], 70, None),         # no floor
])
def test_no_class_draws_more_distinct_generated_images_over_the_epochs_than_its_cap(real, epoch_length, floor):
    epochs = 4
    cap = synthetic_cap(real, epoch_length, epochs, floor)
    ds = _dataset(real, pool=200)
    sampler = BalancedSyntheticSampler(ds, num_samples=epoch_length, min_real_share=floor, seed=0)
    drawn = [set() for _ in real]
    most = np.zeros(len(real), np.int64)
    for e in range(epochs):
        plan = sampler.plan(e)
        for c in range(len(real)):
            drawn[c] |= set(plan[(ds.labels[plan] == c) & ds.is_synthetic[plan]].tolist())
        most = np.maximum(most, sampler.quotas(e)["synthetic"])
    assert all(len(d) <= m for d, m in zip(drawn, cap))
    assert (most * epochs == np.array(cap)).all()  # tight: some epoch gives a class its cap's share


def test_at_100_classes_and_4_epochs_a_5_image_class_can_use_216_generated_images():
    assert synthetic_cap([5] * 100, 10_847, 4) == [216] * 100  # issue 34's figure
    assert synthetic_cap([500, 5], 1000, 4) == [0, 4 * 250]     # a class whose real images fill its places gets none


def test_bad_arithmetic_is_a_value_error():
    with pytest.raises(ValueError, match="epochs"):
        synthetic_cap([3, 4], 10, 0)
