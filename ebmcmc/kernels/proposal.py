"""Shared pieces of every Metropolis–Hastings kernel: per-chain hyperparameters, event sums,
finite masks, the accept decision, and masked selects of chain states.

Every kernel of :mod:`ebmcmc.kernels` builds its step from these, so the rules they encode hold
everywhere: a hyperparameter is a Python number or a tensor broadcastable to the chains' batch
shape; a proposal with a non-finite energy, gradient or position has acceptance probability 0
and is flagged diverging; a rejected chain keeps its state bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from ..energy import energy_and_grad, evaluate

__all__ = [
    "as_hyperparameter",
    "check_positive",
    "per_chain",
    "expand_event",
    "as_factor",
    "sum_event",
    "where_batch",
    "finite_batch",
    "metropolis",
    "metropolis_clean",
    "randn_like",
    "rand_batch",
    "evaluate_like",
    "select",
    "take_chains",
]

S = TypeVar("S")


def as_hyperparameter(name: str, value, dtype: torch.dtype | None = None) -> Tensor:
    """A hyperparameter (a number or a tensor) as a tensor, or a ``TypeError`` naming it.

    Bools, bool tensors, strings, complex numbers and anything torch cannot read are refused.

    Example:
        >>> as_hyperparameter("noise_scale", 0.5)
        tensor(0.5000)
    """
    if value is None or isinstance(value, bool | str | bytes):
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=dtype) if dtype is not None else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be a real number or tensor, got a {t.dtype} tensor")
    return t


def check_positive(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` (scalar or tensor) is finite and ``> 0``.

    A Python float is checked without touching torch (the fast path used when warm-up
    adaptation rebuilds a kernel every step).

    Example:
        >>> check_positive("step_size", 0.1)
    """
    if value is None:
        raise ValueError(f"{name} must be given")
    if isinstance(value, bool) or isinstance(value, str):
        raise TypeError(f"{name} must be a number or a tensor, got {value!r}")
    if isinstance(value, float | int):
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        return
    v = as_hyperparameter(name, value)
    if v.is_floating_point():
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


def as_factor(value, batch_shape, like: Tensor, event_ndim: int, name: str):
    """A hyperparameter ready to multiply positions: a Python number stays a float (cheapest),
    anything else becomes a ``(*batch, 1, …)`` tensor.

    Example:
        >>> import torch
        >>> as_factor(0.1, torch.Size([2]), torch.zeros(2, 3), 1, "step_size")
        0.1
        >>> as_factor(torch.ones(2), torch.Size([2]), torch.zeros(2, 3), 1, "step_size").shape
        torch.Size([2, 1])
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return expand_event(per_chain(value, batch_shape, like, name), event_ndim)


def sum_event(t: Tensor, event_ndim: int) -> Tensor:
    """Sum the last ``event_ndim`` dimensions: ``(*batch, *event) -> batch``.

    Example:
        >>> import torch
        >>> sum_event(torch.ones(2, 3, 4), 2)
        tensor([12., 12.])
    """
    if event_ndim == 1:  # the common case, without a flatten
        return t.sum(-1)
    return t.flatten(start_dim=t.ndim - event_ndim).sum(-1) if event_ndim else t


def where_batch(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``torch.where`` with a batch-shaped mask applied to tensors of shape ``(*batch, *event)``.

    Example:
        >>> import torch
        >>> where_batch(torch.tensor([True, False]), torch.ones(2, 3), torch.zeros(2, 3)).sum()
        tensor(3.)
    """
    return torch.where(expand_event(mask, a.ndim - mask.ndim), a, b)


