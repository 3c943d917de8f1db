"""Tests for the batched No-U-Turn sampler (``ebmcmc.kernels.nuts.NUTS``).

What is checked, and how
------------------------
* **Transition, exactly.** ``_reference_transition`` below is an independent, per-chain,
  recursive implementation of Stan's NUTS transition (``base_nuts``: tree doubling in a random
  direction, recursive subtree building with the U-turn check on the momentum sum and the two
  extra checks across the halves of every merged subtree, divergence when the energy error
  exceeds the threshold, Stan's acceptance statistic). It is fed the random numbers the batched
  kernel drew (the draws depend only on the batch shape, so they can be replayed), so the
  batched kernel must reproduce, chain by chain, the next position, the tree depth, the number
  of leapfrog steps, the divergence flag and the acceptance statistic. This pins down the
  unrolled U-turn bookkeeping, which no moment test could (any symmetric stopping rule leaves
  the target invariant).
* **Invariance.** Chains started at exact draws stay exactly distributed; moments of the
  final positions over many independent chains have iid standard errors.
* **Recovery** with warm-up adaptation (``ebmcmc.sample``): ``|estimate - truth| < 4 MCSE``
  with ArviZ's MCSE of the mean for the draws and for the squared deviations, and rank R-hat
  ``< 1.01`` where the run is long enough (see tests/test_kernels.py for the reasoning).
* Behaviour: tree depth, maximum depth, per-chain depths, idle fraction, divergences with
  finite states, determinism, per-chain step sizes, dtypes, batch/event shapes, validation.

Tolerances are ``Z = 4`` standard errors throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ebmcmc
from ebmcmc.adaptation import WindowAdaptation
from ebmcmc.diagnostics import summary
from ebmcmc.energy import energy_and_grad
from ebmcmc.kernels import NUTS, Info, State
from ebmcmc.targets import Banana, Gaussian, GaussianMixture

Z = 4.0


def std_normal(event_ndim: int):
    def energy(x):
        return 0.5 * (x**2).flatten(start_dim=x.ndim - event_ndim).sum(-1)

    return energy


def corr_gaussian(rho: float = 0.9) -> Gaussian:
    return Gaussian(torch.zeros(2), torch.tensor([[1.0, rho], [rho, 1.0]]))


def mixture_2d() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([[-1.5, 0.0], [1.5, 0.0]]), 0.5 * torch.eye(2), torch.tensor([0.3, 0.7])
    )


def run_steps(kernel, energy, x, seed, n):
    state = kernel.init(energy, x)
    g = torch.Generator().manual_seed(seed)
    infos = []
    for _ in range(n):
        state, info = kernel.step(energy, state, g)
        infos.append(info)
    return state, infos


# ----------------------------------------------------------------------------- reference


def _criterion(v_beg, v_end, rho) -> bool:
    """Stan's no-U-turn criterion: keep going while both ends move along the momentum sum."""
    return bool(v_beg @ rho > 0) and bool(v_end @ rho > 0)


