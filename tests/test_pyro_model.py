"""Tests of Pyro models as ebmcmc energies (``ebmcmc.energy.from_pyro``).

The reference is Pyro's own NUTS on the same model: posterior means agree within 4 combined
Monte Carlo standard errors, ``|m_ebmcmc - m_nuts| < 4 sqrt(mcse_ebmcmc^2 + mcse_nuts^2)``
(the two runs are independent, so the variance of the difference is the sum of the
variances; for a correct pair |z| < 4 fails with probability 6e-5 per coordinate).
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS

import ebmcmc
from ebmcmc import arviz_bridge
from ebmcmc.diagnostics import summary
from ebmcmc.energy import energy_and_grad, from_pyro
from ebmcmc.kernels import HMC, MALA, NUTS, ChEES
from ebmcmc.pyro_model import PyroEnergy

N, D = 100, 3


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    logits = x @ torch.tensor([1.0, -0.5, 0.25]) + 0.3
    return x, torch.bernoulli(torch.sigmoid(logits), generator=g)


X, Y = _data()


def logistic(x, y):
    """Logistic regression written with broadcasting, so chains can be a leading plate."""
    alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1) + alpha), obs=y)


def _nuts(
    model, *args, warmup: int, samples: int, seed: int = 0, chains: int = 1
) -> dict[str, np.ndarray]:
    """Pyro NUTS, ``chains`` chains run one after the other (seeds ``seed``, ``seed + 1``...),
    without disturbing the global random states; latent and deterministic sites,
    ``(chain, draw, *shape)``."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    runs = []
    try:
        with torch.random.fork_rng(devices=[]):
            for c in range(chains):
                pyro.set_rng_seed(seed + c)
                kernel = PyroNUTS(model, jit_compile=True, ignore_jit_warnings=True)
                mcmc = MCMC(
                    kernel,
                    num_samples=samples,
                    warmup_steps=warmup,
                    num_chains=1,
                    disable_progbar=True,
                )
                mcmc.run(*args)
                runs.append({k: v.numpy() for k, v in mcmc.get_samples().items()})
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return {k: np.stack([r[k] for r in runs]) for k in runs[0]}


def _mcse_sd(draws: dict[str, np.ndarray]) -> np.ndarray:
    """ArviZ's MCSE of the posterior sd, flattened in the order of ``summary``'s rows."""
    ds = arviz_bridge.mcse(draws, "sd")
    return np.concatenate([np.ravel(ds[k].values) for k in draws])


