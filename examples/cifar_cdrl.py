"""Train cooperative diffusion recovery likelihood (CDRL; Zhu et al., ICLR 2024) on CIFAR-10.

The defaults are the paper's CIFAR-10 configuration (``docs/methods/cdrl.md``): T = 6 levels
of the log-SNR schedule (9.8 to -5.1), K = 15 Langevin steps per level with ``b^2 = 4e-4``,
variance reduction, the Tweedie step at the end of generation; the energy is the CDRL
ResNet (width 128, multipliers (1, 2, 2, 2), 8 blocks per resolution, spectral norm; 34.8M
parameters) and the initializer the CDRL U-Net (width 64, multipliers (1, 1, 1), 3 blocks per
resolution, attention at 16 and 8 px, dropout 0.1; 3.8M parameters). Both networks are
trained by one backward pass in two parameter groups: the energy with Adam 1e-4 and a
10,000-step warm-up, the initializer with AdamW 1e-5 (weight decay 0) whose warm-up starts 500
steps ahead, each clipped at norm 1; EMA 0.9999 (sampling uses the EMA weights of both), batch
256, random horizontal flips. Every value can be overridden on the command line.

``--conditional`` trains the class-conditional model with classifier-free guidance (labels
replaced by the null class with probability 0.1; ``--guidance W`` sets the weight of the
samples drawn for grids and ``--eval``).

Run::

    # one GPU
    python examples/cifar_cdrl.py --data ~/data/cifar-10-python.tar.gz --out runs/cdrl
    # 8 GPUs on one machine, the paper's 8 x 32 (the batch is per process)
    torchrun --nproc_per_node 8 examples/cifar_cdrl.py --data ... --out runs/cdrl --batch-size 32
    # continue a run exactly where its last checkpoint left it
    python examples/cifar_cdrl.py --data ... --out runs/cdrl --resume
    # class-conditional, and 50,000 guided samples (w = 0.7) with FID/IS when possible
    python examples/cifar_cdrl.py --data ... --out runs/cdrl_cond --conditional
    python examples/cifar_cdrl.py --out runs/cdrl_cond --conditional --eval-only --eval 50000 \\
        --guidance 0.7 --data ... --inception-weights FILE
    # CI: tiny networks, a few steps, synthetic data, CPU, seconds
    python examples/cifar_cdrl.py --smoke --out /tmp/cdrl

Multi-GPU, resume, bf16/compile, the sample grids and the FID/IS evaluation work as in
``examples/cifar_drl.py`` (both run :mod:`ebmcmc.app.cifar`); see ``docs/cdrl.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from ebmcmc.app.cifar import (  # noqa: E402
    add_output_arguments,
    add_run_arguments,
    in_batches,
    paper_config,
    run,
    save_history_plot,
    smoke_config,
)
from ebmcmc.app.cifar import resolve_config as _resolve_config  # noqa: E402
from ebmcmc.diffusion import CDRLSchedule  # noqa: E402
from ebmcmc.estimators import CooperativeRecoveryLikelihood  # noqa: E402
from ebmcmc.nn import CDRLResNet, CDRLUNet, CooperativeModel  # noqa: E402
from ebmcmc.train import ParamGroup, TrainConfig  # noqa: E402

SCRIPT = "examples/cifar_cdrl.py"
NUM_CLASSES = 10

# --------------------------------------------------------------------------- configuration
PAPER = paper_config(
    num_levels=6,
    logsnr_max=9.8,
    logsnr_min=-5.1,
    langevin_steps=15,
    b2=4e-4,
    denoise_b2=2e-4,
    noise_scale=1.0,
    eval_noise_scale=1.0,
    variance_reduction=True,
    denoise=True,
    # energy (the paper's EBM)
    base_channels=128,
    channel_mult=[1, 2, 2, 2],
    num_res_blocks=8,
    spectral_norm=True,
    # initializer (the paper's U-Net)
    init_channels=64,
    init_channel_mult=[1, 1, 1],
    init_res_blocks=3,
    init_attention=[16, 8],
    init_dropout=0.1,
    # optimisation
    batch_size=256,
    lr=1e-4,
    init_lr=1e-5,
    warmup_steps=10_000,
    init_warmup_offset=500,
    ema_decay=0.9999,
    grad_clip=1.0,
    hflip=True,
    steps=500_000,
    # class-conditional model (--conditional)
    conditional=False,
    label_dropout=0.1,
    guidance=0.0,
)
# tiny everything: CPU, well under a minute
SMOKE = smoke_config(
    PAPER,
    langevin_steps=3,
    base_channels=8,
    channel_mult=[1, 2],
    num_res_blocks=1,
    init_channels=8,
    init_channel_mult=[1, 1],
    init_res_blocks=1,
    init_attention=[16],
    batch_size=8,
    warmup_steps=5,
    init_warmup_offset=1,
)
CONFIGS = {"paper": PAPER, "smoke": SMOKE}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(
        p,
        CONFIGS,
        out="runs/cifar_cdrl",
        synthetic_help="train on N random uint8 CIFAR-shaped images with random labels "
        "(timing and tests only)",
    )
    # CDRL
    p.add_argument("--num-levels", type=int, help="T")
    p.add_argument("--langevin-steps", type=int, help="K")
    p.add_argument("--b2", type=float, help="b^2 of the Langevin step sizes")
    p.add_argument("--denoise-b2", type=float, help="b^2 of the Tweedie step's score scale")
    p.add_argument("--noise-scale", type=float, help="lambda in training")
    p.add_argument("--eval-noise-scale", type=float, help="lambda at generation")
    p.add_argument("--variance-reduction", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None)
    # networks
    p.add_argument("--base-channels", type=int, help="energy width")
    p.add_argument("--channel-mult", type=int, nargs="+", help="energy multipliers")
    p.add_argument("--num-res-blocks", type=int, help="energy blocks per resolution")
    p.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--init-channels", type=int, help="initializer width")
    p.add_argument("--init-channel-mult", type=int, nargs="+")
    p.add_argument("--init-res-blocks", type=int)
    p.add_argument("--init-attention", type=int, nargs="*", help="resolutions with attention")
    p.add_argument("--init-dropout", type=float)
    # optimisation
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--lr", type=float, help="energy learning rate")
    p.add_argument("--init-lr", type=float, help="initializer learning rate")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--init-warmup-offset", type=int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--grad-clip", type=float, help="per network")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None)
    # classifier-free guidance
    p.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=None,
                   help="class-conditional model with a null class (CFG)")  # fmt: skip
    p.add_argument("--label-dropout", type=float, help="probability of the null label")
    p.add_argument("--guidance", type=float, help="guidance weight w of generated samples")
    # speed
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for both networks")
    p.add_argument("--bf16-sampler", action="store_true",
                   help="with --bf16, also autocast the Langevin gradients")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile both networks")
    add_output_arguments(
        p,
        threads_help="CPU threads (smoke default: 1)",
        weights_help="local Inception weights for FID/IS",
        fid_ref_help="FID reference: images or statistics (default: training set)",
    )
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    """The base config updated with every option given on the command line."""
    return _resolve_config(args, CONFIGS)


def build_schedule(cfg: dict) -> CDRLSchedule:
    return CDRLSchedule(cfg["num_levels"], cfg["logsnr_max"], cfg["logsnr_min"])


def build_model(cfg: dict) -> CooperativeModel:
    """The energy and the initializer of ``cfg`` (defaults: 34.8M + 3.8M parameters)."""
    logsnr = build_schedule(cfg).logsnr
    classes = NUM_CLASSES if cfg["conditional"] else None
    energy = CDRLResNet(
        in_channels=3,
        base_channels=cfg["base_channels"],
        channel_mult=tuple(cfg["channel_mult"]),
        num_res_blocks=cfg["num_res_blocks"],
        image_size=32,
        spectral_norm=cfg["spectral_norm"],
        logsnr=logsnr,
        num_classes=classes,
    )
    init = CDRLUNet(
        in_channels=3,
        base_channels=cfg["init_channels"],
        channel_mult=tuple(cfg["init_channel_mult"]),
        num_res_blocks=cfg["init_res_blocks"],
        attention_resolutions=tuple(cfg["init_attention"]),
        dropout=cfg["init_dropout"],
        image_size=32,
        logsnr=logsnr,
        num_classes=classes,
    )
    return CooperativeModel(energy, init)


def build_estimator(cfg: dict) -> CooperativeRecoveryLikelihood:
    return CooperativeRecoveryLikelihood(
        build_schedule(cfg),
        num_langevin_steps=cfg["langevin_steps"],
        step_size_b2=cfg["b2"],
        noise_scale=cfg["noise_scale"],
        variance_reduction=cfg["variance_reduction"],
        denoise=cfg["denoise"],
        denoise_b2=cfg["denoise_b2"],
        num_classes=NUM_CLASSES if cfg["conditional"] else None,
        label_dropout=cfg["label_dropout"],
    )


def train_config(cfg: dict) -> TrainConfig:
    """Adam for the energy, AdamW (weight decay 0) for the initializer, each with its own
    rate, warm-up and clipping."""
    return TrainConfig(
        lr=cfg["lr"],
        betas=(0.9, 0.999),
        warmup_steps=cfg["warmup_steps"],
        grad_clip=cfg["grad_clip"],
        ema_decay=cfg["ema_decay"],
        batch_size=cfg["batch_size"],
        checkpoint_every=cfg["checkpoint_every"],
        param_groups=(
            ParamGroup(
                "initializer.",
                lr=cfg["init_lr"],
                weight_decay=0.0,
                decoupled_weight_decay=True,
                warmup_offset=cfg["init_warmup_offset"],
            ),
        ),
    )


# --------------------------------------------------------------------------- outputs
def save_loss_curve(history: list[dict], path: Path) -> None:
    panels = [
        ("EBM loss", [("loss_ebm", None)]),
        ("energies", [("e_pos", "E(pos)"), ("e_neg", "E(neg)")]),
        ("initializer loss |yK - y0|^2", [("loss_init", None)]),
        ("distance to the positive", [("recovery_mse", "yK"), ("proposal_mse", "y0")]),
    ]
    save_history_plot(history, path, panels, width=15)


def grid_labels(n: int, cfg: dict, device) -> torch.Tensor | None:
    """Labels ``0, 1, .., 9, 0, ..`` for a conditional model's samples (``None`` otherwise)."""
    if not cfg["conditional"]:
        return None
    return torch.arange(n, device=device) % NUM_CLASSES


