"""Sampler benchmark: ebmcmc against Pyro and torchebm, side by side in one run.

Table 1 samples two 2-D targets with exact answers (a correlated Gaussian and the banana) with
Pyro's NUTS and HMC (one chain, Pyro's own warm-up adaptation), torchebm's Langevin and HMC
samplers (1,024 chains, step sizes picked by a pilot sweep) and ebmcmc's kernels (1,024 chains,
ebmcmc's warm-up adaptation). Every contender gets the same energy, a plain autograd torch
callable, and is scored the same way: ArviZ bulk ESS over all chains per second of wall time
(warm-up included), the error of the mean and of the variance in Monte Carlo standard errors,
and rank R-hat.

Table 2 times one MALA step of ebmcmc on an MLP energy (3072 -> 256 -> 256 -> 1, 128 chains,
float32) against a hand-written MALA loop doing the same math on the same network.

Usage::

    .venv/bin/python benchmarks/samplers.py               # full sizes (about 10 minutes)
    .venv/bin/python benchmarks/samplers.py --quick       # small sizes, under a minute
    .venv/bin/python benchmarks/samplers.py --smoke       # tiny sizes for CI, under 30 s
    .venv/bin/python benchmarks/samplers.py --out DIR     # where results.md / .json go

This is a script, not a test: nothing here passes or fails. The acceptance figures are
measured and printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# One thread for every contender: these are small tensors, and on the 2-core benchmark machine
# two BLAS/OpenMP threads make small-matrix work about 100x slower, not faster.
torch.set_num_threads(1)

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="pyro")
logging.getLogger("pyro").setLevel(logging.ERROR)

import ebmcmc  # noqa: E402
from ebmcmc import WindowAdaptation, arviz_bridge  # noqa: E402
from ebmcmc.kernels import HMC, MALA, Langevin, RandomWalk  # noqa: E402
from ebmcmc.targets import Banana, Gaussian  # noqa: E402

try:  # torchebm is a dev dependency; without it its rows are skipped
    import torchebm
    from torchebm.core import BaseModel as _TorchebmBaseModel
    from torchebm.samplers import HamiltonianMonteCarlo as _TorchebmHMC
    from torchebm.samplers import LangevinDynamics as _TorchebmLangevin
except ImportError:  # pragma: no cover - depends on the environment
    torchebm = None

import pyro  # noqa: E402
from pyro.infer.mcmc import HMC as PyroHMC  # noqa: E402
from pyro.infer.mcmc import MCMC as PyroMCMC  # noqa: E402
from pyro.infer.mcmc import NUTS as PyroNUTS  # noqa: E402

DTYPE = torch.float32
Z_MAX = 4.0  # |error| / MCSE above this means the answer is wrong
RHAT_MAX = 1.01


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Run:
    """Warm-up steps, recorded draws per chain and thinning of one sampling run."""

    warmup: int
    draws: int
    thin: int = 1


@dataclass(frozen=True)
class Sizes:
    chains: int
    pyro_nuts: Run
    pyro_hmc: Run
    tebm_langevin: Run
    tebm_hmc: Run
    ebm_mala: Run
    ebm_hmc10: Run
    ebm_hmc20: Run
    ebm_hmc30: Run
    ebm_langevin: Run
    ebm_rw: Run
    sweep_langevin: Run  # pilot runs of torchebm's step-size sweep
    sweep_hmc: Run
    langevin_grid: tuple[float, ...]
    hmc_grid: tuple[float, ...]
    mlp_chains: int
    mlp_steps: int  # MALA steps per timed repetition
    mlp_repeats: int  # interleaved repetitions; the best is reported


SIZES = {
    "full": Sizes(
        chains=1024,
        pyro_nuts=Run(1000, 1000),
        pyro_hmc=Run(500, 500),
        tebm_langevin=Run(1000, 1500, 5),
        tebm_hmc=Run(500, 1000),
        ebm_mala=Run(1000, 2000, 2),
        ebm_hmc10=Run(1000, 1000),
        ebm_hmc20=Run(1000, 1000),
        ebm_hmc30=Run(500, 1000),
        ebm_langevin=Run(1000, 1500, 5),
        ebm_rw=Run(1000, 2000, 4),
        sweep_langevin=Run(300, 300),
        sweep_hmc=Run(100, 100),
        langevin_grid=(0.1, 0.05, 0.02, 0.01, 0.005),
        hmc_grid=(0.3, 0.2, 0.1, 0.05),
        mlp_chains=128,
        mlp_steps=40,
        mlp_repeats=7,
    ),
    "quick": Sizes(
        chains=1024,
        pyro_nuts=Run(100, 100),
        pyro_hmc=Run(50, 50),
        tebm_langevin=Run(100, 200, 2),
        tebm_hmc=Run(50, 50),
        ebm_mala=Run(100, 200),
        ebm_hmc10=Run(100, 50),
        ebm_hmc20=Run(100, 50),
        ebm_hmc30=Run(100, 50),
        ebm_langevin=Run(100, 200, 2),
        ebm_rw=Run(100, 200, 2),
        sweep_langevin=Run(30, 30),
        sweep_hmc=Run(10, 10),
        langevin_grid=(0.05, 0.01),
        hmc_grid=(0.2, 0.05),
        mlp_chains=128,
        mlp_steps=5,
        mlp_repeats=3,
    ),
    "smoke": Sizes(
        chains=64,
        pyro_nuts=Run(30, 30),
        pyro_hmc=Run(15, 15),
        tebm_langevin=Run(30, 30),
        tebm_hmc=Run(15, 15),
        ebm_mala=Run(30, 30),
        ebm_hmc10=Run(30, 15),
        ebm_hmc20=Run(30, 15),
        ebm_hmc30=Run(30, 15),
        ebm_langevin=Run(30, 30),
        ebm_rw=Run(30, 30),
        sweep_langevin=Run(10, 10),
        sweep_hmc=Run(5, 5),
        langevin_grid=(0.05, 0.01),
        hmc_grid=(0.1,),
        mlp_chains=16,
        mlp_steps=3,
        mlp_repeats=2,
    ),
}


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    label: str
    energy: Callable[[torch.Tensor], torch.Tensor]  # plain autograd callable, (*batch, 2)
    mean: np.ndarray
    var: np.ndarray


def make_targets() -> list[Target]:
    gauss = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    banana = Banana()
    out = []
    for name, label, t in (
        ("gaussian", "Gaussian, cov [[1, .9], [.9, 1]]", gauss),
        ("banana", "banana, U = ½(1−x₁)² + 5(x₂−x₁²)²", banana),
    ):
        out.append(
            Target(
                name,
                label,
                t.energy,  # the energy method: autograd only, no analytic gradient
                t.mean.numpy().astype(np.float64),
                torch.diagonal(t.cov).numpy().astype(np.float64),
            )
        )
    return out


def initial_points(chains: int, seed: int) -> torch.Tensor:
    """Stan-style overdispersed starts: Uniform(-2, 2) in every coordinate."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(chains, 2, generator=g, dtype=DTYPE) * 4 - 2).contiguous()


