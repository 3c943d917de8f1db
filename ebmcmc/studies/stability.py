"""Long-run stability studies: run chains far past the training horizon and judge them.

"Long-run stable" (see the docs' methods page on long runs): chains of a model run for many
steps from data and from noise keep their energy and a sample-quality figure within a stated
band of their short-run values, chains from both starts agree (rank-normalised R-hat < 1.01 on
summary statistics), and no value saturates or turns non-finite. :func:`stability` runs such a
study (:func:`~ebmcmc.studies.runner.run_chains`), judges it
(:func:`~ebmcmc.studies.judge.judge` against :class:`StabilityCriteria`) and returns a
:class:`StabilityResult`; :func:`ebmcmc.studies.report_stability` writes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import Tensor

from .._deprecation import warn_deprecated
from ..diagnostics.report import Finding
from ..kernels.base import Kernel
from .judge import StabilityCriteria, agreement_rhat, judge
from .runner import CURVE_COLUMNS, run_chains

__all__ = ["stability", "StabilityResult", "checkpoints_for"]

_CRITERIA_FIELDS = ("energy_band", "quality_band", "saturation_band", "rhat_limit", "agreement",
                    "window")  # fmt: skip


@dataclass
class StabilityResult:
    """What :func:`stability` measured and concluded.

    Attributes:
        curves: ``start name -> DataFrame`` with one row per checkpoint and the columns
            :data:`CURVE_COLUMNS`: ``step`` (steps taken), the chains' energy mean and 5/50/95 %
            quantiles, ``quality`` (``quality_fn`` of the positions; NaN without one),
            ``saturation`` (fraction of coordinates at or beyond ``bounds``; NaN without),
            ``nonfinite`` (non-finite position entries plus non-finite energies) and
            ``divergences`` (cumulative count).
        short_run: the step whose values are the reference ("short-run") values.
        rhat: rank-normalised R-hat over the chains of all starts together, on the last
            ``window`` draws of each summary statistic (``energy``, ``mean_x``).
        nested_rhat: the same statistics' nested R-hat with the starts as superchains (NaN
            when the starts have different numbers of chains or there is only one).
        passed: the verdict.
        findings: the checks, each a :class:`~ebmcmc.diagnostics.report.Finding`.
        final: ``start name -> final positions`` of the chains.
        config: the study's settings (bands, limits, seed, steps).
    """

    curves: dict[str, pd.DataFrame]
    short_run: int
    rhat: dict[str, float]
    nested_rhat: dict[str, float]
    passed: bool
    findings: list[Finding] = field(default_factory=list)
    final: dict[str, Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """The messages of the failed checks (empty when the study passed)."""
        return [f.message for f in self.findings if f.level == "error"]

    @property
    def steps(self) -> np.ndarray:
        """The checkpoint steps."""
        return next(iter(self.curves.values()))["step"].to_numpy()


def checkpoints_for(num_steps: int, num_checkpoints: int, short_run: int) -> list[int]:
    """Logarithmically spaced steps from 1 to ``num_steps``, including ``short_run``.

    Example:
        >>> checkpoints_for(1000, 4, 30)
        [1, 10, 30, 100, 1000]
    """
    pts = np.unique(np.round(np.logspace(0, math.log10(num_steps), num_checkpoints)).astype(int))
    return sorted({int(p) for p in pts} | {short_run, num_steps})


def _fingerprint(**kw) -> str:
    return repr(sorted((k, repr(v)) for k, v in kw.items()))


def stability(
    energy: Callable[[Tensor], Tensor],
    kernel: Kernel,
    starts: Mapping[str, Tensor],
    num_steps: int,
    *,
    short_run: int | None = None,
    checkpoints: Sequence[int] | int = 12,
    quality_fn: Callable[[Tensor], float | Tensor] | None = None,
    bounds: tuple[float, float] | None = None,
    criteria: StabilityCriteria | None = None,
    chunk_size: int = 1000,
    generator: int = 0,
    state_path: str | os.PathLike | None = None,
    **deprecated,
) -> StabilityResult:
    """Run a long-run stability study of ``kernel`` on ``energy`` from several starts.

    Each start's chains (one per leading element) run ``num_steps`` steps of ``kernel``
    (no adaptation) through :func:`ebmcmc.sample` in chunks of at most ``chunk_size`` steps,
    recording per step only the energy and the per-chain mean coordinate; at each checkpoint
    (logarithmically spaced) the chains' energies, ``quality_fn(positions)``, saturation and
    non-finite counts are recorded. The chunking does not change the chains: the curves are
    bit-identical for any ``chunk_size`` and to one unchunked run.

    The verdict, for every start and every checkpoint at or after ``short_run``
    (bands from ``criteria``, a :class:`StabilityCriteria`):

    - **energy**: the chains' mean energy stays within ``energy_band * (q95 - q05)`` (the
      short-run spread of the chains' energies) of its short-run value;
    - **quality**: ``quality_fn`` (lower is better, e.g. :func:`ebmcmc.evaluation.mmd` to
      reference data) never exceeds its short-run value by more than ``quality_band``;
    - **agreement**: R-hat over the chains of all starts, on the last ``window`` draws of the
      energy and of the per-chain mean coordinate, is below ``rhat_limit``; with
      ``agreement="nested"``, the nested R-hat with the starts as superchains instead;
    - **saturation** (with ``bounds``): the fraction of coordinates at or beyond the bounds
      never exceeds its short-run value by more than ``saturation_band``;
    - **finiteness**: no position or energy is ever non-finite.

    Args:
        energy: batched energy ``(*batch, *event) -> batch``.
        kernel: any ebmcmc kernel, used as given (no warm-up or adaptation).
        starts: ``name -> initial positions (chains, *event)``, e.g.
            ``{"data": x_data, "noise": x_noise}``.
        num_steps: steps per chain (e.g. >= 100x the training horizon).
        short_run: the reference step (the training horizon); default ``num_steps // 100``
            (at least 1).
        checkpoints: the number of log-spaced checkpoints, or the steps themselves.
        quality_fn: ``positions (chains, *event) -> float``, lower is better.
        bounds: ``(low, high)`` of the data range (images), for the saturation figure.
        criteria: the bands and the agreement test (default :class:`StabilityCriteria`).
        chunk_size: the most steps per :func:`ebmcmc.sample` call (bounds memory).
        generator: int seed; start ``i`` (in ``starts``' order) uses seed ``generator + i``.
        state_path: a file to keep the study's progress in: written (atomically) at every
            checkpoint, and, if it exists when the study starts with the same settings,
            resumed from, so an interrupted study rerun gives the same figures.
        **deprecated: the fields of :class:`StabilityCriteria` given one by one (the 0.1
            spelling; removed in 0.3).

    Returns:
        A :class:`StabilityResult`.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> g = torch.Generator().manual_seed(0)
        >>> starts = {"data": torch.randn(64, 2, generator=g),
        ...           "noise": 4 * torch.rand(64, 2, generator=g) - 2}
        >>> res = stability(lambda x: 0.5 * (x**2).sum(-1), MALA(0.9), starts, 1000,
        ...                 short_run=10, criteria=StabilityCriteria(window=500))
        >>> res.passed, list(res.curves)
        (True, ['data', 'noise'])
    """
    criteria = _criteria(criteria, deprecated)
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be an ebmcmc Kernel, got {type(kernel).__name__}")
    if not starts:
        raise ValueError("starts must name at least one set of initial positions")
    for name, v in (("num_steps", num_steps), ("chunk_size", chunk_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    short_run = max(1, num_steps // 100) if short_run is None else int(short_run)
    if not 1 <= short_run <= num_steps:
        raise ValueError(f"short_run must be in [1, num_steps={num_steps}], got {short_run}")
    if isinstance(checkpoints, int):
        steps = checkpoints_for(num_steps, checkpoints, short_run)
    else:
        steps = sorted({int(s) for s in checkpoints} | {short_run, num_steps})
        if steps[0] < 1 or steps[-1] > num_steps:
            raise ValueError(f"checkpoints must lie in [1, {num_steps}], got {list(checkpoints)}")
    if criteria.agreement == "nested" and (
        len(starts) < 2 or len({int(v.shape[0]) for v in starts.values()}) != 1
    ):
        raise ValueError("agreement='nested' needs two or more starts with equal chain counts")
    if bounds is not None:
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        bounds = (lo, hi)
    names = list(starts)
    config = {
        "num_steps": num_steps,
        "short_run": short_run,
        "checkpoints": steps,
        "energy_band": criteria.energy_band,
        "quality_band": criteria.quality_band,
        "saturation_band": criteria.saturation_band,
        "rhat_limit": criteria.rhat_limit,
        "agreement": criteria.agreement,
        "window": criteria.window,
        "bounds": bounds,
        "seed": generator,
        "kernel": repr(kernel),
        "starts": {n: tuple(starts[n].shape) for n in names},
    }
    runs = run_chains(
        energy,
        kernel,
        starts,
        steps,
        window=criteria.window,
        quality_fn=quality_fn,
        bounds=bounds,
        chunk_size=chunk_size,
        generator=generator,
        state_path=state_path,
        # the progress file is keyed by everything that changes the figures (not chunk_size)
        key=_fingerprint(**config),
    )
    curves = {n: pd.DataFrame(runs.rows[n], columns=CURVE_COLUMNS) for n in names}
    rhat, nrhat = agreement_rhat(names, runs.window_energy, runs.window_mean)
    judged = nrhat if criteria.agreement == "nested" else rhat
    findings = judge(curves, short_run, judged, config, quality_fn is not None)
    return StabilityResult(
        curves=curves,
        short_run=short_run,
        rhat=rhat,
        nested_rhat=nrhat,
        passed=not any(f.level == "error" for f in findings),
        findings=findings,
        final=runs.final,
        config=config,
    )


def _criteria(criteria: StabilityCriteria | None, loose: dict) -> StabilityCriteria:
    unknown = set(loose) - set(_CRITERIA_FIELDS)
    if unknown:
        raise TypeError(f"stability() got unexpected keyword arguments {sorted(unknown)}")
    if criteria is not None and not isinstance(criteria, StabilityCriteria):
        raise TypeError(f"criteria must be a StabilityCriteria, got {type(criteria).__name__}")
    if not loose:
        return criteria or StabilityCriteria()
    if criteria is not None:
        raise TypeError("give the bands either in criteria= or one by one (deprecated), not both")
    warn_deprecated(
        f"stability({', '.join(f'{k}=' for k in loose)})",
        f"stability(criteria=StabilityCriteria({', '.join(f'{k}=...' for k in loose)}))",
    )
    return StabilityCriteria(**loose)
