"""Replica exchange (parallel tempering): an inner kernel on a ladder of tempered copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._deprecation import warn_deprecated
from ..energy import Tempered, evaluate
from ..energy import validate as _validate
from .base import ChainState, Info, Kernel, State
from .proposal import as_hyperparameter, expand_event, metropolis, where_batch

__all__ = ["ReplicaExchange", "ReplicaState", "ReplicaInfo"]


@dataclass
class ReplicaState(ChainState):
    """State of :class:`ReplicaExchange`: the inner kernel's state over every replica.

    ``inner`` is the inner kernel's state over ``(R, N, *event)`` with *tempered* energies
    ``beta_r E`` (the chains' batch flattened to ``N``); ``position`` and ``energy`` are the
    cold (``beta = 1``) replica's, shapes ``(*batch, *event)`` and ``batch``; ``parity`` says
    which neighbour pairs the next swap proposes (0: (0,1), (2,3), …; 1: (1,2), (3,4), …);
    ``chains`` is the chains' batch shape.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA, ReplicaExchange
        >>> k = ReplicaExchange(MALA(0.1), betas=(1.0, 0.5))
        >>> s = k.init(lambda x: (x**2).sum(-1), torch.zeros(3, 2))
        >>> s.inner.position.shape, s.position.shape
        (torch.Size([2, 3, 2]), torch.Size([3, 2]))
    """

    inner: Any
    parity: int = 0
    chains: tuple[int, ...] = ()

    @property
    def position(self) -> Tensor:  # type: ignore[override]
        p = self.inner.position[0]
        return p.reshape(tuple(self.chains) + tuple(p.shape[1:])) if self.chains else p

    @property
    def energy(self) -> Tensor:  # type: ignore[override]
        e = self.inner.energy[0]
        return e.reshape(tuple(self.chains)) if self.chains else e

    @property
    def replicas(self):
        """Deprecated: :attr:`inner` (removed in 0.3)."""
        warn_deprecated("ReplicaState.replicas", "ReplicaState.inner")
        return self.inner


@dataclass
class ReplicaInfo(Info):
    """What one :class:`ReplicaExchange` step did.

    ``accept_prob``, ``accepted``, ``diverging`` and ``step_size`` are the cold replica's
    move's; ``inner`` is the inner kernel's info over every replica ``(R, *batch)``;
    ``swap_accept_prob`` ``(R-1, *batch)`` is the swap acceptance probability of every
    neighbour pair and ``swap_attempted`` ``(R-1,)`` says which pairs were proposed.

    Example:
        >>> import torch
        >>> z, o = torch.zeros(2), torch.ones(2, dtype=torch.bool)
        >>> i = ReplicaInfo(z, o, ~o, None, None, torch.zeros(1, 2), o[:1])
        >>> i.swap_accept_prob.shape
        torch.Size([1, 2])
    """

    inner: Any = None
    swap_accept_prob: Tensor | None = None
    swap_attempted: Tensor | None = None


@dataclass(frozen=True)
class ReplicaExchange(Kernel):
    """Parallel tempering: ``R`` tempered copies moved by ``kernel``, neighbours swapped.

    Replica ``r`` targets ``exp(-betas[r] E)``; ``betas[0]`` must be 1 and the ladder must
    decrease. Each step moves every replica with the inner kernel, then proposes swaps between
    neighbours ``(r, r+1)`` for ``r`` of alternating parity (the deterministic even–odd scheme),
    accepted with probability ``min(1, exp((beta_r - beta_{r+1}) (E_r - E_{r+1})))``. The trace
    records the ``beta = 1`` replica.

    The inner kernel runs on the replicas' positions ``(R, N, *event)`` (the chains' batch
    flattened to ``N``), so its hyperparameters may be per replica, shape ``(R, 1)``, or per
    replica and chain, ``(R, N)``. A scalar inner step size is made per replica, ``(R, 1)``,
    so that warm-up adaptation tunes one step size (and mass matrix) per replica.

    Args:
        kernel: the inner kernel (MALA, HMC, …).
        betas: inverse temperatures, shape ``(R,)``, ``1 = betas[0] > betas[1] > … > 0``.

    Info: :class:`ReplicaInfo`.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA, ReplicaExchange
        >>> from ebmcmc.targets import GaussianMixture
        >>> mix = GaussianMixture(torch.tensor([[-5.0], [5.0]]), torch.eye(1) * 0.25)
        >>> k = ReplicaExchange(MALA(0.1), betas=torch.logspace(0, -2, 6))
        >>> tr = ebmcmc.sample(mix, k, torch.zeros(32, 1), num_samples=200, num_warmup=200,
        ...                    generator=0, progress=False)
        >>> tr.draws.shape
        torch.Size([32, 200, 1])
    """

    kernel: Kernel
    betas: Tensor | tuple

    def __post_init__(self):
        if not isinstance(self.kernel, Kernel):
            raise TypeError("kernel must be an ebmcmc Kernel")
        b = as_hyperparameter("betas", self.betas, torch.float64)
        if b.ndim != 1 or b.numel() < 2:
            raise ValueError(f"betas must be a 1-D ladder of >= 2 temperatures, got {self.betas}")
        if b[0] != 1 or not (b[1:] < b[:-1]).all() or not (b[-1] > 0):
            raise ValueError("betas must start at 1 and decrease strictly, staying > 0")
        step = getattr(self.kernel, "step_size", None)
        if isinstance(step, int | float) or (isinstance(step, Tensor) and step.numel() == 1):
            # one step size per replica, so that warm-up tunes the replicas apart
            value = torch.as_tensor(step, dtype=torch.float64)
            per_replica = value.reshape(1, 1).expand(b.numel(), 1).clone()
            object.__setattr__(self, "kernel", self.kernel.replace(step_size=per_replica))

    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return self.kernel.needs_grad

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.kernel.evals_per_step

    def children(self, state=None, info=None):
        return [(self.kernel, None if state is None else state.inner,
                 None if info is None else info.inner)]  # fmt: skip

    def _ladder(self, like: Tensor, batch_ndim: int) -> Tensor:
        b = torch.as_tensor(self.betas, dtype=like.dtype, device=like.device)
        return b.reshape((-1,) + (1,) * batch_ndim)

    def _tempered(self, energy, batch_ndim: int, like: Tensor) -> Tempered:
        return Tempered(energy, self._ladder(like, batch_ndim))

    def init(self, energy, x: Tensor, validate: bool = True) -> ReplicaState:
        e = _validate(energy, x) if validate else evaluate(energy, x)
        r = torch.as_tensor(self.betas).numel()
        flat = x.detach().reshape((e.numel(),) + tuple(x.shape[e.ndim :]))
        xs = flat.unsqueeze(0).expand((r,) + tuple(flat.shape)).clone()
        inner = self.kernel.init(self._tempered(energy, 1, x), xs, validate=False)
        return ReplicaState(inner, 0, tuple(e.shape))

    def init_from(self, energy, state: ChainState) -> ReplicaState:
        if isinstance(state, ReplicaState):
            return state
        return self.init(energy, state.position, validate=False)

    def step(self, energy, state: ReplicaState, generator: torch.Generator | None = None):
        if not isinstance(state, ReplicaState):
            raise TypeError("ReplicaExchange needs the state made by its own init()")
        inner = state.inner
        nb = inner.energy.ndim - 1
        ne = inner.event_ndim
        betas_b = self._ladder(inner.energy, nb)
        inner, info = self.kernel.step(self._tempered(energy, nb, inner.position), inner, generator)
        # swap proposals between neighbours of the current parity
        u = inner.energy / betas_b  # untempered energies, (R, *batch)
        r = u.shape[0]
        d_beta = betas_b[:-1] - betas_b[1:]
        log_ratio = d_beta * (u[:-1] - u[1:])
        swap_prob, swap_ok = metropolis(log_ratio, torch.isfinite(log_ratio), generator)
        attempted = torch.zeros(r - 1, dtype=torch.bool, device=u.device)
        attempted[state.parity :: 2] = True
        do = swap_ok & expand_event(attempted, nb)
        # partner index per replica: lower member of a swapped pair takes r+1, upper takes r-1
        pos, grad = inner.position, inner.grad
        zeros = torch.zeros_like(do[:1])
        take_up = torch.cat([do, zeros], 0)  # replica r swaps with r+1
        take_down = torch.cat([zeros, do], 0)  # replica r swaps with r-1
        up = lambda t: torch.cat([t[1:], t[-1:]], 0)  # noqa: E731
        down = lambda t: torch.cat([t[:1], t[:-1]], 0)  # noqa: E731
        u_new = torch.where(take_up, up(u), torch.where(take_down, down(u), u))
        pos = where_batch(take_up, up(pos), where_batch(take_down, down(pos), pos))
        if grad is not None:
            g_u = grad / expand_event(betas_b, ne)
            g_u = where_batch(take_up, up(g_u), where_batch(take_down, down(g_u), g_u))
            grad = g_u * expand_event(betas_b, ne)
        inner = State(pos, u_new * betas_b, grad)
        new_state = ReplicaState(inner, 1 - state.parity if r > 2 else 0, state.chains)
        step0 = info.step_size
        if isinstance(step0, Tensor) and step0.ndim > 0 and step0.shape[0] == r:
            step0 = step0[0]
        chains = tuple(state.chains) or tuple(info.accept_prob.shape[1:])
        out = ReplicaInfo(
            info.accept_prob[0].reshape(chains),
            info.accepted[0].reshape(chains),
            info.diverging[0].reshape(chains),
            step0,
            info,
            swap_prob.reshape((r - 1,) + chains),
            attempted,
        )
        return new_state, out