# ----------------------------------------------------------------------------- scoring


def assess(draws: np.ndarray, target: Target, seconds: Timing) -> dict[str, Any]:
    """Score draws of shape (chain, draw, 2) against the exact answer.

    ESS is ArviZ's bulk ESS over all chains (minimum over the coordinates); the errors of the
    mean and of the variance are in units of their MCSE (ArviZ ``mcse(method="mean")`` of
    ``x`` and of ``(x - true mean)^2``); R-hat is ArviZ's rank R-hat (max over coordinates),
    reported only for multi-chain runs.
    """
    draws = np.asarray(draws, dtype=np.float64)
    chains, ndraw = draws.shape[:2]
    out: dict[str, Any] = {
        "chains": chains,
        "draws_per_chain": ndraw,
        "seconds": seconds.wall,
        "cpu_seconds": seconds.cpu,
    }
    if not np.isfinite(draws).all():
        frac = float(1 - np.isfinite(draws).all(-1).mean())
        out.update(
            ess=0.0,
            ess_per_s=0.0,
            ess_per_cpu_s=0.0,
            z_mean=math.inf,
            z_var=math.inf,
            rhat=math.nan,
            correct=False,
            note=f"non-finite draws ({frac:.1%})",
        )
        return out
    sq = (draws - target.mean) ** 2
    arrays = {"x": draws, "sq": sq}
    ess = np.asarray(arviz_bridge.ess({"x": draws}, "bulk")["x"].values)
    se = arviz_bridge.mcse(arrays, "mean")
    se_x = np.asarray(se["x"].values)
    se_sq = np.asarray(se["sq"].values)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_mean = np.abs(draws.mean(axis=(0, 1)) - target.mean) / se_x
        z_var = np.abs(sq.mean(axis=(0, 1)) - target.var) / se_sq
    rhat = (
        float(np.max(arviz_bridge.rhat({"x": draws}, "rank")["x"].values))
        if chains > 1
        else math.nan
    )
    ess_min = float(np.min(ess))
    z_m, z_v = float(np.max(z_mean)), float(np.max(z_var))
    correct = bool(z_m < Z_MAX and z_v < Z_MAX and (chains == 1 or rhat < RHAT_MAX))
    out.update(
        ess=ess_min,
        ess_per_s=ess_min / seconds.wall,
        ess_per_cpu_s=ess_min / seconds.cpu,
        z_mean=z_m,
        z_var=z_v,
        rhat=rhat,
        correct=correct,
        mean=draws.mean(axis=(0, 1)).tolist(),
        var=sq.mean(axis=(0, 1)).tolist(),
    )
    return out


