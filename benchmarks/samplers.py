"""Sampler benchmark: ebmcmc against BlackJAX, NumPyro, Pyro and torchebm, side by side.

One table per target, every contender run in the same invocation, from the same starting
points and at the same sizes:

* targets (exact definitions in ``benchmarks/peers/common.py``): the 2-D Gaussian with
  correlation 0.9, the banana ``½(1−x₁)² + 5(x₂−x₁²)²``, a 100-D diagonal Gaussian with
  variances 1e-2 … 1e1, Neal's 10-D funnel in the non-centred parametrisation, and the
  posteriordb logistic regression ``wells_data-wells_dae_c_model`` (3,020 observations, 5
  parameters; reference posterior in ``benchmarks/peers/posteriordb/``);
* ebmcmc ``ChEES()``, ``NUTS()``, ``MALA()`` and ``HMC()`` with their default settings and the
  default warm-up adaptation (``ebmcmc.sample``, no per-target tuning);
* BlackJAX ChEES, BlackJAX NUTS and NumPyro NUTS (CPU JAX, one thread, float32), run through
  ``benchmarks/peers/client.py`` in the separate environment ``benchmarks/.jaxenv`` (built on
  first use by ``benchmarks/peers/jaxenv.py``; if it cannot be built or run, the JAX rows say so
  and the rest runs). Their CPU time is measured inside their own process on a second,
  identical call; the first call's extra CPU time is the compile time, shown separately;
* Pyro NUTS (one chain, its default adaptation) and torchebm HMC (10 leapfrog steps, step size
  from a pilot sweep: torchebm has no adaptation).

Chains: the many-chain samplers (ChEES, MALA, HMC, torchebm HMC) all run the same number of
chains, the NUTS samplers (ebmcmc, BlackJAX, NumPyro) a smaller common number; every chain
starts from ``common.initial_points`` (Uniform(-2, 2), the same arrays on both sides).

Scores, the same function for every contender (``jax_runner.summarize``): ESS = ArviZ bulk ESS
over all chains, the minimum over coordinates; ESS per CPU-second of this process (warm-up +
sampling; the JAX peers' in their own process, compilation excluded); ESS per gradient
evaluation (all chains, warm-up included; for batched NUTS both each chain's own leapfrog steps
and the lock-step evaluations the batch paid for); the largest |error| / MCSE of the mean and
of the variance; the largest rank R-hat (of x and of (x − mean)²). A row is *correct* when both
|z| < 4 and R-hat < 1.01. Where a target is repeated, the repeats are interleaved (each round
runs ebmcmc's kernels and torchebm, alternating the order, with different sampler seeds; Pyro
and the JAX peers run once); the ESS rates give the median and the minimum, the errors and
R-hat the worst repeat.

Table 2 times one MALA step of ebmcmc on an MLP energy (3072 -> 256 -> 256 -> 1, 128 chains,
float32) against a hand-written MALA loop doing the same math on the same network.

Usage::

    nice -n 5 .venv/bin/python benchmarks/samplers.py          # full sizes (~20 CPU-minutes)
    .venv/bin/python benchmarks/samplers.py --quick             # small sizes (a few minutes)
    .venv/bin/python benchmarks/samplers.py --smoke             # tiny sizes, no JAX (CI, < 60 s)
    .venv/bin/python benchmarks/samplers.py --no-jax            # skip the JAX peers
    .venv/bin/python benchmarks/samplers.py --targets banana,logistic --out DIR

This is a script, not a test: nothing here passes or fails. The goals are measured and
printed, never asserted.
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
from dataclasses import dataclass
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
from ebmcmc import arviz_bridge  # noqa: E402
from ebmcmc.kernels import HMC, MALA, NUTS, ChEES  # noqa: E402
from ebmcmc.sampling import ConvergenceWarning  # noqa: E402
from ebmcmc.targets import Banana, Gaussian  # noqa: E402

try:  # torchebm is a dev dependency; without it its rows are skipped
    import torchebm
    from torchebm.core import BaseModel as _TorchebmBaseModel
    from torchebm.samplers import HamiltonianMonteCarlo as _TorchebmHMC
except ImportError:  # pragma: no cover - depends on the environment
    torchebm = None

import pyro  # noqa: E402
from pyro.infer.mcmc import MCMC as PyroMCMC  # noqa: E402
from pyro.infer.mcmc import NUTS as PyroNUTS  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS))

import common  # noqa: E402
from client import JaxJobFailed, JaxPeersUnavailable, run_jax_job  # noqa: E402
from jax_runner import summarize, wells_design  # noqa: E402  (numpy/ArviZ only, no JAX)

DTYPE = torch.float32
Z_MAX = 4.0  # |error| / MCSE above this means the answer is wrong
RHAT_MAX = 1.01
TARGETS = ("gaussian", "banana", "gaussian100", "funnel10_nc", "logistic")
LABELS = {
    "gaussian": "2-D Gaussian, correlation 0.9",
    "banana": "banana, U = ½(1−x₁)² + 5(x₂−x₁²)²",
    "gaussian100": "100-D Gaussian, variances logspace(−2, 1)",
    "funnel10_nc": "10-D funnel (scale 3), non-centred",
    "logistic": "posteriordb wells_data-wells_dae_c_model (logistic regression, 5-D)",
}
#: JAX sampler -> (library, sampler name shown)
JAX_SAMPLERS = {
    "blackjax_chees": ("BlackJAX", "ChEES"),
    "blackjax_nuts": ("BlackJAX", "NUTS"),
    "numpyro_nuts": ("NumPyro", "NUTS"),
}


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class TargetSizes:
    """Sizes of one target's table."""

    chains: int  # ChEES, MALA, HMC (ebmcmc and BlackJAX), torchebm HMC
    nuts_chains: int  # ebmcmc, BlackJAX and NumPyro NUTS
    warmup: int
    draws: int
    pyro_warmup: int  # Pyro NUTS: one chain
    pyro_draws: int
    repeats: int  # interleaved rounds (Pyro, the JAX peers and torchebm's sweep run once)
    sweep: int  # warm-up and draws of each torchebm pilot run


