"""The kernel contract: hyperparameters only, explicit typed states and infos.

A kernel is a frozen dataclass of hyperparameters with

* ``init(energy, x) -> state``: evaluate the energy (and the gradient where the method needs
  it) at the chains' starting points ``x`` of shape ``(*batch, *event)``;
* ``step(energy, state, generator) -> (state, info)``: one transition of every chain;
* ``init_from(energy, state)``: take over a chain state made by another kernel (in a
  :class:`~ebmcmc.kernels.Cycle`), reusing its energy and gradient where possible.

The batch shape is the shape of ``energy(x)``; every hyperparameter may be a Python number or a
tensor broadcastable to the batch shape (one value per chain).

**States.** Every state has ``position`` ``(*batch, *event)`` and ``energy`` ``batch``.
:class:`State` is the state of the single-position kernels (Langevin, MALA, HMC, random walk,
…), with the gradient where the kernel uses it. A composite kernel's state *holds* its inner
kernel's state in a field named ``inner`` (and exposes ``position`` and ``energy`` as
properties of it), never a copy of its fields.

**Infos.** Every info has per-chain ``accept_prob``, ``accepted`` and ``diverging``, and the
``step_size`` the step used (or ``None``). A composite's info holds its inner kernel's info in
``inner`` (``Cycle``: ``inners``).

**Composites** name their inner kernels in a field ``kernel`` (one) or ``kernels`` (several).
This structure is all the adaptation layer (:mod:`ebmcmc.adaptation`) needs to tune an inner
kernel: it follows ``kernel``/``kernels`` through the kernel, ``inner`` through the state and
``inner``/``inners`` through the info.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..energy import validate as _validate
from .proposal import check_positive, evaluate_like, expand_event, per_chain

__all__ = [
    "ChainState",
    "State",
    "Info",
    "Kernel",
    "inverse_mass",
    "flatten_state",
    "unflatten_state",
    "per_chain",
    "expand_event",
    "check_positive",
]


class ChainState:
    """What every kernel state offers: ``position`` ``(*batch, *event)``, ``energy``
    ``batch``, and the shapes derived from them.

    Example:
        >>> import torch
        >>> s = State(torch.zeros(3, 2), torch.zeros(3))
        >>> isinstance(s, ChainState), s.batch_shape, s.event_ndim
        (True, torch.Size([3]), 1)
    """

    position: Tensor
    energy: Tensor

    @property
    def batch_shape(self) -> torch.Size:
        """The chains' batch shape (the energy's shape)."""
        return self.energy.shape

    @property
    def event_ndim(self) -> int:
        """The number of event dimensions of a position."""
        return self.position.ndim - self.energy.ndim


@dataclass
class State(ChainState):
    """Chain state of the single-position kernels: position with its energy and gradient.

    Shapes: ``position`` ``(*batch, *event)``, ``energy`` ``batch``, ``grad`` like
    ``position`` or ``None`` (kernels that use no gradient).

    Example:
        >>> import torch
        >>> s = State(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 2))
        >>> s.batch_shape, s.event_ndim
        (torch.Size([3]), 1)
    """

    position: Tensor
    energy: Tensor
    grad: Tensor | None = None


@dataclass
class Info:
    """What one step did, per chain (shape ``batch``).

    Attributes:
        accept_prob: Metropolis acceptance probability (1 for unadjusted kernels).
        accepted: whether the proposal was taken.
        diverging: the proposal was non-finite (or, for HMC, its energy error exceeded the
            divergence threshold); such proposals are always rejected.
        step_size: the step size the step used, a float or a tensor broadcasting to the batch
            (``None`` for kernels without one).

    Example:
        >>> import torch
        >>> Info(torch.ones(2), torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
        ... # doctest: +ELLIPSIS
        Info(accept_prob=tensor([1., 1.]), ...)
    """

    accept_prob: Tensor
    accepted: Tensor
    diverging: Tensor
    step_size: Any = None


@dataclass(frozen=True)
class Kernel:
    """Base class of all kernels. Subclasses are frozen dataclasses of hyperparameters.

    Attributes:
        needs_grad: whether the state carries the energy gradient.
        default_target_accept: the acceptance rate step-size adaptation aims for (``None``
            for kernels whose step size is not tuned by acceptance).

    Example:
        >>> from ebmcmc.kernels import MALA
        >>> MALA(step_size=0.1).replace(step_size=0.2).step_size
        0.2
    """

    needs_grad: ClassVar[bool] = True
    default_target_accept: ClassVar[float | None] = None
    #: energy (+gradient) evaluations one ``step`` costs
    evals_per_step: ClassVar[int] = 1

    def replace(self, **changes) -> Kernel:
        """A copy of this kernel with some hyperparameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def init(self, energy: Callable[[Tensor], Tensor], x: Tensor, validate: bool = True):
        """Evaluate the energy (and gradient) at the starting points.

        Args:
            energy: the energy, ``(*batch, *event) -> batch``.
            x: starting points ``(*batch, *event)``.
            validate: check shapes and finiteness first (an extra energy evaluation); inner
                loops that re-evaluate known-good points pass ``False``.

        Returns:
            This kernel's state.

        Raises:
            ValueError: if the energy is not batch-shaped or not finite at ``x``.
        """
        if validate:
            _validate(energy, x)
        e, g = evaluate_like(energy, x, self.needs_grad)
        return State(x.detach(), e, g)

    def init_from(self, energy, state: ChainState):
        """This kernel's state for the chains of ``state`` (made by any kernel).

        A :class:`State` is reused as it is when it carries what this kernel needs (the
        gradient); otherwise the energy is evaluated again at ``state.position``.

        Example:
            >>> import torch
            >>> from ebmcmc.kernels import MALA, RandomWalk
            >>> energy = lambda x: (x**2).sum(-1)
            >>> s = RandomWalk(0.5).init(energy, torch.ones(2, 2))   # no gradient
            >>> MALA(0.1).init_from(energy, s).grad.shape
            torch.Size([2, 2])
        """
        if type(state) is State and (state.grad is not None or not self.needs_grad):
            return state
        return self.init(energy, state.position, validate=False)

    def step(self, energy, state, generator: torch.Generator | None = None):
        """One transition of every chain: ``(state, generator) -> (state, info)``."""
        raise NotImplementedError

    def children(self, state=None, info=None) -> list[tuple[Kernel, Any, Any]]:
        """The kernels this kernel runs, each with its state and info: ``[(kernel, state,
        info), …]`` (``state`` and ``info`` may be ``None``).

        Empty for a single-position kernel; a composite lists its inner kernels. This is how
        warm-up adaptation reaches (and tunes) the kernels inside a composite.

        Example:
            >>> from ebmcmc.kernels import MALA, Cycle, RandomWalk
            >>> MALA(0.1).children(), len(Cycle(MALA(0.1), RandomWalk(1.0)).children())
            ([], 2)
        """
        return []

    def _check_state(self, state) -> State:
        if not isinstance(state, State):
            raise TypeError(
                f"{type(self).__name__}: state must be an ebmcmc State, got "
                f"{type(state).__name__}; make it with this kernel's init() (or init_from() "
                "for another kernel's state)"
            )
        if self.needs_grad and state.grad is None:
            raise ValueError(
                f"{type(self).__name__} needs a state with gradients; create it with this "
                "kernel's init()"
            )
        return state

    def _check_tensor_field(self, name: str) -> None:
        """Validate an optional positive tensor hyperparameter (e.g. a mass matrix)."""
        value = getattr(self, name)
        if value is not None:
            check_positive(name, value)


def inverse_mass(value: Tensor | None, x: Tensor) -> Tensor | None:
    """A diagonal inverse mass matrix as a tensor broadcasting against positions ``x``.

    Example:
        >>> import torch
        >>> inverse_mass(torch.ones(2), torch.zeros(5, 2)).shape
        torch.Size([2])
    """
    if value is None:
        return None
    m = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    # broadcasting by hand: torch.broadcast_shapes costs ~100 µs a call, once per transition
    ms, xs = m.shape, x.shape
    tail = xs[len(xs) - len(ms) :] if len(ms) <= len(xs) else None
    if tail is None or any(a != b and a != 1 for a, b in zip(ms, tail, strict=True)):
        raise ValueError(
            f"inverse_mass_matrix of shape {tuple(ms)} does not broadcast to positions "
            f"of shape {tuple(xs)}; give the event shape or (*batch, *event)"
        )
    return m


def flatten_state(state, prefix: str = "") -> dict[str, Any]:
    """Every field of a (possibly nested) chain state under dotted names.

    Tensors stay tensors, numbers stay numbers, ``None`` stays ``None``; a nested state's
    fields appear under ``"inner.…"``. :func:`unflatten_state` rebuilds the state.

    Example:
        >>> import torch
        >>> sorted(flatten_state(State(torch.zeros(2, 1), torch.zeros(2))))
        ['energy', 'grad', 'position']
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        v = getattr(state, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update(flatten_state(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten_state(template, values: dict[str, Any], prefix: str = ""):
    """A state like ``template`` with its fields taken from ``values`` (see
    :func:`flatten_state`).

    Example:
        >>> import torch
        >>> s = State(torch.zeros(2, 1), torch.zeros(2))
        >>> unflatten_state(s, {"position": torch.ones(2, 1), "energy": torch.ones(2),
        ...                     "grad": None}).position.sum()
        tensor(2.)
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(template):
        v = getattr(template, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            changes[f.name] = unflatten_state(v, values, key + ".")
        elif key in values:
            changes[f.name] = values[key]
    return dataclasses.replace(template, **changes)
