"""Train an EBM on a 2-D toy set and score it: density and sample plots, KL and MMD.

Estimators: ``drl`` (diffusion recovery likelihood), ``cd`` (CD-k from the data),
``short-run`` (short-run ML from noise), ``pcd`` (persistent CD with a replay buffer) and
``daebm`` (the diffusion-assisted EBM: one network over T + 1 = 7 noise levels, trained with a
persistent buffer of ``(x, t)`` chains; its paper's 2-D set is ``--dataset rings``).
Data sets: ``eight_gaussians``, ``grid25``, ``rings``, ``checkerboard``, ``swiss_roll``.

The model, estimator and optimiser come from :func:`ebmcmc.app.setups.toy_setup`, whose docstring
states the 2-D DRL configuration (data / 2, T = 6, K = 30, b^2 = 4e-3, TimeMLP with Fourier
features, likelihood loss weights, tether jumps) and why each choice differs from the
image defaults; the DAEBM configuration is stated there too (data in their own units,
T = 6, 40 Langevin steps per transition, Adam lr 5e-4, batch 100). Every value can be
overridden here; options left unset take the chosen estimator's default.

Scores (``metrics.json``):

* ``kl``: KL(data ‖ model) on a grid where the data density is exact. For DRL this is the
  level-0 EBM ``p(x_0) ∝ exp(-E(a'_1 x_0, 0) / s_0^2)`` against the data with
  ``sigma_bar_0`` of noise; ``kl_hierarchical`` is DRL's full model (the chain of
  conditionals, each normalised on a grid:
  :func:`~ebmcmc.evaluation.recovery_log_prob_on_grid`). For DAEBM it is the level-0 model
  ``p(x) ∝ exp(-E(x, 0))`` against the data.
* ``mmd_ratio``: squared MMD (V-statistic) of generated samples to held-out data over the
  mean MMD between independent data samples of the same size (1 = as good as data).

Outputs in ``--out``: ``checkpoint.pt`` (the Trainer's; a second run resumes it),
``density.png``, ``samples.png`` and ``metrics.json``.

Example::

    python examples/toy2d.py --estimator drl --dataset eight_gaussians --minutes 10 --out out/toy
    python examples/toy2d.py --estimator daebm --dataset rings --minutes 10 --out out/rings
    python examples/toy2d.py --smoke --out /tmp/toy   # CI: a few steps, < 30 s
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import ESTIMATORS, toy_setup
from ebmcmc.evaluation import (
    kl_on_grid,
    kl_to_grid_density,
    mmd,
    model_log_prob_on_grid,
    recovery_log_prob_on_grid,
)
from ebmcmc.train import Trainer

DATASETS = ("eight_gaussians", "grid25", "rings", "checkerboard", "swiss_roll")
# half-width of the plotting / KL grid in data units
LIMITS = {"eight_gaussians": 3.0, "grid25": 3.0, "rings": 5.0, "checkerboard": 2.5,
          "swiss_roll": 2.5}  # fmt: skip


def data_target(name: str, noise_std: float):
    """The exact data density (convolved with ``noise_std``) where one exists, else None."""
    return D.toy_target(name, noise_std) if name in D.TOY_TARGETS else None


def plot(path: Path, title: str, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    draw(ax)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(setup, model, args, heldout: torch.Tensor, n_eval: int, seed: int) -> dict:
    """KL (where exact), MMD of generated samples vs held-out data and of data vs data."""
    out: dict = {}
    lim = LIMITS[args.dataset]
    target = data_target(args.dataset, setup.noise_std)
    res = args.grid
    if args.dataset == "rings" and not args.smoke:
        res = max(res, 1000)  # the rings' sd is 0.01: the cells must be narrower than that
    energy = lambda x: setup.energy(x, model)  # noqa: E731
    if target is not None:
        out["kl"] = kl_on_grid(target.log_prob, energy, lim, res, dtype=torch.float32)
        if setup.is_drl:
            grid = recovery_log_prob_on_grid(
                setup.estimator, model, lim / setup.scale, min(res, 300),
                num_ancestors=args.ancestors, generator=seed,
            )  # fmt: skip
            # the grid is in the model's units x / scale: the data density there is
            # p(scale * y) * scale^2
            sc = setup.scale
            out["kl_hierarchical"] = kl_to_grid_density(
                lambda y: target.log_prob(y * sc) + 2 * math.log(sc), grid
            )
    g = torch.Generator().manual_seed(seed)
    gen = setup.generate(n_eval, g, model)
    ref = heldout[:n_eval]
    # compare like with like: DRL's level 0 carries sigma_bar_0 of noise
    ref = ref + setup.noise_std * torch.randn(ref.shape, generator=g)
    # V-statistic (always > 0), bandwidths from the held-out set: ratios to the floor are stable
    out["mmd_gen_vs_heldout"] = float(mmd(ref, gen, unbiased=False))
    floor = []  # data vs data: the mean over 8 independent samples (one alone is too noisy)
    for k in range(1, 9):
        other = D.toy_dataset(args.dataset, n_eval, seed + k)
        floor.append(
            float(
                mmd(
                    ref,
                    other + setup.noise_std * torch.randn(other.shape, generator=g),
                    unbiased=False,
                )
            )  # fmt: skip
        )
    out["mmd_data_vs_data"] = sum(floor) / len(floor)
    out["mmd_ratio"] = out["mmd_gen_vs_heldout"] / out["mmd_data_vs_data"]
    out["n_eval"] = n_eval
    out["samples"] = gen
    out["grid"] = model_log_prob_on_grid(energy, lim, min(res, 300), dtype=torch.float32)
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " The configuration is ebmcmc.app.setups.toy_setup's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--estimator", choices=ESTIMATORS, default="drl")
    p.add_argument("--dataset", choices=DATASETS, default="eight_gaussians")
    p.add_argument("--out", type=Path, default=Path("out/toy2d"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--steps", type=int, default=4000, help="maximum training steps")
    p.add_argument("--decay-at", type=int, default=None,
                   help="step from which lr x 0.2 (default: 60%% of --steps)")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (< 30 s)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in --out")
    p.add_argument("--scale", type=float, default=None,
                   help="data are divided by this (default 2; DAEBM 1)")  # fmt: skip
    p.add_argument("--levels", type=int, default=6, help="DRL, DAEBM: T")
    p.add_argument(
        "--langevin-steps",
        "--K",
        dest="langevin_steps",
        type=int,
        default=None,
        help="Langevin steps per loss (per level for DRL, per transition for DAEBM); "
        "default 30 (DAEBM 40)",
    )
    p.add_argument("--b2", type=float, default=4e-3, help="DRL: b^2 of the step sizes")
    p.add_argument("--jump-every", type=int, default=1, help="DRL: tether jumps (0: off)")
    p.add_argument("--loss-weight", default="likelihood", choices=("likelihood", "paper"))
    p.add_argument("--fourier-features", type=int, default=64)
    p.add_argument("--fourier-scale", type=float, default=0.3)
    p.add_argument("--step-size", type=float, default=1e-3, help="baselines: Langevin eps")
    p.add_argument("--sample-steps", type=int, default=500,
                   help="baselines: steps to sample; DAEBM: transitions of burn-in")  # fmt: skip
    p.add_argument("--energy-reg", type=float, default=0.1, help="baselines: alpha")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (DAEBM 5e-4)")
    p.add_argument("--batch", type=int, default=None, help="default 256 (DAEBM 100)")
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--n-eval", type=int, default=2000)
    p.add_argument("--ancestors", type=int, default=4000, help="DRL: hierarchical KL draws")
    p.add_argument("--grid", type=int, default=400, help="KL grid resolution per axis")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.langevin_steps, args.hidden, args.batch = 20, 5, 32, 64
        args.n_train, args.n_eval, args.grid, args.sample_steps = 2000, 300, 150, 50
        args.ancestors = 200
    if args.decay_at is None:
        args.decay_at = int(0.6 * args.steps)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = toy_setup(
        args.estimator, scale=args.scale, levels=args.levels,
        num_langevin_steps=args.langevin_steps, b2=args.b2, loss_weight=args.loss_weight,
        hidden=args.hidden, layers=args.layers,
        fourier_features=args.fourier_features, fourier_scale=args.fourier_scale,
        jump_every=args.jump_every, step_size=args.step_size, sample_steps=args.sample_steps,
        energy_reg=args.energy_reg, buffer_size=min(10000, args.n_train), lr=args.lr,
        batch_size=args.batch, decay_at=args.decay_at, seed=args.seed,
    )  # fmt: skip
    train = D.toy_dataset(args.dataset, args.n_train, args.seed) / setup.scale
    heldout = D.toy_dataset(args.dataset, args.n_eval, args.seed + 1000)
    trainer = Trainer(setup.model, setup.estimator, train, setup.config, run_dir=args.out,
                      seed=args.seed, progress=not args.no_progress)  # fmt: skip
    resumed = trainer.resume()
    t0 = time.monotonic()

    if not args.eval_only:
        trainer.fit(args.steps, max_seconds=60 * args.minutes)
    train_s = time.monotonic() - t0
    model = trainer.ema_model
    res = evaluate(setup, model, args, heldout, args.n_eval, args.seed + 2000)
    samples, grid = res.pop("samples"), res.pop("grid")
    res.update(
        estimator=args.estimator, dataset=args.dataset, seed=args.seed, steps=trainer.step,
        train_seconds_this_run=round(train_s, 1), resumed=resumed,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    )  # fmt: skip
    (args.out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n")
    lim = LIMITS[args.dataset]
    plot(args.out / "density.png", f"{args.estimator}: level-0 model density",
         lambda ax: ax.imshow(grid.log_prob.exp().numpy(), origin="lower", extent=grid.extent,
                              cmap="viridis"))  # fmt: skip
    s = samples.numpy()
    plot(args.out / "samples.png", f"{args.estimator}: {len(s)} samples",
         lambda ax: (ax.scatter(s[:, 0], s[:, 1], s=1), ax.set_xlim(-lim, lim),
                     ax.set_ylim(-lim, lim)))  # fmt: skip
    summary = {k: v for k, v in res.items() if k != "config"}
    print(json.dumps(summary, indent=2))
    return res


if __name__ == "__main__":
    main()
