"""Tests of Pyro models as ebmcmc energies (``ebmcmc.energy.from_pyro``).

The reference is Pyro's own NUTS on the same model: posterior means agree within 4 combined
Monte Carlo standard errors, ``|m_ebmcmc - m_nuts| < 4 sqrt(mcse_ebmcmc^2 + mcse_nuts^2)``
(the two runs are independent, so the variance of the difference is the sum of the
variances; for a correct pair |z| < 4 fails with probability 6e-5 per coordinate).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS

import ebmcmc
from ebmcmc import arviz_bridge
from ebmcmc.diagnostics import summary
from ebmcmc.energy import energy_and_grad, from_pyro
from ebmcmc.kernels import HMC, MALA
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


def _nuts(model, *args, warmup: int, samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Pyro NUTS, one chain, without disturbing the global random states."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=[]):
            pyro.set_rng_seed(seed)
            kernel = NUTS(model, jit_compile=True, ignore_jit_warnings=True)
            mcmc = MCMC(
                kernel, num_samples=samples, warmup_steps=warmup, num_chains=1, disable_progbar=True
            )
            mcmc.run(*args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}


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
