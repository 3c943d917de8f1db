"""Pyro NUTS vs ebmcmc HMC on a Pyro logistic regression: effective samples per second.

The same Pyro model (N = 100 synthetic observations, D = 3 covariates plus an intercept) is
sampled by

* Pyro's NUTS, one chain (Pyro's own adaptation, ``jit_compile=True``), and
* ebmcmc's HMC on ``ebmcmc.energy.from_pyro(model)`` with many chains in one batch (window
  adaptation of the step size and a diagonal mass matrix), at two trajectory lengths,

measured side by side in one run. The figure of merit is ESS/s: ArviZ bulk ESS, the minimum
over all coordinates of all sites (all chains pooled), divided by the wall-clock time of the
whole run *including warm-up* (and, for NUTS, JIT compilation). Posterior means are checked
to agree (``|z|`` in units of the combined MCSE) so that speed is not bought with a wrong
answer.

Read the HMC rows with their trajectory length in mind. After warm-up the mass matrix whitens
this near-Gaussian posterior and the step size settles near 1, about 60 degrees of a harmonic
orbit per leapfrog step: 4 steps (240 degrees) make nearly antithetic draws, whose bulk ESS
exceeds the number of draws (``ESS/draw > 1``), a gain specific to near-Gaussian targets;
with the default 10 steps the orbit comes close to a whole number of turns along some direction
of the posterior (a diagonal mass matrix does not whiten its correlations) and mixes far worse.
NUTS chooses its trajectory lengths itself; fixed-length HMC does not, so the L=10 row is the
conservative comparison. Wall-clock and CPU time (of this process; everything runs on one
thread) are both reported: on a shared machine CPU time is the steadier measure.

Run::

    python benchmarks/pyro_logistic.py                    # ~2 minutes on 2 CPU cores
    python benchmarks/pyro_logistic.py --smoke            # < 30 s
    python benchmarks/pyro_logistic.py --out out/bench    # also writes out/bench/results.md

Timings depend on the machine's load (printed): compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

import ebmcmc
from ebmcmc.diagnostics import summary
from ebmcmc.energy import from_pyro
from ebmcmc.kernels import HMC


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (< 30 s), for CI")
    p.add_argument("--out", default=None, help="directory to write results.md into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--chains", type=int, default=256, help="ebmcmc chains (default: 256)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    return p.parse_args(argv)


def make_data(seed: int, n: int = 100, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    logits = x @ torch.linspace(1.0, -0.5, d) + 0.3
    return x, torch.bernoulli(torch.sigmoid(logits), generator=g)


def logistic(x, y):
    """Logistic regression, written with broadcasting (``(x * beta).sum(-1)``, not
    ``x @ beta``) so ebmcmc can evaluate all chains in one model run."""
    alpha = pyro.sample("alpha", dist.Normal(0.0, 2.0))
    beta = pyro.sample("beta", dist.Normal(0.0, 2.0).expand([x.shape[-1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(x * beta).sum(-1) + alpha), obs=y)


class Clock:
    """Wall-clock and CPU (this process) seconds of a block. The machine may be shared: CPU
    time is the steadier measure of the work done (everything runs on one thread)."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def run_nuts(x, y, warmup: int, samples: int, seed: int):
    pyro.set_rng_seed(seed)  # seeds torch, numpy and random
    with Clock() as clock:
        kernel = NUTS(logistic, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(
            kernel, num_samples=samples, warmup_steps=warmup, num_chains=1, disable_progbar=True
        )
        mcmc.run(x, y)
    draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return draws, clock, float(kernel.step_size)


def run_ebmcmc(
    x, y, chains: int, num_steps: int, warmup: int, samples: int, seed: int, jitter: float = 0.0
):
    with Clock() as clock:
        energy = from_pyro(logistic, x, y)
        g = torch.Generator().manual_seed(seed)
        trace = ebmcmc.sample(
            energy,
            HMC(step_size=0.1, num_leapfrog_steps=num_steps, jitter=jitter),
            energy.initial_position(chains, g),
            num_samples=samples,
            num_warmup=warmup,
            generator=g,
            trace_fn=energy.trace_fn,
            progress=False,
        )
    draws = {k: v.numpy() for k, v in trace.variables.items()}
    return draws, clock, float(trace.kernel.step_size)


def row(name: str, chains: int, draws: int, grads, step: float, clock: Clock, table) -> dict:
    ess = float(table["ess_bulk"].min())
    return {
        "method": name,
        "chains": chains,
        "draws/chain": draws,
        "grad evals/chain": grads,
        "step size": step,
        "wall s": clock.wall,
        "CPU s": clock.cpu,
        "min bulk ESS": ess,
        "min tail ESS": float(table["ess_tail"].min()),
        "ESS/draw": ess / (chains * draws),
        "ESS/s": ess / clock.wall,
        "ESS/CPU-s": ess / clock.cpu,
        "max R-hat": float(table["r_hat"].max()),
    }


def format_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                fine = c in ("max R-hat", "ESS/draw", "step size")
                cells.append("nan" if v != v else f"{v:,.3f}" if fine else f"{v:,.1f}")
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        size = dict(nuts_warmup=60, nuts_samples=60, warmup=40, samples=40, chains=16)
        configs = ((4, 0.0),)
    else:
        size = dict(nuts_warmup=500, nuts_samples=1000, warmup=300, samples=300)
        size["chains"] = args.chains
        configs = ((4, 0.0), (10, 0.0), (10, 0.5))
    x, y = make_data(args.seed)
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch threads "
        f"{torch.get_num_threads()}"
    )

    nuts_draws, clock, nuts_step = run_nuts(
        x, y, size["nuts_warmup"], size["nuts_samples"], args.seed
    )
    nuts_table = summary(nuts_draws)
    rows = [row("Pyro NUTS", 1, size["nuts_samples"], "adaptive", nuts_step, clock, nuts_table)]
    agreement = {}
    for steps, jitter in configs:
        draws, clock, step = run_ebmcmc(
            x, y, size["chains"], steps, size["warmup"], size["samples"], args.seed + 1, jitter
        )
        table = summary(draws)
        grads = (size["warmup"] + size["samples"]) * steps
        name = f"ebmcmc HMC L={steps}" + (f", jitter {jitter:g}" if jitter else "")
        rows.append(row(name, size["chains"], size["samples"], grads, step, clock, table))
        se = np.sqrt(table["mcse_mean"] ** 2 + nuts_table["mcse_mean"] ** 2)
        agreement[name] = float(((table["mean"] - nuts_table["mean"]) / se).abs().max())
    load_end = os.getloadavg()
    print(format_table(rows))
    for name, z in agreement.items():
        print(f"posterior means, {name} vs NUTS: max |z| = {z:.2f} (combined MCSE)")
    ratios = {
        r["method"]: (r["ESS/s"] / rows[0]["ESS/s"], r["ESS/CPU-s"] / rows[0]["ESS/CPU-s"])
        for r in rows[1:]
    }
    for name, (wall, cpu) in ratios.items():
        print(f"ESS/s ratio {name} / Pyro NUTS: {wall:.1f}x wall-clock, {cpu:.1f}x CPU time")
    print(f"load average at the end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = [
            "# Pyro logistic regression: Pyro NUTS vs ebmcmc HMC",
            "",
            f"N = {x.shape[0]}, D = {x.shape[1]}; seed {args.seed}; "
            f"{'smoke sizes' if args.smoke else 'full sizes'}; load average "
            f"{load[0]:.2f} at the start and {load_end[0]:.2f} at the end on "
            f"{os.cpu_count()} cores; torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s), pyro {pyro.__version__}.",
            "",
            "ESS: ArviZ bulk ESS, minimum over all coordinates of all sites, all chains; "
            "seconds: the whole run including warm-up (wall-clock, and CPU time of this "
            "process).",
            "",
            format_table(rows),
            "",
            *[
                f"- ESS/s ratio {k} / Pyro NUTS: **{w:.1f}x** wall-clock, {c:.1f}x CPU time"
                for k, (w, c) in ratios.items()
            ],
            *[f"- posterior means, {k} vs NUTS: max |z| = {v:.2f}" for k, v in agreement.items()],
            "",
        ]
        (out / "results.md").write_text("\n".join(text))
        print(f"wrote {out / 'results.md'}")
    return {"rows": rows, "ratios": ratios, "agreement": agreement}


if __name__ == "__main__":
    main()
