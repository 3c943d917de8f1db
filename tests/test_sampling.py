"""Tests for ebmcmc.sample: layout of the trace, thinning, trace_fn, reproducibility, bit-exact
resume, interruption and input validation."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ebmcmc
from ebmcmc import Trace, make_generator, sample
from ebmcmc.adaptation import WindowAdaptation
from ebmcmc.kernels import HMC, MALA, Langevin, RandomWalk
from ebmcmc.sampling import ConvergenceWarning
from ebmcmc.targets import Banana


def std_normal(x):
    return 0.5 * (x**2).sum(-1)


def run(kernel=None, x0=None, n=20, seed=0, **kw):
    kernel = kernel or MALA(0.3)
    if x0 is None:
        x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    kw.setdefault("energy", std_normal)
    energy = kw.pop("energy")
    return sample(energy, kernel, x0, num_samples=n, generator=seed, progress=False, **kw)


# ----------------------------------------------------------------------------- layout


def test_trace_layout_and_stats():
    x0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tr = run(MALA(0.3), x0, n=15)
    assert tr.draws.shape == (6, 15, 4) and tr.draws.dtype == torch.float64
    assert tr.num_chains == 6 and tr.num_draws == 15 and tr.batch_shape == (2, 3)
    assert set(tr.stats) == {"energy", "accept_prob", "step_size", "diverging"}
    for k, v in tr.stats.items():
        assert v.shape == (6, 15), k
    assert tr.stats["diverging"].dtype == torch.bool
    assert tr.stats["accept_prob"].dtype == torch.float64
    torch.testing.assert_close(tr.stats["energy"], std_normal(tr.draws))
    assert torch.all(tr.stats["step_size"] == 0.3)
    # the final state keeps the original batch shape and equals the last draw
    assert tr.final_state.position.shape == (2, 3, 4)
    assert torch.equal(tr.final_state.position.reshape(6, 4), tr.draws[:, -1])
    assert tr.kernel == MALA(0.3)
    assert tr.generator_state.dtype == torch.uint8
    assert tr.attrs["kernel"] == "MALA" and tr.attrs["num_samples"] == 15
    assert tr.attrs["thin"] == 1 and tr.attrs["recorded"] == "x"


def test_random_walk_trace_records_step_size_and_init_from_state(gen):
    x0 = torch.randn(5, 3, generator=gen)
    k = RandomWalk(torch.linspace(0.1, 0.5, 5))
    a = run(k, x0, n=10, seed=3)
    b = sample(std_normal, k, k.init(std_normal, x0), 10, generator=3, progress=False)
    assert torch.equal(a.draws, b.draws)
    torch.testing.assert_close(a.stats["step_size"][:, 0], torch.linspace(0.1, 0.5, 5))
    assert a.draws.dtype == torch.float32


def test_thinning_keeps_every_kth_step_and_aggregates_stats():
    def box(x):  # finite inside the unit box only: some proposals diverge
        e = 0.5 * (x**2).sum(-1)
        return torch.where((x.abs() < 1).all(-1), e, torch.full_like(e, math.inf))

    x0 = torch.zeros(8, 2, dtype=torch.float64)
    k = MALA(0.4)
    full = run(k, x0, n=30, seed=4, energy=box)
    thin = run(k, x0, n=10, seed=4, energy=box, thin=3)
    assert torch.equal(thin.draws, full.draws[:, 2::3])
    assert torch.equal(thin.stats["energy"], full.stats["energy"][:, 2::3])
    acc = full.stats["accept_prob"].reshape(8, 10, 3).mean(-1)
    torch.testing.assert_close(thin.stats["accept_prob"], acc)
    div = full.stats["diverging"].reshape(8, 10, 3).any(-1)
    assert torch.equal(thin.stats["diverging"], div)
    assert div.any() and not div.all()
    assert thin.attrs["thin"] == 3


def test_long_runs_record_every_step_across_chunks():
    """The driver stacks its records in chunks of 256 steps: a run over several chunks (and
    one interrupted past a chunk) records exactly what a plain loop of ``kernel.step`` sees,
    and the stuck-chain check ORs acceptance over every step."""
    x0 = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # chain (0, 0): a step size so large that it never accepts a proposal
    k = MALA(torch.tensor([[1e6, 0.3], [0.5, 0.2]], dtype=torch.float64))
    n = 600
    state, gen = k.init(std_normal, x0), make_generator(11)
    xs, es, ps, ds, ever = [], [], [], [], torch.zeros(2, 2, dtype=torch.bool)
    for _ in range(n):
        state, info = k.step(std_normal, state, gen)
        xs.append(state.position)
        es.append(state.energy)
        ps.append(info.accept_prob)
        ds.append(info.diverging)
        ever |= info.accepted
    with pytest.warns(ConvergenceWarning, match="1 of 4 chains never moved"):
        tr = sample(std_normal, k, x0, n, generator=11, progress=False, adaptation=None)

    def major(items):
        return torch.stack(items).reshape((n, 4) + items[0].shape[2:]).transpose(0, 1)

    assert torch.equal(tr.draws, major(xs)) and torch.equal(tr.stats["energy"], major(es))
    assert torch.equal(tr.stats["accept_prob"], major(ps))
    assert torch.equal(tr.stats["diverging"], major(ds))
    assert tr.attrs["stuck_chains"] == "0" and not ever[0, 0] and ever.sum() == 3
    calls = {"n": 0}

    def trace_fn(state, info):
        calls["n"] += 1
        if calls["n"] == 301:
            raise KeyboardInterrupt
        return state.position

    with pytest.warns(UserWarning, match="interrupted after 300 of 600 draws"):
        cut = sample(std_normal, k, x0, n, generator=11, progress=False, adaptation=None,
                     trace_fn=trace_fn, check=False)  # fmt: skip
    assert torch.equal(cut.draws, major(xs)[:, :300])
    assert torch.equal(cut.stats["accept_prob"], major(ps)[:, :300])


def test_trace_fn_dict_and_tensor():
    def summaries(state, info):
        return {"norm": state.position.norm(dim=-1), "acc": info.accepted, "x2": state.position**2}

    tr = run(MALA(0.3), n=7, trace_fn=summaries)
    assert set(tr.variables) == {"norm", "acc", "x2"}
    assert tr.variables["norm"].shape == (6, 7)
    assert tr.variables["acc"].dtype == torch.bool
    assert tr.variables["x2"].shape == (6, 7, 2)
    with pytest.raises(KeyError, match="custom trace_fn"):
        _ = tr.draws
    plain = run(MALA(0.3), n=7)
    torch.testing.assert_close(tr.variables["x2"], plain.draws**2)
    tensor = run(MALA(0.3), n=7, trace_fn=lambda s, i: s.position[..., :1])
    assert tensor.draws.shape == (6, 7, 1)


@pytest.mark.parametrize(
    "trace_fn, exc, match",
    [
        (lambda s, i: s.position.T, ValueError, r"trace_fn output 'x' has shape \(2, 6\)"),
        (lambda s, i: s.position.sum(), ValueError, r"trace_fn output 'x' has shape \(\)"),
        (lambda s, i: {"a": s.energy, "b": s.energy[:3]}, ValueError, "trace_fn output 'b'"),
        (lambda s, i: [s.position], TypeError, "trace_fn must return a Tensor or a non-empty dict"),
        (lambda s, i: {}, TypeError, "trace_fn must return"),
        (lambda s, i: {"a": 1.0}, TypeError, "trace_fn must return"),
    ],
)
def test_trace_fn_errors(trace_fn, exc, match):
    with pytest.raises(exc, match=match):
        run(n=3, trace_fn=trace_fn)


# ----------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize(
    "kernel",
    [MALA(0.3), HMC(0.2, 3), Langevin(0.05), RandomWalk(0.5)],
    ids=lambda k: type(k).__name__,
)
def test_same_seed_identical_different_seed_different(kernel):
    a = run(kernel, n=30, seed=7, num_warmup=20)
    b = run(kernel, n=30, seed=7, num_warmup=20)
    c = run(kernel, n=30, seed=8, num_warmup=20)
    assert torch.equal(a.draws, b.draws)
    for k in a.stats:
        assert torch.equal(a.stats[k], b.stats[k]), k
    assert torch.equal(a.generator_state, b.generator_state)
    assert not torch.equal(a.draws, c.draws)
    # an int seed is the same as a generator seeded with it
    x = a.final_state.position
    d = sample(
        std_normal, kernel, x, 5, generator=torch.Generator().manual_seed(11), progress=False
    )
    e = sample(std_normal, kernel, x, 5, generator=11, progress=False)
    assert torch.equal(d.draws, e.draws)


def test_unseeded_runs_differ():
    a = run(n=10, seed=None)
    b = run(n=10, seed=None)
    assert not torch.equal(a.draws, b.draws)


def test_make_generator():
    assert make_generator(5).initial_seed() == 5
    g = torch.Generator().manual_seed(3)
    assert make_generator(g) is g
    assert isinstance(make_generator(None), torch.Generator)
    for bad in (True, 1.5, "0", torch.tensor(0)):
        with pytest.raises(TypeError, match="generator must be a torch.Generator, an int seed"):
            make_generator(bad)


# ----------------------------------------------------------------------------- resume


def _assert_traces_equal(a: Trace, b: Trace):
    assert set(a.variables) == set(b.variables) and set(a.stats) == set(b.stats)
    for k in a.variables:
        assert torch.equal(a.variables[k], b.variables[k]), k
    for k in a.stats:
        assert a.stats[k].dtype == b.stats[k].dtype, k
        assert torch.equal(a.stats[k], b.stats[k]), k
    assert torch.equal(a.final_state.position, b.final_state.position)
    assert torch.equal(a.final_state.energy, b.final_state.energy)
    assert torch.equal(a.final_state.grad, b.final_state.grad)
    assert torch.equal(a.generator_state, b.generator_state)


@pytest.mark.parametrize(
    "kernel, warmup, adaptation, thin, n",
    [
        (MALA(0.1), 200, "default", 1, 1000),
        (HMC(0.1, 2), 0, None, 1, 1000),
        (HMC(0.1, 2), 150, "default", 1, 1000),  # adapted step and mass matrix are tensors
        (
            HMC(torch.full((4, 2), 0.2), torch.tensor([1, 2, 3, 2] * 2).reshape(4, 2)),
            0,
            None,
            2,
            100,
        ),
    ],
    ids=["mala-warmup", "hmc", "hmc-warmup", "hmc-per-chain-thin"],
)
def test_resume_is_bit_identical(tmp_path, kernel, warmup, adaptation, thin, n):
    """n steps in one run == n/2 steps, save, load, n/2 more from the loaded trace."""
    t = Banana()
    batch = kernel.step_size.shape if isinstance(kernel.step_size, torch.Tensor) else (8,)
    x0 = t.sample(math.prod(batch), generator=torch.Generator().manual_seed(1)).reshape(*batch, 2)

    def go(init, n, k, **kw):
        return sample(t, k, init, num_samples=n, thin=thin, progress=False, **kw)

    full = go(x0, n, kernel, num_warmup=warmup, adaptation=adaptation, generator=3)
    first = go(x0, n // 2, kernel, num_warmup=warmup, adaptation=adaptation, generator=3)
    path = first.save(tmp_path / "first.nc")
    loaded = Trace.load(path)
    second = go(loaded, n // 2, loaded.kernel)
    joined = Trace.concatenate([loaded, second])
    assert joined.num_draws == n and joined.batch_shape == tuple(batch)
    _assert_traces_equal(joined, full)
    if n <= 100 or isinstance(kernel, MALA):
        # resuming from the in-memory trace is the same
        _assert_traces_equal(Trace.concatenate([first, go(first, n // 2, first.kernel)]), full)


def test_resume_with_explicit_generator_uses_it():
    first = run(n=10, seed=1)
    a = sample(std_normal, first.kernel, first, 10, generator=5, progress=False)
    b = sample(std_normal, first.kernel, first.final_state, 10, generator=5, progress=False)
    assert torch.equal(a.draws, b.draws)


def test_keyboard_interrupt_returns_resumable_partial_trace():
    calls = {"n": 0}

    def trace_fn(state, info):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return state.position

    with pytest.warns(UserWarning, match="interrupted after 5 of 20 draws"):
        tr = run(n=20, trace_fn=trace_fn)
    assert tr.num_draws == 5 and tr.attrs["num_samples"] == 5
    more = sample(std_normal, tr.kernel, tr, 5, progress=False)
    assert more.num_draws == 5
    # interrupted before any draw: the interrupt propagates

    def at_once(state, info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(n=5, trace_fn=at_once)


def test_progress_bar_runs(capsys):
    """progress=True draws a tqdm bar on stderr that reaches the number of steps (warm-up
    first, then sampling); progress=False prints nothing."""
    tr = run(n=150, seed=1)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr2 = sample(std_normal, MALA(0.3), tr.final_state, 150, num_warmup=50, generator=1,
                     progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert tr2.num_draws == 150
    assert "sampling" in err and "200/200" in err, err[-500:]
    sample(std_normal, MALA(0.3), tr.final_state, 20, generator=1, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- bad input


def _x0():
    return torch.randn(4, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"energy": lambda x: x.sum(0)}, ValueError, "energy returned shape"),
        ({"energy": lambda x: x}, None, None),  # event shape (): a valid (4, 2) batch
        ({"energy": lambda x: x.sum()}, ValueError, "the energy returned a scalar"),
        (
            {"energy": lambda x: torch.where(x[:, 0] > 10, 0.0, math.inf)},
            ValueError,
            "energy is not finite at 4 of 4 points of init",
        ),
        ({"energy": 3.0}, TypeError, "energy must be callable"),
        ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1, got 0"),
        ({"num_samples": 2.0}, ValueError, "num_samples must be an int >= 1"),
        ({"num_samples": True}, ValueError, "num_samples must be an int >= 1"),
        ({"thin": 0}, ValueError, "thin must be an int >= 1, got 0"),
        ({"num_warmup": -1}, ValueError, "num_warmup must be an int >= 0"),
        ({"init": [[0.0, 0.0]]}, TypeError, "init must be a Tensor, State or Trace, got list"),
        ({"init": torch.zeros(4, 2).numpy()}, TypeError, "init must be a Tensor, State or Trace"),
        ({"init": torch.zeros(4, 2, dtype=torch.long)}, TypeError, "floating-point"),
        ({"init": torch.full((4, 2), math.nan)}, ValueError, "init contains non-finite"),
        ({"kernel": "mala"}, TypeError, "kernel must be an ebmcmc Kernel"),
        ({"adaptation": "stan"}, TypeError, "adaptation must be 'default', a WindowAdaptation"),
        ({"generator": 1.5}, TypeError, "generator must be a torch.Generator"),
        ({"kernel": MALA(torch.ones(3))}, ValueError, "step_size of shape"),
    ],
)
def test_sample_input_errors(kwargs, exc, match):
    args = {
        "energy": std_normal,
        "kernel": MALA(0.1),
        "init": _x0(),
        "num_samples": 3,
        "generator": 0,
        "progress": False,
    } | kwargs
    if exc is None:
        assert sample(**args).draws.shape == (8, 3)
        return
    with pytest.raises(exc, match=match):
        sample(**args)


def test_init_trace_without_final_state():
    tr = Trace({"x": torch.zeros(2, 3, 1)}, {})
    with pytest.raises(ValueError, match="no final state to resume from"):
        sample(std_normal, MALA(0.1), tr, 3, progress=False)


class _FakeCudaGenerator(torch.Generator):
    """A CPU generator that reports a CUDA device (CI has no GPU)."""

    @property
    def device(self):  # type: ignore[override]
        return torch.device("cuda")


def test_generator_on_wrong_device_type():
    with pytest.raises(ValueError, match=r"generator is on cuda but the chains are on cpu"):
        sample(std_normal, MALA(0.1), _x0(), 3, generator=_FakeCudaGenerator(), progress=False)


@pytest.mark.gpu
def test_gpu_sampling_and_device_mismatch():
    x0 = torch.randn(16, 2, device="cuda", dtype=torch.float64)
    g = torch.Generator(device="cuda").manual_seed(0)
    tr = sample(std_normal, HMC(0.2, 3), x0, 20, num_warmup=20, generator=g, progress=False)
    assert tr.draws.device.type == "cuda" and torch.isfinite(tr.draws).all()
    again = sample(std_normal, HMC(0.2, 3), x0, 20, num_warmup=20, generator=0, progress=False)
    assert torch.equal(tr.draws, again.draws)
    with pytest.raises(ValueError, match="generator is on cpu but the chains are on cuda"):
        sample(std_normal, MALA(0.1), x0, 3, generator=torch.Generator(), progress=False)


def test_top_level_exports():
    assert ebmcmc.sample is sample and ebmcmc.Trace is Trace
    assert ebmcmc.WindowAdaptation is WindowAdaptation
