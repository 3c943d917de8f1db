"""The kernel contract, checked on every kernel and every composite.

Each entry of ``KERNELS`` is a factory (dtype -> kernel) with the target it is exact for. Every
kernel must: give batch-shaped energies and infos and keep the positions' shape and dtype; take
per-chain hyperparameters; reject non-finite proposals and flag them diverging; give the same
chains for the same seed; save, load and resume bit for bit; take over another kernel's state;
and (exact kernels) leave its target invariant, checked from exact draws within 4 Monte Carlo
standard errors. The rebuilt layer also reproduces the 0.1 kernels' outputs bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import ebmcmc
from ebmcmc import Trace
from ebmcmc.adaptation import WindowAdaptation, leaves, replace_at
from ebmcmc.kernels import (
    HMC,
    MALA,
    NUTS,
    ChainMask,
    ChEES,
    Cycle,
    IndependenceMetropolis,
    Info,
    Langevin,
    LevelGibbs,
    Masked,
    RandomWalk,
    ReplicaExchange,
    State,
)
from ebmcmc.targets import Gaussian

DT = torch.float64
MEAN = torch.tensor([0.5, -0.5], dtype=DT)
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=DT)
TARGET = Gaussian(MEAN, COV)
BATCH = (3, 4)


def _per_chain_steps(dtype):
    return torch.tensor([1, 3, 5, 2])  # broadcasts over the chains' last batch dimension


#: name -> (factory(dtype) -> kernel, exact for TARGET)
KERNELS = {
    "langevin": (lambda dt: Langevin(0.05), False),
    "mala": (lambda dt: MALA(0.4), True),
    "mala_preconditioned": (
        lambda dt: MALA(0.4, inverse_mass_matrix=torch.tensor([1.0, 2.0], dtype=dt)),
        True,
    ),
    "mala_dense": (
        lambda dt: MALA(0.4, inverse_mass_matrix=COV.to(dt), dense_mass=True),
        True,
    ),
    "hmc": (lambda dt: HMC(0.3, 5), True),
    "hmc_jitter": (lambda dt: HMC(0.3, 5, jitter=0.5), True),
    "hmc_per_chain_lengths": (lambda dt: HMC(0.3, _per_chain_steps(dt)), True),
    "chees": (lambda dt: ChEES(0.3, trajectory_length=1.5), True),
    "nuts": (lambda dt: NUTS(0.4), True),
    "nuts_preconditioned": (
        lambda dt: NUTS(0.4, inverse_mass_matrix=torch.tensor([1.0, 2.0], dtype=dt)),
        True,
    ),
    "random_walk": (lambda dt: RandomWalk(0.8), True),
    "independence": (lambda dt: IndependenceMetropolis(MEAN.to(dt), 2.0), True),
    "cycle": (lambda dt: Cycle(HMC(0.3, 3), RandomWalk(0.8)), True),
    "cycle_every": (lambda dt: Cycle(MALA(0.4), RandomWalk(0.8), every=(1, 2)), True),
    "masked": (lambda dt: Masked(MALA(0.4), torch.tensor([True, False])), True),
    "masked_blocks": (
        lambda dt: Cycle(
            Masked(MALA(0.4), torch.tensor([True, False])),
            Masked(HMC(0.3, 3), torch.tensor([False, True])),
        ),
        True,
    ),
    "chain_mask": (
        lambda dt: ChainMask(MALA(0.4), torch.tensor([True, False, True, False])),
        True,
    ),
    # exact for the cold replica only once every replica is at its own tempered law, which a
    # start from cold draws is not: invariance is tested in test_replica_exchange.py
    "replica_exchange": (lambda dt: ReplicaExchange(MALA(0.4), betas=(1.0, 0.5)), False),
}


def _x0(n_batch=BATCH, dtype=DT, seed=0):
    return TARGET.sample(math.prod(n_batch), generator=seed).to(dtype).reshape(n_batch + (2,))


def _run(kernel, x, steps, seed, energy=TARGET):
    g = torch.Generator().manual_seed(seed)
    s = kernel.init(energy, x)
    infos = []
    for _ in range(steps):
        s, info = kernel.step(energy, s, g)
        infos.append(info)
    return s, infos


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(name, dtype):
    kernel = KERNELS[name][0](dtype)
    s, infos = _run(kernel, _x0(dtype=dtype), 3, 0)
    assert s.position.shape == BATCH + (2,) and s.position.dtype == dtype
    assert s.energy.shape == BATCH and s.energy.dtype == dtype
    assert s.batch_shape == torch.Size(BATCH) and s.event_ndim == 1
    for info in infos:
        assert isinstance(info, Info)
        assert info.accept_prob.shape == info.accepted.shape == info.diverging.shape == BATCH
        assert info.accepted.dtype == info.diverging.dtype == torch.bool
        assert ((info.accept_prob >= 0) & (info.accept_prob <= 1)).all()
    torch.testing.assert_close(s.energy, TARGET(s.position))


@pytest.mark.parametrize("name", list(KERNELS))
def test_same_seed_same_chains(name):
    kernel = KERNELS[name][0](DT)
    a, _ = _run(kernel, _x0(), 5, 7)
    b, _ = _run(kernel, _x0(), 5, 7)
    c, _ = _run(kernel, _x0(), 5, 8)
    assert torch.equal(a.position, b.position) and torch.equal(a.energy, b.energy)
    assert not torch.equal(a.position, c.position)


@pytest.mark.parametrize("name", list(KERNELS))
def test_per_chain_hyperparameters(name):
    """Every tuned hyperparameter given per chain (the batch shape) with equal values gives
    the scalar's chains; different values are used chain by chain."""
    kernel = KERNELS[name][0](DT)
    per_chain = kernel
    state = kernel.init(TARGET, _x0())
    for leaf in leaves(kernel, state):
        step = torch.as_tensor(leaf.kernel.step_size, dtype=DT)
        full = step.expand(leaf.state.batch_shape).clone()  # one value per chain (per replica)
        per_chain = replace_at(per_chain, leaf.path, step_size=full)
    a, _ = _run(kernel, _x0(), 4, 3)
    b, _ = _run(per_chain, _x0(), 4, 3)
    torch.testing.assert_close(a.position, b.position, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(KERNELS))
