"""ChEES-HMC: HMC with a jittered trajectory length, tuned across many chains.

The kernel is Hamiltonian Monte Carlo whose trajectory length ``T`` is drawn afresh each step:
``T_step = T * (u * jitter + 1 - jitter)`` with ``u`` the next number of a base-2 Halton
sequence (quasi-random, evenly spread over (0, 1)), and ``L = max(1, ceil(T_step / eps))``
leapfrog steps, the same for all chains. Warm-up (:class:`ebmcmc.adaptation.WindowAdaptation`,
the default of :func:`ebmcmc.sample`) tunes ``trajectory_length`` by the ChEES criterion
(Hoffman, Radul & Sountsov 2021), ``step_size`` by dual averaging of the chains' *harmonic*
mean acceptance towards 0.651, and a diagonal ``inverse_mass_matrix`` from the chains'
variances; see the docs' methods page on ChEES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import check_real
from .base import ChainState, Kernel, State, inverse_mass
from .hmc import HMCInfo
from .integrators import kinetic_energy, leapfrog, leapfrog_per_chain, sample_momentum
from .proposal import check_positive, expand_event, finite_batch, metropolis, per_chain, where_batch

__all__ = ["ChEES", "ChEESState", "ChEESInfo", "halton"]


def halton(i: int, base: int = 2) -> float:
    """The ``i``-th number of the van der Corput (1-D Halton) sequence in ``base``.

    ``halton(1), halton(2), halton(3), … = 0.5, 0.25, 0.75, …``: quasi-random numbers that
    fill (0, 1) evenly.

    Example:
        >>> [halton(i) for i in range(1, 5)]
        [0.5, 0.25, 0.75, 0.125]
    """
    if i < 0:
        raise ValueError(f"i must be >= 0, got {i}")
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@dataclass
class ChEESState(State):
    """A :class:`State` with the number of steps taken (it picks the Halton jitter).

    Example:
        >>> import torch
        >>> ChEESState(torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1), count=3).count
        3
    """

    count: int = 0


@dataclass
class ChEESInfo(HMCInfo):
    """What one ChEES step did: :class:`HMCInfo`, plus what trajectory-length adaptation reads.

    Attributes:
        initial_position: the chains' positions before the step ``(*batch, *event)``.
        proposal: the trajectories' end points (before the accept decision).
        momentum: the momenta at the trajectories' ends.
        jitter: the jitter factor ``u * jitter + 1 - jitter`` of this step (a float).

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> i = ChEESInfo(torch.ones(2), o, ~o, 0.1, jitter=0.5)
        >>> i.jitter
        0.5
    """

    initial_position: Tensor | None = None
    proposal: Tensor | None = None
    momentum: Tensor | None = None
    jitter: float = 1.0


@dataclass(frozen=True)
class ChEES(Kernel):
    """ChEES-HMC: jittered-length HMC whose length, step and mass matrix warm-up tunes.

    ``ChEES()`` with no arguments is the recommended kernel for many chains: run it through
    :func:`ebmcmc.sample` with a warm-up (e.g. ``num_warmup=500``) and the default adaptation.
    It needs at least two chains (the criterion is estimated across chains), and works best
    with dozens to thousands.

    Args:
        step_size: leapfrog step ``eps > 0`` (a number: shared by the chains, as ChEES
            assumes; a per-chain tensor works for sampling).
        trajectory_length: ``T > 0``, the longest trajectory (``None``: one leapfrog step,
            ``eps``; warm-up grows it).
        inverse_mass_matrix: diagonal ``M⁻¹``, shape ``event`` or ``(*batch, *event)``
            (``None``: the identity).
        jitter: ``0 < jitter <= 1``; each step's length is ``T * (u * jitter + 1 - jitter)``.
        max_leapfrog_steps: the most leapfrog steps one trajectory may take (warm-up keeps
            ``T <= max_leapfrog_steps * eps``).
        divergence_threshold: energy error beyond which a trajectory is divergent.

    Info: :class:`ChEESInfo`. State: :class:`ChEESState`.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import ChEES
        >>> from ebmcmc.targets import Gaussian
        >>> g = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
        >>> tr = ebmcmc.sample(g, ChEES(), torch.randn(256, 2, generator=torch.Generator()
        ...                    .manual_seed(0)), 200, num_warmup=300, generator=0, progress=False)
        >>> float(tr.kernel.trajectory_length) > 10 * float(tr.kernel.step_size)
        True
    """

    step_size: float | Tensor = 0.1
    trajectory_length: float | Tensor | None = None
    inverse_mass_matrix: Tensor | None = None
    jitter: float = 1.0
    max_leapfrog_steps: int = 1000
    divergence_threshold: float = 1000.0
    default_target_accept: ClassVar[float] = 0.651
    #: how warm-up pools the chains' acceptance for the shared step size
    acceptance_pooling: ClassVar[str] = "harmonic"

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        if self.trajectory_length is not None:
            check_positive("trajectory_length", self.trajectory_length)
        self._check_tensor_field("inverse_mass_matrix")
        check_real("jitter", self.jitter, 0, 1, low_open=True)
        m = self.max_leapfrog_steps
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"max_leapfrog_steps must be an int >= 1, got {m!r}")
        check_positive("divergence_threshold", self.divergence_threshold)

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        """The most leapfrog steps one transition can take (``ceil(T / eps)``)."""
        return self._max_steps()

    def _max_steps(self) -> int:
        if self.trajectory_length is None:
            return 1
        ratio = torch.as_tensor(self.trajectory_length) / torch.as_tensor(self.step_size)
        return int(min(self.max_leapfrog_steps, max(1, math.ceil(float(ratio.max())))))

    def init(self, energy, x: Tensor, validate: bool = True) -> ChEESState:
        s = super().init(energy, x, validate)
        return ChEESState(s.position, s.energy, s.grad, 0)

    def init_from(self, energy, state: ChainState) -> ChEESState:
        if isinstance(state, ChEESState):
            return state
        if type(state) is State and state.grad is not None:
            return ChEESState(state.position, state.energy, state.grad, 0)
        return self.init(energy, state.position, validate=False)

    def step(self, energy, state: ChEESState, generator: torch.Generator | None = None):
        state = self.init_from(energy, state)
        x0, e0, g0 = state.position, state.energy, state.grad
        assert g0 is not None
        bs, ne = state.batch_shape, state.event_ndim
        n = state.count + 1
        u = halton(n) * float(self.jitter) + 1 - float(self.jitter)
        inv_m = inverse_mass(self.inverse_mass_matrix, x0)
        p0 = sample_momentum(x0, inv_m, generator)
        k0 = kinetic_energy(p0, inv_m, ne)
        shared = not isinstance(self.step_size, Tensor) or self.step_size.numel() == 1
        traj = self.step_size if self.trajectory_length is None else self.trajectory_length
        if shared and (not isinstance(traj, Tensor) or traj.numel() == 1):
            eps_f = float(self.step_size)
            steps = max(1, math.ceil(u * float(traj) / eps_f))
            steps = min(steps, self.max_leapfrog_steps)
            x, p, e, g = leapfrog(energy, x0, p0, g0, eps_f, steps, inv_m)
            h_err = (e + kinetic_energy(p, inv_m, ne)) - (e0 + k0)
            diverging = ~finite_batch(h_err, x, g) | (h_err > self.divergence_threshold)
            eps_b: float | Tensor = eps_f
            n_steps = torch.full(bs, steps, dtype=torch.long, device=x0.device)
        else:
            eps_t = per_chain(self.step_size, bs, x0, "step_size")
            t_b = per_chain(traj, bs, x0, "trajectory_length")
            n_steps = torch.ceil(u * t_b / eps_t).clamp(1, self.max_leapfrog_steps).long()
            x, p, e, g, alive = leapfrog_per_chain(
                energy, x0, p0, e0, g0, expand_event(eps_t, ne), n_steps, inv_m
            )
            h_err = (e + kinetic_energy(p, inv_m, ne)) - (e0 + k0)
            diverging = ~alive | ~torch.isfinite(h_err) | (h_err > self.divergence_threshold)
            eps_b = eps_t
        accept_prob, accepted = metropolis(-h_err, ~diverging, generator)
        new = ChEESState(
            where_batch(accepted, x, x0),
            torch.where(accepted, e, e0),
            where_batch(accepted, g, g0),
            n,
        )
        info = ChEESInfo(
            accept_prob, accepted, diverging, eps_b, h_err, n_steps, x0, x, p, u
        )  # fmt: skip
        return new, info
