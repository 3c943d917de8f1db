"""Tests of ``LevelGibbs``: Metropolis-within-Gibbs over a joint energy ``E(x, t)``.

The joint energy below has an exact answer: with

    E(x, t) = -log w_t + (x - mu_t)^2 / (2 sigma_t^2) + log sigma_t,

``integral exp(-E(x, t)) dx = w_t sqrt(2 pi)``, so ``p(t) = w_t`` exactly and
``x | t ~ N(mu_t, sigma_t^2)``. Tolerances are 4 Monte Carlo standard errors from ebmcmc's
ArviZ summary (ESS-based); ratio estimators (conditional moments) get theirs by the delta
method, see ``_ratio_z``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ebmcmc
from ebmcmc.diagnostics import summary
from ebmcmc.energy import energy_and_grad
from ebmcmc.kernels import MALA, LevelGibbs, LevelState, RandomWalk, State
from ebmcmc.kernels.level_gibbs import AtLevel

DT = torch.float64
W = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DT)
MU = torch.tensor([-2.0, -0.5, 1.0, 2.5], dtype=DT)
SIG = torch.tensor([0.5, 0.8, 1.2, 1.6], dtype=DT)
L = 4
STEPS = SIG**2  # MALA's step ~ the variance of each level's conditional


def joint(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``E(x, t)`` for ``x`` of shape ``(*batch, 1)`` and integer ``t`` of shape ``batch``."""
    mu, s, w = MU.to(x)[t], SIG.to(x)[t], W.to(x)[t]
    return -torch.log(w) + (x[..., 0] - mu) ** 2 / (2 * s**2) + torch.log(s)


def _record(state, info):
    return {"x": state.position, "level": state.level}


def _ratio_z(num: np.ndarray, den: np.ndarray, truth: float) -> float:
    """z-score of the ratio estimator ``r = mean(num) / mean(den)`` against ``truth``.

    Delta method: ``r - R ~ mean(num - R den) / mean(den)``, so the MCSE of ``r`` is the MCSE
    of the mean of the series ``(num - r den) / mean(den)`` (same autocorrelation as the
    draws, so ArviZ's ESS-based MCSE applies).
    """
    r = num.mean() / den.mean()
    psi = (num - r * den) / den.mean()
    mcse = summary({"psi": psi})["mcse_mean"].iloc[0]
    return float((r - truth) / mcse)


def test_marginal_and_conditionals_match_the_exact_joint():
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS)
    x0 = torch.zeros(64, 1, dtype=DT)
    tr = ebmcmc.sample(
        joint,
        k,
        x0,
        num_samples=600,
        num_warmup=150,
        generator=0,
        trace_fn=_record,
        adaptation=None,
        progress=False,
    )
    level = tr.variables["level"].numpy()
    x = tr.draws[..., 0].numpy()
    onehot = (level[..., None] == np.arange(L)).astype(float)  # (chain, draw, L)
    table = summary({"p": onehot})
    # p(t) = w_t within 4 MCSE per level, and the chains agree
    z_w = (table["mean"].to_numpy() - W.numpy()) / table["mcse_mean"].to_numpy()
    assert (np.abs(z_w) < 4).all(), f"level marginal {table['mean'].tolist()}: z = {z_w}"
    assert (table["r_hat"] < 1.01).all()
    assert (table["mcse_mean"] < 0.01).all()  # enough draws that 4 MCSE is a tight test
    for t in range(L):
        ind = onehot[..., t]
        # E[x | t] = E[x 1_t] / E[1_t] = mu_t
        z_m = _ratio_z(ind * x, ind, float(MU[t]))
        # Var[x | t]: with r the conditional mean, E[(x - r)^2 1_t] / E[1_t] = sigma_t^2
        r = (ind * x).mean() / ind.mean()
        z_v = _ratio_z(ind * (x - r) ** 2, ind, float(SIG[t] ** 2))
        assert abs(z_m) < 4, f"level {t}: E[x | t] z = {z_m:.2f}"
        assert abs(z_v) < 4, f"level {t}: Var[x | t] z = {z_v:.2f}"
    # the recorded step size is the one each chain moved with: its level's before the draw
    level = tr.variables["level"]
    assert torch.equal(tr.stats["step_size"][:, 1:], STEPS[level[:, :-1]])


def test_level_counts_and_state_consistency():
    k = LevelGibbs(MALA(0.3), num_levels=L, step_sizes=STEPS, init_level=1)
    s = k.init(joint, torch.linspace(-3, 3, 50, dtype=DT)[:, None])
    assert isinstance(s, LevelState) and s.level.dtype == torch.long
    assert (s.level == 1).all()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        s, info = k.step(joint, s, g)
        counts = info.level_counts
        assert counts.shape == (L,) and int(counts.sum()) == 50
        assert torch.equal(counts, torch.bincount(s.level, minlength=L))
        assert torch.equal(info.level, s.level)
        # energy and gradient are those at the new level
        e, grad = energy_and_grad(AtLevel(joint, s.level), s.position)
        assert torch.allclose(s.energy, e) and torch.allclose(s.grad, grad)