def test_non_finite_proposals_are_rejected_and_flagged(name):
    """A wall: the energy is +inf where x[0] > 1. Chains start next to it; no position or
    energy ever turns non-finite, and the proposals that hit the wall are flagged."""
    kernel = KERNELS[name][0](DT)

    def walled(x):
        e = TARGET(x)
        return torch.where(x[..., 0] > 1.0, torch.full_like(e, math.inf), e)

    x = torch.tensor([0.95, -0.5], dtype=DT).expand(BATCH + (2,)).clone()
    g = torch.Generator().manual_seed(0)
    s = kernel.init(walled, x)
    flagged = torch.zeros(BATCH, dtype=torch.bool)
    for _ in range(15):
        s, info = kernel.step(walled, s, g)
        assert torch.isfinite(s.position).all() and torch.isfinite(s.energy).all()
        assert (s.position[..., 0] <= 1.0).all()
        flagged |= info.diverging
    if name != "masked":  # the masked coordinate that hits the wall is the fixed one
        assert flagged.any()


@pytest.mark.parametrize("name", list(KERNELS))
def test_save_load_resume_bit_for_bit(name, tmp_path: Path):
    kernel = KERNELS[name][0](DT)
    x = _x0(n_batch=(2, 4))
    whole = ebmcmc.sample(TARGET, kernel, x, 20, generator=4, progress=False, adaptation=None)
    first = ebmcmc.sample(TARGET, kernel, x, 10, generator=4, progress=False, adaptation=None)
    loaded = Trace.load(first.save(tmp_path / "t.nc"))
    assert type(loaded.final_state) is type(first.final_state)
    assert type(loaded.kernel) is type(first.kernel) and repr(loaded.kernel) == repr(first.kernel)
    rest = ebmcmc.sample(TARGET, kernel, loaded, 10, progress=False, adaptation=None)
    both = Trace.concatenate([first, rest])
    assert torch.equal(both.draws, whole.draws)
    assert torch.equal(both.stats["energy"], whole.stats["energy"])


