"""Train DRL (or, by flag, cooperative DRL, CD-k, short-run ML or PCD) on the 8 x 8 digits or
MNIST.

Writes a sample grid (``samples.png``), ``metrics.json`` with the classifier FID of the
generated samples against held-out images (:class:`ebmcmc.metrics.ClassifierFID`: a small CNN
trained once on CPU and cached; no download) and, as the floor, the FID of held-out images
against training images, and the Trainer's ``checkpoint.pt`` (a second run resumes it).

The model is a :class:`~ebmcmc.nn.TimeMLP` on the flattened pixels and the configuration
:func:`ebmcmc.app.setups.digits_setup` (DRL with the paper's image constants: T = 6, K = 30,
b^2 = 2e-4). ``--estimator cdrl`` is cooperative DRL with the same energy network plus an
initializer (:class:`~ebmcmc.nn.CDRLInitializerMLP`) and the CDRL paper's constants (its
log-SNR schedule, T = 6, K = 15, b^2 = 4e-4; the initializer's learning rate a tenth of the
energy's), so that the two estimators can be compared on equal networks. MNIST (784 pixels)
uses the same set-ups with 512-wide networks; it needs ``--data`` pointing at the folder with
the IDX files.

Example::

    python examples/mnist_drl.py --estimator drl --minutes 5 --out out/digits_drl
    python examples/mnist_drl.py --estimator cd --minutes 5 --out out/digits_cd
    python examples/mnist_drl.py --estimator cdrl --minutes 5 --out out/digits_cdrl
    python examples/mnist_drl.py --dataset mnist --data path/to/mnist --out out/mnist
    python examples/mnist_drl.py --smoke --out /tmp/digits   # CI: a few steps
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ebmcmc import datasets as D
from ebmcmc.app.setups import ESTIMATORS, digits_setup
from ebmcmc.evaluation import ClassifierFID
from ebmcmc.train import Trainer


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--estimator", choices=ESTIMATORS, default="drl")
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    p.add_argument("--data", type=Path, default=None, help="MNIST: directory of the IDX files")
    p.add_argument("--out", type=Path, default=Path("out/digits"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--steps", type=int, default=3000, help="maximum training steps")
    p.add_argument("--b2", type=float, default=None,
                   help="DRL, CDRL: b^2; default 2e-4 (CDRL 4e-4)")  # fmt: skip
    p.add_argument("--loss-weight", choices=("paper", "likelihood"), default="paper",
                   help="DRL: loss weights")  # fmt: skip
    p.add_argument(
        "--langevin-steps",
        "--K",
        dest="langevin_steps",
        type=int,
        default=None,
        help="Langevin steps per loss (per level for DRL and CDRL); default 30 (CDRL 15)",
    )
    p.add_argument("--step-size", type=float, default=1e-3, help="baselines: Langevin eps")
    p.add_argument("--hidden", type=int, default=None, help="default 256 (digits), 512 (MNIST)")
    p.add_argument("--n-samples", type=int, default=1000, help="samples for the FID")
    p.add_argument("--cache", type=Path, default=None, help="classifier cache directory")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.langevin_steps, args.n_samples, args.hidden = 10, 3, 200, 32
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

    n = min(64, images.shape[0])
    side = int(n**0.5)
    fig, axes = plt.subplots(side, side, figsize=(side * 0.6, side * 0.6 + 0.3))
    for ax, img in zip(axes.ravel(), images[: side * side], strict=True):
        ax.imshow(img.squeeze(0).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_setup(args, side: int, hidden: int):
    """The set-up of ``args`` (this script's options) for ``side x side`` images."""
    setup = digits_setup(args.estimator, num_langevin_steps=args.langevin_steps, b2=args.b2,
                         loss_weight=args.loss_weight, step_size=args.step_size, hidden=hidden,
                         decay_at=int(0.6 * args.steps), seed=args.seed)  # fmt: skip
    if side != 8:  # MNIST: the same set-up on 784 pixels
        from ebmcmc.nn import CDRLInitializerMLP, CooperativeModel, TimeMLP

        if args.estimator == "cdrl":  # both networks of the cooperative model
            sched = setup.estimator.schedule
            setup.model = CooperativeModel(
                TimeMLP(side * side, hidden=hidden, num_levels=sched.num_levels),
                CDRLInitializerMLP(side * side, hidden=hidden, logsnr=sched.logsnr),
            )
        else:
            levels = setup.model.num_levels
            setup.model = TimeMLP(side * side, hidden=hidden, num_levels=levels)
        setup.dim = side * side
    return setup


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = load(args)
    side = train.shape[-1]
    hidden = args.hidden or (256 if args.dataset == "digits" else 512)
    setup = make_setup(args, side, hidden)
    flat = train.reshape(train.shape[0], -1)
    trainer = Trainer(setup.model, setup.estimator, flat, setup.config, run_dir=args.out,
                      seed=args.seed, progress=not args.no_progress)  # fmt: skip
    resumed = trainer.resume()
    t0 = time.monotonic()

    trainer.fit(args.steps, max_seconds=60 * args.minutes)
    train_s = time.monotonic() - t0
    g = torch.Generator().manual_seed(args.seed + 1)
    samples = setup.generate(args.n_samples, g, trainer.ema_model).clamp(-1, 1)
    images = samples.reshape(-1, 1, side, side)
    fid = ClassifierFID(args.dataset, cache_dir=args.cache, data_path=args.data)
    res = {
        "estimator": args.estimator, "dataset": args.dataset, "steps": trainer.step,
        "train_seconds_this_run": round(train_s, 1), "resumed": resumed,
        "fid": fid.fid(test, images),
        "fid_train_vs_test": fid.fid(test, train[: max(len(test), args.n_samples)]),
        "classifier_test_accuracy": fid.test_accuracy,
    }  # fmt: skip
    grid_png(args.out / "samples.png", images, f"{args.estimator}: samples, FID {res['fid']:.2f}")
    (args.out / "metrics.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
