"""Ctrl-C anywhere, then resume: the same draws (and training weights) as a run never stopped.

A real SIGINT is raised from inside the energy (``signal.raise_signal``), i.e. in the middle of
a kernel step, at steps drawn at random (seeded) over warm-up and recording; a
``KeyboardInterrupt`` raised by the energy itself (no signal) takes the roll-back path. The
random-time version, with signals from a timer thread and SIGKILL of a streaming process, is
``benchmarks/interrupts.py`` (one trial of each kind below, the full measurement in the docs).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ebmcmc import Trace, sample
from ebmcmc.estimators import PersistentContrastiveDivergence
from ebmcmc.kernels import HMC, MALA, Langevin
from ebmcmc.nn import TimeMLP
from ebmcmc.targets import Banana
from ebmcmc.train import TrainConfig, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TARGET = Banana()
X0 = TARGET.sample(8, generator=torch.Generator().manual_seed(1)).reshape(8, 2)
WARM, DRAWS = 120, 150


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Python's own Ctrl-C handler while each test runs: a runner started in the background
    (``nohup``, ``cmd &`` without job control) has SIGINT ignored, and ebmcmc leaves a handler
    it did not install alone, so the signals raised here would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def assert_same(a: Trace, b: Trace) -> None:
    assert set(a.variables) == set(b.variables) and set(a.stats) == set(b.stats)
    for k in a.variables:
        assert torch.equal(a.variables[k], b.variables[k]), k
    for k in a.stats:
        assert a.stats[k].dtype == b.stats[k].dtype and torch.equal(a.stats[k], b.stats[k]), k
    assert torch.equal(a.final_state.position, b.final_state.position)
    assert torch.equal(a.generator_state, b.generator_state)


class StopAt:
    """The banana's energy, which stops the run at its ``at``-th evaluation: by a real SIGINT
    (``signal=True``, deferred by ``sample`` to the end of the step) or by raising
    ``KeyboardInterrupt`` itself, in the middle of the step."""

    def __init__(self, at: int, signal: bool):
        self.calls, self.at, self.signal = 0, at, signal

    def __call__(self, x):
        self.calls += 1
        if self.calls == self.at:
            if self.signal:
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return TARGET(x)


def resume(tr: Trace, kernel_default, num_warmup: int, total: int, **kw) -> Trace:
    """Finish an interrupted run the documented way; return the whole run's trace."""
    if tr.warmup is not None:  # stopped during warm-up: finish it, then sample everything
        return sample(TARGET, tr.kernel, tr, total, num_warmup=num_warmup, progress=False, **kw)
    rest = sample(TARGET, tr.kernel, tr, total - tr.num_draws, progress=False, **kw)
    return Trace.concatenate([tr, rest])


def _interrupt_points(kernel, thin: int, count: int, seed: int) -> list[int]:
    """Energy evaluations to stop at, drawn over warm-up and recording."""
    per_step = kernel.num_leapfrog_steps if isinstance(kernel, HMC) else 1
    last = 2 + (WARM + DRAWS * thin) * per_step
    return sorted(random.Random(seed).sample(range(3, last), count))


@pytest.mark.parametrize("by_signal", [True, False], ids=["sigint", "raised"])
@pytest.mark.parametrize(
    "kernel, thin", [(MALA(0.1), 1), (HMC(0.1, 3), 1), (MALA(0.1), 3)], ids=["mala", "hmc", "thin"]
)
def test_interrupt_anywhere_then_resume_is_bit_identical(kernel, thin, by_signal):
    """Before: the returned trace held a generator state taken mid-step (8 of 9 interrupts
    during recording resumed to different draws) and an interrupted warm-up was lost."""
    full = sample(TARGET, kernel, X0, DRAWS, num_warmup=WARM, thin=thin, generator=3,
                  progress=False)  # fmt: skip
    for at in _interrupt_points(kernel, thin, 5, seed=len(repr(kernel)) + thin + by_signal):
        with pytest.warns(UserWarning, match="sampling interrupted"):
            tr = sample(StopAt(at, by_signal), kernel, X0, DRAWS, num_warmup=WARM, thin=thin,
                        generator=3, progress=False)  # fmt: skip
        assert_same(resume(tr, kernel, WARM, DRAWS, thin=thin), full)


