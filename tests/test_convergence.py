"""The end-of-run check's R-hat against ArviZ's, and its messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmcmc.arviz_bridge import rhat
from ebmcmc.convergence import check_run, rank_rhat


def _arviz(x: torch.Tensor) -> np.ndarray:
    return rhat({"x": x.numpy()})["x"].values.reshape(-1)


@pytest.mark.parametrize(
    "shape,ties",
    [
        ((64, 400, 3), False),
        ((64, 401, 3), False),
        ((8, 200, 2), True),
        ((5, 9, 1), True),
        ((2, 4, 1), False),
    ],  # fmt: skip
)
def test_rank_rhat_equals_arviz(shape, ties):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    x[0] += 0.3  # one chain off, so that the values are not all near 1
    if ties:  # rounded values tie (as MALA's repeated rejections do)
        x = torch.round(x * 2)
    np.testing.assert_allclose(rank_rhat(x).numpy(), _arviz(x), rtol=0, atol=1e-12)


def test_rank_rhat_flags_constant_and_nonfinite_coordinates_nan():
    x = torch.randn(4, 50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[..., 1] = 2.0
    x[1, 3, 2] = float("nan")
    r = rank_rhat(x)
    assert torch.isfinite(r[0]) and torch.isnan(r[1:]).all()


def test_check_run_counts_and_names_the_worst_variable():
    g = torch.Generator().manual_seed(1)
    good = torch.randn(8, 300, 2, generator=g, dtype=torch.float64)
    bad = torch.randn(8, 300, generator=g, dtype=torch.float64)
    bad[:4] += 2.0
    found = check_run({"a": good, "b": bad}, None, None)
    assert found.rhat_checked == 3 and found.rhat_over == 1
    assert found.max_rhat == pytest.approx(float(_arviz(bad[..., None])[0]), abs=1e-12)
    assert "'b'" in found.messages[0] and "1 of 3 coordinates" in found.messages[0]


def test_long_runs_are_thinned_for_the_check_and_still_flagged():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 2000, 1, generator=g, dtype=torch.float64)
    x[:8] += 0.5  # a few chains elsewhere
    full = float(_arviz(x)[0])
    found = check_run({"x": x}, None, None, max_values=16_000)  # every 8th draw
    assert found.rhat_over == 1
    assert found.max_rhat == pytest.approx(float(_arviz(x[:, ::8])[0]), abs=1e-12)
    # the same verdict as the full run (R-hat 1.014), nearly the same value
    assert full >= 1.01 and abs(found.max_rhat - full) < 0.002
    # short runs are read whole
    assert check_run({"x": x[:, :200]}, None, None).max_rhat == pytest.approx(
        float(_arviz(x[:, :200])[0]), abs=1e-12
    )