def finite_batch(e: Tensor, *tensors: Tensor | None) -> Tensor:
    """Per-chain mask: the energy and every given ``(*batch, *event)`` tensor are finite.

    Example:
        >>> import torch
        >>> finite_batch(torch.zeros(2), torch.tensor([[1.0], [float("nan")]]))
        tensor([ True, False])
    """
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


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator``.

    Example:
        >>> import torch
        >>> randn_like(torch.zeros(2, 3), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])
    """
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def rand_batch(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform(0, 1) draws of ``shape`` with the dtype/device of ``like``.

    Example:
        >>> import torch
        >>> rand_batch((3,), torch.zeros(1), torch.Generator().manual_seed(0)).shape
        torch.Size([3])
    """
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def metropolis(
    log_ratio: Tensor, finite: Tensor | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The Metropolis accept decision from a log acceptance ratio.

    Non-finite proposals (``finite`` False) and NaN or infinite ratios get acceptance
    probability 0. One uniform draw per chain is taken from ``generator``.

    Args:
        log_ratio: ``log`` of the acceptance ratio, shape ``batch``.
        finite: whether each chain's proposal may be accepted, shape ``batch``; ``None`` when
            the ratio itself carries it (a non-finite ratio is never accepted).
        generator: the chains' generator.

    Returns:
        ``(accept_prob, accepted)``, both of shape ``batch``.

    Example:
        >>> import torch
        >>> p, a = metropolis(torch.tensor([0.0, -1e9]), torch.tensor([True, True]),
        ...                   torch.Generator().manual_seed(0))
        >>> p.tolist(), a.tolist()
        ([1.0, 0.0], [True, False])
    """
    if finite is None:  # one op: NaN and ±inf ratios become -inf (never accepted)
        inf = torch.inf
        log_ratio = torch.nan_to_num(log_ratio, nan=-inf, posinf=-inf, neginf=-inf)
    else:
        log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -torch.inf))
        log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf)
    accept_prob, accepted = metropolis_clean(log_ratio, generator)
    return accept_prob, accepted if finite is None else accepted & finite


def metropolis_clean(log_ratio: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The Metropolis accept decision from a log ratio that holds no NaN and no ``+inf``
    (``-inf``: never accepted), as :func:`metropolis` makes it; for kernels that clean the
    ratio themselves and use the cleaned ratio again.

    Returns:
        ``(accept_prob, accepted)``, both of the ratio's shape.

    Example:
        >>> import torch
        >>> p, a = metropolis_clean(torch.tensor([0.0, -torch.inf]),
        ...                         torch.Generator().manual_seed(0))
        >>> p.tolist(), a.tolist()
        ([1.0, 0.0], [True, False])
    """
    accept_prob = log_ratio.clamp_max(0.0).exp_()  # (in place on fresh tensors: no copies)
    u = rand_batch(log_ratio.shape, log_ratio, generator)
    return accept_prob, u.log_() < log_ratio


def evaluate_like(energy, x: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``(E(x), grad E(x))`` when ``with_grad``, else ``(E(x), None)`` (no graph kept).

    Kernels that need no gradient still compute one when the incoming state carries one, so
    the state stays usable by a gradient-based kernel they are composed with.

    Example:
        >>> import torch
        >>> e, g = evaluate_like(lambda x: (x**2).sum(-1), torch.ones(2, 2), False)
        >>> e.tolist(), g
        ([2.0, 2.0], None)
    """
    if with_grad:
        return energy_and_grad(energy, x)
    return evaluate(energy, x), None


def select(mask: Tensor, new: S, old: S) -> S:
    """Per chain, ``new`` where ``mask`` else ``old``, for any chain state (a dataclass whose
    tensor fields lead with the batch dimensions, nested states included).

    Fields that are not tensors (a parity, a step counter) are taken from ``new``.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import State
        >>> a = State(torch.ones(2, 1), torch.ones(2))
        >>> b = State(torch.zeros(2, 1), torch.zeros(2))
        >>> select(torch.tensor([True, False]), a, b).energy
        tensor([1., 0.])
    """
    if isinstance(new, Tensor):
        return where_batch(mask, new, old)  # type: ignore[arg-type,return-value]
    if new is None:
        return new
    if dataclasses.is_dataclass(new) and not isinstance(new, type):
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(new):
            a, b = getattr(new, f.name), getattr(old, f.name)
            if isinstance(a, Tensor) and a.ndim >= mask.ndim:
                changes[f.name] = where_batch(mask, a, b)
            elif dataclasses.is_dataclass(a):
                changes[f.name] = select(mask, a, b)
        return dataclasses.replace(new, **changes)
    return new


def take_chains(state: S, index: Tensor, batch_shape: torch.Size) -> S:
    """A state whose chain ``i`` is ``state``'s chain ``index[i]`` (``index`` indexes the
    chains flattened; every tensor field that leads with ``batch_shape`` is gathered, nested
    states included, other fields are kept).

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import State
        >>> s = State(torch.arange(3.0)[:, None], torch.arange(3.0))
        >>> take_chains(s, torch.tensor([2, 2, 0]), torch.Size([3])).energy
        tensor([2., 2., 0.])
    """
    nb = len(batch_shape)
    if isinstance(state, Tensor):
        if tuple(state.shape[:nb]) != tuple(batch_shape):
            return state
        flat = state.reshape((-1,) + tuple(state.shape[nb:]))
        return cast(S, flat[index].reshape(state.shape))
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        changes = {
            f.name: take_chains(getattr(state, f.name), index, batch_shape)
            for f in dataclasses.fields(state)
            if isinstance(getattr(state, f.name), Tensor)
            or dataclasses.is_dataclass(getattr(state, f.name))
        }
        return dataclasses.replace(state, **changes)
    return state
