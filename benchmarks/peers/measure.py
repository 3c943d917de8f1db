"""Run the JAX peers on every benchmark target at the default sizes and tabulate them.

::

    python benchmarks/peers/measure.py                   # all targets x samplers (~20-30 min)
    python benchmarks/peers/measure.py --targets gaussian,banana --samplers blackjax_chees
    python benchmarks/peers/measure.py --extra           # also NUTS at 4 and 1,024 chains on
                                                         # the Gaussian, ChEES with a diagonal
                                                         # metric on gaussian100
    python benchmarks/peers/measure.py --out DIR         # default benchmarks/peers/results/
    python benchmarks/peers/measure.py --jobs '[{"target": "blr", "sampler": "blackjax_chees",
        "chees_mass_matrix": "diagonal"}]' --append      # given jobs, added to the tables

Writes ``jax_peers.json`` (every runner result, without the per-coordinate lists trimmed) and
``jax_peers.md`` (one table row per run) to ``--out``. This is the JAX half of the sampler
benchmark on its own; ``benchmarks/samplers.py`` puts these rows beside ebmcmc's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from client import JaxJobFailed, JaxPeersUnavailable, run_jax_job  # noqa: E402

EXTRA = [
    {"target": "gaussian", "sampler": "blackjax_nuts", "chains": 4},
    {"target": "gaussian", "sampler": "numpyro_nuts", "chains": 4},
    {"target": "gaussian", "sampler": "blackjax_nuts", "chains": 1024},
    {"target": "gaussian", "sampler": "numpyro_nuts", "chains": 1024},
    {"target": "gaussian100", "sampler": "blackjax_chees", "chees_mass_matrix": "diagonal"},
    {"target": "blr", "sampler": "blackjax_chees", "chees_mass_matrix": "diagonal"},
]

HEADER = (
    "| target | sampler | chains | ESS bulk (min) | ESS/CPU-s | compile CPU-s | run CPU-s "
    "| grads | lock-step / useful | R-hat (max) | z mean | z var | correct | notes |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
)


def row(r: dict) -> str:
    j, h, t, g = r["job"], r["headline"], r["timing"], r["gradients"]
    notes = []
    if j.get("chees_mass_matrix"):
        notes.append(f"metric {j['chees_mass_matrix']}")
    if r.get("divergences"):
        notes.append(f"{r['divergences']} divergent")
    notes.append(f"accept {r['acceptance']:.2f}")
    rhat = "n/a" if h["max_r_hat"] is None else f"{h['max_r_hat']:.3f}"
    return (
        f"| {j['target']} | {j['sampler']} | {j['chains']:,} | {h['min_ess_bulk']:,.0f} "
        f"| {h['ess_per_cpu_s']:,.0f} | {t.get('compile_cpu_s', float('nan')):.1f} "
        f"| {t.get('run_cpu_s', t['first_cpu_s']):.2f} | {g['grads_total']:,} "
        f"| {g['lockstep_over_useful']:.2f} | {rhat} | {h['max_z_mean']:.2f} "
        f"| {h['max_z_var']:.2f} | {'yes' if h['correct'] else 'NO'} | {', '.join(notes)} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default=",".join(common.TARGETS))
    ap.add_argument("--samplers", default=",".join(common.SAMPLERS))
    ap.add_argument("--extra", action="store_true", help="also the chain-count variants")
    ap.add_argument("--only-extra", action="store_true", help="only the variants")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (checks that it runs)")
    ap.add_argument("--jobs", help="a JSON list of jobs to run instead of the matrix")
    ap.add_argument("--append", action="store_true", help="add to the existing results")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    jobs = []
    if not args.only_extra:
        jobs = [
            {"target": t, "sampler": s}
            for t in args.targets.split(",")
            for s in args.samplers.split(",")
        ]
    if args.extra or args.only_extra:
        jobs += EXTRA
    if args.jobs:
        jobs = json.loads(args.jobs)
    sizes = common.SMOKE_SIZES if args.smoke else {}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "jax_peers_smoke" if args.smoke else "jax_peers"
    results, lines = [], []
    start = _dt.datetime.now().isoformat(timespec="seconds")
    load0 = os.getloadavg()
    if args.append and (args.out / f"{stem}.json").exists():
        old = json.loads((args.out / f"{stem}.json").read_text())
        results = old["runs"]
        lines = [row(r) for r in results]
        start = old["meta"]["started"]
        load0 = tuple(old["meta"]["load_average_start"])
    for spec in jobs:
        job = {**spec, "dtype": args.dtype, **sizes}
        label = f"{job['target']} / {job['sampler']} / {job.get('chains', 'default')} chains"
        print(f"running {label} ...", flush=True)
        try:
            r = run_jax_job(job)
        except JaxPeersUnavailable as e:
            print(f"JAX peers unavailable, nothing measured: {e}")
            return 2
        except JaxJobFailed as e:
            print(f"  FAILED: {e}", flush=True)
            lines.append(f"| {job['target']} | {job['sampler']} | failed: {e} |")
            continue
        results.append(r)
        lines.append(row(r))
        print("  " + lines[-1], flush=True)
        versions = r["versions"]
        # rewrite after every run, so a long run leaves what it has measured so far
        meta = {
            "started": start,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "load_average_start": load0,
            "load_average_now": os.getloadavg(),
            "versions": versions,
            "xla_flags": r["xla_flags"],
            "sizes": sizes or {"warmup": 500, "draws": 1000},
        }
        (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "runs": results}))
        md = [
            "# JAX peers: measured by benchmarks/peers/measure.py",
            "",
            f"Started {start}; {meta['machine']}; load average {load0[0]:.1f} at the start, "
            f"{meta['load_average_now'][0]:.1f} after the last row; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f"; {args.dtype}; one CPU thread (`{r['xla_flags']}`).",
            "",
            "ESS: ArviZ bulk ESS over all chains, the minimum over coordinates. ESS/CPU-s divides "
            "it by the process CPU time of the second, identical call (warm-up + sampling, no "
            "compilation). z mean / z var: the largest |error| / MCSE over coordinates.",
            "",
            HEADER,
            *lines,
            "",
        ]
        (args.out / f"{stem}.md").write_text("\n".join(md))
    print(f"wrote {args.out / (stem + '.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