def test_interrupted_warmup_is_kept_in_memory_and_in_a_file(tmp_path):
    """Ctrl-C during warm-up returns a trace without draws that carries the warm-up's
    progress (state, tuned kernel, generator, the Adapter's running state); saved and loaded,
    it finishes the warm-up and samples exactly as the uninterrupted run. Before: the
    KeyboardInterrupt propagated and the warm-up was lost."""
    kernel = HMC(0.1, 3)
    full = sample(TARGET, kernel, X0, 40, num_warmup=WARM, generator=3, progress=False)
    with pytest.warns(UserWarning, match=r"during warm-up after 50 of 120 steps"):
        tr = sample(StopAt(2 + 3 * 50, True), kernel, X0, 40, num_warmup=WARM, generator=3,
                    progress=False)  # fmt: skip
    assert tr.num_draws == 0 and tr.warmup.done == 50 and tr.warmup.total == WARM
    assert tr.attrs["warmup_done"] == 50 and tr.warmup.adapter["iteration"] == 50
    with pytest.raises(KeyError, match="holds no draws"):
        _ = tr.draws
    back = Trace.load(tr.save(tmp_path / "warm.nc"))
    assert back.warmup.done == 50 and back.warmup.adapter.keys() == tr.warmup.adapter.keys()
    assert_same(sample(TARGET, back.kernel, back, 40, num_warmup=WARM, progress=False), full)
    # the warm-up must be finished as it was started
    with pytest.raises(ValueError, match="pass num_warmup=120"):
        sample(TARGET, back.kernel, back, 40, num_warmup=10, progress=False)
    with pytest.raises(ValueError, match="ran with adaptation"):
        sample(TARGET, back.kernel, back, 40, num_warmup=WARM, adaptation=None, progress=False)
    # a trace without draws joins others as nothing
    assert Trace.concatenate([tr, full]).num_draws == full.num_draws


def test_interrupt_before_anything_was_done_propagates():
    with pytest.raises(KeyboardInterrupt):
        sample(StopAt(3, False), MALA(0.1), X0, 5, generator=0, progress=False)


def test_second_ctrl_c_stops_at_once():
    """The first Ctrl-C is deferred to the end of the step; a second one (a hung step)
    raises at once, and what was complete before is still kept."""

    class Twice:
        calls = 0

        def __call__(self, x):
            Twice.calls += 1
            if Twice.calls == 40:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            return TARGET(x)

    full = sample(TARGET, MALA(0.1), X0, 60, generator=3, progress=False)
    with pytest.warns(UserWarning, match="after 37 of 60 draws"):
        tr = sample(Twice(), MALA(0.1), X0, 60, generator=3, progress=False)
    assert_same(resume(tr, MALA(0.1), 0, 60), full)


# ----------------------------------------------------------------------------- training

DATA = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))


class SignalsAt(PersistentContrastiveDivergence):
    """PCD whose ``loss`` raises SIGINT (``times`` times) in the middle of training step
    ``at`` (after the batch is drawn and the sampler has run)."""

    def __init__(self, at: int, times: int = 1):
        super().__init__(Langevin(0.01), 3, buffer_size=64)
        self.at, self.times, self.count = at, times, 0

    def loss(self, model, batch, generator=None):
        out = super().loss(model, batch, generator)
        self.count += 1
        if self.count == self.at:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)
        return out


def _trainer(run_dir, estimator) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainConfig(lr=1e-3, warmup_steps=5, batch_size=16, grad_clip=1.0, ema_decay=0.9,
                      checkpoint_every=4)  # fmt: skip
    return Trainer(TimeMLP(2, hidden=16, num_levels=1), estimator, DATA, cfg, run_dir=run_dir,
                   seed=1, progress=False)  # fmt: skip


def _same_weights(a: Trainer, b: Trainer) -> None:
    for x, y in ((a.model, b.model), (a.ema_model, b.ema_model)):
        sx, sy = x.state_dict(), y.state_dict()
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


@pytest.mark.parametrize("at", [3, 6, 11])
def test_ctrl_c_during_training_checkpoints_a_whole_step(tmp_path, at):
    """Before: the checkpoint written on Ctrl-C held a generator state taken mid-step (2 of
    7 interrupted trainings resumed to different weights)."""
    straight = _trainer(None, PersistentContrastiveDivergence(Langevin(0.01), 3, buffer_size=64))
    straight.fit(16)
    tr = _trainer(tmp_path, SignalsAt(at))
    with pytest.raises(KeyboardInterrupt):
        tr.fit(16)
    assert tr.step == at and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == at
    again = _trainer(tmp_path, PersistentContrastiveDivergence(Langevin(0.01), 3, buffer_size=64))
    assert again.resume() and again.step == at
    again.fit(16)
    _same_weights(again, straight)


def test_second_ctrl_c_during_training_writes_nothing_and_marks_the_trainer(tmp_path):
    tr = _trainer(tmp_path, SignalsAt(6, times=2))
    with pytest.warns(UserWarning, match="stopped in the middle of step 6"):
        with pytest.raises(KeyboardInterrupt):
            tr.fit(16)
    assert tr.torn and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    with pytest.raises(RuntimeError, match="middle of a step"):
        tr.save()
    with pytest.raises(RuntimeError, match="middle of a step"):
        tr.fit(16)
    assert tr.resume() and not tr.torn and tr.step == 4


# ----------------------------------------------------------------------------- random times


@pytest.mark.slow
def test_signals_at_random_times_resume_bit_for_bit():
    """One trial of each kind of benchmarks/interrupts.py, in a fresh process: SIGINT from a
    timer thread during recording, warm-up, a streamed run and training, and SIGKILL of a
    process streaming to a directory."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import benchmarks.interrupts as b;"
        "b.main(['--trials', '1', '--seed', '7'])"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True,
                           text=True, cwd=ROOT, timeout=900,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["kind"] for row in rows] == ["sample", "warmup", "stream", "train", "kill"]
    for row in rows:
        assert row["trials"] == 1 and row["identical"] == 1, row
