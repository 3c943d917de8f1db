"""The verdict of a long-run stability study: bands on energy, quality and saturation,
finiteness, and agreement of the starts by (nested) rank R-hat."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import arviz_bridge
from ..diagnostics.report import Finding

__all__ = ["StabilityCriteria", "agreement_rhat", "judge"]


@dataclass(frozen=True)
class StabilityCriteria:
    """The stated bands a long-run study judges against.

    Args:
        energy_band: the chains' mean energy must stay within ``energy_band * (q95 - q05)``
            (the short-run spread of the chains' energies) of its short-run value.
        quality_band: ``quality_fn`` (lower is better) may exceed its short-run value by at
            most this much.
        saturation_band: with ``bounds``, the fraction of coordinates at or beyond them may
            exceed its short-run value by at most this much.
        rhat_limit: R-hat over the chains of all starts must be below this.
        agreement: ``"rhat"`` (rank-normalised R-hat over all chains) or ``"nested"`` (nested
            R-hat with the starts as superchains; for multimodal models whose chains each stay
            in one mode, where ordinary R-hat fails by construction).
        window: draws per chain at the end of the run used for R-hat.

    Example:
        >>> StabilityCriteria(agreement="nested").rhat_limit
        1.01
    """

    energy_band: float = 0.5
    quality_band: float = 0.05
    saturation_band: float = 0.05
    rhat_limit: float = 1.01
    agreement: str = "rhat"
    window: int = 1000

    def __post_init__(self):
        for name in ("energy_band", "quality_band", "saturation_band"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if isinstance(self.rhat_limit, bool) or not self.rhat_limit > 1:
            raise ValueError(f"rhat_limit must be > 1, got {self.rhat_limit!r}")
        if self.agreement not in ("rhat", "nested"):
            raise ValueError(f"agreement must be 'rhat' or 'nested', got {self.agreement!r}")
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"window must be a positive int, got {w!r}")


def agreement_rhat(names, win_e, win_m) -> tuple[dict[str, float], dict[str, float]]:
    """Rank R-hat and nested R-hat (starts as superchains) of the windows' summaries.

    Args:
        names: the starts, in order.
        win_e: ``name -> (chains, window)`` energies.
        win_m: ``name -> (chains, window)`` per-chain mean coordinates.

    Returns:
        ``(rhat, nested_rhat)``, each ``{"energy": float, "mean_x": float}`` (NaN where
        undefined: non-finite draws, one chain, or unequal starts for the nested one).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> w = {n: torch.randn(8, 100, generator=g) for n in "ab"}
        >>> rhat, nested = agreement_rhat(["a", "b"], w, w)
        >>> rhat["energy"] < 1.05
        True
    """
    nan = {"energy": math.nan, "mean_x": math.nan}
    arrays = {
        "energy": np.concatenate([win_e[n].double().numpy() for n in names], 0),
        "mean_x": np.concatenate([win_m[n].double().numpy() for n in names], 0),
    }
    if not all(np.isfinite(a).all() for a in arrays.values()):
        return dict(nan), dict(nan)
    n_chain, n_draw = arrays["energy"].shape
    if n_chain < 2 or n_draw < 4:
        return dict(nan), dict(nan)
    rh = arviz_bridge.rhat(arrays, "rank")
    rhat = {k: float(rh[k]) for k in arrays}
    sizes = {win_e[n].shape[0] for n in names}
    nrhat = dict(nan)
    if len(names) >= 2 and len(sizes) == 1:
        ids = np.repeat(np.arange(len(names)), sizes.pop())
        nr = arviz_bridge.rhat_nested(arrays, ids, "rank")
        nrhat = {k: float(nr[k]) for k in arrays}
    return rhat, nrhat


def judge(curves, short_run, rhat, cfg, has_quality) -> list[Finding]:
    """The findings of a study: one per start and check, plus the agreement across starts.

    Args:
        curves: ``start -> DataFrame`` (see :data:`ebmcmc.studies.CURVE_COLUMNS`).
        short_run: the reference step.
        rhat: the agreement statistics judged (``{"energy": ..., "mean_x": ...}``).
        cfg: the study's settings (bands from :class:`StabilityCriteria`, ``bounds``).
        has_quality: whether a quality figure was recorded.

    Returns:
        A list of :class:`~ebmcmc.diagnostics.Finding`; any ``"error"`` fails the study.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"step": [1.0], "energy_mean": [0.0], "energy_q05": [-1.0],
        ...                    "energy_q95": [1.0], "nonfinite": [0.0]})
        >>> cfg = dict(energy_band=0.5, bounds=None, rhat_limit=1.01, window=10)
        >>> [f.level for f in judge({"a": df}, 1, {"energy": 1.0}, cfg, False)]
        ['ok', 'ok', 'ok']
    """
    out: list[Finding] = []
    for n, df in curves.items():
        ref = df[df["step"] == short_run].iloc[0]
        later = df[df["step"] >= short_run]
        bad_nf = df[df["nonfinite"] > 0]
        if len(bad_nf):
            first = bad_nf.iloc[0]
            out.append(
                Finding(
                    "error",
                    f"{n}: non-finite values ({first['nonfinite']:.0f}) from step "
                    f"{first['step']:.0f} on",
                )
            )
        else:
            out.append(Finding("ok", f"{n}: every position and energy finite"))
        spread = ref["energy_q95"] - ref["energy_q05"]
        tol = cfg["energy_band"] * spread if math.isfinite(spread) and spread > 0 else math.nan
        dev = (later["energy_mean"] - ref["energy_mean"]).abs()
        if not math.isfinite(tol) or not np.isfinite(dev.to_numpy()).all() or (dev > tol).any():
            worst = later.loc[dev.fillna(np.inf).idxmax()]
            out.append(
                Finding(
                    "error",
                    f"{n}: energy left its band: mean {worst['energy_mean']:.4g} at step "
                    f"{worst['step']:.0f} vs short-run {ref['energy_mean']:.4g} "
                    f"(band ±{tol:.3g} = {cfg['energy_band']} × short-run 5-95 % spread)",
                )
            )
        else:
            out.append(
                Finding(
                    "ok",
                    f"{n}: energy mean within ±{tol:.3g} of its short-run value "
                    f"{ref['energy_mean']:.4g} (max deviation {dev.max():.3g})",
                )
            )
        if has_quality:
            dq = later["quality"] - ref["quality"]
            if not np.isfinite(dq.to_numpy()).all() or (dq > cfg["quality_band"]).any():
                worst = later.loc[dq.fillna(np.inf).idxmax()]
                out.append(
                    Finding(
                        "error",
                        f"{n}: quality degraded: {worst['quality']:.4g} at step "
                        f"{worst['step']:.0f} vs short-run {ref['quality']:.4g} "
                        f"(band +{cfg['quality_band']})",
                    )
                )
            else:
                out.append(
                    Finding(
                        "ok",
                        f"{n}: quality within +{cfg['quality_band']} of its short-run value "
                        f"{ref['quality']:.4g} (worst {later['quality'].max():.4g})",
                    )
                )
        if cfg["bounds"] is not None:
            ds = later["saturation"] - ref["saturation"]
            if (ds > cfg["saturation_band"]).any():
                worst = later.loc[ds.idxmax()]
                out.append(
                    Finding(
                        "error",
                        f"{n}: saturation: {worst['saturation']:.1%} of coordinates at the "
                        f"bounds {cfg['bounds']} at step {worst['step']:.0f} vs short-run "
                        f"{ref['saturation']:.1%}",
                    )
                )
            else:
                out.append(Finding("ok", f"{n}: no saturation at the bounds {cfg['bounds']}"))
    vals = list(rhat.values())
    label = "nested R-hat" if cfg.get("agreement") == "nested" else "R-hat"
    if not all(math.isfinite(v) for v in vals):
        out.append(
            Finding("error", f"{label} across starts undefined (non-finite draws or one chain)")
        )
    elif max(vals) >= cfg["rhat_limit"]:
        worst = max(rhat, key=rhat.get)
        out.append(
            Finding(
                "error",
                f"chains from the starts disagree: {label} of {worst} {rhat[worst]:.4f} >= "
                f"{cfg['rhat_limit']} over the last {cfg['window']} draws",
            )
        )
    else:
        out.append(
            Finding(
                "ok",
                f"chains from all starts agree: {label} "
                + ", ".join(f"{k} {v:.4f}" for k, v in rhat.items())
                + f" < {cfg['rhat_limit']}",
            )
        )
    return out
