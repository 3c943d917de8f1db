"""CDRL at 15 Langevin steps per level against DRL at 30, on MNIST, at equal training wall time.

Both are trained by ``examples/mnist_drl.py`` (same energy network, a
:class:`~ebmcmc.nn.TimeMLP` on the 784 pixels; CDRL adds its initializer), one after the
other, each for ``--minutes`` of wall time on one CPU thread; then each generates
``--n-samples`` images from its EMA weights and is scored by the classifier FID
(:class:`~ebmcmc.evaluation.ClassifierFID`) against the MNIST test set. The classifier is
trained (or loaded from its cache) before either run, so that neither budget pays for it.

Besides the wall time, the study records each run's process CPU time (training, generation
and scoring), so that a run slowed by other work on a shared machine can be told apart.

Results: ``diagnostics/results/cdrl_vs_drl_mnist.json`` and ``.md`` (``--dataset digits``:
the same on the 8 x 8 digits, ``..._digits.json`` and ``.md``; ``--seed`` other than 0 adds
``_seed<n>``; ``--smoke``: a few seconds on the digits, written to ``--out`` only).

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


def _profile(mnist_drl, argv_run: list[str], data, n: int = 5) -> dict:
    """Parameters and process CPU seconds per training step (loss, loss + backward, and
    loss + backward + Adam) of a fresh model of this run, on one training batch."""
    from ebmcmc import datasets as D

    args = mnist_drl.parse(argv_run)
    x = D.load_mnist(data, "test")[0] if data is not None else D.load_digits("test")[0]
    side = x.shape[-1]
    setup = mnist_drl.make_setup(args, side, args.hidden)
    model, est = setup.model, setup.estimator
    batch = x[: setup.config.batch_size].reshape(-1, side * side)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    est.loss(model, batch, g).loss.backward()  # warm-up
    out: dict = {"params": sum(p.numel() for p in model.parameters())}
    for key in ("cpu_s_loss", "cpu_s_loss_backward", "cpu_s_loss_backward_adam"):
        c0 = time.process_time()
        for _ in range(n):
            opt.zero_grad()
            loss = est.loss(model, batch, g).loss
            if key != "cpu_s_loss":
                loss.backward()
            if key == "cpu_s_loss_backward_adam":
                opt.step()
        out[key] = round((time.process_time() - c0) / n, 4)
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=os.environ.get("EBMCMC_MNIST_DIR"),
                   help="MNIST IDX folder (default $EBMCMC_MNIST_DIR)")  # fmt: skip
    p.add_argument("--minutes", type=float, default=8.0, help="training wall time per run")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=None, help="default 512 (MNIST), 256 (digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="drl:30,cdrl:15",
                   help="estimator:K pairs, trained in this order")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("out/cdrl_vs_drl_mnist"),
                   help="run directories (checkpoints)")  # fmt: skip
    p.add_argument("--dataset", choices=("mnist", "digits"), default="mnist",
                   help="digits: the 8 x 8 digits (results in ..._digits.json / .md)")  # fmt: skip
    p.add_argument("--profile-only", action="store_true",
                   help="only add per-step CPU figures to the existing results")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="seconds, on the 8 x 8 digits")
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset = "digits"
    if args.hidden is None:
        args.hidden = 512 if args.dataset == "mnist" else 256
    if args.dataset == "mnist" and args.data is None:
        p.error("MNIST needs --data or $EBMCMC_MNIST_DIR")
    if args.smoke:
        args.minutes, args.n_samples, args.hidden = 0.5, 200, 32
    return args


def _run_argv(args, est: str, k: str) -> list[str]:
    """``examples/mnist_drl.py``'s options for one run."""
    run_dir = args.out / f"{args.dataset}_{est}_K{k}_seed{args.seed}"
    argv_run = ["--estimator", est, "--dataset", args.dataset, "--K", k,
                "--minutes", str(args.minutes), "--steps", "20" if args.smoke else "1000000",
                "--n-samples", str(args.n_samples), "--hidden", str(args.hidden),
                "--seed", str(args.seed), "--out", str(run_dir), "--no-progress"]  # fmt: skip
    if args.dataset == "mnist":
        argv_run += ["--data", str(args.data)]
    return argv_run


def _write(dest: Path, stem: str, out: dict) -> None:
    (dest / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"# CDRL vs DRL on {out['dataset']}, {out['minutes_per_run']:g} min of training wall "
        "time each",
        "",
        "| estimator | K | steps | train wall s | steps / s | process CPU s | FID | FID floor "
        "| parameters | CPU s / step: loss, + backward, + Adam |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        prof = ("| - | - |" if "params" not in r else
                f"| {r['params']:,} | {r['cpu_s_loss']}, {r['cpu_s_loss_backward']}, "
                f"{r['cpu_s_loss_backward_adam']} |")  # fmt: skip
        lines.append(f"| {r['estimator']} | {r['K']} | {r['steps']} | {r['train_wall_s']} | "
                     f"{r['steps_per_wall_s']} | {r['process_cpu_s']} | {r['fid']} | "
                     f"{r['fid_train_vs_test']} " + prof)  # fmt: skip
    lines += ["", f"{out['n_samples']} samples per model, classifier test accuracy "
              f"{out['classifier_test_accuracy']:.4f}; FID floor: held-out test vs training "
              "images. The per-step CPU figures are measured on a fresh model before training "
              "(5 steps each).", ""]  # fmt: skip
    (dest / f"{stem}.md").write_text("\n".join(lines))


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    mnist_drl = _mnist_drl()
    dataset = args.dataset
    data = args.data if dataset == "mnist" else None
    dest = args.out if args.smoke else RESULTS
    dest.mkdir(parents=True, exist_ok=True)
    stem = "cdrl_vs_drl_mnist" + ("" if dataset == "mnist" else f"_{dataset}")
    stem += "" if args.seed == 0 else f"_seed{args.seed}"
    if args.profile_only:  # add the per-step figures to an existing results file
        out = json.loads((dest / f"{stem}.json").read_text())
        for row in out["rows"]:
            row.update(_profile(mnist_drl, _run_argv(args, row["estimator"], str(row["K"])), data))
            print(json.dumps(row), flush=True)
        _write(dest, stem, out)
        return out
    t0 = time.process_time()
    fid = ClassifierFID(dataset, data_path=data)  # trained or loaded before either budget
    classifier_cpu = time.process_time() - t0
    rows = []
    for pair in args.runs.split(","):
        est, k = pair.split(":")
        argv_run = _run_argv(args, est, k)
        per_step = _profile(mnist_drl, argv_run, data)
        cpu0 = time.process_time()
        res = mnist_drl.main(argv_run)
        cpu = time.process_time() - cpu0
        row = {
            "estimator": est, "K": int(k), "steps": res["steps"],
            "train_wall_s": res["train_seconds_this_run"],
            "steps_per_wall_s": round(res["steps"] / max(res["train_seconds_this_run"], 1e-9), 2),
            "process_cpu_s": round(cpu, 1), "fid": round(res["fid"], 3),
            "fid_train_vs_test": round(res["fid_train_vs_test"], 3),
            "resumed": res["resumed"], **per_step,
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
    _write(dest, stem, out)
    return out


if __name__ == "__main__":
    main()
