"""Generator metrics on features the test builds: FID/KID, improved precision/recall, near-copies."""
import numpy as np
import torch

from cbdm_aug.evaluate import metrics as M


def gaussian(n, d=8, shift=0.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_two_samples_from_one_distribution_give_fid_and_kid_near_zero():
    real, fake = gaussian(2000, seed=0), gaussian(2000, seed=1)
    assert M.fid(real, fake) < 0.1
    kid, _ = M.kid(real, fake, subset_size=500, subsets=20)
    assert abs(kid) < 0.01


def test_a_shifted_sample_gives_a_larger_distance():
    real, same, shifted = gaussian(600, seed=0), gaussian(600, seed=1), gaussian(600, shift=1.0, seed=2)
    assert M.fid(real, shifted) > 20 * max(M.fid(real, same), 0.05)
    assert M.kid(real, shifted, 300, 10)[0] > 10 * max(M.kid(real, same, 300, 10)[0], 0.01)


def test_kid_is_reproducible_with_the_same_seed_and_leaves_the_global_rng_alone():
    real, fake = gaussian(300, seed=0), gaussian(300, shift=0.5, seed=1)
    state = torch.random.get_rng_state()
    assert M.kid(real, fake, 100, 10, seed=3) == M.kid(real, fake, 100, 10, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_samples_collapsed_onto_a_few_modes_keep_precision_and_lose_recall():
    real = gaussian(1000, d=4, seed=0)
    modes = real[:5]
    collapsed = modes[torch.arange(1000) % 5] + 0.01 * gaussian(1000, d=4, seed=1)
    p_same, r_same = M.precision_recall(real, gaussian(1000, d=4, seed=2), k=3)
    p_col, r_col = M.precision_recall(real, collapsed, k=3)
    assert p_same > 0.6 and r_same > 0.6
    assert p_col > 0.95
    assert r_col < 0.1


def test_precision_recall_agrees_with_a_loop_over_points():
    real, fake = gaussian(40, d=3, seed=0), gaussian(30, d=3, shift=0.7, seed=1)

    def radius(x, i, k):
        return sorted(float((x[i] - x[j]).norm()) for j in range(len(x)))[k]

    def covered(q, centres, k):
        return np.mean([any(float((p - centres[j]).norm()) <= radius(centres, j, k) for j in range(len(centres)))
                        for p in q])

    p, r = M.precision_recall(real, fake, k=3, chunk=7)
    assert abs(p - covered(fake, real, 3)) < 1e-6 and abs(r - covered(real, fake, 3)) < 1e-6


def test_exact_copies_of_training_images_are_flagged_as_near_copies():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
    fresh = rng.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    fake = np.concatenate([train[[3, 7, 11]], fresh])
    feats = lambda x: torch.from_numpy(x.reshape(len(x), -1)[:, :4]).float()  # noqa: E731
    mem = M.memorisation(M.pixel_vectors(fake), feats(fake), M.pixel_vectors(train), feats(train))
    assert mem["near_copy"].tolist() == [True] * 3 + [False] * 5
    assert mem["nearest"][:3].tolist() == [3, 7, 11]
    assert torch.all(mem["pixel"][:3] == 0) and torch.all(mem["feature"][:3] == 0)
    assert torch.all(mem["pixel"][3:] > 0.5 * mem["sibling"][3:])


def test_tail_classes_are_the_rarest_ones_rarest_first():
    assert M.tail_classes([500, 5, 80, 20, 300], share=0.4) == [1, 3]
