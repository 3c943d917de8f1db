"""Tests of the diffusion-assisted EBM (DAEBM): estimator formulas, the sampler on an exact joint,
generation rules, checkpoints, and a short learning check.

The exact joint: data ``N(m, s^2)`` diffused by a :class:`DAEBMSchedule` has, at level ``t``,
the marginal ``N(a_t m, a_t^2 s^2 + b_t^2)`` (``a = signal_bar``, ``b = sigma_bar``). With
``E(x, t) = -log q_t(x) - log w_t`` every level integrates to ``w_t``, so under
``p(x, t) ∝ exp(-E(x, t))`` the levels have ``p(t) = w_t`` (uniform ``w``: the model a perfect
DAEBM would learn) and ``x | t ~ N(a_t m, a_t^2 s^2 + b_t^2)`` exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ebmcmc
from ebmcmc import datasets as D
from ebmcmc.adaptation import LevelStepAdaptation, dual_averaging_init, dual_averaging_update
from ebmcmc.diagnostics import summary
from ebmcmc.diffusion import DAEBMSchedule, DRLSchedule
from ebmcmc.estimators import DiffusionAssistedEBM
from ebmcmc.evaluation import auroc, model_log_prob_on_grid
from ebmcmc.kernels import MALA, Langevin
from ebmcmc.nn import TimeMLP
from ebmcmc.train import TrainConfig, Trainer

DT = torch.float64
SCHED = DAEBMSchedule(6, 1e-2, 0.3)
L = SCHED.num_levels + 1
M, S = 1.5, 0.4


class ExactJoint(torch.nn.Module):
    """``E(x, t) = -log N(x; a_t m, a_t^2 s^2 + b_t^2) - log w_t`` for ``x`` of shape ``(n, 1)``."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        a, b = SCHED.signal_bar, SCHED.sigma_bar
        self.mu, self.var = a * M, a**2 * S**2 + b**2
        self.logw = torch.log(weights / weights.sum())

    def forward(self, x, t):
        mu, var, logw = self.mu.to(x)[t], self.var.to(x)[t], self.logw.to(x)[t]
        return 0.5 * (x[..., 0] - mu) ** 2 / var + 0.5 * torch.log(2 * math.pi * var) - logw


def _ratio_z(num: np.ndarray, den: np.ndarray, truth: float) -> float:
    """z-score of ``mean(num) / mean(den)`` against ``truth`` (delta method, ESS-based MCSE)."""
    r = num.mean() / den.mean()
    psi = (num - r * den) / den.mean()
    return float((r - truth) / summary({"psi": psi})["mcse_mean"].iloc[0])


# ------------------------------------------------------------------ the sampler, exactly


WEIGHTS = [torch.ones(L, dtype=DT), torch.arange(1, L + 1, dtype=DT)]


@pytest.mark.parametrize("weights", WEIGHTS, ids=["uniform", "ramp"])
def test_sampler_levels_and_conditionals_match_the_exact_joint(weights):
    """The estimator's transition (5 MALA steps per level draw, per-level steps) samples
    p(t) and x | t of the exact joint within 4 MCSE."""
    model = ExactJoint(weights)
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=5, step_size=0.8 * model.var,
                               metropolis_after=0)  # fmt: skip
    kernel = est.kernel(event_ndim=1)
    assert isinstance(kernel.kernel, MALA) and kernel.inner_steps == 5
    tr = ebmcmc.sample(model, kernel, torch.zeros(64, 1, dtype=DT), num_samples=500,
                       num_warmup=100, generator=0, adaptation=None, progress=False,
                       trace_fn=lambda s, i: {"x": s.position, "level": s.level})  # fmt: skip
    level = tr.variables["level"].numpy()
    x = tr.draws[..., 0].numpy()
    onehot = (level[..., None] == np.arange(L)).astype(float)
    table = summary({"p": onehot})
    p = (weights / weights.sum()).numpy()
    z = (table["mean"].to_numpy() - p) / table["mcse_mean"].to_numpy()
    assert (np.abs(z) < 4).all(), f"p(t) {table['mean'].round(3).tolist()} vs {p.round(3)}: {z}"
    assert (table["mcse_mean"] < 0.01).all()
    for t in range(L):
        ind = onehot[..., t]
        z_m = _ratio_z(ind * x, ind, float(model.mu[t]))
        r = (ind * x).mean() / ind.mean()
        z_v = _ratio_z(ind * (x - r) ** 2, ind, float(model.var[t]))
        assert abs(z_m) < 4 and abs(z_v) < 4, (t, z_m, z_v)


