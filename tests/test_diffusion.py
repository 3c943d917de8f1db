"""Tests for ebmcmc.diffusion: the DRL, CDRL and DAEBM noise schedules."""

from __future__ import annotations

import math

import pytest
import torch

from ebmcmc.diffusion import (
    CDRLSchedule,
    DAEBMSchedule,
    DRLSchedule,
    NoiseSchedule,
    RecoverySchedule,
    gather,
)

# The T = 6 DRL table of the spec (docs/methods/drl.md), as printed there.
DRL_T6_SIGMA = [0.0100, 0.3237, 0.5165, 0.6322, 0.7132, 0.7734, 0.9997]
DRL_T6_SIGMA_BAR = [0.0100, 0.3238, 0.5862, 0.7785, 0.8980, 0.9603, 0.99998]
DRL_T6_STEP = [0.0046, 0.0416, 0.0685, 0.0890, 0.1036, 0.1386]
DRL_T6_WEIGHT = [1.0, 0.627, 0.512, 0.454, 0.419, 0.324]
# CDRL's alpha_bar at t = 0, 1/6, .., 1 (docs/methods/cdrl.md), as printed there.
CDRL_ALPHA_BAR = [0.99994, 0.936, 0.768, 0.535, 0.294, 0.102, 0.0061]


def _assert_table(values: torch.Tensor, expected: list[float], decimals: int | list[int]):
    """Each value rounds to the printed one: |value - printed| <= half a unit in the last place."""
    if isinstance(decimals, int):
        decimals = [decimals] * len(expected)
    assert values.shape == (len(expected),)
    for k, (v, e, d) in enumerate(zip(values.tolist(), expected, decimals, strict=True)):
        assert abs(v - e) <= 0.5 * 10.0**-d + 1e-12, (k, v, e)


# ----------------------------------------------------------------------------- DRL


def test_drl_t6_matches_spec_table():
    s = DRLSchedule(num_levels=6)
    _assert_table(s.sigma, DRL_T6_SIGMA, 4)
    _assert_table(s.sigma_bar, DRL_T6_SIGMA_BAR, [4, 4, 4, 4, 4, 4, 5])
    _assert_table(s.step_size(), DRL_T6_STEP, 4)
    _assert_table(s.step_size(b2=2e-4), DRL_T6_STEP, 4)
    _assert_table(s.loss_weight, DRL_T6_WEIGHT, 3)


def test_drl_boundaries_and_shapes():
    s = DRLSchedule(6)
    assert s.num_levels == 6
    assert s.boundaries.tolist() == [0, 100, 200, 300, 400, 500, 999]
    for name in ("alpha", "sigma", "alpha_bar", "sigma_bar", "alpha_prime", "tether"):
        v = getattr(s, name)
        assert v.dtype == torch.float64 and v.shape == (7,), name
    assert s.step_size().shape == (6,) and s.loss_weight.shape == (6,)
    assert s.step_size().dtype == torch.float64
    # DRL's paper names are the uniform names
    assert s.alpha is s.signal and s.alpha_bar is s.signal_bar
    assert s.alpha_prime is s.signal_prime


def test_drl_constants_follow_the_definitions():
    s = DRLSchedule(6)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    b = [0, 100, 200, 300, 400, 500, 999]
    a = [math.sqrt(1 - betas[0].item())] + [
        torch.prod(torch.sqrt(1 - betas[b[k - 1] + 1 : b[k] + 1])).item() for k in range(1, 7)
    ]
    torch.testing.assert_close(s.alpha, torch.tensor(a, dtype=torch.float64))
    torch.testing.assert_close(s.alpha**2 + s.sigma**2, torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(s.alpha, 0))
    torch.testing.assert_close(s.alpha_bar**2 + s.sigma_bar**2, torch.ones(7, dtype=torch.float64))
    assert abs(s.sigma[0].item() - 0.01) < 1e-12  # sqrt(beta_0)
    # a' = a except a'_T = 1; r = 1 except r_T = 0
    assert s.alpha_prime[:-1].tolist() == s.alpha[:-1].tolist() and s.alpha_prime[-1] == 1
    assert s.tether.tolist() == [1.0] * 6 + [0.0]
    # s_t^2 = b^2 sigma_{t+1}^2 (sigmabar_t / sigmabar_0), the ratio not squared
    b2 = 3e-4
    expected = b2 * s.sigma[1:] ** 2 * s.sigma_bar[:-1] / s.sigma_bar[0]
    torch.testing.assert_close(s.step_size(b2) ** 2, expected)


@pytest.mark.parametrize("T", [2, 3, 10, 100, 501])
def test_drl_valid_num_levels(T):
    s = DRLSchedule(T)
    assert s.sigma.shape == (T + 1,)
    assert s.boundaries[-1] == 999 and s.boundaries[-2] <= 500
    assert bool((s.sigma > 0).all()) and bool((torch.diff(s.sigma_bar) > 0).all())
    assert bool(torch.isfinite(s.step_size()).all())


