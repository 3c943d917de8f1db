"""MALA with a dense preconditioner: the kernel, its validation, and warm-up adapting it.

Statistical checks: every coordinate's mean and variance within 4 Monte Carlo standard errors
(ArviZ's MCSE) of the exact values, and rank R-hat < 1.01.
"""

from __future__ import annotations

import pytest
import torch
from test_defaults import _check

import ebmcmc
from ebmcmc import WindowAdaptation
from ebmcmc.kernels import MALA
from ebmcmc.kernels.langevin import DENSE_AUTO_MAX_DIM
from ebmcmc.targets import Gaussian

DT = torch.float64
# correlation 0.99 and scales 1 and 3: a diagonal preconditioner leaves a condition number ~200
COV = torch.tensor([[1.0, 0.99 * 3.0], [0.99 * 3.0, 9.0]], dtype=DT)
TARGET = Gaussian(torch.tensor([1.0, -2.0], dtype=DT), COV)


def _x0(n: int, d: int = 2, seed: int = 1) -> torch.Tensor:
    return 4 * torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT) - 2


def test_dense_mala_leaves_the_target_invariant():
    # started from exact draws with the exact covariance as M⁻¹: no warm-up, no adaptation
    x0 = TARGET.sample(256, generator=0)
    kernel = MALA(0.8, inverse_mass_matrix=COV, dense_mass=True)
    trace = ebmcmc.sample(TARGET, kernel, x0, 400, generator=2, progress=False)
    assert 0.4 < float(trace.stats["accept_prob"].mean()) < 0.95
    _check(trace, TARGET)


def test_warm_up_adapts_a_dense_matrix_by_default_and_gets_the_target_right():
    trace = ebmcmc.sample(TARGET, MALA(), _x0(64), 600, num_warmup=600, generator=3,
                          progress=False)  # fmt: skip
    k = trace.kernel
    assert k.dense_mass is True and k.inverse_mass_matrix.shape == (2, 2)
    err = torch.linalg.matrix_norm(k.inverse_mass_matrix - COV) / torch.linalg.matrix_norm(COV)
    assert float(err) < 0.1, f"adapted covariance off by {float(err):.2f} (relative)"
    _check(trace, TARGET)


def test_a_diagonal_preconditioner_is_what_this_target_defeats():
    # the same run with dense_mass=False: diagonal matrix, and the R-hat check says the chains
    # have not mixed (so the dense default above is what makes MALA() right here)
    with pytest.warns(ebmcmc.sampling.ConvergenceWarning, match="R-hat"):
        trace = ebmcmc.sample(TARGET, MALA(dense_mass=False), _x0(64), 600, num_warmup=600,
                              generator=3, progress=False)  # fmt: skip
    assert trace.kernel.inverse_mass_matrix.shape == (2,)


@pytest.mark.parametrize(
    "case",
    ["too many coordinates", "image events", "per-chain adaptation", "inside a composite"],
)
def test_the_default_stays_diagonal_where_a_dense_matrix_does_not_fit(case):
    if case == "too many coordinates":
        d = DENSE_AUTO_MAX_DIM + 1
        target = Gaussian(torch.zeros(d, dtype=DT), torch.eye(d, dtype=DT))
        x0, kernel, adaptation = _x0(8, d), MALA(), "default"
    elif case == "image events":
        target = lambda x: 0.5 * (x**2).sum((-2, -1))  # noqa: E731
        target.event_shape = (2, 2)
        x0, kernel, adaptation = torch.zeros(8, 2, 2, dtype=DT), MALA(), "default"
    elif case == "per-chain adaptation":
        target, x0, kernel = TARGET, _x0(8), MALA()
        adaptation = WindowAdaptation(per_chain=True)
    else:
        from ebmcmc.kernels import Masked

        target, x0, adaptation = TARGET, _x0(8), "default"
        kernel = Masked(MALA(), torch.tensor([True, True]))
    trace = ebmcmc.sample(target, kernel, x0, 5, num_warmup=120, generator=0, progress=False,
                          adaptation=adaptation, check=False)  # fmt: skip
    leaf = trace.kernel.kernel if case == "inside a composite" else trace.kernel
    assert leaf.dense_mass is None
    assert leaf.inverse_mass_matrix.shape[-1] == x0.shape[-1]
    assert leaf.inverse_mass_matrix.ndim != 2 or case in ("image events", "per-chain adaptation")


def test_dense_mass_true_needs_flat_shared_events():
    with pytest.raises(ValueError, match="dense_mass=True needs flat events"):
        ebmcmc.sample(TARGET, MALA(dense_mass=True), _x0(8), 5, num_warmup=50, generator=0,
                      progress=False, adaptation=WindowAdaptation(per_chain=True))  # fmt: skip


@pytest.mark.parametrize(
    "matrix,match",
    [
        (torch.ones(2), "square"),
        (torch.ones(2, 3), "square"),
        (torch.tensor([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
        (torch.tensor([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), "finite"),
    ],
)
def test_a_bad_dense_matrix_is_refused(matrix, match):
    with pytest.raises(ValueError, match=match):
        MALA(0.1, inverse_mass_matrix=matrix, dense_mass=True)


def test_dense_mass_must_be_a_bool_or_none():
    with pytest.raises(ValueError, match="dense_mass must be True, False or None"):
        MALA(0.1, dense_mass="yes")  # type: ignore[arg-type]


def test_a_dense_matrix_of_the_wrong_size_is_refused_at_the_first_step():
    kernel = MALA(0.1, inverse_mass_matrix=torch.eye(3, dtype=DT), dense_mass=True)
    state = kernel.init(TARGET, _x0(4))
    with pytest.raises(ValueError, match="needs flat events of 3 coordinates"):
        kernel.step(TARGET, state)


def test_dense_and_diagonal_agree_when_the_matrix_is_diagonal():
    # the same proposal, acceptance and draws (up to rounding) for a diagonal matrix written
    # densely
    diag = torch.tensor([0.5, 2.0], dtype=DT)
    x0 = _x0(16)
    a = ebmcmc.sample(TARGET, MALA(0.3, inverse_mass_matrix=diag), x0, 30, generator=5,
                      progress=False, check=False)  # fmt: skip
    b = ebmcmc.sample(TARGET, MALA(0.3, inverse_mass_matrix=torch.diag(diag), dense_mass=True),
                      x0, 30, generator=5, progress=False, check=False)  # fmt: skip
    torch.testing.assert_close(a.draws, b.draws, rtol=1e-9, atol=1e-9)


def test_a_trace_written_before_dense_mass_existed_loads_as_diagonal():
    from pathlib import Path

    from ebmcmc.trace import Trace

    old = Path(__file__).parent / "data" / "crafted_traces" / "valid.nc"  # no dense_mass field
    kernel = Trace.load(old).kernel
    assert isinstance(kernel, MALA) and kernel.dense_mass is None
