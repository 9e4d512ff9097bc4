"""Properties of BalancedSyntheticSampler: composition, bounds, determinism, sharding."""
import numpy as np
import pytest
import torch

from cbdm_aug.plugin.sampler import BalancedSyntheticSampler

NAMES = ["head", "mid", "tail"]


class Labelled:
    """Only what the sampler reads: labels, is_synthetic, class_names."""

    def __init__(self, real_counts, syn_counts, names=NAMES):
        real = np.repeat(np.arange(len(real_counts)), real_counts)
        syn = np.repeat(np.arange(len(syn_counts)), syn_counts)
        self.labels = np.concatenate([real, syn])
        self.is_synthetic = np.r_[np.zeros(len(real), bool), np.ones(len(syn), bool)]
        self.class_names = names

    def __len__(self):
        return len(self.labels)


@pytest.fixture
def ds():
    return Labelled([400, 60, 8], [0, 340, 392])


def test_the_default_epoch_gives_every_class_as_many_places_as_the_largest_real_class(ds):
    s = BalancedSyntheticSampler(ds)
    assert len(s) == 3 * 400
    assert np.bincount(ds.labels[s.plan()]).tolist() == [400, 400, 400]


def test_drawn_class_frequencies_match_the_target_within_five_sigma(ds):
    target = {"head": 0.5, "mid": 0.3, "tail": 0.2}
    s = BalancedSyntheticSampler(ds, target=target, num_samples=3000)
    p = np.array([0.5, 0.3, 0.2])
    assert np.bincount(ds.labels[s.plan()], minlength=3).tolist() == (p * 3000).astype(int).tolist()
    m = 500  # the first batches of the shuffled plan are a random draw from the target
    for epoch in range(5):
        counts = np.bincount(ds.labels[s.plan(epoch)[:m]], minlength=3)
        assert np.all(np.abs(counts - m * p) <= 5 * np.sqrt(m * p * (1 - p)))


def test_real_images_come_before_synthetic_ones_within_each_class(ds):
    s = BalancedSyntheticSampler(ds, num_samples=3 * 200)
    plan = s.plan()
    for c in range(3):
        mine = plan[ds.labels[plan] == c]
        real = mine[~ds.is_synthetic[mine]]
        n_real = int((ds.is_synthetic == False)[ds.labels == c].sum())  # noqa: E712
        assert len(np.unique(real)) == min(200, n_real)
        if (ds.is_synthetic[mine]).any():
            assert len(np.unique(real)) == n_real  # synthetic only once every real image is in
        assert len(np.unique(mine[ds.is_synthetic[mine]])) == (ds.is_synthetic[mine]).sum()


def test_the_overall_synthetic_share_bound_holds_and_real_images_are_repeated_beyond_it(ds):
    s = BalancedSyntheticSampler(ds, max_synthetic_share=0.25)
    plan = s.plan()
    assert ds.is_synthetic[plan].mean() <= 0.25
    tail = plan[ds.labels[plan] == 2]
    assert len(tail) == 400 and len(np.unique(tail[~ds.is_synthetic[tail]])) == 8


def test_the_per_class_synthetic_share_bound_holds(ds):
    bound = {"mid": 0.1, "tail": 0.5}
    s = BalancedSyntheticSampler(ds, max_synthetic_share=bound)
    plan = s.plan()
    for c, b in [(1, 0.1), (2, 0.5)]:
        assert ds.is_synthetic[plan[ds.labels[plan] == c]].mean() <= b