# ----------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds and this process's CPU seconds of one call."""

    wall: float
    cpu: float


def _timed(fn: Callable[[], Any]) -> tuple[Any, Timing]:
    """Run ``fn``; its result with wall and CPU time. With one thread and other jobs on the
    machine, CPU time is the steadier measure of the work done; wall time is the headline."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, Timing(time.perf_counter() - t0, time.process_time() - c0)


def run_pyro(kind: str, target: Target, run: Run, x0: torch.Tensor, seed: int) -> dict:
    """One Pyro chain from ``x0`` through ``potential_fn``, with Pyro's default warm-up
    (dual-averaging step size and diagonal mass matrix)."""
    pyro.set_rng_seed(seed)

    def potential(params):
        return target.energy(params["x"])

    if kind == "NUTS":
        kernel = PyroNUTS(potential_fn=potential)
        settings = "defaults (target accept 0.8, max tree depth 10, diagonal mass)"
    else:
        # Pyro keeps trajectory_length = step_size * num_steps fixed (here 2.0) and
        # recomputes num_steps from the adapted step size.
        kernel = PyroHMC(potential_fn=potential, step_size=0.1, num_steps=20)
        settings = "trajectory length 2.0 (step_size=0.1, num_steps=20), target accept 0.8"
    mcmc = PyroMCMC(
        kernel,
        num_samples=run.draws,
        warmup_steps=run.warmup,
        initial_params={"x": x0.clone()},
        disable_progbar=True,
    )
    _, seconds = _timed(mcmc.run)
    draws = mcmc.get_samples(group_by_chain=True)["x"].detach().numpy()
    res = assess(draws, target, seconds)
    step = float(kernel.step_size)
    res["settings"] = f"{settings}; adapted step {step:.3g}"
    if kind == "HMC":
        res["settings"] += f", {kernel.num_steps} leapfrog steps"
    return res


def _torchebm_model(energy: Callable[[torch.Tensor], torch.Tensor]):
    class PlainEnergy(_TorchebmBaseModel):
        """The benchmark's energy as a torchebm model (autograd gradient, nothing analytic)."""

        def __init__(self):
            super().__init__(dtype=DTYPE)
            self._energy = energy

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._energy(x)

    return PlainEnergy()


def run_torchebm(
    kind: str, target: Target, run: Run, x0: torch.Tensor, seed: int, step: float
) -> tuple[np.ndarray, Timing]:
    """torchebm sampler from ``x0``: ``run.warmup`` burn-in steps, then the recorded ones."""
    model = _torchebm_model(target.energy)
    if kind == "Langevin":
        sampler = _TorchebmLangevin(model, step_size=step, noise_scale=1.0, dtype=DTYPE)
    else:
        sampler = _TorchebmHMC(model, step_size=step, n_leapfrog_steps=10, dtype=DTYPE)
    gen = torch.Generator().manual_seed(seed)

    def go():
        x = sampler.sample(x=x0.clone(), n_steps=run.warmup, generator=gen) if run.warmup else x0
        return sampler.sample(
            x=x,
            n_steps=run.draws * run.thin,
            thin=run.thin,
            return_trajectory=True,
            generator=gen,
        )

    traj, seconds = _timed(go)
    return traj.detach().numpy(), seconds


def sweep_step_size(
    kind: str,
    target: Target,
    grid: tuple[float, ...],
    run: Run,
    x0: torch.Tensor,
    seed: int,
    runner: Callable[..., tuple[np.ndarray, Timing]],
) -> tuple[float, list[dict]]:
    """The small step-size sweep a user would do for a sampler without adaptation.

    Pilot runs at each step size. Langevin (unadjusted, biased at any step size): the pilot
    with the highest ESS/s among those whose mean and variance agree with the exact answer
    (|z| < 4; generous to the sampler, since a user rarely knows the answer), else the smallest
    step. HMC (exact at any step size): the highest pilot ESS/s.
    """
    rows = []
    for step in grid:
        draws, seconds = runner(kind, target, run, x0, seed, step)
        r = assess(draws, target, seconds)
        rows.append(
            {
                "step_size": step,
                "ess_per_s": r["ess_per_s"],
                "z_mean": r["z_mean"],
                "z_var": r["z_var"],
            }
        )
    if kind == "Langevin":
        ok = [r for r in rows if r["z_mean"] < Z_MAX and r["z_var"] < Z_MAX]
        if ok:
            best = max(ok, key=lambda r: r["ess_per_s"])
        else:
            best = min(rows, key=lambda r: r["step_size"])
    else:
        best = max(rows, key=lambda r: r["ess_per_s"])
    return float(best["step_size"]), rows


