"""DAEBM beside DRL and PCD on MNIST at equal training wall time: classifier FID of generated
samples, a long MALA run from real test images judged by the stability study, and OOD AUROCs.

Each method is the set-up of :func:`ebmcmc.app.setups.digits_setup` (``"daebm"``, ``"drl"``,
``"pcd"``) with the same network family, a :class:`~ebmcmc.nn.TimeMLP` on the 784 pixels of
width ``--hidden`` (its number of level embeddings is the method's: 51 for DAEBM, 6 for DRL,
1 for PCD), swapped in as ``examples/mnist_drl.py`` and ``examples/mnist_daebm.py`` do. Each
is trained by :class:`ebmcmc.train.Trainer` for ``--minutes`` of wall time on one CPU thread,
one after the other. Then, for each:

* **FID**: ``--n-samples`` generated images (DAEBM: ``--gen-chains`` chains from noise at
  ``t = T``, an image at every visit to ``t = 0`` after ``--burn-in`` transitions, at most
  ``--gen-transitions`` more; DRL: its progressive sampler;
  PCD: Langevin from uniform noise, the set-up's 200 steps) scored by
  :class:`ebmcmc.evaluation.ClassifierFID` against the MNIST test set (the classifier is
  trained once, before any budget, and cached under ``$EBMCMC_CACHE`` or
  ``~/.cache/ebmcmc/classifier_fid/``);
* **OOD**: AUROC of ``--n-ood`` MNIST test images against each set of
  :func:`ebmcmc.datasets.mnist_ood_sets`, with DAEBM's two scores (the marginal
  ``logsumexp_t(-E(x, t))`` and ``-E(x, 0)``) and the others' ``-E(x)`` (DRL: level 0's
  marginal energy, the density its long runs sample);
* **long run**: ``--chains`` real test images in two halves (two starts, for the nested
  R-hat), through MALA on the level-0 energy (DAEBM at its adapted level-0 step; DRL and PCD at
  the step of their own level-0 Langevin sampler) for ``--long-run-steps`` steps, or fewer
  if a timing of 200 steps says they will not fit in ``--long-run-minutes`` (the table says
  how many were run), judged by :func:`ebmcmc.studies.stability`: energy band, classifier-FID
  band of the chains' images (``--fid-band``; with so few chains the FID is biased high, so
  only its change counts), saturation at [-1, 1], non-finite values; the starts' agreement by
  nested R-hat is reported but not part of the "stable" column (chains from different digits
  need not mix in this many steps).

Results: ``diagnostics/results/daebm_results.json`` and ``.md`` (``--smoke``: seconds on the
8 x 8 digits, written to ``--out`` only). Checkpoints and progress files go to ``--runs``; a
rerun reuses a finished method's row and does not train a finished budget again.

Example::

    EBMCMC_MNIST_DIR=path/to/mnist python diagnostics/daebm_results.py --minutes 5 \
        --long-run-minutes 3
    python diagnostics/daebm_results.py --smoke --out /tmp/daebm_results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import digits_setup
from ebmcmc.evaluation import ClassifierFID, level_score, marginal_score, ood_auroc_table
from ebmcmc.kernels import MALA
from ebmcmc.nn import TimeMLP
from ebmcmc.studies import StabilityCriteria, stability
from ebmcmc.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "diagnostics" / "results"
METHODS = ("daebm", "drl", "pcd")


def _example(name: str):
    """``examples/<name>.py`` as a module (its plotting helper is reused)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=os.environ.get("EBMCMC_MNIST_DIR"),
                   help="MNIST IDX folder (default $EBMCMC_MNIST_DIR)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time per method")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--burn-in", type=int, default=50, help="DAEBM generation burn-in")
    p.add_argument("--gen-chains", type=int, default=250, help="DAEBM generation chains")
    p.add_argument("--gen-transitions", type=int, default=200,
                   help="DAEBM generation: most transitions after the burn-in")  # fmt: skip
    p.add_argument("--n-ood", type=int, default=1000)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--long-run-steps", type=int, default=100_000)
    p.add_argument("--long-run-minutes", type=float, default=5.0)
    p.add_argument("--fid-band", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=Path, default=Path("out/daebm_results"))
    p.add_argument("--out", type=Path, default=None, help="results folder (default: results/)")
    p.add_argument("--note", default="", help="a paragraph on how this run was made")
    p.add_argument("--smoke", action="store_true", help="seconds, on the 8 x 8 digits")
    args = p.parse_args(argv)
    args.dataset = "digits" if args.smoke else "mnist"
    if args.dataset == "mnist" and args.data is None:
        p.error("MNIST needs --data or $EBMCMC_MNIST_DIR")
    if args.smoke:
        args.minutes, args.hidden, args.n_samples, args.n_ood = 0.05, 32, 100, 100
        args.burn_in, args.chains, args.long_run_steps = 2, 8, 200
        args.gen_transitions = 50
        args.long_run_minutes = 0.1
        args.out = args.out or Path("out/daebm_results_smoke")
        args.runs = args.out / "runs"
    return args