def test_logistic_regression_agrees_with_pyro_nuts():
    nuts_draws = _nuts(logistic, X, Y, warmup=300, samples=500)
    nuts = summary(nuts_draws)
    energy = from_pyro(logistic, X, Y)
    assert energy.event_shape == (1 + D,) and energy.sites == ["alpha", "beta"]
    g = torch.Generator().manual_seed(1)
    # after warm-up the mass matrix whitens the posterior and the step size is ~1, i.e. ~60
    # degrees of a harmonic orbit per leapfrog step: 4 steps (240 degrees) mix well, while
    # 3 (a reflection) or 5-6 (nearly a full turn) would be the fixed-length-HMC resonances
    tr = ebmcmc.sample(
        energy,
        HMC(0.1, 4),
        energy.initial_position(128, g),
        num_samples=150,
        num_warmup=150,
        generator=2,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    ours = summary(tr)
    assert list(ours.index) == list(nuts.index) == ["alpha", "beta[0]", "beta[1]", "beta[2]"]
    se = np.sqrt(ours["mcse_mean"] ** 2 + nuts["mcse_mean"] ** 2)
    z = (ours["mean"] - nuts["mean"]) / se
    assert (z.abs() < 4).all(), f"posterior means differ: z = {z.round(2).tolist()}"
    # posterior sds too, with ArviZ's MCSE of the sd combined the same way
    ours_draws = {k: v.numpy() for k, v in tr.variables.items()}
    se_sd = np.sqrt(_mcse_sd(ours_draws) ** 2 + _mcse_sd(nuts_draws) ** 2)
    z_sd = (ours["sd"] - nuts["sd"]) / se_sd
    assert (z_sd.abs() < 4).all(), f"posterior sds differ: z = {z_sd.round(2).tolist()}"
    assert float(tr.stats["diverging"].float().mean()) == 0.0
    # the site names are the ArviZ posterior's variables, with their shapes
    post = arviz_bridge.posterior_dataset(tr.to_arviz())
    assert set(post.data_vars) == {"alpha", "beta"}
    assert post["beta"].shape == (128, 150, D) and post["alpha"].shape == (128, 150)


def test_constrained_site_is_sampled_on_its_support_with_the_jacobian():
    """Prior only, sigma ~ HalfNormal(2) and loc ~ N(1, 0.5): sigma is sampled through log;
    its draws are positive with the HalfNormal mean 2 sqrt(2 / pi). Without the log-Jacobian
    the density of u = log sigma would be HalfNormal(e^u) instead of HalfNormal(e^u) e^u,
    piling mass at sigma -> 0."""

    def model():
        pyro.sample("sigma", dist.HalfNormal(2.0))
        pyro.sample("loc", dist.Normal(1.0, 0.5))

    energy = from_pyro(model)
    z0 = energy.initial_position(64, torch.Generator().manual_seed(0))
    tr = ebmcmc.sample(
        energy,
        MALA(0.3),
        z0,
        num_samples=300,
        num_warmup=300,
        generator=0,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    sigma = tr.variables["sigma"]
    assert sigma.shape == (64, 300) and bool((sigma > 0).all())
    table = summary(tr)
    exact = {"sigma": 2 * math.sqrt(2 / math.pi), "loc": 1.0}
    for name, m in exact.items():
        z = (table.loc[name, "mean"] - m) / table.loc[name, "mcse_mean"]
        assert abs(z) < 4, f"{name}: mean {table.loc[name, 'mean']:.4f} vs {m:.4f}, z = {z:.2f}"
    # constrain / unconstrain are inverse maps
    values = energy.constrain(z0)
    assert torch.allclose(energy.unconstrain(values), z0, atol=1e-5)
    assert values["sigma"].shape == (64,) and bool((values["sigma"] > 0).all())


def test_vectorize_false_agrees_with_vectorize_true():
    fast = from_pyro(logistic, X, Y)
    slow = from_pyro(logistic, X, Y, vectorize=False)
    z = fast.initial_position(6, torch.Generator().manual_seed(3))
    e_fast, g_fast = energy_and_grad(fast, z)
    e_slow, g_slow = energy_and_grad(slow, z)
    assert e_fast.shape == e_slow.shape == (6,)
    assert torch.allclose(e_fast, e_slow, rtol=1e-5, atol=1e-4)
    assert torch.allclose(g_fast, g_slow, rtol=1e-4, atol=1e-4)
    # a two-dimensional batch of chains goes through both paths too
    zz = z.reshape(2, 3, 1 + D)
    assert torch.allclose(fast(zz), slow(zz), rtol=1e-5, atol=1e-4)
    # and a few sampler steps from the same start and seed stay together
    a = ebmcmc.sample(fast, MALA(0.02), z, num_samples=3, generator=0, progress=False)
    b = ebmcmc.sample(slow, MALA(0.02), z, num_samples=3, generator=0, progress=False)
    assert torch.allclose(a.draws, b.draws, atol=1e-4)


def test_the_energy_is_the_potential_of_pyro():
    """E(z) = -log p(data, T(z)) - log |det dT/dz|, checked against a hand-written potential."""

    def model(y):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("obs", y.shape[0]):
            pyro.sample("y", dist.Normal(0.0, scale), obs=y)

    y = torch.tensor([0.5, -1.0, 2.0])
    energy = from_pyro(model, y)
    u = torch.tensor([[-0.3], [0.0], [0.7]])
    s = u.exp()
    log_p = dist.LogNormal(0.0, 1.0).log_prob(s[:, 0]) + dist.Normal(0.0, s).log_prob(y).sum(-1)
    assert torch.allclose(energy(u), -(log_p + u[:, 0]), atol=1e-5)


def test_model_that_does_not_broadcast_raises_a_clear_error():
    def matmul_model(x, y):  # X @ beta fails once beta carries a chain dimension
        alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[-1]]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=x @ beta + alpha), obs=y)

    with pytest.raises(ValueError, match="does not broadcast over a leading chain dimension"):
        from_pyro(matmul_model, X, Y)

    def flattening_model(x, y):  # runs, but mixes up the chains: caught by value
        alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[-1]]).to_event(1))
        beta = beta.flatten()[: x.shape[-1]]
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1) + alpha), obs=y)

    with pytest.raises(ValueError, match="different potentials when vectorized"):
        from_pyro(flattening_model, X, Y)
    # the one-chain-at-a-time path accepts both
    assert from_pyro(matmul_model, X, Y, vectorize=False).event_shape == (1 + D,)