@dataclass(frozen=True)
class Sizes:
    targets: dict[str, TargetSizes]
    hmc_grid: tuple[float, ...]  # torchebm HMC step sizes tried
    mlp_chains: int
    mlp_steps: int  # MALA steps per timed repetition
    mlp_repeats: int  # interleaved repetitions; the best is reported


def _ts(chains, nuts, warmup, draws, pw, pd, repeats, sweep):
    return TargetSizes(chains, nuts, warmup, draws, pw, pd, repeats, sweep)


SIZES = {
    "full": Sizes(
        targets={
            "gaussian": _ts(1024, 128, 500, 1000, 500, 1000, 2, 100),
            "banana": _ts(1024, 128, 500, 1000, 500, 1000, 1, 100),
            "gaussian100": _ts(256, 32, 500, 1000, 500, 1000, 1, 100),
            "funnel10_nc": _ts(1024, 128, 500, 1000, 500, 1000, 1, 100),
            "logistic": _ts(128, 32, 500, 1000, 500, 1000, 1, 100),
        },
        hmc_grid=(0.3, 0.1, 0.03),
        mlp_chains=128,
        mlp_steps=40,
        mlp_repeats=7,
    ),
    "quick": Sizes(
        targets={t: _ts(256, 16, 150, 150, 100, 100, 1, 30) for t in TARGETS},
        hmc_grid=(0.1, 0.03),
        mlp_chains=128,
        mlp_steps=5,
        mlp_repeats=3,
    ),
    "smoke": Sizes(
        targets={t: _ts(16, 4, 20, 20, 10, 10, 1, 5) for t in TARGETS},
        hmc_grid=(0.1,),
        mlp_chains=16,
        mlp_steps=3,
        mlp_repeats=2,
    ),
}


# ----------------------------------------------------------------------------- targets


class Counted:
    """An energy that counts its evaluations: each call adds the number of rows it evaluated
    (``x.numel() // dim``); every contender here evaluates the gradient with the energy."""

    def __init__(self, energy: Callable[[torch.Tensor], torch.Tensor], dim: int):
        self.energy, self.dim, self.n = energy, dim, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.n += x.numel() // self.dim
        return self.energy(x)