def test_the_level_draw_is_softmax_of_minus_the_energies():
    """Through the estimator's transition at (almost) fixed x: level frequencies over 20,000
    chains are softmax_t(-E(x, t)) within 4 standard errors."""
    model = ExactJoint(torch.arange(1, L + 1, dtype=DT))
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=3, step_size=1e-14, metropolis_after=0)
    n, x = 20000, 0.9
    xs = torch.full((n, 1), x, dtype=DT)
    s, info = est.transition(model, xs, torch.zeros(n, dtype=torch.long),
                             torch.Generator().manual_seed(1))  # fmt: skip
    assert (s.position - x).abs().max() < 1e-5
    p = torch.softmax(-model(torch.full((L, 1), x, dtype=DT), torch.arange(L)), 0)
    freq = info.level_counts.to(DT) / n
    assert (((freq - p) / torch.sqrt(p * (1 - p) / n)).abs() < 4).all(), (freq, p)


# ------------------------------------------------------------------ formulas by hand


def _clone(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def test_positives_are_uniform_levels_diffused_by_the_schedule():
    est = DiffusionAssistedEBM(SCHED)
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    g = torch.Generator().manual_seed(4)
    ref = _clone(g)
    x_t, t = est.positives(x, g)
    t_ref = torch.randint(0, L, (9,), generator=ref)
    eps = torch.randn(x.shape, generator=ref, dtype=DT)
    a, b = SCHED.signal_bar[t_ref][:, None], SCHED.sigma_bar[t_ref][:, None]
    assert torch.equal(t, t_ref)
    assert torch.allclose(x_t, a * x + b * eps)
    assert torch.equal(x_t[t == 0], x[t == 0])  # level 0 is the clean data
    with pytest.raises(TypeError, match="DAEBMSchedule"):
        DiffusionAssistedEBM(DRLSchedule(6))


def test_buffer_starts_from_noise_with_levels_spread_evenly():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=30, metropolis_after=0)
    g = torch.Generator().manual_seed(0)
    ref = _clone(g)
    est.negatives(lambda x, t: 0.5 * (x**2).sum(-1), torch.zeros(4, 2), g)
    noise = torch.randn(30, 2, generator=ref)
    idx = torch.randint(30, (4,), generator=ref)
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(est.buffer[untouched], noise[untouched])
    start_levels = torch.arange(L).repeat_interleave(30 // L + 1)[:30]  # 0,0,0,0,0,1,...
    assert torch.equal(est.buffer_levels[untouched], start_levels[untouched])
    assert torch.bincount(start_levels, minlength=L).tolist() == [5, 5, 5, 5, 5, 5, 0]


def test_reinitialised_chains_start_from_noise_at_the_top_level():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=50, reinit_prob=1.0)
    _, _, info = est.negatives(lambda x, t: 0.5 * (x**2).sum(-1), torch.zeros(20, 2),
                               torch.Generator().manual_seed(0))  # fmt: skip
    assert (info.moved_level == L - 1).all()
    keep = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=50)  # default 0: persist
    _, _, info = keep.negatives(lambda x, t: 0.5 * (x**2).sum(-1), torch.zeros(20, 2),
                                torch.Generator().manual_seed(0))  # fmt: skip
    assert len(set(info.moved_level.tolist())) > 1


