"""Train diffusion recovery likelihood (DRL; Gao et al., ICLR 2021) on CIFAR-10.

The defaults are the paper's CIFAR-10 configuration (``docs/methods/drl.md``): T = 6
noise levels, K = 30 Langevin steps per level, ``b^2 = 2e-4``, the DRL ResNet (8 residual
blocks per resolution, width 128, multipliers (1, 2, 2, 2), spectral norm; 34.8M parameters),
batch 256, Adam 1e-4 with 1,000 warm-up steps, EMA 0.999 (sampling uses the EMA weights),
random horizontal flips, and ``lambda = 0.99`` for the Langevin noise at evaluation. Every
value can be overridden on the command line.

Run::

    # one GPU
    python examples/cifar_drl.py --data ~/data/cifar-10-python.tar.gz --out runs/drl
    # several GPUs on one machine (the batch is per process: 4 x 64 = 256)
    torchrun --nproc_per_node 4 examples/cifar_drl.py --data ... --out runs/drl --batch-size 64
    # continue a run exactly where its last checkpoint left it
    python examples/cifar_drl.py --data ... --out runs/drl --resume
    # 50,000 samples with the EMA model into runs/drl/samples_50000.npz (+ FID if possible)
    python examples/cifar_drl.py --out runs/drl --eval-only --eval 50000
    # CI: tiny network, a few steps, synthetic data, CPU, seconds
    python examples/cifar_drl.py --smoke --out /tmp/drl

Multi-GPU (``torchrun``): one process per GPU, NCCL on CUDA and gloo on CPU. Each rank draws
its own minibatches with its own generator (seeded ``seed + rank``), the sampler runs on the
plain module, and the parameter gradients are all-reduced (averaged) after ``backward``; the
spectral-norm buffers are broadcast from rank 0 every step, so all ranks hold identical
weights. Logged figures are averaged across ranks; rank 0 writes checkpoints, grids and curves.

The run directory holds ``config.json``, ``checkpoint.pt`` (atomic, every
``--checkpoint-every`` steps; it holds every rank's generator state, so ``--resume`` continues
exactly), ``samples_stepXXXXXXX.png`` grids, ``loss.png`` and ``history.json``. See
``docs/cifar.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from ebmcmc.app.cifar import (  # noqa: E402, F401 (fid_* and synthetic_cifar: used by the tests)
    add_output_arguments,
    add_run_arguments,
    fid_if_possible,
    fid_reference,
    in_batches,
    paper_config,
    run,
    save_history_plot,
    smoke_config,
    synthetic_cifar,
)
from ebmcmc.app.cifar import resolve_config as _resolve_config  # noqa: E402
from ebmcmc.diffusion import DRLSchedule  # noqa: E402
from ebmcmc.estimators import DiffusionRecoveryLikelihood  # noqa: E402
from ebmcmc.nn import DRLResNet  # noqa: E402
from ebmcmc.train import TrainConfig  # noqa: E402

# --------------------------------------------------------------------------- configuration
PAPER = paper_config(
    num_levels=6,
    langevin_steps=30,
    b2=2e-4,
    noise_scale=1.0,
    eval_noise_scale=0.99,
    base_channels=128,
    channel_mult=[1, 2, 2, 2],
    num_res_blocks=8,
    spectral_norm=True,
    dropout=0.0,
    batch_size=256,
    lr=1e-4,
    warmup_steps=1000,
    ema_decay=0.999,
    grad_clip=None,
    hflip=True,
    steps=400_000,  # ASSUMED training length (not verified against the paper or its code)
)
# tiny everything: CPU, well under a minute
SMOKE = smoke_config(
    PAPER,
    langevin_steps=5,
    base_channels=8,
    channel_mult=[1, 2],
    num_res_blocks=1,
    batch_size=8,
    warmup_steps=5,
)
CONFIGS = {"paper": PAPER, "smoke": SMOKE}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(
        p,
        CONFIGS,
        out="runs/cifar_drl",
        synthetic_help="train on N random uint8 CIFAR-shaped images instead of CIFAR-10 (for "
        "timing and tests only; the smoke config does this with 64 when --data is not given)",
    )
    # DRL
    p.add_argument("--num-levels", type=int, help="T")
    p.add_argument("--langevin-steps", type=int, help="K")
    p.add_argument("--b2", type=float, help="b^2 of the Langevin step sizes")
    p.add_argument("--noise-scale", type=float, help="lambda in training")
    p.add_argument("--eval-noise-scale", type=float, help="lambda at evaluation")
    # network
    p.add_argument("--base-channels", type=int)
    p.add_argument("--channel-mult", type=int, nargs="+")
    p.add_argument("--num-res-blocks", type=int)
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--dropout", type=float)
    # optimisation
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    # speed
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    p.add_argument(
        "--bf16-sampler",
        action="store_true",
        help="with --bf16, also autocast the Langevin gradient evaluations (faster; by default "
        "the sampler's gradient wrt x is computed in float32)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    add_output_arguments(
        p,
        threads_help="CPU threads for torch (smoke default: 1)",
        weights_help="local Inception weights for FID/IS (torch-fidelity's or pytorch-fid's file)",
        fid_ref_help="FID reference: an .npz of uint8 N x 32 x 32 x 3 images, or pytorch-fid's "
        "mu/sigma statistics (default: the CIFAR-10 training images at --data)",
    )
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    """The base config updated with every option given on the command line."""
    return _resolve_config(args, CONFIGS)


def build_model(cfg: dict) -> DRLResNet:
    """The DRL ResNet of ``cfg`` (defaults: 34.8M parameters)."""
    return DRLResNet(
        in_channels=3,
        base_channels=cfg["base_channels"],
        channel_mult=tuple(cfg["channel_mult"]),
        num_res_blocks=cfg["num_res_blocks"],
        num_levels=cfg["num_levels"],
        spectral_norm=cfg["spectral_norm"],
        dropout=cfg["dropout"],
        image_size=32,
    )


def build_estimator(cfg: dict) -> DiffusionRecoveryLikelihood:
    return DiffusionRecoveryLikelihood(
        DRLSchedule(cfg["num_levels"]), cfg["langevin_steps"], cfg["b2"], cfg["noise_scale"]
    )


def train_config(cfg: dict) -> TrainConfig:
    return TrainConfig(
        lr=cfg["lr"],
        warmup_steps=cfg["warmup_steps"],
        grad_clip=cfg["grad_clip"],
        ema_decay=cfg["ema_decay"],
        batch_size=cfg["batch_size"],
        checkpoint_every=cfg["checkpoint_every"],
    )


# --------------------------------------------------------------------------- outputs
def save_loss_curve(history: list[dict], path: Path) -> None:
    panels = [
        ("DRL loss", [("loss", None)]),
        ("energies", [("e_pos", "E(pos)"), ("e_neg", "E(neg)")]),
        ("recovery ||y_neg - y_pos||^2", [("recovery_mse", None)]),
    ]
    save_history_plot(history, path, panels, width=12)


@torch.no_grad()
def generate(est, model, n, batch, cfg, device, seed) -> torch.Tensor:
    """``n`` samples with the progressive sampler (lambda = eval_noise_scale), in batches.

    Uses its own generator (never the trainer's) and puts ``model`` in eval mode (no
    spectral-norm power iteration), restoring its mode afterwards.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    was = model.training
    model.eval()
    try:
        return in_batches(n, batch, lambda i, m: est.generate(
            model, (m, 3, 32, 32), generator=g, noise_scale=cfg["eval_noise_scale"], device=device
        ))  # fmt: skip
    finally:
        model.train(was)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)

    def describe(model: torch.nn.Module) -> str:
        n = sum(p.numel() for p in model.parameters())
        return f"{n / 1e6:.2f}M parameters, config {cfg['config']}"

    return run(
        args,
        cfg,
        build_model=build_model,
        estimator=build_estimator(cfg),
        train_config=train_config(cfg),
        generate=generate,
        save_loss_curve=save_loss_curve,
        describe=describe,
        script="examples/cifar_drl.py",
        eval_title=", lambda 0.99",
    )


if __name__ == "__main__":
    sys.exit(main())
