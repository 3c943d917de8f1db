"""DRL against CD-k, short-run ML and PCD: quality after training and after 10,000-step chains.

For each data set (eight Gaussians and four rings in 2-D; the 8 x 8 digits) and each
estimator, the same network is trained for the same number of steps (so the same budget of
gradient evaluations: every estimator spends K = 30 Langevin steps plus two energy passes per
example), then:

* **after training**: KL(data ‖ model) on a grid where the data density is exact (the 2-D
  mixtures; DRL's level 0 against the data with its ``sigma_bar_0`` of noise), and the
  squared MMD of generated samples to held-out data, divided by the MMD between independent
  data samples (1 = as good as data); for digits the classifier FID of generated samples;
* **after a long run**: chains of the model's own sampler (unadjusted Langevin at the training
  step; for DRL, level 0's marginal energy at step ``s_0^2 / 2``) started from held-out data
  and from generated samples run ``--long-run`` steps (10,000 by default, 333x the training
  K) through :func:`ebmcmc.studies.stability`, which records energy, quality (MMD, or FID
  for digits) and saturation at log-spaced steps and judges them against
  ``docs/methods/long-run.md`` (energy and quality within their bands of the short-run
  values, starts agreeing by nested R-hat, nothing non-finite or saturated).

One table (``long_run.md``, rows also in ``long_run.json``) and one stability report per run
(``long_run/<dataset>-<estimator>/report.html``). Runs are resumable: trained models and
finished rows are kept in ``--out``; rerunning skips what is done.

Usage::

    .venv/bin/python diagnostics/long_run.py                       # everything (~40 min, 1 core)
    .venv/bin/python diagnostics/long_run.py --datasets eight_gaussians --estimators drl cd
    .venv/bin/python diagnostics/long_run.py --smoke --out /tmp/lr  # CI: tiny, < 1 min
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # small networks: more threads cost more than they save

from ebmcmc import datasets as D  # noqa: E402
from ebmcmc._files import atomic_write  # noqa: E402
from ebmcmc.app.setups import ESTIMATORS, digits_setup, toy_setup  # noqa: E402
from ebmcmc.evaluation import ClassifierFID, kl_on_grid, mmd  # noqa: E402
from ebmcmc.studies import StabilityCriteria, report_stability, stability  # noqa: E402
from ebmcmc.train import Trainer  # noqa: E402

#: data set -> (toy_setup options, KL grid half-width, KL grid resolution)
SETS = {
    "eight_gaussians": ({"scale": 2.0}, 3.0, 300),
    # rings of sd 0.01 at radii 1..4: scaled by 4 they are 0.0025 wide, so the steps shrink
    "rings": ({"scale": 4.0, "b2": 4e-4, "step_size": 1e-4}, 5.0, 1000),
    "digits": ({}, None, None),
}
#: the baselines' K: DRL spends K = 30 Langevin steps plus 30 tether jumps (one energy and
#: gradient each) per example, so the baselines get 60 Langevin steps for the same budget
BASELINE_K = 60
#: departures from the shared settings for one (data set, estimator), each measured:
#: DRL on digits with the paper's b^2 = 2e-4 and K = 30 gives the best samples after training
#: (FID 92.5) but its chains of p(x0|x1) never leave their start in 30 steps (the tether needs
#: about 1/b^2 = 5,000): the long run then finds a conditional the loss never saw (FID 689
#: after 10,000 steps). With b^2 = 4e-3 (the largest step that did not diverge: 1e-2 and 2e-2
#: did, MALA at 1e-2 stalled) and K = 250 (about 1/b^2) the training chains reach the
#: conditional the long run samples; 1,500 steps missed the FID band by 0.5, 3,000 steps keep
#: the conditional chain stable for 25,000 steps (table in docs/training.md).
OVERRIDES = {
    ("digits", "drl"): {
        "setup": {"num_langevin_steps": 250, "b2": 4e-3, "loss_weight": "likelihood"},
        "steps": 3000,
    },
}


def plan(name: str, estimator: str, args) -> dict:
    """One row's training steps, training chain length K, set-up options (``OVERRIDES``, K and
    the learning-rate decay; tiny networks for ``--smoke``), and the long run's length (at
    least 100 K, the long-run criterion in ``docs/methods/long-run.md``) and reference step
    (K, the training horizon)."""
    over = {} if args.smoke else OVERRIDES.get((name, estimator), {})
    k = over.get("setup", {}).get("num_langevin_steps", 30 if estimator == "drl" else BASELINE_K)
    steps = over.get("steps", args.steps)
    if args.smoke:
        k = 5 if name != "digits" else 3
        setup = {"hidden": 32, "num_langevin_steps": k}
    else:
        setup = {**over.get("setup", {}), "num_langevin_steps": k, "decay_at": int(0.6 * steps)}
    long_run = args.long_run if args.smoke else max(args.long_run, 100 * k)
    return {"steps": steps, "K": k, "setup": setup, "long_run": long_run,
            "short_run": min(k, long_run)}  # fmt: skip


class MMDRatio:
    """``x -> MMD_v(ref, x) / floor(len(x))``, with the V-statistic of
    ``ebmcmc.evaluation.mmd(unbiased=False)`` (always > 0; bandwidths from ``ref``): the floor is
    the mean MMD of independent data samples of the same size as ``x`` (the V-statistic's bias
    depends on the sample size), so 1 means "as close to the reference as data are"."""

    def __init__(self, ref, draw_data, repeats: int = 4):
        self.ref, self.draw, self.repeats, self.floors = ref, draw_data, repeats, {}

    def floor(self, m: int) -> float:
        if m not in self.floors:
            vals = [self._mmd(self.draw(m, i)) for i in range(self.repeats)]
            self.floors[m] = sum(vals) / len(vals)
        return self.floors[m]

    def _mmd(self, x) -> float:
        return float(mmd(self.ref, x, unbiased=False))

    def __call__(self, x) -> float:
        return self._mmd(x) / self.floor(x.shape[0])


def train(setup, data, run_dir: Path, args, steps: int):
    """Train (resuming from ``run_dir``) to ``steps``; returns the frozen EMA model, the
    steps and the training seconds over all invocations (kept in ``run_dir/train_seconds.txt``
    so a resumed run reports its whole training time)."""
    trainer = Trainer(setup.model, setup.estimator, data, setup.config, run_dir=run_dir,
                      seed=args.seed, progress=not args.no_progress)  # fmt: skip
    trainer.resume()
    path = run_dir / "train_seconds.txt"
    before = float(path.read_text()) if path.is_file() else 0.0
    t0 = time.perf_counter()
    trainer.fit(steps)
    total = before + time.perf_counter() - t0
    atomic_write(path, lambda tmp: Path(tmp).write_text(f"{total:.1f}\n"))
    model = trainer.ema_model
    for p in model.parameters():
        p.requires_grad_(False)
    return model, trainer.step, total


def run_toy(name: str, estimator: str, args, out: Path) -> list[dict]:
    """Train, score, long-run and report one (2-D data set, estimator)."""
    opts, lim, res = SETS[name]
    p = plan(name, estimator, args)
    setup = toy_setup(estimator, seed=args.seed, **{**opts, **p["setup"]})
    data = D.toy_dataset(name, 50000, args.seed) / setup.scale
    run_dir = out / "runs" / f"{name}-{estimator}"
    model, steps, train_s = train(setup, data, run_dir, args, p["steps"])
    g = torch.Generator().manual_seed(args.seed + 1)
    n = args.n_eval

    def noisy(k, seed):
        x = D.toy_dataset(name, k, seed)
        return x + setup.noise_std * torch.randn(x.shape, generator=g)

    ref = noisy(n, args.seed + 1000)
    ratio = MMDRatio(ref, lambda m, i: noisy(m, args.seed + 1001 + i))
    row = {
        "dataset": name,
        "estimator": estimator,
        "steps": steps,
        "train_seconds": round(train_s, 1),
    }
    row["kl"] = kl_on_grid(
        D.toy_target(name, setup.noise_std).log_prob,
        lambda x: setup.energy(x, model),
        lim,
        150 if args.smoke else res,
        dtype=torch.float32,
    )
    gen = setup.generate(n, g, model)
    row["metric"] = "MMD ratio"
    row["quality"] = ratio(gen)

    chains = min(args.chains, n)
    x0 = D.toy_dataset(name, chains, args.seed + 3000)
    return long_runs(setup, model, f"{name}-{estimator}", x0, gen[:chains], ratio,
                     args.quality_band, None, row, args, out, p)  # fmt: skip


def run_digits(estimator: str, args, out: Path) -> list[dict]:
    """Train, score (classifier FID), long-run and report one estimator on the digits."""
    train_x, test_x = D.load_digits("train")[0], D.load_digits("test")[0]
    p = plan("digits", estimator, args)
    setup = digits_setup(estimator, seed=args.seed, **p["setup"])
    run_dir = out / "runs" / f"digits-{estimator}"
    model, steps, train_s = train(setup, train_x.flatten(1), run_dir, args, p["steps"])
    fid = ClassifierFID("digits")
    ref = fid.statistics(test_x)
    g = torch.Generator().manual_seed(args.seed + 1)
    n = min(args.n_eval, 1000)
    gen = setup.generate(n, g, model).clamp(-1, 1)
    row = {
        "dataset": "digits",
        "estimator": estimator,
        "steps": steps,
        "train_seconds": round(train_s, 1),
        "kl": math.nan,
        "metric": "classifier FID",
        "quality": fid.fid(ref, gen.reshape(-1, 1, 8, 8)),
    }

    def quality(x):
        return fid.fid(ref, x.clamp(-1, 1).reshape(-1, 1, 8, 8))

    chains = min(args.chains, n, len(test_x))
    x0 = test_x[:chains].flatten(1)
    return long_runs(setup, model, f"digits-{estimator}", x0, gen[:chains], quality,
                     args.fid_band, (-1.0, 1.0), row, args, out, p)  # fmt: skip


def long_runs(setup, model, tag, x0, gen, quality, band, bounds, row, args, out, p) -> list[dict]:
    """The long-run studies of one trained model; one table row each.

    Every model: its own sampler on its density (for DRL, the level-0 EBM with unadjusted
    Langevin at ``s_0^2 / 2``), from held-out data (with DRL's level-0 noise) and from its
    generated samples. DRL also: its conditional chain ``p(x_0 | x_1)`` (the paper's
    sampler, without jumps) with ``x_1`` made from held-out data, from the data and from
    ``x_1`` -- the chain the paper says does not diverge.
    """
    g = torch.Generator().manual_seed(args.seed + 5)
    sc = setup.scale
    noisy0 = x0 + setup.noise_std * torch.randn(x0.shape, generator=g)
    runs = [
        (
            "model density",
            setup.chain_energy(model),
            setup.chain_kernel(),
            {"data": noisy0 / sc, "generated": gen / sc},
            lambda y: quality(y * sc),
        )
    ]
    if setup.is_drl:
        est, sched = setup.estimator, setup.estimator.schedule
        t = torch.zeros(x0.shape[0], dtype=torch.long)
        x_t, x_next = sched.training_pair(x0 / sc, t, generator=g)
        a1 = float(sched.signal_prime[1])
        runs.insert(
            0,
            (
                "conditional p(x0|x1)",
                est.recovery_energy(model, t, x_next),
                est.kernel(t, x_next),
                {"data": a1 * x_t, "x1": x_next.clone()},
                lambda y: quality(y / a1 * sc),
            ),
        )
    rows = []
    for chain, energy, kernel, starts, qfn in runs:
        name = tag if chain == "model density" else f"{tag}-conditional"
        study = stability(
            energy,
            kernel,
            starts,
            p["long_run"],
            short_run=p["short_run"],
            checkpoints=10,
            quality_fn=qfn,
            bounds=bounds,
            criteria=StabilityCriteria(
                quality_band=band, agreement="nested", window=min(1000, p["long_run"] // 2)
            ),
            generator=args.seed,
            state_path=out / "runs" / f"{name}-stability.pt",
        )
        report_stability(study, out / "long_run" / name, title=f"Long run: {name} ({chain})")
        first, second = list(starts)
        last = {k: df.iloc[-1] for k, df in study.curves.items()}
        r = dict(row, chain=chain)
        r["quality_long_run"] = float(last[first]["quality"])
        r["quality_long_run_generated"] = float(last[second]["quality"])
        r["long/short"] = r["quality_long_run"] / r["quality"]
        r["energy_short"] = float(
            study.curves[first].set_index("step").loc[study.short_run, "energy_mean"]
        )
        r["energy_long"] = float(last[first]["energy_mean"])
        r["stable"] = bool(study.passed)
        r["why"] = "; ".join(study.reasons)
        rows.append(r)
    return rows


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.3g}"
    return str(v)


COLUMNS = [
    "dataset",
    "estimator",
    "chain",
    "steps",
    "K",
    "train_seconds",
    "kl",
    "metric",
    "quality",
    "short_run",
    "long_run",
    "quality_long_run",
    "quality_long_run_generated",
    "long/short",
    "energy_short",
    "energy_long",
    "stable",
    "why",
]


def write_table(out: Path, rows: list[dict], args) -> Path:
    lines = [
        "# Long-run stability: DRL against CD-k, short-run ML and PCD",
        "",
        f"Regenerate: `.venv/bin/python diagnostics/long_run.py` ({datetime.date.today()}, "
        "one CPU thread). Configuration: `ebmcmc.app.setups.toy_setup` / `digits_setup` (their "
        "docstrings list every constant) with the departures in `OVERRIDES` at the top of "
        "the script.",
        "",
        "`steps`: training steps; `K`: Langevin steps per training chain (DRL on 2-D also "
        "takes a tether jump after each). `chain`: what the long run samples -- the model's "
        "density with its training sampler "
        "(for DRL the level-0 EBM), or DRL's conditional p(x0|x1) with the paper's Langevin "
        "(x1 made from held-out data; the second start is then x1 itself). "
        "`kl`: KL(data ‖ model) in nats on a grid (DRL: the level-0 EBM, against the data "
        "with its sigma_bar_0 noise). `quality` of generated samples: for 2-D sets the "
        "squared MMD to held-out data over the MMD between independent data samples (1 = "
        "indistinguishable from data), for digits the classifier FID against the test "
        "images (held-out vs training images score about 10). `short_run`: the reference "
        "step (the training horizon K; 30 in rows computed before it was K); `long_run`: "
        "the long run's steps (at least 100 K). `quality_long_run`: the same quality figure "
        "for the chains after the long run, started from held-out data (and from the "
        "generated samples). `energy_short` / `energy_long`: mean energy of the chains from "
        "data at the reference step and at the end. `long/short`: quality after the long "
        "run from data over the generated samples' quality. "
        "Budget: on 2-D every estimator trains the same number of steps with 60 "
        "energy-gradient evaluations per example (DRL: 30 Langevin steps + 30 tether jumps; "
        "the baselines: 60 Langevin steps); on digits DRL spends K = 250 (see `OVERRIDES`). "
        "`stable`: the verdict of "
        "`ebmcmc.diagnostics.stability` (reports in `long_run/`), with its reasons.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += [
        "| " + " | ".join(fmt(r.get(c, "")).replace("|", "\\|") for c in COLUMNS) + " |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    atomic_write(out / "long_run.md", lambda tmp: Path(tmp).write_text(text))
    atomic_write(
        out / "long_run.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1) + "\n")
    )
    return out / "long_run.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("diagnostics/results"))
    p.add_argument(
        "--datasets", nargs="+", default=["eight_gaussians", "rings", "digits"], choices=list(SETS)
    )
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    p.add_argument("--steps", type=int, default=1200, help="training steps per run")
    p.add_argument(
        "--long-run",
        type=int,
        default=10000,
        help="steps of the long-run chains (at least 100 x the training K)",
    )
    p.add_argument("--chains", type=int, default=256, help="chains per start")
    p.add_argument("--n-eval", type=int, default=2000, help="samples for the MMD")
    p.add_argument(
        "--quality-band",
        type=float,
        default=1.0,
        help="allowed rise of the MMD ratio over its short-run value",
    )
    p.add_argument(
        "--fid-band",
        type=float,
        default=10.0,
        help="digits: allowed rise of the FID over its short-run value",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny runs for CI")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.long_run, args.chains, args.n_eval = 10, 100, 32, 200
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "long_run.json"
    rows = json.loads(done_path.read_text()) if done_path.is_file() and not args.smoke else []
    for name in args.datasets:
        for est in args.estimators:
            pl = plan(name, est, args)
            key = (name, est, pl["steps"], pl["long_run"], pl["short_run"])
            if any(
                (
                    r["dataset"],
                    r["estimator"],
                    r["steps"],
                    r.get("long_run"),
                    r.get("short_run", 30),
                )
                == key  # fmt: skip
                for r in rows
            ):
                continue
            print(f"== {name} / {est}", flush=True)
            new = run_digits(est, args, out) if name == "digits" else run_toy(name, est, args, out)
            if done_path.is_file() and not args.smoke:  # another process may have added rows
                rows = json.loads(done_path.read_text())
            rows = [r for r in rows if (r["dataset"], r["estimator"]) != (name, est)]
            for r in new:
                r.update(K=pl["K"], long_run=pl["long_run"], short_run=pl["short_run"])
                print(json.dumps(r), flush=True)
            rows += new
            order = {k: i for i, k in enumerate(SETS)}
            rows.sort(key=lambda r: (order.get(r["dataset"], 99), ESTIMATORS.index(r["estimator"])))
            write_table(out, rows, args)
    print(f"table written to {out / 'long_run.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
