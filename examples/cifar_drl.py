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
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ebmcmc._files import atomic_write  # noqa: E402
from ebmcmc.datasets import load_cifar10, random_hflip  # noqa: E402
from ebmcmc.diffusion import DRLSchedule  # noqa: E402
from ebmcmc.estimators import DiffusionRecoveryLikelihood  # noqa: E402
from ebmcmc.evaluation import InceptionUnavailable, inception_metrics, to_uint8  # noqa: E402
from ebmcmc.evaluation.inception import inception_backend  # noqa: E402
from ebmcmc.nn import DRLResNet  # noqa: E402
from ebmcmc.train import (  # noqa: E402
    DistributedContext,
    DistributedTrainer,
    TrainConfig,
    Trainer,
    WrappedEstimator,
    autocast_wrapper,
)

# --------------------------------------------------------------------------- configuration
PAPER = dict(
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
    checkpoint_every=1000,
    sample_every=5000,
    num_grid=64,
    eval_batch=500,
    synthetic_size=0,
)
# tiny everything: CPU, well under a minute
SMOKE = dict(
    PAPER,
    langevin_steps=5,
    base_channels=8,
    channel_mult=[1, 2],
    num_res_blocks=1,
    batch_size=8,
    warmup_steps=5,
    steps=20,
    checkpoint_every=5,
    sample_every=10,
    num_grid=16,
    eval_batch=16,
    synthetic_size=64,
)
CONFIGS = {"paper": PAPER, "smoke": SMOKE}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", choices=sorted(CONFIGS), default="paper", help="base config")
    p.add_argument("--smoke", action="store_true", help="alias of --config smoke")
    p.add_argument("--out", default="runs/cifar_drl", help="run directory")
    p.add_argument("--data", default=None, help="cifar-10-python.tar.gz or cifar-10-batches-py/")
    p.add_argument(
        "--synthetic-data",
        type=int,
        default=None,
        metavar="N",
        help="train on N random uint8 CIFAR-shaped images instead of CIFAR-10 (for timing "
        "and tests only; the smoke config does this with 64 when --data is not given)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, help="total optimisation steps")
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
    # outputs
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--sample-every", type=int, help="sample grid + loss curve every N steps")
    p.add_argument("--num-grid", type=int, help="images per sample grid")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (smoke default: 1)"
    )
    # evaluation
    p.add_argument("--eval", type=int, default=0, metavar="N", help="generate N samples at end")
    p.add_argument("--eval-only", action="store_true", help="skip training; load the checkpoint")
    p.add_argument("--eval-batch", type=int)
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="FILE",
        help="local Inception weights for FID/IS (torch-fidelity's or pytorch-fid's file)",
    )
    p.add_argument(
        "--fid-ref",
        default=None,
        metavar="NPZ",
        help="FID reference: an .npz of uint8 N x 32 x 32 x 3 images, or pytorch-fid's mu/sigma "
        "statistics (default: the CIFAR-10 training images at --data)",
    )
    # test-only
    p.add_argument("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--write-param-hash", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--benchmark", type=int, default=0, help=argparse.SUPPRESS)
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    """The base config updated with every option given on the command line."""
    cfg = dict(CONFIGS["smoke" if args.smoke else args.config])
    cfg["config"] = "smoke" if args.smoke else args.config
    for key in list(PAPER):
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    if args.synthetic_data is not None:
        cfg["synthetic_size"] = args.synthetic_data
    for key in ("seed", "bf16", "bf16_sampler", "compile", "data"):
        cfg[key] = getattr(args, key)
    return cfg


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


# --------------------------------------------------------------------------- data
def synthetic_cifar(n: int, seed: int) -> torch.Tensor:
    """SYNTHETIC stand-in for CIFAR-10: ``n`` uniform random uint8 images scaled to [-1, 1].

    Only for smoke tests and timing; it is noise, not CIFAR-10.
    """
    g = torch.Generator().manual_seed(seed + 12345)
    raw = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return raw.float().div_(127.5).sub_(1.0)


def load_data(cfg: dict, log) -> torch.Tensor:
    if cfg["data"] is not None:
        try:
            x, _ = load_cifar10(cfg["data"], "train")
        except FileNotFoundError as err:
            raise SystemExit(
                f"error: CIFAR-10 not found: {err}\nDownload cifar-10-python.tar.gz from "
                "https://www.cs.toronto.edu/~kriz/cifar.html yourself (this script never "
                "downloads) and pass --data PATH."
            ) from None
        except (pickle.UnpicklingError, ValueError) as err:
            raise SystemExit(
                f"error: refusing to load {cfg['data']}: {err}\n(the batch files are read "
                "with a restricted unpickler; nothing in them was executed)"
            ) from None
        log(f"CIFAR-10 train: {tuple(x.shape)} from {cfg['data']}")
        return x
    if cfg["synthetic_size"]:
        log(
            f"SYNTHETIC DATA: {cfg['synthetic_size']} random uint8 images (not CIFAR-10; "
            "smoke test / timing only)"
        )
        return synthetic_cifar(cfg["synthetic_size"], cfg["seed"])
    raise SystemExit(
        "error: no data; pass --data PATH to cifar-10-python.tar.gz or cifar-10-batches-py/ "
        "(this script never downloads), or --synthetic-data N for a timing run on noise"
    )


# --------------------------------------------------------------------------- outputs
def save_grid(x: torch.Tensor, path: Path, title: str = "") -> None:
    imgs = to_uint8(x)
    n = imgs.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = imgs.shape[1:3]
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = imgs[i]
    fig, ax = plt.subplots(figsize=(cols * 0.6 + 0.5, rows * 0.6 + 0.7))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_loss_curve(history: list[dict], path: Path) -> None:
    if not history:
        return
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(steps, [h["loss"] for h in history], lw=0.7)
    axes[0].set_title("DRL loss")
    axes[1].plot(steps, [h.get("e_pos", np.nan) for h in history], lw=0.7, label="E(pos)")
    axes[1].plot(steps, [h.get("e_neg", np.nan) for h in history], lw=0.7, label="E(neg)")
    axes[1].legend(fontsize=7)
    axes[1].set_title("energies")
    axes[2].plot(steps, [h.get("recovery_mse", np.nan) for h in history], lw=0.7)
    axes[2].set_title("recovery ||y_neg - y_pos||^2")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def generate(est, model, n, batch, cfg, device, seed) -> torch.Tensor:
    """``n`` samples with the progressive sampler (lambda = eval_noise_scale), in batches.

    Uses its own generator (never the trainer's) and puts ``model`` in eval mode (no
    spectral-norm power iteration), restoring its mode afterwards.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, n, batch):
            m = min(batch, n - i)
            with torch.enable_grad():
                x = est.generate(
                    model,
                    (m, 3, 32, 32),
                    generator=g,
                    noise_scale=cfg["eval_noise_scale"],
                    device=device,
                )
            out.append(x.cpu())
    finally:
        model.train(was)
    return torch.cat(out)


def param_hash(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for sd in (trainer.model.state_dict(), trainer.ema_model.state_dict()):
        for k in sorted(sd):
            h.update(k.encode())
            h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fid_reference(args, cfg: dict) -> dict[str, np.ndarray]:
    """The FID reference, read once: ``{"images": uint8 (N, 32, 32, 3)}`` from ``--fid-ref``
    (its first array) or, by default, the CIFAR-10 training images at ``--data``;
    ``{"mu": ..., "sigma": ...}`` when ``--fid-ref`` holds pytorch-fid's statistics; ``{}``
    when there is neither."""
    if args.fid_ref is not None:
        ref = np.load(args.fid_ref)
        if "mu" in ref.files:
            return {"mu": ref["mu"], "sigma": ref["sigma"]}
        return {"images": ref[ref.files[0]]}
    if cfg["data"] is not None:
        return {"images": to_uint8(load_cifar10(cfg["data"], "train")[0])}
    return {}


def fid_if_possible(npz: Path, cfg: dict, args, log, script: str = "examples/cifar_drl.py") -> dict:
    """FID (and IS) of the samples in ``npz`` through torch-fidelity or pytorch-fid, with the
    Inception weights at ``--inception-weights`` (never downloaded). Returns the metrics
    computed (``{}`` with a message saying how to compute them when that is not possible;
    ``script`` is the command the message suggests)."""
    how = (
        f"To compute them here: install torch-fidelity (FID and IS) or pytorch-fid (FID), "
        f"put its Inception weights in a local file, and run\n"
        f"  python {script} --out {args.out} --eval-only --eval 50000 "
        f"--data PATH/cifar-10-python.tar.gz --inception-weights FILE\n"
        f"(torch-fidelity: weights-inception-2015-12-05-6726825d.pth; pytorch-fid: "
        f"pt_inception-2015-12-05-6726825d.pth), or feed {npz} (key 'samples': uint8 "
        f"N x 32 x 32 x 3) to your own FID/IS tool."
    )
    backend = inception_backend()
    w = args.inception_weights
    if backend is None:
        log(f"FID/IS not computed: neither torch-fidelity nor pytorch-fid imports here "
            f"(weights and data are never downloaded).\n{how}")  # fmt: skip
        return {}
    if w is None or not Path(w).is_file():
        log(f"FID/IS not computed: --inception-weights must name an existing local file "
            f"(given: {w}); weights are never downloaded.\n{how}")  # fmt: skip
        return {}
    ref = fid_reference(args, cfg)
    try:
        out = inception_metrics(np.load(npz)["samples"], w, ref or None, backend=backend)
    except InceptionUnavailable as err:
        log(f"FID/IS not computed: {err}; give reference images with --data or --fid-ref.\n{how}")
        return {}
    if "is_mean" in out:
        msg = f"IS = {out['is_mean']:.3f} ± {out['is_std']:.3f}"
        if "fid" in out:
            msg += f", FID = {out['fid']:.3f} against {len(ref['images'])} reference images"
        else:
            msg += " (FID needs --data or --fid-ref images)"
        log(msg + " (torch-fidelity)")
    else:
        log(f"FID = {out['fid']:.3f} (pytorch-fid features; IS needs torch-fidelity)")
    return out


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    threads = args.threads if args.threads is not None else (1 if cfg["config"] == "smoke" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    dd = DistributedContext(args.device)
    out = Path(args.out)
    progress = dd.is_main and not args.no_progress

    def log(msg: str) -> None:
        if dd.is_main:
            print(msg, flush=True)

    try:
        if dd.is_main:
            out.mkdir(parents=True, exist_ok=True)
        dd.barrier()
        torch.manual_seed(cfg["seed"])  # same initial weights on every rank
        model = build_model(cfg).to(dd.device)
        dd.broadcast_module(model)
        schedule = DRLSchedule(cfg["num_levels"])
        est = DiffusionRecoveryLikelihood(
            schedule, cfg["langevin_steps"], cfg["b2"], cfg["noise_scale"]
        )
        wrap = autocast_wrapper(cfg["bf16"], cfg["compile"], not cfg["bf16_sampler"])
        tc = TrainConfig(
            lr=cfg["lr"],
            warmup_steps=cfg["warmup_steps"],
            grad_clip=cfg["grad_clip"],
            ema_decay=cfg["ema_decay"],
            batch_size=cfg["batch_size"],
            checkpoint_every=cfg["checkpoint_every"],
        )
        if args.eval_only:
            data = torch.zeros(1, 3, 32, 32, device=dd.device)
        else:
            data = load_data(cfg, log).to(dd.device)
        log(
            f"device {dd.device}, world size {dd.world}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
            f"config {cfg['config']}"
        )
        trainer = DistributedTrainer(
            model,
            WrappedEstimator(est, wrap),
            data,
            tc,
            run_dir=out,
            seed=cfg["seed"] + dd.rank,
            augment=(lambda b, g: random_hflip(b, g)) if cfg["hflip"] else None,
            progress=progress,
            grad_hook=dd.grad_hook if dd.enabled else None,
            context=dd,
        )
        ckpt = out / "checkpoint.pt"
        if args.resume or args.eval_only:
            if not ckpt.is_file():
                if args.eval_only:
                    raise SystemExit(f"error: --eval-only needs {ckpt}")
                log(f"--resume: no {ckpt} yet, starting fresh")
            else:
                trainer.load(ckpt)
                log(f"resumed from {ckpt} at step {trainer.step}")
        elif ckpt.is_file():
            raise SystemExit(
                f"error: {ckpt} exists; pass --resume to continue it or choose another --out"
            )
        if dd.is_main and not args.eval_only:
            (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

        if args.benchmark:
            return benchmark(args, cfg, trainer, est, wrap, dd, log)

        if not args.eval_only:
            every = cfg["sample_every"]

            def callback(tr: Trainer, rec: dict) -> None:
                rec.update(dd.mean({k: v for k, v in rec.items() if k != "step"}))
                if args.throttle:
                    time.sleep(args.throttle)
                if dd.is_main and every and tr.step % every == 0:
                    x = generate(
                        est,
                        wrap(tr.ema_model),
                        cfg["num_grid"],
                        cfg["num_grid"],
                        cfg,
                        dd.device,
                        seed=tr.step,
                    )
                    save_grid(x, out / f"samples_step{tr.step:07d}.png", f"EMA, step {tr.step}")
                    save_loss_curve(tr.history, out / "loss.png")

            t0 = time.time()
            start = trainer.step
            trainer.fit(cfg["steps"], callback)
            dt = time.time() - t0
            if trainer.step > start:
                log(
                    f"trained steps {start}..{trainer.step} in {dt:.1f}s "
                    f"({(trainer.step - start) / dt:.3f} it/s); last loss "
                    f"{trainer.history[-1]['loss']:.4g}"
                )
            if dd.is_main:
                save_loss_curve(trainer.history, out / "loss.png")
                (out / "history.json").write_text(json.dumps(trainer.history))
        if args.write_param_hash:
            (out / f"param_hash_rank{dd.rank}.txt").write_text(param_hash(trainer) + "\n")

        # the other ranks are done; rank 0 generates alone (no collective waits on it)
        dd.barrier()
        if args.eval and dd.is_main:
            n = args.eval
            t0 = time.time()
            x = generate(
                est,
                wrap(trainer.ema_model),
                n,
                cfg["eval_batch"],
                cfg,
                dd.device,
                seed=10**6 + trainer.step,
            )
            dt = time.time() - t0
            npz = out / f"samples_{n}.npz"
            np.savez_compressed(npz, samples=to_uint8(x))
            save_grid(x[:64], out / "samples_eval.png", f"EMA, step {trainer.step}, lambda 0.99")
            log(f"generated {n} samples in {dt:.1f}s ({n / dt:.2f} img/s) -> {npz}")
            metrics = fid_if_possible(npz, cfg, args, log)
            if metrics:
                text = json.dumps(dict(metrics, step=trainer.step, n=n), indent=2) + "\n"
                atomic_write(out / f"metrics_{n}.json", lambda tmp: Path(tmp).write_text(text))
        return 0
    finally:
        dd.close()


def benchmark(args, cfg, trainer, est, wrap, dd, log) -> int:
    """Timing only: ``--benchmark N`` training steps (after 3 warm-up) and one generation."""
    dev = dd.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(3):
        trainer.train_step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.benchmark):
        trainer.train_step()
    sync()
    dt = time.time() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    its = args.benchmark / dt
    res = {
        "bf16": cfg["bf16"],
        "bf16_sampler": cfg["bf16_sampler"],
        "compile": cfg["compile"],
        "batch": cfg["batch_size"] * dd.world,
        "K": cfg["langevin_steps"],
        "train_it_per_s": its,
        "train_img_per_s": its * cfg["batch_size"] * dd.world,
        "train_peak_gib": peak,
        "last_loss": trainer.history[-1]["loss"],
    }
    n = args.eval or cfg["eval_batch"]
    warm = min(n, cfg["eval_batch"]) if cfg["compile"] else min(n, 8)  # compile: same shape
    generate(est, wrap(trainer.ema_model), warm, warm, cfg, dev, seed=1)  # warm-up
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    generate(est, wrap(trainer.ema_model), n, cfg["eval_batch"], cfg, dev, seed=2)
    sync()
    gdt = time.time() - t0
    res.update(
        gen_samples=n,
        gen_batch=cfg["eval_batch"],
        gen_seconds=gdt,
        gen_img_per_s=n / gdt,
        gen_50k_hours=50_000 / (n / gdt) / 3600,
        gen_peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
    )
    log("BENCH " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
