"""Metropolis-within-Gibbs over a joint energy ``E(x, t)`` with a discrete level ``t``.

This is the enhanced sampler of the diffusion-assisted EBM (DAEBM; Zhang, Ou & Tan 2023):
simulated tempering with the diffusion step as the temperature index. Each transition moves
``x`` with ``inner_steps`` steps of an inner kernel at the chain's current level, then draws
the level exactly from ``p(t | x) = softmax_t(-E(x, t))`` over all ``num_levels`` levels.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from ..energy import evaluate
from ..energy import validate as _validate
from .base import ChainState, Info, Kernel
from .proposal import as_hyperparameter, rand_batch

__all__ = ["LevelGibbs", "LevelState", "LevelInfo", "AtLevel"]


class AtLevel(torch.nn.Module):
    """The conditional energy ``x -> E(x, level)`` of a joint energy at per-chain levels.

    Shapes: ``x`` ``(*batch, *event)``; ``level`` integer tensor of shape ``batch``.

    Example:
        >>> import torch
        >>> joint = lambda x, t: (x**2).sum(-1) + t
        >>> AtLevel(joint, torch.tensor([0, 2]))(torch.ones(2, 3))
        tensor([3., 5.])
    """

    def __init__(self, joint, level: Tensor):
        super().__init__()
        self.joint = joint
        self.level = level

    def forward(self, x: Tensor) -> Tensor:
        return self.joint(x, self.level)


@dataclass
class LevelState(ChainState):
    """State of :class:`LevelGibbs`: the inner kernel's state at each chain's current level
    (``inner``) and the level itself (``level``: ``torch.long`` of shape ``batch``).

    ``position`` and ``energy`` are the inner state's (the energy at the current level).

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import State
        >>> s = LevelState(State(torch.zeros(2, 1), torch.zeros(2)), torch.tensor([0, 3]))
        >>> s.level.tolist(), s.position.shape
        ([0, 3], torch.Size([2, 1]))
    """

    inner: Any
    level: Tensor

    @property
    def position(self) -> Tensor:  # type: ignore[override]
        return self.inner.position

    @property
    def energy(self) -> Tensor:  # type: ignore[override]
        return self.inner.energy

    @property
    def grad(self) -> Tensor | None:
        """The inner state's gradient at the current level (``None`` without one)."""
        return getattr(self.inner, "grad", None)


@dataclass
class LevelInfo(Info):
    """What one :class:`LevelGibbs` step did.

    Attributes:
        accept_prob: per chain, the mean acceptance probability of its ``inner_steps`` moves
            (the single move's when ``inner_steps == 1``), shape ``batch``.
        accepted: per chain, whether any of its moves was taken.
        diverging: per chain, whether any of its moves diverged.
        step_size: each chain's step at the level it moved at.
        inner: the inner kernel's info (its last move's, with ``accept_prob``, ``accepted``
            and ``diverging`` summarised over the moves as above).
        level: the chains' new levels, ``torch.long`` of shape ``batch``.
        level_counts: ``(L,)``, how many chains sit at each level after the draw (the
            visit counts of this step; they sum to the number of chains).
        moved_level: the level each chain's ``x`` moved at (before the draw), shape ``batch``.
        level_moves: ``(L,)``, how many chains moved at each level (``bincount`` of
            ``moved_level``).
        level_accept: ``(L,)``, the mean acceptance probability of the moves made at each
            level, over the chains and their ``inner_steps`` moves (NaN where no chain moved).

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> lv = torch.tensor([0, 1])
        >>> i = LevelInfo(torch.ones(2), o, ~o, None, None, lv, torch.tensor([1, 1]))
        >>> i.level_counts.tolist()
        [1, 1]
    """

    inner: Any = None
    level: Tensor | None = None
    level_counts: Tensor | None = None
    moved_level: Tensor | None = None
    level_moves: Tensor | None = None
    level_accept: Tensor | None = None


