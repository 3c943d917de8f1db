"""Long-run stability studies: run chains far past the training horizon and judge them.

"Long-run stable" (algorithms.md, section 5): chains of a model run for many steps from data
and from noise keep their energy and a sample-quality figure within a stated band of their
short-run values, chains from both starts agree (rank-normalised R-hat < 1.01 on summary
statistics), and no value saturates or turns non-finite. :func:`stability` runs such a study
with :func:`ebmcmc.sample` in chunks, recording only summaries (never every state), and
returns a :class:`StabilityResult` with the curves, the verdict and its reasons;
:func:`report_stability` writes it as ``report.md`` + PNGs and a self-contained
``report.html``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import arviz_bridge
from .._files import atomic_write
from ..kernels.base import Kernel, State
from ..sampling import sample
from .report import Finding, _Content, _write

__all__ = ["stability", "StabilityResult", "report_stability", "CURVE_COLUMNS"]

#: the columns of each start's curve in :attr:`StabilityResult.curves`
CURVE_COLUMNS = [
    "step",
    "energy_mean",
    "energy_q05",
    "energy_q50",
    "energy_q95",
    "quality",
    "saturation",
    "nonfinite",
    "divergences",
]

_FORMAT = "ebmcmc-stability/1"


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


def _state_fields(state: State) -> dict[str, Tensor | None]:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def _figures(state: State, nb: int, quality_fn, bounds) -> dict[str, float]:
    x, e = state.position.detach(), state.energy.detach()
    ef = e.reshape(-1).double()
    finite = ef[torch.isfinite(ef)]
    if finite.numel():
        q = torch.quantile(finite, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
        out = {
            "energy_mean": float(finite.mean()) if finite.numel() == ef.numel() else math.nan,
            "energy_q05": float(q[0]),
            "energy_q50": float(q[1]),
            "energy_q95": float(q[2]),
        }
    else:
        out = dict.fromkeys(["energy_mean", "energy_q05", "energy_q50", "energy_q95"], math.nan)
    flat = x.reshape((-1,) + tuple(x.shape[nb:]))
    out["nonfinite"] = float((~torch.isfinite(x)).sum() + (~torch.isfinite(e)).sum())
    if bounds is not None:
        lo, hi = bounds
        out["saturation"] = float(((x <= lo) | (x >= hi)).double().mean())
    else:
        out["saturation"] = math.nan
    out["quality"] = float(quality_fn(flat)) if quality_fn is not None else math.nan
    return out


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
    energy_band: float = 0.5,
    quality_band: float = 0.05,
    saturation_band: float = 0.05,
    rhat_limit: float = 1.01,
    agreement: str = "rhat",
    window: int = 1000,
    chunk_size: int = 1000,
    generator: int = 0,
    state_path: str | os.PathLike | None = None,
) -> StabilityResult:
    """Run a long-run stability study of ``kernel`` on ``energy`` from several starts.

    Each start's chains (one per leading element) run ``num_steps`` steps of ``kernel``
    (no adaptation) through :func:`ebmcmc.sample` in chunks of at most ``chunk_size`` steps,
    recording per step only the energy and the per-chain mean coordinate; at each checkpoint
    (logarithmically spaced) the chains' energies, ``quality_fn(positions)``, saturation and
    non-finite counts are recorded. The chunking does not change the chains: the curves are
    bit-identical for any ``chunk_size`` and to one unchunked run.

    The verdict (algorithms.md, section 5), for every start and every checkpoint at or after
    ``short_run``:

    - **energy**: the chains' mean energy stays within ``energy_band * (q95 - q05)`` (the
      short-run spread of the chains' energies) of its short-run value;
    - **quality**: ``quality_fn`` (lower is better, e.g. :func:`ebmcmc.metrics.mmd` to
      reference data) never exceeds its short-run value by more than ``quality_band``;
    - **agreement**: R-hat over the chains of all starts, on the last ``window`` draws of the
      energy and of the per-chain mean coordinate, is below ``rhat_limit``; with
      ``agreement="nested"``, the nested R-hat with the starts as superchains instead (for a
      multimodal model whose chains each stay in one mode, ordinary R-hat fails by
      construction, while nested R-hat asks whether the starts give the same distribution);
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
        energy_band, quality_band, saturation_band, rhat_limit: the stated bands.
        agreement: ``"rhat"`` or ``"nested"`` (see above; nested needs two or more starts
            with equal numbers of chains).
        window: draws per chain at the end of the run used for R-hat.
        chunk_size: the most steps per :func:`ebmcmc.sample` call (bounds memory).
        generator: int seed; start ``i`` (in ``starts``' order) uses seed ``generator + i``.
        state_path: a file to keep the study's progress in: written (atomically) at every
            checkpoint, and, if it exists when the study starts with the same settings,
            resumed from, so an interrupted study rerun gives the same figures.

    Returns:
        A :class:`StabilityResult`.

    Example:
        >>> import torch
        >>> from ebmcmc.kernels import MALA
        >>> g = torch.Generator().manual_seed(0)
        >>> starts = {"data": torch.randn(64, 2, generator=g),
        ...           "noise": 4 * torch.rand(64, 2, generator=g) - 2}
        >>> res = stability(lambda x: 0.5 * (x**2).sum(-1), MALA(0.9), starts, 1000,
        ...                 short_run=10, window=500)
        >>> res.passed, list(res.curves)
        (True, ['data', 'noise'])
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be an ebmcmc Kernel, got {type(kernel).__name__}")
    if not starts:
        raise ValueError("starts must name at least one set of initial positions")
    for name in ("num_steps", "chunk_size", "window"):
        v = locals()[name]
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
    if agreement not in ("rhat", "nested"):
        raise ValueError(f"agreement must be 'rhat' or 'nested', got {agreement!r}")
    if agreement == "nested" and (
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
        "energy_band": energy_band,
        "quality_band": quality_band,
        "saturation_band": saturation_band,
        "rhat_limit": rhat_limit,
        "agreement": agreement,
        "window": window,
        "bounds": bounds,
        "seed": generator,
        "kernel": repr(kernel),
        "starts": {n: tuple(starts[n].shape) for n in names},
    }
    # the progress file is keyed by everything that changes the figures (not chunk_size)
    key = _fingerprint(**config)

    states: dict[str, State] = {}
    gens: dict[str, torch.Generator] = {}
    nbs: dict[str, int] = {}
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    win_e: dict[str, Tensor] = {}
    win_m: dict[str, Tensor] = {}
    divs: dict[str, float] = dict.fromkeys(names, 0.0)
    done = 0
    for i, n in enumerate(names):
        states[n] = kernel.init(energy, starts[n])
        nbs[n] = len(states[n].batch_shape)
        if nbs[n] == 0:
            raise ValueError(f"start {n!r}: the positions need a leading chain dimension")
        gens[n] = torch.Generator(device=starts[n].device).manual_seed(generator + i)
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved.get("format") == _FORMAT and saved.get("key") == key:
            done = int(saved["done"])
            for n in names:
                s = saved["starts"][n]
                states[n] = dataclasses.replace(states[n], **s["state"])
                gens[n].set_state(s["gen"])
                rows[n] = [dict(r) for r in s["rows"]]
                divs[n] = float(s["divs"])
                if s["win_e"] is not None:
                    win_e[n], win_m[n] = s["win_e"], s["win_m"]

    def trace_fn(state: State, info) -> dict[str, Tensor]:
        nb = state.energy.ndim
        return {"mean_x": state.position.flatten(start_dim=nb).mean(-1)}

    if done == 0:
        for n in names:
            rows[n] = [{"step": 0.0, **_figures(states[n], nbs[n], quality_fn, bounds)}]
            rows[n][0]["divergences"] = 0.0
    for target in [s for s in steps if s > done]:
        for n in names:
            at = done
            while at < target:
                k = min(chunk_size, target - at)
                tr = sample(
                    energy,
                    kernel,
                    states[n],
                    k,
                    generator=gens[n],
                    trace_fn=trace_fn,
                    progress=False,
                    adaptation=None,
                )
                if tr.num_draws < k:  # interrupted inside sample(): keep the last checkpoint
                    raise KeyboardInterrupt
                states[n] = tr.final_state
                divs[n] += float(tr.stats["diverging"].sum())
                e = tr.stats["energy"].detach()
                m = tr.variables["mean_x"].detach()
                if n in win_e:
                    e, m = torch.cat([win_e[n], e], 1), torch.cat([win_m[n], m], 1)
                win_e[n], win_m[n] = e[:, -window:].clone(), m[:, -window:].clone()
                at += k
            row = {"step": float(target), **_figures(states[n], nbs[n], quality_fn, bounds)}
            row["divergences"] = divs[n]
            rows[n].append(row)
        done = target
        if path is not None:
            payload = {
                "format": _FORMAT,
                "key": key,
                "done": done,
                "starts": {
                    n: {
                        "state": _state_fields(states[n]),
                        "gen": gens[n].get_state(),
                        "rows": rows[n],
                        "divs": divs[n],
                        "win_e": win_e.get(n),
                        "win_m": win_m.get(n),
                    }
                    for n in names
                },
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp, p=payload: torch.save(p, tmp))

    curves = {n: pd.DataFrame(rows[n], columns=CURVE_COLUMNS) for n in names}
    rhat, nrhat = _agreement(names, win_e, win_m)
    judged = nrhat if agreement == "nested" else rhat
    findings = _judge(curves, short_run, judged, config, quality_fn is not None)
    return StabilityResult(
        curves=curves,
        short_run=short_run,
        rhat=rhat,
        nested_rhat=nrhat,
        passed=not any(f.level == "error" for f in findings),
        findings=findings,
        final={n: states[n].position.detach().clone() for n in names},
        config=config,
    )


def _agreement(names, win_e, win_m) -> tuple[dict[str, float], dict[str, float]]:
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


def _judge(curves, short_run, rhat, cfg, has_quality) -> list[Finding]:
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


def _plot_curves(result: StabilityResult, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figs = []
    panels = [
        ("energy_mean", "mean energy (5-95 % shaded, band dashed)"),
        ("quality", "quality (lower better)"),
    ]
    panels += [("saturation", "fraction at bounds"), ("nonfinite", "non-finite values")]
    panels = [
        (c, t)
        for c, t in panels
        if any(np.isfinite(df[c].to_numpy()).any() for df in result.curves.values())
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for n, df in result.curves.items():
            d = df[df["step"] >= 1]
            (line,) = ax.plot(d["step"], d[col], marker="o", ms=3, label=n)
            if col == "energy_mean":
                ax.fill_between(
                    d["step"], d["energy_q05"], d["energy_q95"], color=line.get_color(), alpha=0.15
                )
                ref = df[df["step"] == result.short_run].iloc[0]
                tol = result.config.get("energy_band", 0.5) * (
                    ref["energy_q95"] - ref["energy_q05"]
                )
                if math.isfinite(tol):
                    for y in (ref["energy_mean"] - tol, ref["energy_mean"] + tol):
                        ax.axhline(y, color=line.get_color(), ls="--", lw=0.8)
        ax.axvline(result.short_run, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        if col == "energy_mean":
            vals = np.concatenate(
                [
                    df[["energy_q05", "energy_q95"]].to_numpy().ravel()
                    for df in result.curves.values()
                ]
            )
            vals = vals[np.isfinite(vals)]
            if vals.size and (np.abs(vals).max() > 1e6):
                ax.set_yscale("log" if vals.min() > 0 else "symlog")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "stability_curves.png", dpi=90)
    plt.close(fig)
    figs.append(("Long-run curves (dotted: the short-run step)", "stability_curves.png"))
    return figs


def report_stability(
    result: StabilityResult, out_dir: str | os.PathLike, title: str | None = None
) -> Path:
    """Write a stability study as ``report.md`` (+ PNG) and a self-contained ``report.html``.

    The verdict and its reasons, the settings, a table of each start's short-run and final
    figures with the R-hats, and the long-run curves (energy with its 5-95 % band, quality,
    saturation, non-finite counts) on a log step axis. Uses the writer of
    :func:`ebmcmc.diagnostics.report`.

    Returns:
        The path of ``report.html``.

    Example:
        >>> import torch, tempfile
        >>> from ebmcmc.kernels import MALA
        >>> res = stability(lambda x: 0.5 * (x**2).sum(-1), MALA(0.9),
        ...                 {"a": torch.zeros(32, 2), "b": torch.ones(32, 2)}, 300, window=200)
        >>> report_stability(res, tempfile.mkdtemp()).name
        'report.html'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c = _Content(title or "Long-run stability report")
    verdict = "STABLE" if result.passed else "NOT STABLE"
    c.findings.append(Finding("ok" if result.passed else "error", f"verdict: {verdict}"))
    c.findings.extend(result.findings)
    cfg = result.config
    c.notes.append(
        f"{cfg.get('num_steps', '?')} steps from "
        + ", ".join(f"{n} {shape}" for n, shape in cfg.get("starts", {}).items())
        + f"; kernel {cfg.get('kernel', '?')}; short-run step {result.short_run}; "
        f"seed {cfg.get('seed', '?')}"
    )
    if any(math.isfinite(v) for v in result.nested_rhat.values()):
        c.notes.append(
            "Nested R-hat with the starts as superchains: "
            + ", ".join(f"{k} {v:.4f}" for k, v in result.nested_rhat.items())
        )
    table = {}
    for n, df in result.curves.items():
        ref = df[df["step"] == result.short_run].iloc[0]
        last = df.iloc[-1]
        for col in ("energy_mean", "quality", "saturation", "nonfinite", "divergences"):
            table[f"{n}: {col}"] = [float(ref[col]), float(last[col])]
    c.table = pd.DataFrame.from_dict(
        table, orient="index", columns=[f"step {result.short_run}", f"step {int(result.steps[-1])}"]
    )
    try:
        c.figures.extend(_plot_curves(result, out))
    except Exception as err:  # noqa: BLE001 - a failed plot must not lose the report
        c.findings.append(Finding("warning", f"curve plot failed: {err}"))
    return _write(c, out)
