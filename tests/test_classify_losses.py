import torch
import torch.nn.functional as F

from cbdm_aug.classify.losses import ClassifierLoss, balanced_softmax_loss, log_prior, logit_adjusted_loss

COUNTS = [100, 30, 5]


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])


def test_balanced_softmax_matches_its_definition_with_counts_inside_the_softmax():
    z, y = _data()
    n = torch.tensor(COUNTS, dtype=torch.float32)
    expected = -torch.log(n[y] * z.exp().gather(1, y[:, None])[:, 0] / (n * z.exp()).sum(1))
    torch.testing.assert_close(balanced_softmax_loss(z, y, COUNTS), expected)


def test_logit_adjustment_is_cross_entropy_on_logits_plus_tau_log_prior():
    z, y = _data()
    pi = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    for tau in (0.5, 1.0, 2.0):
        torch.testing.assert_close(logit_adjusted_loss(z, y, COUNTS, tau),
                                   F.cross_entropy(z + tau * pi.log(), y, reduction="none"))


def test_logit_adjustment_with_tau_zero_or_uniform_counts_is_plain_cross_entropy():
    z, y = _data()
    ce = F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(logit_adjusted_loss(z, y, COUNTS, tau=0.0), ce)
    torch.testing.assert_close(balanced_softmax_loss(z, y, [7, 7, 7]), ce)


def test_classifier_loss_module_agrees_with_the_functions_and_returns_one_loss_per_sample():
    z, y = _data()
    torch.testing.assert_close(ClassifierLoss("ce", COUNTS)(z, y), F.cross_entropy(z, y, reduction="none"))
    torch.testing.assert_close(ClassifierLoss("balanced-softmax", COUNTS)(z, y), balanced_softmax_loss(z, y, COUNTS))
    torch.testing.assert_close(ClassifierLoss("logit-adjustment", COUNTS, tau=1.5)(z, y),
                               logit_adjusted_loss(z, y, COUNTS, 1.5))
    assert ClassifierLoss("ce", COUNTS)(z, y).shape == (6,)


def test_the_log_prior_sums_to_one_in_probability_and_rejects_empty_classes():
    assert torch.isclose(log_prior(COUNTS).exp().sum(), torch.tensor(1.0))
    import pytest
    with pytest.raises(ValueError, match="positive"):
        log_prior([3, 0])
    with pytest.raises(ValueError, match="loss must be one of"):
        ClassifierLoss("focal", COUNTS)