def make_setup(method: str, side: int, args):
    """The set-up of ``method`` with the network family's member for ``side x side`` images."""
    kw = {"num_langevin_steps": 3, "levels": 8 if method == "daebm" else 6} if args.smoke else {}
    setup = digits_setup(method, hidden=args.hidden, seed=args.seed, **kw)
    if side != 8:
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            setup.model = TimeMLP(side * side, hidden=args.hidden,
                                  num_levels=setup.model.num_levels)  # fmt: skip
        setup.dim = side * side
    if args.smoke and method == "daebm":
        setup.estimator.metropolis_after = 2
    return setup


def run_method(method: str, args, fid: ClassifierFID, train, test, ood) -> dict:
    side = train.shape[-1]
    setup = make_setup(method, side, args)
    run_dir = args.runs / f"{args.dataset}-{method}-seed{args.seed}"
    trainer = Trainer(setup.model, setup.estimator, train.flatten(1), setup.config,
                      run_dir=run_dir, seed=args.seed, progress=False)  # fmt: skip
    trainer.resume()
    trained = run_dir / "train.json"  # a finished budget is not trained again
    if trained.is_file():
        row: dict = json.loads(trained.read_text())
    else:
        w0, c0 = time.monotonic(), time.process_time()
        trainer.fit(10**7, max_seconds=60 * args.minutes)
        row = {"method": method, "steps": trainer.step,
               "train_wall_s": round(time.monotonic() - w0, 1),
               "train_cpu_s": round(time.process_time() - c0, 1)}  # fmt: skip
        trained.write_text(json.dumps(row) + "\n")
    row["params"] = sum(p.numel() for p in setup.model.parameters())
    est = setup.estimator
    model = setup.model if method == "daebm" else trainer.ema_model
    model.eval()

    # -- generation and FID
    g = torch.Generator().manual_seed(args.seed + 1)
    w0 = time.monotonic()
    if method == "daebm":
        gen = est.generate(model, args.n_samples, (side * side,), g,
                           num_chains=min(args.n_samples, args.gen_chains),
                           burn_in=args.burn_in,
                           max_transitions=args.burn_in + args.gen_transitions,
                           progress=False)  # fmt: skip
        x = gen.samples.clamp(-1, 1)
        row["generation"] = {"collected": int(x.shape[0]), "transitions": gen.num_transitions,
                             "burn_in": args.burn_in,
                             "chains": min(args.n_samples, args.gen_chains),
                             "level_visits": gen.level_visits.tolist()}  # fmt: skip
    else:
        x = setup.generate(args.n_samples, g, model).clamp(-1, 1)
    row["generate_wall_s"] = round(time.monotonic() - w0, 1)
    images = x.reshape(-1, 1, side, side)
    row["fid"] = fid.fid(test, images) if images.shape[0] >= 2 else math.nan
    if images.shape[0]:
        title = f"{method}: FID {row['fid']:.1f}"
        _example("mnist_daebm").grid_png(run_dir / "samples.png", images, title)

    # -- OOD
    n_ood = min(args.n_ood, test.shape[0])
    if method == "daebm":

        def joint(x, t):
            return model(x.flatten(1), t)

        scores = {"log p(x) (marginal)": marginal_score(joint, est.num_levels),
                  "-E(x, 0)": level_score(joint, 0)}  # fmt: skip
    else:
        energy0 = setup.chain_energy(model)
        scores = {"-E(x)": lambda x: -energy0(x.flatten(1))}
    row["ood"] = {k: ood_auroc_table(s, test[:n_ood], ood) for k, s in scores.items()}

    # -- long run from real images
    energy = setup.chain_energy(model)
    if method == "daebm":
        kernel = est.level_kernel(0)
    else:
        kernel = MALA(step_size=float(setup.chain_kernel().step_size))
    row["long_run_step_size"] = float(kernel.step_size)
    half = args.chains // 2
    gs = torch.Generator().manual_seed(args.seed + 5)
    x0 = test[n_ood : n_ood + 2 * half].flatten(1)  # images not used for the OOD table
    x0 = x0 + setup.noise_std * torch.randn(x0.shape, generator=gs)  # DRL: level-0 noise
    starts = {"test_a": x0[:half].clone(), "test_b": x0[half:].clone()}
    st = kernel.init(energy, x0.clone())
    w0 = time.monotonic()
    for _ in range(200):
        st, _ = kernel.step(energy, st, gs)
    per_step = (time.monotonic() - w0) / 200 / 2  # the study runs the halves one at a time
    budget = int(60 * args.long_run_minutes / max(per_step * 2, 1e-9))
    n_steps = args.long_run_steps
    if budget < n_steps:
        unit = 10 ** max(2, int(math.log10(max(budget, 1))))
        n_steps = max(200, budget // unit * unit)  # rounded down to a leading digit
    ref = fid.statistics(test)

    def quality(y):
        return fid.fid(ref, y.clamp(-1, 1).reshape(-1, 1, side, side))

    w0 = time.monotonic()
    study = stability(energy, kernel, starts, n_steps, checkpoints=8, quality_fn=quality,
                      bounds=(-1.0, 1.0),
                      criteria=StabilityCriteria(quality_band=args.fid_band, agreement="nested",
                                                 window=min(1000, n_steps // 2)),
                      generator=args.seed, state_path=run_dir / "long_run.pt")  # fmt: skip
    curves = study.curves
    first = curves["test_a"]
    ref_row = first[first["step"] == study.short_run].iloc[0]
    errors = [f.message for f in study.findings if f.level == "error"]
    core = [m for m in errors if "R-hat" not in m and "disagree" not in m]
    row["long_run"] = {
        "steps": n_steps, "wall_s": round(time.monotonic() - w0, 1),
        "seconds_per_step_estimate": round(per_step * 2, 5), "chains": 2 * half,
        "short_run": study.short_run,
        "energy_short": float(ref_row["energy_mean"]),
        "energy_long": float(first.iloc[-1]["energy_mean"]),
        "fid_short": float(ref_row["quality"]), "fid_long": float(first.iloc[-1]["quality"]),
        "fid_start": float(first.iloc[0]["quality"]),
        "saturation_long": float(first.iloc[-1]["saturation"]),
        "divergences": float(first.iloc[-1]["divergences"]),
        "stable": not core, "why": core,
        "nested_rhat": study.nested_rhat, "study_passed": bool(study.passed),
    }  # fmt: skip
    return row


def _f(v, nd=3) -> str:
    return "nan" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}g}"


def write(dest: Path, out: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "daebm_results.json").write_text(json.dumps(out, indent=2) + "\n")
    rows = out["rows"]
    sets = list(next(iter(rows[0]["ood"].values()))) if rows else []
    lines = [
        f"# DAEBM beside DRL and PCD on {out['dataset']}, {out['minutes_per_method']:g} min of "
        "training wall time each (one CPU thread)",
        "",
        f"Command: `{out['command']}`",
        "",
        "| method | train steps | FID (" + str(out["n_samples"]) + " samples) | long run: steps "
        "| energy short → long | FID short → long | stable | score | "
        + " | ".join(f"AUROC {s}" for s in sets)
        + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(sets),
    ]
    for r in rows:
        lr = r["long_run"]
        for i, (score, table) in enumerate(r["ood"].items()):
            head = "| | | | | | | |"
            if i == 0:
                fid = _f(r["fid"], 4)
                if r.get("generation", {}).get("collected", 1) == 0:
                    fid = "none (no chain reached t = 0)"
                head = (f"| {r['method']} | {r['steps']} | {fid} | {lr['steps']:,} | "
                        f"{_f(lr['energy_short'])} → {_f(lr['energy_long'])} | "
                        f"{_f(lr['fid_short'], 4)} → {_f(lr['fid_long'], 4)} | "
                        f"{'yes' if lr['stable'] else '**no**'} |")  # fmt: skip
            lines.append(head + f" {score} | " + " | ".join(_f(table[s]) for s in sets) + " |")
    lines += ["", f"FID floor (test vs {out['n_samples']} training images): "
              f"{_f(out['fid_floor'], 4)}; classifier test accuracy "
              f"{_f(out['classifier_test_accuracy'], 4)}.", ""]  # fmt: skip
    for r in rows:
        lr = r["long_run"]
        rh = ", ".join(f"{k} {_f(v, 4)}" for k, v in lr["nested_rhat"].items())
        why = "; ".join(lr["why"]) or "energy, FID, saturation and finiteness within their bands"
        lines.append(f"- {r['method']}: {r['params']:,} parameters, {r['train_wall_s']} s wall "
                     f"/ {r['train_cpu_s'] or 'unrecorded'} s CPU of training; long run of "
                     f"{lr['steps']:,} "
                     f"MALA steps at step {r['long_run_step_size']:.3g} "
                     f"on {lr['chains']} chains ({lr['wall_s']} s), short run = step "
                     f"{lr['short_run']}, divergences {lr['divergences']:.0f}, FID of the "
                     f"start images {_f(lr['fid_start'], 4)}; nested R-hat "
                     f"{rh}; {why}.")  # fmt: skip
    for r in rows:
        gen = r.get("generation")
        if gen is not None:
            lines.append(f"- {r['method']} generation: {gen['collected']} images collected at "
                         f"t = 0 from {gen['chains']} chains in {gen['transitions']} "
                         f"transitions (burn-in {gen['burn_in']}); level visits "
                         f"{gen['level_visits']}.")  # fmt: skip
    if out.get("note"):
        lines += ["", out["note"]]
    lines.append("")
    (dest / "daebm_results.md").write_text("\n".join(lines))


def _argv_without_note() -> list[str]:
    argv, out = sys.argv[1:], []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    if args.dataset == "mnist":
        train, test = D.load_mnist(args.data, "train")[0], D.load_mnist(args.data, "test")[0]
    else:
        train, test = D.load_digits("train")[0], D.load_digits("test")[0]
    side = train.shape[-1]
    fid = ClassifierFID(args.dataset, data_path=args.data if args.dataset == "mnist" else None)
    n_ood = min(args.n_ood, test.shape[0] - args.chains)
    sets = D.OOD_SETS if side == 28 else tuple(s for s in D.OOD_SETS if s != "digits")
    ood = D.mnist_ood_sets(test, n_ood, args.seed, sets=sets)
    args.n_ood = n_ood
    dest = args.out or RESULTS
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.methods.split(","):
        done = args.runs / f"{args.dataset}-{method}-seed{args.seed}" / "row.json"
        if done.is_file():
            row = json.loads(done.read_text())
        else:
            row = run_method(method, args, fid, train, test, ood)
            done.write_text(json.dumps(row, indent=2) + "\n")
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "dataset": args.dataset, "minutes_per_method": args.minutes, "hidden": args.hidden,
        "n_samples": args.n_samples, "n_ood": n_ood, "seed": args.seed, "torch_threads": 1,
        "classifier_test_accuracy": fid.test_accuracy, "classifier_cache": str(fid.cache_path),
        "fid_floor": fid.fid(test, train[: args.n_samples]),
        "python": platform.python_version(), "torch": torch.__version__,
        "command": "python diagnostics/daebm_results.py " + shlex.join(_argv_without_note()),
        "note": args.note, "rows": rows,
    }  # fmt: skip
    write(dest, out)
    return out


if __name__ == "__main__":
    main()
