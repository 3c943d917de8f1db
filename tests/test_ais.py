"""Statistical tests of annealed importance sampling (``ebmcmc.ais.ais``) and BDMC bounds.

Every check compares an estimate of ``log Z`` with an exact (closed-form or quadrature) value,
with a tolerance in units of the standard error that ``ais`` reports (``log_z_se``, the delta
method on the importance weights: ``se = sd(w) / (mean(w) sqrt(n))``). The standard error
itself is checked by coverage over 50 independent replicates.

Why 3 standard errors: AIS ``log Z`` is asymptotically normal around the truth, with a
downward bias ``E[log mean w] - log Z ~ -se^2 / 2`` (second-order delta method). With the
particle counts below ``se < 0.15``, so the bias is below ``0.08 se``: ``|z| < 3`` then fails with
probability ~0.3 % per check for a correct sampler, while a wrong weight recursion (sign, a
missing temperature, a kernel that does not leave ``E_beta`` invariant) moves the estimate by
many standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from ebmcmc.ais import AISResult, BDMCResult, ais, bdmc, beta_schedule
from ebmcmc.kernels import HMC, MALA
from ebmcmc.targets import Gaussian, GaussianMixture

DT = torch.float64


# --------------------------------------------------------------------------- targets


def _gaussian(d: int, seed: int = 1) -> Gaussian:
    """A Gaussian with a random mean and a random dense covariance (eigenvalues ~0.5 … 5)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=DT)
    cov = a @ a.T / d + 0.5 * torch.eye(d, dtype=DT)
    return Gaussian(torch.randn(d, generator=g, dtype=DT), cov)


G20 = _gaussian(20)
BASE20 = Gaussian(torch.zeros(20, dtype=DT), 4 * torch.eye(20, dtype=DT))

# two well-separated (~7 sd apart), unequally weighted, correlated modes
MIX = GaussianMixture(
    torch.tensor([[-4.0, 1.0], [3.0, -2.0]], dtype=DT),
    torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]], dtype=DT),
    torch.tensor([0.25, 0.75], dtype=DT),
)
SHIFT = 3.7  # exp(-(E + c)) has Z = exp(-c) Z_mix = exp(-3.7): log Z = -3.7, not 0


def shifted_mixture(x: torch.Tensor) -> torch.Tensor:
    return MIX(x) + SHIFT


def ring(x: torch.Tensor) -> torch.Tensor:
    """A tilted, squashed ring of radius 2: no closed-form normalizer."""
    r = torch.linalg.vector_norm(x, dim=-1)
    return (r - 2.0) ** 2 / (2 * 0.3**2) - 0.6 * x[..., 0] + 0.1 * x[..., 1] ** 2


def ring_log_z() -> float:
    """log Z of ``ring`` by a Riemann sum on [-5, 5]^2 in float64.

    The integrand is smooth and below exp(-45) on the boundary, so the sum converges
    spectrally: h = 0.02 and h = 0.005 on [-6, 6]^2 agree to 1e-15, and so does
    scipy's dblquad in polar coordinates (2.4305146279478).
    """
    h = 0.02
    g = torch.arange(-5.0, 5.0 + h / 2, h, dtype=DT)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    e = ring(torch.stack([xx, yy], -1))
    return float(torch.logsumexp(-e.flatten(), 0)) + 2 * math.log(h)


BASE2 = Gaussian(torch.zeros(2, dtype=DT), 9 * torch.eye(2, dtype=DT))

KERNELS = {"mala": MALA(0.3), "hmc": HMC(0.1, 5)}


def _z(result: AISResult, truth) -> torch.Tensor:
    return (result.log_z - torch.as_tensor(truth, dtype=DT)) / result.log_z_se


# --------------------------------------------------------------------------- log Z


@pytest.mark.parametrize("kind, num_steps", [("mala", 200), ("hmc", 100)], ids=["mala", "hmc"])
def test_gaussian_20d_log_z_within_3_se(kind, num_steps):
    r = ais(
        G20,
        BASE20,
        KERNELS[kind],
        num_chains=512,
        num_temperatures=num_steps,
        generator=0,
        progress=False,
    )
    assert r.log_z.shape == () and r.log_weights.shape == (512,)
    assert r.samples.shape == (512, 20) and r.direction == "forward"
    assert float(r.log_z_se) < 0.15  # bias ~ se^2/2 is negligible next to se (module doc)
    z = float(_z(r, G20.log_z))
    assert abs(z) < 3, f"log Z {float(r.log_z):.4f} vs exact {G20.log_z:.4f}: z = {z:.2f}"
    # the particles end near the target: their mean within 4 sd/sqrt(ESS) per coordinate
    w = torch.softmax(r.log_weights, 0)
    m = (w[:, None] * r.samples).sum(0)
    sd = G20.cov.diagonal().sqrt()
    assert ((m - G20.mean).abs() < 4 * sd / r.ess.sqrt()).all()


