"""Every kernel on every reference target: R-hat, ESS and bias against the exact answers.

Each kernel of ``ebmcmc.kernels`` (unadjusted Langevin, MALA, HMC, random-walk Metropolis,
replica exchange wrapping MALA) samples each target of ``ebmcmc.targets`` (correlated 2-D
Gaussian, ill-conditioned 50-D Gaussian, two-mode mixture, banana, Neal's funnel) from one seed
with ``ebmcmc.sample``'s default warm-up adaptation. As in ``ebmcmc demo``, the estimated mean
and variance are compared with the exact ones in Monte Carlo standard errors, next to rank
R-hat, bulk/tail ESS, acceptance and divergences. Nothing is tuned to pass: a failing row says
what failed. Unadjusted Langevin, which has no acceptance rate to adapt to, runs at the step
MALA adapted to on the same target and at a quarter of it, so its O(step) bias shows.

Usage (writes ``kernels.md`` and ``kernels.json``, the same rows, to ``--out``)::

    .venv/bin/python diagnostics/kernels.py                # full study, about 4 minutes
    .venv/bin/python diagnostics/kernels.py --smoke --out /tmp/k   # 2 targets, tiny, < 30 s
    .venv/bin/python diagnostics/kernels.py --seed 1 --no-progress --out DIR

``--out`` defaults to ``diagnostics/results`` (also for ``--smoke``, which then replaces the
full results). This is a study, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)  # small tensors: more threads cost more than they save

from ebmcmc import sample  # noqa: E402
from ebmcmc._files import atomic_write  # noqa: E402
from ebmcmc.adaptation.tuning import leaves  # noqa: E402
from ebmcmc.diagnostics import summary  # noqa: E402
from ebmcmc.kernels import HMC, MALA, Langevin, RandomWalk, ReplicaExchange  # noqa: E402
from ebmcmc.targets import Banana, Funnel, Gaussian, GaussianMixture  # noqa: E402

RHAT_MAX, Z_MAX = 1.01, 4.0
COLUMNS = (
    "target | kernel | step | chains x draws | max z (mean) | max z (var) | max R-hat | "
    "min ESS bulk | min ESS tail | accept | diverging | seconds | verdict"
)
LADDER = torch.logspace(0, -1, 4, dtype=torch.float64)  # betas 1, 0.46, 0.22, 0.1
#: name -> (make(step MALA adapted to on this target) -> kernel, (warm-up, steps, thin)) of
#: the full run; MALA comes first so that the Langevin rows can use its step size
KERNELS = {
    "MALA": (lambda eps: MALA(step_size=0.1), (1000, 4000, 4)),
    "Langevin": (lambda eps: Langevin(step_size=eps), (1000, 4000, 4)),
    "Langevin (step/4)": (lambda eps: Langevin(step_size=eps / 4), (2000, 8000, 8)),
    "HMC": (lambda eps: HMC(step_size=0.1, num_leapfrog_steps=16), (500, 1000, 1)),
    "RandomWalk": (lambda eps: RandomWalk(step_size=0.5), (1000, 4000, 4)),
    "ReplicaExchange(MALA) x4": (
        lambda eps: ReplicaExchange(MALA(step_size=0.1), betas=LADDER),
        (1000, 3000, 3),
    ),
}
SMOKE_SIZES, SMOKE_TARGETS = (100, 200, 1), ("gaussian-2d (rho 0.9)", "banana")


def targets(seed: int) -> dict:
    """name -> (target, coordinates whose variance is checked; None = all)."""
    g2 = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    g50 = Gaussian.ill_conditioned(50, 100.0, torch.Generator().manual_seed(seed))
    means, weights = torch.tensor([[-1.5, 0.0], [1.5, 0.0]]), torch.tensor([0.3, 0.7])
    mix = GaussianMixture(means, 0.5 * torch.eye(2), weights)
    # funnel: var(v) = 9; var(x_i) = e^4.5 is finite, but its estimator's variance (~3 e^18)
    # makes a z-score meaningless, so only v's variance is checked
    return {
        "gaussian-2d (rho 0.9)": (g2, None),
        "gaussian-50d (cond 100)": (g50, None),
        "mixture (0.3/0.7)": (mix, None),
        "banana": (Banana(), None),
        "funnel-5d (v first)": (Funnel(5), [0]),
    }


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def verdict(r: dict) -> str:
    """'ok', or what failed (divergences are named next to a failure)."""
    fails = [f"R-hat {r['r_hat']:.3f}"] if not r["r_hat"] < RHAT_MAX else []
    fails += [f"biased mean: z {r['z_mean']:.1f}"] if not r["z_mean"] < Z_MAX else []
    fails += [f"biased var: z {r['z_var']:.1f}"] if not r["z_var"] < Z_MAX else []
    fails += [f"diverging {r['diverging']:.0%}"] if fails and r["diverging"] > 0.005 else []
    return "; ".join(fails) or "ok"


def run(target, var_idx, kernel, chains: int, sizes, seed: int, progress: bool) -> dict:
    """Sample one (target, kernel) pair from ``seed`` and score it against the truth."""
    warmup, steps, thin = sizes
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(chains, target.event_shape[0], generator=g, dtype=torch.float64)
    t0 = time.perf_counter()
    tr = sample(target, kernel, x0, steps // thin, warmup, thin, generator=g, progress=progress)
    row = {
        "seconds": time.perf_counter() - t0,
        # a composite's first tunable leaf (for replica exchange: the inner kernel; the cold
        # replica's step is the first entry of its per-replica step sizes)
        "step": float(torch.as_tensor(leaves(tr.kernel)[0].kernel.step_size).flatten()[0]),
        "chains": chains,
        "draws": steps // thin,
        "thin": thin,
        "warmup": warmup,
        "accept": float(tr.stats["accept_prob"].mean()),
        "diverging": float(tr.stats["diverging"].double().mean()),
    }
    x = tr.draws.numpy()
    mean, var = target.mean.numpy(), np.diag(target.cov.numpy())
    idx = slice(None) if var_idx is None else var_idx
    try:
        s1 = summary({"x": x})
        s2 = summary({"x2": ((x - mean) ** 2)[..., idx]})
    except ValueError as err:  # non-finite draws: an unstable kernel ran away
        row.update(dict.fromkeys(("z_mean", "z_var", "r_hat", "ess_bulk", "ess_tail", "iat_steps")))
        return {**row, "verdict": f"failed: {err}"}
    with np.errstate(divide="ignore", invalid="ignore"):
        z_mean = np.abs((s1["mean"].to_numpy() - mean) / s1["mcse_mean"].to_numpy()).max()
        z_var = np.abs((s2["mean"].to_numpy() - var[idx]) / s2["mcse_mean"].to_numpy()).max()
    ess = float(s1["ess_bulk"].min())
    row.update(
        z_mean=float(z_mean),
        z_var=float(z_var),
        r_hat=float(s1["r_hat"].max()),
        ess_bulk=ess,
        ess_tail=float(s1["ess_tail"].min()),
        # integrated autocorrelation time in kernel steps, from the worst coordinate's ESS
        iat_steps=chains * steps / ess if ess > 0 else float("inf"),
    )
    return {**row, "verdict": verdict(row)}


def md_row(r: dict) -> str:
    size = f"{r['chains']} x {r['draws']}" + (f" (thin {r['thin']})" if r["thin"] > 1 else "")
    spec = {"z_mean": ".2f", "z_var": ".2f", "r_hat": ".3f", "ess_bulk": ",.0f",
            "ess_tail": ",.0f", "accept": ".3f", "diverging": ".3f", "seconds": ".1f"}  # fmt: skip
    cells = [r["target"], r["kernel"], fmt(r["step"], ".3g"), size]
    cells += [fmt(r[k], v) for k, v in spec.items()]
    cells.append(r["verdict"] if r["verdict"] == "ok" else f"**{r['verdict']}**")
    return "| " + " | ".join(cells) + " |"


def notes(rows: list[dict]) -> list[str]:
    """What the table shows, with this run's figures."""
    out = [
        f"- Verdict: `ok` when max R-hat < {RHAT_MAX} and both max |z| < {Z_MAX:g}; z is "
        "|estimate - exact| / MCSE (ArviZ, through `ebmcmc.diagnostics.summary`); the variance "
        "z uses the squared deviation from the exact mean. Chains start at N(0, I) draws; "
        "`step` is the step size after warm-up (dual averaging for MALA, HMC, RandomWalk and "
        "ReplicaExchange, which adapts one per replica and shows the cold one's; HMC also "
        "adapts a diagonal mass matrix).",
        "- Unadjusted Langevin is biased by construction: without an accept/reject step its "
        "stationary law differs from the target by O(step). On a Gaussian its mean is exact "
        "but its variance along a direction of precision lambda is inflated by "
        "1 / (1 - step * lambda / 2); elsewhere the mean is off too, and where the gradient "
        "grows faster than linearly (banana, funnel) a too-large step makes chains run away "
        "(non-finite proposals, counted as diverging, after which a chain is stuck). It runs at "
        "the step MALA adapted to and at a quarter of it (step -> step / 4):",
    ]
    by = {(r["target"], r["kernel"]): r for r in rows}
    for t in dict.fromkeys(r["target"] for r in rows):
        a, b = by.get((t, "Langevin")), by.get((t, "Langevin (step/4)"))
        if a and b:
            z = [f"{k} {fmt(a[k], '.1f')} -> {fmt(b[k], '.1f')}" for k in ("z_mean", "z_var")]
            out.append(f"  - {t}: {', '.join(z)}; R-hat {fmt(a['r_hat'], '.3f')} -> "
                       f"{fmt(b['r_hat'], '.3f')}; diverging {a['diverging']:.1%} -> "
                       f"{b['diverging']:.1%}")  # fmt: skip
    slow = [r for r in rows if r["verdict"] != "ok" and "Langevin" not in r["kernel"]]
    out += ["- Exact kernels that did not pass, with the integrated autocorrelation time (IAT) "
            "in kernel steps, chains x steps / min bulk ESS:"] if slow else []  # fmt: skip
    for r in slow:
        iat, steps = fmt(r["iat_steps"], ",.0f"), r["draws"] * r["thin"]
        out.append(
            f"  - {r['target']}, {r['kernel']}: {r['verdict']}; IAT ~ {iat} of {steps} steps"
        )
    out.append(
        "- R-hat < 1.01 needs roughly 100 effective draws per chain (R-hat - 1 is about 1 / "
        "bulk ESS per chain), i.e. a min ESS bulk near 10^4 with 128 chains. An exact kernel "
        "that fails by R-hat is short of that (and its MCSE, hence z, is then unreliable); the "
        "banana's curved ridge keeps MALA's adapted step small, so it needs thousands of steps "
        "per independent draw. HMC runs a fixed trajectory (16 steps, `jitter=0`, the default), "
        "which can nearly return to its start on some direction of a Gaussian; see HMC's "
        "`jitter`. The funnel's neck (v << 0) needs steps of order e^(v/2): one adapted step "
        "cannot enter it, so there the mean of v comes out too high and its variance too low, "
        "a bias that longer runs do not remove."
    )
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, `torch.set_num_threads(1)` (1 thread); torch "
        f"{torch.__version__}, Python {platform.python_version()}; load average {load} at "
        "start (other jobs share the machine: seconds are indicative)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="diagnostics/results", help="output directory (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny run: 2 targets, 16 chains")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    chains = 16 if args.smoke else 128
    started, t0, host = datetime.datetime.now(datetime.UTC), time.perf_counter(), machine()
    rows = []
    for name, (target, var_idx) in targets(args.seed).items():
        if args.smoke and name not in SMOKE_TARGETS:
            continue
        mala_step = None
        for kname, (make, sizes) in KERNELS.items():
            sizes = SMOKE_SIZES if args.smoke else sizes
            kernel = make(mala_step)
            r = {"target": name, "kernel": kname}
            r |= run(target, var_idx, kernel, chains, sizes, args.seed, not args.no_progress)
            rows.append(r)
            mala_step = r["step"] if kname == "MALA" else mala_step
            print(md_row(r), flush=True)
    total = time.perf_counter() - t0
    cmd = " ".join([".venv/bin/python diagnostics/kernels.py", *argv])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Every kernel on every reference target" + (" (smoke run)" if args.smoke else ""),
        "",
        f"- command: `{cmd}`",
        f"- date: {started.isoformat(timespec='seconds')}; seed {args.seed}; sampling wall time "
        f"{total:.0f} s in all (the seconds column: warm-up + draws of one row)",
        f"- machine: {host}",
        "",
        "| " + COLUMNS + " |",
        "|" + "---|" * len(COLUMNS.split("|")),
        *map(md_row, rows),
        "",
        "## Notes",
        "",
        *notes(rows),
    ]
    atomic_write(out / "kernels.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    meta = dict(command=cmd, date=started.isoformat(), seed=args.seed, machine=host,
                smoke=args.smoke, seconds=total)  # fmt: skip
    data = {**meta, "rows": [{k: finite(v) for k, v in r.items()} for r in rows]}
    atomic_write(out / "kernels.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))
    print(f"wrote {out / 'kernels.md'} and kernels.json ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
