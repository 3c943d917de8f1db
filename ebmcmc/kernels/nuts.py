"""The No-U-Turn sampler (NUTS), every chain building its own tree in one batched loop.

One transition of every chain, as in Stan: draw a momentum, then double a leapfrog trajectory
in a random direction (per chain, per doubling) until it makes a U-turn, an integration step
diverges, or the tree reaches ``max_tree_depth``; the next state is drawn from the trajectory
with weights ``exp(-H)``: progressively within each new subtree (each new state replaces the
subtree's candidate with probability ``w / W_subtree``) and with the biased rule when a subtree
joins the tree (its candidate replaces the tree's with probability ``min(1, W_new / W_old)``).

How the batch is run
--------------------
The recursive tree building is unrolled into one loop in which every chain that is still
building takes exactly one leapfrog step per iteration, with one energy+gradient evaluation for
the whole batch. All chains start together and a chain only ever stops, so every chain still
building has built the same number of states: its position in the tree (the leaf index ``N``,
which runs from ``2**j`` to ``2**(j+1) - 1`` while doubling ``j`` builds its ``2**j`` states)
is one Python integer for the batch. Which U-turn checks a leaf needs, where its checkpoint
goes and whether it completes a doubling are therefore decided on the host; what differs per
chain (direction, weights, candidates, whether it still builds) lives in tensors and is updated
by masked selects. Chains that have finished (U-turn, divergence, maximum depth) are frozen; the
loop runs while any chain builds, so a step costs the longest trajectory of the batch and the
finished chains idle meanwhile (reported as ``idle_fraction``). The one host synchronisation
per iteration is the test whether any chain still builds.

U-turn checks without the recursion stack
-----------------------------------------
Each check of the recursive algorithm (Stan's criterion) joins a run of states ``[s, e]``,
built in order, and asks ``v_s . rho > 0`` and ``v_e . rho > 0`` with ``v = M^{-1} p`` and
``rho`` the momentum sum over the run. With ``T_N`` the momentum sum of all states built so
far, in build order (the old tree counting as one block before the new subtree),
``rho = T_e - T_{s-1}``. The runs are aligned blocks of ``2**k`` leaves (level ``k``):

* when a level-``k`` block ends at ``N`` (``2**k`` divides ``N + 1``): the whole block, and its
  second half extended by the last state of its first half;
* when ``N`` is the first state of a block's second half (``N mod 2**k == 2**(k-1)``): the
  first half extended by ``N``. Stan evaluates this one when the block is complete, so a failure
  is kept as a pending flag of its level until then; the trajectory, the divergences met and
  the acceptance statistic are then exactly Stan's.

The level-``k`` block containing ``N`` starts at ``N`` with its ``k`` lowest bits cleared, and
block starts with different popcounts never coexist, so the checkpoints form a stack of
``max_tree_depth + 1`` slots indexed by the popcount of the block start (as in NumPyro's
iterative NUTS): leaf ``N`` writes slot ``popcount(N)`` (its velocity and ``T_{N-1}``, and
those of the state before it), and the blocks ending at ``N`` are the contiguous slots
``popcount(N) - t .. popcount(N) - 1`` (``t`` the trailing ones of ``N``). Slot 0 is the old
tree (its far end). A failed check inside the new subtree rejects the subtree and ends the
transition; the checks on the whole tree only stop further doublings, after the subtree's
candidate was offered. Memory is ``O(max_tree_depth)`` vectors per chain, preallocated.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..energy import energy_and_grad
from .base import Info, Kernel, State, inverse_mass
from .proposal import check_positive, per_chain

__all__ = ["NUTS", "NUTSInfo"]


@dataclass
class NUTSInfo(Info):
    """What one NUTS transition did, per chain (shape ``batch``).

    Attributes:
        accept_prob: the mean over the trajectory's leapfrog states of ``min(1, exp(H0 - H))``
            (Stan's statistic, which warm-up drives to the target acceptance).
        accepted: whether the chain moved.
        diverging: whether a divergence ended the tree.
        step_size: the step size used.
        tree_depth: doublings completed (Stan's ``treedepth__``).
        num_leapfrog: leapfrog steps (gradient evaluations) of the chain's own tree.
        num_evals: batched energy+gradient evaluations of this step: what every chain was
            evaluated, idle or not (equal for all chains) -- the honest cost.
        idle_fraction: ``1 - sum(num_leapfrog) / (num_chains * num_evals)`` (a 0-d tensor): the
            share of the batch's leapfrog work spent on chains that had already finished.
        energy_error: ``H - H0`` at the returned state (0 when the chain stayed).

    Example:
        >>> import torch
        >>> o = torch.ones(2, dtype=torch.bool)
        >>> i = NUTSInfo(torch.ones(2), o, ~o, 0.1, tree_depth=torch.tensor([2, 3]))
        >>> i.tree_depth.tolist()
        [2, 3]
    """

    tree_depth: Tensor | None = None
    num_leapfrog: Tensor | None = None
    num_evals: Tensor | None = None
    idle_fraction: Tensor | None = None
    energy_error: Tensor | None = None


@dataclass(frozen=True)
class NUTS(Kernel):
    """No-U-Turn sampler with multinomial sampling, batched across chains.

    Each chain builds its own trajectory by repeated doubling in a random direction (leapfrog
    steps of ``step_size`` with a diagonal mass matrix ``M = 1 / inverse_mass_matrix``) until
    the generalized U-turn criterion on momentum sums fails, a step diverges, or the tree has
    ``2**max_tree_depth - 1`` leapfrog steps. The next state is drawn from the trajectory with
    probability proportional to ``exp(-H)`` (progressively within subtrees; biased towards the
    newest subtree when it joins the tree), as in Stan and NumPyro. The kernel is exact for
    ``exp(-E)`` at any step size.

    A leapfrog state whose energy error ``H - H0`` exceeds ``divergence_threshold`` or whose
    energy, gradient or position is not finite is a divergence: the chain stops building, its
    new subtree is discarded and the next state comes from the valid part of the tree (so it is
    always finite). All chains advance in one batched loop with one energy+gradient evaluation
    per leapfrog step for the whole batch; a step lasts as long as the batch's longest
    trajectory.

    Args:
        step_size: leapfrog step ``> 0``, scalar or per-chain tensor (batch shape).
        max_tree_depth: the most doublings per transition, int ``>= 1`` (at most
            ``2**max_tree_depth - 1`` leapfrog steps).
        inverse_mass_matrix: diagonal of ``M^{-1}``, shape ``event`` or ``(*batch, *event)``;
            ``None`` means the identity.
        divergence_threshold: energy error beyond which a leapfrog state counts as divergent.

    ``Info`` per chain (shape ``batch``): ``accept_prob`` is the mean over the trajectory's
    leapfrog states of ``min(1, exp(H0 - H))`` (Stan's statistic, which warm-up adaptation
    drives to 0.8), ``accepted`` whether the chain moved, ``diverging`` whether a divergence
    ended the tree: :class:`NUTSInfo` (also tree depth, leapfrog steps, evaluations, idle
    fraction, energy error).

    The attribute ``evals_per_step`` is the bound ``2**max_tree_depth - 1``; the actual count
    varies from step to step and is ``info.num_evals``.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import NUTS
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> k = NUTS(step_size=0.5)
        >>> s = k.init(energy, torch.zeros(16, 2))
        >>> s, info = k.step(energy, s, torch.Generator().manual_seed(0))
        >>> s.position.shape, info.tree_depth.shape
        (torch.Size([16, 2]), torch.Size([16]))
        >>> bool((info.num_leapfrog <= info.num_evals).all())
        True
    """

    step_size: float | Tensor = 0.1
    max_tree_depth: int = 10
    inverse_mass_matrix: Tensor | None = None
    divergence_threshold: float = 1000.0
    default_target_accept: ClassVar[float] = 0.8
    #: warm-up pools the chains' acceptance by its harmonic mean (over the chains whose
    #: acceptance is at least 1e-4 and that did not diverge, while the others are a minority:
    #: see :class:`~ebmcmc.adaptation.WindowAdaptation`): the shared step size then suits the
    #: chains in the most curved regions too, as a banana's tails need (the arithmetic mean
    #: gives divergences there and chains that stall)
    acceptance_pooling: ClassVar[str] = "harmonic"

    def __post_init__(self):
        check_positive("step_size", self.step_size)
        d = self.max_tree_depth
        if (
            isinstance(d, Tensor)
            and d.numel() == 1
            and not (d.is_floating_point() or d.is_complex())
        ):
            d = d.item()
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= d <= 30:
            raise ValueError(f"max_tree_depth must be an integer in [1, 30], got {d!r}")
        object.__setattr__(self, "max_tree_depth", int(d))
        self._check_tensor_field("inverse_mass_matrix")
        check_positive("divergence_threshold", self.divergence_threshold)

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        """The most energy+gradient evaluations one transition can cost,
        ``2**max_tree_depth - 1``; the actual number is ``info.num_evals``."""
        return 2**self.max_tree_depth - 1

    def _inv_mass(self, x: Tensor, event_ndim: int) -> Tensor | None:
        """``M^{-1}`` as a ``(1, dim)`` (shared) or ``(num_chains, dim)`` tensor."""
        if self.inverse_mass_matrix is None:
            return None
        m = inverse_mass(self.inverse_mass_matrix, x)
        assert m is not None
        event_shape = x.shape[x.ndim - event_ndim :]
        dim = event_shape.numel()
        if m.ndim <= event_ndim:
            return torch.broadcast_to(m, event_shape).reshape(1, dim)
        return torch.broadcast_to(m, x.shape).reshape(-1, dim)

    def step(self, energy, state: State, generator: torch.Generator | None = None):
        state = self._check_state(state)
        with torch.no_grad():
            return self._step(energy, state, generator)

    def _step(self, energy, state: State, generator):
        x0 = state.position
        bs, ne = state.batch_shape, state.event_ndim
        nc = bs.numel()
        dim = x0.shape[x0.ndim - ne :].numel()
        dt, dev = x0.dtype, x0.device
        max_depth = int(self.max_tree_depth)
        threshold = float(self.divergence_threshold)

        # Internally every per-chain quantity is stored feature-major, (features, chains):
        # masks over chains then broadcast along the contiguous axis, which keeps the masked
        # selects about as cheap as plain arithmetic.
        eps = per_chain(self.step_size, bs, x0, "step_size").reshape(1, nc)
        inv_m = self._inv_mass(x0, ne)
        if inv_m is not None:
            inv_m = inv_m.T  # (dim, 1) or (dim, chains)

        def velocity(p: Tensor) -> Tensor:
            return p if inv_m is None else inv_m * p

        # ---------------------------------------------------------------- initial state
        xi = torch.randn(x0.shape, generator=generator, dtype=dt, device=dev).reshape(nc, dim).T
        p0 = xi if inv_m is None else xi / torch.sqrt(inv_m)
        v0 = velocity(p0)
        e0 = state.energy.reshape(1, nc).to(dt)
        h0 = (e0 + 0.5 * (p0 * v0).sum(0, keepdim=True))[0]

        # One column per chain for every leapfrog state kept: rows [x | p | g | v | E | H - H0].
        sx, sp, sg, sv = (slice(i * dim, (i + 1) * dim) for i in range(4))
        se, sd = 4 * dim, 4 * dim + 1
        assert state.grad is not None
        g0 = state.grad.reshape(nc, dim).T
        start = torch.cat([x0.reshape(nc, dim).T, p0, g0, v0, e0, torch.zeros_like(e0)])
        cur = start  # the growing end of the trajectory (integration continues from it)
        far = start  # the other end
        sub = start  # candidate of the subtree being built
        smp = start  # candidate of the whole tree (the next state)

        # per-chain tree bookkeeping
        u0 = torch.rand(1, nc, generator=generator, dtype=dt, device=dev)
        step = torch.where(u0 < 0.5, -eps, eps)  # signed leapfrog step, (1, chains)
        tsum = p0  # T: momentum sum over the states built so far, in build order
        lw_tree = torch.zeros(nc, dtype=dt, device=dev)  # log sum exp(-(H - H0)), whole tree
        lw_sub = torch.full((nc,), -torch.inf, dtype=dt, device=dev)  # same, new subtree
        top_turn = torch.zeros(nc, dtype=torch.bool, device=dev)
        active = torch.ones(nc, dtype=torch.bool, device=dev)
        diverging = torch.zeros(nc, dtype=torch.bool, device=dev)
        moved = torch.zeros(nc, dtype=torch.bool, device=dev)
        acc_sum = torch.zeros(nc, dtype=dt, device=dev)
        zero = torch.zeros((), dtype=dt, device=dev)
        num_leapfrog = torch.zeros(nc, dtype=torch.long, device=dev)
        depth = torch.zeros(nc, dtype=torch.long, device=dev)  # doublings completed
        # failed "first half + first state of the second half" checks, by level, until the
        # level's block is complete (Stan evaluates them then)
        pending = torch.zeros(max_depth + 1, nc, dtype=torch.bool, device=dev)

        # U-turn checkpoints: a stack of one slot per block start still needed. The level-k
        # block containing leaf N starts at N with its k lowest bits cleared and lives in slot
        # popcount(start). ckpt[i, a, b]: a = 0 velocity, a = 1 momentum sum T before the state;
        # b = 0 the block's first state, b = 1 the state before it. Slot 0 is the old tree, the
        # first half of the top level: its far end's velocity and momentum sum 0 before it.
        ckpt = torch.zeros(max_depth + 1, 2, 2, dim, nc, dtype=dt, device=dev)
        ckpt[0, 0, 0] = v0

        leaf = 0
        while True:
            # Every chain still building has built exactly the same number of states, so the
            # position in the tree is the same for all of them: the leaf index N, its doubling
            # j, popcount c and trailing ones t are plain integers.
            leaf += 1
            j = leaf.bit_length() - 1
            c = leaf.bit_count()
            t = (leaf ^ (leaf + 1)).bit_length() - 1
            # ------------------------------------------------------------ leapfrog
            p_half = torch.addcmul(cur[sp], step, cur[sg], value=-0.5)
            x_new = torch.addcmul(cur[sx], step, velocity(p_half))
            e_new, g_new = energy_and_grad(energy, x_new.T.contiguous().view(x0.shape))
            g_new = g_new.reshape(nc, dim).T
            e_new = e_new.reshape(1, nc).to(dt)
            p_new = torch.addcmul(p_half, step, g_new, value=-0.5)
            v_new = velocity(p_new)
            row = torch.cat([x_new, p_new, g_new, v_new, e_new, e_new])
            delta = row[sd]
            torch.add(e_new[0] - h0, (p_new * v_new).sum(0), alpha=0.5, out=delta)
            # valid: everything finite (a non-finite entry makes the column sum non-finite) and
            # the energy error within the threshold
            good = torch.isfinite(row.sum(0)) & (delta <= threshold)
            # Stan's acceptance statistic counts every state built, divergent ones included
            acc = torch.exp(torch.clamp(-delta, max=0.0)).nan_to_num_(0.0)
            acc_sum += torch.where(active, acc, zero)
            num_leapfrog += active
            ok = active & good
            diverging |= active > good
            p_prev, v_prev = cur[sp], cur[sv]
            cur = torch.where(ok, row, cur)

            # ------------------------------------------------------------ subtree candidate
            # progressive uniform sampling: leaf N replaces the candidate w.p. w_N / W_sub
            u = torch.rand(nc, generator=generator, dtype=dt, device=dev)
            take_leaf = ok & (u < torch.sigmoid(-delta - lw_sub))
            lw_sub = torch.logaddexp(lw_sub, -delta)
            sub = torch.where(take_leaf, row, sub)

            # ------------------------------------------------------------ U-turn checks
            # leaf N starts the blocks of levels 1..tz(N): slot c
            torch.stack([v_new, v_prev, tsum, tsum - p_prev], out=ckpt[c].view(4, dim, nc))
            tsum = tsum + p_new
            if t == 0:
                # even N: the first half of the level tz(N)+1 block extended by N (slot c-1)
                vel, before = ckpt[c - 1, 0, 0], ckpt[c - 1, 1, 0]
                rho = tsum - before
                turned = torch.minimum((vel * rho).sum(0), (v_new * rho).sum(0)) <= 0
                if c == 1:  # N = 2**j: the old tree extended by the new subtree's first state
                    top_turn = turned
                else:
                    pending[(leaf & -leaf).bit_length()] = turned
                inner_turn = None
            else:
                # odd N: the blocks of levels 1..t end at N, in slots c-t..c-1. Form 0: the
                # whole block (first state .. N); form 1: its second half extended by the state
                # before it (levels >= 2 only, so not in the lowest slot)
                view = ckpt[c - t : c]
                rho = tsum - view[:, 1]
                turned = torch.minimum((view[:, 0] * rho).sum(-2), (rho * v_new).sum(-2)) <= 0
                if c == t:  # N = 2**(j+1) - 1: the top level, the whole tree, ends here
                    top_turn = top_turn | turned[0, 0]
                    inner_turn = turned[1:, 0].any(0)
                    if t >= 2:
                        top_turn = top_turn | turned[1, 1]
                        inner_turn = inner_turn | turned[2:, 1].any(0)
                else:
                    inner_turn = turned[:, 0].any(0) | turned[1:, 1].any(0)
                if min(t, j) >= 2:
                    inner_turn = inner_turn | pending[2 : min(t, j) + 1].any(0)

            # ------------------------------------------------------------ subtree done
            if inner_turn is not None:
                ok = ok > inner_turn
            if leaf & (leaf + 1):  # the doubling goes on
                active = ok
            else:
                # biased progressive sampling: the new subtree's candidate replaces the tree's
                # w.p. min(1, W_sub / W_old)
                u = torch.rand(2, nc, generator=generator, dtype=dt, device=dev)
                take_sub = ok & (u[0] < torch.exp(lw_sub - lw_tree))
                smp = torch.where(take_sub, sub, smp)
                moved |= take_sub
                lw_tree = torch.where(ok, torch.logaddexp(lw_tree, lw_sub), lw_tree)
                depth += ok
                if j + 1 == max_depth:
                    break
                active = ok > top_turn
                # next doubling in a fresh random direction; reversing swaps the ends
                flip = active & (u[1] < 0.5)
                cur, far = torch.where(flip, far, cur), torch.where(flip, cur, far)
                step = torch.where(flip, -step, step)
                lw_sub = torch.full_like(lw_sub, -torch.inf)
                ckpt[0, 0, 0] = far[sv]  # slot 0: the old tree, first half of the top level

            if not bool(active.any()):  # the one host sync per iteration
                break

        new_state = State(
            smp[sx].T.reshape(x0.shape), smp[se].reshape(bs), smp[sg].T.reshape(x0.shape)
        )
        accept_prob = (acc_sum / num_leapfrog).reshape(bs)
        info = NUTSInfo(
            accept_prob,
            moved.reshape(bs),
            diverging.reshape(bs),
            self.step_size,
            tree_depth=depth.reshape(bs),
            num_leapfrog=num_leapfrog.reshape(bs),
            num_evals=torch.full(bs, leaf, dtype=torch.long, device=dev),
            idle_fraction=1.0 - num_leapfrog.sum().to(dt) / (nc * leaf),
            energy_error=smp[sd].reshape(bs),
        )
        return new_state, info