def test_loss_is_the_contrast_of_mean_energies_and_the_buffer_is_written_back():
    """loss = mean E(x_pos, t_pos) - mean E(x_neg, t_neg), every quantity recomputed by hand."""
    model = TimeMLP(2, hidden=8, num_levels=L)
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=2, buffer_size=40, metropolis_after=1)
    batch = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    ref = _clone(g)
    out = est.loss(model, batch, g)
    x_pos, t_pos = est.positives(batch, ref)
    after_positives = _clone(ref)
    est2 = DiffusionAssistedEBM(SCHED, num_mcmc_steps=2, buffer_size=40, metropolis_after=1)
    x_neg, t_neg, info = est2.negatives(model, batch, ref)
    assert torch.equal(out.negatives, x_neg)
    expect = model(x_pos, t_pos).mean() - model(x_neg, t_neg).mean()
    assert torch.allclose(out.loss, expect)
    assert out.stats["metropolis"] == 0.0 and est.metropolis  # ULA first, MALA from now on
    assert torch.equal(est.buffer, est2.buffer) and torch.equal(est.buffer_levels,
                                                                est2.buffer_levels)  # fmt: skip
    # the entries that changed are negatives, written back with their new levels
    est3 = DiffusionAssistedEBM(SCHED, num_mcmc_steps=2, buffer_size=40)
    est3._init_buffer(batch, after_positives)  # the noise the buffer started from
    changed = (est.buffer != est3.buffer).any(-1)
    assert 1 <= int(changed.sum()) <= 6
    for i in changed.nonzero().flatten():
        j = (x_neg == est.buffer[i]).all(-1).nonzero().flatten()
        assert len(j) == 1 and int(t_neg[j]) == int(est.buffer_levels[i])
    assert est.iteration == 1


def test_metropolis_switches_on_after_its_warm_up():
    est = DiffusionAssistedEBM(SCHED, metropolis_after=2)
    assert isinstance(est.kernel().kernel, Langevin)
    est.iteration = 2
    assert isinstance(est.kernel().kernel, MALA)
    assert isinstance(est.kernel(metropolis=False).kernel, Langevin)


def test_band_rule_is_the_papers_on_epsilon():
    """x 1.1 / 1.2 on the paper's epsilon = sqrt(2 eps) above 0.8 / below 0.6; pooled
    acceptance over the window; unvisited levels unchanged."""
    ad = LevelStepAdaptation(torch.full((4,), 0.005), rule="band", every=2)
    # level 0: (0.9*10 + 0.7*10) / 20 = 0.8 (not above); level 1: 0.85; level 2: 0.55; 3: none
    assert not ad.observe(torch.tensor([9.0, 8.5, 5.0, 0.0]), torch.tensor([10, 10, 10, 0]))
    assert ad.observe(torch.tensor([7.0, 8.5, 6.0, 0.0]), torch.tensor([10, 10, 10, 0]))
    eps = ad.step_sizes
    paper = torch.sqrt(2 * eps) / math.sqrt(2 * 0.005)
    assert torch.allclose(paper, torch.tensor([1.0, 1.1, 1 / 1.2, 1.0], dtype=DT))
    assert ad.num_windows == 1 and torch.isnan(ad.window_accept()).all()


def test_dual_averaging_rule_is_one_recursion_per_visited_level():
    ad = LevelStepAdaptation(torch.tensor([0.1, 0.2, 0.3]), rule="dual_averaging", every=1,
                             target_accept=0.7)  # fmt: skip
    states = [dual_averaging_init(v) for v in (0.1, 0.2, 0.3)]
    for acc in ([0.9, 0.2, float("nan")], [0.8, 0.5, 0.6]):
        a = torch.tensor(acc, dtype=DT)
        moves = torch.isfinite(a).long() * 4
        ad.observe(a.nan_to_num() * moves, moves)
        for t in range(3):
            if math.isfinite(acc[t]):
                states[t], _ = dual_averaging_update(states[t], acc[t], 0.7)
    expect = torch.tensor([math.exp(s.log_step) for s in states], dtype=DT)
    assert torch.allclose(ad.step_sizes, expect)
    assert states[2].num_updates == 1  # the unvisited level skipped the first window


