"""Compose and swap samplers on one target with ebmcmc.

Kernels in ebmcmc are frozen dataclasses of hyperparameters with ``init``/``step``; energies are
plain batched callables. So changing the sampler is changing one object, and changing the
distribution is composing energies. This script walks through:

1. the same two targets (a banana and a two-mode Gaussian mixture) sampled with each of
   ``Langevin``, ``MALA``, ``HMC`` and ``RandomWalk``, one summary table per kernel next to the
   exact mean;
2. per-chain hyperparameters: one MALA step size per chain, acceptance against step size;
3. a tempered energy (``ebmcmc.energy.tempered``) with one inverse temperature per row of a
   two-dimensional batch of chains, checked against quadrature;
4. a product of experts (``ebmcmc.energy.SumOf``) of the mixture and a Gaussian expert, whose
   exact answer is again a Gaussian mixture;
5. a custom ``trace_fn`` that records per-chain summaries instead of positions;
6. save / load / resume, checked bit for bit against one uninterrupted run;

and writes a scatter plot of the draws to ``OUT/compose_samplers.png``.

Run::

    python examples/compose_samplers.py                 # about a minute on 2 CPU cores
    python examples/compose_samplers.py --smoke --out /tmp/cs   # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import ebmcmc
from ebmcmc.diagnostics import summary
from ebmcmc.energy import SumOf, Tempered, from_distribution
from ebmcmc.kernels import HMC, MALA, Kernel, Langevin, RandomWalk
from ebmcmc.targets import Banana, GaussianMixture

DTYPE = torch.float64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/compose_samplers", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for CI (a few seconds)")
    return p.parse_args(argv)


def banner(title: str) -> None:
    print(f"\n=== {title}")


def report(name: str, trace: ebmcmc.Trace, exact: dict[str, np.ndarray], seconds: float) -> None:
    """Print ebmcmc's summary of ``trace`` with the exact means alongside."""
    table = summary(trace)
    table.insert(0, "exact", np.concatenate([np.ravel(exact[k]) for k in trace.variables]))
    # error in units of the Monte Carlo standard error: of order 1 for a correct, converged sampler
    table.insert(2, "z", (table["mean"] - table["exact"]) / table["mcse_mean"])
    acc = float(trace.stats["accept_prob"].mean())
    div = int(trace.stats["diverging"].sum())
    print(f"--- {name}: accept {acc:.3f}, divergent draws {div}, {seconds:.1f} s")
    print(table.to_string(float_format=lambda v: f"{v:9.3f}"))
    r_hat, z = table["r_hat"].max(), table["z"].abs().max()
    if r_hat > 1.01:
        # r_hat - 1 is about 1 / (ESS per chain) even for chains that are fine, so 1.01 also
        # asks for ~100 effective draws per chain
        per_chain = table["ess_bulk"].min() / trace.num_chains
        print(
            f"    ! max r_hat {r_hat:.3f} > 1.01 with {per_chain:.0f} effective draws per chain: "
            "the chains disagree or are too short to tell"
        )
    if z > 4:
        print(f"    ! max |z| {z:.1f} > 4: the mean is off by more than its MCSE explains")


def run(energy, kernel: Kernel, x0: torch.Tensor, size: dict, seed: int, **kwargs):
    """``ebmcmc.sample`` with this script's sizes; returns the trace and the seconds taken."""
    t0 = time.perf_counter()
    trace = ebmcmc.sample(
        energy,
        kernel,
        x0,
        num_samples=size["draws"],
        num_warmup=kwargs.pop("num_warmup", size["warmup"]),
        generator=seed,
        progress=False,
        **kwargs,
    )
    return trace, time.perf_counter() - t0