def _reference_transition(energy, x, g, e, p0, eps, inv_m, u_dir, draws, max_depth, thr):
    """One NUTS transition of one chain (flat event), following Stan's recursive algorithm.

    Randomness is replayed from the batched kernel's stream: ``u_dir`` decides the first
    direction; leaf number ``n`` (1-based, in build order) uses ``draws[n - 1]``: ``[0]`` to
    replace the subtree's candidate (progressive multinomial sampling, the same law as Stan's
    recursive merges) and, when it completes a subtree, ``[1]`` to replace the tree's candidate
    (biased progressive sampling) and ``[2]`` to reverse the direction for the next doubling.
    """
    shape = x.shape

    def leapfrog(z, sign):
        x, p, g = z
        h = sign * eps
        p_half = p - 0.5 * h * g
        x_new = x + h * inv_m * p_half
        e_new, g_new = energy_and_grad(energy, x_new.reshape(1, *shape))
        g_new = g_new.reshape(shape)
        p_new = p_half - 0.5 * h * g_new
        return (x_new, p_new, g_new), float(e_new[0])

    h0 = e + 0.5 * float(p0 @ (inv_m * p0))
    st = {"n": 0, "metro": 0.0, "div": False, "z": None}
    sub = {}

    def leaf(sign):
        st["z"], e_new = leapfrog(st["z"], sign)
        st["n"] += 1
        x_new, p_new, g_new = st["z"]
        err = e_new + 0.5 * float(p_new @ (inv_m * p_new)) - h0
        if math.isnan(err) or not bool(torch.isfinite(x_new).all()):
            err = math.inf
        if err > thr:
            st["div"] = True
        st["metro"] += 1.0 if -err > 0 else math.exp(-err)
        u = draws[st["n"] - 1]
        if not st["div"]:
            lw = sub["lw"]
            take = float(u[0]) < float(torch.sigmoid(torch.tensor(-err - lw, dtype=torch.float64)))
            sub["lw"] = float(np.logaddexp(lw, -err))
            if take:
                sub["cand"] = (x_new, e_new, g_new, err)
        return not st["div"]

    def build(depth, sign):
        """Returns valid, v_beg, v_end, rho, p_beg, p_end (in build order)."""
        if depth == 0:
            valid = leaf(sign)
            p = st["z"][1]
            v = inv_m * p
            return valid, v, v, p.clone(), p, p
        ok, v_beg, v_init_end, rho_init, p_beg, p_init_end = build(depth - 1, sign)
        if not ok:
            return False, None, None, None, None, None
        ok, v_final_beg, v_end, rho_final, p_final_beg, p_end = build(depth - 1, sign)
        if not ok:
            return False, None, None, None, None, None
        rho = rho_init + rho_final
        persist = _criterion(v_beg, v_end, rho)
        persist &= _criterion(v_beg, v_final_beg, rho_init + p_final_beg)
        persist &= _criterion(v_init_end, v_end, rho_final + p_init_end)
        return persist, v_beg, v_end, rho, p_beg, p_end

    v0 = inv_m * p0
    z_fwd = z_bck = (x, p0, g)
    p_fwd_fwd = p_fwd_bck = p_bck_fwd = p_bck_bck = p0
    v_fwd_fwd = v_fwd_bck = v_bck_fwd = v_bck_bck = v0
    rho = p0.clone()
    sample, moved = (x, e, g, 0.0), False
    lw_tree = 0.0
    depth = 0
    sign = -1.0 if u_dir < 0.5 else 1.0
    while depth < max_depth:
        sub.clear()
        sub["lw"] = -math.inf
        if sign > 0:
            st["z"] = z_fwd
            rho_bck = rho
            p_bck_fwd, v_bck_fwd = p_fwd_fwd, v_fwd_fwd
            ok, v_fwd_bck, v_fwd_fwd, rho_fwd, p_fwd_bck, p_fwd_fwd = build(depth, 1.0)
            z_fwd = st["z"]
        else:
            st["z"] = z_bck
            rho_fwd = rho
            p_fwd_bck, v_fwd_bck = p_bck_bck, v_bck_bck
            ok, v_bck_fwd, v_bck_bck, rho_bck, p_bck_fwd, p_bck_bck = build(depth, -1.0)
            z_bck = st["z"]
        if not ok:
            break
        depth += 1
        u = draws[st["n"] - 1]
        if float(u[1]) < math.exp(sub["lw"] - lw_tree):
            sample, moved = sub["cand"], True
        lw_tree = float(np.logaddexp(lw_tree, sub["lw"]))
        rho = rho_bck + rho_fwd
        persist = _criterion(v_bck_bck, v_fwd_fwd, rho)
        persist &= _criterion(v_bck_bck, v_fwd_bck, rho_bck + p_fwd_bck)
        persist &= _criterion(v_bck_fwd, v_fwd_fwd, rho_fwd + p_bck_fwd)
        if not persist:
            break
        if float(u[2]) < 0.5:
            sign = -sign
    return {
        "x": sample[0],
        "energy": sample[1],
        "grad": sample[2],
        "energy_error": sample[3],
        "moved": moved,
        "depth": depth,
        "n": st["n"],
        "div": st["div"],
        "accept": st["metro"] / st["n"],
    }