def test_discrete_latent_raises():
    def mixture(y):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        pyro.sample("y", dist.Normal(3.0 * k, 1.0), obs=y)

    with pytest.raises(ValueError, match="discrete"):
        from_pyro(mixture, torch.tensor(1.0))


def test_bad_models_raise():
    def no_latents(y):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no continuous latent"):
        from_pyro(no_latents, torch.tensor(0.0))
    with pytest.raises(TypeError, match="callable"):
        from_pyro("not a model")
    energy = from_pyro(logistic, X, Y)
    assert isinstance(energy, PyroEnergy)
    with pytest.raises(ValueError, match="size 4"):
        energy(torch.zeros(2, 3))


# --------------------------------------------------------------------------- eight schools

Y8 = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
S8 = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_centered(y, s):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", y.shape[-1]):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, s), obs=y)


def eight_schools_noncentered(y, s):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", y.shape[-1]):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("obs", dist.Normal(theta, s), obs=y)


def _eight_schools_exact() -> dict[str, np.ndarray]:
    """Exact posterior means of the eight schools model, by quadrature over log tau.

    Given tau, the model is linear-Gaussian: y_j | mu ~ N(mu, s_j^2 + tau^2) with
    mu ~ N(0, 25), so mu | tau, y ~ N(m, 1/P) with P = 1/25 + sum 1/v_j, v_j = s_j^2 + tau^2,
    m = sum(y_j / v_j) / P; E[theta_j - mu | tau, y] = (y_j - m) tau^2 / v_j; and
    p(y | tau) = N(y; 0, diag(v) + 25 11^T) (Woodbury and the determinant lemma). The
    posterior of u = log tau is p(y | e^u) HalfCauchy(e^u; 5) e^u, on a fine grid.
    """
    y, s = Y8.double().numpy(), S8.double().numpy()
    u = np.linspace(-20.0, 12.0, 64001)
    tau = np.exp(u)[:, None]
    v = s**2 + tau**2
    prec = 1 / 25 + (1 / v).sum(-1)
    m = (y / v).sum(-1) / prec
    quad = (y**2 / v).sum(-1) - (y / v).sum(-1) ** 2 / prec
    log_det = np.log(v).sum(-1) + np.log(25 * prec)
    log_post = -0.5 * (quad + log_det) - np.log1p((tau[:, 0] / 5) ** 2) + u
    w = np.exp(log_post - log_post.max())
    w /= w.sum()
    theta_minus_mu = (y - m[:, None]) * tau**2 / v
    return {
        "mu": np.array([(w * m).sum()]),
        "tau": np.array([(w * tau[:, 0]).sum()]),
        "theta_tilde": (w[:, None] * theta_minus_mu / tau).sum(0),
        "theta": (w[:, None] * (m[:, None] + theta_minus_mu)).sum(0),
    }


EXACT8 = _eight_schools_exact()


def _exact_rows(names) -> np.ndarray:
    """The exact means in the order of ``summary``'s rows (``mu``, ``tau``, ``theta[0]``...)."""
    out = []
    for row in names:
        site, _, index = row.partition("[")
        out.append(EXACT8[site][int(index[:-1]) if index else 0])
    return np.array(out)


# ----------------------------------------------------------- validation failures diverge


def scale_power_model(y):
    """sigma^4 underflows to 0 in float32 for log sigma < ~-22 although sigma itself is a
    valid positive number: Normal's validation of its scale fails inside the model."""
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", y.shape[0]):
        pyro.sample("y", dist.Normal(x, sigma**4), obs=y)