@pytest.mark.parametrize("name", list(KERNELS))
def test_takes_over_another_kernels_state(name):
    """init_from: a state made by a gradient-free kernel (no gradient) or a gradient-based
    one is taken over, and the chains continue from the same positions."""
    kernel = KERNELS[name][0](DT)
    x = _x0()
    for other in (RandomWalk(0.5), MALA(0.1)):
        s = other.init(TARGET, x)
        mine = kernel.init_from(TARGET, s)
        assert torch.equal(mine.position, x)
        torch.testing.assert_close(mine.energy, TARGET(x))
        kernel.step(TARGET, mine, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", [n for n, (_, exact) in KERNELS.items() if exact])
def test_invariance_from_exact_draws(name):
    """Chains started at exact draws stay exact: after 8 steps the 6,000 chains' means,
    variances and covariance match the target's within 4 Monte Carlo standard errors (the
    chains are independent, so the standard errors are those of iid draws)."""
    kernel = KERNELS[name][0](DT)
    n = 6000
    x = TARGET.sample(n, generator=11).reshape(n // 4, 4, 2)  # batch (1500, 4) for chain masks
    s, _ = _run(kernel, x, 8, 12)
    y = s.position.reshape(n, 2)
    sd = COV.diagonal().sqrt()
    z_mean = (y.mean(0) - MEAN) / (sd / math.sqrt(n))
    var = y.var(0)
    z_var = (var - COV.diagonal()) / (COV.diagonal() * math.sqrt(2 / (n - 1)))
    c = ((y[:, 0] - MEAN[0]) * (y[:, 1] - MEAN[1])).mean()
    se_c = math.sqrt((COV[0, 0] * COV[1, 1] + COV[0, 1] ** 2) / n)
    z_cov = (c - COV[0, 1]) / se_c
    assert z_mean.abs().max() < 4, z_mean
    assert z_var.abs().max() < 4, z_var
    assert abs(float(z_cov)) < 4, z_cov
    assert not torch.equal(y, x.reshape(n, 2))  # the chains moved


def test_invariance_check_catches_a_wrong_kernel():
    """The invariance test can fail: MALA without its Metropolis correction at a large step
    (unadjusted Langevin) inflates the variance far beyond 4 standard errors."""
    n = 6000
    x = TARGET.sample(n, generator=11)
    s, _ = _run(Langevin(0.4), x, 8, 12)
    z_var = (s.position.var(0) - COV.diagonal()) / (COV.diagonal() * math.sqrt(2 / (n - 1)))
    assert z_var.abs().max() > 4


def test_level_gibbs_follows_the_contract_on_a_joint_energy(tmp_path: Path):
    """LevelGibbs samples a joint energy E(x, t): shapes, seed, save/load/resume."""

    def joint(x, t):
        return 0.5 * ((x - t[..., None].to(x.dtype)) ** 2).sum(-1)

    k = LevelGibbs(MALA(0.5), num_levels=3)
    x = torch.zeros(5, 1, dtype=DT)
    whole = ebmcmc.sample(joint, k, x, 12, generator=1, progress=False, adaptation=None)
    first = ebmcmc.sample(joint, k, x, 6, generator=1, progress=False, adaptation=None)
    rest = ebmcmc.sample(joint, k, Trace.load(first.save(tmp_path / "t.nc")), 6, progress=False,
                         adaptation=None)  # fmt: skip
    assert torch.equal(Trace.concatenate([first, rest]).draws, whole.draws)
    s, info = k.step(joint, k.init(joint, x), torch.Generator().manual_seed(0))
    assert s.level.shape == (5,) and info.level_counts.sum() == 5


# ------------------------------------------------------------ adaptation through composites


def test_warm_up_tunes_every_kernel_of_a_composite():
    """One rule: warm-up reaches the kernels inside Cycle, Masked and ChainMask and tunes each
    towards its own target acceptance."""
    k = Cycle(Masked(MALA(1e-3), torch.tensor([True, False])), ChainMask(HMC(1e-3, 3),
              torch.ones(64, dtype=torch.bool)))  # fmt: skip
    tr = ebmcmc.sample(TARGET, k, TARGET.sample(64, generator=0), 200, num_warmup=500,
                       generator=1, progress=False)  # fmt: skip
    mala, hmc = tr.kernel.kernels[0].kernel, tr.kernel.kernels[1].kernel
    assert float(mala.step_size) > 0.1 and float(hmc.step_size) > 0.1  # grew from 1e-3
    assert mala.inverse_mass_matrix.shape == (1,)  # the free coordinate's variance
    assert hmc.inverse_mass_matrix.shape == (2,)
    acc_mala = tr.stats["accept_prob"].mean()  # the first kernel of the cycle
    assert 0.45 < float(acc_mala) < 0.7


def test_pooling_follows_the_step_size_shape():
    """A number is one value shared by the chains; a per-chain tensor is tuned per chain."""
    x = TARGET.sample(32, generator=0)
    shared = ebmcmc.sample(TARGET, MALA(0.1), x, 5, num_warmup=150, generator=1, progress=False)
    assert isinstance(shared.kernel.step_size, float)
    own = ebmcmc.sample(TARGET, MALA(torch.full((32,), 0.1, dtype=DT)), x, 5, num_warmup=150,
                        generator=1, progress=False)  # fmt: skip
    assert own.kernel.step_size.shape == (32,) and own.kernel.step_size.unique().numel() > 1
    assert own.kernel.inverse_mass_matrix.shape == (32, 2)


def test_level_gibbs_with_a_step_table_is_left_alone_by_warm_up():
    def joint(x, t):
        return 0.5 * ((x - t[..., None].to(x.dtype)) ** 2).sum(-1)

    table = (0.2, 0.4, 0.8)
    k = LevelGibbs(MALA(0.5), num_levels=3, step_sizes=table)
    tr = ebmcmc.sample(joint, k, torch.zeros(8, 1, dtype=DT), 5, num_warmup=50, generator=0,
                       progress=False)  # fmt: skip
    assert tr.kernel == k
    adapted = ebmcmc.sample(joint, LevelGibbs(MALA(0.5), num_levels=3), torch.zeros(8, 1, dtype=DT),
                            5, num_warmup=120, generator=0, progress=False)  # fmt: skip
    assert adapted.kernel.kernel.step_size != 0.5  # without a table the inner step is tuned


def test_window_adaptation_off():
    tr = ebmcmc.sample(TARGET, MALA(0.1), TARGET.sample(8, generator=0), 5, num_warmup=50,
                       generator=1, progress=False, adaptation=None)  # fmt: skip
    assert tr.kernel == MALA(0.1)
    tr = ebmcmc.sample(TARGET, MALA(0.1), TARGET.sample(8, generator=0), 5, num_warmup=150,
                       generator=1, progress=False,
                       adaptation=WindowAdaptation(mass_matrix=False))  # fmt: skip
    assert tr.kernel.inverse_mass_matrix is None and tr.kernel.step_size != 0.1


# ------------------------------------------------------------------- bit for bit the 0.1 kernels

GOLDEN = Path(__file__).parent / "data" / "golden_0_1_kernels.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


def test_drl_loss_and_generation_bit_identical_to_0_1(golden):
    """DRL's sampler is now Cycle(Langevin, ChainMask(IndependenceMetropolis, tethered)); the
    loss, the negatives and the generated samples are those of the hand-written 0.1 loop."""
    from ebmcmc.diffusion import DRLSchedule
    from ebmcmc.estimators import DiffusionRecoveryLikelihood
    from ebmcmc.nn import TimeMLP

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    for name, kw in {"plain": {}, "jump": {"jump_every": 2}, "mala": {"metropolis": True}}.items():
        est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=5,
                                          step_size_b2=4e-3, **kw)  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = TimeMLP(2, hidden=16, num_levels=6)
        out = est.loss(model, x, torch.Generator().manual_seed(2))
        assert torch.equal(out.loss.detach(), golden[f"drl_{name}_loss"]), name
        assert torch.equal(out.negatives, golden[f"drl_{name}_neg"]), name
        gen = est.generate(model, (8, 2), torch.Generator().manual_seed(3), clip=None)
        assert torch.equal(gen, golden[f"drl_{name}_gen"]), name
    assert type(est.sampler(torch.tensor([0]), torch.zeros(1, 2))).__name__ == "MALA"
    jump = DiffusionRecoveryLikelihood(DRLSchedule(6), jump_every=2)
    assert isinstance(jump.sampler(torch.tensor([0]), torch.zeros(1, 2)), Cycle)


@pytest.mark.parametrize(
    "name, kernel, adapt",
    [
        ("langevin", Langevin(0.05, noise_scale=0.9), False),
        ("rw", RandomWalk(0.5), False),
        ("rw", RandomWalk(0.5), True),
        ("hmc", HMC(0.2, 5), False),
        ("hmc", HMC(0.2, 5), True),
        ("hmc_jitter", HMC(0.2, 5, jitter=0.5), True),
        ("hmc_perchain", HMC(0.2, torch.tensor([1, 3, 5, 2] * 8)), True),
        ("im", IndependenceMetropolis(torch.zeros(2), 2.0), False),
        ("mala", MALA(0.3), False),
        ("rex", ReplicaExchange(MALA(0.3), betas=(1.0, 0.5, 0.25)), False),
    ],
)
def test_kernels_bit_identical_to_0_1(golden, name, kernel, adapt):
    """Same seed, same draws as the 0.1 kernels (sampling, and warm-up where 0.1 adapted the
    same hyperparameters)."""
    from ebmcmc.targets import Banana, GaussianMixture

    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5 * torch.eye(2))
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    # 0.1 had no restart of stuck chains (new in 0.2): off, to compare like with like
    adaptation = WindowAdaptation(restart_stuck=False) if adapt else None
    tr = ebmcmc.sample(mix if name == "rex" else Banana(), kernel, x0, 30,
                       num_warmup=40 if adapt else 0, generator=5, progress=False,
                       adaptation=adaptation)  # fmt: skip
    assert torch.equal(tr.draws, golden[f"k_{name}_{adapt}_x"])
    assert torch.equal(tr.stats["accept_prob"], golden[f"k_{name}_{adapt}_a"])


