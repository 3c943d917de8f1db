"""Kernels built from kernels: apply several in turn, move some coordinates, move some chains.

* :class:`Cycle` applies its kernels one after the other in each step (optionally some only
  every ``k``-th step). Each kernel leaves the target invariant, so the cycle does too.
* :class:`Masked` moves only the coordinates where a mask is True and holds the others fixed:
  it samples the *conditional* distribution of the free coordinates given the fixed ones
  (inpainting, Gibbs blocks). The inner kernel runs on the free coordinates alone, so it is
  exact whatever the kernel (its mass matrix, trajectory adaptation, proposals are all in the
  free space).
* :class:`ChainMask` moves only the chains where a per-chain mask is True; the other chains
  stay where they are (the identity kernel, which leaves everything invariant). DRL uses it to
  apply tether jumps to the tethered levels only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..energy import evaluate
from ..energy import validate as _validate
from .base import ChainState, Info, Kernel, State
from .proposal import select

__all__ = [
    "Cycle",
    "CycleState",
    "CycleInfo",
    "Masked",
    "MaskedState",
    "MaskedInfo",
    "ChainMask",
    "ChainMaskInfo",
]


def _check_kernel(k, name: str) -> None:
    if not isinstance(k, Kernel):
        raise TypeError(f"{name} must be an ebmcmc Kernel, got {type(k).__name__}")


# ---------------------------------------------------------------------------------- Cycle


@dataclass
class CycleState(ChainState):
    """State of :class:`Cycle`: the chains' current state (made by whichever kernel of the
    cycle moved last) and the number of steps taken (for ``every``).

    Example:
        >>> import torch
        >>> s = CycleState(State(torch.zeros(2, 1), torch.zeros(2)), 3)
        >>> s.position.shape, s.count
        (torch.Size([2, 1]), 3)
    """

    inner: Any
    count: int = 0

    @property
    def position(self) -> Tensor:  # type: ignore[override]
        return self.inner.position

    @property
    def energy(self) -> Tensor:  # type: ignore[override]
        return self.inner.energy


@dataclass
class CycleInfo(Info):
    """What one :class:`Cycle` step did.

    ``accept_prob`` and ``accepted`` are those of the first kernel applied in this step,
    ``diverging`` is true where any applied kernel diverged, ``step_size`` is the first
    applied kernel's; ``inners`` holds each kernel's own info (``None`` for a kernel skipped
    this step).

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> i = Info(torch.ones(2), o, ~o)
        >>> CycleInfo(i.accept_prob, i.accepted, i.diverging, None, (i, None)).inners[1] is None
        True
    """

    inners: tuple = ()


@dataclass(frozen=True, init=False)
class Cycle(Kernel):
    """Apply kernels in turn, all within one step: ``Cycle(k1, k2, every=(1, 5))``.

    Each step applies ``kernels[i]`` if the number of steps taken so far plus one is a
    multiple of ``every[i]`` (default: every kernel every step). Every kernel must leave the
    target invariant on its own; then so does the cycle. The chain state passes from kernel
    to kernel; when a kernel cannot use the previous kernel's state directly (a gradient is
    missing, or the state belongs to a :class:`Masked` block) it takes it over through its
    ``init_from`` (one energy evaluation).

    Args:
        *kernels: two or more kernels (one is allowed).
        every: one positive int per kernel.

    Info: :class:`CycleInfo`. Warm-up adaptation tunes every kernel of the cycle that has a
    step size, each on its own acceptance.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import HMC, Cycle, RandomWalk
        >>> k = Cycle(HMC(0.3, 5), RandomWalk(1.0), every=(1, 2))
        >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), k, torch.zeros(8, 2), 20,
        ...                    generator=0, progress=False)
        >>> tr.draws.shape
        torch.Size([8, 20, 2])
    """

    kernels: tuple[Kernel, ...]
    every: tuple[int, ...]

    def __init__(self, *kernels: Kernel, every=None, **fields):
        if "kernels" in fields:  # dataclasses.replace and file loading pass fields by name
            if kernels:
                raise TypeError("give the kernels either positionally or as kernels=")
            kernels = tuple(fields.pop("kernels"))
        if fields:
            raise TypeError(f"Cycle() got unexpected keyword arguments {sorted(fields)}")
        if len(kernels) == 1 and isinstance(kernels[0], list | tuple):
            kernels = tuple(kernels[0])
        if not kernels:
            raise ValueError("Cycle needs at least one kernel")
        for i, k in enumerate(kernels):
            _check_kernel(k, f"kernels[{i}]")
        try:
            every = (1,) * len(kernels) if every is None else tuple(every)
        except TypeError:
            every = (every,)  # one number: named below
        if len(every) != len(kernels) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in every
        ):
            raise ValueError(
                f"every must hold one int >= 1 per kernel ({len(kernels)}), got {every!r}"
            )
        object.__setattr__(self, "kernels", tuple(kernels))
        object.__setattr__(self, "every", every)

    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return any(k.needs_grad for k in self.kernels)

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        """The most energy evaluations one step can cost (every kernel applied)."""
        return sum(k.evals_per_step for k in self.kernels)

    def children(self, state=None, info=None):
        inner = None if state is None else state.inner
        infos = (None,) * len(self.kernels) if info is None else info.inners
        return [(k, inner, i) for k, i in zip(self.kernels, infos, strict=True)]

    def init(self, energy, x: Tensor, validate: bool = True) -> CycleState:
        first = next(k for k in self.kernels if k.needs_grad) if self.needs_grad else None
        return CycleState((first or self.kernels[0]).init(energy, x, validate), 0)

    def init_from(self, energy, state: ChainState) -> CycleState:
        if isinstance(state, CycleState):
            return state
        return CycleState(state, 0)

    def step(self, energy, state: CycleState, generator: torch.Generator | None = None):
        if not isinstance(state, CycleState):
            state = self.init_from(energy, state)
        n = state.count + 1
        inner = state.inner
        infos: list[Info | None] = []
        first: Info | None = None
        diverging = None
        for k, every in zip(self.kernels, self.every, strict=True):
            if n % every:
                infos.append(None)
                continue
            inner, info = k.step(energy, k.init_from(energy, inner), generator)
            infos.append(info)
            first = first or info
            diverging = info.diverging if diverging is None else diverging | info.diverging
        if first is None:  # no kernel due this step: the identity
            ones = torch.ones_like(inner.energy)
            return CycleState(inner, n), CycleInfo(
                ones, ones.bool(), ~ones.bool(), None, tuple(infos)
            )
        assert diverging is not None
        info = CycleInfo(
            first.accept_prob, first.accepted, diverging, first.step_size, tuple(infos)
        )
        return CycleState(inner, n), info


# --------------------------------------------------------------------------------- Masked


class _FreeEnergy(torch.nn.Module):
    """``E`` of the full position with the free coordinates replaced by ``z``.

    ``z`` is ``(*lead, *batch, n)`` (``lead``: dimensions an inner kernel may add, such as
    replicas). Padded slots (chains with fewer free coordinates than others) carry an
    independent standard normal, ``½ z²``, that is sampled along and dropped.
    """

    def __init__(self, energy, fixed: Tensor, index: Tensor, valid: Tensor | None, nb: int):
        super().__init__()
        self.energy, self.fixed, self.index, self.valid, self.nb = energy, fixed, index, valid, nb

    def full(self, z: Tensor) -> Tensor:
        """The full positions ``(*lead, *batch, *event)`` for free coordinates ``z``."""
        lead = tuple(z.shape[: z.ndim - self.nb - 1])
        batch = tuple(self.fixed.shape[: self.nb])
        flat = self.fixed.flatten(start_dim=self.nb).expand(lead + batch + (-1,))
        idx = self.index.expand(lead + batch + (self.index.shape[-1],))
        if self.valid is not None:  # padded slots write their fixed coordinate back unchanged
            z = torch.where(self.valid, z, flat.gather(-1, idx))
        return flat.scatter(-1, idx, z).reshape(lead + tuple(self.fixed.shape))

    def padding(self, z: Tensor) -> Tensor:
        """``½ Σ z²`` over the padded slots (0 without padding), shape ``(*lead, *batch)``."""
        if self.valid is None:
            return z.new_zeros(z.shape[:-1])
        return 0.5 * torch.where(self.valid, torch.zeros_like(z), z**2).sum(-1)

    def forward(self, z: Tensor) -> Tensor:
        e = self.energy(self.full(z))
        return e if self.valid is None else e + self.padding(z)


@dataclass
class MaskedState(ChainState):
    """State of :class:`Masked`: the inner kernel's state over the free coordinates
    (``inner``), the full positions they complete (``fixed``: the fixed coordinates' values),
    the flat indices of the free coordinates per chain (``index``, with ``valid`` marking the
    padded slots when chains have different numbers of free coordinates) and the ``mask``.

    ``position`` is the full position ``(*batch, *event)``; ``energy`` is ``E`` there.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA, Masked
        >>> k = Masked(MALA(0.1), torch.tensor([True, False]))
        >>> s = k.init(lambda x: (x**2).sum(-1), torch.ones(3, 2))
        >>> s.inner.position.shape, s.position.shape
        (torch.Size([3, 1]), torch.Size([3, 2]))
    """

    inner: Any
    fixed: Tensor
    index: Tensor
    mask: Tensor
    valid: Tensor | None = None

    def free_energy(self, energy) -> _FreeEnergy:
        """The energy of the free coordinates, ``(*batch, n_free) -> batch``."""
        return _FreeEnergy(energy, self.fixed, self.index, self.valid, self.inner.energy.ndim)

    @property
    def position(self) -> Tensor:  # type: ignore[override]
        return self.free_energy(None).full(self.inner.position)

    @property
    def energy(self) -> Tensor:  # type: ignore[override]
        e = self.inner.energy
        return e if self.valid is None else e - self.free_energy(None).padding(self.inner.position)


@dataclass
class MaskedInfo(Info):
    """What one :class:`Masked` step did: the inner kernel's figures, and its info in
    ``inner``.

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> i = Info(torch.ones(2), o, ~o)
        >>> MaskedInfo(i.accept_prob, i.accepted, i.diverging, None, i).inner is i
        True
    """

    inner: Any = None


@dataclass(frozen=True)
class Masked(Kernel):
    """Move only the coordinates where ``mask`` is True; hold the others fixed.

    ``Masked(kernel, mask)`` samples the conditional distribution of the free coordinates
    given the fixed ones, for any energy and any kernel: the inner kernel runs on the free
    coordinates ``z`` (shape ``(*batch, n_free)``) of the energy ``z -> E(x with z in the
    free places)``. Uses: inpainting an image EBM (fix the known pixels), a conditional of a
    joint model, Gibbs blocks (``Cycle(Masked(k, m), Masked(k, ~m))``).

    Args:
        kernel: the inner kernel (MALA, HMC, NUTS, …; its ``inverse_mass_matrix``, if given,
            has shape ``(n_free,)`` or ``(*batch, n_free)``).
        mask: bool, event-shaped (the same free coordinates for every chain) or
            batch-and-event-shaped (per chain). Every chain needs at least one free
            coordinate. When chains have different numbers of free coordinates, the shorter
            ones are padded with independent standard normal coordinates, sampled along and
            dropped, so every chain's free part is still sampled exactly.

    Cost: the inner kernel's. Taking over another kernel's state (in a :class:`Cycle` of
    blocks) costs one energy+gradient evaluation, unless that state is a :class:`State` with
    its gradient.

    Info: :class:`MaskedInfo`. Warm-up adaptation tunes the inner kernel.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA, Masked
        >>> from ebmcmc.targets import Gaussian
        >>> g = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
        >>> x0 = torch.tensor([[0.0, 1.0]]).repeat(64, 1)  # condition on x[1] = 1
        >>> tr = ebmcmc.sample(g, Masked(MALA(0.5), torch.tensor([True, False])), x0, 200,
        ...                    num_warmup=100, generator=0, progress=False)
        >>> bool((tr.draws[..., 1] == 1.0).all())   # the fixed coordinate never moves
        True
    """

    kernel: Kernel
    mask: Tensor

    def __post_init__(self):
        _check_kernel(self.kernel, "kernel")
        if not isinstance(self.mask, Tensor) or self.mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor (True: the coordinates that move)")
        if self.mask.numel() == 0 or not bool(self.mask.any()):
            raise ValueError("mask must free at least one coordinate")

    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return self.kernel.needs_grad

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.kernel.evals_per_step

    def children(self, state=None, info=None):
        inner = None
        if state is not None:
            inner = state.inner if self._owns(state) else self._free_view(state)
        return [(self.kernel, inner, None if info is None else info.inner)]

    def _owns(self, state) -> bool:
        """Whether ``state`` is this kernel's (laid out by the same mask)."""
        return isinstance(state, MaskedState) and (
            state.mask is self.mask
            or (state.mask.shape == self.mask.shape and torch.equal(state.mask, self.mask))
        )

    def _free_view(self, state: ChainState) -> State:
        """The free coordinates of another kernel's state, without evaluating the energy."""
        nb = state.energy.ndim
        index, _ = self._layout(state.position, nb)
        idx = index.expand(tuple(state.position.shape[:nb]) + (index.shape[-1],))
        return State(state.position.flatten(start_dim=nb).gather(-1, idx), state.energy)

    def _layout(self, x: Tensor, nb: int) -> tuple[Tensor, Tensor | None]:
        """``(index, valid)``: the flat indices of the free coordinates, ``(*batch, n)`` (or
        ``(1, …, 1, n)`` for an event-shaped mask), and the padded slots' mask."""
        event = x.shape[nb:]
        m = self.mask.to(x.device)
        if tuple(m.shape) == tuple(event):
            idx = m.flatten().nonzero().squeeze(-1)
            return idx.reshape((1,) * nb + tuple(idx.shape)), None
        try:
            m = torch.broadcast_to(m, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mask of shape {tuple(self.mask.shape)} is neither the event shape "
                f"{tuple(event)} nor broadcastable to the positions' shape {tuple(x.shape)}"
            ) from err
        flat = m.flatten(start_dim=nb)
        counts = flat.sum(-1)
        if bool((counts == 0).any()):
            raise ValueError("mask must free at least one coordinate of every chain")
        n = int(counts.max())
        # a stable sort puts each chain's free coordinates first, in their order
        order = torch.argsort((~flat).to(torch.int8), dim=-1, stable=True)[..., :n]
        if bool((counts == n).all()):
            return order, None
        return order, torch.arange(n, device=x.device) < counts.unsqueeze(-1)

    def _start(self, energy, x: Tensor, nb: int, e=None, g=None) -> MaskedState:
        index, valid = self._layout(x, nb)
        fixed = x.detach()
        idx = index.expand(tuple(x.shape[:nb]) + (index.shape[-1],))
        z = fixed.flatten(start_dim=nb).gather(-1, idx)
        if valid is not None:
            z = torch.where(valid, z, torch.zeros_like(z))
        free = _FreeEnergy(energy, fixed, index, valid, nb)
        if e is not None and (g is not None or not self.kernel.needs_grad):
            gz = None if g is None else g.detach().flatten(start_dim=nb).gather(-1, idx)
            if gz is not None and valid is not None:
                gz = torch.where(valid, gz, torch.zeros_like(gz))
            inner = self.kernel.init_from(free, State(z, e, gz))
        else:
            inner = self.kernel.init(free, z, validate=False)
        return MaskedState(inner, fixed, index, self.mask, valid)

    def init(self, energy, x: Tensor, validate: bool = True) -> MaskedState:
        if validate:
            e = _validate(energy, x)
            return self._start(energy, x, e.ndim)
        nb = x.ndim - self.mask.ndim if self.mask.ndim < x.ndim else evaluate(energy, x).ndim
        return self._start(energy, x, nb)

    def init_from(self, energy, state: ChainState) -> MaskedState:
        if self._owns(state):
            return state  # type: ignore[return-value]
        g = state.grad if type(state) is State else None
        return self._start(energy, state.position, state.energy.ndim, state.energy, g)

    def step(self, energy, state: MaskedState, generator: torch.Generator | None = None):
        state = self.init_from(energy, state)
        inner, info = self.kernel.step(state.free_energy(energy), state.inner, generator)
        out = MaskedInfo(info.accept_prob, info.accepted, info.diverging, info.step_size, info)
        return dataclasses.replace(state, inner=inner), out


# ------------------------------------------------------------------------------ ChainMask


@dataclass
class ChainMaskInfo(Info):
    """What one :class:`ChainMask` step did: the moved chains' figures; for the others (the
    identity move) ``accept_prob`` is 1, ``accepted`` and ``diverging`` are False. ``moved`` is
    the mask and ``inner`` the inner kernel's info for all chains.

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> i = Info(torch.ones(2), o, ~o)
        >>> ChainMaskInfo(i.accept_prob, i.accepted, i.diverging, None, i, i.accepted).inner is i
        True
    """

    inner: Any = None
    moved: Tensor | None = None


@dataclass(frozen=True)
class ChainMask(Kernel):
    """Move only the chains where ``mask`` (batch-shaped bool) is True.

    Every chain is stepped by ``kernel`` (one batched call), then the chains outside the mask
    get their previous state back. Chains are independent, so this is the inner kernel on the
    masked chains and the identity on the others: both leave the target invariant. The state
    is the inner kernel's.

    Args:
        kernel: the inner kernel.
        mask: bool tensor broadcastable to the chains' batch shape.

    Info: :class:`ChainMaskInfo`.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import ChainMask, RandomWalk
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = ChainMask(RandomWalk(1.0), torch.tensor([True, False]))
        >>> s = k.init(energy, torch.zeros(2, 3))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> bool((s.position[1] == 0).all())
        True
    """

    kernel: Kernel
    mask: Tensor

    def __post_init__(self):
        _check_kernel(self.kernel, "kernel")
        if not isinstance(self.mask, Tensor) or self.mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor of the chains' batch shape")

    @property
    def needs_grad(self) -> bool:  # type: ignore[override]
        return self.kernel.needs_grad

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        return self.kernel.evals_per_step

    @property
    def default_target_accept(self):
        return self.kernel.default_target_accept

    def children(self, state=None, info=None):
        return [(self.kernel, state, None if info is None else info.inner)]

    def init(self, energy, x: Tensor, validate: bool = True):
        return self.kernel.init(energy, x, validate)

    def init_from(self, energy, state: ChainState):
        return self.kernel.init_from(energy, state)

    def step(self, energy, state, generator: torch.Generator | None = None):
        state = self.kernel.init_from(energy, state)
        new, info = self.kernel.step(energy, state, generator)
        try:
            m = torch.broadcast_to(self.mask.to(new.energy.device), new.energy.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mask of shape {tuple(self.mask.shape)} does not broadcast to the chains' "
                f"batch shape {tuple(new.energy.shape)}"
            ) from err
        out = ChainMaskInfo(
            torch.where(m, info.accept_prob, torch.ones_like(info.accept_prob)),
            info.accepted & m,
            info.diverging & m,
            info.step_size,
            info,
            m,
        )
        return select(m, new, state), out