def _compare_with_reference(kernel: NUTS, energy, x, seed, steps=2, inv_m=None):
    """Run the batched kernel and replay every chain through the reference."""
    state = kernel.init(energy, x)
    g = torch.Generator().manual_seed(seed)
    nc, d = x.shape
    inv = torch.ones(nc, d, dtype=x.dtype) if inv_m is None else inv_m.expand(nc, d)
    eps = torch.as_tensor(kernel.step_size, dtype=x.dtype).expand(nc)
    depths, divs = [], []
    for _ in range(steps):
        replay = torch.Generator()
        replay.set_state(g.get_state())
        new, info = kernel.step(energy, state, g)
        xi = torch.randn(x.shape, generator=replay, dtype=x.dtype)
        u0 = torch.rand(1, nc, generator=replay, dtype=x.dtype)[0]
        # per iteration N: one uniform per chain (the leaf's candidate), and two more (the
        # subtree's candidate, the direction) when N completes a doubling
        draws = torch.full((int(info.num_evals[0]), 3, nc), math.nan, dtype=x.dtype)
        for n in range(1, draws.shape[0] + 1):
            draws[n - 1, 0] = torch.rand(nc, generator=replay, dtype=x.dtype)
            if not n & (n + 1):
                draws[n - 1, 1:] = torch.rand(2, nc, generator=replay, dtype=x.dtype)
        for c in range(nc):
            ref = _reference_transition(
                energy,
                state.position[c],
                state.grad[c],
                float(state.energy[c]),
                xi[c] / torch.sqrt(inv[c]),
                float(eps[c]),
                inv[c],
                float(u0[c]),
                draws[:, :, c],
                kernel.max_tree_depth,
                kernel.divergence_threshold,
            )
            msg = f"chain {c}: reference {ref['depth'], ref['n'], ref['div']}"
            assert int(info.tree_depth[c]) == ref["depth"], msg
            assert int(info.num_leapfrog[c]) == ref["n"], msg
            assert bool(info.diverging[c]) == ref["div"], msg
            assert bool(info.accepted[c]) == ref["moved"], msg
            torch.testing.assert_close(new.position[c], ref["x"], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(new.grad[c], ref["grad"], rtol=1e-9, atol=1e-9)
            assert math.isclose(float(new.energy[c]), ref["energy"], rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(float(info.accept_prob[c]), ref["accept"], rel_tol=1e-9)
            assert math.isclose(float(info.energy_error[c]), ref["energy_error"], abs_tol=1e-9)
        depths.append(info.tree_depth)
        divs.append(info.diverging)
        state = new
    return torch.stack(depths), torch.stack(divs)


def test_matches_recursive_reference_on_standard_normal():
    # small steps: trees of depth 2-7, so the U-turn checks of many levels are exercised
    energy = std_normal(1)
    x = torch.randn(24, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    depths, _ = _compare_with_reference(NUTS(step_size=0.1), energy, x, seed=2)
    assert depths.min() >= 2 and depths.max() >= 5


def test_matches_recursive_reference_with_mass_matrix_and_per_chain_steps():
    t = corr_gaussian(0.95)
    x = t.sample(24, generator=torch.Generator().manual_seed(3))
    inv_m = torch.rand(24, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inv_m = inv_m + 0.5
    eps = torch.linspace(0.05, 0.6, 24, dtype=torch.float64)
    kernel = NUTS(step_size=eps, inverse_mass_matrix=inv_m)
    depths, _ = _compare_with_reference(kernel, t, x, seed=5, inv_m=inv_m)
    assert len(set(depths.flatten().tolist())) >= 3  # per-chain depths differ


def test_matches_recursive_reference_on_anisotropic_gaussian():
    # scales 1 and 10 with a step near the stability limit of the stiff direction: its
    # momentum flips sign every step, and Stan's extra checks across subtree halves (second
    # half + the state before it) end trees here that the whole-block checks would not
    sd = torch.tensor([1.0, 10.0], dtype=torch.float64)

    def energy(x):
        return 0.5 * ((x / sd) ** 2).sum(-1)

    x = sd * torch.randn(64, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    _compare_with_reference(NUTS(step_size=1.8), energy, x, seed=9, steps=2)


def test_matches_recursive_reference_with_divergences_and_max_depth():
    # banana with a large step and a low threshold: divergences and rejected subtrees;
    # max_tree_depth=3 caps some trees
    t = Banana()
    x = t.sample(32, generator=torch.Generator().manual_seed(6))
    kernel = NUTS(step_size=0.25, max_tree_depth=3, divergence_threshold=2.0)
    depths, divs = _compare_with_reference(kernel, t, x, seed=7, steps=3)
    assert (depths == 3).any() and (depths < 3).any()
    assert 0.2 < float(divs.double().mean()) < 0.8


# ----------------------------------------------------------------------------- invariance
# Chains started at exact draws stay exact draws under a target-invariant kernel, and they are
# independent, so the moments of the final positions have iid standard errors. With 8,192
# chains a 4-SE check resolves a bias of 4-5 % of a variance; the chains must also have moved.


def _assert_moments(x: torch.Tensor, target, label: str = ""):
    x = x.double().numpy()
    mu, cov = target.mean.numpy(), target.cov.numpy()
    n, d = x.shape
    zm = np.abs(x.mean(0) - mu) / (x.std(0, ddof=1) / math.sqrt(n))
    c = x - mu
    pairs = [(i, i) for i in range(d)] + [(0, 1)]
    zc = [
        abs((c[:, i] * c[:, j]).mean() - cov[i, j])
        / ((c[:, i] * c[:, j]).std(ddof=1) / math.sqrt(n))
        for i, j in pairs
    ]
    assert zm.max() < Z and max(zc) < Z, (label, zm, zc)


@pytest.mark.parametrize(
    "name, target, kernel, min_jump",
    [
        ("gaussian", corr_gaussian(0.9), NUTS(step_size=0.4), 2.0),
        # the banana's curvature limits the step; four steps still move the chains far
        ("banana", Banana(), NUTS(step_size=0.1), 2.0),
        ("mixture", mixture_2d(), NUTS(step_size=0.5), 2.0),
        (
            "gaussian-mass",
            corr_gaussian(0.9),
            NUTS(step_size=0.5, inverse_mass_matrix=torch.tensor([2.0, 0.5])),
            2.0,
        ),
    ],
)
def test_leaves_target_invariant(name, target, kernel, min_jump):
    g = torch.Generator().manual_seed(11)
    x0 = target.sample(8192, generator=g)
    state, infos = run_steps(kernel, target, x0, seed=12, n=4)
    _assert_moments(state.position, target, name)
    # the chains moved: mean squared distance from the start (total variance: gaussian 2,
    # banana 7.1, mixture 3.3; independent draws would give twice that)
    jump = float(((state.position - x0) ** 2).sum(-1).mean())
    assert jump > min_jump, jump
    assert float(torch.stack([i.accept_prob for i in infos]).mean()) > 0.6


def test_leaves_ill_conditioned_gaussian_invariant_with_diagonal_mass():
    # 50-D, condition number 100, random rotation; the inverse mass matrix is the true
    # marginal variances (what warm-up estimates; the rotation leaves a condition number of
    # ~100 after that scaling, so trees are deep). 100 moment checks at 4 SE.
    t = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(13)
    x0 = t.sample(1024, generator=g)
    kernel = NUTS(step_size=0.2, inverse_mass_matrix=torch.diagonal(t.cov))
    state, infos = run_steps(kernel, t, x0, seed=14, n=2)
    x, mu, var = state.position.numpy(), t.mean.numpy(), torch.diagonal(t.cov).numpy()
    n = x.shape[0]
    zm = np.abs(x.mean(0) - mu) / (x.std(0, ddof=1) / math.sqrt(n))
    sq = (x - mu) ** 2
    zv = np.abs(sq.mean(0) - var) / (sq.std(0, ddof=1) / math.sqrt(n))
    assert zm.max() < Z and zv.max() < Z, (zm.max(), zv.max())
    # the trajectories are long (about a half period of the widest direction) and the draws
    # far from the start: the squared jump is comparable to twice the total variance
    assert float(infos[-1].tree_depth.double().mean()) > 3
    jump = float(((state.position - x0) ** 2).sum(-1).mean())
    assert jump > 0.5 * var.sum(), (jump, var.sum())


# ----------------------------------------------------------------------------- interface


def test_step_shapes_info_and_consistency(gen):
    energy = std_normal(1)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    kernel = NUTS(step_size=0.3)
    state = kernel.init(energy, x)
    new, info = kernel.step(energy, state, gen)
    assert isinstance(new, State) and isinstance(info, Info)
    assert new.position.shape == x.shape and new.energy.shape == (64,)
    # the state's energy and gradient are those of its position
    torch.testing.assert_close(new.energy, energy(new.position))
    torch.testing.assert_close(new.grad, new.position)
    assert torch.equal(state.position, x)  # the input state is not modified
    assert info.accept_prob.dtype == torch.float64 and info.accept_prob.shape == (64,)
    assert ((info.accept_prob >= 0) & (info.accept_prob <= 1)).all()
    assert info.accepted.dtype == torch.bool and info.diverging.dtype == torch.bool
    # chains that did not move report it, the others did move
    same = (new.position == x).all(-1)
    assert torch.equal(info.accepted, ~same)
    depth, n_leap, n_eval = info.tree_depth, info.num_leapfrog, info.num_evals
    assert depth.dtype == torch.long and depth.shape == (64,)
    assert ((depth >= 0) & (depth <= kernel.max_tree_depth)).all()
    # a tree of depth j has 2**j - 1 leapfrog steps; a rejected doubling adds at most 2**j
    assert ((n_leap >= 2**depth - 1) & (n_leap <= 2 ** (depth + 1) - 1)).all()
    assert (n_eval == n_eval.max()).all() and int(n_eval[0]) == int(n_leap.max())
    idle = 1 - n_leap.sum() / (64 * n_eval[0])
    torch.testing.assert_close(info.idle_fraction, idle.double())
    assert 0 <= float(info.idle_fraction) < 1
    assert info.energy_error.shape == (64,) and torch.isfinite(info.energy_error).all()
    assert (info.energy_error[~info.accepted] == 0).all()
    assert kernel.evals_per_step == 2**10 - 1


def test_tree_depth_grows_as_step_shrinks_and_respects_max_depth(gen):
    energy = std_normal(1)
    x = torch.randn(256, 4, generator=gen, dtype=torch.float64)
    mean_depth = {}
    for eps in (0.8, 0.2, 0.05):
        _, infos = run_steps(NUTS(step_size=eps), energy, x, seed=1, n=2)
        d = infos[-1].tree_depth
        mean_depth[eps] = float(d.double().mean())
        # per-chain depths differ within the batch
        assert len(torch.unique(d)) >= 2, (eps, d)
    # a U-turn takes about pi / eps leapfrog steps on a standard normal
    assert mean_depth[0.8] < mean_depth[0.2] < mean_depth[0.05], mean_depth
    assert mean_depth[0.05] > 5
    # the maximum depth is a hard cap: a small step would need depth ~6
    state, infos = run_steps(NUTS(step_size=0.05, max_tree_depth=3), energy, x, seed=1, n=3)
    for info in infos:
        assert int(info.tree_depth.max()) == 3
        assert int(info.num_leapfrog.max()) <= 7
        assert int(info.num_evals[0]) <= 7
    assert torch.isfinite(state.position).all()


def test_idle_fraction_counts_lockstep_waste(gen):
    # with step sizes spread over two orders of magnitude the short trees wait for the long
    # ones: most of the batch's evaluations are idle
    energy = std_normal(1)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    eps = torch.logspace(-2, 0, 64, dtype=torch.float64)
    _, infos = run_steps(NUTS(step_size=eps), energy, x, seed=2, n=1)
    assert float(infos[0].idle_fraction) > 0.5
    # one chain alone never idles
    _, infos = run_steps(NUTS(step_size=0.3), energy, x[:1], seed=2, n=3)
    assert all(float(i.idle_fraction) == 0 for i in infos)


# ----------------------------------------------------------------------------- divergences


def _box_energy(bad: float):
    """x^2 / 2 inside |x_i| < 1, ``bad`` (inf or nan) outside."""

    def energy(x):
        e = 0.5 * (x**2).sum(-1)
        return torch.where((x.abs() < 1).all(-1), e, torch.full_like(e, bad))

    return energy


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_energy_is_a_divergence_and_never_enters_the_state(bad, gen):
    energy = _box_energy(bad)
    x = 0.9 * (2 * torch.rand(256, 2, generator=gen, dtype=torch.float64) - 1)
    kernel = NUTS(step_size=0.3)
    state = kernel.init(energy, x)
    any_div = torch.zeros(256, dtype=torch.bool)
    for _ in range(6):
        state, info = kernel.step(energy, state, gen)
        assert torch.isfinite(state.position).all() and torch.isfinite(state.energy).all()
        assert torch.isfinite(state.grad).all() and (state.position.abs() < 1).all()
        assert torch.isfinite(info.accept_prob).all()
        torch.testing.assert_close(state.energy, energy(state.position))
        any_div |= info.diverging
    assert any_div.double().mean() > 0.5  # trajectories leave the box all the time
    assert info.accepted.double().mean() > 0.3  # ... and chains still move


class _NaNGradOnLeft(torch.autograd.Function):
    """x^2 / 2 with a finite value everywhere but a NaN gradient for x < 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.where(x < 0, torch.full_like(x, math.nan), x) * g


def test_non_finite_gradient_is_a_divergence(gen):
    def energy(x):
        return _NaNGradOnLeft.apply(x).sum(-1)

    x = torch.full((256, 1), 0.5, dtype=torch.float64)
    kernel = NUTS(step_size=0.3)
    state = kernel.init(energy, x)
    any_div = torch.zeros(256, dtype=torch.bool)
    for _ in range(4):
        state, info = kernel.step(energy, state, gen)
        assert torch.isfinite(state.grad).all() and (state.position > 0).all()
        any_div |= info.diverging
    assert any_div.double().mean() > 0.5


def test_energy_error_beyond_threshold_is_a_divergence(gen):
    # a stiff Gaussian and a step beyond the stability limit: every first leapfrog step blows
    # up, every chain stays where it is and is flagged
    def stiff(x):
        return 0.5 * 1e6 * (x**2).sum(-1)

    x = 1e-3 * torch.randn(128, 3, generator=gen, dtype=torch.float64)
    kernel = NUTS(step_size=1.0)
    new, info = kernel.step(stiff, kernel.init(stiff, x), gen)
    assert info.diverging.all() and not info.accepted.any()
    assert torch.equal(new.position, x)
    assert (info.num_leapfrog == 1).all() and (info.tree_depth == 0).all()
    assert (info.accept_prob == 0).all()
    # a tiny threshold turns ordinary (stable) energy errors into divergences: trees end at
    # the first state whose energy went up, after one step for about half of the chains
    k2 = NUTS(step_size=1e-4, divergence_threshold=1e-12)
    new2, info2 = k2.step(stiff, k2.init(stiff, x), gen)
    assert float(info2.diverging.double().mean()) > 0.8
    first = info2.num_leapfrog == 1
    assert 0.2 < float(first.double().mean()) < 0.8
    assert torch.equal(new2.position[first], x[first])


# ----------------------------------------------------------------------------- determinism,
# per-chain hyperparameters, dtypes and shapes


def test_same_seed_same_chains_different_seed_different(gen):
    t = Banana()
    x = t.sample(32, generator=gen)
    a, ia = run_steps(NUTS(0.2), t, x, 5, 3)
    b, ib = run_steps(NUTS(0.2), t, x, 5, 3)
    c, _ = run_steps(NUTS(0.2), t, x, 6, 3)
    assert torch.equal(a.position, b.position) and torch.equal(a.grad, b.grad)
    for i, j in zip(ia, ib, strict=True):
        assert torch.equal(i.accept_prob, j.accept_prob)
        assert torch.equal(i.num_leapfrog, j.num_leapfrog)
    assert not torch.equal(a.position, c.position)


def test_per_chain_step_size(gen):
    energy = std_normal(1)
    x = torch.randn(4, 8, 3, generator=gen, dtype=torch.float64)
    # a per-chain tensor equal everywhere runs exactly like the scalar
    a, ia = run_steps(NUTS(0.3), energy, x, 3, 2)
    b, ib = run_steps(NUTS(torch.full((4, 8), 0.3, dtype=torch.float64)), energy, x, 3, 2)
    assert torch.equal(a.position, b.position)
    assert torch.equal(ia[-1].tree_depth, ib[-1].tree_depth)
    # broadcasting (4, 1): one step size per row; tiny steps barely move, large ones do
    steps = torch.tensor([[1e-9], [0.5], [1e-9], [0.5]], dtype=torch.float64)
    state, infos = run_steps(NUTS(steps, max_tree_depth=6), energy, x, 4, 3)
    moved = (state.position - x).norm(dim=-1)
    assert (moved[0::2] < 1e-5).all() and (moved[1::2] > 0.05).all()
    assert (infos[-1].tree_depth[0::2] == 6).all()  # tiny steps hit the cap
    # a step size that does not broadcast is an error naming it
    with pytest.raises(ValueError, match=r"step_size of shape \(3,\) does not broadcast"):
        NUTS(torch.full((3,), 0.1)).step(energy, NUTS(0.1).init(energy, x), gen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_batch_and_event_shapes(dtype, gen):
    energy = std_normal(2)
    x = torch.randn(4, 3, 2, 2, generator=gen, dtype=dtype)
    for inv_m in (None, torch.ones(2, 2), torch.rand(4, 3, 2, 2, generator=gen) + 0.5):
        kernel = NUTS(0.3, inverse_mass_matrix=inv_m)
        state, infos = run_steps(kernel, energy, x, 1, 3)
        assert state.position.shape == x.shape and state.position.dtype == dtype
        assert state.energy.shape == (4, 3) and state.energy.dtype == dtype
        assert state.grad.shape == x.shape and state.grad.dtype == dtype
        torch.testing.assert_close(state.grad, state.position)
        for key in ("tree_depth", "num_leapfrog", "num_evals", "energy_error"):
            assert getattr(infos[-1], key).shape == (4, 3)
        assert infos[-1].accept_prob.dtype == dtype
        assert infos[-1].accepted.any()
    # an identity mass matrix given explicitly equals the default
    a, _ = run_steps(NUTS(0.3), energy, x, 7, 2)
    b, _ = run_steps(NUTS(0.3, inverse_mass_matrix=torch.ones(2, 2)), energy, x, 7, 2)
    torch.testing.assert_close(a.position, b.position)


def test_float32_leaves_target_invariant():
    t = corr_gaussian(0.9)
    x0 = t.sample(8192, generator=torch.Generator().manual_seed(21)).float()
    state, infos = run_steps(NUTS(step_size=0.4), t, x0, seed=22, n=3)
    assert state.position.dtype == torch.float32
    _assert_moments(state.position, t, "float32")
    assert float(((state.position - x0) ** 2).sum(-1).mean()) > 2.0


def test_no_graph_and_no_parameter_gradients(gen):
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def energy(x):
        return 0.5 * (x**2).sum(-1) + net(x).squeeze(-1)

    x = torch.randn(32, 2, generator=gen)
    state, _ = run_steps(NUTS(0.3), energy, x, 0, 2)
    assert not state.position.requires_grad and not state.energy.requires_grad
    assert not state.grad.requires_grad
    assert all(p.grad is None for p in net.parameters())


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: NUTS(0.0), "step_size must be finite and > 0"),
        (lambda: NUTS(math.nan), "step_size must be finite and > 0"),
        (lambda: NUTS(torch.tensor([0.1, -1.0])), "step_size must be finite and > 0"),
        (lambda: NUTS(None), "step_size must be given"),
        (lambda: NUTS(0.1, max_tree_depth=0), "max_tree_depth must be an integer"),
        (lambda: NUTS(0.1, max_tree_depth=2.5), "max_tree_depth must be an integer"),
        (lambda: NUTS(0.1, max_tree_depth=True), "max_tree_depth must be an integer"),
        (lambda: NUTS(0.1, max_tree_depth=31), "max_tree_depth must be an integer"),
        (
            lambda: NUTS(0.1, inverse_mass_matrix=torch.tensor([1.0, 0.0])),
            "inverse_mass_matrix must be finite and > 0",
        ),
        (
            lambda: NUTS(0.1, inverse_mass_matrix=torch.tensor([1.0, math.inf])),
            "inverse_mass_matrix must be finite and > 0",
        ),
        (lambda: NUTS(0.1, divergence_threshold=0.0), "divergence_threshold must be finite"),
        (lambda: NUTS(0.1, divergence_threshold=-1.0), "divergence_threshold must be finite"),
    ],
)
def test_hyperparameter_validation(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_shapes_and_states(gen):
    energy = std_normal(1)
    x = torch.randn(4, 2, generator=gen)
    k = NUTS(0.1, inverse_mass_matrix=torch.ones(3))
    with pytest.raises(ValueError, match=r"inverse_mass_matrix of shape \(3,\) does not broadcast"):
        k.step(energy, k.init(energy, x), gen)
    with pytest.raises(TypeError, match="state must be an ebmcmc State"):
        NUTS(0.1).step(energy, x, gen)
    with pytest.raises(ValueError, match="needs a state with gradients"):
        NUTS(0.1).step(energy, State(x, energy(x), None), gen)
    k = NUTS(0.2)
    assert k.replace(step_size=0.3).step_size == 0.3
    with pytest.raises(AttributeError):
        k.step_size = 0.2  # type: ignore[misc]


# ----------------------------------------------------------------------------- with the driver


def test_sample_adapts_step_size_and_mass_matrix_and_trace_round_trips(tmp_path):
    # a diagonal Gaussian with standard deviations 0.3 and 3: warm-up finds the variances and
    # a step size at the target acceptance 0.8
    def energy(x):
        return 0.5 * ((x / torch.tensor([0.3, 3.0], dtype=x.dtype)) ** 2).sum(-1)

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 2, generator=g, dtype=torch.float64)
    tr = ebmcmc.sample(
        energy, NUTS(0.1), x0, num_samples=50, num_warmup=200, generator=g, progress=False
    )
    k = tr.kernel
    assert isinstance(k, NUTS)
    ratio = k.inverse_mass_matrix / torch.tensor([0.09, 9.0], dtype=torch.float64)
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), k.inverse_mass_matrix
    # dual averaging's averaged step ends on the cautious side of the target (here 0.906: a
    # step too long for most chains just after a window restart pulls it down)
    assert 0.7 < float(tr.stats["accept_prob"].mean()) < 0.95
    path = tr.save(tmp_path / "nuts.nc")
    back = ebmcmc.Trace.load(path)
    assert isinstance(back.kernel, NUTS) and back.kernel.max_tree_depth == 10
    torch.testing.assert_close(back.kernel.inverse_mass_matrix, k.inverse_mass_matrix)
    more = ebmcmc.sample(energy, back.kernel, back, num_samples=5, progress=False)
    assert more.draws.shape == (32, 5, 2)


# ----------------------------------------------------------------------------- recovery
# NUTS with ebmcmc.sample's default warm-up (dual averaging to acceptance 0.8 and a windowed
# diagonal mass matrix) recovers means and variances; MCSE from ArviZ (via
# ebmcmc.diagnostics.summary), R-hat < 1.01 where the run is long enough.


def _check_recovery(trace, target, max_rhat: float | None = 1.01):
    x = trace.draws.numpy()
    mu = target.mean.numpy()
    var = np.diag(target.cov.numpy())
    s = summary({"x": x, "sq": (x - mu) ** 2})
    d = len(mu)
    xs = s.loc[[f"x[{i}]" for i in range(d)]]
    sq = s.loc[[f"sq[{i}]" for i in range(d)]]
    z_mean = np.abs(xs["mean"].to_numpy() - mu) / xs["mcse_mean"].to_numpy()
    z_var = np.abs(sq["mean"].to_numpy() - var) / sq["mcse_mean"].to_numpy()
    rhat = s["r_hat"].to_numpy()
    msg = f"max z mean {z_mean.max():.2f}, max z var {z_var.max():.2f}, max R-hat {rhat.max():.4f}"
    assert (z_mean < Z).all(), msg
    assert (z_var < Z).all(), msg
    if max_rhat is not None:
        assert (rhat < max_rhat).all(), msg
    # the 4-MCSE bound is a real constraint: the MCSE is a small fraction of the scale
    assert (xs["mcse_mean"].to_numpy() < 0.05 * np.sqrt(var)).all(), msg
    return s


def _init(target, chains, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    d = target.event_shape[0]
    return g, scale * torch.randn(chains, d, generator=g, dtype=torch.float64)


def test_recovers_correlated_gaussian():
    # rho = 0.9; 8 chains from N(0, 4 I). Measured bulk ESS ~0.25 per draw (the squared
    # deviations are the slowest), i.e. tau ~4 draws, so 1,000 draws per chain give R-hat
    # 1.004-1.006 (three seeds).
    t = corr_gaussian(0.9)
    g, x0 = _init(t, 8, seed=1)
    tr = ebmcmc.sample(
        t, NUTS(0.1), x0, num_samples=1000, num_warmup=100, generator=g, progress=False
    )
    _check_recovery(tr, t)
    assert not tr.stats["diverging"].any()
    # dual averaging's averaged step ends on the cautious side of the target (here 0.906: a
    # step too long for most chains just after a window restart pulls it down)
    assert 0.7 < float(tr.stats["accept_prob"].mean()) < 0.95


def test_recovers_mixture():
    # two modes 3 apart (sd 0.7): a trajectory crosses the barrier (2.25 nats) about one
    # transition in ten, so R-hat < 1.01 needs ~1,500 draws (the slow test below); here 64
    # chains x 400 draws check the means and variances against their MCSE.
    t = mixture_2d()
    g, x0 = _init(t, 64, seed=3)
    tr = ebmcmc.sample(
        t, NUTS(0.1), x0, num_samples=400, num_warmup=150, generator=g, progress=False
    )
    _check_recovery(tr, t, max_rhat=None)
    # every chain visits both modes
    x = tr.draws[..., 0]
    assert ((x < 0).any(1) & (x > 0).any(1)).all()


@pytest.mark.slow
def test_recovers_mixture_with_rhat():
    # 32 chains x 1,500 draws: R-hat 1.005-1.007 over three seeds
    t = mixture_2d()
    g, x0 = _init(t, 32, seed=1)
    tr = ebmcmc.sample(
        t, NUTS(0.1), x0, num_samples=1500, num_warmup=150, generator=g, progress=False
    )
    _check_recovery(tr, t)


@pytest.mark.slow
def test_recovers_ill_conditioned_gaussian_with_adapted_mass():
    # 50-D, condition number 100, 16 chains from N(0, 4 I), default warm-up (diagonal mass;
    # the random rotation leaves a condition number of ~100 after it, so trees reach depth
    # 5-6). 400 draws gave R-hat 1.004.
    t = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(1))
    g, x0 = _init(t, 16, seed=4)
    tr = ebmcmc.sample(
        t, NUTS(0.1), x0, num_samples=400, num_warmup=300, generator=g, progress=False
    )
    _check_recovery(tr, t)
    # the adapted inverse mass matrix is close to the marginal variances
    ratio = tr.kernel.inverse_mass_matrix / torch.diagonal(t.cov)
    assert ((ratio > 0.6) & (ratio < 1.6)).all(), ratio


@pytest.mark.slow
def test_recovers_banana():
    # As for HMC (tests/test_kernels.py), the step adapted to the default acceptance 0.8 is
    # unstable in the banana's tails (curvature grows like x1^2): chains that reach them stall
    # and R-hat stays high (measured 1.13 at 0.8 and 1.03 at 0.9, 64 chains x 1,000 draws,
    # with divergences). target_accept=0.95 gives a step that is stable nearly everywhere the
    # chains go: 32 chains x 1,000 draws gave R-hat 1.006-1.008 over four seeds and at most 2
    # divergent transitions in 32,000.
    t = Banana()
    g = torch.Generator().manual_seed(9)
    x0 = torch.tensor([1.0, 1.0], dtype=torch.float64) + 0.5 * torch.randn(
        32, 2, generator=g, dtype=torch.float64
    )
    tr = ebmcmc.sample(
        t,
        NUTS(0.1),
        x0,
        num_samples=1000,
        num_warmup=300,
        generator=g,
        progress=False,
        adaptation=WindowAdaptation(target_accept=0.95),
    )
    _check_recovery(tr, t)
    assert float(tr.stats["diverging"].double().mean()) < 1e-3


@pytest.mark.slow
def test_logistic_regression_agrees_with_pyro_nuts():
    """Posterior means and sds of a Bayesian logistic regression (100 points, 4 parameters)
    agree with Pyro's own NUTS within 4 combined MCSE (independent runs: the variance of the
    difference is the sum of the variances)."""
    import random

    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC
    from pyro.infer import NUTS as PyroNUTS

    from ebmcmc import arviz_bridge
    from ebmcmc.energy import from_pyro

    g = torch.Generator().manual_seed(0)
    xs = torch.randn(100, 3, generator=g)
    ys = torch.bernoulli(torch.sigmoid(xs @ torch.tensor([1.0, -0.5, 0.25]) + 0.3), generator=g)

    def model(x, y):
        alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
        beta = pyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[-1]]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1) + alpha), obs=y)

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=[]):
            pyro.set_rng_seed(0)
            mcmc = MCMC(
                PyroNUTS(model, jit_compile=True, ignore_jit_warnings=True),
                num_samples=600,
                warmup_steps=300,
                num_chains=1,
                disable_progbar=True,
            )
            mcmc.run(xs, ys)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    theirs_draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    energy = from_pyro(model, xs, ys)
    tr = ebmcmc.sample(
        energy,
        NUTS(0.1),
        energy.initial_position(64, torch.Generator().manual_seed(1)),
        num_samples=150,
        num_warmup=150,
        generator=2,
        trace_fn=energy.trace_fn,
        progress=False,
    )
    ours, theirs = summary(tr), summary(theirs_draws)
    assert list(ours.index) == list(theirs.index)
    z = (ours["mean"] - theirs["mean"]) / np.sqrt(ours["mcse_mean"] ** 2 + theirs["mcse_mean"] ** 2)
    assert (z.abs() < Z).all(), f"posterior means differ: z = {z.round(2).tolist()}"

    def mcse_sd(draws):
        ds = arviz_bridge.mcse(draws, "sd")
        return np.concatenate([np.ravel(ds[k].values) for k in draws])

    ours_draws = {k: v.numpy() for k, v in tr.variables.items()}
    z_sd = (ours["sd"] - theirs["sd"]) / np.sqrt(
        mcse_sd(ours_draws) ** 2 + mcse_sd(theirs_draws) ** 2
    )
    assert (z_sd.abs() < Z).all(), f"posterior sds differ: z = {z_sd.round(2).tolist()}"
    assert not tr.stats["diverging"].any()


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_device_follows_inputs_and_target_stays_invariant():
    t = corr_gaussian(0.9)
    x0 = t.sample(8192, generator=torch.Generator().manual_seed(31)).cuda()
    g = torch.Generator(device="cuda").manual_seed(32)
    kernel = NUTS(
        step_size=torch.full((8192,), 0.4, dtype=torch.float64, device="cuda"),
        inverse_mass_matrix=torch.tensor([1.0, 1.0], dtype=torch.float64, device="cuda"),
    )
    state = kernel.init(t, x0)
    for _ in range(4):
        state, info = kernel.step(t, state, g)
    for v in (state.position, state.energy, state.grad, info.accept_prob):
        assert v.device.type == "cuda"
    assert info.num_leapfrog.device.type == "cuda"
    _assert_moments(state.position.cpu(), t, "cuda")
    assert float(((state.position - x0) ** 2).sum(-1).mean()) > 2.0
