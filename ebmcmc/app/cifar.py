"""The CIFAR-10 training harness that ``examples/cifar_drl.py`` and ``examples/cifar_cdrl.py``
share: the command-line options they have in common, the configuration, the data (read only
through :func:`ebmcmc.datasets.load_cifar10`, or synthetic noise for smoke tests), sample grids,
the FID/IS evaluation (from :mod:`ebmcmc.app.cifar_fid`), and :func:`run`, the (multi-GPU)
training loop with checkpoints, ``--resume``, ``--eval`` and ``--benchmark``.

An example script supplies what is its own (its configurations, its network, estimator and
optimiser settings, its sampler call and its loss figure) and calls :func:`run`. matplotlib is
imported only when a figure is drawn.

Example:
    >>> from ebmcmc.app.cifar import synthetic_cifar
    >>> synthetic_cifar(2, seed=0).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_write
from ..datasets import load_cifar10, random_hflip
from ..evaluation import to_uint8
from ..train import (
    DistributedContext,
    DistributedTrainer,
    TrainConfig,
    Trainer,
    WrappedEstimator,
    autocast_wrapper,
)
from .cifar_fid import fid_if_possible, fid_reference

__all__ = [
    "paper_config",
    "smoke_config",
    "add_run_arguments",
    "add_output_arguments",
    "resolve_config",
    "synthetic_cifar",
    "load_train_data",
    "save_grid",
    "save_history_plot",
    "in_batches",
    "fid_reference",
    "fid_if_possible",
    "run",
]

#: ``generate(estimator, model, n, batch, cfg, device, seed)``: ``n`` samples, in batches
Generate = Callable[[Any, torch.nn.Module, int, int, dict, torch.device, int], Tensor]


# --------------------------------------------------------------------------- configuration
def paper_config(**method: Any) -> dict:
    """A paper configuration: the script's own settings ``method`` followed by the output
    settings both scripts share (a checkpoint every 1,000 steps, a 64-image grid every 5,000,
    ``--eval`` in batches of 500, no synthetic data).

    Example:
        >>> paper_config(lr=1e-4)
        {'lr': 0.0001, 'checkpoint_every': 1000, 'sample_every': 5000, 'num_grid': 64, \
'eval_batch': 500, 'synthetic_size': 0}
    """
    return dict(
        method,
        checkpoint_every=1000,
        sample_every=5000,
        num_grid=64,
        eval_batch=500,
        synthetic_size=0,
    )


def smoke_config(paper: dict, **tiny: Any) -> dict:
    """The smoke configuration of ``paper`` (CPU, well under a minute): its settings with the
    network sizes ``tiny`` and 20 steps on 64 synthetic images, a checkpoint every 5 steps, a
    16-image grid every 10; the keys keep ``paper``'s order.

    Example:
        >>> cfg = smoke_config(paper_config(lr=1e-4, steps=1000), lr=1e-3)
        >>> cfg["lr"], cfg["steps"], cfg["synthetic_size"]
        (0.001, 20, 64)
    """
    return dict(
        paper,
        **tiny,
        steps=20,
        checkpoint_every=5,
        sample_every=10,
        num_grid=16,
        eval_batch=16,
        synthetic_size=64,
    )


def add_run_arguments(
    p: argparse.ArgumentParser, configs: dict[str, dict], out: str, synthetic_help: str
) -> None:
    """Add the options every CIFAR-10 script opens with: ``--config``/``--smoke`` (choices:
    the keys of ``configs``), ``--out`` (default ``out``), ``--data``, ``--synthetic-data``
    (help text ``synthetic_help``), ``--seed``, ``--device``, ``--resume`` and ``--steps``.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> add_run_arguments(p, {"paper": {}, "smoke": {}}, "runs/x", "noise")
        >>> p.parse_args(["--smoke", "--steps", "3"]).steps
        3
    """
    p.add_argument("--config", choices=sorted(configs), default="paper", help="base config")
    p.add_argument("--smoke", action="store_true", help="alias of --config smoke")
    p.add_argument("--out", default=out, help="run directory")
    p.add_argument("--data", default=None, help="cifar-10-python.tar.gz or cifar-10-batches-py/")
    p.add_argument("--synthetic-data", type=int, default=None, metavar="N", help=synthetic_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, help="total optimisation steps")


def add_output_arguments(
    p: argparse.ArgumentParser, threads_help: str, weights_help: str, fid_ref_help: str
) -> None:
    """Add the options every CIFAR-10 script closes with: checkpoints, sample grids,
    ``--threads`` (help ``threads_help``), ``--eval``/``--eval-only``/``--eval-batch``,
    ``--inception-weights`` and ``--fid-ref`` (help ``weights_help``, ``fid_ref_help``), and
    the hidden test-only ``--throttle``, ``--write-param-hash`` and ``--benchmark``.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> add_output_arguments(p, "threads", "weights", "reference")
        >>> p.parse_args(["--eval", "8"]).eval
        8
    """
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--sample-every", type=int, help="sample grid + loss curve every N steps")
    p.add_argument("--num-grid", type=int, help="images per sample grid")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--eval", type=int, default=0, metavar="N", help="generate N samples at end")
    p.add_argument("--eval-only", action="store_true", help="skip training; load the checkpoint")
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--inception-weights", default=None, metavar="FILE", help=weights_help)
    p.add_argument("--fid-ref", default=None, metavar="NPZ", help=fid_ref_help)
    p.add_argument("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--write-param-hash", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--benchmark", type=int, default=0, help=argparse.SUPPRESS)


def resolve_config(args: argparse.Namespace, configs: dict[str, dict]) -> dict:
    """The base config (``configs[args.config]``, or ``configs["smoke"]`` with ``--smoke``)
    updated with every option given on the command line; the keys are those of
    ``configs["paper"]``, plus ``config``, ``seed``, ``bf16``, ``bf16_sampler``, ``compile``
    and ``data``.

    Example:
        >>> import argparse
        >>> args = argparse.Namespace(config="paper", smoke=True, synthetic_data=None, lr=0.1,
        ...     seed=0, bf16=False, bf16_sampler=False, compile=False, data=None)
        >>> cfg = resolve_config(args, {"paper": {"lr": 1.0}, "smoke": {"lr": 2.0}})
        >>> cfg["config"], cfg["lr"]
        ('smoke', 0.1)
    """
    cfg = dict(configs["smoke" if args.smoke else args.config])
    cfg["config"] = "smoke" if args.smoke else args.config
    for key in list(configs["paper"]):
        val = getattr(args, key, None)
        if val is not None:
            cfg[key] = val
    if args.synthetic_data is not None:
        cfg["synthetic_size"] = args.synthetic_data
    for key in ("seed", "bf16", "bf16_sampler", "compile", "data"):
        cfg[key] = getattr(args, key)
    return cfg


# --------------------------------------------------------------------------- data
def synthetic_cifar(n: int, seed: int) -> Tensor:
    """SYNTHETIC stand-in for CIFAR-10: ``n`` uniform random uint8 images scaled to [-1, 1],
    shape ``(n, 3, 32, 32)``.

    Only for smoke tests and timing; it is noise, not CIFAR-10.

    Example:
        >>> x = synthetic_cifar(4, seed=1)
        >>> x.shape, bool(x.min() >= -1 and x.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """
    g = torch.Generator().manual_seed(seed + 12345)
    raw = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return raw.float().div_(127.5).sub_(1.0)


def load_train_data(
    cfg: dict, log: Callable[[str], None], with_labels: bool = False
) -> tuple[Tensor, Tensor | None]:
    """CIFAR-10's training images ``(N, 3, 32, 32)`` in [-1, 1] and labels ``(N,)`` (int64;
    ``None`` unless ``with_labels``), read from ``cfg["data"]`` only through
    :func:`ebmcmc.datasets.load_cifar10` (restricted unpickler); or, without data,
    ``cfg["synthetic_size"]`` images of :func:`synthetic_cifar` (with random labels). A missing
    or refused file ends the program with a message (``SystemExit``).

    Example:
        >>> x, y = load_train_data({"data": None, "synthetic_size": 6, "seed": 0}, print)
        SYNTHETIC DATA: 6 random uint8 images (not CIFAR-10; smoke test / timing only)
        >>> x.shape, y
        (torch.Size([6, 3, 32, 32]), None)
    """
    if cfg["data"] is not None:
        try:
            x, y = load_cifar10(cfg["data"], "train")
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
        return x, (y.long() if with_labels else None)
    if cfg["synthetic_size"]:
        n = cfg["synthetic_size"]
        what = " with random labels" if with_labels else ""
        log(f"SYNTHETIC DATA: {n} random uint8 images{what} (not CIFAR-10; smoke test / "
            "timing only)")  # fmt: skip
        x = synthetic_cifar(n, cfg["seed"])
        if not with_labels:
            return x, None
        g = torch.Generator().manual_seed(cfg["seed"] + 54321)
        return x, torch.randint(0, 10, (n,), generator=g)
    raise SystemExit(
        "error: no data; pass --data PATH to cifar-10-python.tar.gz or cifar-10-batches-py/ "
        "(this script never downloads), or --synthetic-data N for a timing run on noise"
    )


# --------------------------------------------------------------------------- outputs
def save_grid(x: Tensor, path: Path, title: str = "") -> None:
    """Save images ``x`` ``(N, 3, H, W)`` in [-1, 1] as a square grid (PNG) at ``path``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> save_grid(torch.zeros(4, 3, 8, 8), d / "grid.png", "zeros")
        >>> (d / "grid.png").is_file()
        True
    """
    import matplotlib.pyplot as plt

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


def save_history_plot(
    history: list[dict],
    path: Path,
    panels: list[tuple[str, list[tuple[str, str | None]]]],
    width: float,
) -> None:
    """Plot the training ``history`` (one dict a logged step) against the step, one panel a
    ``(title, [(key, label), ...])`` of ``panels`` (a legend where the lines have labels; a
    missing key is NaN), in a figure ``width`` inches wide, saved (PNG) at ``path``; nothing
    when ``history`` is empty.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> hist = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
        >>> save_history_plot(hist, d / "loss.png", [("loss", [("loss", None)])], 4)
        >>> (d / "loss.png").is_file()
        True
    """
    if not history:
        return
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=True):
        for key, label in lines:
            ax.plot(steps, [h.get(key, np.nan) for h in history], lw=0.7, label=label)
        if any(label is not None for _, label in lines):
            ax.legend(fontsize=7)
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def in_batches(n: int, batch: int, draw: Callable[[int, int], Tensor]) -> Tensor:
    """``n`` samples drawn ``batch`` at a time: ``draw(i, m)`` returns the ``m`` samples from
    the ``i``-th on, with gradients enabled (the samplers need them); they are moved to the CPU
    and concatenated.

    Example:
        >>> in_batches(5, 2, lambda i, m: torch.arange(i, i + m)).tolist()
        [0, 1, 2, 3, 4]
    """
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        with torch.enable_grad():
            out.append(draw(i, m).cpu())
    return torch.cat(out)


def _param_hash(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for sd in (trainer.model.state_dict(), trainer.ema_model.state_dict()):
        for k in sorted(sd):
            h.update(k.encode())
            h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- main loop
def run(
    args: argparse.Namespace,
    cfg: dict,
    *,
    build_model: Callable[[dict], torch.nn.Module],
    estimator: Any,
    train_config: TrainConfig,
    generate: Generate,
    save_loss_curve: Callable[[list[dict], Path], None],
    describe: Callable[[torch.nn.Module], str],
    with_labels: bool = False,
    script: str = "examples/cifar_drl.py",
    eval_title: str = "",
    metrics_extra: dict | None = None,
) -> int:
    """Train (one process per GPU under ``torchrun``), checkpoint, resume and evaluate a
    CIFAR-10 model as the example scripts do; returns the exit status.

    ``args`` holds the options of :func:`add_run_arguments` and :func:`add_output_arguments`
    (plus ``--bf16``/``--bf16-sampler``/``--compile`` in ``cfg``); ``build_model(cfg)`` makes
    the network (seeded alike on every rank), ``estimator`` trains it with ``train_config``,
    ``generate`` draws the sample grids and ``--eval`` samples, ``save_loss_curve(history,
    path)`` draws ``loss.png``, ``describe(model)`` is the start-up line's account of the
    model, ``with_labels`` loads the labels too (they are trained on when
    ``cfg["conditional"]``), ``script`` is the command the FID message
    names, ``eval_title`` ends the title of ``samples_eval.png`` and ``metrics_extra`` is added
    to ``metrics_N.json``.

    Example:
        >>> import tempfile
        >>> from ebmcmc.diffusion import DRLSchedule
        >>> from ebmcmc.estimators import DiffusionRecoveryLikelihood
        >>> from ebmcmc.nn import DRLResNet
        >>> p = argparse.ArgumentParser()
        >>> add_run_arguments(p, {"paper": {}}, "runs/x", "")
        >>> add_output_arguments(p, "", "", "")
        >>> args = p.parse_args(["--out", tempfile.mkdtemp(), "--no-progress", "--threads", "1"])
        >>> cfg = dict(config="paper", seed=0, data=None, synthetic_size=8, bf16=False,
        ...     bf16_sampler=False, compile=False, hflip=False, steps=2, sample_every=0,
        ...     num_grid=4, eval_batch=4)
        >>> est = DiffusionRecoveryLikelihood(DRLSchedule(2), 2, 2e-4, 1.0)
        >>> def gen(est, model, n, batch, cfg, device, seed):
        ...     g = torch.Generator().manual_seed(seed)
        ...     return est.generate(model, (n, 3, 32, 32), generator=g, device=device)
        >>> net = lambda cfg: DRLResNet(base_channels=4, channel_mult=(1,), num_res_blocks=1,
        ...     num_levels=2, spectral_norm=False)
        >>> run(args, cfg, build_model=net, estimator=est,
        ...     train_config=TrainConfig(lr=1e-4, batch_size=4, checkpoint_every=2),
        ...     generate=gen, save_loss_curve=lambda h, path: None, describe=lambda m: "tiny")
        ... # doctest: +ELLIPSIS
        SYNTHETIC DATA: 8 random uint8 images (not CIFAR-10; smoke test / timing only)
        device cpu, world size 1, tiny
        trained steps 0..2 in ...
        0
    """
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
        wrap = autocast_wrapper(cfg["bf16"], cfg["compile"], not cfg["bf16_sampler"])
        labels: Tensor | None
        if args.eval_only:
            data, labels = torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
        else:
            data, labels = load_train_data(cfg, log, with_labels)
        data = data.to(dd.device)
        conditional = cfg.get("conditional", False) and labels is not None
        labels = labels.to(dd.device) if conditional and labels is not None else None
        log(f"device {dd.device}, world size {dd.world}, {describe(model)}")
        trainer = DistributedTrainer(
            model,
            WrappedEstimator(estimator, wrap),
            data,
            train_config,
            run_dir=out,
            seed=cfg["seed"] + dd.rank,
            augment=(lambda b, g: random_hflip(b, g)) if cfg["hflip"] else None,
            progress=progress,
            grad_hook=dd.grad_hook if dd.enabled else None,
            labels=labels,
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
            return _benchmark(args, cfg, trainer, estimator, wrap, dd, log, generate)

        if not args.eval_only:
            every = cfg["sample_every"]

            def callback(tr: Trainer, rec: dict) -> None:
                rec.update(dd.mean({k: v for k, v in rec.items() if k != "step"}))
                if args.throttle:
                    time.sleep(args.throttle)
                if dd.is_main and every and tr.step % every == 0:
                    n = cfg["num_grid"]
                    x = generate(estimator, wrap(tr.ema_model), n, n, cfg, dd.device, tr.step)
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
            (out / f"param_hash_rank{dd.rank}.txt").write_text(_param_hash(trainer) + "\n")

        # the other ranks are done; rank 0 generates alone (no collective waits on it)
        dd.barrier()
        if args.eval and dd.is_main:
            n = args.eval
            t0 = time.time()
            x = generate(estimator, wrap(trainer.ema_model), n, cfg["eval_batch"], cfg,
                         dd.device, 10**6 + trainer.step)  # fmt: skip
            dt = time.time() - t0
            npz = out / f"samples_{n}.npz"
            np.savez_compressed(npz, samples=to_uint8(x))
            save_grid(x[:64], out / "samples_eval.png", f"EMA, step {trainer.step}{eval_title}")
            log(f"generated {n} samples in {dt:.1f}s ({n / dt:.2f} img/s) -> {npz}")
            metrics = fid_if_possible(npz, cfg, args, log, script=script)
            if metrics:
                extra = dict(step=trainer.step, n=n, **(metrics_extra or {}))
                text = json.dumps(dict(metrics, **extra), indent=2) + "\n"
                atomic_write(out / f"metrics_{n}.json", lambda tmp: Path(tmp).write_text(text))
        return 0
    finally:
        dd.close(wait=sys.exc_info()[1] is None)  # no barrier when leaving on an error


def _benchmark(args, cfg, trainer, est, wrap, dd, log, generate: Generate) -> int:
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
    generate(est, wrap(trainer.ema_model), warm, warm, cfg, dev, 1)  # warm-up
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    generate(est, wrap(trainer.ema_model), n, cfg["eval_batch"], cfg, dev, 2)
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