@pytest.mark.parametrize("vectorize", [True, False])
def test_validation_failure_is_inf_for_that_chain_only(vectorize):
    y = torch.tensor([0.3, -0.4, 1.1])
    with pyro.validation_enabled(True):
        energy = from_pyro(scale_power_model, y, vectorize=vectorize)
        inf, nan = math.inf, math.nan
        # chains 1 (sigma^4 = 0 inside the model), 3 (sigma = inf) and 5 (NaN) are invalid
        z = torch.tensor(
            [[0.0, 0.1], [-30.0, 0.5], [0.3, -0.2], [inf, 0.0], [-0.5, 0.7], [nan, 1.0]]
        )
        e, g = energy_and_grad(energy, z)
        bad = torch.tensor([False, True, False, True, False, True])
        assert e.shape == (6,) and bool(torch.isinf(e[bad]).all()) and bool((e[bad] > 0).all())
        # the valid chains: the energies and gradients of evaluating each on its own
        for i in torch.nonzero(~bad).flatten().tolist():
            ei, gi = energy_and_grad(energy, z[i : i + 1])
            assert torch.allclose(e[i], ei[0], atol=1e-5) and torch.allclose(g[i], gi[0])
            assert bool(torch.isfinite(g[i]).all())
        # the invalid chains' gradients are finite (zero): nothing non-finite leaks out
        assert torch.equal(g[bad], torch.zeros_like(g[bad]))
        # every chain invalid: +inf everywhere, still differentiable
        e_all, g_all = energy_and_grad(energy, z[bad])
        assert bool(torch.isinf(e_all).all()) and bool((g_all == 0).all())
        # a batch of batches goes through too
        assert torch.equal(energy(z.reshape(2, 3, 2)).isinf(), bad.reshape(2, 3))


@pytest.mark.parametrize("validate", [True, False])
def test_failed_factorization_is_inf_for_that_chain_only(validate):
    """A covariance built from a latent is positive definite only for |c| < 1: with
    validation its positive-definite check fails, without it the Cholesky factorization."""

    def model(y):
        c = pyro.sample("c", dist.Normal(0.0, 0.3))
        one = torch.ones_like(c)
        cov = torch.stack([torch.stack([one, c], -1), torch.stack([c, one], -1)], -2)
        mvn = dist.MultivariateNormal(torch.zeros(2), covariance_matrix=cov, validate_args=validate)
        pyro.sample("y", mvn, obs=y)

    energy = from_pyro(model, torch.tensor([0.2, -0.1]))
    z = torch.tensor([[0.5], [1.5], [-0.2], [-3.0]])
    e, g = energy_and_grad(energy, z)
    assert bool(torch.isinf(e[[1, 3]]).all()) and bool(torch.isfinite(e[[0, 2]]).all())
    e0, g0 = energy_and_grad(energy, z[[0, 2]])
    assert torch.allclose(e[[0, 2]], e0) and torch.allclose(g[[0, 2]], g0)
    assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("vectorize", [True, False])
def test_programming_errors_still_raise(vectorize):
    bug = {"kind": None}

    def model(y):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if bug["kind"] == "shape":  # data of the wrong size for its plate
            with pyro.plate("obs", 3):
                pyro.sample("y", dist.Normal(x, 1.0), obs=torch.zeros(5))
        elif bug["kind"] == "value":
            raise ValueError("a bug in the model")
        elif bug["kind"] == "type":
            pyro.sample("y", dist.Normal(x + "1", 1.0), obs=y)
        else:
            with pyro.plate("obs", 3):
                pyro.sample("y", dist.Normal(x, 1.0), obs=y)

    energy = from_pyro(model, torch.zeros(3), vectorize=vectorize)
    z = torch.zeros(4, 1)
    assert bool(torch.isfinite(energy(z)).all())
    bug["kind"] = "shape"
    with pytest.raises((ValueError, RuntimeError), match="(?i)shape"):
        energy_and_grad(energy, z)
    bug["kind"] = "value"
    with pytest.raises(ValueError, match="a bug in the model"):
        energy(z)
    bug["kind"] = "type"
    with pytest.raises(TypeError):
        energy(z)
    # also when the bug shows only after a validation failure sent the batch to the slow path
    bug["kind"] = "value"
    with pytest.raises(ValueError, match="a bug in the model"):
        energy(torch.tensor([[0.0], [math.inf]]))


