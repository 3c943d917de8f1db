"""Where sampling time goes: throughput of ``ebmcmc.sample`` against the choices a user makes.

Every row is an ``ebmcmc.sample`` run with ``ChEES()`` and the default warm-up, timed in
process CPU time (one thread) and repeated with the same seed (``--repeats``, interleaved:
every configuration once per round; the best and the median CPU time are given, the draws are
the same in every repeat), scored by the minimum bulk ESS over the coordinates (ArviZ):

* ``chains``: the 2-D Gaussian (correlation 0.9) at 16 … 4,096 chains, float32: how the
  per-step cost, fixed for small tensors, is shared out among the chains,
* ``dtype``: the same at 1,024 chains in float64,
* ``check``: the same at 1,024 chains with ``check=False`` (no end-of-run R-hat check),
* ``compile``: a logistic regression (3,000 synthetic observations, 4 covariates and an
  intercept, 128 chains) and the 2-D Gaussian (1,024 chains), each with its energy as written
  and with ``torch.compile(energy)``; the compile time (the first call, before the run) is
  given separately and is not in ESS/CPU-s. A failed compile is reported and skipped.

The docs' performance guide quotes these numbers. Run::

    python benchmarks/throughput.py --out benchmarks/results/throughput     # ~3 minutes
    python benchmarks/throughput.py --smoke --out /tmp/tp                    # seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import ebmcmc
from ebmcmc.arviz_bridge import ess
from ebmcmc.kernels import ChEES
from ebmcmc.targets import Gaussian

ROOT = Path(__file__).resolve().parents[1]


class Counted:
    """An energy that counts the rows it evaluates (every evaluation here comes with its
    gradient)."""

    def __init__(self, energy):
        self.energy, self.n = energy, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.n += x.numel() // x.shape[-1]
        return self.energy(x)


def gaussian(dtype: torch.dtype):
    target = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    prec = torch.linalg.inv(target.cov).to(dtype)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x @ prec) * x).sum(-1)

    return energy


def logistic(n_obs: int = 3000, seed: int = 0):
    """A logistic-regression posterior (flat prior): ``theta`` = intercept and 4 slopes."""
    g = torch.Generator().manual_seed(seed)
    xd = torch.randn(n_obs, 4, generator=g)
    beta = torch.tensor([0.5, -1.0, 0.25, 0.0])
    p = torch.sigmoid(0.3 + xd @ beta)
    yd = (torch.rand(n_obs, generator=g) < p).float()

    def energy(theta: torch.Tensor) -> torch.Tensor:
        eta = theta[..., :1] + theta[..., 1:] @ xd.T
        return -(yd * eta - torch.nn.functional.softplus(eta)).sum(-1)

    return energy


def run(energy, dim: int, chains: int, warmup: int, draws: int, dtype, check: bool = True) -> dict:
    """One timed run: its CPU seconds, gradients (chain-evaluations) and minimum bulk ESS."""
    x0 = torch.randn(chains, dim, generator=torch.Generator().manual_seed(1), dtype=dtype)
    counted = Counted(energy)
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = ebmcmc.sample(counted, ChEES(), x0, draws, num_warmup=warmup, generator=0,
                           progress=False, check=check)  # fmt: skip
    cpu = time.process_time() - c0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "more chains than draws" at the smoke sizes
        e = ess(tr.draws.double().numpy())
    return {"cpu_s": cpu, "gradients": counted.n, "ess": float(np.min(np.asarray(e["x"])))}


def summarize(runs: list[dict]) -> dict:
    """The repeats of one configuration: best and median CPU, ESS/CPU-s at each."""
    cpu = sorted(r["cpu_s"] for r in runs)
    best, median = cpu[0], statistics.median(cpu)
    ess_, grads = runs[0]["ess"], runs[0]["gradients"]
    return {
        "repeats": len(runs),
        "cpu_s_best": best,
        "cpu_s_median": median,
        "ess": ess_,
        "gradients": grads,
        "ess_per_cpu_s": ess_ / median,
        "ess_per_cpu_s_best": ess_ / best,
        "us_per_chain_gradient": median / grads * 1e6,
    }


def compiled(energy, dim: int, chains: int, dtype) -> tuple[object | None, float, str]:
    """``torch.compile(energy)`` compiled for ``(chains, dim)`` with gradients, its compile CPU
    seconds, and why it failed (``""``: it did not)."""
    fn = torch.compile(energy, dynamic=False)
    x = torch.zeros(chains, dim, dtype=dtype, requires_grad=True)
    c0 = time.process_time()
    try:
        torch.autograd.grad(fn(x).sum(), x)
        with torch.no_grad():  # sample's checks evaluate without gradients once
            fn(x.detach())
    except Exception as err:  # noqa: BLE001 - no compiler, an unsupported operation: say so
        return None, 0.0, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return fn, time.process_time() - c0, ""


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="write throughput.{json,md} here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (CI)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warmup, draws = (20, 20) if args.smoke else (500, 1000)
    if args.smoke:
        args.repeats = 1
    sizes = (16, 64) if args.smoke else (16, 64, 256, 1024, 4096)
    big = 64 if args.smoke else 1024
    f32, f64 = torch.float32, torch.float64

    def config(kind, label, energy, dim, chains, dtype=f32, check=True, compile_cpu_s=None):
        return {"kind": kind, "label": label, "energy": energy, "dim": dim, "chains": chains,
                "dtype": dtype, "check": check, "compile_cpu_s": compile_cpu_s}  # fmt: skip

    configs = [config("chains", f"{c} chains, float32", gaussian(f32), 2, c) for c in sizes]
    configs += [
        config("dtype", f"{big} chains, float64", gaussian(f64), 2, big, dtype=f64),
        config("check", f"{big} chains, check=False", gaussian(f32), 2, big, check=False),
    ]
    rows: list[dict] = []
    n_obs = 300 if args.smoke else 3000
    for name, energy, dim, chains in (
        ("logistic regression", logistic(n_obs), 5, 16 if args.smoke else 128),
        ("2-D Gaussian", gaussian(f32), 2, big),
    ):
        configs.append(config("compile", f"{name}, eager", energy, dim, chains))
        fn, secs, why = compiled(energy, dim, chains, f32)
        if fn is None:
            print(f"compile  {name}: torch.compile failed, skipped ({why})", flush=True)
            rows.append({"kind": "compile", "label": f"{name}, torch.compile", "failed": why})
            continue
        configs.append(config("compile", f"{name}, torch.compile", fn, dim, chains,
                              compile_cpu_s=secs))  # fmt: skip
    runs: dict[str, list[dict]] = {c["label"]: [] for c in configs}
    for r in range(args.repeats):
        for c in configs if r % 2 == 0 else configs[::-1]:
            runs[c["label"]].append(run(c["energy"], c["dim"], c["chains"], warmup, draws,
                                        c["dtype"], check=c["check"]))  # fmt: skip
        print(f"round {r + 1}/{args.repeats} done", flush=True)
    for c in configs:
        row = {"kind": c["kind"], "label": c["label"], "chains": c["chains"],
               "dtype": str(c["dtype"]).removeprefix("torch."),
               **summarize(runs[c["label"]])}  # fmt: skip
        if c["compile_cpu_s"] is not None:
            row["compile_cpu_s"] = c["compile_cpu_s"]
        rows.append(row)
        print(f"{c['kind']:8s} {c['label']:34s} ESS/CPU-s {row['ess_per_cpu_s']:10.0f}  "
              f"µs/chain-gradient {row['us_per_chain_gradient']:7.3f}", flush=True)  # fmt: skip
    info = {"rows": rows, "warmup": warmup, "draws": draws, "smoke": args.smoke,
            "repeats": args.repeats,
            "torch": torch.__version__, "load": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.json").write_text(json.dumps(info, indent=2))
        (args.out / "throughput.md").write_text(markdown(info))
    return info


def markdown(info: dict) -> str:
    lines = [
        "# Throughput of `ebmcmc.sample(ChEES())`",
        "",
        f"{info['warmup']} warm-up + {info['draws']} draws; {info['repeats']} interleaved "
        "repeats (ESS/CPU-s at the median CPU time, the best in brackets); process CPU time, "
        "one thread; torch "
        f"{info['torch']}; load average {info['load']:.2f} at the end; {info['date']}.",
        "",
        "| what | run | CPU s (median) | min ESS | ESS/CPU-s | µs per chain-gradient "
        "| compile CPU-s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in info["rows"]:
        if "failed" in r:
            lines.append(f"| {r['kind']} | {r['label']} | failed: {r['failed']} | | | | |")
            continue
        comp = r.get("compile_cpu_s")
        lines.append(
            f"| {r['kind']} | {r['label']} | {r['cpu_s_median']:.2f} | {r['ess']:,.0f} | "
            f"{r['ess_per_cpu_s']:,.0f} ({r['ess_per_cpu_s_best']:,.0f}) | "
            f"{r['us_per_chain_gradient']:.3f} | "
            + ("—" if comp is None or not math.isfinite(comp) else f"{comp:.1f}")
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