def test_estimator_adapts_from_its_transitions():
    """With Metropolis on, each transition's per-level acceptance feeds the adaptation."""
    model = ExactJoint(torch.ones(L, dtype=DT))
    est = DiffusionAssistedEBM(
        SCHED, num_mcmc_steps=3, buffer_size=64, step_size=1e-6, metropolis_after=0, adapt_every=2
    )
    g = torch.Generator().manual_seed(0)
    like = torch.zeros(32, 1, dtype=DT)
    infos = []
    for _ in range(2):
        infos.append(est.negatives(model, like, g)[2])
        est.iteration += 1
    acc = sum(i.level_accept.nan_to_num() * i.level_moves for i in infos)
    moves = sum(i.level_moves for i in infos)
    pooled = acc / moves
    grew = torch.isfinite(pooled) & (pooled > 0.8)
    assert grew.any()  # tiny steps: acceptance near 1
    assert torch.allclose(est.step_sizes[grew], torch.tensor(1e-6 * 1.21, dtype=DT))
    unvisited = est.step_sizes[~torch.isfinite(pooled)]
    assert torch.equal(unvisited, torch.full_like(unvisited, 1e-6))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_mcmc_steps": 0}, "num_mcmc_steps"), ({"buffer_size": 0}, "buffer_size"),
     ({"reinit_prob": 1.5}, "reinit_prob"), ({"metropolis_after": -1}, "metropolis_after"),
     ({"adapt": "fast"}, "adapt"), ({"step_size": 0.0}, "step_size"),
     ({"step_size": torch.ones(3)}, "step_size"), ({"adapt_every": 0}, "every")],
)  # fmt: skip
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionAssistedEBM(SCHED, **kwargs)


def test_breakdown_raises():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=10)

    def huge(x, t):
        return 1e9 * (t == 0).to(x.dtype) + 0 * x.sum(-1)

    with pytest.raises(FloatingPointError, match="breakdown"):
        for seed in range(20):  # some batch will hold a positive at level 0
            est.loss(huge, torch.zeros(8, 2), torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ checkpoints


def _trainer(run_dir, adapt):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TimeMLP(2, hidden=16, num_layers=2, num_levels=5)
    est = DiffusionAssistedEBM(DAEBMSchedule(4, 1e-2, 0.4), num_mcmc_steps=3, buffer_size=48,
                               reinit_prob=0.1, step_size=1e-3, metropolis_after=2, adapt=adapt,
                               adapt_every=2)  # fmt: skip
    data = D.toy_dataset("rings", 256, 0)
    cfg = TrainConfig(lr=1e-3, betas=(0.0, 0.999), warmup_steps=0, ema_decay=None,
                      batch_size=16)  # fmt: skip
    return Trainer(model, est, data, cfg, run_dir=run_dir, seed=3, progress=False)


@pytest.mark.parametrize("adapt", ["band", "dual_averaging"])
def test_checkpoint_resumes_bit_identically(tmp_path, adapt):
    """N steps in one go == N/2 steps, save, a fresh trainer and estimator load, N/2 more:
    the same weights, buffer, levels, step sizes and adaptation state."""
    whole = _trainer(None, adapt)
    whole.fit(10)
    first = _trainer(tmp_path, adapt)
    first.fit(5)
    second = _trainer(tmp_path, adapt)
    assert second.resume() and second.step == 5
    second.fit(10)
    a, b = whole.estimator, second.estimator
    for pa, pb in zip(whole.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert torch.equal(a.buffer, b.buffer) and torch.equal(a.buffer_levels, b.buffer_levels)
    assert torch.equal(a.step_sizes, b.step_sizes) and a.iteration == b.iteration == 10
    assert not torch.equal(a.step_sizes, torch.full((5,), 1e-3, dtype=DT))  # it adapted
    sa, sb = a.state_dict()["adaptation"], b.state_dict()["adaptation"]
    for k in sa:
        assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    assert whole.history == second.history


def test_state_dict_round_trip_and_checks():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=20)
    assert "buffer" not in est.state_dict()
    est.loss(TimeMLP(2, hidden=8, num_levels=L), torch.zeros(4, 2),
             torch.Generator().manual_seed(0))  # fmt: skip
    other = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=20)
    other.load_state_dict(est.state_dict())
    assert torch.equal(other.buffer, est.buffer) and other.iteration == 1
    with pytest.raises(ValueError, match="20"):
        DiffusionAssistedEBM(SCHED, buffer_size=30).load_state_dict(est.state_dict())


# ------------------------------------------------------------------ generation