def run_ebmcmc(
    kernel, target: Target, run: Run, x0: torch.Tensor, seed: int, adaptation
) -> dict[str, Any]:
    """``ebmcmc.sample`` with its warm-up adaptation, all chains from ``x0``."""

    def go():
        return ebmcmc.sample(
            target.energy,
            kernel,
            x0.clone(),
            num_samples=run.draws,
            num_warmup=run.warmup,
            thin=run.thin,
            generator=seed,
            progress=False,
            adaptation=adaptation,
        )

    trace, seconds = _timed(go)
    res = assess(trace.draws.numpy(), target, seconds)
    res["_draws"] = trace.draws.numpy()
    step = torch.as_tensor(trace.kernel.step_size).float().mean().item()
    acc = float(trace.stats["accept_prob"].mean())
    res["settings_extra"] = f"adapted step {step:.3g}, mean accept {acc:.2f}"
    res["step_size"] = step
    return res


# ----------------------------------------------------------------------------- table 1


@dataclass
class Row:
    target: str
    library: str
    sampler: str
    settings: str
    warmup: int
    thin: int
    result: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "library": self.library,
            "sampler": self.sampler,
            "settings": self.settings,
            "warmup": self.warmup,
            "thin": self.thin,
            **self.result,
        }


def _say(msg: str) -> None:
    print(msg, flush=True)


def _report(row: Row) -> None:
    r = row.result
    _say(
        f"    {row.library:8s} {row.sampler:22s} {r['seconds']:7.1f} s  ESS {r['ess']:10.0f}  "
        f"ESS/s {r['ess_per_s']:10.1f}  z_mean {r['z_mean']:6.2f}  z_var {r['z_var']:6.2f}  "
        f"R-hat {r['rhat']:.4f}  {'correct' if r['correct'] else 'WRONG'}"
    )


