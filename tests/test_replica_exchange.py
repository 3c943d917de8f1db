"""Tests of ``ReplicaExchange`` (parallel tempering) on a two-mode mixture that MALA cannot cross.

Target: ``0.3 N((-5, 0), I) + 0.7 N((5, 0), I)``. The modes are 10 standard deviations apart;
the energy barrier between them is 11-12 nats, so a MALA chain started in one mode stays there
for far longer than any test runs. The statistic is the mode indicator ``1[x_1 > 0]`` (its
exact mean is 0.7 up to ``Phi(-5) ~ 3e-7``); tolerances are in units of its Monte Carlo
standard error as ebmcmc's ArviZ summary reports it (ESS-based MCSE over all chains).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ebmcmc
from ebmcmc.adaptation import WindowAdaptation
from ebmcmc.diagnostics import summary
from ebmcmc.kernels import HMC, MALA, ReplicaExchange, ReplicaState, State
from ebmcmc.targets import GaussianMixture

DT = torch.float64
MIX = GaussianMixture(
    torch.tensor([[-5.0, 0.0], [5.0, 0.0]], dtype=DT),
    torch.eye(2, dtype=DT),
    torch.tensor([0.3, 0.7], dtype=DT),
)
# inverse temperatures 1 ... 0.03, geometric: at beta = 0.03 the barrier is ~0.4 nats
BETAS = torch.logspace(0, float(np.log10(0.03)), 6, dtype=DT)


def _mode(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0] > 0).to(DT)


def _record(state, info):
    return {
        "x": state.position,
        "mode": _mode(state.position),
        "cold": state.inner.position[0],
        "swap": info.swap_accept_prob.movedim(0, -1),  # (chains, R - 1)
    }


def test_plain_mala_stays_in_its_starting_mode():
    x0 = MIX.sample(32, generator=torch.Generator().manual_seed(1))
    assert 0 < int((x0[:, 0] > 0).sum()) < 32  # both modes are represented at the start
    # step-size adaptation only: a mass matrix pooled over chains in both modes would give
    # MALA proposals as wide as the gap between them; here the point is a local move
    tr = ebmcmc.sample(
        MIX, MALA(0.5), x0, num_samples=300, num_warmup=200, generator=0, progress=False,
        adaptation=WindowAdaptation(mass_matrix=False),
    )  # fmt: skip
    frac = _mode(tr.draws).mean(1)  # per-chain fraction of draws in the right-hand mode
    assert set(frac.tolist()) <= {0.0, 1.0}, "a MALA chain crossed an 11-nat barrier"
    assert torch.equal(frac, _mode(x0))  # every chain is where it started
    # every chain's mode indicator is constant: the summary's R-hat is undefined there (NaN,
    # which reports flag as a failure) or, where defined, far above 1
    r_hat = summary({"mode": _mode(tr.draws).numpy()})["r_hat"].iloc[0]
    assert math.isnan(r_hat) or r_hat > 1.5, f"R-hat {r_hat} should flag the stuck chains"


def test_replica_exchange_recovers_the_mode_weight():
    # every chain starts in the minor (left) mode: the ladder must carry mass across
    x0 = torch.tensor([-5.0, 0.0], dtype=DT).expand(32, 2).clone()
    kernel = ReplicaExchange(MALA(0.5), BETAS)
    tr = ebmcmc.sample(
        MIX,
        kernel,
        x0,
        num_samples=2000,
        num_warmup=300,
        generator=0,
        trace_fn=_record,
        progress=False,
    )
    row = summary(tr, ["mode"]).iloc[0]
    z = (row["mean"] - 0.7) / row["mcse_mean"]
    assert abs(z) < 4, f"mode weight {row['mean']:.4f} vs 0.7: z = {z:.2f}"
    assert row["r_hat"] < 1.01, f"R-hat {row['r_hat']:.4f}"
    # the MCSE is small enough for the test to mean something: 0.7 +- 4 mcse excludes 0.5
    # (chains that never cross) and 1.0 / 0.0 (all in one mode)
    assert 4 * row["mcse_mean"] < 0.05
    # every chain visited both modes
    frac = tr.variables["mode"].mean(1)
    assert ((frac > 0.3) & (frac < 0.95)).all()

    # swap acceptance probabilities (info.extra["swap_accept_prob"]) lie in [0, 1], and
    # neighbouring temperatures do swap
    swap = tr.variables["swap"]
    assert swap.shape == (32, 2000, len(BETAS) - 1)
    assert ((swap >= 0) & (swap <= 1)).all()
    mean_rate = swap.mean((0, 1))
    assert ((mean_rate > 0.05) & (mean_rate < 0.999)).all(), mean_rate
    # the trace records the beta = 1 replica: its position and its untempered energy
    assert torch.equal(tr.draws, tr.variables["cold"])
    assert torch.allclose(tr.stats["energy"], MIX(tr.draws), rtol=1e-12, atol=1e-12)
    # warm-up adapted one step size per replica; hotter replicas take longer steps
    step = tr.kernel.kernel.step_size.flatten()
    assert step.shape == (len(BETAS),) and (step[1:] > step[:-1]).all()
    assert torch.equal(tr.stats["step_size"], step[0].expand(32, 2000))


def test_one_step_info_and_state():
    k = ReplicaExchange(MALA(0.3), betas=(1.0, 0.5, 0.25))
    s = k.init(MIX, torch.zeros(5, 2, dtype=DT))
    assert isinstance(s, ReplicaState) and s.inner.position.shape == (3, 5, 2)
    g = torch.Generator().manual_seed(0)
    parities = []
    for _ in range(4):
        parities.append(s.parity)
        s, info = k.step(MIX, s, g)
        assert info.accept_prob.shape == info.accepted.shape == info.diverging.shape == (5,)
        p = info.swap_accept_prob
        assert p.shape == (2, 5) and ((p >= 0) & (p <= 1)).all()
        assert info.swap_attempted.tolist() in ([True, False], [False, True])
        assert info.inner.accept_prob.shape == (3, 5)  # the inner move of every replica
        # replicas hold tempered energies beta_r E(x_r)
        tempered = torch.tensor([1.0, 0.5, 0.25], dtype=DT)[:, None] * MIX(s.inner.position)
        assert torch.allclose(s.inner.energy, tempered)
        assert torch.equal(s.position, s.inner.position[0])
    assert parities == [0, 1, 0, 1]  # even-odd scheme alternates the proposed pairs


def test_swaps_keep_gradients_consistent_with_inner_hmc():
    k = ReplicaExchange(HMC(0.2, 3), betas=(1.0, 0.3))
    s = k.init(MIX, MIX.sample(4, generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        s, _ = k.step(MIX, s, g)
    x = s.inner.position.detach().requires_grad_(True)
    e = torch.tensor([1.0, 0.3], dtype=DT)[:, None] * MIX(x)
    (grad,) = torch.autograd.grad(e.sum(), x)
    assert torch.allclose(s.inner.grad, grad)


@pytest.mark.parametrize(
    "betas, match",
    [
        ((0.9, 0.5), "start at 1"),
        ((1.0, 0.5, 0.7), "decrease"),
        ((1.0, 1.0, 0.5), "decrease"),
        ((1.0, 0.0), "> 0"),
        ((1.0,), ">= 2"),
        ([[1.0, 0.5]], "1-D"),
    ],
)
def test_bad_ladders_raise(betas, match):
    with pytest.raises(ValueError, match=match):
        ReplicaExchange(MALA(0.1), betas=betas)


def test_needs_a_kernel_and_its_own_state():
    with pytest.raises(TypeError, match="Kernel"):
        ReplicaExchange("mala", betas=(1.0, 0.5))
    k = ReplicaExchange(MALA(0.1), betas=(1.0, 0.5))
    plain = MALA(0.1).init(MIX, torch.zeros(3, 2, dtype=DT))
    with pytest.raises(TypeError, match="its own init"):
        k.step(MIX, plain, torch.Generator().manual_seed(0))


def test_save_load_resume_is_bit_identical(tmp_path):
    """Sampling 60 draws equals sampling 30, saving, loading and sampling 30 more, bit for bit:
    the saved final state keeps every replica and the swap parity."""
    x0 = MIX.sample(8, generator=torch.Generator().manual_seed(2))
    kernel = ReplicaExchange(MALA(0.5), BETAS)
    rec = lambda s, i: {"x": s.position, "hot": s.inner.position[-1]}  # noqa: E731
    common = dict(num_warmup=30, generator=7, trace_fn=rec, progress=False)
    full = ebmcmc.sample(MIX, kernel, x0, num_samples=60, **common)
    first = ebmcmc.sample(MIX, kernel, x0, num_samples=31, **common)  # odd: parity is 1
    assert first.final_state.parity == 1
    loaded = ebmcmc.Trace.load(first.save(tmp_path / "re.nc"))
    st = loaded.final_state
    assert isinstance(st, ReplicaState) and isinstance(st.inner, State)
    assert st.parity == first.final_state.parity
    for f in ("position", "energy", "grad"):
        assert torch.equal(getattr(st.inner, f), getattr(first.final_state.inner, f))
    rest = ebmcmc.sample(MIX, loaded.kernel, loaded, num_samples=29, trace_fn=rec, progress=False)
    joined = ebmcmc.Trace.concatenate([first, rest])
    for name in ("x", "hot"):
        assert torch.equal(joined.variables[name], full.variables[name])
    assert torch.equal(joined.stats["energy"], full.stats["energy"])
    assert torch.equal(rest.final_state.inner.position, full.final_state.inner.position)