def test_level_draw_is_the_exact_conditional():
    """Chains at one x: the drawn levels follow p(t | x) = softmax_t(-E(x, t)).

    A random-walk inner kernel with a negligible step keeps x put (to 1e-9), so the level
    frequencies over n = 20000 chains are multinomial with standard error sqrt(p (1-p) / n).
    """
    n, x = 20000, 0.3
    k = LevelGibbs(RandomWalk(1e-9), num_levels=L)
    s = k.init(joint, torch.full((n, 1), x, dtype=DT))
    s, info = k.step(joint, s, torch.Generator().manual_seed(0))
    e = joint(torch.full((L, 1), x, dtype=DT), torch.arange(L))
    p = torch.softmax(-e, 0)
    freq = info.level_counts.to(DT) / n
    se = torch.sqrt(p * (1 - p) / n)
    assert (((freq - p) / se).abs() < 4).all(), (freq, p)


def test_per_level_step_sizes_are_used():
    """The x move of each chain is MALA with step_sizes[level of that chain]."""
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS)
    level = torch.tensor([0, 1, 2, 3, 3, 0])
    x = torch.linspace(-1, 1, 6, dtype=DT)[:, None]
    cond = AtLevel(joint, level)
    e, grad = energy_and_grad(cond, x)
    start = LevelState(State(x, e, grad), level)
    moved, info = k.step(joint, start, torch.Generator().manual_seed(3))
    ref, _ = MALA(STEPS[level]).step(cond, State(x, e, grad), torch.Generator().manual_seed(3))
    assert torch.equal(moved.position, ref.position)
    other, _ = MALA(0.5).step(cond, State(x, e, grad), torch.Generator().manual_seed(3))
    assert not torch.equal(moved.position, other.position)
    # the step size reported is each chain's at the level it moved at
    assert torch.equal(info.step_size, STEPS[level])