@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_shifted_mixture_log_z_within_3_se(kind):
    r = ais(
        shifted_mixture,
        BASE2,
        KERNELS[kind],
        num_chains=512,
        num_temperatures=100,
        generator=0,
        progress=False,
    )
    z = float(_z(r, -SHIFT))
    assert float(r.log_z_se) < 0.15
    assert abs(z) < 3, f"log Z {float(r.log_z):.4f} vs exact {-SHIFT}: z = {z:.2f}"
    # both modes are populated in proportion to their weights: the self-normalized weight of
    # the right-hand mode is 0.75 within 4 of its binomial standard errors at the ESS
    w = torch.softmax(r.log_weights, 0)
    right = float(w[r.samples[:, 0] > 0].sum())
    assert abs(right - 0.75) < 4 * math.sqrt(0.75 * 0.25 / float(r.ess))


@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_ring_log_z_matches_quadrature(kind):
    truth = ring_log_z()
    r = ais(
        ring,
        BASE2,
        KERNELS[kind],
        num_chains=512,
        num_temperatures=100,
        generator=0,
        progress=False,
    )
    z = float(_z(r, truth))
    assert float(r.log_z_se) < 0.15
    assert abs(z) < 3, f"log Z {float(r.log_z):.4f} vs quadrature {truth:.4f}: z = {z:.2f}"


def test_standard_error_covers_truth_at_nominal_rate():
    """50 independent AIS runs as 50 conditions of one call: the reported se is calibrated.

    For a calibrated se, z = (log Z_hat - log Z) / se is ~N(0, 1), so the count of |z| < 2
    over 50 runs is Binomial(50, 0.9545). P(count <= 41) = 3.8e-4 (scipy.stats.binom), so we
    require >= 42/50; an se half the true one (coverage 0.683) passes that with probability
    0.0035. An se twice too large is caught by the mean of z^2: 50 mean(z^2) ~ chi2(50), whose
    0.1 % and 99.9 % quantiles are 0.49 and 1.73 (times 50); a doubled se gives ~0.25.
    The bias of AIS (log Z_hat is biased low by ~se^2/2) must be small next to se for this to
    be a test of the se: with 128 particles and 30 temperatures se ~ 0.1, so the bias is
    ~0.005 = 0.05 se, which we assert below.
    """
    n, runs = 128, 50
    target = Gaussian(
        torch.tensor([1.0, -0.5], dtype=DT), torch.tensor([[1.0, 0.5], [0.5, 0.8]], dtype=DT)
    )
    g = torch.Generator().manual_seed(100)
    init = BASE2.sample(n * runs, generator=g).reshape(n, runs, 2)
    r = ais(
        target,
        BASE2,
        MALA(0.3),
        num_chains=n,
        num_temperatures=30,
        generator=1,
        init=init,
        progress=False,
    )
    assert r.log_z.shape == (runs,) and r.log_z_se.shape == (runs,)
    assert r.log_weights.shape == (n, runs) and r.samples.shape == (n, runs, 2)
    assert float(r.log_z_se.max()) < 0.2  # so the bias se^2/2 is < 0.1 se
    z = _z(r, target.log_z)
    covered = int((z.abs() < 2).sum())
    assert stats.binom.cdf(41, runs, 0.9545) < 1e-3  # the bound below, derived
    assert covered >= 42, f"se covers the truth in only {covered}/50 runs"
    lo, hi = stats.chi2.ppf([0.001, 0.999], runs) / runs
    assert lo < float((z**2).mean()) < hi, f"mean z^2 = {float((z**2).mean()):.2f}"


# --------------------------------------------------------------------------- BDMC


