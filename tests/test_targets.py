"""Tests for ebmcmc.targets: exact log Z, moments and samplers of the reference targets.

Statistical tolerances: exact samplers give iid draws, so the Monte Carlo standard error of a
sample mean of ``f(x)`` is ``sd(f(x)) / sqrt(n)``; every moment must lie within 4 standard
errors of its closed form. With about 40 such checks over the file, the chance that a correct
sampler trips one is about 40 * 6.3e-5 = 0.3 %; the seeds are fixed, so the outcome is
deterministic, and a wrong sampler (e.g. a mean off by 2 % of an sd with n = 200,000 draws,
i.e. 9 standard errors) fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmcmc.targets import Banana, Funnel, Gaussian, GaussianMixture, Target

N_EXACT = 200_000
Z = 4.0


def mixture_2d() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([[-1.5, 0.0], [1.5, 0.0]]), 0.5 * torch.eye(2), torch.tensor([0.3, 0.7])
    )


def gaussian_2d() -> Gaussian:
    return Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[2.0, 0.8], [0.8, 1.0]]))


# ----------------------------------------------------------------------------- quadrature


def _grid(lo: float, hi: float, h: float) -> torch.Tensor:
    return torch.linspace(lo, hi, int(round((hi - lo) / h)) + 1, dtype=torch.float64)


def _integrate(u: torch.Tensor, w: torch.Tensor, log_f) -> tuple[float, torch.Tensor]:
    """Trapezoid rule for int int exp(log_f(U, W)) dU dW on a tensor grid.

    Returns ``log`` of the integral and the normalized weights on the grid (for moments).
    For smooth integrands that vanish at the box edges the trapezoid rule converges
    exponentially fast in the grid spacing, so the chosen grids resolve log Z to ~1e-10.
    """
    uu, ww = torch.meshgrid(u, w, indexing="ij")
    lf = log_f(uu, ww)
    m = lf.max()
    dens = torch.exp(lf - m)
    integral = torch.trapezoid(torch.trapezoid(dens, w, dim=1), u, dim=0)
    return float(torch.log(integral) + m), dens


def _log_z_and_moments(target: Target):
    """log Z, mean and covariance of exp(-E) by 2-D quadrature, with a target-adapted grid."""
    if isinstance(target, Banana):
        # shear x2 = x1^2 + u (unit Jacobian): the banana becomes a product of Gaussians
        x1, u = _grid(-10.0, 12.0, 0.02), _grid(-4.0, 4.0, 0.01)

        def to_x(a, b):
            return torch.stack([a, a**2 + b], -1)

        def log_f(a, b):
            return -target(to_x(a, b))

    elif isinstance(target, Funnel):
        # x = exp(v / 2) w, dx = exp(v / 2) dw
        x1, u = _grid(-35.0, 45.0, 0.05), _grid(-12.0, 12.0, 0.05)

        def to_x(a, b):
            return torch.stack([a, torch.exp(a / 2) * b], -1)

        def log_f(a, b):
            return -target(to_x(a, b)) + a / 2

    else:
        sd = torch.sqrt(torch.diagonal(target.cov))
        m = target.mean
        x1 = _grid(float(m[0] - 10 * sd[0]), float(m[0] + 10 * sd[0]), 0.04)
        u = _grid(float(m[1] - 10 * sd[1]), float(m[1] + 10 * sd[1]), 0.04)

        def to_x(a, b):
            return torch.stack([a, b], -1)

        def log_f(a, b):
            return -target(to_x(a, b))

    log_z, p = _integrate(x1, u, log_f)
    # moments: integrate f(x) against the same (unnormalized, Jacobian-weighted) density
    aa, bb = torch.meshgrid(x1, u, indexing="ij")
    xs = to_x(aa, bb)
    norm = torch.trapezoid(torch.trapezoid(p, u, dim=1), x1, dim=0)

    def expect(f):
        return torch.trapezoid(torch.trapezoid(f * p, u, dim=1), x1, dim=0) / norm

    mean = torch.stack([expect(xs[..., i]) for i in range(2)])
    cov = torch.stack(
        [
            torch.stack([expect((xs[..., i] - mean[i]) * (xs[..., j] - mean[j])) for j in range(2)])
            for i in range(2)
        ]
    )
    return log_z, mean, cov


@pytest.mark.parametrize(
    "target",
    [gaussian_2d(), Banana(), mixture_2d(), Funnel(2), Funnel(2, scale=1.0)],
    ids=["gaussian", "banana", "mixture", "funnel", "funnel-scale1"],
)
def test_log_z_mean_cov_match_quadrature(target):
    log_z, mean, cov = _log_z_and_moments(target)
    assert abs(log_z - target.log_z) < 1e-8
    torch.testing.assert_close(mean, target.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cov, target.cov, rtol=1e-6, atol=1e-6)


def test_log_prob_is_normalized_log_density():
    t = gaussian_2d()
    ref = torch.distributions.MultivariateNormal(t.mean, t.cov)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(t.log_prob(x), ref.log_prob(x))


# ----------------------------------------------------------------------------- closed forms


def test_gaussian_energy_matches_torch_distributions(gen):
    t = Gaussian.ill_conditioned(6, 50.0, gen)
    ref = torch.distributions.MultivariateNormal(t.mean, t.cov)
    x = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64) * 3
    torch.testing.assert_close(t.log_prob(x), ref.log_prob(x))
    assert t.energy(x).shape == (3, 4)


def test_mixture_energy_matches_torch_distributions(gen):
    means = torch.tensor([[-2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, -3.0, 0.5]])
    a = torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)
    covs = a @ a.transpose(-1, -2) + 0.5 * torch.eye(3, dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 3.0])
    t = GaussianMixture(means, covs, w)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=w.double() / 6),
        torch.distributions.MultivariateNormal(means.double(), covs),
    )
    x = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64) * 2
    torch.testing.assert_close(t.log_prob(x), ref.log_prob(x))
    assert t.log_z == 0.0
    # default weights are uniform; a shared (d, d) covariance is broadcast
    u = GaussianMixture(means, torch.eye(3))
    torch.testing.assert_close(u.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(u.mean, means.double().mean(0))


def test_banana_and_funnel_log_prob_factorize(gen):
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64) * 2
    normal = torch.distributions.Normal
    b = Banana()
    expected = normal(1.0, 1.0).log_prob(x[:, 0]) + normal(x[:, 0] ** 2, 0.1**0.5).log_prob(x[:, 1])
    torch.testing.assert_close(b.log_prob(x), expected)
    f = Funnel(4, scale=2.0)
    y = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    expected = normal(0.0, 2.0).log_prob(y[:, 0]) + normal(0.0, torch.exp(y[:, :1] / 2)).log_prob(
        y[:, 1:]
    ).sum(-1)
    torch.testing.assert_close(f.log_prob(y), expected)
    assert f.cov[0, 0] == 4.0 and math.isclose(float(f.cov[1, 1]), math.exp(2.0))


def test_ill_conditioned_spectrum_and_determinism():
    t = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(1))
    eig = torch.linalg.eigvalsh(t.cov)
    torch.testing.assert_close(eig, torch.logspace(0, 2, 50, dtype=torch.float64))
    assert float(torch.linalg.cond(t.cov)) == pytest.approx(100.0, rel=1e-8)
    assert torch.equal(t.mean, torch.zeros(50, dtype=torch.float64))
    assert not torch.allclose(t.cov, torch.diag(torch.diagonal(t.cov)))  # really rotated
    again = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(1))
    assert torch.equal(t.cov, again.cov)
    other = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(2))
    assert not torch.equal(t.cov, other.cov)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("target", [gaussian_2d(), Banana(), mixture_2d(), Funnel(2)])
def test_energy_follows_input_dtype_and_batch(target, dtype):
    x = torch.zeros(2, 3, 2, dtype=dtype)
    e = target(x)
    assert e.shape == (2, 3) and e.dtype == dtype
    assert torch.isfinite(e).all()


@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    which=st.sampled_from(["gaussian", "banana", "mixture", "funnel"]),
)
def test_energy_batch_consistency(batch, which):
    """Evaluating a batch equals evaluating its flattened points one by one."""
    target = {
        "gaussian": gaussian_2d,
        "banana": Banana,
        "mixture": mixture_2d,
        "funnel": lambda: Funnel(2),
    }[which]()
    x = torch.linspace(-2, 2, 2 * max(1, math.prod(batch)), dtype=torch.float64)
    x = x.reshape(*batch, 2) if batch else x[:2]
    e = target(x)
    assert e.shape == tuple(batch)
    flat = x.reshape(-1, 2)
    single = torch.stack([target(p[None])[0] for p in flat])
    torch.testing.assert_close(e.reshape(-1), single)


# ----------------------------------------------------------------------------- exact samplers


def _assert_moments_iid(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """Sample mean and covariance within Z iid standard errors of the truth."""
    x = x.numpy()
    mean, cov = mean.numpy(), cov.numpy()
    n, d = x.shape
    se_mean = x.std(0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(x.mean(0) - mean) < Z * se_mean), (x.mean(0), mean, se_mean)
    c = x - mean
    for i in range(d):
        for j in range(i, d):
            prod = c[:, i] * c[:, j]
            se = prod.std(ddof=1) / math.sqrt(n)
            assert abs(prod.mean() - cov[i, j]) < Z * se, (i, j, prod.mean(), cov[i, j], se)


@pytest.mark.parametrize(
    "target",
    [
        Gaussian.ill_conditioned(5, 30.0, torch.Generator().manual_seed(4)),
        gaussian_2d(),
        Banana(),
        mixture_2d(),
        Funnel(3, scale=1.0),
    ],
    ids=["gaussian-5d", "gaussian-2d", "banana", "mixture", "funnel-scale1"],
)
def test_exact_sampler_moments(target, make_gen):
    x = target.sample(N_EXACT, generator=make_gen(11))
    assert x.shape == (N_EXACT, *target.event_shape) and x.dtype == torch.float64
    _assert_moments_iid(x, target.mean, target.cov)


def test_funnel_sampler_neck_variable(make_gen):
    """With Neal's scale 3 the x_i have huge kurtosis; check v ~ N(0, 9) and E[x_i] = 0."""
    f = Funnel(5)
    x = f.sample(N_EXACT, generator=make_gen(12)).numpy()
    v = x[:, 0]
    n = len(v)
    assert abs(v.mean()) < Z * 3 / math.sqrt(n)
    # var of v**2 for N(0, s^2) is 2 s^4
    assert abs((v**2).mean() - 9.0) < Z * math.sqrt(2 * 81 / n)
    se = x[:, 1:].std(0) / math.sqrt(n)
    assert np.all(np.abs(x[:, 1:].mean(0)) < Z * se)


