"""Per-step cost of ebmcmc's kernels, against an earlier revision of ebmcmc, in one run.

Measures the process CPU time of one step of:

* ``mala-1chain``: MALA on a 2-D Gaussian (ρ = 0.9) with 1 chain, beside
  ``energy+grad-1chain``, one bare energy-and-gradient evaluation of the same energy at the same
  point (``x.detach().requires_grad_(True)``, the energy, ``torch.autograd.grad`` of its sum),
  the least any gradient-based step must cost; the two alternate in the same process (three
  rounds each of 10 × ``--steps`` steps, averaged, after a full garbage collection),
* ``hand-1chain``: a minimal MALA loop written by hand in plain PyTorch for the same energy,
  step size and chain (proposal, energy+gradient, Metropolis–Hastings ratio, decision, three
  selects, the draw kept in a list; no checks, no statistics): what eager PyTorch itself costs
  per step, measured in the same rounds,
* ``mala-1024``: MALA on the banana, 1,024 chains, and ``mala-1024-checked``, the same with
  ``sample``'s end-of-run convergence check (rank R-hat of every recorded coordinate,
  divergences, stuck chains; the other rows run with ``check=False`` where ``sample`` has it,
  so they time the steps; revisions without the check run the same code in both rows),
* ``hmc10-1024``: HMC with 10 leapfrog steps on the banana, 1,024 chains,
* ``mala-mlp``: MALA on an MLP energy 3072 → 256 → 256 → 1 (SiLU), 128 chains, float32, beside
  ``hand-mlp``, a hand-written MALA loop doing the same math on the same network (the
  ``sample`` run records the energy, a summary, as one does for images),

each through ``ebmcmc.sample`` (no warm-up), for the working tree and for ``--baseline REV`` (a
git revision checked out into a temporary worktree). Every repeat runs in a fresh process, the
two trees alternate (interleaved repeats), and the table gives the best and the median ratio of
the working tree's CPU time to the baseline's. Only API common to both trees is used.

**Fixed per-step overhead** (the ``overhead-1chain`` row) is defined as the CPU time of one
``ebmcmc.sample`` step of MALA at 1 chain minus the CPU time of one bare energy+gradient
evaluation of the same energy at the same batch, both measured in the same process
(``mala-1chain − energy+grad-1chain``, one difference per repeat; the row gives the best and
the median of those differences); ``hand-overhead-1chain`` is the same difference for the
hand-written loop, the floor that eager PyTorch sets on this machine. The overhead is
everything ebmcmc adds around the one evaluation a MALA step needs: the proposal, the
Metropolis–Hastings ratio and decision, the selects, the state and info objects, and the
driver's per-step recording. At 1 chain every tensor holds a handful of numbers, so it is
almost entirely Python and PyTorch dispatch cost (about 1.5–5 µs per tensor operation on the
project's machine), not arithmetic.

Run::

    python benchmarks/kernel_overhead.py --baseline 59cf620          # ~5 minutes
    python benchmarks/kernel_overhead.py --smoke --out /tmp/ko         # seconds (CI)
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = (
    "mala-1chain",
    "energy+grad-1chain",
    "hand-1chain",
    "mala-1024",
    "mala-1024-checked",
    "hmc10-1024",
    "mala-mlp",
    "hand-mlp",
)
#: derived rows: name -> (case, minus case), one difference per repeat
DERIVED = {
    "overhead-1chain": ("mala-1chain", "energy+grad-1chain"),
    "hand-overhead-1chain": ("hand-1chain", "energy+grad-1chain"),
}


def _measure(steps: int, quick: bool, only: str = "") -> dict[str, float]:
    """CPU seconds per step of each case (those whose name contains ``only``), in this process
    (imports the ebmcmc on sys.path)."""
    import torch

    torch.set_num_threads(1)
    import ebmcmc
    from ebmcmc.kernels import HMC, MALA
    from ebmcmc.targets import Banana, Gaussian

    def per_step(fn, n: int) -> float:
        fn(max(2, n // 10))  # warm the caches and the allocator
        t = time.process_time()
        fn(n)
        return (time.process_time() - t) / n

    g2 = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    banana = Banana()
    x1 = torch.zeros(1, 2)
    x1024 = torch.randn(1024, 2, generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {}

    # the per-step rows leave out the end-of-run convergence check (``check=False`` where
    # ``sample`` has one); ``mala-1024-checked`` keeps it, so its ratio shows the whole cost
    has_check = "check" in inspect.signature(ebmcmc.sample).parameters
    unchecked = {"check": False} if has_check else {}

    def run(energy, kernel, x, trace_fn=None, **kw):
        kw = {**unchecked, **kw}
        return lambda n: ebmcmc.sample(energy, kernel, x, n, generator=0, progress=False,
                                       adaptation=None, trace_fn=trace_fn, **kw)  # fmt: skip

    def energy_grad(n: int):  # the bare evaluation a MALA step cannot do without
        for _ in range(n):
            x = x1.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(g2(x).sum(), x)

    def hand1(n: int):  # MALA(0.5) at one chain, by hand: the least eager PyTorch can do
        _hand_mala(g2, x1, 0.5, n, keep=True)

    want = {c for c in CASES if only in c}
    one_chain = {"mala-1chain": None, "energy+grad-1chain": energy_grad, "hand-1chain": hand1}
    if want & set(one_chain):
        # alternate the 1-chain cases in rounds so that all see the same machine state; a
        # full garbage collection first (the one the imports left due), and the mean over the
        # rounds, so that the collections the sampling itself causes are counted
        one_chain["mala-1chain"] = run(g2, MALA(0.5), x1)
        names = [c for c in one_chain if c in want or c == "energy+grad-1chain"]
        got: dict[str, list[float]] = {c: [] for c in names}
        for _ in range(3):
            for c in names:
                gc.collect()
                got[c].append(per_step(one_chain[c], steps * 10))
        out.update({c: statistics.mean(v) for c, v in got.items()})
    if "mala-1024" in want:
        out["mala-1024"] = per_step(run(banana, MALA(0.05), x1024), steps)
    if "mala-1024-checked" in want:
        checked = {"check": True} if has_check else {}
        out["mala-1024-checked"] = per_step(run(banana, MALA(0.05), x1024, **checked), steps)
    if "hmc10-1024" in want:
        out["hmc10-1024"] = per_step(run(banana, HMC(0.05, 10), x1024), max(2, steps // 5))
    if not want & {"mala-mlp", "hand-mlp"}:
        return out
    dim, hidden, chains = (256, 64, 32) if quick else (3072, 256, 128)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(dim, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
        torch.nn.SiLU(), torch.nn.Linear(hidden, 1), torch.nn.Flatten(0),
    )  # fmt: skip
    for p in net.parameters():
        p.requires_grad_(False)
    xm = torch.randn(chains, dim, generator=torch.Generator().manual_seed(1))
    eps = 1e-3
    # record a summary (the energy), not the 3072-D draws, as one would for images
    energy_only = lambda state, info: state.energy  # noqa: E731
    out["mala-mlp"] = per_step(run(net, MALA(eps), xm, energy_only), max(2, steps // 5))

    def hand(n: int):  # the same MALA by hand on the MLP (it keeps no draws)
        _hand_mala(net, xm, eps, n, keep=False)

    out["hand-mlp"] = per_step(hand, max(2, steps // 5))
    return out


def _hand_mala(energy, x0, eps: float, n: int, keep: bool) -> None:
    """``n`` MALA steps written by hand in plain PyTorch (``torch.autograd.grad`` for the
    gradient, the proposal, the Metropolis–Hastings ratio for the asymmetric Gaussian proposal,
    ``torch.where`` selects), from ``x0`` ``(chains, d)`` with generator seed 0; with ``keep``
    every draw is kept in a list, as ``sample`` keeps its draws."""
    import torch

    gen, scale = torch.Generator().manual_seed(0), (2 * eps) ** 0.5
    x = x0.clone().requires_grad_(True)
    e = energy(x)
    (g,) = torch.autograd.grad(e.sum(), x)
    x, e, kept = x.detach(), e.detach(), []
    for _ in range(n):
        noise = torch.randn(x.shape, generator=gen)
        y = (x - eps * g + scale * noise).requires_grad_(True)
        ey = energy(y)
        (gy,) = torch.autograd.grad(ey.sum(), y)
        y, ey = y.detach(), ey.detach()
        d = x - y + eps * gy
        log_ratio = e - ey - (d * d).sum(-1) / (4 * eps) + 0.5 * (noise * noise).sum(-1)
        acc = torch.rand(log_ratio.shape, generator=gen).log() < log_ratio
        x = torch.where(acc[:, None], y, x)
        e, g = torch.where(acc, ey, e), torch.where(acc[:, None], gy, g)
        if keep:
            kept.append(x)


def _worker_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def _one(tree: Path, steps: int, quick: bool, only: str) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps),
           "--only", only]  # fmt: skip
    if quick:
        cmd.append("--quick")
    r = subprocess.run(cmd, env=_worker_env(tree), capture_output=True, text=True, cwd=tree,
                       check=True)  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=None, help="git revision to compare with")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, no baseline (CI)")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_measure(args.steps, args.quick, args.only)))
        return {}
    if args.smoke:
        args.repeats, args.steps, args.quick, args.baseline = 1, 10, True, None
    trees = {"current": ROOT}
    tmp = None
    if args.baseline:
        tmp = Path(tempfile.mkdtemp(prefix="ebmcmc-baseline-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "tree"),
                        args.baseline], check=True, capture_output=True)  # fmt: skip
        trees["baseline"] = tmp / "tree"
    cases = [c for c in CASES if args.only in c]
    times: dict[str, dict[str, list[float]]] = {t: {c: [] for c in cases} for t in trees}
    try:
        for r in range(args.repeats):
            for name in trees if r % 2 == 0 else reversed(list(trees)):
                got = _one(trees[name], args.steps, args.quick, args.only)
                for c in cases:
                    times[name][c].append(got[c])
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "tree")], capture_output=True)  # fmt: skip
    rows = []
    for c in cases:
        cur = times["current"][c]
        row = {"case": c, "current_us_best": min(cur) * 1e6,
               "current_us_median": statistics.median(cur) * 1e6}  # fmt: skip
        if "baseline" in times:
            base = times["baseline"][c]
            ratios = [a / b for a, b in zip(cur, base, strict=True)]
            row.update(baseline_us_best=min(base) * 1e6,
                       baseline_us_median=statistics.median(base) * 1e6,
                       ratio_best=min(cur) / min(base),
                       ratio_median=statistics.median(ratios))  # fmt: skip
        rows.append(row)
    for name, (a, b) in DERIVED.items():
        if a not in cases or b not in cases:
            continue
        diff = {t: [x - y for x, y in zip(times[t][a], times[t][b], strict=True)] for t in trees}
        cur = diff["current"]
        row = {"case": name, "current_us_best": min(cur) * 1e6,
               "current_us_median": statistics.median(cur) * 1e6}  # fmt: skip
        if "baseline" in diff:
            base = diff["baseline"]
            row.update(baseline_us_best=min(base) * 1e6,
                       baseline_us_median=statistics.median(base) * 1e6,
                       ratio_best=min(cur) / min(base),
                       ratio_median=statistics.median(cur) / statistics.median(base))  # fmt: skip
        rows.append(row)
    mlp = {t: min(times[t]["mala-mlp"]) / min(times[t]["hand-mlp"]) for t in times
           if "mala-mlp" in cases and "hand-mlp" in cases}  # fmt: skip
    info = {"baseline": args.baseline, "repeats": args.repeats, "steps": args.steps,
            "rows": rows, "mlp_to_hand_ratio": mlp,
            "date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg()[0]}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernel_overhead.json").write_text(json.dumps(info, indent=2))
    lines = [
        "# Per-step cost against an earlier revision",
        "",
        f"Baseline `{args.baseline}`; {args.repeats} interleaved repeats in fresh processes; "
        f"process CPU time per step; load average {info['load']:.2f} at the end; "
        f"{info['date']}.",
        "",
        "| case | current µs (best) | current µs (median) | baseline µs (best) | "
        "ratio (best) | ratio (median of paired) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['current_us_best']:.1f} | {row['current_us_median']:.1f} | "
            + (f"{row['baseline_us_best']:.1f} | {row['ratio_best']:.3f} | "
               f"{row['ratio_median']:.3f} |" if "ratio_best" in row else "– | – | – |")
        )  # fmt: skip
    lines += [
        "",
        "overhead-1chain = mala-1chain − energy+grad-1chain per repeat (the fixed "
        "per-step overhead); its ratio (median) is the ratio of the medians. "
        "hand-overhead-1chain = hand-1chain − energy+grad-1chain: the same for a minimal "
        "MALA loop written by hand in plain PyTorch (the floor eager PyTorch sets).",
        "",
    ]
    if mlp:
        lines += ["MALA on the MLP over the hand-written loop (best CPU times): "
                  + ", ".join(f"{t} {v:.3f}" for t, v in mlp.items()), ""]  # fmt: skip
    (args.out / "kernel_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return info


if __name__ == "__main__":
    main()
