"""Estimate a normalizing constant with AIS, and bracket it with BDMC.

``ebmcmc.ais.ais`` anneals particles from a tractable base (a wide Gaussian with known
``log Z_0``) to an unnormalized target and returns ``log Z`` with a standard error; it is a
stochastic *lower* bound. ``ebmcmc.ais.bdmc`` also runs the chain in reverse from exact target
samples, which gives a stochastic *upper* bound: the two sandwich the truth, and the gap
between them says how far the annealing is from converged, without knowing the answer.

This script

1. estimates ``log Z`` of an unnormalized 2-D two-mode mixture (``E = -log p + 3.7``, so
   ``log Z = -3.7``) with MALA- and HMC-based AIS;
2. runs BDMC on a 20-D Gaussian with a dense covariance (exact ``log Z``) for a growing number
   of temperatures, several independent replicates at once (as condition dimensions of the
   particles), and plots the sandwich closing on the truth, to ``OUT/ais_logz.png``.

Run::

    python examples/ais_logz.py                     # ~1 minute on 2 CPU cores
    python examples/ais_logz.py --smoke --out /tmp/ais    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

from ebmcmc.ais import ais, bdmc  # noqa: E402
from ebmcmc.kernels import HMC, MALA  # noqa: E402
from ebmcmc.targets import Gaussian, GaussianMixture  # noqa: E402

DT = torch.float64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/ais_logz", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for CI (a few seconds)")
    return p.parse_args(argv)


def mixture_log_z(seed: int, particles: int, num_temperatures: int) -> None:
    mix = GaussianMixture(
        torch.tensor([[-4.0, 1.0], [3.0, -2.0]], dtype=DT),
        torch.tensor([[[1.0, 0.3], [0.3, 0.5]], [[0.6, -0.2], [-0.2, 1.2]]], dtype=DT),
        torch.tensor([0.25, 0.75], dtype=DT),
    )

    def energy(x):  # unnormalized: Z = exp(-3.7)
        return mix(x) + 3.7

    base = Gaussian(torch.zeros(2, dtype=DT), 9 * torch.eye(2, dtype=DT))  # covers both modes
    print(
        f"=== log Z of a 2-D two-mode mixture (exact -3.7), {particles} particles, "
        f"{num_temperatures} temperatures"
    )
    for name, kernel in (("MALA", MALA(0.1)), ("HMC", HMC(0.1, 5))):
        t0 = time.perf_counter()
        r = ais(
            energy,
            base,
            kernel,
            particles,
            num_temperatures=num_temperatures,
            generator=seed,
            progress=False,
        )
        z = (float(r.log_z) + 3.7) / float(r.log_z_se)
        print(
            f"  {name:<5} log Z = {float(r.log_z):8.4f} ± {float(r.log_z_se):.4f}  "
            f"(z = {z:+.2f}, ESS {float(r.ess):6.1f}, {r.num_energy_evals} evaluations "
            f"per particle, {time.perf_counter() - t0:.1f} s)"
        )


def bdmc_sweep(seed: int, particles: int, reps: int, ladder: list[int]) -> dict:
    """BDMC at each number of temperatures, ``reps`` independent replicates in one call each
    (the replicates are condition dimensions of the particles: ``(particles, reps, 20)``)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20, 20, generator=g, dtype=DT)
    target = Gaussian(torch.randn(20, generator=g, dtype=DT), a @ a.T / 20 + 0.5 * torch.eye(20))
    base = Gaussian(torch.zeros(20, dtype=DT), 4 * torch.eye(20, dtype=DT))
    exact = target.sample(particles * reps, generator=torch.Generator().manual_seed(seed))
    exact = exact.reshape(particles, reps, 20)
    print(
        f"\n=== BDMC on a 20-D Gaussian (exact log Z = {target.log_z:.4f}), {particles} "
        f"particles each way, mean ± standard error over {reps} independent replicates"
    )
    print(f"  {'temps':>5} {'lower':>9} {'±':>6} {'upper':>9} {'±':>6} {'gap':>7} {'evals':>6}")
    res = {"k": [], "lower": [], "lower_se": [], "upper": [], "upper_se": [], "gap": []}
    for k in ladder:
        t0 = time.perf_counter()
        r = bdmc(
            target, base, MALA(0.1), exact, num_temperatures=k, generator=seed + k, progress=False
        )
        lo, up = r.lower.log_z, r.upper.log_z  # (reps,)
        res["k"].append(k)
        res["lower"].append(float(lo.mean()))
        res["lower_se"].append(float(lo.std() / reps**0.5))
        res["upper"].append(float(up.mean()))
        res["upper_se"].append(float(up.std() / reps**0.5))
        res["gap"].append(float(r.gap.mean()))
        print(
            f"  {k:>5} {res['lower'][-1]:9.4f} {res['lower_se'][-1]:6.3f} "
            f"{res['upper'][-1]:9.4f} {res['upper_se'][-1]:6.3f} {res['gap'][-1]:7.3f} "
            f"{r.lower.num_energy_evals:>6}  ({time.perf_counter() - t0:.1f} s)"
        )
    res["truth"] = target.log_z
    return res


def plot(res: dict, path: Path) -> None:
    k = res["k"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.axhline(res["truth"], color="k", lw=1, ls="--", label=f"exact log Z = {res['truth']:.3f}")
    ax.fill_between(k, res["lower"], res["upper"], color="C0", alpha=0.15, label="BDMC gap")
    ax.errorbar(
        k,
        res["lower"],
        yerr=[2 * s for s in res["lower_se"]],
        marker="o",
        capsize=3,
        color="C0",
        label="forward AIS (lower bound)",
    )
    ax.errorbar(
        k,
        res["upper"],
        yerr=[2 * s for s in res["upper_se"]],
        marker="s",
        capsize=3,
        color="C3",
        label="reverse AIS (upper bound)",
    )
    ax.set_xscale("log")
    ax.set_xticks(k, [str(v) for v in k])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("number of temperatures")
    ax.set_ylabel("log Z estimate (mean ± 2 se over replicates)")
    ax.set_title("BDMC sandwich, 20-D Gaussian, MALA transitions")
    lows = [m - 2 * s for m, s in zip(res["lower"], res["lower_se"], strict=True)]
    highs = [m + 2 * s for m, s in zip(res["upper"], res["upper_se"], strict=True)]
    pad = 0.05 * (max(highs) - min(lows))
    ax.set_ylim(min(lows) - pad, max(highs) + pad)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        mixture_log_z(args.seed, particles=128, num_temperatures=30)
        res = bdmc_sweep(args.seed, particles=32, reps=4, ladder=[3, 10, 30])
    else:
        mixture_log_z(args.seed, particles=1024, num_temperatures=200)
        res = bdmc_sweep(args.seed, particles=128, reps=8, ladder=[3, 10, 30, 100, 300, 1000])
    path = out / "ais_logz.png"
    plot(res, path)
    print(f"\nwrote {path}")
    return res


if __name__ == "__main__":
    main()