def test_level_energies_and_at_level():
    k = LevelGibbs(MALA(0.1), num_levels=L)
    x = torch.randn(3, 5, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    table = k.level_energies(joint, x)
    assert table.shape == (L, 3, 5)
    for t in range(L):
        assert torch.allclose(table[t], joint(x, torch.full((3, 5), t)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_levels": 1}, "num_levels"),
        ({"num_levels": 2.0}, "num_levels"),
        ({"num_levels": True}, "num_levels"),
        ({"num_levels": 4, "step_sizes": (0.1, 0.2)}, "step_sizes"),
        ({"num_levels": 2, "step_sizes": (0.1, -0.2)}, "step_sizes"),
        ({"num_levels": 2, "step_sizes": (0.1, float("nan"))}, "step_sizes"),
        ({"num_levels": 3, "init_level": 3}, "init_level"),
        ({"num_levels": 3, "event_ndim": -1}, "event_ndim"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LevelGibbs(MALA(0.1), **kwargs)


def test_needs_a_kernel_and_its_own_state():
    with pytest.raises(TypeError, match="Kernel"):
        LevelGibbs("mala", num_levels=2)
    k = LevelGibbs(MALA(0.1), num_levels=L)
    plain = State(torch.zeros(2, 1, dtype=DT), torch.zeros(2, dtype=DT), torch.zeros(2, 1))
    with pytest.raises(TypeError, match="its own init"):
        k.step(joint, plain, torch.Generator().manual_seed(0))


def test_save_load_resume_is_bit_identical(tmp_path):
    """The saved final state keeps each chain's level: resuming equals one long run."""
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS)
    x0 = torch.zeros(8, 1, dtype=DT)
    common = dict(generator=11, trace_fn=_record, adaptation=None, progress=False)
    full = ebmcmc.sample(joint, k, x0, num_samples=40, **common)
    first = ebmcmc.sample(joint, k, x0, num_samples=20, **common)
    loaded = ebmcmc.Trace.load(first.save(tmp_path / "levels.nc"))
    assert isinstance(loaded.final_state, LevelState)
    assert torch.equal(loaded.final_state.level, first.final_state.level)
    assert loaded.final_state.level.dtype == torch.long
    rest = ebmcmc.sample(
        joint,
        loaded.kernel,
        loaded,
        num_samples=20,
        trace_fn=_record,
        adaptation=None,
        progress=False,
    )
    joined = ebmcmc.Trace.concatenate([first, rest])
    for name in ("x", "level"):
        assert torch.equal(joined.variables[name], full.variables[name])
    assert torch.equal(joined.stats["step_size"], full.stats["step_size"])
    assert torch.equal(rest.final_state.level, full.final_state.level)


# ------------------------------------------------------------------ several inner steps


def _start(levels, dtype=DT):
    x = torch.linspace(-1, 1, len(levels), dtype=dtype)[:, None]
    level = torch.tensor(levels)
    e, grad = energy_and_grad(AtLevel(joint, level), x)
    return LevelState(State(x, e, grad), level)


def test_inner_steps_are_that_many_inner_moves_then_one_draw():
    """inner_steps=K is K inner steps at the chain's level (its step size), then the level
    draw: bit for bit what doing it by hand gives, and the info summarises the K moves."""
    K = 4
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS, inner_steps=K)
    start = _start([0, 1, 2, 3, 3, 0, 2])
    moved, info = k.step(joint, start, torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    level = start.level
    cond, mala = AtLevel(joint, level), MALA(STEPS[level])
    s, probs, acc = start.inner, [], []
    for _ in range(K):
        s, i = mala.step(cond, s, g)
        probs.append(i.accept_prob)
        acc.append(i.accepted)
    draw = LevelGibbs(RandomWalk(1.0), num_levels=L)  # only its level draw is used below
    table = draw.level_energies(joint, s.position)
    logits = -table.T
    u = torch.rand(logits.shape, generator=g, dtype=DT).clamp_(min=torch.finfo(DT).tiny)
    new_level = torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)

    assert torch.equal(moved.position, s.position)
    assert torch.equal(moved.level, new_level)
    mean_prob = torch.stack(probs).mean(0)
    assert torch.allclose(info.accept_prob, mean_prob)
    assert torch.equal(info.accepted, torch.stack(acc).any(0))
    assert torch.equal(info.moved_level, level) and torch.equal(info.level, new_level)
    assert torch.equal(info.level_moves, torch.bincount(level, minlength=L))
    for t in range(L):
        assert torch.allclose(info.level_accept[t], mean_prob[level == t].mean())
    assert torch.equal(info.level_counts, torch.bincount(new_level, minlength=L))
    assert k.evals_per_step == K * MALA.evals_per_step + 1


def test_level_accept_is_nan_where_no_chain_moved():
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS, inner_steps=2)
    _, info = k.step(joint, _start([1, 1, 3]), torch.Generator().manual_seed(0))
    assert info.level_moves.tolist() == [0, 2, 0, 1]
    assert torch.isnan(info.level_accept[[0, 2]]).all()
    assert torch.isfinite(info.level_accept[[1, 3]]).all()


def test_one_inner_step_is_the_default_and_unchanged():
    a = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS)
    b = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS, inner_steps=1)
    assert a == b and a.inner_steps == 1
    sa, ia = a.step(joint, _start([0, 2, 3]), torch.Generator().manual_seed(1))
    sb, ib = b.step(joint, _start([0, 2, 3]), torch.Generator().manual_seed(1))
    assert torch.equal(sa.position, sb.position) and torch.equal(ia.accept_prob, ib.accept_prob)
    assert ia.inner is not None and torch.equal(ia.inner.accept_prob, ia.accept_prob)


def test_level_draw_after_several_inner_steps_is_the_exact_conditional():
    """As above with 3 inner steps of a random walk that keeps x put: the drawn levels follow
    softmax_t(-E(x, t)) within 4 standard errors."""
    n, x = 20000, -0.7
    k = LevelGibbs(RandomWalk(1e-9), num_levels=L, inner_steps=3)
    s = k.init(joint, torch.full((n, 1), x, dtype=DT), level=torch.zeros(n, dtype=torch.long))
    s, info = k.step(joint, s, torch.Generator().manual_seed(2))
    p = torch.softmax(-joint(torch.full((L, 1), x, dtype=DT), torch.arange(L)), 0)
    freq = info.level_counts.to(DT) / n
    assert (((freq - p) / torch.sqrt(p * (1 - p) / n)).abs() < 4).all(), (freq, p)


def test_init_at_given_levels():
    k = LevelGibbs(MALA(0.5), num_levels=L, step_sizes=STEPS)
    x = torch.zeros(3, 1, dtype=DT)
    s = k.init(joint, x, level=torch.tensor([3, 0, 1]))
    assert s.level.tolist() == [3, 0, 1] and s.level.dtype == torch.long
    assert torch.allclose(s.energy, joint(x, torch.tensor([3, 0, 1])))
    with pytest.raises(ValueError, match="level"):
        k.init(joint, x, level=torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="shape"):
        k.init(joint, x, level=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        k.init(joint, x, level=torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_inner_steps_raise(n):
    with pytest.raises(ValueError, match="inner_steps"):
        LevelGibbs(MALA(0.1), num_levels=2, inner_steps=n)