def product_exact(mix: GaussianMixture, mean: torch.Tensor, cov: torch.Tensor) -> GaussianMixture:
    """The exact normalized product ``mix(x) * N(x; mean, cov)``: again a Gaussian mixture.

    ``w_k N(m_k, C_k) N(m, C) = w_k N(m_k; m, C_k + C) N(m'_k, C'_k)`` with
    ``C'_k = (C_k^-1 + C^-1)^-1`` and ``m'_k = C'_k (C_k^-1 m_k + C^-1 m)``.
    """
    prec = torch.linalg.inv(cov)
    means, covs, log_w = [], [], []
    for w, m_k, c_k in zip(mix.weights, mix.means, mix.covs, strict=True):
        c_new = torch.linalg.inv(torch.linalg.inv(c_k) + prec)
        means.append(c_new @ (torch.linalg.solve(c_k, m_k) + prec @ mean))
        covs.append(c_new)
        overlap = torch.distributions.MultivariateNormal(mean, c_k + cov).log_prob(m_k)
        log_w.append(torch.log(w) + overlap)
    weights = torch.softmax(torch.stack(log_w), 0)
    return GaussianMixture(torch.stack(means), torch.stack(covs), weights)


def tempered_p_right(mix: GaussianMixture, beta: float, lim: float = 12.0, n: int = 801) -> float:
    """``P(x1 > 0)`` under ``p(x)^beta`` (normalized), by quadrature on a grid."""
    u = torch.linspace(-lim, lim, n, dtype=DTYPE)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1)  # (n, n, 2): x1 along dim 0
    logp = -beta * mix(grid)
    p = torch.softmax(logp.reshape(-1), 0).reshape(n, n)
    return float(p[u > 0].sum() + 0.5 * p[u == 0].sum())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Small tensors (a few hundred chains in 2-D) are latency-bound: on a 2-core machine extra
    # intra-op threads only add synchronisation overhead, so one thread is fastest here.
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = (
        {"chains": 12, "warmup": 40, "draws": 40, "leapfrog": 4, "step_sizes": 6}
        if args.smoke
        else {"chains": 128, "warmup": 500, "draws": 500, "leapfrog": 8, "step_sizes": 16}
    )
    seed = args.seed
    gen = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ 1. swap kernels
    # Both targets are energies (callables (*batch, 2) -> batch) that know their exact answers.
    targets = {
        "banana": Banana(),
        "mixture": GaussianMixture(
            torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=DTYPE),
            0.5 * torch.eye(2, dtype=DTYPE),
            torch.tensor([0.3, 0.7], dtype=DTYPE),
        ),
    }
    # Kernels hold hyperparameters only. Warm-up adaptation (on by default) tunes MALA, HMC and
    # RandomWalk towards their target acceptance; unadjusted Langevin has none and keeps its
    # step size, which sets its O(eps) bias (and must stay below ~2 / curvature: the banana's
    # curvature grows like 60 x1^2 in its arms).
    kernels = {
        "Langevin": Langevin(step_size=0.002),
        "MALA": MALA(step_size=0.05),
        "HMC": HMC(step_size=0.1, num_leapfrog_steps=size["leapfrog"]),
        "RandomWalk": RandomWalk(step_size=0.5),
    }
    # overdispersed starting points, one chain per row: (chains, 2)
    x0 = 1.5 * torch.randn(size["chains"], 2, generator=gen, dtype=DTYPE)
    draws: dict[tuple[str, str], np.ndarray] = {}
    for tname, target in targets.items():
        banner(f"target {tname}: exact mean {np.round(target.mean.numpy(), 3).tolist()}")
        for kname, kernel in kernels.items():
            trace, secs = run(target, kernel, x0, size, seed)
            report(f"{kname} on {tname}", trace, {"x": target.mean.numpy()}, secs)
            draws[tname, kname] = trace.draws.reshape(-1, 2).numpy()
    print(
        "\nChains rarely cross the mixture's energy barrier, so how often each mode is visited "
        "depends on where they started: r_hat flags this even when a mean looks right. "
        "Tempering (below) flattens the barrier."
    )

    # ------------------------------------------------------------------ 2. per-chain step sizes
    banner("per-chain step sizes: MALA on the banana, a (step sizes, chains) batch")
    n_steps, per_step = size["step_sizes"], size["chains"] // size["step_sizes"]
    # a batch of shape (n_steps, per_step): the step size (n_steps, 1) broadcasts against it
    steps = torch.logspace(-3, -0.5, n_steps, dtype=DTYPE)
    # start from exact draws so that only the step size differs between rows
    x_exact = targets["banana"].sample(n_steps * per_step, generator=gen)
    x_exact = x_exact.reshape(n_steps, per_step, 2)
    # adaptation=None keeps our step sizes (the warm-up steps still run, as burn-in)
    trace, secs = run(
        targets["banana"], MALA(step_size=steps[:, None]), x_exact, size, seed, adaptation=None
    )
    # the trace flattens the batch into its chain axis; trace.batch_shape remembers it
    acc_per_step = trace.stats["accept_prob"].reshape(*trace.batch_shape, -1).mean((1, 2))
    print(f"  batch shape {trace.batch_shape} -> {trace.num_chains} chains ({secs:.1f} s)")
    for i in np.linspace(0, n_steps - 1, 6).round().astype(int):
        print(f"  step size {float(steps[i]):8.4f}  acceptance {float(acc_per_step[i]):.3f}")

    # ------------------------------------------------------------------ 3. tempering
    banner("tempered mixture: beta * E(x) with one beta per row of a (betas, chains) batch")
    mixture = targets["mixture"]
    betas = torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=DTYPE)
    m = size["chains"] // 2
    hot = Tempered(mixture, betas[:, None])  # beta broadcasts against the batch (4, m)
    xt0 = 2.0 * torch.randn(len(betas), m, 2, generator=gen, dtype=DTYPE)
    # one adapted step size per chain: each temperature needs its own
    adapt = ebmcmc.WindowAdaptation(per_chain=True)
    trace, secs = run(hot, MALA(step_size=0.1), xt0, size, seed, adaptation=adapt)
    x_t = trace.draws.reshape(len(betas), m, -1, 2)  # the driver flattens (4, m) into chains
    right = (x_t[..., 0] > 0).to(DTYPE)
    switches = (right[..., 1:] != right[..., :-1]).sum(-1).to(DTYPE)  # (4, m) mode changes
    print(f"  {'beta':>5} {'P(x1>0)':>8} {'exact':>8} {'switches/chain':>15}   ({secs:.1f} s)")
    for j, beta in enumerate(betas.tolist()):
        exact = tempered_p_right(mixture, beta)
        print(
            f"  {beta:5.2f} {float(right[j].mean()):8.3f} {exact:8.3f} "
            f"{float(switches[j].mean()):15.2f}"
        )
    tempered_draws = {b: x_t[j].reshape(-1, 2).numpy() for j, b in enumerate(betas.tolist())}

    # ------------------------------------------------------------------ 4. product of experts
    banner("product of experts: SumOf(mixture, Gaussian expert) = mixture(x) * N(x; m, C)")
    e_mean = torch.tensor([1.0, 1.5], dtype=DTYPE)
    e_cov = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=DTYPE)
    expert = from_distribution(torch.distributions.MultivariateNormal(e_mean, e_cov))
    poe = SumOf(mixture, expert)  # energies add: densities multiply
    poe_exact = product_exact(mixture, e_mean, e_cov)
    trace, secs = run(poe, MALA(step_size=0.1), x0, size, seed)
    report("MALA on the product", trace, {"x": poe_exact.mean.numpy()}, secs)
    poe_draws = trace.draws.reshape(-1, 2).numpy()

    # ------------------------------------------------------------------ 5. custom trace_fn
    banner("custom trace_fn: record summaries, not positions (as one would for images)")

    def summaries(state, info):
        # each value must have the batch shape as its leading dimensions: here exactly (chains,)
        x = state.position
        return {"x1": x[..., 0], "sq_norm": (x**2).sum(-1), "energy": state.energy}

    hmc = HMC(step_size=0.1, num_leapfrog_steps=size["leapfrog"])
    trace, secs = run(targets["banana"], hmc, x0, size, seed, trace_fn=summaries)
    # banana: x1 ~ N(1, 1), x2 | x1 ~ N(x1^2, 0.1); the energy is half a chi-square with 2 dof
    exact = {"x1": 1.0, "sq_norm": 2.0 + (6.1 + 4.0), "energy": 1.0}
    print(f"  recorded variables: {sorted(trace.variables)}; no 'x' was kept")
    # same seed and kernel as "HMC on banana" above, so x1 repeats its x[0] row exactly
    report("HMC on the banana, summaries", trace, exact, secs)

    # ------------------------------------------------------------------ 6. save and resume
    banner("save / resume: two halves with a file in between == one run, bit for bit")
    banana, kernel = targets["banana"], MALA(step_size=0.05)
    half = {**size, "draws": size["draws"] // 2}
    first, _ = run(banana, kernel, x0, half, seed)
    path = first.save(out / "banana_first_half.nc")  # NetCDF: draws, stats, state, kernel, RNG
    loaded = ebmcmc.Trace.load(path)
    # init=trace continues from the final state with the saved generator state; the adapted
    # kernel travels with the trace, and warm-up is not repeated
    second = ebmcmc.sample(
        banana, loaded.kernel, loaded, size["draws"] - half["draws"], progress=False
    )
    resumed = ebmcmc.Trace.concatenate([loaded, second])
    whole, _ = run(banana, kernel, x0, size, seed)
    same = torch.equal(resumed.draws, whole.draws) and torch.equal(
        resumed.stats["accept_prob"], whole.stats["accept_prob"]
    )
    print(f"  saved {path} ({path.stat().st_size / 1024:.0f} KiB); {resumed}")
    print(f"  resumed run equals the uninterrupted one bit for bit: {same}")
    if not same:
        raise SystemExit("resume did not reproduce the uninterrupted run")

    # ------------------------------------------------------------------ plot
    png = plot(
        out,
        targets,
        kernels,
        draws,
        tempered_draws,
        poe_draws,
        poe_exact,
        steps,
        acc_per_step,
        seed,
    )
    print(f"\nwrote {png}")
    return 0


def plot(out, targets, kernels, draws, tempered_draws, poe_draws, poe_exact, steps, acc, seed):
    """Scatter plots: exact and per-kernel draws for each target; the composition results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)

    def thin(pts: np.ndarray, n: int = 3000) -> np.ndarray:
        return pts[rng.permutation(len(pts))[:n]]

    def scatter(ax, pts, title, xlim, ylim, color=None):
        pts = thin(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.35, color=color)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)

    ncol = len(kernels) + 1
    fig, axes = plt.subplots(3, ncol, figsize=(3.2 * ncol, 9.6))
    # fixed margins: constrained_layout would cost seconds per figure on a slow CPU
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.06, top=0.93, wspace=0.3, hspace=0.3)
    limits = {"banana": ((-3, 5), (-2, 14)), "mixture": ((-5, 5), (-3.5, 3.5))}
    for row, (tname, target) in enumerate(targets.items()):
        exact = target.sample(3000, generator=g).numpy()
        scatter(axes[row, 0], exact, f"{tname}: exact", *limits[tname], color="k")
        for ax, kname in zip(axes[row, 1:], kernels, strict=True):
            scatter(ax, draws[tname, kname], f"{tname}: {kname}", *limits[tname])
    bottom = axes[2]
    for ax, beta in zip(bottom[:3], (1.0, 0.25, 0.1), strict=True):
        title = f"tempered mixture, beta = {beta}"
        scatter(ax, tempered_draws[beta], title, (-8, 8), (-6, 6), color="tab:red")
    ax = bottom[3]
    scatter(ax, poe_draws, "product of experts: MALA, exact", (-5, 5), (-3.5, 3.5), "tab:green")
    u = torch.linspace(-5, 5, 200, dtype=DTYPE)
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1)  # (200, 200, 2), x1 along columns
    log_density = poe_exact.log_prob(grid).numpy()
    levels = log_density.max() - np.array([8.0, 6.0, 4.0, 2.0, 1.0])  # log-spaced contours
    ax.contour(
        u.numpy(),
        u.numpy(),
        log_density,
        levels=levels,
        colors="k",
        linewidths=0.8,
        linestyles="solid",
    )
    ax = bottom[4]
    ax.semilogx(steps.numpy(), acc.numpy(), "o-")
    ax.set_xlabel("MALA step size")
    ax.set_ylabel("mean acceptance")
    ax.set_title("banana: per-chain step sizes", fontsize=10)
    ax.set_ylim(0, 1.02)
    fig.suptitle("ebmcmc: the same targets under swapped and composed samplers")
    path = out / "compose_samplers.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
