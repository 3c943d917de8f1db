"""Train a diffusion-assisted EBM (DAEBM) on the 8 x 8 digits or MNIST; generate; score.

The configuration is :func:`ebmcmc.app.setups.digits_setup` with ``"daebm"``: one network
``E(x, t)`` (a :class:`~ebmcmc.nn.TimeMLP` on the flattened pixels) over ``T + 1 = 51``
levels of the sqrtcumlinear schedule, positives diffused to uniform levels, negatives from a
persistent buffer advanced by one Metropolis-within-Gibbs transition per iteration (40
Langevin steps at the chain's level, unadjusted at first and Metropolis-adjusted later, then
an exact draw of the level), per-level step sizes adapted online. MNIST uses the same set-up
with a 512-wide network on 784 pixels; it needs ``--data`` pointing at the IDX files.

After training it writes to ``--out``:

* ``samples.png``: images generated from noise at ``t = T``, collected at ``t = 0``
  (:meth:`~ebmcmc.estimators.DiffusionAssistedEBM.generate`; ``--rule visits`` is the
  paper's 50th-visit rule);
* ``metrics.json``: the classifier FID of the samples against held-out images
  (:class:`ebmcmc.evaluation.ClassifierFID`) with the held-out-vs-train floor, the OOD AUROC
  table for two scores (the marginal ``log p(x) = logsumexp_t(-E(x, t))`` and the level-0
  ``-E(x, 0)``) against the sets of :func:`ebmcmc.datasets.mnist_ood_sets` (for the digits:
  inverted, rotated, uniform and constant images at 8 x 8), the adapted step sizes and the
  level visits of generation;
* ``checkpoint.pt``: the Trainer's (model, optimiser, buffer, step sizes; a rerun resumes).

Example::

    python examples/mnist_daebm.py --minutes 10 --out out/digits_daebm
    python examples/mnist_daebm.py --dataset mnist --data /path/to/mnist --out out/mnist_daebm
    python examples/mnist_daebm.py --smoke --out /tmp/daebm   # CI: seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import digits_setup
from ebmcmc.estimators import DiffusionAssistedEBM
from ebmcmc.evaluation import ClassifierFID, level_score, marginal_score, ood_auroc_table
from ebmcmc.nn import TimeMLP
from ebmcmc.train import Trainer


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    p.add_argument("--data", type=Path, default=None, help="MNIST: directory of the IDX files")
    p.add_argument("--out", type=Path, default=Path("out/digits_daebm"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--steps", type=int, default=3000, help="maximum training steps")
    p.add_argument("--levels", type=int, default=50, help="T (the model has T + 1 levels)")
    p.add_argument("--mcmc-steps", type=int, default=40, help="K, Langevin steps per transition")
    p.add_argument("--hidden", type=int, default=None, help="default 256 (digits), 512 (MNIST)")
    p.add_argument("--metropolis-after", type=int, default=None,
                   help="iterations of unadjusted Langevin (default: the set-up's)")  # fmt: skip
    p.add_argument("--adapt", choices=("band", "dual_averaging", "none"), default=None,
                   help="step-size rule (default: the set-up's)")  # fmt: skip
    p.add_argument(
        "--rule",
        choices=("every", "visits"),
        default="every",
        help="generation: collect every visit to t = 0, or the 50th (the paper)",
    )
    p.add_argument("--burn-in", type=int, default=100, help="generation: transitions of burn-in")
    p.add_argument("--n-samples", type=int, default=1000, help="samples for the FID")
    p.add_argument("--n-ood", type=int, default=1000, help="images per OOD set (at most)")
    p.add_argument("--cache", type=Path, default=None, help="classifier cache directory")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (seconds)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.mcmc_steps, args.levels, args.hidden = 6, 3, 8, 32
        args.n_samples, args.n_ood, args.burn_in = 100, 100, 2
        args.metropolis_after = 3 if args.metropolis_after is None else args.metropolis_after
    return args


def load(args):
    """Training and held-out images ``(N, 1, S, S)`` in [-1, 1]."""
    if args.dataset == "digits":
        return D.load_digits("train")[0], D.load_digits("test")[0]
    if args.data is None:
        raise SystemExit("--dataset mnist needs --data DIR (the folder with the IDX files)")
    return D.load_mnist(args.data, "train")[0], D.load_mnist(args.data, "test")[0]


def grid_png(path: Path, images: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = max(1, int(min(64, images.shape[0]) ** 0.5))
    fig, axes = plt.subplots(side, side, figsize=(side * 0.6, side * 0.6 + 0.3), squeeze=False)
    for ax, img in zip(axes.ravel(), images[: side * side], strict=False):
        ax.imshow(img.squeeze(0).numpy(), cmap="gray", vmin=-1, vmax=1)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = load(args)
    side = train.shape[-1]
    hidden = args.hidden or (256 if args.dataset == "digits" else 512)
    setup = digits_setup("daebm", levels=args.levels, num_langevin_steps=args.mcmc_steps,
                         hidden=hidden, seed=args.seed)  # fmt: skip
    est = setup.estimator
    if args.metropolis_after is not None or args.adapt is not None:  # the set-up, changed
        adapt = est.adapt if args.adapt is None else (None if args.adapt == "none" else args.adapt)
        after = est.metropolis_after if args.metropolis_after is None else args.metropolis_after
        est = setup.estimator = DiffusionAssistedEBM(
            est.schedule, num_mcmc_steps=est.num_mcmc_steps, buffer_size=est.buffer_size,
            step_size=est.step_sizes, metropolis_after=after, adapt=adapt,
        )  # fmt: skip
    if side != 8:  # MNIST: the same set-up on 784 pixels
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            setup.model = TimeMLP(side * side, hidden=hidden, num_levels=est.num_levels)
    model = setup.model
    flat = train.reshape(train.shape[0], -1)
    trainer = Trainer(model, est, flat, setup.config, run_dir=args.out, seed=args.seed,
                      progress=not args.no_progress)  # fmt: skip
    resumed = trainer.resume()
    t0 = time.monotonic()
    trainer.fit(args.steps, max_seconds=60 * args.minutes)
    train_s = time.monotonic() - t0

    g = torch.Generator().manual_seed(args.seed + 1)
    t1 = time.monotonic()
    gen = est.generate(model, args.n_samples, (side * side,), g, rule=args.rule,
                       num_chains=args.n_samples, burn_in=args.burn_in,
                       max_transitions=args.burn_in + (2000 if not args.smoke else 50),
                       progress=not args.no_progress)  # fmt: skip
    gen_s = time.monotonic() - t1
    images = gen.samples.clamp(-1, 1).reshape(-1, 1, side, side)

    def image_model(x, t):
        return model(x.flatten(1), t)

    scores = {"marginal": marginal_score(image_model, est.num_levels),
              "level0": level_score(image_model, 0)}  # fmt: skip
    n_ood = min(args.n_ood, test.shape[0])
    sets = D.OOD_SETS if side == 28 else tuple(s for s in D.OOD_SETS if s != "digits")
    ood = D.mnist_ood_sets(test, n_ood, args.seed, sets=sets)
    model.eval()
    table = {name: ood_auroc_table(score, test[:n_ood], ood) for name, score in scores.items()}

    res: dict = {
        "dataset": args.dataset, "steps": trainer.step, "resumed": resumed,
        "train_seconds_this_run": round(train_s, 1), "generate_seconds": round(gen_s, 1),
        "levels": est.num_levels - 1, "mcmc_steps": est.num_mcmc_steps,
        "generation": {"rule": args.rule, "collected": int(gen.samples.shape[0]),
                       "complete": gen.complete, "transitions": gen.num_transitions,
                       "level_visits": gen.level_visits.tolist()},
        "step_sizes": [float(f"{v:.4g}") for v in est.step_sizes],
        "ood_auroc": table,
    }  # fmt: skip
    if images.shape[0] >= 2:
        fid = ClassifierFID(args.dataset, cache_dir=args.cache, data_path=args.data)
        res["fid"] = fid.fid(test, images)
        res["fid_train_vs_test"] = fid.fid(test, train[: max(len(test), args.n_samples)])
        res["classifier_test_accuracy"] = fid.test_accuracy
    title = f"DAEBM: {images.shape[0]} samples, FID {res.get('fid', float('nan')):.2f}"
    if images.shape[0]:
        grid_png(args.out / "samples.png", images, title)
    (args.out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
