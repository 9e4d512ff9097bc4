"""Properties of the CBDM loss (cbdm_aug.diffusion.loss)."""
import pytest
import torch

from cbdm_aug.diffusion.loss import CBDMLossConfig, cbdm_loss, ddpm_alpha_bar, target_distribution
from cbdm_aug.diffusion.sampling import DEFAULT_SCHEDULE

NULL = 3  # the tiny UNet has 3 classes + the null class


def _batch(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)


def _loss(unet, cfg, seed=0, n=16, q=None):
    x0, y = _batch(n)
    q = torch.tensor([0.6, 0.3, 0.1]) if q is None else q
    return cbdm_loss(unet, x0, y, ddpm_alpha_bar(DEFAULT_SCHEDULE), q, cfg, NULL,
                     generator=torch.Generator().manual_seed(seed)), x0, y


def test_tau_zero_is_the_plain_denoising_loss(tiny_unet):
    terms, x0, y = _loss(tiny_unet, CBDMLossConfig(tau=0.0, p_uncond=0.0))
    # Redraw the same t and eps from the same generator state and compute ||eps - eps_theta||^2.
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = ddpm_alpha_bar(DEFAULT_SCHEDULE)[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    plain = (tiny_unet(x_t, t, class_labels=y).sample - eps).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["loss"], plain)
    assert torch.equal(terms["reg"], torch.zeros_like(plain))


def test_the_denoising_term_does_not_depend_on_tau(tiny_unet):
    a, _, _ = _loss(tiny_unet, CBDMLossConfig(tau=0.0))
    b, _, _ = _loss(tiny_unet, CBDMLossConfig(tau=1.0))
    torch.testing.assert_close(a["dm"], b["dm"], atol=1e-5, rtol=1e-5)
    assert (b["loss"] >= b["dm"] - 1e-7).all()


def _grad_of(unet, term: str, label: int):
    """Gradient of a loss term w.r.t. the class-embedding row of ``label``."""
    unet.zero_grad()
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    y = torch.zeros(8, dtype=torch.long)                # every sample has label 0 ...
    q = torch.tensor([0.0, 1.0, 0.0])                   # ... and every y' is 1
    cfg = CBDMLossConfig(tau=1.0, gamma=0.25, p_uncond=0.0)
    terms = cbdm_loss(unet, x0, y, ddpm_alpha_bar(DEFAULT_SCHEDULE), q, cfg, NULL,
                      generator=torch.Generator().manual_seed(3))
    terms[term].sum().backward()
    return unet.class_embedding.weight.grad[label].abs().sum().item()


def test_the_regulariser_moves_only_the_y_branch(tiny_unet):
    assert _grad_of(tiny_unet, "reg", label=0) > 0
    assert _grad_of(tiny_unet, "reg", label=1) == 0


def test_the_commitment_term_moves_only_the_y_prime_branch(tiny_unet):
    assert _grad_of(tiny_unet, "commit", label=1) > 0
    assert _grad_of(tiny_unet, "commit", label=0) == 0


def test_dropped_label_samples_get_no_regulariser(tiny_unet):
    terms, _, _ = _loss(tiny_unet, CBDMLossConfig(tau=1.0, p_uncond=0.5), n=64)
    dropped = ~terms["keep"]
    assert 0 < dropped.sum() < 64
    torch.testing.assert_close(terms["loss"][dropped], terms["dm"][dropped])
    x0, y = _batch(64)
    kept = terms["keep"] & (terms["t"] > 0) & (terms["y_prime"] != y)  # y' == y gives reg = 0
    assert kept.any()
    assert (terms["loss"][kept] > terms["dm"][kept]).all()


def test_the_regulariser_weight_grows_with_t_over_T(tiny_unet):
    terms, _, _ = _loss(tiny_unet, CBDMLossConfig(tau=2.0, gamma=0.25, p_uncond=0.0), n=32)
    expected = 2.0 * terms["t"].float() / 1000 * (terms["reg"] + 0.25 * terms["commit"])
    torch.testing.assert_close(terms["loss"] - terms["dm"], expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("target", ["train", "uniform"])
def test_y_prime_follows_the_target_distribution(tiny_unet, target):
    counts = [600, 300, 100]
    q = target_distribution(target, counts).float()
    n = 4000
    x0 = torch.zeros(n, 1, 8, 8)
    y = torch.zeros(n, dtype=torch.long)
    cfg = CBDMLossConfig(tau=1.0, target=target)
    with torch.no_grad():
        terms = cbdm_loss(tiny_unet, x0, y, ddpm_alpha_bar(DEFAULT_SCHEDULE), q, cfg, NULL,
                          generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(terms["y_prime"], minlength=3).double() / n
    # 5-sigma binomial bound on each class frequency
    sigma = (q.double() * (1 - q.double()) / n).sqrt()
    assert ((freq - q.double()).abs() <= 5 * sigma + 1e-12).all(), (freq, q)


def test_labels_are_dropped_per_sample_at_the_configured_rate(tiny_unet):
    with torch.no_grad():
        terms, _, _ = _loss(tiny_unet, CBDMLossConfig(tau=0.0, p_uncond=0.1), n=4000)
    rate = 1 - terms["keep"].float().mean().item()
    assert abs(rate - 0.1) < 5 * (0.1 * 0.9 / 4000) ** 0.5


def test_bad_loss_settings_are_refused_with_the_value_named():
    with pytest.raises(ValueError, match="tau"):
        CBDMLossConfig(tau=-1)
    with pytest.raises(ValueError, match="target"):
        CBDMLossConfig(target="balanced")

