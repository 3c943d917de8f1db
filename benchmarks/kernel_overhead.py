"""Per-step cost of ebmcmc's kernels, against an earlier revision of ebmcmc, in one run.

Measures the process CPU time of one step of:

* ``mala-1chain``: MALA on a 2-D Gaussian with 1 chain (the fixed per-step overhead),
* ``mala-1024``: MALA on the banana, 1,024 chains,
* ``hmc10-1024``: HMC with 10 leapfrog steps on the banana, 1,024 chains,
* ``mala-mlp``: MALA on an MLP energy 3072 → 256 → 256 → 1 (SiLU), 128 chains, float32, beside
  ``hand-mlp``, a hand-written MALA loop doing the same math on the same network (the
  ``sample`` run records the energy, a summary, as one does for images),

each through ``ebmcmc.sample`` (no warm-up), for the working tree and for ``--baseline REV`` (a
git revision checked out into a temporary worktree). Every repeat runs in a fresh process, the
two trees alternate (interleaved repeats), and the table gives the best and the median ratio of
the working tree's CPU time to the baseline's. Only API common to both trees is used.

Run::

    python benchmarks/kernel_overhead.py --baseline 59cf620          # ~5 minutes
    python benchmarks/kernel_overhead.py --smoke --out /tmp/ko         # seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("mala-1chain", "mala-1024", "hmc10-1024", "mala-mlp", "hand-mlp")


def _measure(steps: int, quick: bool) -> dict[str, float]:
    """CPU seconds per step of each case, in this process (imports the ebmcmc on sys.path)."""
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

    def run(energy, kernel, x, trace_fn=None):
        return lambda n: ebmcmc.sample(energy, kernel, x, n, generator=0, progress=False,
                                       adaptation=None, trace_fn=trace_fn)  # fmt: skip

    out["mala-1chain"] = per_step(run(g2, MALA(0.5), x1), steps * 4)
    out["mala-1024"] = per_step(run(banana, MALA(0.05), x1024), steps)
    out["hmc10-1024"] = per_step(run(banana, HMC(0.05, 10), x1024), max(2, steps // 5))
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

    def hand(n: int):
        gen = torch.Generator().manual_seed(0)
        x = xm.clone()
        xg = x.requires_grad_(True)
        e = net(xg)
        (g,) = torch.autograd.grad(e.sum(), xg)
        x, e = x.detach(), e.detach()
        for _ in range(n):
            noise = torch.randn(x.shape, generator=gen)
            y = (x - eps * g + (2 * eps) ** 0.5 * noise).requires_grad_(True)
            ey = net(y)
            (gy,) = torch.autograd.grad(ey.sum(), y)
            y, ey = y.detach(), ey.detach()
            rev = ((x - y + eps * gy) ** 2).sum(-1) / (4 * eps)
            log_ratio = e - ey - rev + 0.5 * (noise**2).sum(-1)
            acc = torch.log(torch.rand(chains, generator=gen)) < log_ratio
            x = torch.where(acc[:, None], y, x)
            e, g = torch.where(acc, ey, e), torch.where(acc[:, None], gy, g)
        return x

    out["hand-mlp"] = per_step(hand, max(2, steps // 5))
    return out


def _worker_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def _one(tree: Path, steps: int, quick: bool) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps)]
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
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_measure(args.steps, args.quick)))
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
    times: dict[str, dict[str, list[float]]] = {t: {c: [] for c in CASES} for t in trees}
    try:
        for r in range(args.repeats):
            for name in trees if r % 2 == 0 else reversed(list(trees)):
                got = _one(trees[name], args.steps, args.quick)
                for c in CASES:
                    times[name][c].append(got[c])
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "tree")], capture_output=True)  # fmt: skip
    rows = []
    for c in CASES:
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
    mlp = {t: min(times[t]["mala-mlp"]) / min(times[t]["hand-mlp"]) for t in times}
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
    lines += ["", "MALA on the MLP over the hand-written loop (best CPU times): "
              + ", ".join(f"{t} {v:.3f}" for t, v in mlp.items()), ""]  # fmt: skip
    (args.out / "kernel_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return info


if __name__ == "__main__":
    main()