def test_mixture_sampler_component_frequencies(make_gen):
    t = mixture_2d()
    x = t.sample(N_EXACT, generator=make_gen(13))
    frac = float((x[:, 0] > 0).double().mean())
    # P(x1 > 0) = 0.7 * Phi(1.5 / sqrt(0.5)) + 0.3 * (1 - Phi(1.5 / sqrt(0.5)))
    phi = 0.5 * (1 + math.erf(1.5 / math.sqrt(0.5) / math.sqrt(2)))
    p = 0.7 * phi + 0.3 * (1 - phi)
    assert abs(frac - p) < Z * math.sqrt(p * (1 - p) / N_EXACT)


@pytest.mark.parametrize("target", [gaussian_2d(), Banana(), mixture_2d(), Funnel(3)])
def test_sampler_reproducible_and_seed_dependent(target):
    a = target.sample(100, generator=torch.Generator().manual_seed(5))
    b = target.sample(100, generator=torch.Generator().manual_seed(5))
    c = target.sample(100, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: Gaussian(torch.zeros(2, 2), torch.eye(2)), ValueError, "mean must be a vector"),
        (
            lambda: Gaussian(torch.zeros(2), torch.eye(3)),
            ValueError,
            r"cov must have shape \(2, 2\)",
        ),
        (
            lambda: Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])),
            ValueError,
            "cov must be symmetric",
        ),
        (
            lambda: Gaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])),
            ValueError,
            "cov must be positive definite",
        ),
        (
            lambda: Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, math.nan]])),
            ValueError,
            "cov must",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2), torch.eye(2)),
            ValueError,
            "means must have shape",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2, 3), torch.eye(2)),
            ValueError,
            r"covs must have shape \(2, 3, 3\)",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2, 2), torch.stack([torch.eye(2), -torch.eye(2)])),
            ValueError,
            r"covs\[1\] must be positive definite",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2, 2), torch.eye(2), torch.tensor([1.0, -1.0])),
            ValueError,
            "weights must be 2 positive numbers",
        ),
        (
            lambda: GaussianMixture(torch.zeros(2, 2), torch.eye(2), torch.ones(3)),
            ValueError,
            "weights must be 2 positive numbers",
        ),
        (lambda: Funnel(1), ValueError, "dim must be an int >= 2"),
        (lambda: Funnel(2.0), ValueError, "dim must be an int >= 2"),
        (lambda: Funnel(3, scale=0.0), ValueError, "scale must be > 0"),
        (lambda: Funnel(3, scale=math.nan), ValueError, "scale must be > 0"),
    ],
)
def test_constructor_validation(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


@pytest.mark.parametrize("target", [gaussian_2d(), Banana(), mixture_2d(), Funnel(3)])
def test_input_shape_and_sample_size_validation(target):
    with pytest.raises(ValueError, match=r"expects inputs of shape \(\*batch"):
        target(torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"expects inputs of shape"):
        target(torch.zeros(()))
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            target.sample(bad)


def test_base_target_has_no_sampler_or_energy():
    t = Target()
    with pytest.raises(NotImplementedError):
        t.energy(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        t.sample(1)