@torch.no_grad()
def generate(est, model, n, batch, cfg, device, seed) -> torch.Tensor:
    """``n`` samples in batches, with the conditional model's labels cycling over the classes
    and guidance ``cfg["guidance"]``; its own generator (never the trainer's); the estimator
    puts both networks in eval mode while it generates."""
    g = torch.Generator(device=device).manual_seed(seed)
    labels = grid_labels(n, cfg, device)
    return in_batches(n, batch, lambda i, m: est.generate(
        model,
        (m, 3, 32, 32),
        generator=g,
        labels=None if labels is None else labels[i : i + m],
        guidance=cfg["guidance"] if labels is not None else 0.0,
        noise_scale=cfg["eval_noise_scale"],
        device=device,
    ))  # fmt: skip


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)

    def describe(model: torch.nn.Module) -> str:
        assert isinstance(model, CooperativeModel)
        return (
            f"energy {count(model.energy) / 1e6:.2f}M + initializer "
            f"{count(model.initializer) / 1e6:.2f}M parameters, config {cfg['config']}"
            + (", class-conditional" if cfg["conditional"] else "")
        )

    return run(
        args,
        cfg,
        build_model=build_model,
        estimator=build_estimator(cfg),
        train_config=train_config(cfg),
        generate=generate,
        save_loss_curve=save_loss_curve,
        describe=describe,
        with_labels=True,
        script=SCRIPT,
        eval_title=f", guidance {cfg['guidance']}" if cfg["conditional"] else "",
        metrics_extra=dict(guidance=cfg["guidance"]),
    )


if __name__ == "__main__":
    sys.exit(main())
