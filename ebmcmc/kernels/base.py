"""The kernel interface: hyperparameters only, explicit state and per-step info.

A kernel is a frozen dataclass of hyperparameters with

* ``init(energy, x) -> State``: evaluate the energy (and gradient where the method needs it)
  at the chains' starting points ``x`` of shape ``(*batch, *event)``;
* ``step(energy, state, generator) -> (State, Info)``: one transition of every chain.

The batch shape is the shape of ``energy(x)``; every hyperparameter may be a Python scalar or a
tensor broadcastable to the batch shape (one value per chain).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..energy import energy_and_grad, evaluate
from ..energy import validate as _validate

__all__ = ["State", "Info", "Kernel", "per_chain", "expand_event", "check_positive"]


@dataclass
class State:
    """Chain state: position with its energy and (where the kernel uses it) gradient.

    Shapes: ``position`` ``(*batch, *event)``, ``energy`` ``batch``, ``grad`` like
    ``position`` or ``None``.

    Example:
        >>> import torch
        >>> s = State(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2))
        >>> s.batch_shape, s.event_ndim
        (torch.Size([3]), 1)
    """

    position: Tensor
    energy: Tensor
    grad: Tensor | None = None

    @property
    def batch_shape(self) -> torch.Size:
        return self.energy.shape

    @property
    def event_ndim(self) -> int:
        return self.position.ndim - self.energy.ndim


@dataclass
class Info:
    """What one step did, per chain (shape ``batch``).

    Attributes:
        accept_prob: Metropolis acceptance probability (1 for unadjusted kernels).
        accepted: whether the proposal was taken.
        diverging: the proposal was non-finite (or, for HMC, its energy error exceeded the
            divergence threshold); such proposals are always rejected.
        extra: kernel-specific per-step figures (e.g. swap rates).

    Example:
        >>> import torch
        >>> Info(torch.ones(2), torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
        ... # doctest: +ELLIPSIS
        Info(accept_prob=tensor([1., 1.]), ...)
    """

    accept_prob: Tensor
    accepted: Tensor
    diverging: Tensor
    extra: dict[str, Any] = field(default_factory=dict)


def check_positive(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` (scalar or tensor) is finite and ``> 0``.

    Example:
        >>> check_positive("step_size", 0.1)
    """
    if value is None:
        raise ValueError(f"{name} must be given")
    v = torch.as_tensor(value)
    if v.is_floating_point() or v.is_complex():
        ok = bool(torch.isfinite(v).all()) and bool((v > 0).all())
    else:
        ok = bool((v > 0).all())
    if not ok or v.numel() == 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def per_chain(value, batch_shape: torch.Size, like: Tensor, name: str = "value") -> Tensor:
    """A scalar or per-chain hyperparameter as a tensor of exactly ``batch_shape``.

    Args:
        value: Python number or tensor broadcastable to ``batch_shape``.
        batch_shape: the chains' batch shape.
        like: tensor giving dtype and device.
        name: argument name for error messages.

    Example:
        >>> import torch
        >>> per_chain(0.5, torch.Size([3]), torch.zeros(1))
        tensor([0.5000, 0.5000, 0.5000])
    """
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        return torch.broadcast_to(t, batch_shape)
    except RuntimeError as err:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to the chains' batch shape "
            f"{tuple(batch_shape)}"
        ) from err


def expand_event(t: Tensor, event_ndim: int) -> Tensor:
    """Append ``event_ndim`` singleton dimensions so a batch tensor multiplies positions.

    Example:
        >>> import torch
        >>> expand_event(torch.ones(4), 2).shape
        torch.Size([4, 1, 1])
    """
    return t.reshape(t.shape + (1,) * event_ndim)