@pytest.mark.parametrize("model", [eight_schools_centered, eight_schools_noncentered])
@pytest.mark.parametrize("kernel", [MALA(50.0), HMC(20.0, 10)], ids=["MALA", "HMC"])
def test_eight_schools_with_huge_steps_diverges_without_error(model, kernel):
    """Validation on and a huge step size: tau = exp(u) overflows to inf or underflows to 0
    and Normal(mu, tau) fails its validation; those proposals are rejected as divergences."""
    with pyro.validation_enabled(True):
        energy = from_pyro(model, Y8, S8)
        z0 = energy.initial_position(16, generator=torch.Generator().manual_seed(0))
        tr = ebmcmc.sample(
            energy, kernel, z0, num_samples=10, generator=1, progress=False, adaptation=None
        )
    div = tr.stats["diverging"]
    assert div.shape == (16, 10) and bool(div.any())
    assert bool(torch.isfinite(tr.draws).all()) and bool(torch.isfinite(tr.stats["energy"]).all())
    # the rejected chains stayed where they started
    assert torch.equal(tr.draws[:, -1][div.all(1)], z0[div.all(1)])


# ------------------------------------------------------------------ deterministic sites


def test_deterministic_sites_are_recorded_batched_over_chains():
    energy = from_pyro(eight_schools_noncentered, Y8, S8)
    assert energy.sites == ["mu", "tau", "theta_tilde"] and energy.event_shape == (10,)
    assert energy.deterministic_sites == ["theta"]
    assert energy.deterministic_shapes["theta"] == (8,)
    tr = ebmcmc.sample(
        energy,
        MALA(0.05),
        energy.initial_position(6, generator=0),
        num_samples=20,
        generator=1,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    v = tr.variables
    assert set(v) == {"mu", "tau", "theta_tilde", "theta"}
    assert v["theta"].shape == (6, 20, 8) and v["mu"].shape == (6, 20)
    expected = v["mu"][..., None] + v["tau"][..., None] * v["theta_tilde"]
    assert torch.allclose(v["theta"], expected, atol=1e-5)
    assert not torch.allclose(v["theta"][0], v["theta"][1])  # per chain, not shared
    post = arviz_bridge.posterior_dataset(tr.to_arviz())
    assert set(post.data_vars) == {"mu", "tau", "theta_tilde", "theta"}
    assert post["theta"].shape == (6, 20, 8)
    # deterministic=False records the latent sites only
    latent_only = functools.partial(energy.trace_fn, deterministic=False)
    tr2 = ebmcmc.sample(
        energy, MALA(0.05), tr, num_samples=2, generator=2, trace_fn=latent_only, progress=False
    )
    assert set(tr2.variables) == {"mu", "tau", "theta_tilde"}
    # a batch of batches, and the values do not depend on the batch
    z = energy.initial_position(6, generator=3)
    theta = energy.deterministic(z)["theta"]
    assert theta.shape == (6, 8)
    assert torch.allclose(energy.deterministic(z.reshape(2, 3, 10))["theta"][1, 2], theta[5])
    assert torch.allclose(energy.deterministic(z[4:5])["theta"][0], theta[4])


@pytest.mark.parametrize("vectorize", [True, False])
def test_deterministic_sites_that_do_not_broadcast_are_computed_chain_by_chain(vectorize):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        pyro.deterministic("total", x.sum())  # sums over the chains too when vectorized
        pyro.deterministic("pair", torch.stack([x[..., 0], 2 * x[..., 1]], -1))
        pyro.deterministic("constant", torch.tensor([1.0, 2.0]))

    energy = from_pyro(model, vectorize=vectorize)
    assert energy.deterministic_sites == ["total", "pair", "constant"]
    z = torch.arange(12.0).reshape(4, 3)
    d = energy.deterministic(z)
    assert torch.equal(d["total"], z.sum(-1))
    assert torch.equal(d["pair"], torch.stack([z[:, 0], 2 * z[:, 1]], -1))
    assert torch.equal(d["constant"], torch.tensor([1.0, 2.0]).expand(4, 2))
    # and a model without deterministic sites records none
    assert from_pyro(logistic, X, Y).deterministic(torch.zeros(2, 4)) == {}


# ------------------------------------------------------------------- initial positions


def test_initial_position_is_uniform_per_chain_from_its_generator():
    energy = from_pyro(eight_schools_noncentered, Y8, S8)
    global_state = torch.random.get_rng_state()
    z = energy.initial_position(4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, 10) and z.dtype == torch.float32
    assert bool((z.abs() <= 2).all())
    # uniform(-2, 2) per coordinate: mean 0, variance 4/3 (standard errors from 40,000 draws)
    assert abs(float(z.mean())) < 4 * math.sqrt(4 / 3 / z.numel())
    assert abs(float(z.var()) - 4 / 3) < 4 * math.sqrt((16 / 5 - 16 / 9) / z.numel())
    assert torch.unique(z[:, 0]).numel() == 4000  # every chain its own point
    # reproducible from a seed or a generator; the process-wide generator is never used
    assert torch.equal(energy.initial_position(3, generator=7), energy.initial_position(3, 7))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(energy.initial_position(3, g), energy.initial_position(3, 7))
    energy.initial_position(3)  # fresh entropy
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert energy.initial_position(2, 0, radius=0.5, dtype=torch.float64).abs().max() <= 0.5
    assert energy.initial_position(2, 0, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="num_chains"):
        energy.initial_position(0, 0)
    with pytest.raises(ValueError, match="radius"):
        energy.initial_position(2, 0, radius=-1.0)
    with pytest.raises(TypeError, match="generator"):
        energy.initial_position(2, "seed")


def test_eight_schools_default_inits_and_warmup_match_the_exact_posterior():
    """MALA(0.1) with the default warm-up from ``initial_position``: posterior means of every
    latent and deterministic site within 4 MCSE of the exact means (quadrature over tau)."""
    energy = from_pyro(eight_schools_noncentered, Y8, S8)
    tr = ebmcmc.sample(
        energy,
        MALA(0.1),
        energy.initial_position(32, generator=0),
        num_samples=300,
        num_warmup=300,
        generator=100,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    table = summary(tr)
    assert len(table) == 2 + 8 + 8
    z = (table["mean"] - _exact_rows(table.index)) / table["mcse_mean"]
    assert (z.abs() < 4).all(), f"posterior means differ: z = {z.round(2).to_dict()}"
    assert float(tr.stats["diverging"].float().mean()) < 0.01


@pytest.fixture(scope="module")
def nuts_eight_schools():
    """Pyro NUTS on the noncentered eight schools (2 chains of 300 + 500), run once, checked
    against the exact posterior means; Pyro's MCMC returns the latent sites, the deterministic
    ``theta`` is computed from them."""
    draws = _nuts(eight_schools_noncentered, Y8, S8, warmup=300, samples=500, chains=2)
    draws["theta"] = draws["mu"][..., None] + draws["tau"][..., None] * draws["theta_tilde"]
    nuts = summary(draws)
    z_ref = (nuts["mean"] - _exact_rows(nuts.index)) / nuts["mcse_mean"]
    assert (z_ref.abs() < 4).all(), f"NUTS vs exact: z = {z_ref.round(2).to_dict()}"
    return nuts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kernel", "chains", "steps"),
    [(MALA(0.1), 64, 500), (HMC(0.1, 10), 32, 150), (NUTS(), 16, 300), (ChEES(), 64, 300)],
    ids=["MALA", "HMC", "NUTS", "ChEES"],
)
def test_eight_schools_default_inits_and_warmup_agree_with_pyro_nuts(
    kernel, chains, steps, nuts_eight_schools
):
    nuts = nuts_eight_schools
    energy = from_pyro(eight_schools_noncentered, Y8, S8)
    tr = ebmcmc.sample(
        energy,
        kernel,
        energy.initial_position(chains, generator=0),
        num_samples=steps,
        num_warmup=steps,
        generator=100,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    ours = summary(tr)
    assert set(ours.index) == set(nuts.index) and len(nuts) == 2 + 8 + 8  # theta included
    ours = ours.loc[nuts.index]
    se = np.sqrt(ours["mcse_mean"] ** 2 + nuts["mcse_mean"] ** 2)
    z = (ours["mean"] - nuts["mean"]) / se
    assert (z.abs() < 4).all(), f"posterior means differ: z = {z.round(2).to_dict()}"