def _at0(x, t):
    """Level 0 holds essentially all the mass: every draw of the level gives 0."""
    return 0.5 * (x**2).sum(-1) + 50.0 * (t > 0).to(x.dtype)


def test_every_rule_collects_each_visit_in_transition_order():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=2, metropolis_after=0)
    out = est.generate(_at0, 10, (2,), torch.Generator().manual_seed(0), num_chains=4)
    # 4 chains at level 0 after every transition: 4 + 4 + 2 images in three transitions
    assert out.complete and out.num_transitions == 3 and out.samples.shape == (10, 2)
    assert out.transitions.tolist() == [1] * 4 + [2] * 4 + [3] * 2
    assert out.level_visits.tolist() == [12] + [0] * (L - 1)
    late = est.generate(_at0, 8, (2,), torch.Generator().manual_seed(0), num_chains=4,
                        burn_in=5)  # fmt: skip
    assert late.transitions.min() == 6


def test_visits_rule_is_the_papers_count():
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=2)
    out = est.generate(_at0, 5, (2,), torch.Generator().manual_seed(0), rule="visits", visits=3)
    assert out.complete and out.num_transitions == 3 and (out.transitions == 3).all()
    renewed = est.generate(_at0, 6, (2,), torch.Generator().manual_seed(0), rule="visits",
                           visits=2, num_chains=2, renew=True)  # fmt: skip
    assert renewed.num_transitions == 6 and (renewed.transitions == 2).all()
    never = est.generate(lambda x, t: 0.5 * (x**2).sum(-1) + 50.0 * (t == 0).to(x.dtype), 3,
                         (2,), torch.Generator().manual_seed(0), max_transitions=4)  # fmt: skip
    assert not never.complete and never.samples.shape == (0, 2) and never.num_transitions == 4
    with pytest.raises(ValueError, match="rule"):
        est.generate(_at0, 2, (2,), rule="arrivals")


def test_every_rule_samples_the_level_0_conditional():
    """From stationary chains, the images collected after one transition are exact draws of
    p(x | t = 0) = N(m, s^2): mean and variance within 4 standard errors."""
    model = ExactJoint(torch.ones(L, dtype=DT))
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=5, step_size=0.8 * model.var)
    out = est.generate(model, 400, (1,), torch.Generator().manual_seed(2), num_chains=4000,
                       burn_in=40, dtype=DT)  # fmt: skip
    assert out.complete and (out.transitions == 41).all()  # all from one transition
    x = out.samples[:, 0]
    n = x.numel()
    assert abs(float(x.mean()) - M) < 4 * S / math.sqrt(n)
    assert abs(float(x.var()) - S**2) < 4 * S**2 * math.sqrt(2 / (n - 1))


