"""Stop runs at random moments, resume them, and compare with uninterrupted runs bit for bit.

Kinds (each trial stops one run once, at a uniformly random moment of the phase named):

* ``sample``: Ctrl-C (SIGINT) while recording; resumed with ``sample(init=trace)``;
* ``warmup``: Ctrl-C during warm-up; resumed with ``sample(init=trace, num_warmup=...)``;
* ``stream``: Ctrl-C during a run streamed to a directory (``out=``, small chunks); resumed
  from the directory;
* ``kill``: SIGKILL (no clean-up at all) of a process streaming to a directory; the directory
  is then loaded and resumed (this checks that a killed write never leaves a broken trace);
* ``train``: Ctrl-C during ``Trainer.fit``; resumed from the checkpoint; the weights, EMA
  weights and loss history are compared.

A trial whose signal lands outside the run (before it started or after it ended) is counted
as *missed* and drawn again. Run::

    python benchmarks/interrupts.py --trials 20        # every kind, ~5 minutes on 2 cores
    python benchmarks/interrupts.py --kinds sample,train --trials 3
    python benchmarks/interrupts.py --smoke --out /tmp/int     # one trial of each kind (CI)

It prints one JSON line per kind: ``{"kind", "trials", "identical", "missed", "seconds"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIGINT_KINDS = ("sample", "warmup", "stream", "train")
KINDS = SIGINT_KINDS + ("kill",)

N_CHAINS, N_SAMPLES, N_WARMUP = 16, 1500, 600


def _target():
    from ebmcmc.targets import Banana

    return Banana()


def _x0():
    return torch.randn(N_CHAINS, 2, generator=torch.Generator().manual_seed(1))


def _same_trace(a, b) -> bool:
    if set(a.variables) != set(b.variables) or set(a.stats) != set(b.stats):
        return False
    ok = all(torch.equal(a.variables[k], b.variables[k]) for k in a.variables)
    ok &= all(
        a.stats[k].dtype == b.stats[k].dtype and torch.equal(a.stats[k], b.stats[k])
        for k in a.stats
    )
    ok &= torch.equal(a.final_state.position, b.final_state.position)
    return bool(ok and torch.equal(a.generator_state, b.generator_state))


def _with_sigint(delay: float, run):
    """Run ``run()`` with SIGINT sent to this process after ``delay`` seconds; ``None`` when
    the signal landed outside the run (missed)."""
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        out = run()
        timer.join()  # the signal may still arrive: treat a late one as missed
        time.sleep(0.05)
        return out
    except KeyboardInterrupt:
        return None
    finally:
        timer.cancel()


def _sample_trial(kind: str, delay: float, reference, tmp: Path):
    import ebmcmc
    from ebmcmc.kernels import MALA

    t = _target()
    warm = N_WARMUP if kind != "sample" else 0
    out = tmp / f"run-{time.monotonic_ns()}" if kind == "stream" else None
    every = 97 if kind == "stream" else None

    def run():
        return ebmcmc.sample(t, MALA(0.1), _x0(), N_SAMPLES, num_warmup=warm, generator=3,
                             progress=False, out=out, checkpoint_every=every)  # fmt: skip

    tr = _with_sigint(delay, run)
    if tr is None or (tr.warmup is None and tr.num_draws == N_SAMPLES):
        return None  # missed: before the run, or after its end
    if kind == "warmup" and tr.warmup is None:
        return None  # the signal came after the warm-up
    if tr.warmup is not None:
        rest = ebmcmc.sample(t, tr.kernel, tr, N_SAMPLES, num_warmup=warm, progress=False,
                             out=out)  # fmt: skip
    else:
        rest = ebmcmc.sample(t, tr.kernel, tr, N_SAMPLES - tr.num_draws, progress=False,
                             out=out)  # fmt: skip
    whole = ebmcmc.Trace.load(out) if out is not None else ebmcmc.Trace.concatenate([tr, rest])
    return _same_trace(whole, reference)


def _reference_sample(kind: str):
    import ebmcmc
    from ebmcmc.kernels import MALA

    warm = N_WARMUP if kind != "sample" else 0
    for _ in range(2):  # timed the second time: the first pays for imports (ArviZ's R-hat)
        start = time.perf_counter()
        ref = ebmcmc.sample(_target(), MALA(0.1), _x0(), N_SAMPLES, num_warmup=warm,
                            generator=3, progress=False)  # fmt: skip
    return ref, time.perf_counter() - start, warm / (warm + N_SAMPLES)


TRAIN_STEPS = 60


def _trainer(run_dir):
    from ebmcmc.estimators import PersistentContrastiveDivergence
    from ebmcmc.kernels import Langevin
    from ebmcmc.nn import TimeMLP
    from ebmcmc.train import TrainConfig, Trainer

    torch.manual_seed(0)
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    est = PersistentContrastiveDivergence(Langevin(0.01), 5, buffer_size=64)
    cfg = TrainConfig(lr=1e-3, warmup_steps=5, batch_size=32, grad_clip=1.0, ema_decay=0.9,
                      checkpoint_every=7)  # fmt: skip
    return Trainer(TimeMLP(2, hidden=32, num_levels=1), est, data, cfg, run_dir=run_dir,
                   seed=1, progress=False)  # fmt: skip


def _same_weights(a, b) -> bool:
    for x, y in ((a.model, b.model), (a.ema_model, b.ema_model)):
        sx, sy = x.state_dict(), y.state_dict()
        if not all(torch.equal(sx[k], sy[k]) for k in sx):
            return False
    return [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def _train_trial(delay: float, reference, tmp: Path):
    run_dir = tmp / f"train-{time.monotonic_ns()}"
    tr = _trainer(run_dir)
    done = _with_sigint(delay, lambda: tr.fit(TRAIN_STEPS))
    if done is not None:
        return None  # finished before the signal
    again = _trainer(run_dir)
    if not again.resume():
        return None  # stopped before the first step
    again.fit(TRAIN_STEPS)
    return _same_weights(again, reference)


def _kill_trial(delay: float, reference, tmp: Path):
    import ebmcmc

    out = tmp / f"kill-{time.monotonic_ns()}"
    code = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]);"
        "import benchmarks.interrupts as b, ebmcmc, warnings; warnings.simplefilter('ignore');"
        "from ebmcmc.kernels import MALA; print('go', flush=True);"
        "ebmcmc.sample(b._target(), MALA(0.1), b._x0(), b.N_SAMPLES, num_warmup=b.N_WARMUP,"
        " generator=3, progress=False, out=sys.argv[2], checkpoint_every=31)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # imported: the run starts now
    time.sleep(delay)
    proc.kill()
    proc.wait()
    if not (out / "index.nc").is_file():
        return None  # killed before the first commit
    tr = ebmcmc.Trace.load(out)
    if tr.warmup is None and tr.num_draws == N_SAMPLES:
        return None  # finished before the kill
    if tr.warmup is not None:
        ebmcmc.sample(_target(), tr.kernel, tr, N_SAMPLES, num_warmup=N_WARMUP, progress=False,
                      out=out)  # fmt: skip
    else:
        ebmcmc.sample(_target(), tr.kernel, tr, N_SAMPLES - tr.num_draws, progress=False,
                      out=out)  # fmt: skip
    return _same_trace(ebmcmc.Trace.load(out), reference)


def run_kind(kind: str, trials: int, seed: int = 0) -> dict:
    """Run ``trials`` interrupted runs of ``kind``; count the bit-identical resumes."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rng = random.Random(f"{kind}-{seed}")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"ebmcmc-{kind}-"))
    if kind == "train":
        for _ in range(2):  # timed the second time (the first pays for imports)
            t0 = time.perf_counter()
            reference = _trainer(None)
            reference.fit(TRAIN_STEPS)
        span, lo, hi = time.perf_counter() - t0, 0.05, 0.9
    else:
        reference, span, warm_share = _reference_sample("sample" if kind == "sample" else "x")
        lo, hi = (0.05, 0.95 * warm_share) if kind == "warmup" else (0.05, 0.95)
        if kind in ("stream", "kill"):
            lo, hi = 0.05, 1.5  # writing the chunks takes time too
    identical = missed = done = 0
    while done < trials and missed < 10 * trials:
        delay = span * rng.uniform(lo, hi)
        if kind == "train":
            got = _train_trial(delay, reference, tmp)
        elif kind == "kill":
            got = _kill_trial(delay, reference, tmp)
        else:
            got = _sample_trial(kind, delay, reference, tmp)
        if got is None:
            missed += 1
            continue
        done += 1
        identical += bool(got)
    return {"kind": kind, "trials": done, "identical": identical, "missed": missed,
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="one trial of each kind (CI)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.trials = 1
    # a process started in the background by a shell (``cmd &``) ignores SIGINT, and then
    # Python installs no KeyboardInterrupt handler: every signal would be lost
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results = []
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        r = run_kind(kind, args.trials, args.seed)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "interrupts.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