@pytest.mark.parametrize("num_samples", [1200, 1201, 1203])
def test_ranks_get_disjoint_equally_long_shards_whose_union_is_the_epoch_plan(ds, num_samples):
    # no real floor: at 1200 places the plan then holds every index of ds exactly once
    shards = [BalancedSyntheticSampler(ds, num_samples=num_samples, num_replicas=3, rank=r, seed=7,
                                       min_real_share=None) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    lists = [list(s) for s in shards]
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == len(shards[0])
    plan = shards[0].plan()
    padded = np.resize(plan, 3 * len(lists[0]))  # padding repeats the start of the plan
    assert np.array_equal(np.sort(np.concatenate(lists)), np.sort(padded))
    if num_samples == 1200:  # every index of ds once: shards must not share any
        assert len(set(plan.tolist())) == 1200
        assert sum(map(len, map(set, lists))) == len(set().union(*map(set, lists))) == 1200


def test_drop_last_trims_instead_of_padding(ds):
    s = BalancedSyntheticSampler(ds, num_samples=1201, num_replicas=2, rank=1, drop_last=True)
    assert len(list(s)) == len(s) == 600


def test_same_seed_and_epoch_give_the_same_order_and_a_new_epoch_a_new_order(ds):
    a, b = BalancedSyntheticSampler(ds, seed=3), BalancedSyntheticSampler(ds, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    np.random.seed(0)
    torch.manual_seed(0)
    first = list(a)
    np.random.seed(1)
    torch.manual_seed(1)
    assert first == list(b)
    b.set_epoch(2)
    assert first != list(b)
    assert first != list(BalancedSyntheticSampler(ds, seed=4))


def test_the_sampler_leaves_the_global_rngs_untouched(ds):
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    list(BalancedSyntheticSampler(ds))
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_real_only_dataset_with_targets_is_oversampled_to_balance():
    class Targets(torch.utils.data.Dataset):
        targets = [0] * 30 + [1] * 3
        classes = ["a", "b"]

        def __len__(self):
            return 33

    s = BalancedSyntheticSampler(Targets(), target={"b": 1, "a": 1})
    plan = s.plan()
    assert len(plan) == 60 and np.bincount(np.array(Targets.targets)[plan]).tolist() == [30, 30]
    assert set(plan[plan >= 30].tolist()) == {30, 31, 32}


def test_bad_arguments_get_errors_that_name_the_value(ds):
    with pytest.raises(ValueError, match="'nope'"):
        BalancedSyntheticSampler(ds, target={"nope": 1.0})
    with pytest.raises(ValueError, match="uniform"):
        BalancedSyntheticSampler(ds, target="balanced")
    with pytest.raises(ValueError, match="one value per class"):
        BalancedSyntheticSampler(ds, target=[1, 2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BalancedSyntheticSampler(ds, max_synthetic_share=1.5)
    with pytest.raises(ValueError, match="'tail'"):
        BalancedSyntheticSampler(Labelled([5, 5, 0], [0, 0, 5]), max_synthetic_share=0.5)
    with pytest.raises(TypeError, match="labels"):
        BalancedSyntheticSampler(object())


def test_lightning_wrapping_a_single_replica_sampler_gives_disjoint_shards_and_forwards_set_epoch(ds):
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    inner = [BalancedSyntheticSampler(ds, num_replicas=1, rank=0, seed=1, min_real_share=None) for _ in range(2)]
    wrapped = [DistributedSamplerWrapper(s, num_replicas=2, rank=r, shuffle=False) for r, s in enumerate(inner)]
    ours = [BalancedSyntheticSampler(ds, num_replicas=2, rank=r, seed=1, min_real_share=None) for r in range(2)]
    for w, o in zip(wrapped, ours):
        w.set_epoch(3)
        o.set_epoch(3)
    assert inner[0].epoch == 3
    assert [list(w) for w in wrapped] == [list(o) for o in ours]  # the same shards either way
    assert not set(list(wrapped[0])) & set(list(wrapped[1]))


def test_the_real_floor_keeps_each_class_real_share_and_adds_synthetic_images_beside_them(ds):
    """ds: tail has 8 real and 392 synthetic images; its 400 places get at least 200 real draws."""
    for f in (0.5, 0.75, 1.0):
        s = BalancedSyntheticSampler(ds, min_real_share=f)
        q = s.quotas()
        assert np.all(q["real"] + q["repeated"] >= np.ceil(f * q["total"]))
        plan = s.plan()
        tail = plan[ds.labels[plan] == 2]
        assert (~ds.is_synthetic[tail]).sum() >= f * len(tail)
        assert len(np.unique(tail[ds.is_synthetic[tail]])) == (ds.is_synthetic[tail]).sum()  # each once
    assert BalancedSyntheticSampler(ds, min_real_share=1.0).quotas()["synthetic"].sum() == 0
    off = BalancedSyntheticSampler(ds, min_real_share=None).quotas()
    assert off["synthetic"].tolist() == [0, 340, 392] and off["repeated"][2] == 0  # the old fill


def test_the_real_floor_by_class_name_and_its_errors(ds):
    q = BalancedSyntheticSampler(ds, min_real_share={"tail": 0.9}).quotas()
    assert q["synthetic"][1] == 340 and q["synthetic"][2] == 40
    with pytest.raises(ValueError, match=r"min_real_share must lie in \[0, 1\]"):
        BalancedSyntheticSampler(ds, min_real_share=1.5)
    with pytest.raises(ValueError, match="'nope'"):
        BalancedSyntheticSampler(ds, min_real_share={"nope": 0.5})
    # a class with no real image is exempt: it is filled with its synthetic images
    q = BalancedSyntheticSampler(Labelled([5, 5, 0], [0, 0, 5]), min_real_share=0.5).quotas()
    assert q["synthetic"][2] == q["total"][2]


def test_the_sampler_composes_its_epochs_with_the_pure_mixing_rule(ds, monkeypatch):
    from cbdm_aug import mixing

    s = BalancedSyntheticSampler(ds, num_samples=1000, max_synthetic_share={"mid": 0.3}, min_real_share=0.2, seed=3)
    for epoch in range(3):
        rng = np.random.default_rng([3, epoch])
        comp = mixing.compose(s.target, 1000, s.real_counts, s.synthetic_counts, rng,
                              real_floor=np.array([0.2, 0.2, 0.2]), share_class=np.array([1.0, 0.3, 1.0]))
        assert all(np.array_equal(comp[k], v) for k, v in s.quotas(epoch).items())
        order = np.lexsort((ds.is_synthetic, ds.labels))
        assert np.array_equal(mixing.fill(comp, order, s.real_counts, s.synthetic_counts, rng), s.plan(epoch))
    calls = []
    monkeypatch.setattr(mixing, "compose", lambda *a, **k: calls.append(a) or {"total": np.array([1, 0, 0])})
    assert s.quotas(0)["total"].tolist() == [1, 0, 0] and len(calls) == 1  # no other copy of the rule