def test_level_energy_and_kernel_for_long_runs():
    model = ExactJoint(torch.ones(L, dtype=DT))
    est = DiffusionAssistedEBM(SCHED, step_size=torch.linspace(0.01, 0.07, L))
    energy, kernel = est.level_energy(model, 0), est.level_kernel(0)
    x = torch.randn(5, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert torch.equal(energy(x), model(x, torch.zeros(5, dtype=torch.long)))
    assert isinstance(kernel, MALA) and kernel.step_size == pytest.approx(0.01)
    with pytest.raises(ValueError, match="level"):
        est.level_energy(model, L)


# ------------------------------------------------------------------ learning


def test_a_short_run_learns_the_rings():
    """100 steps on the four rings: the level-0 model puts more mass near the rings and ranks
    ring points above uniform points better than an untrained (flat) model can."""
    from ebmcmc.app.setups import toy_setup

    s = toy_setup("daebm", hidden=32, layers=2, num_langevin_steps=10, fourier_features=16,
                  buffer_size=2000, lr=1e-3, seed=0)  # fmt: skip
    s.estimator.metropolis_after = 50
    data = D.toy_dataset("rings", 5000, 0)
    x_in = D.toy_dataset("rings", 2000, 5)
    x_out = 10 * torch.rand(2000, 2, generator=torch.Generator().manual_seed(1)) - 5
    xs = torch.linspace(-5, 5, 121)[:-1] + 5 / 120
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    r = torch.sqrt(X**2 + Y**2)
    near = ((r - r.round()).abs() < 0.15) & (r.round() >= 1) & (r.round() <= 4)

    def figures():
        with torch.no_grad():
            a = auroc(-s.energy(x_in), -s.energy(x_out))
            grid = model_log_prob_on_grid(s.energy, 5.0, 120, dtype=torch.float32)
        return a, float((grid.log_prob.exp() * (10 / 120) ** 2)[near].sum())

    a0, m0 = figures()
    assert a0 == 0.5 and abs(m0 - float(near.double().mean())) < 1e-6  # flat at the start
    Trainer(s.model, s.estimator, data, s.config, seed=0, progress=False).fit(100)
    a1, m1 = figures()
    assert a1 > 0.65, a1
    assert m1 > 1.3 * m0, (m0, m1)


def test_level_0_chain_runs_in_the_stability_study():
    """The long-run check's pieces: level 0's energy and MALA at its step, judged by
    ebmcmc.studies.stability; on the exact joint (level 0 = N(m, s^2)) the chains are stable."""
    from ebmcmc.studies import StabilityCriteria, stability

    model = ExactJoint(torch.ones(L, dtype=DT))
    est = DiffusionAssistedEBM(SCHED, step_size=0.8 * model.var)
    g = torch.Generator().manual_seed(0)
    starts = {"data": M + S * torch.randn(32, 1, generator=g, dtype=DT),
              "noise": torch.randn(32, 1, generator=g, dtype=DT)}  # fmt: skip
    res = stability(est.level_energy(model, 0), est.level_kernel(0), starts, 400,
                    short_run=40, criteria=StabilityCriteria(window=200))  # fmt: skip
    assert res.passed, res.reasons


def test_setups_build_daebm():
    from ebmcmc.app.setups import digits_setup, toy_setup

    s = toy_setup("daebm", hidden=16, num_langevin_steps=2, sample_steps=2, seed=0)
    est = s.estimator
    assert isinstance(est, DiffusionAssistedEBM) and est.num_levels == 7 and s.scale == 1.0
    assert est.num_mcmc_steps == 2 and s.config.batch_size == 100 and s.config.ema_decay is None
    sigma = est.schedule.sigma
    assert torch.allclose(est.step_sizes[1:], sigma[1:] ** 2 / 2)  # epsilon_t = sigma_t
    assert est.step_sizes[0] == est.step_sizes[1]
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.energy(x), s.model(x, torch.zeros(5, dtype=torch.long)))
    assert torch.equal(s.chain_energy()(x), s.energy(x))
    assert isinstance(s.chain_kernel(), MALA)
    assert s.generate(7, torch.Generator().manual_seed(0)).shape == (7, 2)
    assert toy_setup("daebm", hidden=16).estimator.num_mcmc_steps == 40  # the paper's K
    assert toy_setup("drl", hidden=16).scale == 2.0  # the other estimators keep theirs
    d = digits_setup("daebm", hidden=16, levels=10, num_langevin_steps=2, sample_steps=1)
    assert d.estimator.num_levels == 11 and d.dim == 64
    assert d.estimator.schedule.sigma[-1] == pytest.approx(0.505)  # the top noise is kept
    assert digits_setup("daebm", hidden=16).estimator.num_levels == 51
    assert d.generate(3, torch.Generator().manual_seed(0)).shape == (3, 64)


def test_an_entry_drawn_twice_keeps_its_last_draw():
    """The buffer write-back is deterministic: with duplicate indices the last wins."""
    est = DiffusionAssistedEBM(SCHED, num_mcmc_steps=1, buffer_size=3)
    g = torch.Generator().manual_seed(0)
    ref = _clone(g)
    x_neg, t_neg, _ = est.negatives(lambda x, t: 0.5 * (x**2).sum(-1), torch.zeros(12, 2), g)
    torch.randn(3, 2, generator=ref)  # the buffer's start
    idx = torch.randint(3, (12,), generator=ref)
    for i in idx.unique():
        j = int((idx == i).nonzero().max())
        assert torch.equal(est.buffer[i], x_neg[j]) and est.buffer_levels[i] == t_neg[j]
