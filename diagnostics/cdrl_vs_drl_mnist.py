"""CDRL at 15 Langevin steps per level against DRL at 30, on MNIST, at equal training wall time.

Both are trained by ``examples/mnist_drl.py`` (same energy network, a
:class:`~ebmcmc.nn.TimeMLP` on the 784 pixels; CDRL adds its initializer), one after the
other, each for ``--minutes`` of wall time on one CPU thread; then each generates
``--n-samples`` images from its EMA weights and is scored by the classifier FID
(:class:`~ebmcmc.evaluation.ClassifierFID`) against the MNIST test set. The classifier is
trained (or loaded from its cache) before either run, so that neither budget pays for it.

Besides the wall time, the study records each run's process CPU time (training, generation
and scoring), so that a run slowed by other work on a shared machine can be told apart.

Results: ``diagnostics/results/cdrl_vs_drl_mnist.json`` and ``.md`` (``--smoke``: a few
seconds on the 8 x 8 digits, written to ``--out`` only).

Example::

    EBMCMC_MNIST_DIR=path/to/mnist python diagnostics/cdrl_vs_drl_mnist.py --minutes 8
    python diagnostics/cdrl_vs_drl_mnist.py --smoke --out /tmp/cdrl_vs_drl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ebmcmc.evaluation import ClassifierFID

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "diagnostics" / "results"


def _mnist_drl():
    spec = importlib.util.spec_from_file_location("mnist_drl", ROOT / "examples" / "mnist_drl.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=os.environ.get("EBMCMC_MNIST_DIR"),
                   help="MNIST IDX folder (default $EBMCMC_MNIST_DIR)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=8.0, help="training wall time per run")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="drl:30,cdrl:15",
                   help="estimator:K pairs, trained in this order")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("out/cdrl_vs_drl_mnist"),
                   help="run directories (checkpoints)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="seconds, on the 8 x 8 digits")
    args = p.parse_args(argv)
    if not args.smoke and args.data is None:
        p.error("MNIST needs --data or $EBMCMC_MNIST_DIR")
    if args.smoke:
        args.minutes, args.n_samples, args.hidden = 0.5, 200, 32
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    mnist_drl = _mnist_drl()
    dataset = "digits" if args.smoke else "mnist"
    t0 = time.process_time()
    fid = ClassifierFID(dataset, data_path=None if args.smoke else args.data)  # cache it first
    classifier_cpu = time.process_time() - t0
    rows = []
    for pair in args.runs.split(","):
        est, k = pair.split(":")
        run_dir = args.out / f"{est}_K{k}_seed{args.seed}"
        argv_run = ["--estimator", est, "--dataset", dataset, "--K", k,
                    "--minutes", str(args.minutes), "--steps", "1000000",
                    "--n-samples", str(args.n_samples), "--hidden", str(args.hidden),
                    "--seed", str(args.seed), "--out", str(run_dir), "--no-progress"]  # fmt: skip
        if not args.smoke:
            argv_run += ["--data", str(args.data)]
        else:
            argv_run = [a if a != "1000000" else "20" for a in argv_run]
        cpu0 = time.process_time()
        res = mnist_drl.main(argv_run)
        cpu = time.process_time() - cpu0
        row = {
            "estimator": est, "K": int(k), "steps": res["steps"],
            "train_wall_s": res["train_seconds_this_run"],
            "steps_per_wall_s": round(res["steps"] / max(res["train_seconds_this_run"], 1e-9), 2),
            "process_cpu_s": round(cpu, 1), "fid": round(res["fid"], 3),
            "fid_train_vs_test": round(res["fid_train_vs_test"], 3),
            "resumed": res["resumed"],
            "command": "python examples/mnist_drl.py " + shlex.join(argv_run),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "dataset": dataset, "minutes_per_run": args.minutes, "n_samples": args.n_samples,
        "hidden": args.hidden, "seed": args.seed, "torch_threads": 1,
        "classifier_test_accuracy": fid.test_accuracy,
        "classifier_setup_cpu_s": round(classifier_cpu, 1),
        "python": platform.python_version(), "torch": torch.__version__,
        "command": "python diagnostics/cdrl_vs_drl_mnist.py " + shlex.join(sys.argv[1:]),
        "rows": rows,
    }  # fmt: skip
    dest = args.out if args.smoke else RESULTS
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "cdrl_vs_drl_mnist.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"# CDRL vs DRL on {dataset}, {args.minutes:g} min of training wall time each",
        "",
        "| estimator | K | steps | train wall s | steps / s | process CPU s | FID | FID floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['estimator']} | {r['K']} | {r['steps']} | {r['train_wall_s']} | "
                     f"{r['steps_per_wall_s']} | {r['process_cpu_s']} | {r['fid']} | "
                     f"{r['fid_train_vs_test']} |")  # fmt: skip
    lines += ["", f"{args.n_samples} samples per model, classifier test accuracy "
              f"{fid.test_accuracy:.4f}; FID floor: held-out test vs training images.",
              ""]  # fmt: skip
    (dest / "cdrl_vs_drl_mnist.md").write_text("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