def test_bdmc_gap_shrinks_with_more_temperatures():
    """BDMC on the 20-D Gaussian, 12 independent replicates run as 12 conditions.

    With 10 temperatures both bounds are loose (the gap averages ~4 nats, and its standard
    error over the replicates is ~0.5); with 300 it is ~0 within ~0.05. The statement tested:
    the mean gap at 10 temperatures is positive by more than 3 of its standard errors, and the
    mean gap at 300 temperatures is less than a quarter of it.
    """
    n, reps = 64, 12
    exact = G20.sample(n * reps, generator=torch.Generator().manual_seed(0)).reshape(n, reps, 20)
    gaps = {}
    for k in (10, 300):
        r = bdmc(G20, BASE20, MALA(0.3), exact, num_temperatures=k, generator=k, progress=False)
        assert isinstance(r, BDMCResult)
        assert r.lower.log_z.shape == r.upper.log_z.shape == (reps,)
        assert r.lower.direction == "forward" and r.upper.direction == "reverse"
        # the sandwich holds within the stochastic error of each bound
        assert (r.lower.log_z <= G20.log_z + 3 * r.lower.log_z_se).all()
        assert (r.upper.log_z >= G20.log_z - 3 * r.upper.log_z_se).all()
        gaps[k] = r.gap
    g10, g300 = gaps[10], gaps[300]
    se10 = float(g10.std() / math.sqrt(reps))
    assert float(g10.mean()) > 3 * se10 and float(g10.mean()) > 1.0, g10
    assert abs(float(g300.mean())) < 0.25 * float(g10.mean()), (g10.mean(), g300.mean())
    assert float(g300.abs().max()) < float(g10.mean())


# --------------------------------------------------------------------------- conditional


class NoisyObservationBase:
    """Base of a recovery-likelihood-like path: ``N(x_tilde, sigma^2 I)`` per condition.

    ``energy(y) = |y - x_tilde|^2 / (2 sigma^2)`` with ``y`` of shape
    ``(num_chains, K, d)`` and ``x_tilde`` ``(K, d)``; ``log_z = d/2 log(2 pi sigma^2)``.
    """

    def __init__(self, x_tilde: torch.Tensor, sigma: float):
        self.x_tilde, self.sigma = x_tilde, sigma
        d = x_tilde.shape[-1]
        self.log_z = 0.5 * d * math.log(2 * math.pi * sigma**2)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        return ((y - self.x_tilde) ** 2).sum(-1) / (2 * self.sigma**2)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        noise = torch.randn((n,) + tuple(self.x_tilde.shape), generator=generator, dtype=DT)
        return self.x_tilde + self.sigma * noise


@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_conditional_energy_one_log_z_per_condition(kind):
    """E(y | x~) = E_theta(y) + |y - x~|^2 / (2 sigma^2) with Gaussian E_theta = N(m, C).

    Z(x~) = Z_theta (2 pi sigma^2)^(d/2) integral N(y; m, C) N(x~; y, sigma^2 I) dy
          = Z_theta (2 pi sigma^2)^(d/2) N(x~; m, C + sigma^2 I),
    so log Z(x~) = theta.log_z + d/2 log(2 pi sigma^2) + log N(x~; m, C + sigma^2 I).
    """
    theta = Gaussian(
        torch.tensor([0.5, -1.0], dtype=DT), torch.tensor([[1.0, 0.6], [0.6, 0.7]], dtype=DT)
    )
    sigma = 0.7
    x_tilde = torch.tensor(
        [[0.0, 0.0], [1.5, -1.0], [-2.0, 1.0], [3.0, 2.0], [0.5, -3.0], [-1.0, -2.5]], dtype=DT
    )
    k_cond = x_tilde.shape[0]
    base = NoisyObservationBase(x_tilde, sigma)

    def conditional(y):
        return theta(y) + base.energy(y)

    smoothed = torch.distributions.MultivariateNormal(
        theta.mean, theta.cov + sigma**2 * torch.eye(2, dtype=DT)
    )
    truth = theta.log_z + base.log_z + smoothed.log_prob(x_tilde)
    n = 256
    init = base.sample(n, generator=torch.Generator().manual_seed(3))
    r = ais(
        conditional,
        base,
        KERNELS[kind],
        num_chains=n,
        num_temperatures=60,
        generator=0,
        init=init,
        progress=False,
    )
    assert r.log_z.shape == (k_cond,) and r.log_weights.shape == (n, k_cond)
    assert r.samples.shape == (n, k_cond, 2) and r.ess.shape == (k_cond,)
    assert float(r.log_z_se.max()) < 0.15
    z = _z(r, truth)
    assert (z.abs() < 3).all(), f"z per condition: {z.tolist()}"
    # the conditions differ by several nats: a result that ignored them would fail above
    assert float(truth.max() - truth.min()) > 3


# --------------------------------------------------------------------------- bookkeeping


