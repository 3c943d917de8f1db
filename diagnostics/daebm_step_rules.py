"""DAEBM's per-level step sizes: the paper's band rule against dual averaging, measured.

:class:`~ebmcmc.estimators.DiffusionAssistedEBM` adapts one MALA step size per level while the
model trains (:class:`~ebmcmc.adaptation.LevelStepAdaptation`). Two rules, each with two
window lengths:

* ``band/100``: the paper's rule (x 1.1 on ``epsilon`` above acceptance 0.8, / 1.2 below 0.6,
  every 100 iterations); ``band/10``: the same every 10 iterations;
* ``da/1``: dual averaging per level towards acceptance 0.7, every iteration; ``da/10``: every
  10 iterations.

Two settings:

* **exact**: the estimator's own buffer and transitions (no training) on the exact joint
  energy of Gaussian data ``N(1, 0.5^2 I)`` in 64 dimensions diffused by
  ``DAEBMSchedule(6, 1e-2, 0.3)`` (``E(x, t) = -log q_t(x)``, every level's marginal a
  Gaussian), buffer 512, batch 128, K = 20, 1,000 iterations, Metropolis on from the start,
  every level's step starting at ``1e-5`` (far too small) or ``1`` (far too large);
* **rings**: training on the four rings (``toy_setup("daebm")`` with a 64-wide, 2-layer
  network, K = 20, 2,000-entry buffer), 1,500 iterations, Metropolis from iteration 200,
  from the paper's initial steps ``epsilon_t = 0.1 sigma_t``.

Figures per run: ``settle``, the iteration (median over levels) at which a level's acceptance
averaged over 20 iterations first enters [0.6, 0.8]; ``in_band``, the fraction of (level,
iteration) pairs in the second half of the run whose 20-iteration acceptance lies in the band;
and for the rings, the level-0 model's AUROC of held-out ring points against uniform points
on [-5, 5]^2 and the level-0 probability mass (normalised on that square) within 0.15 of a
ring (a flat model: 0.19).

Usage::

    .venv/bin/python diagnostics/daebm_step_rules.py                   # ~10 min, 1 core
    .venv/bin/python diagnostics/daebm_step_rules.py --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import toy_setup
from ebmcmc.diffusion import DAEBMSchedule
from ebmcmc.estimators import DiffusionAssistedEBM
from ebmcmc.evaluation import auroc, model_log_prob_on_grid
from ebmcmc.train import Trainer

RULES = {"band/100": ("band", 100), "band/10": ("band", 10), "da/1": ("dual_averaging", 1),
         "da/10": ("dual_averaging", 10)}  # fmt: skip
BAND = (0.6, 0.8)


class GaussianJoint(torch.nn.Module):
    """``E(x, t) = -log q_t(x)`` for data ``N(m, s^2 I)`` diffused by ``schedule``."""

    def __init__(self, schedule, m: float, s: float, dim: int):
        super().__init__()
        a, b = schedule.signal_bar, schedule.sigma_bar
        self.mu = a * m
        self.var = a**2 * s**2 + b**2
        self.dim = dim

    def forward(self, x, t):
        mu, var = self.mu.to(x)[t], self.var.to(x)[t]
        sq = ((x - mu[:, None]) ** 2).sum(-1)
        return 0.5 * sq / var + 0.5 * self.dim * torch.log(2 * math.pi * var)


def _figures(acc: torch.Tensor, window: int = 20) -> dict:
    """``acc``: (iterations, L) per-iteration acceptance (NaN where no move)."""
    n, L = acc.shape
    window = min(window, n)
    filled = torch.nan_to_num(acc, nan=0.0)
    seen = torch.isfinite(acc).double()
    k = torch.ones(window, dtype=torch.float64)
    num = torch.stack([torch.conv1d(filled[:, t].view(1, 1, -1), k.view(1, 1, -1)).flatten()
                       for t in range(L)], 1)  # fmt: skip
    den = torch.stack([torch.conv1d(seen[:, t].view(1, 1, -1), k.view(1, 1, -1)).flatten()
                       for t in range(L)], 1)  # fmt: skip
    smooth = num / den  # (n - window + 1, L)
    inside = (smooth >= BAND[0]) & (smooth <= BAND[1])
    first = []
    for t in range(L):
        hit = torch.nonzero(inside[:, t]).flatten()
        first.append(int(hit[0]) + window if hit.numel() else n)
    half = inside[inside.shape[0] // 2 :]
    return {
        "settle": float(torch.tensor(first, dtype=torch.float64).median()),
        "in_band": float(half.double().mean()),
        "final_accept": [round(float(v), 3) for v in smooth[-1]],
    }


def exact_run(rule: str, every: int, start: float, iters: int, seed: int, k: int) -> dict:
    sched = DAEBMSchedule(6, 1e-2, 0.3)
    model = GaussianJoint(sched, 1.0, 0.5, 64)
    est = DiffusionAssistedEBM(sched, num_mcmc_steps=k, buffer_size=512, step_size=start,
                               metropolis_after=0, adapt=rule, adapt_every=every)  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    like = torch.zeros(128, 64, dtype=torch.float64)
    acc = []
    for _ in range(iters):
        _, _, info = est.negatives(model, like, g)
        acc.append(info.level_accept)
        est.iteration += 1
    out = _figures(torch.stack(acc))
    out["step_sizes"] = [float(f"{v:.3g}") for v in est.step_sizes]
    return out


def _ring_mass(energy, width: float = 0.15) -> float:
    with torch.no_grad():
        grid = model_log_prob_on_grid(energy, 5.0, 200, dtype=torch.float32)
    xs = torch.linspace(-5, 5, 201, dtype=torch.float64)[:-1] + 0.025
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    r = torch.sqrt(X**2 + Y**2)
    near = ((r - r.round()).abs() < width) & (r.round() >= 1) & (r.round() <= 4)
    p = grid.log_prob.exp() * (10 / 200) ** 2
    return float(p[near].sum())


def rings_run(rule: str, every: int, iters: int, seed: int, smoke: bool) -> dict:
    s = toy_setup("daebm", hidden=16 if smoke else 64, layers=2,
                  num_langevin_steps=3 if smoke else 20, fourier_features=32,
                  buffer_size=2000, seed=seed)  # fmt: skip
    old = s.estimator
    paper = (0.1 * old.schedule.sigma) ** 2 / 2  # the paper's epsilon_t = 0.1 sigma_t
    paper[0] = paper[1]
    s.estimator = DiffusionAssistedEBM(old.schedule, num_mcmc_steps=old.num_mcmc_steps,
                                       buffer_size=2000, step_size=paper,
                                       metropolis_after=min(200, iters // 2), adapt=rule,
                                       adapt_every=every)  # fmt: skip
    est = s.estimator
    _record_accept(est)
    data = D.toy_dataset("rings", 20000, seed)
    tr = Trainer(s.model, est, data, s.config, seed=seed, progress=False)
    acc = []
    for _ in range(iters):
        on = est.metropolis
        tr.train_step()
        if on:
            acc.append(est._last_level_accept)  # type: ignore[attr-defined]
    out = _figures(torch.stack(acc)) if acc else {}
    g = torch.Generator().manual_seed(seed + 1)
    x_in = D.toy_dataset("rings", 2000, seed + 5)
    x_out = torch.rand(2000, 2, generator=g, dtype=torch.float32) * 10 - 5
    with torch.no_grad():
        out["auroc"] = auroc(-s.energy(x_in), -s.energy(x_out))
    out["ring_mass"] = _ring_mass(lambda x: s.energy(x))
    out["step_sizes"] = [float(f"{v:.3g}") for v in est.step_sizes]
    return out


def _record_accept(est: DiffusionAssistedEBM) -> None:
    """Wrap ``est.negatives`` so that each call's per-level acceptance is kept."""
    inner = est.negatives

    def negatives(model, batch, generator=None):
        x, t, info = inner(model, batch, generator)
        est._last_level_accept = info.level_accept.double()  # type: ignore[attr-defined]
        return x, t, info

    est.negatives = negatives  # type: ignore[method-assign]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("diagnostics/results"))
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact-iters", type=int, default=1000)
    p.add_argument("--rings-iters", type=int, default=1500)
    p.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    p.add_argument("--settings", nargs="+", choices=("exact", "rings"), default=["exact", "rings"])
    p.add_argument("--tag", default="", help="suffix of the output files")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.exact_iters, args.rings_iters = 4, 4
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    todo = {k: RULES[k] for k in args.rules}
    for name, (rule, every) in todo.items() if "exact" in args.settings else ():
        for start in (1e-5, 1.0):
            t0 = time.monotonic()
            r = exact_run(rule, every, start, args.exact_iters, args.seed, 2 if args.smoke else 20)
            rows.append({"setting": f"exact, start {start:g}", "rule": name, "seed": args.seed, **r,
                         "seconds": round(time.monotonic() - t0, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    for name, (rule, every) in todo.items() if "rings" in args.settings else ():
        t0 = time.monotonic()
        r = rings_run(rule, every, args.rings_iters, args.seed, args.smoke)
        rows.append({"setting": "rings", "rule": name, "seed": args.seed, **r,
                     "seconds": round(time.monotonic() - t0, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (args.out / f"daebm_step_rules{args.tag}.json").write_text(json.dumps(rows, indent=1) + "\n")
    cols = ["setting", "rule", "seed", "settle", "in_band", "auroc", "ring_mass", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get(c, "") for c in cols]
        lines.append("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c)
                                       for c in cells) + " |")  # fmt: skip
    (args.out / f"daebm_step_rules{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"rows": rows}


if __name__ == "__main__":
    main()