def test_step_size_only_warm_up_is_bit_identical_to_0_1(golden):
    """0.1's MALA adapted its step size only; with the mass matrix off, warm-up reproduces it."""
    from ebmcmc.targets import Banana, GaussianMixture

    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5 * torch.eye(2))
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    rex = ReplicaExchange(MALA(0.3), betas=(1.0, 0.5, 0.25))
    step_only = WindowAdaptation(mass_matrix=False, restart_stuck=False)
    for name, k, target in (("mala", MALA(0.3), Banana()), ("rex", rex, mix)):
        tr = ebmcmc.sample(target, k, x0, 30, num_warmup=40, generator=5, progress=False,
                           adaptation=step_only)  # fmt: skip
        assert torch.equal(tr.draws, golden[f"k_{name}_True_x"]), name


def test_level_gibbs_bit_identical_to_0_1(golden):
    def joint(y, t):
        return 0.5 * ((y - t[..., None].to(y.dtype)) ** 2).sum(-1)

    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=DT)
    for key, k in (("levelgibbs", LevelGibbs(MALA(0.5), num_levels=3)),
                   ("levelgibbs_table", LevelGibbs(MALA(0.5), num_levels=3,
                                                   step_sizes=(0.2, 0.4, 0.8)))):  # fmt: skip
        tr = ebmcmc.sample(joint, k, x0, 30, generator=6, progress=False, adaptation=None,
                           trace_fn=lambda s, i: {"x": s.position, "level": s.level})  # fmt: skip
        assert torch.equal(tr.draws, golden[f"k_{key}_x"])
        assert torch.equal(tr.variables["level"], golden[f"k_{key}_level"])


def test_state_is_a_plain_state_for_single_position_kernels():
    s = MALA(0.1).init(TARGET, _x0())
    assert type(s) is State and s.grad is not None
