"""A small trainer any estimator plugs into: Adam with warm-up, clipping, EMA, checkpoints.

The trainer owns one ``torch.Generator`` that draws the minibatches, the augmentations and
every random number of the estimator's sampler, so a run is reproducible from its seed and a
checkpoint (model, EMA, optimizer, learning-rate schedule, estimator state such as a replay
buffer, generator state, step, history) resumes it exactly: a run killed and resumed ends with
the same weights as an uninterrupted one. Checkpoints are written atomically (temporary file
+ rename) and read with ``torch.load(weights_only=True)``.

Ctrl-C during :meth:`Trainer.fit` is taken after the step in progress (see
:mod:`ebmcmc._interrupts`): the checkpoint written then holds the model, optimizer, schedule,
EMA, estimator and generator of one and the same step, so the resumed run ends with the same
weights as an uninterrupted one. A second Ctrl-C stops at once, mid-step: nothing is saved
then (the last checkpoint stays as it was) and the trainer refuses to save or train until it
is resumed from a checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._files import atomic_write
from .._interrupts import InterruptFlag, deferred_interrupts
from ..estimators.base import Estimator

__all__ = ["TrainConfig", "Trainer", "save_atomic", "load_checkpoint"]


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: DRL's CIFAR-10 recipe, batch aside).

    Attributes:
        lr: Adam learning rate.
        betas: Adam betas.
        warmup_steps: linear learning-rate warm-up from 0 over this many steps.
        grad_clip: clip the global gradient norm to this value (``None``: off).
        ema_decay: decay of the exponential moving average of the weights (``None``: off).
        batch_size: examples per step.
        checkpoint_every: write ``checkpoint.pt`` in the run directory every N steps (0: only
            at the end).
        weight_decay: Adam's L2 weight decay.
        decay_at: from this step on, the learning rate is multiplied by ``decay_factor``
            (``None``: never). A function of the step alone, so a resumed run follows it.
        decay_factor: the factor of ``decay_at``.

    Example:
        >>> TrainConfig(lr=1e-3).warmup_steps
        1000
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 1000
    grad_clip: float | None = None
    ema_decay: float | None = 0.999
    batch_size: int = 64
    checkpoint_every: int = 0
    weight_decay: float = 0.0
    decay_at: int | None = None
    decay_factor: float = 0.1

    def __post_init__(self):
        if self.decay_at is not None and (
            isinstance(self.decay_at, bool) or not isinstance(self.decay_at, int)
            or self.decay_at < 0
        ):  # fmt: skip
            raise ValueError(f"decay_at must be an int >= 0 or None, got {self.decay_at!r}")
        if not 0 < self.decay_factor <= 1:
            raise ValueError(f"decay_factor must lie in (0, 1], got {self.decay_factor}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.betas = tuple(float(b) for b in self.betas)


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``.

    Example:
        >>> import tempfile, os
        >>> p = save_atomic({"a": 1}, os.path.join(tempfile.mkdtemp(), "c.pt"))
        >>> p.name
        'c.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """Read a checkpoint with ``weights_only=True``, with clear errors.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable ebmcmc checkpoint.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = save_atomic({"format": "ebmcmc-checkpoint/1"}, os.path.join(d, "c.pt"))
        >>> load_checkpoint(p)["format"]
        'ebmcmc-checkpoint/1'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means an unusable file
        raise ValueError(f"{str(path)!r} is not a readable checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not an ebmcmc checkpoint")
    return ckpt


_FORMAT = "ebmcmc-checkpoint/1"


