"""AIS log Z accuracy against cost, for MALA- and HMC-based transitions.

For each target with an exact ``log Z`` (a 20-D Gaussian with a dense covariance, a 2-D
two-mode mixture shifted so that ``log Z = -3.7``, and a tilted ring normalized by quadrature)
and each number of temperatures, ``ebmcmc.ais.ais`` runs ``--reps`` independent replicates in
one batched call (replicates are condition dimensions of the particles). Reported per row:

* ``evals``: energy+gradient evaluations per estimate, ``AISResult.num_energy_evals`` times
  the number of particles;
* ``RMSE``: root mean squared error of ``log Z`` over the replicates;
* ``mean bias``: mean signed error (AIS is biased low, by ~``se^2 / 2`` once ``se`` is small);
* ``mean se``: the average reported standard error (calibrated if ``RMSE ~ mean se``);
* ``seconds``: wall-clock time for all replicates.

Run::

    python benchmarks/ais.py                  # ~2 minutes on 2 CPU cores
    python benchmarks/ais.py --smoke          # seconds
    python benchmarks/ais.py --out out/bench  # also writes out/bench/results.md
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from ebmcmc.ais import ais
from ebmcmc.kernels import HMC, MALA
from ebmcmc.targets import Gaussian, GaussianMixture

DT = torch.float64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for CI")
    p.add_argument("--out", default=None, help="directory to write results.md into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--particles", type=int, default=256, help="particles per estimate")
    p.add_argument("--reps", type=int, default=8, help="independent replicates per row")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- targets


def gaussian_20d() -> tuple[Gaussian, Gaussian]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20, 20, generator=g, dtype=DT)
    target = Gaussian(torch.randn(20, generator=g, dtype=DT), a @ a.T / 20 + 0.5 * torch.eye(20))
    return target, Gaussian(torch.zeros(20, dtype=DT), 4 * torch.eye(20, dtype=DT))


MIX = GaussianMixture(
    torch.tensor([[-4.0, 1.0], [3.0, -2.0]], dtype=DT),
    torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]], dtype=DT),
    torch.tensor([0.25, 0.75], dtype=DT),
)


def shifted_mixture(x):
    return MIX(x) + 3.7


def ring(x):
    r = torch.linalg.vector_norm(x, dim=-1)
    return (r - 2.0) ** 2 / (2 * 0.3**2) - 0.6 * x[..., 0] + 0.1 * x[..., 1] ** 2


def ring_log_z(h: float = 0.02) -> float:
    """Riemann sum on [-5, 5]^2 (converged to ~1e-15: the integrand is smooth and negligible
    at the boundary)."""
    g = torch.arange(-5.0, 5.0 + h / 2, h, dtype=DT)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return float(torch.logsumexp(-ring(torch.stack([xx, yy], -1)).flatten(), 0)) + 2 * math.log(h)


def targets() -> dict:
    g20, base20 = gaussian_20d()
    base2 = Gaussian(torch.zeros(2, dtype=DT), 9 * torch.eye(2, dtype=DT))
    return {
        "gaussian-20d": (g20, base20, g20.log_z),
        "mixture-2d": (shifted_mixture, base2, -3.7),
        "ring-2d": (ring, base2, ring_log_z()),
    }


# --------------------------------------------------------------------------- runs


def run_one(energy, base, truth, kernel, num_steps, particles, reps, seed) -> dict:
    g = torch.Generator().manual_seed(seed)
    init = base.sample(particles * reps, generator=g).reshape(particles, reps, -1)
    t0 = time.perf_counter()
    r = ais(
        energy,
        base,
        kernel,
        particles,
        num_temperatures=num_steps,
        generator=g,
        init=init,
        progress=False,
    )
    seconds = time.perf_counter() - t0
    err = r.log_z - truth
    return {
        "evals": r.num_energy_evals * particles,
        "rmse": float(err.pow(2).mean().sqrt()),
        "bias": float(err.mean()),
        "se": float(r.log_z_se.mean()),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    kernels = {"MALA": MALA(0.1), "HMC L=5": HMC(0.1, 5)}
    if args.smoke:
        ladder, particles, reps = (10, 30), 64, 4
        chosen = ["mixture-2d"]
    else:
        ladder, particles, reps = (10, 30, 100, 300), args.particles, args.reps
        chosen = ["gaussian-20d", "mixture-2d", "ring-2d"]
    all_targets = targets()
    load = os.getloadavg()[0]
    print(
        f"{particles} particles, {reps} replicates per row; load average {load:.2f} on "
        f"{os.cpu_count()} cores"
    )
    rows = []
    header = (
        f"{'target':<13} {'kernel':<8} {'temps':>5} {'evals':>10} {'RMSE':>8} "
        f"{'mean bias':>9} {'mean se':>8} {'seconds':>7}"
    )
    print(header)
    for name in chosen:
        energy, base, truth = all_targets[name]
        for kname, kernel in kernels.items():
            for k in ladder:
                res = run_one(energy, base, truth, kernel, k, particles, reps, args.seed)
                res.update(target=name, kernel=kname, temps=k)
                rows.append(res)
                print(
                    f"{name:<13} {kname:<8} {k:>5} {res['evals']:>10,} {res['rmse']:>8.4f} "
                    f"{res['bias']:>9.4f} {res['se']:>8.4f} {res['seconds']:>7.2f}"
                )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        lines = [
            "# AIS: log Z error against energy evaluations",
            "",
            f"{particles} particles per estimate, {reps} independent replicates per row "
            f"(one batched call); sigmoid temperature schedule; step size adapted per "
            f"temperature; load average {load:.2f} on {os.cpu_count()} cores.",
            "",
            "| target | kernel | temperatures | energy evals | RMSE | mean bias | mean se | s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['target']} | {r['kernel']} | {r['temps']} | {r['evals']:,} | "
                f"{r['rmse']:.4f} | {r['bias']:.4f} | {r['se']:.4f} | {r['seconds']:.2f} |"
            )
        (out / "results.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / 'results.md'}")
    return rows


if __name__ == "__main__":
    main()
