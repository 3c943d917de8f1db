"""Train an EBM on a 2-D toy set and score it: density and sample plots, KL and MMD.

Estimators: ``drl`` (diffusion recovery likelihood), ``cd`` (CD-k from the data),
``short-run`` (short-run ML from noise) and ``pcd`` (persistent CD with a replay buffer).
Data sets: ``eight_gaussians``, ``grid25``, ``rings``, ``checkerboard``, ``swiss_roll``.

The 2-D DRL configuration (the paper's constants b^2 = 2e-4, K = 30 were set for images):

* data divided by ``--scale 2`` (eight Gaussians: radius 1, sd 0.05);
* ``DRLSchedule(T=6)`` (the paper's levels), ``K = 30`` Langevin steps per level;
* ``b^2 = 4e-3`` (20x the paper's): step ``s_0 = 0.021`` at level 0, about a third of
  a mode's sd, so 30 steps can move a chain from ``x_1`` onto its mode;
* ``TimeMLP(2, hidden=128, num_layers=3, silu)``; Adam lr 1e-3, betas (0.5, 0.999), 100 warm-up
  steps, lr x 0.2 from step 600, batch 256, gradient clipping at 1, EMA 0.99.

Measured (10 minutes on a loaded 2-core CPU, 3 855 steps, see docs/training.md): KL 1.57 nats
and an MMD ratio (generated vs held-out over data vs data) of 17 -- the model learns the ring
but not yet the eight angular modes; the issue's targets (KL <= 0.1, ratio <= 2) are not met.
``--b2-level0`` sets level 0's step from its own b^2 (2e-2 is stable and less noisy).

Level 0's marginal model is ``p(x_0) ∝ exp(-E(a'_1 x_0, 0) / s_0^2)``: the recovery energy
is ``E / s_t^2 + tether``, so the network output divided by ``s_0^2`` is the log density. Its
data density is the data convolved with ``sigma_bar_0 = 0.01`` of noise (in scaled units), so
KL(data || model) is computed against ``eight_gaussians_target(noise_std=0.01 * scale)`` in
the data's own units. The baselines' model is ``p(x) ∝ exp(-E(x))`` against the exact data.

Outputs in ``--out``: ``checkpoint.pt`` (the Trainer's; a second run resumes it),
``density.png``, ``samples.png`` and ``metrics.json`` (KL where the data density is exact;
squared MMD, V-statistic, of generated samples vs held-out data and, as the floor, of the
held-out data vs independent data samples of the same size (mean of 8), with one kernel).

Example::

    python examples/toy2d.py --estimator drl --dataset eight_gaussians --minutes 10 --out out/toy
    python examples/toy2d.py --smoke --out /tmp/toy   # CI: a few steps, < 20 s
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ebmcmc import data as D
from ebmcmc.diffusion import DRLSchedule
from ebmcmc.estimators import (
    ContrastiveDivergence,
    DiffusionRecoveryLikelihood,
    PersistentContrastiveDivergence,
    ShortRunML,
    uniform_noise,
)
from ebmcmc.kernels import Langevin
from ebmcmc.metrics import DEFAULT_MMD_SCALES, kl_on_grid, median_bandwidth, model_log_prob_on_grid
from ebmcmc.nn import TimeMLP
from ebmcmc.train import TrainConfig, Trainer

DATASETS = ("eight_gaussians", "grid25", "rings", "checkerboard", "swiss_roll")
ESTIMATORS = ("drl", "cd", "short-run", "pcd")
# half-width of the plotting / KL grid in data units
LIMITS = {"eight_gaussians": 3.0, "grid25": 3.0, "rings": 5.0, "checkerboard": 2.5,
          "swiss_roll": 2.5}  # fmt: skip


def data_target(name: str, noise_std: float):
    """The exact data density (convolved with ``noise_std``) where one exists, else None."""
    if name == "eight_gaussians":
        return D.eight_gaussians_target(noise_std)
    if name == "grid25":
        return D.grid25_target(noise_std)
    if name == "rings":
        return D.rings_target(noise_std)
    return None


def mmd_v(x: torch.Tensor, y: torch.Tensor, bandwidths: torch.Tensor) -> float:
    """Biased (V-statistic) squared MMD with a sum of RBF kernels; > 0 for finite samples."""
    x, y = x.double(), y.double()

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths.tolist()).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


def build(args, n_train: int):
    """Model and estimator for ``args``."""
    if args.estimator == "drl":
        sched = DRLSchedule(args.levels)
        model = TimeMLP(2, hidden=args.hidden, num_levels=args.levels)
        est = DiffusionRecoveryLikelihood(sched, langevin_steps=args.K, step_size_b2=args.b2)
        if args.b2_level0 is not None:  # level 0's step from its own b^2 (s_0^2 = b^2 sigma_1^2)
            est.step_sizes = est.step_sizes.clone()
            est.step_sizes[0] = sched.step_size(args.b2_level0)[0]
        return model, est
    model = TimeMLP(2, hidden=args.hidden, num_levels=1)
    kernel = Langevin(step_size=args.step_size)
    noise = uniform_noise(-1.5, 1.5)
    if args.estimator == "cd":
        est = ContrastiveDivergence(kernel, args.K, energy_reg=args.energy_reg)
    elif args.estimator == "short-run":
        est = ShortRunML(kernel, args.K, noise=noise, energy_reg=args.energy_reg)
    else:
        est = PersistentContrastiveDivergence(
            kernel, args.K, buffer_size=min(10000, n_train), noise=noise,
            energy_reg=args.energy_reg,
        )  # fmt: skip
    return model, est


def level0_energy(model, est, scale: float):
    """The model's energy at level 0 in the data's own units (normalisable on a grid)."""
    if isinstance(est, DiffusionRecoveryLikelihood):
        a1 = float(est.schedule.signal_prime[1])
        s0sq = float(est.step_sizes[0]) ** 2
        return lambda x: model(a1 * x / scale, 0) / s0sq
    return lambda x: model(x / scale)


@torch.no_grad()
def generate(model, est, n: int, generator, args) -> torch.Tensor:
    """Samples in scaled units."""
    if isinstance(est, DiffusionRecoveryLikelihood):
        return est.generate(model, (n, 2), generator, clip=None)
    x = uniform_noise(-1.5, 1.5)((n, 2), generator, torch.zeros(1))
    kernel = Langevin(step_size=args.step_size)
    with torch.enable_grad():
        state = kernel.init(model, x, validate=False)
        for _ in range(args.sample_steps):
            state, _ = kernel.step(model, state, generator)
    return state.position.detach()


def lr_decay_callback(args):
    """A Trainer callback: the learning rate drops by ``args.lr_decay`` at a fixed step.

    It is a function of the step alone, so a resumed run follows the same schedule.
    """

    def callback(trainer, rec):
        factor = args.lr_decay if trainer.step >= args.lr_decay_step else 1.0
        trainer.scheduler.base_lrs = [args.lr * factor for _ in trainer.scheduler.base_lrs]

    return callback


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


def evaluate(model, est, args, heldout: torch.Tensor, n_eval: int, seed: int) -> dict:
    """KL (where exact), MMD of generated samples vs held-out data and of data vs data."""
    out: dict = {}
    scale, lim = args.scale, LIMITS[args.dataset]
    is_drl = isinstance(est, DiffusionRecoveryLikelihood)
    noise_std = 0.01 * scale if is_drl else 0.0  # sigma_bar_0 = 0.01 in scaled units
    energy = level0_energy(model, est, scale)
    target = data_target(args.dataset, noise_std)
    res = args.grid
    if args.dataset == "rings" and not args.smoke:
        res = max(res, 1000)  # the rings' sd is 0.01: the cells must be narrower than that
    if target is not None:
        out["kl"] = kl_on_grid(target.log_prob, energy, lim, res, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    gen = generate(model, est, n_eval, g, args) * scale
    ref = heldout[:n_eval]
    # compare like with like: DRL's level 0 carries sigma_bar_0 of noise
    ref = ref + noise_std * torch.randn(ref.shape, generator=g)
    bw = median_bandwidth(ref) * torch.tensor(DEFAULT_MMD_SCALES, dtype=torch.float64)
    out["mmd_gen_vs_heldout"] = mmd_v(ref, gen, bw)
    floor = []  # data vs data: the mean over 8 independent samples (one alone is too noisy)
    for k in range(1, 9):
        other = D.toy_dataset(args.dataset, n_eval, seed + k)
        floor.append(mmd_v(ref, other + noise_std * torch.randn(other.shape, generator=g), bw))
    out["mmd_data_vs_data"] = sum(floor) / len(floor)
    out["mmd_ratio"] = out["mmd_gen_vs_heldout"] / out["mmd_data_vs_data"]
    out["n_eval"] = n_eval
    out["samples"] = gen
    out["grid"] = model_log_prob_on_grid(energy, lim, min(res, 300), dtype=torch.float32)
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Default 2-D DRL configuration: data / 2, "
        "DRLSchedule(6), K=30, b2=4e-3, TimeMLP(hidden=128), Adam lr 1e-3 betas (0.5, 0.999), "
        "batch 256, grad clip 1, EMA 0.99; level-0 density exp(-E(a'_1 x, 0) / s_0^2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--estimator", choices=ESTIMATORS, default="drl")
    p.add_argument("--dataset", choices=DATASETS, default="eight_gaussians")
    p.add_argument("--out", type=Path, default=Path("out/toy2d"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget")
    p.add_argument("--steps", type=int, default=100000, help="maximum training steps")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in --out")
    p.add_argument("--scale", type=float, default=2.0, help="data are divided by this")
    p.add_argument("--levels", type=int, default=6, help="DRL: T")
    p.add_argument("--K", type=int, default=30, help="Langevin steps per loss")
    p.add_argument("--b2", type=float, default=4e-3, help="DRL: b^2 of the step sizes")
    p.add_argument("--b2-level0", type=float, default=None, help="DRL: b^2 of level 0 only")
    p.add_argument("--step-size", type=float, default=1e-3, help="baselines: Langevin eps")
    p.add_argument("--sample-steps", type=int, default=500, help="baselines: steps to sample")
    p.add_argument("--energy-reg", type=float, default=0.1, help="baselines: alpha")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr-decay-step", type=int, default=600, help="multiply lr by --lr-decay here")
    p.add_argument("--lr-decay", type=float, default=0.2)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--n-eval", type=int, default=2000)
    p.add_argument("--grid", type=int, default=400, help="KL grid resolution per axis")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.K, args.hidden, args.batch = 20, 5, 32, 64
        args.n_train, args.n_eval, args.grid, args.sample_steps = 2000, 300, 150, 50
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train = D.toy_dataset(args.dataset, args.n_train, args.seed) / args.scale
    heldout = D.toy_dataset(args.dataset, args.n_eval, args.seed + 1000)
    model, est = build(args, args.n_train)
    cfg = TrainConfig(
        lr=args.lr, betas=(args.beta1, 0.999), warmup_steps=args.warmup, grad_clip=args.clip,
        ema_decay=args.ema, batch_size=args.batch, checkpoint_every=200,
    )  # fmt: skip
    trainer = Trainer(model, est, train, cfg, run_dir=args.out, seed=args.seed,
                      progress=not args.no_progress)  # fmt: skip
    resumed = trainer.resume()
    deadline = time.monotonic() + 60 * args.minutes
    t0 = time.monotonic()

    decay = lr_decay_callback(args)

    def stop_on_time(tr, rec):
        decay(tr, rec)
        if time.monotonic() > deadline:
            raise _OutOfTime

    try:
        if not args.eval_only:
            trainer.fit(args.steps, callback=stop_on_time)
    except _OutOfTime:
        trainer.save()
    train_s = time.monotonic() - t0
    res = evaluate(trainer.ema_model, est, args, heldout, args.n_eval, args.seed + 2000)
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


class _OutOfTime(Exception):
    pass


if __name__ == "__main__":
    main()
