"""The ``ebmcmc`` command line.

``ebmcmc demo`` runs the project's main job (:func:`ebmcmc.app.demo.run_demo`): check the samplers
against exact answers, train DRL on a 2-D set, sample it, estimate its log Z by AIS, run a
long-run stability study, and write one report. ``ebmcmc diagnose TRACE`` reports on a saved
trace.

Example:
    >>> from ebmcmc.app.cli import build_parser
    >>> build_parser().parse_args(["demo", "--out", "/tmp/x"]).command
    'demo'
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ebmcmc`` command."""
    p = argparse.ArgumentParser(
        prog="ebmcmc",
        description="ebmcmc: energy-based models and the MCMC that trains and samples them.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser(
        "demo",
        help="train -> sample -> diagnose -> report, in a few minutes on a CPU",
        description=(
            "The main job, in four parts, into one report (OUT/report.html, self-contained, "
            "and OUT/report.md with PNGs): (1) adapted MALA and HMC on four reference targets "
            "(correlated Gaussian, banana, two-mode mixture, 50-D ill-conditioned Gaussian), "
            "each estimate compared with the exact answer in units of its Monte Carlo "
            "standard error, with R-hat and ESS; (2) DRL trained on eight Gaussians, its "
            "samples, level-0 density and KL to the data; (3) AIS for the trained model's "
            "log Z with its standard error, checked against quadrature; (4) a long-run "
            "stability study of the trained model's chains from data and from its samples. "
            "About 4 minutes on 2 CPU cores; --smoke takes seconds."
        ),
    )
    d.add_argument(
        "--out", default="out/demo", help="directory for the report (default: %(default)s)"
    )
    d.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    d.add_argument("--chains", type=int, default=128, help="chains per run (default: %(default)s)")
    d.add_argument("--draws", type=int, default=1000, help="draws per chain (default: %(default)s)")
    d.add_argument(
        "--train-steps", type=int, default=600, help="DRL training steps (default: %(default)s)"
    )
    d.add_argument(
        "--long-run",
        type=int,
        default=3000,
        help="steps of the long-run chains, 100x training's K = 30 (default: %(default)s)",
    )
    d.add_argument("--smoke", action="store_true", help="a tiny run for CI")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g = sub.add_parser(
        "diagnose",
        help="write a convergence report (HTML + Markdown) for a saved trace",
        description=(
            "Read a trace saved with Trace.save (NetCDF) and write report.html (self-contained) "
            "and report.md (with PNGs) to --out: R-hat, ESS, divergences, acceptance, BFMI, "
            "the summary table and trace/rank/ESS/autocorrelation/energy plots (every chain "
            "through summaries, at most 16 drawn one by one)."
        ),
    )
    g.add_argument("trace", help="path of a trace file written by ebmcmc.Trace.save")
    g.add_argument("--out", default="out/diagnose", help="output directory (default: %(default)s)")
    g.add_argument("--title", default=None, help="report title")
    g.add_argument("--max-coords", type=int, default=4, help="coordinates to plot (default: 4)")
    return p


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
        from .demo import run_demo

        try:
            path = run_demo(
                args.out,
                seed=args.seed,
                chains=args.chains,
                draws=args.draws,
                train_steps=args.train_steps,
                long_run_steps=args.long_run,
                smoke=args.smoke,
                progress=not args.no_progress,
            )
        except (ValueError, OSError) as err:
            print(f"ebmcmc demo: error: {err}", file=sys.stderr)
            return 1
        print(f"report written to {path}")
    if args.command == "diagnose":
        from ..diagnostics import report

        try:
            path = report(args.trace, args.out, title=args.title, max_coords=args.max_coords)
        except (ValueError, OSError) as err:
            # one line, whatever the message holds (HDF5's can span several)
            print(f"ebmcmc diagnose: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
        print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