@dataclass(frozen=True)
class LevelGibbs(Kernel):
    """Alternate an inner kernel on ``x`` at fixed level with an exact draw of the level.

    The energy passed to ``init``/``step`` (and to :func:`ebmcmc.sample`) is the *joint*
    energy ``energy(x, t) -> batch`` with ``t`` an integer tensor of shape ``batch``.

    Args:
        kernel: inner kernel for ``x`` moves (e.g. ``MALA``).
        num_levels: number of levels ``L``; levels are ``0 … L-1``.
        step_sizes: optional per-level step sizes, shape ``(L,)``; each chain uses the entry
            of its current level (overriding the inner kernel's ``step_size``).
        event_ndim: number of event dimensions of ``x`` (1 for vectors, 3 for images).
        init_level: level the chains start at (default ``L - 1``, the noisiest).
        inner_steps: inner-kernel steps at the chain's level before each draw of the level
            (DAEBM uses 40); each leaves ``p(x | t)`` invariant, so any number is exact.

    Cost per step: ``inner_steps`` times the inner kernel's, plus ``L`` energy evaluations
    (no gradient) for the level's conditional and one energy+gradient evaluation at the new
    level.

    Info: :class:`LevelInfo`. Record levels with
    ``trace_fn=lambda s, i: {"x": s.position, "level": s.level}``.

    Warm-up adaptation tunes the inner kernel's step size (shared by the levels) unless
    ``step_sizes`` is given: per-level step sizes are set by their user, or adapted in the
    training loop as DAEBM does.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA, LevelGibbs
        >>> joint = lambda x, t: 0.5 * ((x - t[..., None].to(x.dtype)) ** 2).sum(-1)
        >>> k = LevelGibbs(MALA(0.5), num_levels=3)
        >>> tr = ebmcmc.sample(joint, k, torch.zeros(16, 1), num_samples=50, generator=0,
        ...                    trace_fn=lambda s, i: {"x": s.position, "level": s.level},
        ...                    progress=False, adaptation=None)
        >>> tr.variables["level"].shape
        torch.Size([16, 50])
    """

    kernel: Kernel
    num_levels: int
    step_sizes: Tensor | tuple | None = None
    event_ndim: int = 1
    init_level: int | None = None
    inner_steps: int = 1

    def __post_init__(self):
        if not isinstance(self.kernel, Kernel):
            raise TypeError("kernel must be an ebmcmc Kernel")
        if isinstance(self.num_levels, bool) or not isinstance(self.num_levels, int):
            raise ValueError(f"num_levels must be an int >= 2, got {self.num_levels!r}")
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be an int >= 2, got {self.num_levels!r}")
        if self.step_sizes is not None:
            s = as_hyperparameter("step_sizes", self.step_sizes)
            if s.shape != (self.num_levels,) or not torch.isfinite(s).all() or (s <= 0).any():
                raise ValueError(
                    f"step_sizes must be {self.num_levels} finite positive numbers, got "
                    f"{self.step_sizes!r}"
                )
        if self.init_level is not None and (
            isinstance(self.init_level, bool)
            or not isinstance(self.init_level, numbers.Integral)
            or not 0 <= self.init_level < self.num_levels
        ):
            raise ValueError(
                f"init_level must be an int in [0, {self.num_levels}), got {self.init_level!r}"
            )
        check_int("event_ndim", self.event_ndim, 0)
        n = self.inner_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"inner_steps must be an int >= 1, got {n!r}")

    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return self.kernel.needs_grad

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.kernel.evals_per_step * self.inner_steps + 1

    def children(self, state=None, info=None):
        if self.step_sizes is not None:  # per-level step sizes are set by their user
            return []
        return [(self.kernel, None if state is None else state.inner,
                 None if info is None else info.inner)]  # fmt: skip

    def _inner(self, level: Tensor, like: Tensor) -> Kernel:
        if self.step_sizes is None:
            return self.kernel
        table = torch.as_tensor(self.step_sizes, dtype=like.dtype, device=like.device)
        return self.kernel.replace(step_size=table[level])

    def init(
        self, energy, x: Tensor, validate: bool = True, level: Tensor | None = None
    ) -> LevelState:
        """Start chains at ``x`` ``(*batch, *event)``, all at ``init_level`` or, with
        ``level`` (integer, shape ``batch``), each at its own level.

        Example:
            >>> import torch
            >>> from ebmcmc.kernels import MALA
            >>> k = LevelGibbs(MALA(0.1), num_levels=3)
            >>> joint = lambda x, t: (x**2).sum(-1) + t
            >>> k.init(joint, torch.zeros(2, 1), level=torch.tensor([0, 2])).level.tolist()
            [0, 2]
        """
        batch = x.shape[: x.ndim - int(self.event_ndim)]
        if level is None:
            start = self.num_levels - 1 if self.init_level is None else int(self.init_level)
            level = torch.full(batch, start, dtype=torch.long, device=x.device)
        else:
            integer = isinstance(level, Tensor) and not (
                level.is_floating_point() or level.is_complex() or level.dtype == torch.bool
            )
            if not integer:
                raise TypeError("level must be an integer tensor of shape batch")
            if tuple(level.shape) != tuple(batch):
                raise ValueError(
                    f"level has shape {tuple(level.shape)}, expected the batch shape {tuple(batch)}"
                )
            if level.numel() and not 0 <= int(level.min()) <= int(level.max()) < self.num_levels:
                raise ValueError(f"level must lie in [0, {self.num_levels})")
            level = level.to(device=x.device, dtype=torch.long)
        cond = AtLevel(energy, level)
        if validate:
            _validate(cond, x)
        return LevelState(self._inner(level, x).init(cond, x, validate=False), level)

    def init_from(self, energy, state: ChainState) -> LevelState:
        if isinstance(state, LevelState):
            return state
        return self.init(energy, state.position, validate=False)

    def level_energies(self, energy, x: Tensor) -> Tensor:
        """``E(x, t)`` for every level, shape ``(L, *batch)`` (no gradient).

        Example:
            >>> import torch
            >>> from ebmcmc.kernels import MALA
            >>> k = LevelGibbs(MALA(0.1), num_levels=3)
            >>> k.level_energies(lambda x, t: x.sum(-1) * t, torch.ones(2, 2)).tolist()
            [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]
        """
        L = self.num_levels
        batch = x.shape[: x.ndim - int(self.event_ndim)]
        n = int(torch.Size(batch).numel())
        xs = (
            x.unsqueeze(0)
            .expand((L,) + tuple(x.shape))
            .reshape((L * n,) + tuple(x.shape[len(batch) :]))
        )
        ts = torch.arange(L, device=x.device).repeat_interleave(n)
        return evaluate(lambda y: energy(y, ts), xs).reshape((L,) + tuple(batch))

    def step(self, energy, state: LevelState, generator: torch.Generator | None = None):
        if not isinstance(state, LevelState):
            raise TypeError("LevelGibbs needs the state made by its own init()")
        level = state.level
        inner_kernel = self._inner(level, state.position)
        cond = AtLevel(energy, level)
        s, info = inner_kernel.step(cond, state.inner, generator)
        if self.inner_steps > 1:
            acc_sum, acc_any, div_any = info.accept_prob, info.accepted, info.diverging
            for _ in range(self.inner_steps - 1):
                s, info = inner_kernel.step(cond, s, generator)
                acc_sum = acc_sum + info.accept_prob
                acc_any = acc_any | info.accepted
                div_any = div_any | info.diverging
            info = dataclasses.replace(info, accept_prob=acc_sum / self.inner_steps,
                                       accepted=acc_any, diverging=div_any)  # fmt: skip
        table = self.level_energies(energy, s.position)  # (L, *batch)
        logits = torch.nan_to_num(-table.movedim(0, -1), nan=-torch.inf)
        u = rand_batch(logits.shape, logits, generator).clamp_(min=torch.finfo(logits.dtype).tiny)
        new_level = torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)
        stuck = ~torch.isfinite(logits).any(-1)
        new_level = torch.where(stuck, level, new_level)
        inner = self._inner(new_level, s.position).init(
            AtLevel(energy, new_level), s.position, validate=False
        )
        L = self.num_levels
        counts = torch.bincount(new_level.reshape(-1), minlength=L)
        moves = torch.bincount(level.reshape(-1), minlength=L)
        acc = info.accept_prob.reshape(-1)
        acc_sum = torch.zeros(L, dtype=acc.dtype, device=acc.device).index_add_(
            0, level.reshape(-1), acc
        )
        level_accept = acc_sum / moves.to(acc.dtype)  # 0 / 0 = NaN where no chain moved
        out = LevelInfo(
            info.accept_prob, info.accepted, info.diverging, info.step_size, info, new_level,
            counts, level, moves, level_accept,
        )  # fmt: skip
        return LevelState(inner, new_level), out
