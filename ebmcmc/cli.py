"""The ``ebmcmc`` command line.

``ebmcmc demo`` runs the project's main job: sample the reference targets with adapted kernels
and compare each estimate with the exact answer, in units of its Monte Carlo standard error.

Example:
    >>> from ebmcmc.cli import build_parser
    >>> build_parser().parse_args(["demo", "--out", "/tmp/x"]).command
    'demo'
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "demo"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ebmcmc`` command."""
    p = argparse.ArgumentParser(
        prog="ebmcmc",
        description="ebmcmc: energy-based models and the MCMC that trains and samples them.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser(
        "demo",
        help="sample the reference targets and report diagnostics against exact answers",
        description=(
            "Sample each reference target (correlated Gaussian, banana, two-mode mixture, "
            "50-D ill-conditioned Gaussian) with adapted MALA and HMC on many chains, then "
            "print and write a table of mean errors in MCSE units, R-hat and ESS."
        ),
    )
    d.add_argument(
        "--out", default="out/demo", help="directory for the report (default: %(default)s)"
    )
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.add_argument("--chains", type=int, default=256, help="chains per run (default: %(default)s)")
    d.add_argument("--draws", type=int, default=1000, help="draws per chain (default: %(default)s)")
    d.add_argument("--smoke", action="store_true", help="a tiny run for CI")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g = sub.add_parser(
        "diagnose",
        help="write a convergence report (HTML + Markdown) for a saved trace",
        description=(
            "Read a trace saved with Trace.save (NetCDF) and write report.html (self-contained) "
            "and report.md (with PNGs) to --out: R-hat, ESS, divergences, acceptance, BFMI, "
            "the summary table and ArviZ's trace/rank/ESS/autocorrelation/energy plots."
        ),
    )
    g.add_argument("trace", help="path of a trace file written by ebmcmc.Trace.save")
    g.add_argument("--out", default="out/diagnose", help="output directory (default: %(default)s)")
    g.add_argument("--title", default=None, help="report title")
    g.add_argument("--max-coords", type=int, default=4, help="coordinates to plot (default: 4)")
    return p


def demo(
    out: str | Path, seed: int = 0, chains: int = 256, draws: int = 1000, progress: bool = True
) -> Path:
    """Sample the reference targets, print the comparison and write ``summary.md``.

    Returns:
        The path of the written Markdown report.
    """
    import numpy as np
    import torch

    from . import sample
    from ._files import atomic_write
    from .diagnostics import report, summary
    from .kernels import HMC, MALA
    from .targets import Banana, Gaussian, GaussianMixture

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = {
        "gaussian-2d (rho=0.9)": Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]])),
        "banana": Banana(),
        "mixture (0.3/0.7)": GaussianMixture(
            torch.tensor([[-1.5, 0.0], [1.5, 0.0]]), 0.5 * torch.eye(2), torch.tensor([0.3, 0.7])
        ),
        "gaussian-50d (cond 100)": Gaussian.ill_conditioned(
            50, 100.0, torch.Generator().manual_seed(seed)
        ),
    }
    lines = [
        "# ebmcmc demo: reference targets against exact answers",
        "",
        f"{chains} chains x {draws} draws after {draws} warm-up steps, seed {seed}. "
        "`max |z|` is the largest |estimate - truth| / MCSE over coordinates (mean and "
        "variance); below 4 is consistent with a correct sampler.",
        "",
        "| target | kernel | max z (mean) | max z (var) | max R-hat | min ESS bulk | "
        "accept | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print(lines[2])
    banana_trace = None
    for name, target in targets.items():
        d = target.event_shape[0]
        for kernel in (MALA(step_size=0.1), HMC(step_size=0.1, num_steps=16)):
            g = torch.Generator().manual_seed(seed)
            x0 = torch.randn(chains, d, generator=g, dtype=torch.float64)
            t0 = time.perf_counter()
            tr = sample(
                target,
                kernel,
                x0,
                num_samples=draws,
                num_warmup=draws,
                generator=g,
                progress=progress,
            )
            secs = time.perf_counter() - t0
            x = tr.draws.numpy()
            s1 = summary({"x": x})
            s2 = summary({"x2": (x - target.mean.numpy()) ** 2})
            z_mean = np.abs((s1["mean"] - target.mean.numpy()) / s1["mcse_mean"]).max()
            z_var = np.abs((s2["mean"] - np.diag(target.cov.numpy())) / s2["mcse_mean"]).max()
            row = (
                f"| {name} | {type(kernel).__name__} | {z_mean:.2f} | {z_var:.2f} | "
                f"{s1['r_hat'].max():.4f} | {s1['ess_bulk'].min():.0f} | "
                f"{tr.stats['accept_prob'].mean():.3f} | {secs:.1f} |"
            )
            lines.append(row)
            print(row, flush=True)
            if name == "banana" and isinstance(kernel, HMC):
                banana_trace = tr
    path = atomic_write(
        out / "summary.md", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n")
    )
    print(f"summary written to {path}")
    banana_trace.save(out / "banana-hmc.nc")
    html = report(banana_trace, out / "banana-hmc", title="Banana, HMC with adaptation")
    print(f"convergence report for the banana (HMC) written to {html}")
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ebmcmc`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        import torch

        # The demo's problems are small: on small tensors, intra-op threads cost more in
        # synchronisation than they save (100x on a loaded 2-core machine).
        torch.set_num_threads(1)
        if args.smoke:
            args.chains, args.draws = 16, 100
        try:
            demo(args.out, args.seed, args.chains, args.draws, progress=not args.no_progress)
        except (ValueError, OSError) as err:
            print(f"ebmcmc demo: error: {err}", file=sys.stderr)
            return 1
    if args.command == "diagnose":
        from .diagnostics import report

        try:
            path = report(args.trace, args.out, title=args.title, max_coords=args.max_coords)
        except (ValueError, OSError) as err:
            print(f"ebmcmc diagnose: error: {err}", file=sys.stderr)
            return 1
        print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
