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
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._files import atomic_write
from .._interrupts import InterruptFlag, deferred_interrupts
from ..estimators.base import Estimator

__all__ = ["ParamGroup", "TrainConfig", "Trainer", "save_atomic", "load_checkpoint"]


@dataclass
class ParamGroup:
    """Optimiser settings of the parameters whose names start with ``prefix``.

    Unset fields (``None``) take the :class:`TrainConfig`'s value. Each group has its own
    linear warm-up, ``min(1, (step + 1 + warmup_offset) / warmup_steps)``, and the config's
    ``decay_at`` applies to every group.

    Attributes:
        prefix: parameter-name prefix (e.g. ``"initializer."`` for
            :class:`~ebmcmc.nn.CooperativeModel`'s initializer).
        lr: learning rate.
        betas: Adam betas.
        weight_decay: weight decay.
        decoupled_weight_decay: AdamW's decoupled decay instead of Adam's L2 term (the two
            agree when ``weight_decay`` is 0).
        warmup_steps: warm-up length.
        warmup_offset: steps the warm-up starts ahead (CDRL's initializer starts at 500 of
            10,000, i.e. at 5 % of its rate).

    Example:
        >>> ParamGroup("initializer.", lr=1e-5).lr
        1e-05
    """

    prefix: str
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    decoupled_weight_decay: bool = False
    warmup_steps: int | None = None
    warmup_offset: int = 0

    def __post_init__(self):
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError(f"prefix must be a non-empty string, got {self.prefix!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.betas is not None:
            self.betas = (float(self.betas[0]), float(self.betas[1]))


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
        param_groups: :class:`ParamGroup` settings for the parameters whose names start with
            their prefixes (the first matching group takes a parameter); the rest form the
            default group with the settings above. With groups, gradients are clipped to
            ``grad_clip`` per group (CDRL clips each network on its own) and the history logs
            each group's gradient norm and learning rate under ``grad_norm:PREFIX`` and
            ``lr:PREFIX``. Dicts are accepted in place of :class:`ParamGroup`.

    Example:
        >>> TrainConfig(lr=1e-3).warmup_steps
        1000
        >>> TrainConfig(param_groups=[{"prefix": "initializer.", "lr": 1e-5}]).param_groups[0].lr
        1e-05
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
    param_groups: tuple[ParamGroup, ...] = ()

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
        groups = []
        for g in self.param_groups:
            if isinstance(g, dict):
                g = ParamGroup(**g)
            if not isinstance(g, ParamGroup):
                raise TypeError(
                    f"param_groups must hold ParamGroup or dict, got {type(g).__name__}"
                )
            groups.append(g)
        prefixes = [g.prefix for g in groups]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError(f"param_groups repeat a prefix: {prefixes}")
        self.param_groups = tuple(groups)


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


def _plain(value):
    """Tuples to lists, recursively (the checkpoint's config is plain containers)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
        labels: optional per-example labels ``(N,)`` (class-conditional training): each batch's
            labels are drawn with its examples and passed as
            ``estimator.loss(model, batch, generator, labels=...)``.

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
        labels: Tensor | None = None,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError("model must be a torch.nn.Module")
        if not hasattr(estimator, "loss"):
            raise TypeError("estimator must have loss(model, batch, generator)")
        if not isinstance(data, Tensor) or data.ndim < 1 or data.shape[0] == 0:
            raise ValueError("data must be a non-empty tensor of shape (N, *event)")
        if not torch.isfinite(data).all():
            raise ValueError("data contains non-finite values")
        if labels is not None and (
            not isinstance(labels, Tensor) or labels.shape != data.shape[:1]
        ):
            raise ValueError(
                f"labels must be a tensor of shape ({data.shape[0]},), one per example"
            )
        self.model, self.estimator, self.data = model, estimator, data
        self.labels = None if labels is None else labels.to(data.device)
        self.config = config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.augment, self.progress = augment, progress
        self.grad_hook = grad_hook
        self.device = data.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        c = self.config
        groups, warmups = self._param_groups(model)
        self.optimizer = torch.optim.Adam(
            groups, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay
        )
        at, factor = c.decay_at, c.decay_factor

        def lr_factor(warm: int, offset: int) -> Callable[[int], float]:
            def f(s: int) -> float:
                w = min(1.0, (s + 1 + offset) / warm) if warm else 1.0
                return w * factor if at is not None and s >= at else w

            return f

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [lr_factor(w, o) for w, o in warmups]
        )
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
    def _batch(self) -> tuple[Tensor, Tensor | None]:
        n = self.data.shape[0]
        idx = torch.randint(
            n, (self.config.batch_size,), generator=self.generator, device=self.device
        )
        batch = self.data[idx]
        if self.augment is not None:
            batch = self.augment(batch, self.generator)
        return batch, None if self.labels is None else self.labels[idx]

    def _clip(self) -> tuple[Tensor, dict[str, float]]:
        """Clip the gradients (globally, or per group when the config has groups); return the
        total norm before clipping and, with groups, each group's norm."""
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        if not self.config.param_groups:
            params = [p for p in self.model.parameters() if p.grad is not None]
            return torch.nn.utils.clip_grad_norm_(params, clip), {}
        norms, logged = [], {}
        for name, group in zip(self._group_names, self.optimizer.param_groups, strict=True):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            n = torch.nn.utils.clip_grad_norm_(params, clip)
            norms.append(n)
            logged[f"grad_norm:{name}" if name else "grad_norm:default"] = float(n)
        total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        return total, logged

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

    def _param_groups(self, model: torch.nn.Module) -> tuple[list[dict], list[tuple[int, int]]]:
        """The optimizer's parameter groups (the default group first, when it has any
        parameters) and each group's ``(warmup_steps, warmup_offset)``."""
        c = self.config
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        taken: set[int] = set()
        groups: list[dict] = []
        warmups: list[tuple[int, int]] = []
        self._group_names: list[str] = []
        for g in c.param_groups:
            params = [p for n, p in named if n.startswith(g.prefix) and id(p) not in taken]
            if not params:
                raise ValueError(f"parameter group {g.prefix!r} matches no trainable parameter")
            taken.update(id(p) for p in params)
            d: dict = {"params": params, "decoupled_weight_decay": g.decoupled_weight_decay}
            for key in ("lr", "betas", "weight_decay"):
                if getattr(g, key) is not None:
                    d[key] = getattr(g, key)
            groups.append(d)
            warm = c.warmup_steps if g.warmup_steps is None else g.warmup_steps
            warmups.append((warm, g.warmup_offset))
            self._group_names.append(g.prefix.rstrip("."))
        rest = [p for _, p in named if id(p) not in taken]
        if rest or not groups:
            groups.insert(0, {"params": rest})
            warmups.insert(0, (c.warmup_steps, 0))
            self._group_names.insert(0, "")
        return groups, warmups

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the logged figures.

        Raises:
            FloatingPointError: the loss or the gradient norm is not finite (the weights are
                left as they were before this step).
        """
        self.model.train()
        batch, labels = self._batch()
        if labels is None:
            out = self.estimator.loss(self.model, batch, self.generator)
        else:  # a class-conditional estimator's loss takes the labels
            loss_fn: Callable[..., Any] = self.estimator.loss
            out = loss_fn(self.model, batch, self.generator, labels=labels)
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
        gnorm, group_norms = self._clip()
        if not torch.isfinite(gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite gradient norm at step {self.step}")
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        group_lrs = {
            f"lr:{name}": g["lr"]
            for name, g in zip(self._group_names, self.optimizer.param_groups, strict=True)
            if name
        }
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
        rec.update(group_norms)
        rec.update(group_lrs)
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
            "config": _plain(asdict(self.config)),
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
