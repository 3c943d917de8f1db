"""Tests for ebmcmc.diagnostics.summary: layout, agreement with NumPy and the ArviZ bridge,
input forms and errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ebmcmc import Trace, arviz_bridge, sample
from ebmcmc.diagnostics import summary
from ebmcmc.diagnostics.summary import COLUMNS
from ebmcmc.kernels import MALA


def test_columns_index_and_values_match_numpy_and_bridge(rng):
    x = rng.normal(size=(4, 300, 2, 3)) + np.arange(6).reshape(2, 3)
    y = rng.normal(size=(4, 300))
    s = summary({"x": x, "y": y})
    assert (
        list(s.columns) == COLUMNS == ["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
    )
    assert list(s.index) == [f"x[{i},{j}]" for i in range(2) for j in range(3)] + ["y"]
    np.testing.assert_allclose(s.loc["y", "mean"], y.mean())
    np.testing.assert_allclose(s.loc["y", "sd"], y.std(ddof=1))
    flat = x.reshape(4, 300, 6)
    np.testing.assert_allclose(s["mean"].to_numpy()[:6], flat.mean((0, 1)))
    np.testing.assert_allclose(s["sd"].to_numpy()[:6], flat.std((0, 1), ddof=1))
    ds = {"x": x, "y": y}
    for col, fn in (
        ("mcse_mean", lambda: arviz_bridge.mcse(ds, "mean")),
        ("ess_bulk", lambda: arviz_bridge.ess(ds, "bulk")),
        ("ess_tail", lambda: arviz_bridge.ess(ds, "tail")),
        ("r_hat", lambda: arviz_bridge.rhat(ds, "rank")),
    ):
        ref = fn()
        got = s[col].to_numpy()
        np.testing.assert_allclose(got[:6], ref["x"].values.reshape(-1), rtol=1e-12)
        np.testing.assert_allclose(got[6], float(ref["y"]), rtol=1e-12)
    # well-mixed iid draws: R-hat ~ 1, ESS ~ 1,200, MCSE ~ sd / sqrt(1,200); with 300 draws
    # per chain the ESS estimate scatters by ~10 % (Geyer truncation), hence the loose bounds
    assert (s["r_hat"] < 1.01).all()
    assert ((s["ess_bulk"] > 0.7 * 1200) & (s["ess_bulk"] < 1.3 * 1200)).all()
    np.testing.assert_allclose(s["mcse_mean"], s["sd"] / math.sqrt(1200), rtol=0.15)


def test_single_chain_has_nan_r_hat(rng):
    s = summary({"x": rng.normal(size=(1, 400, 2))})
    assert s["r_hat"].isna().all()
    assert s[["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail"]].notna().all().all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_draws_are_refused(rng, bad):
    x = rng.normal(size=(2, 50, 2))
    x[1, 7, 0] = bad
    with pytest.raises(ValueError, match="variable 'x' has non-finite draws"):
        summary({"x": x})
    tr = Trace({"x": torch.from_numpy(x)}, {})
    with pytest.raises(ValueError, match="non-finite draws"):
        summary(tr)


def test_input_validation(rng):
    with pytest.raises(ValueError, match="at least 4 draws per chain"):
        summary({"x": rng.normal(size=(2, 3))})
    with pytest.raises(TypeError, match="variable 's' is not numeric"):
        summary({"s": np.array([["a"] * 5] * 2)})
    with pytest.raises(KeyError, match=r"variables \['z'\] not in the trace"):
        summary({"x": rng.normal(size=(2, 10))}, var_names=["z"])


def test_trace_dict_and_inference_data_give_the_same_frame():
    tr = sample(
        lambda x: 0.5 * (x**2).sum(-1),
        MALA(0.8),
        torch.zeros(4, 2, dtype=torch.float64),
        num_samples=100,
        generator=0,
        progress=False,
        trace_fn=lambda s, i: {"x": s.position, "accepted": i.accepted},
    )
    a = summary(tr)
    b = summary({k: v.numpy() for k, v in tr.variables.items()})
    c = summary(tr.to_arviz())
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a.loc[c.index], c)
    assert "accepted" in a.index  # a boolean variable is summarised as 0/1
    only_x = summary(tr, var_names=["x"])
    assert list(only_x.index) == ["x[0]", "x[1]"]
    pd.testing.assert_frame_equal(only_x, a.loc[["x[0]", "x[1]"]])


def test_summary_flags_unconverged_chains(rng):
    x = rng.normal(size=(4, 200)) + np.array([0.0, 0.0, 0.0, 3.0])[:, None]
    s = summary({"x": x})
    assert s.loc["x", "r_hat"] > 1.1
