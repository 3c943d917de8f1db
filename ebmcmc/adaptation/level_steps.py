"""Per-level step sizes adapted online, while a model trains (DAEBM's sampler).

A :class:`~ebmcmc.kernels.LevelGibbs` chain moves ``x`` at each chain's level with that
level's step size. During training the energy changes under the chains, so the step sizes are
adapted for as long as training runs rather than in a warm-up: :class:`LevelStepAdaptation`
collects the acceptance of the moves made at each level and, every ``every`` observations,
changes each level's step by one of two rules:

* ``"band"`` (the rule of the DAEBM paper's code): if the level's acceptance over the window is
  above ``band[1]`` the step grows by ``grow``, below ``band[0]`` it shrinks by ``shrink``,
  otherwise (or if no chain moved at that level) it stays. The paper writes the rule on its
  ``epsilon_t`` (the noise scale of ``x' = x - epsilon^2/2 grad U + epsilon xi``): x 1.1 above
  0.8, / 1.2 below 0.6. In ebmcmc's convention ``step_size = epsilon^2 / 2``, so the defaults
  are ``grow = 1.1**2`` and ``shrink = 1.2**2``.
* ``"dual_averaging"``: one dual-averaging recursion per level (Hoffman & Gelman's, Stan's
  constants, :func:`~ebmcmc.adaptation.dual_averaging_update`) towards ``target_accept``, fed
  the window's acceptance of that level; the current iterate (not the average) is used, since
  the target keeps moving while the model trains. A level no chain visited in the window is
  not updated.

Acceptance is pooled over the window: the sum of the moves' acceptance probabilities over the
number of moves (not, as the paper's code does, the mean of per-batch rates with unvisited
levels counted as 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .dual_averaging import DualAveragingState, dual_averaging_init, dual_averaging_update

__all__ = ["LevelStepAdaptation", "LEVEL_STEP_RULES"]

#: the rules :class:`LevelStepAdaptation` knows
LEVEL_STEP_RULES = ("band", "dual_averaging")

_F64 = torch.float64


class LevelStepAdaptation:
    """Adapt one step size per level from the acceptance of the moves made at each level.

    Args:
        step_sizes: the initial step sizes ``(L,)`` (ebmcmc's convention: MALA's
            ``step_size``), positive and finite; kept as float64 on the CPU.
        rule: ``"band"`` or ``"dual_averaging"`` (see the module docstring).
        every: observations (training iterations) per adaptation window.
        band: ``(low, high)`` acceptance band of the ``"band"`` rule.
        grow: factor applied above the band (``1.1**2``: the paper's 1.1 on ``epsilon``).
        shrink: divisor applied below the band (``1.2**2``: the paper's 1.2 on ``epsilon``).
        target_accept: the acceptance ``"dual_averaging"`` aims for.
        gamma: dual averaging's regularisation scale.
        t0: dual averaging's offset.
        kappa: dual averaging's averaging exponent (the average itself is not used here).

    Attributes:
        step_sizes: the current step sizes ``(L,)``, float64.
        num_windows: adaptation windows completed.

    Example:
        >>> import torch
        >>> ad = LevelStepAdaptation(torch.full((3,), 0.01), rule="band", every=2)
        >>> for _ in range(2):  # level 0 accepts too much, level 1 too little, level 2 is fine
        ...     adapted = ad.observe(torch.tensor([9.0, 2.0, 7.0]), torch.tensor([10, 10, 10]))
        >>> [round(v, 6) for v in ad.step_sizes.tolist()]
        [0.0121, 0.006944, 0.01]
    """

    def __init__(
        self,
        step_sizes: Tensor,
        rule: str = "band",
        every: int = 100,
        band: tuple[float, float] = (0.6, 0.8),
        grow: float = 1.1**2,
        shrink: float = 1.2**2,
        target_accept: float = 0.7,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        s = torch.as_tensor(step_sizes, dtype=_F64).detach().cpu().clone()
        if s.ndim != 1 or s.numel() < 1 or not bool(torch.isfinite(s).all()) or (s <= 0).any():
            raise ValueError(f"step_sizes must be a 1-D tensor of finite positive numbers, got {s}")
        if rule not in LEVEL_STEP_RULES:
            raise ValueError(f"rule must be one of {LEVEL_STEP_RULES}, got {rule!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        lo, hi = (float(b) for b in band)
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"band must be (low, high) with 0 <= low < high <= 1, got {band!r}")
        if not (grow >= 1 and shrink >= 1 and math.isfinite(grow) and math.isfinite(shrink)):
            raise ValueError(f"grow and shrink must be finite and >= 1, got {grow}, {shrink}")
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        self.rule, self.every = rule, every
        self.band, self.grow, self.shrink = (lo, hi), float(grow), float(shrink)
        self.target_accept = float(target_accept)
        self.gamma, self.t0, self.kappa = float(gamma), float(t0), float(kappa)
        self.step_sizes = s
        self.num_windows = 0
        L = s.numel()
        self._accept_sum = torch.zeros(L, dtype=_F64)
        self._moves = torch.zeros(L, dtype=torch.long)
        self._count = 0
        self._da: list[DualAveragingState] = [dual_averaging_init(float(v)) for v in s]

    @property
    def num_levels(self) -> int:
        """``L``, the number of levels."""
        return int(self.step_sizes.numel())

    def window_accept(self) -> Tensor:
        """The pooled acceptance of the current (unfinished) window per level, ``(L,)``
        (NaN where no chain moved)."""
        return self._accept_sum / self._moves.to(_F64)

    def observe(self, accept_sum: Tensor, moves: Tensor) -> bool:
        """Add one iteration's figures and adapt if the window is complete.

        Args:
            accept_sum: ``(L,)``, the sum over the chains that moved at each level of their
                acceptance probability (averaged over their inner steps).
            moves: ``(L,)``, how many chains moved at each level.

        Returns:
            Whether the step sizes were adapted by this call.
        """
        a = torch.as_tensor(accept_sum, dtype=_F64).detach().cpu()
        m = torch.as_tensor(moves).detach().cpu().to(torch.long)
        if a.shape != (self.num_levels,) or m.shape != (self.num_levels,):
            raise ValueError(
                f"accept_sum and moves must have shape ({self.num_levels},), got "
                f"{tuple(a.shape)} and {tuple(m.shape)}"
            )
        self._accept_sum += torch.nan_to_num(a, nan=0.0)
        self._moves += m
        self._count += 1
        if self._count < self.every:
            return False
        self._adapt(self.window_accept())
        self._accept_sum.zero_()
        self._moves.zero_()
        self._count = 0
        self.num_windows += 1
        return True

    def _adapt(self, acc: Tensor) -> None:
        visited = torch.isfinite(acc)
        if self.rule == "band":
            lo, hi = self.band
            factor = torch.ones_like(acc)
            factor[visited & (acc > hi)] = self.grow
            factor[visited & (acc < lo)] = 1.0 / self.shrink
            self.step_sizes = self.step_sizes * factor
            return
        new = self.step_sizes.clone()
        for t in torch.nonzero(visited).flatten().tolist():
            self._da[t], step = dual_averaging_update(
                self._da[t], float(acc[t]), self.target_accept, self.gamma, self.t0, self.kappa
            )
            new[t] = float(step)
        self.step_sizes = new

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a resume needs (tensors and ints).

        Example:
            >>> import torch
            >>> sorted(LevelStepAdaptation(torch.ones(2)).state_dict())  # doctest: +ELLIPSIS
            ['accept_sum', 'count', 'da_h_bar', ...]
        """
        return {
            "step_sizes": self.step_sizes.clone(),
            "accept_sum": self._accept_sum.clone(),
            "moves": self._moves.clone(),
            "count": self._count,
            "num_windows": self.num_windows,
            "da_log_step": torch.tensor([float(d.log_step) for d in self._da], dtype=_F64),
            "da_log_step_avg": torch.tensor(
                [float(d.log_step_avg) for d in self._da], dtype=_F64
            ),  # fmt: skip
            "da_h_bar": torch.tensor([float(d.h_bar) for d in self._da], dtype=_F64),
            "da_mu": torch.tensor([float(d.mu) for d in self._da], dtype=_F64),
            "da_num_updates": torch.tensor([d.num_updates for d in self._da], dtype=torch.long),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: the state has another number of levels.
        """
        s = torch.as_tensor(state["step_sizes"], dtype=_F64).cpu()
        if s.shape != (self.num_levels,):
            raise ValueError(f"the state holds {s.numel()} step sizes, expected {self.num_levels}")
        self.step_sizes = s.clone()
        self._accept_sum = torch.as_tensor(state["accept_sum"], dtype=_F64).cpu().clone()
        self._moves = torch.as_tensor(state["moves"]).cpu().to(torch.long).clone()
        self._count = int(state["count"])
        self.num_windows = int(state["num_windows"])
        a, b, c, d = (state[k].cpu() for k in ("da_log_step", "da_log_step_avg", "da_h_bar",
                                                "da_mu"))  # fmt: skip
        n = state["da_num_updates"].cpu()
        self._da = [
            DualAveragingState(float(a[t]), float(b[t]), float(c[t]), float(d[t]), int(n[t]))
            for t in range(self.num_levels)
        ]
