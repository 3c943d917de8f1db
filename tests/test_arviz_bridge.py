"""Tests for ebmcmc.arviz_bridge against independent NumPy formulas.

Where a diagnostic has a closed form (split R-hat, BFMI, MCSE = sd / sqrt(ESS)) the bridge must
match it to rounding. Effective sample sizes are estimates; they are checked loosely against
their known values for iid and AR(1) draws (over 20 seeds, ESS/N for 8 x 1,000 iid draws fell in
[0.89, 1.04] and for AR(1) in [0.89, 1.10], hence the bounds below).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from ebmcmc import arviz_bridge as ab


def iid(rng, chains=8, draws=1000, *shape):
    return rng.normal(size=(chains, draws, *shape))


def ar1(rng, rho, chains=8, draws=4000):
    z = rng.normal(size=(chains, draws))
    y = np.empty_like(z)
    y[:, 0] = z[:, 0]
    s = np.sqrt(1 - rho**2)
    for i in range(1, draws):
        y[:, i] = rho * y[:, i - 1] + s * z[:, i]
    return y


def split_rhat(x: np.ndarray) -> float:
    """Gelman-Rubin R-hat on chains split in halves (Vehtari et al. 2021, eq. 3-4)."""
    half = x.shape[1] // 2
    s = np.concatenate([x[:, :half], x[:, -half:]], axis=0)
    n = s.shape[1]
    b = n * s.mean(1).var(ddof=1)
    w = s.var(1, ddof=1).mean()
    return float(np.sqrt(((n - 1) / n * w + b / n) / w))


def test_version_constants():
    assert ab.ARVIZ_MAJOR == int(ab.ARVIZ_VERSION.split(".")[0])
    assert ab.arviz_module().__name__ == "arviz"


def test_dataset_dims_and_errors():
    ds = ab.dataset({"x": np.zeros((2, 5, 3, 4)), "y": np.zeros((2, 5))})
    assert ds["x"].dims == ("chain", "draw", "x_dim_0", "x_dim_1")
    assert ds["y"].dims == ("chain", "draw")
    with pytest.raises(ValueError, match=r"'z' must have shape \(chain, draw, ...\)"):
        ab.dataset({"z": np.zeros(5)})


def test_to_arviz_and_posterior_dataset(rng):
    x = iid(rng, 2, 10, 3)
    obj = ab.to_arviz({"x": x}, {"energy": x[..., 0]}, attrs={"kernel": "MALA"})
    post = ab.posterior_dataset(obj)
    assert isinstance(post, xr.Dataset) and list(post.data_vars) == ["x"]
    np.testing.assert_array_equal(post["x"].values, x)
    assert post.attrs["kernel"] == "MALA"
    assert hasattr(obj, "posterior")
    assert ab.posterior_dataset(post) is post
    no_stats = ab.to_arviz({"x": x})
    assert "sample_stats" not in list(getattr(no_stats, "groups", lambda: [])())
    with pytest.raises(TypeError, match="no posterior group"):
        ab.posterior_dataset(object())


def test_iid_ess_near_n_and_mcse_near_sd_over_sqrt_n(rng):
    x = iid(rng, 8, 1000, 3)
    n = x.shape[0] * x.shape[1]
    for method in ("bulk", "tail", "mean"):
        ratio = ab.ess(x, method)["x"].values / n
        assert np.all((ratio > 0.85) & (ratio < 1.15)), (method, ratio)
    se = ab.mcse(x)["x"].values
    naive = x.std(axis=(0, 1), ddof=1) / np.sqrt(n)
    np.testing.assert_allclose(se, naive, rtol=0.1)
    # MCSE of the mean is exactly sd / sqrt(ESS_mean)
    np.testing.assert_allclose(
        se, x.std(axis=(0, 1), ddof=1) / np.sqrt(ab.ess(x, "mean")["x"].values), rtol=1e-8
    )
    assert np.all(ab.rhat(x)["x"].values < 1.01)


def test_ar1_ess_matches_integrated_autocorrelation(rng):
    rho = 0.8
    y = ar1(rng, rho)
    expected = y.size * (1 - rho) / (1 + rho)  # N / tau with tau = (1 + rho) / (1 - rho)
    ratio = float(ab.ess(y, "mean")["x"]) / expected
    assert 0.8 < ratio < 1.2, ratio
    se = float(ab.mcse(y)["x"])
    assert 0.85 < se / (y.std(ddof=1) / np.sqrt(expected)) < 1.15


def test_rhat_matches_split_formula_and_flags_disagreeing_chains(rng):
    x = iid(rng, 4, 500)
    assert float(ab.rhat(x, "split")["x"]) == pytest.approx(split_rhat(x), rel=1e-10)
    shifted = x + np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    assert float(ab.rhat(shifted, "split")["x"]) == pytest.approx(split_rhat(shifted), rel=1e-10)
    assert float(ab.rhat(shifted)["x"]) > 1.05
    # a trend within chains is caught by splitting them
    trend = x + np.linspace(0, 2, 500)[None, :]
    assert float(ab.rhat(trend)["x"]) > 1.05


def test_rhat_needs_two_chains_and_draws_needed(rng):
    with pytest.raises(ValueError, match="needs at least 2 chains, got 1"):
        ab.rhat(iid(rng, 1, 100))
    for fn in (ab.ess, ab.mcse, ab.rhat):
        with pytest.raises(ValueError, match="at least 4 draws per chain, got 3"):
            fn(iid(rng, 2, 3))
    # ESS and MCSE work with a single chain
    assert float(ab.ess(iid(rng, 1, 500))["x"]) > 300


def test_input_forms_agree(rng):
    x = iid(rng, 4, 200, 2)
    a = ab.ess(x)["x"].values
    b = ab.ess({"x": x})["x"].values
    c = ab.ess(ab.dataset({"x": x}))["x"].values
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert ab.mcse(x, "sd")["x"].shape == (2,)


def test_bfmi_matches_formula(rng):
    e = np.cumsum(rng.normal(size=(3, 500)), axis=1) * 0.1 + rng.normal(size=(3, 500))
    # ArviZ's definition: mean squared energy jump over the (ddof=1) energy variance
    expected = (np.diff(e, axis=1) ** 2).mean(1) / e.var(1, ddof=1)
    np.testing.assert_allclose(ab.bfmi(e), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"energy must have shape \(chain, draw\)"):
        ab.bfmi(np.zeros(10))