def table1(sizes: Sizes, seed: int) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    sweeps: dict[str, Any] = {}
    for ti, target in enumerate(make_targets()):
        _say(f"\n== Table 1, target: {target.label}")
        x0 = initial_points(sizes.chains, seed + 100 * ti)
        s = seed + 100 * ti

        for kind, run in (("NUTS", sizes.pyro_nuts), ("HMC", sizes.pyro_hmc)):
            _say(f"  Pyro {kind}: 1 chain, {run.warmup} warm-up + {run.draws} draws ...")
            res = run_pyro(kind, target, run, x0[0], s)
            row = Row(target.name, "Pyro", kind, res.pop("settings"), run.warmup, run.thin, res)
            rows.append(row)
            _report(row)

        # torchebm: step sizes from a pilot sweep (it has no adaptation)
        lang_step = None
        if torchebm is not None:
            for kind, run, grid, srun in (
                ("Langevin", sizes.tebm_langevin, sizes.langevin_grid, sizes.sweep_langevin),
                ("HMC", sizes.tebm_hmc, sizes.hmc_grid, sizes.sweep_hmc),
            ):
                _say(f"  torchebm {kind}: step-size sweep over {list(grid)} ...")
                step, sweep = sweep_step_size(
                    kind, target, grid, srun, x0, s + 1, runner=run_torchebm
                )
                sweeps[f"{target.name}/torchebm {kind}"] = {"chosen": step, "pilots": sweep}
                for p in sweep:
                    _say(
                        f"      step {p['step_size']:<6g} pilot ESS/s {p['ess_per_s']:9.1f}  "
                        f"z_mean {p['z_mean']:6.2f}  z_var {p['z_var']:6.2f}"
                    )
                _say(
                    f"    chose step {step:g}; {sizes.chains} chains, {run.warmup} burn-in + "
                    f"{run.draws}x{run.thin} steps ..."
                )
                draws, seconds = run_torchebm(kind, target, run, x0, s, step)
                res = assess(draws, target, seconds)
                res["_draws"] = draws
                settings = f"step {step:g} (pilot sweep), " + (
                    "noise scale 1" if kind == "Langevin" else "10 leapfrog steps"
                )
                row = Row(target.name, "torchebm", kind, settings, run.warmup, run.thin, res)
                rows.append(row)
                _report(row)
                if kind == "Langevin":
                    lang_step = step
        if lang_step is None:
            lang_step = 0.01

        # ebmcmc: its own warm-up adaptation
        contenders = [
            (
                "MALA",
                MALA(step_size=0.1),
                WindowAdaptation(),
                sizes.ebm_mala,
                "target accept 0.574",
            ),
            (
                "HMC L=10",
                HMC(step_size=0.1, num_leapfrog_steps=10),
                WindowAdaptation(),
                sizes.ebm_hmc10,
                "10 leapfrog steps, target accept 0.8, diagonal mass (defaults)",
            ),
            (
                "HMC L=20, δ=0.95",
                HMC(step_size=0.1, num_leapfrog_steps=20),
                WindowAdaptation(target_accept=0.95),
                sizes.ebm_hmc20,
                "20 leapfrog steps, target accept 0.95, diagonal mass",
            ),
            (
                "HMC L=30, δ=0.95, jitter",
                HMC(step_size=0.1, num_leapfrog_steps=30, jitter=0.5),
                WindowAdaptation(target_accept=0.95),
                sizes.ebm_hmc30,
                "30 leapfrog steps, step size jittered by U(0.5, 1.5) each transition, "
                "target accept 0.95, diagonal mass",
            ),
            (
                "Langevin (ULA)",
                Langevin(step_size=lang_step),
                None,
                sizes.ebm_langevin,
                f"step {lang_step:g} (torchebm's), no adaptation",
            ),
            (
                "RandomWalk",
                RandomWalk(step_size=0.5),
                WindowAdaptation(),
                sizes.ebm_rw,
                "target accept 0.234",
            ),
        ]
        for name, kernel, adaptation, run, settings in contenders:
            _say(
                f"  ebmcmc {name}: {sizes.chains} chains, {run.warmup} warm-up + "
                f"{run.draws}x{run.thin} steps ..."
            )
            res = run_ebmcmc(kernel, target, run, x0, s, adaptation)
            extra = res.pop("settings_extra")
            res.pop("step_size")
            if adaptation is not None:
                settings = f"{settings}; {extra}"
            row = Row(target.name, "ebmcmc", name, settings, run.warmup, run.thin, res)
            rows.append(row)
            _report(row)

    # same seed, start, step size and update rule: the two ULA runs must give the same draws
    for target in dict.fromkeys(r.target for r in rows):
        pair = [
            r for r in rows if r.target == target and r.sampler in ("Langevin", "Langevin (ULA)")
        ]
        if len(pair) == 2:
            a, b = (r.result["_draws"] for r in pair)
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else math.inf
            for r in pair:
                # equal up to float32 rounding of the differently ordered update arithmetic
                r.result["same_draws_as_other_ula"] = bool(diff <= 1e-3)
                r.result["max_abs_draw_difference"] = diff
    for row in rows:
        row.result.pop("_draws", None)

    # ratios to Pyro NUTS on the same target
    for row in rows:
        nuts = next(r for r in rows if r.target == row.target and r.sampler == "NUTS")
        for key, out in (("ess_per_s", "x_nuts"), ("ess_per_cpu_s", "x_nuts_cpu")):
            base = nuts.result[key]
            row.result[out] = row.result[key] / base if base > 0 else math.nan
    return rows, sweeps


# ----------------------------------------------------------------------------- table 2


def make_mlp(seed: int, dim: int = 3072, hidden: int = 256) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(hidden, 1),
        torch.nn.Flatten(0),  # (batch, 1) -> (batch,): one energy per chain
    ).to(DTYPE)


def handwritten_mala(energy, x: torch.Tensor, eps: float, steps: int, gen: torch.Generator):
    """MALA in plain torch: the same proposal and MH correction as ebmcmc's, nothing else."""

    def e_and_g(z):
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g

    e, g = e_and_g(x)
    accepted = 0.0
    for _ in range(steps):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x_new = x - eps * g + math.sqrt(2 * eps) * noise
        e_new, g_new = e_and_g(x_new)
        fwd = 0.5 * (noise**2).sum(-1)
        rev = ((x - x_new + eps * g_new) ** 2).sum(-1) / (4 * eps)
        log_ratio = e - e_new - rev + fwd
        u = torch.rand(log_ratio.shape, generator=gen, dtype=x.dtype)
        acc = torch.log(u) < log_ratio
        x = torch.where(acc[:, None], x_new, x)
        e = torch.where(acc, e_new, e)
        g = torch.where(acc[:, None], g_new, g)
        accepted += float(acc.float().mean())
    return x, accepted / steps


