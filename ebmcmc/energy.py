"""Energies: unnormalized potentials ``E(x)`` with density proportional to ``exp(-E(x))``.

An *energy* is any callable ``energy(x) -> Tensor`` where ``x`` has shape ``(*batch, *event)``
and the result has shape ``batch``: the energy reduces the event dimensions only. Every
``torch.nn.Module`` with that behaviour is an energy. This module holds the helpers that
evaluate energies with their gradients, adapt other descriptions of a density into energies,
and combine energies (tempering, geometric annealing paths, products of experts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ._deprecation import deprecated_alias

__all__ = [
    "Energy",
    "energy_and_grad",
    "evaluate",
    "validate",
    "from_log_prob",
    "from_distribution",
    "Tempered",
    "Annealed",
    "SumOf",
    "from_pyro",
]


@runtime_checkable
class Energy(Protocol):
    """The energy protocol: a batched callable returning one energy per batch element.

    Shapes: ``x`` is ``(*batch, *event)``; ``energy(x)`` is ``batch``.

    Example:
        >>> import torch
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> energy(torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    def __call__(self, x: Tensor) -> Tensor: ...


def _check_batch_shape(e: Tensor, x: Tensor, name: str = "energy") -> None:
    if not isinstance(e, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(e).__name__}")
    if not e.is_floating_point():
        raise TypeError(f"{name} must return a floating-point tensor, got dtype {e.dtype}")
    nb = e.ndim
    if nb > x.ndim or x.shape[:nb] != e.shape:
        raise ValueError(
            f"{name} returned shape {tuple(e.shape)} for input of shape {tuple(x.shape)}; "
            "expected the batch shape, i.e. a prefix of the input shape (the energy must "
            "reduce the event dimensions only)"
        )


def evaluate(energy: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Evaluate ``energy(x)`` without building a graph, checking the output shape.

    Args:
        energy: the energy callable.
        x: points of shape ``(*batch, *event)``.

    Returns:
        Tensor of shape ``batch``.

    Example:
        >>> import torch
        >>> evaluate(lambda x: (x**2).sum(-1), torch.ones(3, 2))
        tensor([2., 2., 2.])
    """
    with torch.no_grad():
        e = energy(x)
    _check_batch_shape(e, x)
    return e


def energy_and_grad(
    energy: Callable[[Tensor], Tensor], x: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Energy and its gradient with respect to ``x`` in one forward/backward pass.

    Gradients are taken for ``x`` only: parameters of an ``nn.Module`` energy receive no
    ``.grad`` and no graph is kept (unless ``create_graph=True``).

    Args:
        energy: the energy callable.
        x: points of shape ``(*batch, *event)``.
        create_graph: keep the graph of the gradient (for methods that differentiate through
            the sampler).

    Returns:
        ``(E, dE/dx)`` with shapes ``batch`` and ``(*batch, *event)``; both detached unless
        ``create_graph``.

    Example:
        >>> import torch
        >>> e, g = energy_and_grad(lambda x: 0.5 * (x**2).sum(-1), torch.ones(2, 3))
        >>> g
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    if not torch.is_grad_enabled():  # (sampling loops run with grad mode on: no context)
        with torch.enable_grad():
            return energy_and_grad(energy, x, create_graph=create_graph)
    xg = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
    e = energy(xg)
    _check_batch_shape(e, x)
    (g,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph)
    if create_graph:
        return e, g
    # without create_graph the gradient is computed outside grad mode: already detached
    return e.detach(), g.detach() if g.requires_grad else g


def validate(energy: Callable[[Tensor], Tensor], x: Tensor, name: str = "init") -> Tensor:
    """Check that ``energy`` is usable at ``x``: batch-shaped and finite output.

    Args:
        energy: the energy callable.
        x: the initial points, ``(*batch, *event)``.
        name: how to call ``x`` in error messages.

    Returns:
        The energies at ``x``, shape ``batch``.

    Raises:
        TypeError: if the output is not a floating-point tensor.
        ValueError: if the output is not of the batch shape, is empty (no chains) or is not
            finite everywhere.

    Example:
        >>> import torch
        >>> validate(lambda x: (x**2).sum(-1), torch.zeros(2, 2))
        tensor([0., 0.])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values")
    e = evaluate(energy, x)
    if e.numel() == 0:
        raise ValueError(
            f"{name} holds no chains: the energy's batch shape is {tuple(e.shape)} for {name} "
            f"of shape {tuple(x.shape)}"
        )
    if not torch.isfinite(e).all():
        bad = (~torch.isfinite(e)).sum().item()
        raise ValueError(
            f"energy is not finite at {bad} of {e.numel()} points of {name}; start the chains "
            "where the density is positive"
        )
    return e


# --------------------------------------------------------------------------- adapters


class _FromLogProb(torch.nn.Module):
    def __init__(self, log_prob: Callable[[Tensor], Tensor]):
        super().__init__()
        self.log_prob = log_prob

    def forward(self, x: Tensor) -> Tensor:
        return -self.log_prob(x)


def from_log_prob(log_prob: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Adapt a (possibly unnormalized) batched log-density into an energy ``E = -log p``.

    Args:
        log_prob: callable mapping ``(*batch, *event)`` to ``batch``.

    Returns:
        An energy module.

    Example:
        >>> import torch
        >>> energy = from_log_prob(lambda x: -0.5 * (x**2).sum(-1))
        >>> energy(torch.ones(1, 2))
        tensor([1.])
    """
    if not callable(log_prob):
        raise TypeError("log_prob must be callable")
    return _FromLogProb(log_prob)


class _FromDistribution(torch.nn.Module):
    def __init__(self, distribution: torch.distributions.Distribution):
        super().__init__()
        self.distribution = distribution
        self.event_shape = tuple(distribution.event_shape)

    def forward(self, x: Tensor) -> Tensor:
        return -self.distribution.log_prob(x)


def from_distribution(distribution: torch.distributions.Distribution) -> Callable[[Tensor], Tensor]:
    """Use a ``torch.distributions.Distribution`` (with empty batch shape) as an energy.

    Args:
        distribution: a distribution whose ``batch_shape`` is ``()``; its ``event_shape`` is the
            energy's event shape. Use ``torch.distributions.Independent`` to turn a factorised
            distribution's batch dimensions into event dimensions.

    Returns:
        An energy module ``E(x) = -distribution.log_prob(x)`` with ``.event_shape``.

    Example:
        >>> import torch
        >>> d = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
        >>> from_distribution(d)(torch.zeros(5, 2)).shape
        torch.Size([5])
    """
    if not isinstance(distribution, torch.distributions.Distribution):
        raise TypeError(
            f"distribution must be a torch.distributions.Distribution, got "
            f"{type(distribution).__name__}"
        )
    if tuple(distribution.batch_shape) != ():
        raise ValueError(
            f"distribution must have batch_shape (), got {tuple(distribution.batch_shape)}; "
            "wrap it in torch.distributions.Independent to make those dimensions events"
        )
    return _FromDistribution(distribution)


# --------------------------------------------------------------------------- combinators


def _check_beta(beta, name: str = "beta") -> None:
    b = torch.as_tensor(beta)
    if not torch.isfinite(b).all() or (b < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {beta}")


def _per_batch(value, e: Tensor) -> Tensor:
    """A scalar or per-chain hyperparameter as a tensor broadcastable to the batch ``e``."""
    return torch.as_tensor(value, dtype=e.dtype, device=e.device)


class Tempered(torch.nn.Module):
    """``beta * E(x)``: the energy of ``p(x)^beta`` (tempering).

    Args:
        energy: the energy.
        beta: inverse temperature ``>= 0``; a scalar or a per-chain tensor broadcastable to
            the batch (e.g. a ladder of shape ``(R, 1)`` for ``R`` replicas).

    Shapes: ``x`` ``(*batch, *event)`` → ``batch``.

    Example:
        >>> import torch
        >>> Tempered(lambda x: (x**2).sum(-1), 0.5)(torch.ones(1, 2))
        tensor([1.])
    """

    def __init__(self, energy: Callable[[Tensor], Tensor], beta):
        super().__init__()
        _check_beta(beta)
        self.energy = energy
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        e = self.energy(x)
        return _per_batch(self.beta, e) * e


class Annealed(torch.nn.Module):
    """The geometric path ``(1 - beta) * E_base(x) + beta * E_target(x)`` between two energies,
    i.e. the density ``p_base^(1 - beta) p_target^beta`` (annealing, AIS).

    Args:
        base: the energy at ``beta = 0``.
        target: the energy at ``beta = 1``.
        beta: in ``[0, 1]``; a scalar or a per-chain tensor broadcastable to the batch.

    Shapes: ``x`` ``(*batch, *event)`` → ``batch``.

    Example:
        >>> import torch
        >>> path = Annealed(lambda x: x.sum(-1), lambda x: 3 * x.sum(-1), 0.5)
        >>> path(torch.ones(1, 1))
        tensor([2.])
    """

    def __init__(self, base: Callable[[Tensor], Tensor], target: Callable[[Tensor], Tensor], beta):
        super().__init__()
        b = torch.as_tensor(beta)
        if not torch.isfinite(b).all() or (b < 0).any() or (b > 1).any():
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self.base = base
        self.target = target
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        eb = self.base(x)
        et = self.target(x)
        b = _per_batch(self.beta, et)
        return (1 - b) * eb + b * et


class SumOf(torch.nn.Module):
    """Weighted sum of energies: a product of experts ``prod_i p_i(x)^{w_i}`` (compositional
    generation: every expert must agree).

    Args:
        *energies: energies over the same event shape (a single list is accepted too).
        weights: optional per-expert weights ``w_i``.

    Shapes: ``x`` ``(*batch, *event)`` → ``batch``.

    Example:
        >>> import torch
        >>> SumOf(lambda x: x.sum(-1), lambda x: 2 * x.sum(-1))(torch.ones(1, 2))
        tensor([6.])
    """

    def __init__(self, *energies: Callable[[Tensor], Tensor], weights=None):
        super().__init__()
        if len(energies) == 1 and isinstance(energies[0], list | tuple):
            energies = tuple(energies[0])  # SumOf([e1, e2]), the 0.1 form
        if not energies:
            raise ValueError("SumOf needs at least one energy")
        for i, e in enumerate(energies):
            if not callable(e):
                raise TypeError(f"energies[{i}] is not callable")
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != len(energies):
                raise ValueError(f"weights has {len(weights)} entries for {len(energies)} energies")
        self.energies = list(energies)
        # register modules so .to()/parameters() see them
        self._modules_list = torch.nn.ModuleList(
            [e for e in energies if isinstance(e, torch.nn.Module)]
        )
        self.weights = weights

    def forward(self, x: Tensor) -> Tensor:
        total = None
        for i, energy in enumerate(self.energies):
            e = energy(x)
            if self.weights is not None:
                e = self.weights[i] * e
            total = e if total is None else total + e
        if total is None:  # __init__ requires at least one energy
            raise ValueError("SumOf needs at least one energy")
        return total


def from_pyro(model, *args, vectorize: bool = True, **kwargs):
    """A Pyro model's potential as a batched energy on a flat unconstrained vector.

    See :func:`ebmcmc.pyro_model.from_pyro` (imported lazily: Pyro loads only when used).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> e = from_pyro(lambda: pyro.sample("a", dist.Normal(0.0, 1.0)))
        >>> e.event_shape
        (1,)
    """
    from .pyro_model import from_pyro as _from_pyro

    return _from_pyro(model, *args, vectorize=vectorize, **kwargs)


# 0.1 spellings of the combinators (one name per combinator since 0.2; removed in 0.3)
tempered = deprecated_alias(Tempered, "ebmcmc.energy.tempered", "ebmcmc.energy.Tempered")
annealed = deprecated_alias(Annealed, "ebmcmc.energy.annealed", "ebmcmc.energy.Annealed")
sum_of = deprecated_alias(SumOf, "ebmcmc.energy.sum_of", "ebmcmc.energy.SumOf")