def torch_energy(target: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``target``'s energy (negative log density up to a constant) on ``(*batch, dim)``,
    float32, the same function as ``jax_runner.make_logdensity``'s."""
    if target == "gaussian":
        return Gaussian(torch.zeros(2), torch.tensor(common.GAUSSIAN_COV)).energy
    if target == "banana":
        return Banana().energy
    if target == "gaussian100":
        inv_var = torch.as_tensor(1.0 / common.gaussian100_variances(), dtype=DTYPE)
        return lambda x: 0.5 * (inv_var * x * x).sum(-1)
    if target == "funnel10_nc":
        # v = 3 z0, x_i = exp(v/2) z_i: the funnel's density times the Jacobian is N(0, I) in z
        return lambda z: 0.5 * (z * z).sum(-1)
    if target == "logistic":
        rec = common.load_posteriordb(common.POSTERIORDB[target])
        xd, yd = wells_design(rec["data"])
        xt, yt = torch.as_tensor(xd, dtype=DTYPE), torch.as_tensor(yd, dtype=DTYPE)

        def logistic(theta: torch.Tensor) -> torch.Tensor:
            eta = theta[..., :1] + theta[..., 1:] @ xt.T  # (*batch, N)
            return -(yt * eta - torch.nn.functional.softplus(eta)).sum(-1)

        return logistic
    raise ValueError(f"unknown target {target!r}; known: {TARGETS}")


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds and this process's CPU seconds of one call."""

    wall: float
    cpu: float


def _timed(fn: Callable[[], Any]) -> tuple[Any, Timing]:
    """Run ``fn``; its result with wall and CPU time (process CPU time, one thread)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, Timing(time.perf_counter() - t0, time.process_time() - c0)


def score(draws: np.ndarray, target: str, cpu: float, grads: int, lockstep: int) -> dict:
    """Score draws ``(chain, draw, dim)`` with ``jax_runner.summarize`` (the JAX rows' scoring)."""
    draws = np.asarray(draws, dtype=np.float64)
    out: dict[str, Any] = {"cpu_s": cpu, "grads": grads, "grads_lockstep": lockstep}
    if not np.isfinite(draws).all():
        out.update(ess=0.0, z_mean=math.inf, z_var=math.inf, rhat=math.nan, correct=False)
        out["note"] = f"non-finite draws ({1 - np.isfinite(draws).all(-1).mean():.1%})"
        return out
    with warnings.catch_warnings():  # ArviZ: "more chains than draws" at the small sizes
        warnings.simplefilter("ignore", UserWarning)
        s = summarize(draws, common.truth(target))
    rhat = s["max_r_hat"]
    out.update(
        ess=s["min_ess_bulk"],
        z_mean=s["max_z_mean"],
        z_var=s["max_z_var"],
        rhat=math.nan if rhat is None else rhat,
        correct=bool(
            s["max_z_mean"] < Z_MAX and s["max_z_var"] < Z_MAX and (rhat is None or rhat < RHAT_MAX)
        ),
    )
    return out


# ----------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class _CountedNUTS(NUTS):
    """ebmcmc's NUTS, adding up each chain's own leapfrog steps (``info.num_leapfrog``)."""

    def step(self, energy, state, generator=None):
        state, info = super().step(energy, state, generator)
        _NUTS_LEAPFROG[0] += int(info.num_leapfrog.sum())
        return state, info


_NUTS_LEAPFROG = [0]


def run_ebmcmc(name: str, target: str, ts: TargetSizes, seed: int) -> dict:
    """``ebmcmc.sample`` with the kernel's defaults and the default warm-up adaptation."""
    kernel = {"ChEES": ChEES(), "NUTS": _CountedNUTS(), "MALA": MALA(), "HMC": HMC()}[name]
    chains = ts.nuts_chains if name == "NUTS" else ts.chains
    x0 = torch.as_tensor(common.initial_points(target, chains, 0), dtype=DTYPE)
    energy = Counted(torch_energy(target), x0.shape[-1])
    _NUTS_LEAPFROG[0] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        trace, t = _timed(
            lambda: ebmcmc.sample(
                energy, kernel, x0, ts.draws, num_warmup=ts.warmup, generator=seed, progress=False
            )
        )
    useful = energy.n
    if name == "NUTS":  # the tree's own steps, plus the initial evaluation of every chain
        useful = _NUTS_LEAPFROG[0] + chains
    res = score(trace.draws.numpy(), target, t.cpu, useful, energy.n)
    k = trace.kernel
    notes = [f"step {torch.as_tensor(k.step_size).float().mean().item():.3g}"]
    if name == "ChEES":
        notes.append(f"T {float(torch.as_tensor(k.trajectory_length).max()):.3g}")
    div = int(trace.stats["diverging"].sum())
    if div:
        notes.append(f"{div} divergent")
    notes.append(f"accept {float(trace.stats['accept_prob'].mean()):.2f}")
    if caught:
        notes.append(f"{len(caught)} warning(s) from sample")
    res.update(chains=chains, wall_s=t.wall, notes=", ".join(notes))
    return res


def run_pyro_nuts(target: str, ts: TargetSizes, seed: int) -> dict:
    """One Pyro NUTS chain through ``potential_fn``, Pyro's default warm-up (dual-averaging step
    size, diagonal mass matrix), started from the first chain's starting point."""
    pyro.set_rng_seed(seed)
    x0 = torch.as_tensor(common.initial_points(target, 1, 0)[0], dtype=DTYPE)
    energy = Counted(torch_energy(target), x0.shape[-1])
    kernel = PyroNUTS(potential_fn=lambda p: energy(p["x"]))
    mcmc = PyroMCMC(
        kernel,
        num_samples=ts.pyro_draws,
        warmup_steps=ts.pyro_warmup,
        initial_params={"x": x0},
        disable_progbar=True,
    )
    _, t = _timed(mcmc.run)
    draws = mcmc.get_samples(group_by_chain=True)["x"].detach().numpy()
    res = score(draws, target, t.cpu, energy.n, energy.n)
    res.update(chains=1, wall_s=t.wall, notes=f"step {float(kernel.step_size):.3g}")
    res["warmup"], res["draws"] = ts.pyro_warmup, ts.pyro_draws
    return res


def _torchebm_hmc(target: str, chains: int, warmup: int, draws: int, step: float, seed: int):
    class PlainEnergy(_TorchebmBaseModel):
        """The benchmark's energy as a torchebm model (autograd gradient, nothing analytic)."""

        def __init__(self, energy):
            super().__init__(dtype=DTYPE)
            self._energy = energy

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._energy(x)

    x0 = torch.as_tensor(common.initial_points(target, chains, 0), dtype=DTYPE)
    energy = Counted(torch_energy(target), x0.shape[-1])
    sampler = _TorchebmHMC(PlainEnergy(energy), step_size=step, n_leapfrog_steps=10, dtype=DTYPE)
    gen = torch.Generator().manual_seed(seed)

    def go():
        x = sampler.sample(x=x0.clone(), n_steps=warmup, generator=gen) if warmup else x0
        return sampler.sample(x=x, n_steps=draws, return_trajectory=True, generator=gen)

    traj, t = _timed(go)
    return score(traj.detach().numpy(), target, t.cpu, energy.n, energy.n), t


def sweep_torchebm(target: str, ts: TargetSizes, grid: tuple[float, ...], seed: int):
    """The pilot sweep a user of torchebm's HMC (no adaptation) would do: the step size whose
    short pilot run (same chains) has the highest ESS per CPU-second."""
    pilots = []
    for step in grid:
        r, _ = _torchebm_hmc(target, ts.chains, ts.sweep, ts.sweep, step, seed + 7)
        pilots.append({"step": step, "ess_per_cpu_s": r["ess"] / r["cpu_s"]})
    return max(pilots, key=lambda p: p["ess_per_cpu_s"])["step"], pilots


def run_torchebm(target: str, ts: TargetSizes, step: float, seed: int) -> dict:
    res, t = _torchebm_hmc(target, ts.chains, ts.warmup, ts.draws, step, seed)
    res.update(chains=ts.chains, wall_s=t.wall, notes=f"step {step:g} (pilot sweep), L = 10")
    return res


def run_jax(sampler: str, target: str, ts: TargetSizes, seed: int) -> dict:
    """A JAX peer in its own process: its CPU time of the second, identical call (no
    compilation) and the compile CPU time (first call minus second)."""
    chains = ts.chains if sampler == "blackjax_chees" else ts.nuts_chains
    job = {
        "target": target,
        "sampler": sampler,
        "chains": chains,
        "warmup": ts.warmup,
        "draws": ts.draws,
        "seed": seed,
        "dtype": "float32",
        "repeat": True,
        "init": common.initial_points(target, chains, 0),
    }
    r = run_jax_job(job, timeout=1800)
    h, t, g, s = r["headline"], r["timing"], r["gradients"], r["summary"]
    rhat = s["max_r_hat"]
    notes = []
    if r.get("divergences"):
        notes.append(f"{r['divergences']} divergent")
    notes.append(f"accept {r['acceptance']:.2f}")
    return {
        "cpu_s": t["run_cpu_s"],
        "compile_cpu_s": t["compile_cpu_s"],
        "wall_s": t["run_wall_s"],
        "grads": g["grads_total"],
        "grads_lockstep": g["lockstep_total"],
        "ess": h["min_ess_bulk"],
        "z_mean": h["max_z_mean"],
        "z_var": h["max_z_var"],
        "rhat": math.nan if rhat is None else rhat,
        "correct": h["correct"],
        "chains": chains,
        "notes": ", ".join(notes),
    }


# ----------------------------------------------------------------------------- per-target tables

#: (library, sampler) in table order
CONTENDERS = (
    ("ebmcmc", "ChEES"),
    ("ebmcmc", "NUTS"),
    ("ebmcmc", "MALA"),
    ("ebmcmc", "HMC"),
    ("BlackJAX", "ChEES"),
    ("BlackJAX", "NUTS"),
    ("NumPyro", "NUTS"),
    ("Pyro", "NUTS"),
    ("torchebm", "HMC"),
)
SETTINGS = {
    ("ebmcmc", "ChEES"): "ChEES() defaults: jittered length, T/ε/diagonal mass by warm-up",
    ("ebmcmc", "NUTS"): "NUTS() defaults: max depth 10, windowed ε and diagonal mass, accept .8",
    ("ebmcmc", "MALA"): "MALA() defaults: windowed ε and mass (dense up to 64-D), accept .574",
    ("ebmcmc", "HMC"): "HMC() defaults: 10 leapfrog steps, windowed ε and diagonal mass",
    ("BlackJAX", "ChEES"): "chees_adaptation (Adam lr .025, ε0 .1, identity metric), 1 thread",
    ("BlackJAX", "NUTS"): "window_adaptation per chain (vmap), 1 thread",
    ("NumPyro", "NUTS"): "NUTS defaults, chain_method='vectorized', 1 thread",
    ("Pyro", "NUTS"): "NUTS defaults (accept .8, max depth 10, diagonal mass); 1 chain",
    ("torchebm", "HMC"): "HamiltonianMonteCarlo, 10 leapfrog steps, step from a pilot sweep",
}


def _say(msg: str) -> None:
    print(msg, flush=True)


def _line(lib: str, name: str, r: dict) -> str:
    if "error" in r:
        return f"    {lib:8s} {name:6s} {r['error']}"
    return (
        f"    {lib:8s} {name:6s} {r['chains']:5d} ch  CPU {r['cpu_s']:7.2f} s  ESS {r['ess']:10.0f}"
        f"  ESS/CPU-s {r['ess'] / r['cpu_s']:11.1f}  ESS/grad {r['ess'] / max(r['grads'], 1):.4f}"
        f"  z {r['z_mean']:5.2f}/{r['z_var']:5.2f}  R-hat {_rh(r['rhat'])}  "
        f"{'correct' if r['correct'] else 'WRONG'}  {r.get('notes', '')}"
    )


def run_target(
    target: str, ts: TargetSizes, sizes: Sizes, seed: int, jax: bool, only: set | None = None
) -> dict:
    """Every contender (or those in ``only``) on ``target``; ``ts.repeats`` interleaved
    rounds."""
    _say(
        f"\n== {LABELS[target]}: {ts.chains} chains (NUTS {ts.nuts_chains}), {ts.warmup} warm-up"
        f" + {ts.draws} draws, {ts.repeats} round(s)"
    )
    runs: dict[tuple[str, str], list[dict]] = {c: [] for c in CONTENDERS}
    jax_reason = None if jax else "skipped (--no-jax or --smoke)"
    step = None
    sweep = None
    for rnd in range(ts.repeats):
        order = list(CONTENDERS) if rnd % 2 == 0 else list(CONTENDERS)[::-1]
        s = seed + rnd
        for lib, name in order:
            if only is not None and f"{lib}:{name}" not in only:
                if rnd == 0:
                    runs[(lib, name)].append({"error": "not run (--only)"})
                continue
            if lib in ("Pyro", "BlackJAX", "NumPyro") and rnd > 0:
                # not cheap to repeat: one Pyro chain is slow, and every JAX job is a fresh
                # process that imports and compiles (its run is already timed on a second,
                # identical call)
                continue
            try:
                if lib == "ebmcmc":
                    r = run_ebmcmc(name, target, ts, s)
                elif lib == "Pyro":
                    r = run_pyro_nuts(target, ts, s)
                elif lib == "torchebm":
                    if torchebm is None:
                        r = {"error": "torchebm not installed"}
                    else:
                        if step is None:
                            step, sweep = sweep_torchebm(target, ts, sizes.hmc_grid, seed)
                        r = run_torchebm(target, ts, step, s)
                elif jax_reason is not None:
                    r = {"error": f"JAX peers unavailable: {jax_reason}"}
                else:
                    sampler = next(k for k, v in JAX_SAMPLERS.items() if v == (lib, name))
                    r = run_jax(sampler, target, ts, s)
            except JaxPeersUnavailable as e:
                jax_reason = str(e)
                r = {"error": f"JAX peers unavailable: {e}"}
            except JaxJobFailed as e:
                r = {"error": f"failed: {e}"}
            if "error" not in r:
                r.setdefault("warmup", ts.warmup)
                r.setdefault("draws", ts.draws)
                r["ess_per_cpu_s"] = r["ess"] / r["cpu_s"] if r["cpu_s"] > 0 else math.nan
                r["ess_per_grad"] = r["ess"] / max(r["grads"], 1)
                r["ess_per_lockstep_grad"] = r["ess"] / max(r["grads_lockstep"], 1)
            runs[(lib, name)].append(r)
            _say(_line(lib, name, r))
    rows = []
    for (lib, name), rs in runs.items():
        rows.append({"library": lib, "sampler": name, **aggregate(rs)})
    return {
        "target": target,
        "label": LABELS[target],
        "sizes": ts.__dict__,
        "rows": rows,
        "torchebm_sweep": sweep,
    }


def aggregate(rs: list[dict]) -> dict:
    """Median and minimum of the rates over the repeats; the worst errors and R-hat."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return {"error": rs[0]["error"] if rs else "not run"}
    out = dict(ok[0])
    for key in ("ess_per_cpu_s", "ess_per_grad", "ess_per_lockstep_grad", "ess", "cpu_s"):
        vals = [r[key] for r in ok]
        out[key] = statistics.median(vals)
        out[key + "_min"] = min(vals)
    if "compile_cpu_s" in out:
        out["compile_cpu_s"] = statistics.median(r["compile_cpu_s"] for r in ok)
    out["z_mean"] = max(r["z_mean"] for r in ok)
    out["z_var"] = max(r["z_var"] for r in ok)
    rh = [r["rhat"] for r in ok if not math.isnan(r["rhat"])]
    out["rhat"] = max(rh) if rh else math.nan
    out["correct"] = all(r["correct"] for r in ok)
    out["repeats"] = len(ok)
    out["runs"] = ok
    return out


# ----------------------------------------------------------------------------- goals


def _row(table: dict, lib: str, name: str) -> dict | None:
    r = next(r for r in table["rows"] if r["library"] == lib and r["sampler"] == name)
    return None if "error" in r else r


def _why(*pairs: tuple[str, dict | None]) -> str:
    bad = []
    for label, r in pairs:
        if r is None:
            bad.append(f"{label} did not run")
        elif not r["correct"]:
            bad.append(
                f"{label} is not correct (z {r['z_mean']:.1f}/{r['z_var']:.1f}, "
                f"R-hat {_rh(r['rhat'])})"
            )
    return "; ".join(bad)


def goals(tables: list[dict]) -> list[dict]:
    """The benchmark's goals as ratios, judged only where both sides are correct."""
    out = []

    def add(target, goal, a, b, label_a, label_b, key, threshold, fmt):
        why = _why((label_a, a), (label_b, b))
        if why:
            out.append({"target": target, "goal": goal, "verdict": "n/a", "detail": why})
            return
        ratio = a[key] / b[key]
        extra = ""
        if a.get("repeats", 1) > 1 or b.get("repeats", 1) > 1:
            worst = a[key + "_min"] / b[key]
            extra = f"; with {label_a}'s lowest repeat {worst:.3g}×"
        out.append(
            {
                "target": target,
                "goal": goal,
                "verdict": "PASS" if ratio >= threshold else "MISS",
                "ratio": ratio,
                "detail": f"{label_a} {fmt(a[key])} vs {label_b} {fmt(b[key])}: "
                f"{ratio:.3g}× (goal ≥ {threshold:g}×){extra}",
            }
        )

    for t in tables:
        tgt = t["target"]
        chees, bj_chees = _row(t, "ebmcmc", "ChEES"), _row(t, "BlackJAX", "ChEES")
        add(
            tgt,
            "ebmcmc ChEES ≥ BlackJAX ChEES, ESS/CPU-s",
            chees,
            bj_chees,
            "ebmcmc ChEES",
            "BlackJAX ChEES",
            "ess_per_cpu_s",
            1.0,
            lambda v: f"{v:,.0f}",
        )
        if tgt in ("gaussian", "banana"):
            pyro_nuts = _row(t, "Pyro", "NUTS")
            add(
                tgt,
                "ebmcmc ChEES ≥ 1,000× Pyro NUTS, ESS/CPU-s",
                chees,
                pyro_nuts,
                "ebmcmc ChEES",
                "Pyro NUTS",
                "ess_per_cpu_s",
                1000.0,
                lambda v: f"{v:,.0f}",
            )
        nuts, bj_nuts = _row(t, "ebmcmc", "NUTS"), _row(t, "BlackJAX", "NUTS")
        add(
            tgt,
            "ebmcmc NUTS within 10 % of BlackJAX NUTS, ESS per gradient",
            nuts,
            bj_nuts,
            "ebmcmc NUTS",
            "BlackJAX NUTS",
            "ess_per_grad",
            0.9,
            lambda v: f"{v:.4f}",
        )
        if nuts is not None and bj_nuts is not None and out[-1]["verdict"] != "n/a":
            lock = nuts["ess_per_lockstep_grad"] / bj_nuts["ess_per_lockstep_grad"]
            out[-1]["detail"] += f" (per lock-step batched evaluation: {lock:.3g}×)"
    out.append(
        {
            "target": "1 chain, 2-D",
            "goal": "MALA fixed per-step overhead ≤ 60 µs CPU",
            "verdict": "see kernel_overhead.py",
            "detail": "measured by benchmarks/kernel_overhead.py (`mala-1chain` row)",
        }
    )
    return out


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


def mlp_acceptance(t2: dict[str, Any]) -> dict[str, Any]:
    mlp = next(r for r in t2["rows"] if r["implementation"] == "ebmcmc.sample(MALA)")
    return {
        "target": "MLP",
        "check": "ebmcmc MALA step <= 1.10x the hand-written loop",
        "holds": bool(mlp["ratio_to_handwritten"] <= 1.10),
        "detail": f"best-of ratio {mlp['ratio_to_handwritten']:.3f} "
        f"(median of paired ratios {mlp['median_ratio']:.3f}, best-of CPU-time ratio "
        f"{mlp['cpu_ratio_to_handwritten']:.3f})",
    }


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
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def _rh(x: float) -> str:
    """R-hat: 3 decimals, or 3 significant digits once it is far from 1."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.3f}" if x < 10 else f"{x:.3g}"


def _g(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _rate(r: dict, key: str, fmt: Callable[[float], str]) -> str:
    if r.get("repeats", 1) > 1:
        return f"{fmt(r[key])} ({fmt(r[key + '_min'])})"
    return fmt(r[key])


TABLE_HEADER = (
    "| library | sampler | chains | warm-up + draws | ESS (min bulk) | ESS/CPU-s | CPU s "
    "| compile CPU-s | gradients | ESS/grad | ESS/grad (lock-step) | z mean | z var | R-hat "
    "| correct | notes |"
)


def target_table(t: dict) -> list[str]:
    lines = [f"### {t['label']}", ""]
    ts = t["sizes"]
    lines += [
        f"{ts['chains']} chains (NUTS samplers {ts['nuts_chains']}, Pyro 1), {ts['repeats']} "
        "interleaved round(s)" + (": median (minimum) over them" if ts["repeats"] > 1 else ""),
        "",
        TABLE_HEADER,
        "|" + "---|" * 16,
    ]
    for r in t["rows"]:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['sampler']} | {r['error']} |" + " |" * 13)
            continue
        comp = _f(r["compile_cpu_s"], 1) if "compile_cpu_s" in r else "—"
        lines.append(
            f"| {r['library']} | {r['sampler']} | {r['chains']:,} | {r['warmup']} + {r['draws']} "
            f"| {_g(r['ess'])} | {_rate(r, 'ess_per_cpu_s', _g)} | {r['cpu_s']:.2f} | {comp} "
            f"| {r['grads']:,} | {_rate(r, 'ess_per_grad', lambda v: f'{v:.3g}')} "
            f"| {r['ess_per_lockstep_grad']:.3g} | {_f(r['z_mean'])} | {_f(r['z_var'])} "
            f"| {_rh(r['rhat'])} | {'yes' if r['correct'] else '**no**'} | {r.get('notes', '')} |"
        )
    sw = t.get("torchebm_sweep")
    if sw:
        pil = "; ".join(f"{p['step']:g}: {_g(p['ess_per_cpu_s'])}" for p in sw)
        lines += ["", f"torchebm HMC pilot sweep (ESS/CPU-s by step size): {pil}"]
    return lines + [""]


def markdown(info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [
        "# ebmcmc sampler benchmark",
        "",
        f"- mode: `{info['mode']}`, seed {info['seed']}, command `{info['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; load average "
        f"{' / '.join(f'{v:.2f}' for v in m['load_average_at_start'] or [])} at start, "
        f"{' / '.join(f'{v:.2f}' for v in info['load_average_at_end'] or [])} at end; "
        f"niceness {m['niceness']}",
        f"- Python {m['python']}, torch {m['torch']}, Pyro {m['pyro']}, torchebm "
        f"{m['torchebm']}, ebmcmc {m['ebmcmc']}, ArviZ {m['arviz']}; "
        f"`torch.set_num_threads({m['torch_threads']})` for every contender; JAX peers: "
        f"{info.get('jax_versions') or 'not run'}",
        f"- date {m['date']}; total wall time {info['total_seconds']:.0f} s",
    ]
    for part in info.get("merged_from", []):
        lines.append(f"- merged from `{part['dir']}`: `{part['command']}`")
    lines += [""]
    if info["mode"] != "full":
        lines += [
            f"> `{info['mode']}` sizes check that the script runs; its runs are far too short "
            "for the ESS, R-hat and correctness columns to mean anything. Use the full sizes.",
            "",
        ]
    lines += [
        "## Table 1: every sampler on each target",
        "",
        "Same starting points (Uniform(−2, 2)) and sizes for every contender of a kind. "
        "ESS: ArviZ bulk ESS over all chains, minimum over coordinates. ESS/CPU-s: per second "
        "of process CPU time, warm-up included (JAX: in the runner's own process, second "
        "identical call; compile CPU-s: the first call's extra CPU time). gradients: "
        "energy+gradient evaluations of all chains, warm-up included (NUTS: each chain's own "
        "leapfrog steps; ESS/grad (lock-step): per evaluation the batched/vectorised run paid "
        "for, finished chains included). z mean / z var: max over coordinates of "
        "|estimate − truth| / MCSE (the reference's standard error included for the "
        f"posteriordb target). correct: z < {Z_MAX:g} and R-hat < {RHAT_MAX} (Pyro: one "
        "chain, no R-hat).",
        "",
    ]
    for t in info["tables"]:
        lines += target_table(t)
    lines += ["Settings:", ""]
    lines += [f"- {lib} {name}: {s}" for (lib, name), s in SETTINGS.items()]
    lines += ["", "## Goals (measured, not asserted; judged only where both sides are correct)"]
    lines += ["", "| target | goal | verdict | detail |", "|---|---|---|---|"]
    for g in info["goals"]:
        lines.append(f"| {g['target']} | {g['goal']} | {g['verdict']} | {g['detail']} |")
    t2 = info.get("table2")
    if t2:
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
        c = info["acceptance"]
        lines += [
            "",
            f"Acceptance: {c['check']}: {'yes' if c['holds'] else '**no**'} ({c['detail']}).",
        ]
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def _jax_versions() -> str | None:
    """The pinned JAX packages (``benchmarks/peers/jaxenv.lock``)."""
    try:
        lock = (PEERS / "jaxenv.lock").read_text().split()
    except OSError:
        return None
    keep = ("jax", "jaxlib", "blackjax", "numpyro")
    return ", ".join(v for v in lock if v.split("==")[0] in keep) or None


def _unjson(obj):
    """Undo :func:`_jsonable` for the numbers the tables read (inf, NaN)."""
    if isinstance(obj, dict):
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    if obj == "inf":
        return math.inf
    return obj


def merge(paths: list[Path], out: Path, command: str) -> int:
    """Combine the ``results.json`` of runs made with ``--targets`` (e.g. one process per table,
    run side by side) into one ``results.md``/``results.json``; goals are re-evaluated."""
    parts = [_unjson(json.loads((p / "results.json").read_text())) for p in paths]
    info = dict(parts[0])
    # one table per target; a row measured in a later part replaces the earlier one (so an
    # --only rerun of some contenders updates their rows)
    tables: dict[str, dict] = {}
    for part in parts:
        for t in part["tables"]:
            if t["target"] not in tables:
                tables[t["target"]] = t
                continue
            old = tables[t["target"]]["rows"]
            for i, r in enumerate(t["rows"]):
                if "error" not in r or "error" in old[i]:
                    old[i] = r
    info["tables"] = list(tables.values())
    for t in info["tables"]:
        for r in t["rows"]:
            if r.get("rhat") is None and "error" not in r:
                r["rhat"] = math.nan
    info["goals"] = goals(info["tables"])
    for part in parts:
        if "table2" in part:
            info["table2"], info["acceptance"] = part["table2"], part["acceptance"]
    info["total_seconds"] = max(part["total_seconds"] for part in parts)
    info["load_average_at_end"] = max(
        (part["load_average_at_end"] for part in parts), key=lambda v: v[0] if v else 0
    )
    info["command"] = command
    info["merged_from"] = [
        {"dir": str(p), "command": part["command"]} for p, part in zip(paths, parts, strict=True)
    ]
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(info)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(_jsonable(info), indent=2) + "\n")
    _say(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes for CI, no JAX (< 60 s)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX peers")
    p.add_argument("--no-table2", action="store_true", help="skip Table 2 (the MLP step)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    p.add_argument(
        "--only",
        help="comma-separated LIBRARY:SAMPLER contenders to run (e.g. ebmcmc:ChEES); the "
        "others' rows say 'not run'",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="directory for results.md and results.json (default: benchmarks/results)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="combine earlier runs' results.json (made with --targets) into --out; runs nothing",
    )
    args = p.parse_args(argv)
    command = " ".join(["benchmarks/samplers.py", *(sys.argv[1:] if argv is None else argv)])
    if args.merge:
        return merge(args.merge, args.out, command)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    jax = not (args.no_jax or args.smoke)

    info: dict[str, Any] = {
        "mode": mode,
        "seed": args.seed,
        "command": command,
        "machine": machine(),
        "jax_versions": _jax_versions() if jax else None,
    }
    m = info["machine"]
    _say(
        f"ebmcmc sampler benchmark ({mode}): torch {m['torch']}, Pyro {m['pyro']}, torchebm "
        f"{m['torchebm']}, {m['torch_threads']} thread, JAX peers {'on' if jax else 'off'}, "
        f"load average {m['load_average_at_start']}"
    )
    t0 = time.perf_counter()
    only = set(args.only.split(",")) if args.only else None
    known = {f"{lib}:{name}" for lib, name in CONTENDERS}
    if only and only - known:
        p.error(f"unknown contenders {sorted(only - known)}; known: {', '.join(sorted(known))}")
    info["tables"] = [run_target(t, sizes.targets[t], sizes, args.seed, jax, only) for t in targets]
    info["goals"] = goals(info["tables"])
    if not args.no_table2:
        info["table2"] = table2(sizes, args.seed)
        info["acceptance"] = mlp_acceptance(info["table2"])
    info["total_seconds"] = time.perf_counter() - t0
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["sizes"] = {t: sizes.targets[t].__dict__ for t in targets}

    md = markdown(info)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(_jsonable(info), indent=2) + "\n")
    _say("\n" + md)
    _say(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