@pytest.mark.parametrize("T", [0, 1, -3, 502, 1000])
def test_drl_rejects_bad_num_levels(T):
    with pytest.raises(ValueError, match="num_levels"):
        DRLSchedule(T)


@pytest.mark.parametrize("T", [6.0, True, "6", None])
def test_drl_rejects_non_int_num_levels(T):
    with pytest.raises(TypeError, match="num_levels"):
        DRLSchedule(T)


@pytest.mark.parametrize("b2", [0.0, -1e-4, float("nan"), float("inf")])
def test_step_size_rejects_bad_scale(b2):
    with pytest.raises(ValueError, match="b2"):
        DRLSchedule(6).step_size(b2)


# ----------------------------------------------------------------------------- q_sample


def test_q_sample_rejects_levels_out_of_range():
    s = DRLSchedule(6)
    x0 = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 6\].*\[0, 7\]"):
        s.q_sample(x0, torch.tensor([0, 7, 1]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 6\]"):
        s.q_sample(x0, torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 5\]"):
        s.training_pair(x0, torch.tensor([6, 0, 1]))


def test_q_sample_rejects_bad_level_types_and_shapes():
    s = DRLSchedule(6)
    x0 = torch.zeros(3, 2)
    with pytest.raises(TypeError, match="integer"):
        s.q_sample(x0, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer"):
        s.q_sample(x0, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="shape"):
        s.q_sample(x0, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        s.q_sample(x0, torch.zeros(3, 2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="x0"):
        s.q_sample(torch.zeros(3, 2, dtype=torch.long), torch.tensor([0, 1, 2]))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="not both"):
        s.q_sample(x0, torch.tensor([0, 1, 2]), noise=torch.zeros(3, 2), generator=g)
    with pytest.raises(ValueError, match="noise"):
        s.q_sample(x0, torch.tensor([0, 1, 2]), noise=torch.zeros(3, 3))


def test_q_sample_is_reproducible_under_a_seed():
    s = DRLSchedule(6)
    x0 = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.arange(16) % 7

    def draw(seed):
        return s.q_sample(x0, t, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    p1 = s.training_pair(x0, t % 6, generator=g1)
    p2 = s.training_pair(x0, t % 6, generator=g2)
    assert torch.equal(p1[0], p2[0]) and torch.equal(p1[1], p2[1])


def test_q_sample_with_explicit_noise_is_the_formula():
    s = DRLSchedule(6)
    x0 = torch.randn(7, 5, dtype=torch.float64)
    eps = torch.randn(7, 5, dtype=torch.float64)
    t = torch.arange(7)
    out = s.q_sample(x0, t, noise=eps)
    expected = s.alpha_bar[:, None] * x0 + s.sigma_bar[:, None] * eps
    torch.testing.assert_close(out, expected)
    # a scalar level applies to every example
    out3 = s.q_sample(x0, 3, noise=eps)
    torch.testing.assert_close(out3, s.alpha_bar[3] * x0 + s.sigma_bar[3] * eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_follow_input_dtype(dtype):
    s = DRLSchedule(6)
    x0 = torch.zeros(4, 2, dtype=dtype)
    t = torch.tensor([0, 1, 2, 5])
    assert s.q_sample(x0, t).dtype == dtype
    xt, xt1 = s.training_pair(x0, t)
    assert xt.dtype == dtype and xt1.dtype == dtype
    assert gather(s.sigma, t, x0).dtype == dtype


@pytest.mark.parametrize(
    "sched", [DRLSchedule(6), CDRLSchedule(6), DAEBMSchedule(50)], ids=["drl", "cdrl", "daebm"]
)
def test_q_sample_moments_match_schedule(sched):
    # x0 = 1 at every level: mean signal_bar[k], variance sigma_bar[k]^2 (Gaussian), checked to
    # z = 4.5 standard errors (levels x 2 statistics; fixed seed).
    n, z = 20000, 4.5
    L = sched.num_levels + 1
    x0 = torch.ones(L, n, dtype=torch.float64)
    t = torch.arange(L)
    x = sched.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    mean, var = x.mean(1), x.var(1)
    sd = sched.sigma_bar
    mean_se = sd / math.sqrt(n)
    var_se = sd**2 * math.sqrt(2.0 / (n - 1))
    assert bool(((mean - sched.signal_bar).abs() <= z * mean_se + 1e-12).all())
    assert bool(((var - sd**2).abs() <= z * var_se + 1e-15).all())


def test_q_sample_variance_at_zero_data():
    # the brief's check: x0 = 0, empirical variance of x_t vs sigma_bar_t^2 within z * SE
    s = DRLSchedule(6)
    n, z = 40000, 4.5
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(123)
    for k in range(7):
        x = s.q_sample(x0, torch.full((n,), k), generator=g)
        se = s.sigma_bar[k].item() ** 2 * math.sqrt(2.0 / (n - 1))
        assert abs(x.var().item() - s.sigma_bar[k].item() ** 2) <= z * se, k


def test_drl_training_pair_joint_moments():
    # x_{t+1} = a_{t+1} x_t + sigma_{t+1} eps': mean abar_{t+1}, variance sigmabar_{t+1}^2,
    # Cov(x_t, x_{t+1}) = a_{t+1} sigmabar_t^2.
    s = DRLSchedule(6)
    n, z, T = 20000, 4.5, 6
    x0 = torch.ones(T, n, dtype=torch.float64)
    t = torch.arange(T)
    xt, xt1 = s.training_pair(x0, t, generator=torch.Generator().manual_seed(7))
    a, sb = s.alpha, s.sigma_bar
    mean_err = (xt1.mean(1) - s.alpha_bar[1:]).abs()
    assert bool((mean_err <= z * sb[1:] / math.sqrt(n)).all())
    var_err = (xt1.var(1) - sb[1:] ** 2).abs()
    assert bool((var_err <= z * sb[1:] ** 2 * math.sqrt(2.0 / (n - 1))).all())
    cov = ((xt - xt.mean(1, keepdim=True)) * (xt1 - xt1.mean(1, keepdim=True))).sum(1) / (n - 1)
    true_cov = a[1:] * sb[:-1] ** 2
    cov_se = torch.sqrt((true_cov**2 + sb[:-1] ** 2 * sb[1:] ** 2) / n)
    assert bool(((cov - true_cov).abs() <= z * cov_se).all())


def test_sample_levels_range_and_reproducibility():
    s = DRLSchedule(6)
    t = s.sample_levels(6000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (6000,)
    assert sorted(set(t.tolist())) == [0, 1, 2, 3, 4, 5]
    counts = torch.bincount(t, minlength=6).double()
    # multinomial counts: each within 4.5 sd of n/6
    sd = math.sqrt(6000 * (1 / 6) * (5 / 6))
    assert bool(((counts - 1000).abs() <= 4.5 * sd).all())
    t2 = s.sample_levels(6000, torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)
    assert s.sample_levels(0).shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        s.sample_levels(-1)
    assert DAEBMSchedule(4).sample_levels(2000, torch.Generator().manual_seed(0)).max() == 4


def test_gather_shapes_and_casting():
    vals = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    like = torch.zeros(4, 3, 2, 2, dtype=torch.float32)
    out = gather(vals, torch.tensor([2, 0, 1, 2]), like)
    assert out.shape == (4, 1, 1, 1) and out.dtype == torch.float32
    assert out.flatten().tolist() == [2.0, 0.5, 1.0, 2.0]
    out2 = gather(vals, torch.tensor([[0, 1, 2]] * 4), like)
    assert out2.shape == (4, 3, 1, 1)


def test_multi_dim_batch_levels():
    s = DRLSchedule(6)
    x0 = torch.zeros(2, 3, 5, dtype=torch.float64)
    t = torch.tensor([[0, 1, 2], [3, 4, 5]])
    eps = torch.ones_like(x0)
    out = s.q_sample(x0, t, noise=eps)
    torch.testing.assert_close(out[..., 0], s.sigma_bar[t])


# ----------------------------------------------------------------------------- CDRL


def test_cdrl_schedule_matches_spec():
    s = CDRLSchedule()
    assert isinstance(s, RecoverySchedule) and s.num_levels == 6
    _assert_table(s.alpha_bar, CDRL_ALPHA_BAR, [5, 3, 3, 3, 3, 3, 4])  # as printed
    assert abs(s.logsnr[0].item() - 9.8) < 1e-9 and abs(s.logsnr[-1].item() + 5.1) < 1e-9
    assert bool((torch.diff(s.logsnr) < 0).all())
    # independent re-derivation of the formulas in docs/methods/cdrl.md
    b = math.atan(math.exp(-9.8 / 2))
    a = math.atan(math.exp(5.1 / 2)) - b
    for k in range(7):
        u = k / 6
        lam = -2 * math.log(math.tan(a * u + b))
        assert abs(s.logsnr[k].item() - lam) < 1e-9
        assert abs(s.alpha_bar[k].item() - 1 / (1 + math.exp(-lam))) < 1e-12
        assert abs(s.time_embedding_input[k].item() - (a * u + b) / (math.pi / 2)) < 1e-12


def test_cdrl_per_level_constants():
    s = CDRLSchedule()
    ab = s.alpha_bar
    one = torch.ones(1, dtype=torch.float64)
    torch.testing.assert_close(s.alpha, ab / torch.cat([one, ab[:-1]]))
    torch.testing.assert_close(s.sigma**2, 1 - s.alpha)
    torch.testing.assert_close(s.signal_bar, ab.sqrt())
    torch.testing.assert_close(s.sigma_bar, (1 - ab).sqrt())
    torch.testing.assert_close(s.signal, s.alpha.sqrt())
    assert s.signal_prime[-1] == 1 and torch.equal(s.signal_prime[:-1], s.signal[:-1])
    assert s.tether.tolist() == [1.0] * 6 + [0.0]
    # paper: s_t^2 = 4e-4 c_t sigma_t^2, c_t = sigmabar_{t-1} / sigmabar_0, t = 1..T,
    # stored at the pair's lower level t - 1
    for t in range(1, 7):
        c = math.sqrt(1 - ab[t - 1].item()) / math.sqrt(1 - ab[0].item())
        expected = 4e-4 * c * (1 - ab[t].item() / ab[t - 1].item())
        assert math.isclose(s.step_size()[t - 1].item() ** 2, expected, rel_tol=1e-10)
    torch.testing.assert_close(s.loss_weight, s.sigma[1] / s.sigma[1:])
    # DDPM posterior variance beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t
    for t in range(1, 7):
        bt = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
        assert abs(s.posterior_variance[t].item() - bt.item()) < 1e-12
    assert s.posterior_variance[0] == 0


def test_cdrl_training_pair_shares_noise_by_default():
    s = CDRLSchedule()
    x0 = torch.randn(6, 4, dtype=torch.float64)
    t = torch.arange(6)
    xt, xt1 = s.training_pair(x0, t, generator=torch.Generator().manual_seed(0))
    sb, sgb = s.sigma_bar, s.signal_bar
    eps_t = (xt - sgb[:-1, None] * x0) / sb[:-1, None]
    eps_t1 = (xt1 - sgb[1:, None] * x0) / sb[1:, None]
    torch.testing.assert_close(eps_t, eps_t1)
    # and independent noise on request
    xt, xt1 = s.training_pair(x0, t, generator=torch.Generator().manual_seed(0), shared_noise=False)
    eps_t1 = (xt1 - sgb[1:, None] * x0) / sb[1:, None]
    assert not torch.allclose(eps_t, eps_t1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_levels": 0},
        {"logsnr_max": -5.1, "logsnr_min": 9.8},
        {"logsnr_max": 1.0, "logsnr_min": 1.0},
        {"logsnr_max": float("inf")},
        {"logsnr_min": float("nan")},
    ],
)
def test_cdrl_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CDRLSchedule(**kwargs)


# ----------------------------------------------------------------------------- DAEBM


def test_daebm_sqrtcumlinear_schedule():
    s = DAEBMSchedule(num_levels=50)
    assert isinstance(s, NoiseSchedule) and not isinstance(s, RecoverySchedule)
    assert s.sigma.shape == (51,)
    # sigma_T = sqrt(beta_T) = sum of linspace(2e-4, 2e-2, 50) = 0.505
    assert abs(s.sigma[-1].item() - 0.505) < 1e-12
    inc = torch.linspace(2e-4, 2e-2, 50, dtype=torch.float64)
    torch.testing.assert_close(s.sigma[1:], torch.cumsum(inc, 0))
    torch.testing.assert_close(s.beta, s.sigma**2)
    torch.testing.assert_close(s.alpha, 1 - s.beta)
    torch.testing.assert_close(s.alpha_bar, torch.cumprod(1 - s.beta, 0))
    torch.testing.assert_close(s.signal_bar, s.alpha_bar.sqrt())
    torch.testing.assert_close(s.sigma_bar, (1 - s.alpha_bar).sqrt())
    # t = 0 is clean data
    assert s.sigma[0].item() == 0.0 and s.sigma_bar[0].item() == 0.0
    assert s.signal_bar[0].item() == 1.0
    x0 = torch.randn(3, 2)
    assert torch.equal(s.q_sample(x0, torch.zeros(3, dtype=torch.long)), x0)
    assert 0.97 < s.sigma_bar[-1].item() < 0.975
    with pytest.raises(ValueError, match=r"\[0, 50\]"):
        s.q_sample(x0, torch.tensor([0, 51, 2]))


@pytest.mark.parametrize(
    "kwargs",
    [{"num_levels": 0}, {"delta_start": -1e-4}, {"delta_end": 0.0}, {"delta_end": 0.2}],
)
def test_daebm_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DAEBMSchedule(**kwargs)


def test_repr():
    assert repr(DRLSchedule(6)) == "DRLSchedule(num_levels=6)"
    assert "logsnr_max=9.8" in repr(CDRLSchedule())
    assert "num_levels=50" in repr(DAEBMSchedule())
