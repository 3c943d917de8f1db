"""Stan-style windowed warm-up: dual averaging of the step size and a diagonal mass matrix
from the chains' variances, for any kernel and any composite's inner kernels.

:class:`WindowAdaptation` is the configuration; :meth:`WindowAdaptation.start` returns an
:class:`Adapter` that the driver feeds every warm-up step's state and info and that returns the
kernel to use next. What is tuned, and whether one value is shared or kept per chain, follows
the rule of :mod:`ebmcmc.adaptation.tuning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from ..kernels.base import Kernel, inverse_mass
from ..kernels.langevin import DENSE_AUTO_MAX_DIM
from ..kernels.proposal import per_chain
from .dual_averaging import DualAveraging
from .trajectory import (
    MIN_ACCEPT,
    TrajectoryState,
    chees_gradient,
    trajectory_final,
    trajectory_init,
    trajectory_restart,
    trajectory_update,
)
from .tuning import kernel_at, leaves, pool_dims, replace_at
from .welford import (
    WelfordState,
    welford_covariance,
    welford_covariance_update,
    welford_init,
    welford_update,
    welford_variance,
)
from .windows import warmup_schedule

__all__ = ["WindowAdaptation", "Adapter"]


@dataclass(frozen=True)
class WindowAdaptation:
    """Configuration of warm-up adaptation (Stan-style windows).

    Args:
        step_size: adapt step sizes by dual averaging (kernels with a target acceptance).
        mass_matrix: adapt diagonal inverse mass matrices (kernels that have one and a target
            acceptance: MALA, HMC, ChEES, NUTS; never unadjusted Langevin).
        target_accept: acceptance rate to aim for; ``None`` uses each kernel's default
            (MALA 0.574, HMC 0.8, random walk 0.234).
        per_chain: one step size (and mass matrix) per chain instead of following the step
            size's shape (a number: shared by the chains).
        initial_buffer: fast initial buffer, step size only (Stan's 75).
        term_buffer: fast terminal buffer, step size only (Stan's 50).
        base_window: length of the first slow (mass-matrix) window; each next one doubles
            (Stan's 25).
        gamma: dual-averaging constant (see :class:`DualAveraging`).
        t0: dual-averaging constant (see :class:`DualAveraging`).
        kappa: dual-averaging constant (see :class:`DualAveraging`).
        trajectory_rate: learning rate of trajectory-length adaptation (kernels with a
            ``trajectory_length``, e.g. :class:`~ebmcmc.kernels.ChEES`).
        stuck_after: a chain that has accepted nothing in this many steps is *stuck*: while
            stuck chains are a minority, they are left out of the pooled acceptance, so they
            cannot drag a shared step size down.
        restart_stuck: halfway through warm-up, :func:`ebmcmc.sample` moves chains that have
            never accepted a proposal to the positions of randomly chosen moving chains (and
            names them in a warning either way).
        min_step_ratio: the step size never falls below this fraction of the initial one.
            When every proposal is rejected (typically because the energy or its gradient is
            not finite around the chains), dual averaging would shrink the step size towards
            0 (below float32's smallest number within a few hundred steps); it stops at this
            floor instead, and :attr:`Adapter.messages` says so (``sample`` warns).

    Robust pooling: the shared step size follows the mean acceptance of the chains that are
    not stuck (kernels that ask for it, like ChEES, pool by the harmonic mean of the chains
    whose acceptance is at least 1e-4 and that did not diverge; when the chains below 1e-4 are
    the majority, they count at acceptance 1e-4, so a step too long for most chains shrinks).

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> tr = ebmcmc.sample(energy, MALA(0.1), torch.zeros(8, 2), num_samples=10,
        ...                    num_warmup=100, adaptation=WindowAdaptation(target_accept=0.6),
        ...                    generator=torch.Generator().manual_seed(0), progress=False)
        >>> tr.stats["step_size"].shape
        torch.Size([8, 10])
    """

    step_size: bool = True
    mass_matrix: bool = True
    target_accept: float | None = None
    per_chain: bool = False
    initial_buffer: int = 75
    term_buffer: int = 50
    base_window: int = 25
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    trajectory_rate: float = 0.025
    stuck_after: int = 50
    restart_stuck: bool = True
    min_step_ratio: float = 1e-6

    def __post_init__(self):
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept}")
        for name in ("initial_buffer", "term_buffer", "base_window"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if int(self.base_window) < 1:
            raise ValueError("base_window must be >= 1")
        if not self.trajectory_rate > 0:
            raise ValueError(f"trajectory_rate must be > 0, got {self.trajectory_rate!r}")
        if isinstance(self.stuck_after, bool) or int(self.stuck_after) < 1:
            raise ValueError(f"stuck_after must be an int >= 1, got {self.stuck_after!r}")
        if not 0 < self.min_step_ratio < 1:
            raise ValueError(f"min_step_ratio must lie in (0, 1), got {self.min_step_ratio!r}")

    def start(self, kernel: Kernel, state, num_warmup: int) -> Adapter:
        """An :class:`Adapter` for ``num_warmup`` steps of ``kernel`` from ``state``."""
        return Adapter(self, kernel, state, num_warmup)


@dataclass
class _LeafAdaptation:
    """The running adaptation of one tunable kernel."""

    path: tuple[int, ...]
    batch_ndim: int
    pool: tuple[int, ...]
    da: DualAveraging | None
    adapt_mass: bool
    windows: list[tuple[int, int]]
    welford: WelfordState = field(default_factory=welford_init)
    harmonic: bool = False
    dense: bool = False  # a dense mass matrix (the chains' covariance) instead of variances
    traj: TrajectoryState | None = None
    last_accept: Tensor | None = None  # the last step each chain accepted at
    keep: Tensor | None = None  # the chains pooled this step (None: all)
    log_floor: Any = None  # log of the smallest step size allowed (float or tensor)
    floored: Any = 0  # updates that hit the floor (an int, or a tensor for per-chain steps)
    floored_diverging: Any = 0.0  # the share of diverging proposals, summed over those updates

    def pooled(self, t: Tensor) -> Tensor:
        """Average a batch-shaped tensor over the shared chains."""
        if not self.pool:
            return t
        if len(self.pool) == self.batch_ndim:
            return t.mean()
        return t.mean(dim=self.pool, keepdim=True)

    def track(self, info, i: int, stuck_after: int) -> Tensor | None:
        """Record which chains accepted this step; return the chains to pool over (``None``:
        all of them). Stuck chains (nothing accepted in ``stuck_after`` steps) are left out
        while they are a minority of chains pooled together."""
        acc = info.accepted
        if self.last_accept is None:
            self.last_accept = torch.zeros(acc.shape, dtype=torch.long, device=acc.device)
        self.last_accept = torch.where(acc, torch.full_like(self.last_accept, i + 1),
                                       self.last_accept)  # fmt: skip
        self.keep = None
        if len(self.pool) == self.batch_ndim and self.batch_ndim:
            stuck = (i + 1 - self.last_accept) >= stuck_after
            if bool(stuck.any()) and float(stuck.double().mean()) < 0.5:
                self.keep = ~stuck
        return self.keep

    def pooled_acceptance(self, info) -> Tensor:
        """The acceptance statistic the shared step size follows (see WindowAdaptation)."""
        a = info.accept_prob
        if len(self.pool) != self.batch_ndim or self.batch_ndim == 0:
            return self.pooled(a)  # per chain or per group: no pooling across all chains
        keep = self.keep
        if self.harmonic:
            pooled = torch.ones_like(info.accepted) if keep is None else keep
            moved = (a >= MIN_ACCEPT) & torch.isfinite(a)
            ok = moved & ~info.diverging
            rejected = pooled & ~moved
            if not bool(pooled.any()):
                return a.new_zeros(())
            if 2 * int(rejected.sum()) >= int(pooled.sum()):
                # most chains rejected everything: the step is too long for them, so they
                # count (at the floor) and pull it down (a divergent trajectory that still
                # moved its chain, as NUTS's often do, is left out as before)
                counted = pooled & (ok | rejected)
                return 1.0 / (1.0 / torch.where(rejected, MIN_ACCEPT, a)[counted]).mean()
            return 1.0 / (1.0 / a[ok & pooled]).mean()
        return a.mean() if keep is None else a[keep].mean()

    def add_positions(self, x: Tensor) -> None:
        """Add the chains' positions to the variance estimate (stuck chains left out)."""
        if self.dense:
            flat = x.reshape(-1, x.shape[-1])
            if self.keep is not None:
                flat = flat[self.keep.reshape(-1)]
            self.welford = welford_covariance_update(self.welford, flat)
        elif self.keep is not None:
            flat = x.reshape((-1,) + tuple(x.shape[self.batch_ndim :]))[self.keep.reshape(-1)]
            self.welford = welford_update(self.welford, flat, (0,), 1)
        else:
            self.welford = welford_update(self.welford, x, self.pool, self.batch_ndim)


def _dense_mass(kernel: Kernel, state, pool: tuple[int, ...], path: tuple[int, ...]) -> bool:
    """Whether warm-up adapts a dense mass matrix for this kernel (see ``MALA.dense_mass``)."""
    choice = getattr(kernel, "dense_mass", False)
    if choice is False:
        return False
    shared = len(pool) == len(state.batch_shape)
    flat = state.event_ndim == 1
    if choice is True:
        if not (shared and flat):
            raise ValueError(
                "dense_mass=True needs flat events (d,) and one preconditioner shared by all "
                f"chains; the positions have shape {tuple(state.position.shape)}"
                + ("" if shared else " and the adaptation keeps one per chain or group")
            )
        return True
    # None: dense where it is cheap and well estimated (a top-level kernel, few coordinates)
    return shared and flat and not path and state.position.shape[-1] <= DENSE_AUTO_MAX_DIM


class Adapter:
    """The running adaptation of one warm-up: feed it each step, read the tuned kernel.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import HMC
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = HMC(0.1, 5)
        >>> s = k.init(energy, torch.zeros(16, 2))
        >>> ad = WindowAdaptation().start(k, s, num_warmup=50)
        >>> g = torch.Generator().manual_seed(0)
        >>> for _ in range(50):
        ...     s, info = k.step(energy, s, g)
        ...     k = ad.update(k, s, info)
        >>> k = ad.finalize(k)
    """

    def __init__(self, config: WindowAdaptation, kernel: Kernel, state, num_warmup: int):
        self.config = config
        self.num_warmup = int(num_warmup)
        self.iteration = 0
        #: what warm-up found worth a warning (the step size held at its floor), one line each,
        #: filled by :meth:`finalize`
        self.messages: list[str] = []
        self.leaves: list[_LeafAdaptation] = []
        for leaf in leaves(kernel, state, None):
            k, st = leaf.kernel, leaf.state
            batch = st.batch_shape
            step = getattr(k, "step_size", None)
            target = config.target_accept or k.default_target_accept
            adapt_step = config.step_size and step is not None and target is not None
            # a mass matrix is tuned for kernels whose step size has a target acceptance (never
            # for unadjusted Langevin, whose bias a new preconditioner would change unchecked)
            adapt_mass = config.mass_matrix and target is not None
            adapt_mass = adapt_mass and hasattr(k, "inverse_mass_matrix")
            if config.per_chain:
                pool: tuple[int, ...] = ()
            else:
                pool = pool_dims(step if step is not None else 1.0, batch)
            ad = _LeafAdaptation(leaf.path, len(batch), pool, None, adapt_mass, [])
            ad.dense = adapt_mass and _dense_mass(k, st, pool, leaf.path)
            if adapt_step:
                s = per_chain(step, batch, st.energy, "step_size")
                if not bool((s > 0).all()):  # e.g. 1e-300 in float32
                    raise ValueError(
                        f"step_size {step!r} is 0 in the chains' dtype {s.dtype}; give a step "
                        "size that dtype can hold"
                    )
                s = s.clone() if not pool else ad.pooled(s)
                init: float | Tensor = float(s) if s.ndim == 0 else s
                assert target is not None
                ad.da = DualAveraging(init, float(target), config.gamma, config.t0, config.kappa)
                ratio = math.log(config.min_step_ratio)
                ad.log_floor = (
                    math.log(init) + ratio if isinstance(init, float) else torch.log(init) + ratio
                )
            if adapt_mass:
                ad.windows = warmup_schedule(
                    self.num_warmup, config.initial_buffer, config.term_buffer, config.base_window
                )
            ad.harmonic = getattr(k, "acceptance_pooling", "mean") == "harmonic"
            if adapt_step and hasattr(k, "trajectory_length"):
                length = k.trajectory_length if k.trajectory_length is not None else step
                ad.traj = trajectory_init(float(torch.as_tensor(length).max()))
            if ad.da is not None or ad.adapt_mass:
                self.leaves.append(ad)

    @property
    def windows(self) -> list[tuple[int, int]]:
        """The slow (mass-matrix) windows, ``(start, end)`` pairs (``[]`` when no mass matrix
        is adapted)."""
        return next((ad.windows for ad in self.leaves if ad.adapt_mass), [])

    def update(self, kernel: Kernel, state, info) -> Kernel:
        """Account for one warm-up step; return the kernel to use for the next one."""
        i = self.iteration
        self.iteration += 1
        if not self.leaves:
            return kernel
        found = {leaf.path: leaf for leaf in leaves(kernel, state, info)}
        for ad in self.leaves:
            leaf = found[ad.path]
            changes: dict = {}
            if leaf.info is not None:
                ad.track(leaf.info, i, self.config.stuck_after)
            if ad.da is not None and leaf.info is not None:
                a = ad.pooled_acceptance(leaf.info)
                step = ad.da.update(float(a) if ad.da.scalar else a)
                changes["step_size"] = self._floored(ad, step, leaf.info)
            if ad.traj is not None and getattr(leaf.info, "proposal", None) is not None:
                info, lk = leaf.info, cast(Any, leaf.kernel)
                grad = chees_gradient(info.initial_position, info.proposal, info.momentum,
                                      info.accept_prob, info.diverging, info.jitter,
                                      inverse_mass(lk.inverse_mass_matrix,
                                                   info.initial_position),
                                      length=math.exp(ad.traj.log_length))  # fmt: skip
                ad.traj = trajectory_update(ad.traj, grad, self.config.trajectory_rate)
                step_now = changes.get("step_size", lk.step_size)
                changes["trajectory_length"] = self._clip_length(
                    math.exp(ad.traj.log_length), step_now, leaf.kernel
                )
            if ad.adapt_mass and any(s <= i < e for s, e in ad.windows):
                ad.add_positions(leaf.state.position)
                if any(i + 1 == e for _, e in ad.windows):
                    if ad.dense:
                        changes["inverse_mass_matrix"] = welford_covariance(ad.welford)
                        changes["dense_mass"] = True
                    else:
                        changes["inverse_mass_matrix"] = welford_variance(ad.welford)
                    ad.welford = welford_init()
                    if ad.da is not None:
                        ad.da.restart(ad.da.final_step_size())
                        changes["step_size"] = ad.da.current_step_size()
                    if ad.traj is not None:
                        ad.traj = trajectory_restart(ad.traj)
            if changes:
                kernel = replace_at(kernel, ad.path, **changes)
        return kernel

    @staticmethod
    def _floored(ad: _LeafAdaptation, step, info):
        """Keep the step size at or above its floor (counting the updates that hit it)."""
        da = cast(DualAveraging, ad.da)
        st = da.state
        if da.scalar:
            if st.log_step >= ad.log_floor:
                return step
            da.state = st._replace(log_step=ad.log_floor,
                                   log_step_avg=max(st.log_step_avg, ad.log_floor))  # fmt: skip
            ad.floored += 1
            ad.floored_diverging += float(info.diverging.double().mean())
            return math.exp(ad.log_floor)
        # per chain (or per group): no host synchronisation, the counts stay tensors
        log_step, log_avg = cast(Tensor, st.log_step), cast(Tensor, st.log_step_avg)
        low = (log_step < ad.log_floor).any()
        log_step = torch.maximum(log_step, ad.log_floor)
        da.state = st._replace(log_step=log_step, log_step_avg=torch.maximum(log_avg, ad.log_floor))
        ad.floored = ad.floored + low.long()
        ad.floored_diverging = ad.floored_diverging + low * info.diverging.double().mean()
        return torch.exp(log_step)

    @staticmethod
    def _clip_length(length: float, step, kernel: Kernel) -> float:
        """Keep a trajectory between one leapfrog step and ``max_leapfrog_steps`` of them."""
        eps = float(torch.as_tensor(step).max())
        most = getattr(kernel, "max_leapfrog_steps", 1000) * eps
        return min(max(length, eps), most)

    def finalize(self, kernel: Kernel) -> Kernel:
        """The kernel to sample with after warm-up (averaged step sizes and lengths).

        When a step size spent a tenth of the warm-up at its floor, or ends within 10 times
        of it, :attr:`messages` gets a line that says so (``sample`` warns with it).
        """
        for ad in self.leaves:
            changes: dict = {}
            if ad.da is not None:
                changes["step_size"] = ad.da.final_step_size()
                self._note_floor(ad, changes["step_size"], kernel_at(kernel, ad.path))
            if ad.traj is not None:
                k = kernel_at(kernel, ad.path)
                step = changes.get("step_size", getattr(k, "step_size", 1.0))
                changes["trajectory_length"] = self._clip_length(trajectory_final(ad.traj), step, k)
            if changes:
                kernel = replace_at(kernel, ad.path, **changes)
        return kernel

    def _note_floor(self, ad: _LeafAdaptation, final, kernel: Kernel) -> None:
        n = int(ad.floored)
        if not n:
            return
        floor = float(torch.as_tensor(ad.log_floor).exp().min())
        near = float(torch.as_tensor(final).min()) <= 10 * floor
        if not near and n < 0.1 * max(self.iteration, 1):
            return
        ratio = self.config.min_step_ratio
        where = f" (inner kernel {ad.path})" if ad.path else ""
        self.messages.append(
            f"warm-up drove the step size of {type(kernel).__name__}{where} down to its floor "
            f"{floor:.3g} ({ratio:g} times the initial step size) in {n} of {self.iteration} "
            f"steps, where {float(ad.floored_diverging) / n:.0%} of the proposals diverged (a "
            "non-finite energy or gradient); it stops shrinking there instead of collapsing "
            "to 0. Check that the energy is finite around the chains and start them where it "
            "is, or start from a smaller step size (min_step_ratio sets the floor)"
        )