def table2(sizes: Sizes, seed: int) -> dict[str, Any]:
    _say(
        f"\n== Table 2: MALA on an MLP energy 3072->256->256->1 (SiLU), {sizes.mlp_chains} "
        f"chains, float32, {sizes.mlp_steps} steps x {sizes.mlp_repeats} interleaved repeats"
    )
    net = make_mlp(seed)
    g0 = torch.Generator().manual_seed(seed)
    x0 = torch.randn(sizes.mlp_chains, 3072, generator=g0, dtype=DTYPE)
    eps = 1e-3
    n = sizes.mlp_steps

    def hand():
        gen = torch.Generator().manual_seed(seed)
        x, acc = handwritten_mala(net, x0, eps, n, gen)
        return x, acc

    def via_sample():
        tr = ebmcmc.sample(
            net,
            MALA(step_size=eps),
            x0,
            num_samples=n,
            generator=seed,
            progress=False,
            adaptation=None,
            trace_fn=lambda state, info: state.energy,  # a summary, not 3072-D draws
        )
        return tr.final_state.position, float(tr.stats["accept_prob"].mean())

    def via_kernel():
        gen = torch.Generator().manual_seed(seed)
        k = MALA(step_size=eps)
        state = k.init(net, x0)
        acc = 0.0
        for _ in range(n):
            state, info = k.step(net, state, gen)
            acc += float(info.accepted.float().mean())
        return state.position, acc / n

    contenders = {
        "hand-written loop": hand,
        "ebmcmc.sample(MALA)": via_sample,
        "ebmcmc MALA.step loop": via_kernel,
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    cpu_times: dict[str, list[float]] = {k: [] for k in contenders}
    finals: dict[str, tuple[torch.Tensor, float]] = {}
    for fn in contenders.values():  # warm up allocator and autograd once
        fn()
    names = list(contenders)
    for rep in range(sizes.mlp_repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            out, secs = _timed(contenders[name])
            times[name].append(secs.wall / n)
            cpu_times[name].append(secs.cpu / n)
            finals[name] = out
        _say(
            f"    repeat {rep + 1}: "
            + ", ".join(f"{k} {times[k][-1] * 1e3:.2f} ms/step" for k in names)
        )
    ref = min(times["hand-written loop"])
    rows = []
    for name in names:
        best = min(times[name])
        x_final, acc = finals[name]
        same = bool(torch.allclose(x_final, finals["hand-written loop"][0], atol=1e-4))
        rows.append(
            {
                "implementation": name,
                "ms_per_step_best": best * 1e3,
                "ms_per_step_median": statistics.median(times[name]) * 1e3,
                "cpu_ms_per_step_best": min(cpu_times[name]) * 1e3,
                "cpu_ratio_to_handwritten": min(cpu_times[name])
                / min(cpu_times["hand-written loop"]),
                "ratio_to_handwritten": best / ref,
                "median_ratio": statistics.median(
                    a / b for a, b in zip(times[name], times["hand-written loop"], strict=True)
                ),
                "accept_rate": acc,
                "same_chains_as_handwritten": same,
            }
        )
        _say(
            f"    {name:24s} best {best * 1e3:7.2f} ms/step  ratio {best / ref:5.3f}  "
            f"accept {acc:.2f}  same chains: {same}"
        )
    return {
        "chains": sizes.mlp_chains,
        "steps": n,
        "repeats": sizes.mlp_repeats,
        "step_size": eps,
        "rows": rows,
        "times_s_per_step": times,
        "cpu_times_s_per_step": cpu_times,
    }


# ----------------------------------------------------------------------------- acceptance


def acceptance(rows: list[Row], t2: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for target in dict.fromkeys(r.target for r in rows):
        tr = [r for r in rows if r.target == target]
        nuts = next(r for r in tr if r.sampler == "NUTS")
        ebm_ok = [r for r in tr if r.library == "ebmcmc" and r.result["correct"]]
        best = max(ebm_ok, key=lambda r: r.result["ess_per_s"]) if ebm_ok else None
        ratio = best.result["ess_per_s"] / nuts.result["ess_per_s"] if best else 0.0
        cpu_ratio = best.result["x_nuts_cpu"] if best else 0.0
        checks.append(
            {
                "target": target,
                "check": "ebmcmc's best correct kernel >= 1000x Pyro NUTS ESS/s",
                "holds": bool(best and ratio >= 1000),
                "detail": (
                    f"{best.sampler}: {best.result['ess_per_s']:.0f} ESS/s vs NUTS "
                    f"{nuts.result['ess_per_s']:.2f} ESS/s = {ratio:.0f}x "
                    f"(per CPU second: {cpu_ratio:.0f}x)"
                    if best
                    else "no ebmcmc kernel was correct"
                ),
            }
        )
        for te in (r for r in tr if r.library == "torchebm"):
            if te.result["correct"]:
                holds = bool(best and best.result["ess_per_s"] >= te.result["ess_per_s"])
                detail = (
                    f"torchebm {te.sampler} correct at {te.result['ess_per_s']:.0f} ESS/s "
                    f"({te.result['ess_per_cpu_s']:.0f} per CPU s); "
                    + (
                        f"ebmcmc {best.sampler} {best.result['ess_per_s']:.0f} ESS/s "
                        f"({best.result['ess_per_cpu_s']:.0f} per CPU s)"
                        if best
                        else "no ebmcmc kernel correct"
                    )
                )
                check = f"ebmcmc at least as fast as torchebm {te.sampler} (which is correct)"
            else:
                holds = best is not None
                detail = (
                    f"torchebm {te.sampler} wrong (z_mean {te.result['z_mean']:.1f}, z_var "
                    f"{te.result['z_var']:.1f}, R-hat {te.result['rhat']:.3f}); "
                    + (f"ebmcmc {best.sampler} correct" if best else "no ebmcmc kernel correct")
                )
                check = f"ebmcmc correct where torchebm {te.sampler} is not"
            checks.append({"target": target, "check": check, "holds": holds, "detail": detail})
    for target in dict.fromkeys(r.target for r in rows):
        te = next((r for r in rows if r.target == target and r.sampler == "Langevin"), None)
        eb = next((r for r in rows if r.target == target and r.sampler == "Langevin (ULA)"), None)
        if te is None or eb is None:
            continue
        ratio = eb.result["seconds"] / te.result["seconds"]
        cpu_ratio = eb.result["cpu_seconds"] / te.result["cpu_seconds"]
        same = eb.result.get("same_draws_as_other_ula")
        checks.append(
            {
                "target": target,
                "check": "(like for like) ebmcmc Langevin wall time <= torchebm Langevin's",
                "holds": bool(ratio <= 1.0),
                "detail": f"{'same' if same else 'different'} draws (max difference "
                f"{eb.result.get('max_abs_draw_difference', math.nan):.1e}); ebmcmc "
                f"{eb.result['seconds']:.2f} s vs torchebm {te.result['seconds']:.2f} s "
                f"= {ratio:.2f}x the time ({cpu_ratio:.2f}x the CPU time)",
            }
        )
    mlp = next(r for r in t2["rows"] if r["implementation"] == "ebmcmc.sample(MALA)")
    checks.append(
        {
            "target": "MLP",
            "check": "ebmcmc MALA step <= 1.10x the hand-written loop",
            "holds": bool(mlp["ratio_to_handwritten"] <= 1.10),
            "detail": f"best-of ratio {mlp['ratio_to_handwritten']:.3f} "
            f"(median of paired ratios {mlp['median_ratio']:.3f}, best-of CPU-time ratio "
            f"{mlp['cpu_ratio_to_handwritten']:.3f})",
        }
    )
    return checks


# ----------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "torchebm": getattr(torchebm, "__version__", "not installed"),
        "ebmcmc": ebmcmc.__version__,
        "arviz": arviz_bridge.ARVIZ_VERSION,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _f(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def _g(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.1f}"
    return f"{x:.3g}"


def markdown(info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [
        "# ebmcmc sampler benchmark",
        "",
        f"- mode: `{info['mode']}`, seed {info['seed']}, command `{info['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; load average "
        f"{' / '.join(f'{v:.2f}' for v in m['load_average_at_start'] or [])} at start, "
        f"{' / '.join(f'{v:.2f}' for v in info['load_average_at_end'] or [])} at end",
        f"- Python {m['python']}, torch {m['torch']}, Pyro {m['pyro']}, torchebm "
        f"{m['torchebm']}, ebmcmc {m['ebmcmc']}, ArviZ {m['arviz']}; "
        f"`torch.set_num_threads({m['torch_threads']})` for every contender",
        f"- date {m['date']}; total wall time {info['total_seconds']:.0f} s",
        "",
    ]
    if info["mode"] != "full":
        lines += [
            f"> `{info['mode']}` sizes check that the script runs; its runs are far too short "
            "for the ESS, R-hat and correctness columns to mean anything. Use the full sizes.",
            "",
        ]
    lines += [
        "## Table 1: ESS per second on 2-D targets with exact answers",
        "",
        "Wall time includes warm-up (adaptation or burn-in); torchebm's step-size sweep is not "
        "charged to it. ESS: ArviZ bulk ESS over all chains, minimum over the 2 coordinates. "
        "z mean / z var: max over coordinates of |estimate − truth| / MCSE. correct: "
        f"z mean < {Z_MAX:g}, z var < {Z_MAX:g} and (multi-chain) R-hat < {RHAT_MAX}. "
        "×NUTS: ESS/s relative to Pyro NUTS on the same target. CPU s and ESS/CPU-s: the same "
        "with this process's CPU time, which other jobs on a shared machine disturb less.",
        "",
    ]
    header = (
        "| target | library | sampler | chains | warm-up | draws/chain (thin) | wall s | "
        "ESS | ESS/s | ×NUTS | CPU s | ESS/CPU-s | ×NUTS (CPU) | z mean | z var | R-hat "
        "| correct? |"
    )
    lines += [header, "|" + "---|" * 17]
    for r in info["table1"]:
        lines.append(
            f"| {r['target']} | {r['library']} | {r['sampler']} | {r['chains']} | {r['warmup']} "
            f"| {r['draws_per_chain']} ({r['thin']}) | {r['seconds']:.1f} | {_g(r['ess'])} | "
            f"{_g(r['ess_per_s'])} | {_g(r['x_nuts'])} | {r['cpu_seconds']:.1f} | "
            f"{_g(r['ess_per_cpu_s'])} | {_g(r['x_nuts_cpu'])} | {_f(r['z_mean'])} | "
            f"{_f(r['z_var'])} "
            f"| {_f(r['rhat'], 4)} | {'yes' if r['correct'] else '**no**'} |"
        )
    lines += ["", "Settings:", ""]
    for r in info["table1"]:
        lines.append(f"- {r['target']} / {r['library']} {r['sampler']}: {r['settings']}")
    if info["sweeps"]:
        lines += ["", "torchebm step-size sweeps (pilot runs, same chains):", ""]
        for key, sw in info["sweeps"].items():
            pil = "; ".join(
                f"{p['step_size']:g}: {_g(p['ess_per_s'])} ESS/s, z mean {_f(p['z_mean'], 1)}, "
                f"z var {_f(p['z_var'], 1)}"
                for p in sw["pilots"]
            )
            lines.append(f"- {key}: chose **{sw['chosen']:g}** — {pil}")
    t2 = info["table2"]
    lines += [
        "",
        "## Table 2: MALA step on an MLP energy",
        "",
        f"3072 → 256 → 256 → 1 with SiLU, {t2['chains']} chains, float32, step size "
        f"{t2['step_size']:g}; {t2['steps']} steps per repeat, {t2['repeats']} interleaved "
        "repeats, best reported. The hand-written loop does the same proposal and MH "
        "correction in plain torch (`autograd.grad`, `torch.where`).",
        "",
        "| implementation | ms/step (best) | ms/step (median) | ratio to hand-written (best) "
        "| median paired ratio | CPU ms/step (best) | CPU ratio (best) | accept rate "
        "| same chains? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in t2["rows"]:
        lines.append(
            f"| {r['implementation']} | {r['ms_per_step_best']:.2f} | "
            f"{r['ms_per_step_median']:.2f} | {r['ratio_to_handwritten']:.3f} | "
            f"{r['median_ratio']:.3f} | {r['cpu_ms_per_step_best']:.2f} | "
            f"{r['cpu_ratio_to_handwritten']:.3f} | {r['accept_rate']:.2f} | "
            f"{'yes' if r['same_chains_as_handwritten'] else 'no'} |"
        )
    lines += ["", "## Acceptance targets (measured, not asserted)", ""]
    lines += ["| target | check | holds? | detail |", "|---|---|---|---|"]
    for c in info["acceptance"]:
        lines.append(
            f"| {c['target']} | {c['check']} | {'yes' if c['holds'] else '**no**'} | "
            f"{c['detail']} |"
        )
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes for CI (< 30 s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="directory for results.md and results.json (default: benchmarks/results)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    args.out.mkdir(parents=True, exist_ok=True)

    info: dict[str, Any] = {
        "mode": mode,
        "seed": args.seed,
        "command": " ".join(["benchmarks/samplers.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
    }
    m = info["machine"]
    _say(
        f"ebmcmc sampler benchmark ({mode}): torch {m['torch']}, Pyro {m['pyro']}, torchebm "
        f"{m['torchebm']}, {m['torch_threads']} thread, load average "
        f"{m['load_average_at_start']}"
    )
    t0 = time.perf_counter()
    rows, sweeps = table1(sizes, args.seed)
    t2 = table2(sizes, args.seed)
    info["total_seconds"] = time.perf_counter() - t0
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["sizes"] = {k: getattr(sizes, k) for k in sizes.__dataclass_fields__}
    info["sizes"] = {k: (v.__dict__ if isinstance(v, Run) else v) for k, v in info["sizes"].items()}
    info["table1"] = [r.as_json() for r in rows]
    info["sweeps"] = sweeps
    info["table2"] = t2
    info["acceptance"] = acceptance(rows, t2)

    md = markdown(info)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(_jsonable(info), indent=2) + "\n")
    _say("\n" + md)
    _say(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