def where_batch(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``torch.where`` with a batch-shaped mask applied to tensors of shape (*batch, *event)."""
    return torch.where(expand_event(mask, a.ndim - mask.ndim), a, b)


@dataclass(frozen=True)
class Kernel:
    """Base class of all kernels. Subclasses are frozen dataclasses of hyperparameters.

    Attributes:
        needs_grad: whether the state carries the energy gradient.
        default_target_accept: the acceptance rate step-size adaptation aims for (``None``
            for kernels that adapt nothing).

    Example:
        >>> from ebmcmc.kernels import MALA
        >>> MALA(step_size=0.1).replace(step_size=0.2).step_size
        0.2
    """

    needs_grad: ClassVar[bool] = True
    default_target_accept: ClassVar[float | None] = None
    #: names of hyperparameters that adaptation may tune
    adaptable: ClassVar[tuple[str, ...]] = ("step_size",)

    def replace(self, **changes) -> Kernel:
        """A copy of this kernel with some hyperparameters changed (validated)."""
        return dataclasses.replace(self, **changes)

    def with_params(self, **changes) -> Kernel:
        """Like :meth:`replace` but without re-validation, for values computed by the library
        itself (warm-up adaptation changes the step size every step)."""
        new = copy.copy(self)
        for k, v in changes.items():
            if not hasattr(self, k):
                raise AttributeError(f"{type(self).__name__} has no hyperparameter {k!r}")
            object.__setattr__(new, k, v)
        return new

    #: energy (+gradient) evaluations one ``step`` costs
    evals_per_step: ClassVar[int] = 1

    def init(self, energy: Callable[[Tensor], Tensor], x: Tensor, validate: bool = True) -> State:
        """Evaluate the energy (and gradient) at the starting points.

        Args:
            energy: the energy, ``(*batch, *event) -> batch``.
            x: starting points ``(*batch, *event)``.
            validate: check shapes and finiteness first (an extra energy evaluation); inner
                loops that re-evaluate known-good points pass ``False``.

        Raises:
            ValueError: if the energy is not batch-shaped or not finite at ``x``.
        """
        if validate:
            _validate(energy, x)
        return self._eval_state(energy, x)

    def _eval_state(self, energy, x: Tensor) -> State:
        if self.needs_grad:
            e, g = energy_and_grad(energy, x)
            return State(x.detach(), e, g)
        return State(x.detach(), evaluate(energy, x), None)

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        """One transition of every chain: ``(state, generator) -> (State, Info)``."""
        raise NotImplementedError

    # ------------------------------------------------------------ hooks for adaptation
    #: leading batch dimensions that keep their own adapted values when adaptation is
    #: shared across chains (1 for replica exchange: one step size per replica)
    adaptation_keep_ndim: ClassVar[int] = 0

    def adaptation_view(self, state: State, info: Info | None) -> tuple[State, Info | None]:
        """The state and info that warm-up adaptation should learn from (wrappers expose
        their inner kernel's); ``info`` may be ``None``."""
        return state, info

    #: whether ``recorded_step_size`` changes from step to step (e.g. per-level step sizes)
    dynamic_step_size: ClassVar[bool] = False

    def recorded_step_size(self, state: State) -> Tensor | None:
        """The per-chain step size to record in traces (shape ``batch``), or ``None``."""
        s = getattr(self, "step_size", None)
        if s is None:
            return None
        return per_chain(s, state.batch_shape, state.energy, "step_size")

    def _validate_state(self, state: State) -> None:
        if not isinstance(state, State):
            raise TypeError(f"state must be an ebmcmc State, got {type(state).__name__}")
        if self.needs_grad and state.grad is None:
            raise ValueError(
                f"{type(self).__name__} needs a state with gradients; create it with this "
                "kernel's init()"
            )


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def rand_batch(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform(0, 1) draws of ``shape`` with the dtype/device of ``like``."""
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def metropolis(
    log_ratio: Tensor, finite: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Metropolis accept decision from a log acceptance ratio.

    Non-finite proposals (``finite`` False) get acceptance probability 0.

    Returns:
        ``(accept_prob, accepted)``, both of the batch shape.
    """
    log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -torch.inf))
    log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf)
    accept_prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    u = rand_batch(log_ratio.shape, log_ratio, generator)
    accepted = (torch.log(u) < log_ratio) & finite
    return accept_prob, accepted


def finite_batch(e: Tensor, *tensors: Tensor) -> Tensor:
    """Per-chain mask: the energy and every given (*batch, *event) tensor are finite."""
    ok = torch.isfinite(e)
    for t in tensors:
        if t is None:
            continue
        extra = t.ndim - e.ndim
        f = torch.isfinite(t)
        if extra:
            f = f.flatten(start_dim=e.ndim).all(-1)
        ok = ok & f
    return ok