def test_energy_evaluation_count_and_per_temperature_records():
    r = ais(MIX, BASE2, MALA(0.3), num_chains=16, num_temperatures=7, generator=0, progress=False)
    # initial evaluation, then per temperature one re-evaluation and one MALA step
    assert r.num_energy_evals == 1 + 7 * 2
    assert r.step_sizes.shape == r.accept_rates.shape == (7,)
    r = ais(
        MIX,
        BASE2,
        HMC(0.1, 4),
        num_chains=16,
        num_temperatures=7,
        generator=0,
        progress=False,
        steps_per_temperature=2,
    )
    assert r.num_energy_evals == 1 + 7 * (1 + 2 * 4)
    assert ((r.accept_rates >= 0) & (r.accept_rates <= 1)).all()


def test_same_seed_same_bits():
    a = ais(MIX, BASE2, MALA(0.3), num_chains=32, num_temperatures=10, generator=5, progress=False)
    b = ais(MIX, BASE2, MALA(0.3), num_chains=32, num_temperatures=10, generator=5, progress=False)
    assert torch.equal(a.log_weights, b.log_weights) and torch.equal(a.samples, b.samples)


@pytest.mark.parametrize("kind", ["linear", "geometric", "sigmoid"])
def test_beta_schedule_is_an_increasing_ladder(kind):
    b = beta_schedule(12, kind)
    assert b.shape == (13,) and b[0] == 0 and b[-1] == 1
    assert (b[1:] > b[:-1]).all()


def test_explicit_betas_equal_the_schedule():
    b = beta_schedule(10, "linear")
    x = ais(MIX, BASE2, MALA(0.3), 16, betas=b, generator=0, progress=False)
    y = ais(
        MIX,
        BASE2,
        MALA(0.3),
        16,
        num_temperatures=10,
        schedule="linear",
        generator=0,
        progress=False,
    )
    assert torch.equal(x.log_weights, y.log_weights)


# --------------------------------------------------------------------------- validation


class _NoLogZ:
    def energy(self, x):
        return 0.5 * (x**2).sum(-1)

    def sample(self, n, generator=None):
        return torch.randn(n, 2, generator=generator, dtype=DT)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"betas": [0.1, 0.5, 1.0]}, "start at 0"),
        ({"betas": [0.0, 0.5, 0.9]}, "end at 1"),
        ({"betas": [0.0, 0.6, 0.4, 1.0]}, "strictly increasing"),
        ({"betas": [0.0, 0.5, 0.5, 1.0]}, "strictly increasing"),
        ({"betas": [[0.0, 1.0]]}, "1-D"),
        ({"num_temperatures": 0}, "num_temperatures"),
        ({"num_temperatures": 2.5}, "num_temperatures"),
        ({"betas": [0.0, 1.0], "num_temperatures": 5}, "either betas or num_temperatures"),
        ({"schedule": "cosine"}, "kind"),
        ({"init": torch.zeros(3, 2, dtype=DT)}, "num_chains"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ais(MIX, BASE2, MALA(0.3), num_chains=8, generator=0, progress=False, **kwargs)


def test_base_without_log_z_raises():
    with pytest.raises(TypeError, match="log_z"):
        ais(
            MIX, _NoLogZ(), MALA(0.3), num_chains=8, num_temperatures=3, generator=0, progress=False
        )


def test_non_kernel_and_bad_counts_raise():
    with pytest.raises(TypeError, match="Kernel"):
        ais(MIX, BASE2, "mala", num_chains=8, num_temperatures=3, progress=False)
    with pytest.raises(ValueError, match="num_chains"):
        ais(MIX, BASE2, MALA(0.3), num_chains=0, num_temperatures=3, progress=False)
    with pytest.raises(ValueError, match="steps_per_temperature"):
        ais(MIX, BASE2, MALA(0.3), 8, num_temperatures=3, steps_per_temperature=0, progress=False)


def test_bdmc_rejects_samples_of_the_wrong_event_shape():
    with pytest.raises(ValueError, match="exact_samples"):
        bdmc(MIX, BASE2, MALA(0.3), torch.zeros(8, 3, dtype=DT), num_temperatures=3, progress=False)


def test_old_num_steps_keyword_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="num_temperatures"):
        old = ais(MIX, BASE2, MALA(0.3), num_chains=8, num_steps=5, generator=0, progress=False)
    new = ais(MIX, BASE2, MALA(0.3), num_chains=8, num_temperatures=5, generator=0,
              progress=False)  # fmt: skip
    assert torch.equal(old.log_weights, new.log_weights)
    with pytest.raises(TypeError, match="num_temperatures= only"):
        ais(MIX, BASE2, MALA(0.3), num_chains=8, num_steps=5, num_temperatures=5, progress=False)
