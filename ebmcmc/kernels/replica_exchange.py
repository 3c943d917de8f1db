"""Replica exchange (parallel tempering): an inner kernel on a ladder of tempered copies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..energy import Tempered, evaluate
from ..energy import validate as _validate
from .base import Info, Kernel, State, expand_event, metropolis, per_chain, where_batch

__all__ = ["ReplicaExchange", "ReplicaState"]


@dataclass
class ReplicaState(State):
    """State of :class:`ReplicaExchange`: the ``beta = 1`` chain plus every replica.

    ``position``/``energy``/``grad`` are those of the cold (``beta = 1``) replica, shapes
    ``(*batch, *event)``/``batch``; ``replicas`` is the inner kernel's state over
    ``(R, *batch, *event)`` with *tempered* energies ``beta_r E``; ``parity`` says which
    neighbour pairs the next swap proposes (0: (0,1), (2,3), …; 1: (1,2), (3,4), …).

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA, ReplicaExchange
        >>> k = ReplicaExchange(MALA(0.1), betas=(1.0, 0.5))
        >>> s = k.init(lambda x: (x**2).sum(-1), torch.zeros(3, 2))
        >>> s.replicas.position.shape
        torch.Size([2, 3, 2])
    """

    replicas: State | None = None
    parity: int = 0


@dataclass(frozen=True)
class ReplicaExchange(Kernel):
    """Parallel tempering: ``R`` tempered copies moved by ``kernel``, neighbours swapped.

    Replica ``r`` targets ``exp(-betas[r] E)``; ``betas[0]`` must be 1 and the ladder must
    decrease. Each step moves every replica with the inner kernel, then proposes swaps between
    neighbours ``(r, r+1)`` for ``r`` of alternating parity (the deterministic even–odd scheme),
    accepted with probability ``min(1, exp((beta_r - beta_{r+1}) (E_r - E_{r+1})))``. The trace
    records the ``beta = 1`` replica. The inner kernel's hyperparameters may be per replica:
    a tensor of shape ``(R, 1, …)`` broadcasting over ``(R, *batch)``; warm-up adaptation tunes
    one step size per replica.

    Args:
        kernel: the inner kernel (MALA, HMC, …).
        betas: inverse temperatures, shape ``(R,)``, ``1 = betas[0] > betas[1] > … > 0``.

    Info: ``accept_prob``/``accepted``/``diverging`` of the cold replica's move;
    ``extra["swap_accept_prob"]`` ``(R-1, *batch)``, the swap acceptance probability of every
    neighbour pair, and ``extra["swap_attempted"]`` ``(R-1,)``, which pairs were proposed.

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
        b = torch.as_tensor(self.betas, dtype=torch.float64)
        if b.ndim != 1 or b.numel() < 2:
            raise ValueError(f"betas must be a 1-D ladder of >= 2 temperatures, got {self.betas}")
        if b[0] != 1 or not (b[1:] < b[:-1]).all() or not (b[-1] > 0):
            raise ValueError("betas must start at 1 and decrease strictly, staying > 0")

    # ---------------------------------------------------------------- delegation
    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return self.kernel.needs_grad

    @property
    def default_target_accept(self):  # type: ignore[override]
        return self.kernel.default_target_accept

    @property
    def adaptable(self):  # type: ignore[override]
        return self.kernel.adaptable

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.kernel.evals_per_step

    @property
    def step_size(self):
        """The inner kernel's step size (per replica where adapted)."""
        return getattr(self.kernel, "step_size", None)

    @property
    def inverse_mass_matrix(self):
        return getattr(self.kernel, "inverse_mass_matrix", None)

    def _split_changes(self, changes: dict) -> tuple[dict, dict]:
        """``(own, inner)``: changes to this wrapper's fields and to the inner kernel's."""
        own = {f.name for f in dataclasses.fields(self)}
        mine = {k: v for k, v in changes.items() if k in own}
        return mine, {k: v for k, v in changes.items() if k not in own}

    def replace(self, **changes) -> ReplicaExchange:
        mine, inner = self._split_changes(changes)
        if inner:
            mine["kernel"] = mine.get("kernel", self.kernel).replace(**inner)
        return dataclasses.replace(self, **mine)

    def with_params(self, **changes) -> ReplicaExchange:
        mine, inner = self._split_changes(changes)
        new = super().with_params(**mine)
        if inner:
            object.__setattr__(new, "kernel", new.kernel.with_params(**inner))
        return new

    adaptation_keep_ndim = 1  # adapt one step size (and mass matrix) per replica

    def adaptation_view(self, state: ReplicaState, info: Info | None):
        return state.replicas, None if info is None else info.extra["inner_info"]

    def recorded_step_size(self, state: ReplicaState) -> Tensor | None:
        s = self.step_size
        if s is None:
            return None
        inner = state.replicas
        full = per_chain(s, inner.batch_shape, inner.energy, "step_size")
        return full[0]

    # ---------------------------------------------------------------- kernel
    def _ladder(self, like: Tensor, batch_ndim: int) -> Tensor:
        b = torch.as_tensor(self.betas, dtype=like.dtype, device=like.device)
        return b.reshape((-1,) + (1,) * batch_ndim)

    def _tempered(self, energy, batch_ndim: int, like: Tensor) -> Tempered:
        return Tempered(energy, self._ladder(like, batch_ndim))

    def init(self, energy, x: Tensor, validate: bool = True) -> ReplicaState:
        e = _validate(energy, x) if validate else evaluate(energy, x)
        r = torch.as_tensor(self.betas).numel()
        xs = x.detach().unsqueeze(0).expand((r,) + tuple(x.shape)).clone()
        inner = self.kernel.init(self._tempered(energy, e.ndim, x), xs, validate=False)
        return self._wrap(inner, 0)

    @staticmethod
    def _wrap(inner: State, parity: int) -> ReplicaState:
        return ReplicaState(
            inner.position[0],
            inner.energy[0],
            None if inner.grad is None else inner.grad[0],
            replicas=inner,
            parity=parity,
        )

    def step(self, energy, state: ReplicaState, generator: torch.Generator | None = None):
        if not isinstance(state, ReplicaState):
            raise TypeError("ReplicaExchange needs the state made by its own init()")
        inner = state.replicas
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
        new_state = self._wrap(inner, 1 - state.parity if r > 2 else 0)
        out = Info(
            info.accept_prob[0],
            info.accepted[0],
            info.diverging[0],
            extra={
                "swap_accept_prob": swap_prob,
                "swap_attempted": attempted,
                "inner_info": info,
            },
        )
        return new_state, out