class Trainer:
    """Train ``model`` with ``estimator`` on an in-memory dataset.

    Args:
        model: the energy network (``nn.Module``).
        estimator: any :class:`~ebmcmc.estimators.Estimator`.
        data: training examples ``(N, *event)``.
        config: a :class:`TrainConfig`.
        run_dir: where checkpoints go (``None``: no files).
        seed: seed of the trainer's generator (batches, augmentation, sampler).
        augment: optional ``(batch, generator) -> batch`` (e.g. random horizontal flips).
        progress: tqdm progress bar.
        grad_hook: optional ``hook(model)`` called after ``backward`` and before clipping and
            the optimizer step, e.g. to all-reduce the gradients across data-parallel ranks
            (see ``examples/cifar_drl.py``).

    Attributes:
        ema_model: the EMA copy used for sampling (the model itself when EMA is off).
        step: optimisation steps done.
        history: one dict of logged floats per step (``loss`` and the estimator's stats).
        torn: a second Ctrl-C stopped a step half-way; saving and training are refused until
            :meth:`resume` or :meth:`load`.

    Example:
        >>> import torch
        >>> from ebmcmc.estimators import ContrastiveDivergence
        >>> from ebmcmc.kernels import Langevin
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(),
        ...                             torch.nn.Linear(8, 1), torch.nn.Flatten(0))
        >>> tr = Trainer(model, ContrastiveDivergence(Langevin(0.01), 2), torch.randn(64, 2),
        ...              TrainConfig(lr=1e-3, warmup_steps=0, batch_size=16), progress=False)
        >>> _ = tr.fit(5)
        >>> tr.step
        5
    """

    def __init__(
        self,
        model: torch.nn.Module,
        estimator: Estimator,
        data: Tensor,
        config: TrainConfig | None = None,
        run_dir: str | os.PathLike | None = None,
        seed: int = 0,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        progress: bool = True,
        grad_hook: Callable[[torch.nn.Module], None] | None = None,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError("model must be a torch.nn.Module")
        if not hasattr(estimator, "loss"):
            raise TypeError("estimator must have loss(model, batch, generator)")
        if not isinstance(data, Tensor) or data.ndim < 1 or data.shape[0] == 0:
            raise ValueError("data must be a non-empty tensor of shape (N, *event)")
        if not torch.isfinite(data).all():
            raise ValueError("data contains non-finite values")
        self.model, self.estimator, self.data = model, estimator, data
        self.config = config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.augment, self.progress = augment, progress
        self.grad_hook = grad_hook
        self.device = data.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        c = self.config
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay
        )
        warm, at, factor = c.warmup_steps, c.decay_at, c.decay_factor

        def lr_factor(s: int) -> float:
            f = min(1.0, (s + 1) / warm) if warm else 1.0
            return f * factor if at is not None and s >= at else f

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        if c.ema_decay is not None:
            self.ema_model = copy.deepcopy(model)
            for p in self.ema_model.parameters():
                p.requires_grad_(False)
        else:
            self.ema_model = model
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.torn = False

    # ------------------------------------------------------------------ one step
    def _batch(self) -> Tensor:
        n = self.data.shape[0]
        idx = torch.randint(
            n, (self.config.batch_size,), generator=self.generator, device=self.device
        )
        batch = self.data[idx]
        if self.augment is not None:
            batch = self.augment(batch, self.generator)
        return batch

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_model is self.model:
            return
        d = self.config.ema_decay
        if d is None:  # a separate EMA model exists only when ema_decay is set
            raise RuntimeError("the trainer keeps an EMA model but config.ema_decay is None")
        for pe, p in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            be.copy_(b)

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the logged figures.

        Raises:
            FloatingPointError: the loss or the gradient norm is not finite (the weights are
                left as they were before this step).
        """
        self.model.train()
        out = self.estimator.loss(self.model, self._batch(), self.generator)
        loss = out.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at step {self.step}; the last checkpoint is intact "
                "(lower the learning rate or the sampler's step size)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_hook is not None:
            self.grad_hook(self.model)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm at step {self.step}")
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.optimizer.step()
        self.scheduler.step()
        self._update_ema()
        self.step += 1
        rec = {
            "step": self.step,
            "loss": float(loss.detach()),
            "grad_norm": float(gnorm),
            "lr": lr,
        }
        rec.update({k: float(v) for k, v in out.stats.items()})
        self.history.append(rec)
        return rec

    def fit(
        self,
        num_steps: int,
        callback: Callable[[Trainer, dict], None] | None = None,
        max_seconds: float | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``self.step == num_steps`` (a resumed run continues where it stopped).

        Writes ``checkpoint.pt`` every ``config.checkpoint_every`` steps and at the end when
        ``run_dir`` is set. Ctrl-C stops after the step in progress, writes a checkpoint of
        that step and re-raises ``KeyboardInterrupt`` (a second Ctrl-C stops at once, without
        a checkpoint; see the module's notes). With ``max_seconds``, training also ends
        (checkpoint written) after the first step that finishes past that many seconds of wall
        time: a time budget that a rerun resumes.

        Returns:
            The history.

        Raises:
            RuntimeError: the trainer was stopped mid-step before (``torn``); call
                :meth:`resume` or :meth:`load` first.
        """
        self._check_whole()
        bar = tqdm(
            total=num_steps,
            initial=self.step,
            disable=not self.progress,
            desc="train",
            dynamic_ncols=True,
        )
        every = self.config.checkpoint_every
        deadline = None if max_seconds is None else time.monotonic() + float(max_seconds)
        in_step = False
        try:
            with deferred_interrupts() as flag:
                while self.step < num_steps:
                    in_step = True
                    rec = self.train_step()
                    in_step = False
                    bar.update(1)
                    if self.step % 10 == 0:
                        bar.set_postfix(loss=f"{rec['loss']:.4g}")
                    if callback is not None:
                        callback(self, rec)
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    if self.run_dir is not None and every and self.step % every == 0:
                        self.save()
                    if self._stop_requested(flag):
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if in_step:
                self.torn = True
                warnings.warn(
                    f"training stopped in the middle of step {self.step + 1}: no checkpoint "
                    "written (the last one is intact); resume() from it to continue exactly",
                    stacklevel=2,
                )
            elif self.run_dir is not None:
                self.save()
            raise
        finally:
            bar.close()
        if self.run_dir is not None:
            self.save()
        return self.history

    def _stop_requested(self, flag: InterruptFlag) -> bool:
        """Whether to stop after this step (a data-parallel trainer agrees across ranks)."""
        return flag.requested

    def _check_whole(self) -> None:
        if self.torn:
            raise RuntimeError(
                "this trainer was stopped in the middle of a step; its state mixes two steps. "
                "Call resume() (or load()) to continue from the last checkpoint"
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a resume needs (all tensors and plain containers).

        Raises:
            RuntimeError: the trainer was stopped mid-step (``torn``).
        """
        self._check_whole()
        return {
            "format": _FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema_model is self.model else self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "estimator": self.estimator.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()
            },
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write a checkpoint atomically (default ``run_dir / "checkpoint.pt"``)."""
        if path is None:
            if self.run_dir is None:
                raise ValueError("no path given and the trainer has no run_dir")
            path = self.run_dir / "checkpoint.pt"
        return save_atomic(self.state_dict(), path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save` (``weights_only=True``)."""
        ckpt = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(ckpt["model"])
            if ckpt["ema"] is not None:
                if self.ema_model is self.model:
                    raise ValueError("checkpoint has EMA weights but this trainer has EMA off")
                self.ema_model.load_state_dict(ckpt["ema"])
        except RuntimeError as err:  # missing keys or shape mismatches
            first = str(err).strip().splitlines()[-1].strip()
            raise ValueError(
                f"the checkpoint {str(path)!r} was written for a different model (another "
                f"configuration?): {first} Use a new run directory or the same settings."
            ) from err
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.estimator.load_state_dict(ckpt["estimator"])
        self.generator.set_state(
            ckpt["generator"].cpu() if self.device.type == "cpu" else ckpt["generator"]
        )
        self.step = int(ckpt["step"])
        self.history = list(ckpt["history"])
        self.torn = False

    def resume(self) -> bool:
        """Load ``run_dir / "checkpoint.pt"`` if it exists; return whether it did."""
        if self.run_dir is None:
            return False
        path = self.run_dir / "checkpoint.pt"
        if path.is_file():
            self.load(path)
            return True
        return False
