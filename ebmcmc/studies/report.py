"""The report of a long-run stability study: verdict, settings, a table and the curves."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..diagnostics.report import Finding, Section, write_report
from .stability import StabilityResult

__all__ = ["report_stability"]

CURVES_FILE = "stability_curves.png"


def _plot_curves(result: StabilityResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
    fig.savefig(out / CURVES_FILE, dpi=90)
    plt.close(fig)


def report_stability(
    result: StabilityResult, out_dir: str | os.PathLike, title: str | None = None
) -> Path:
    """Write a stability study as ``report.md`` (+ PNG) and a self-contained ``report.html``.

    The verdict and its reasons, the settings, a table of each start's short-run and final
    figures with the R-hats, and the long-run curves (energy with its 5-95 % band, quality,
    saturation, non-finite counts) on a log step axis. Written by
    :func:`ebmcmc.diagnostics.write_report`.

    Returns:
        The path of ``report.html``.

    Example:
        >>> import torch, tempfile
        >>> from ebmcmc.kernels import MALA
        >>> from ebmcmc.studies import StabilityCriteria, stability
        >>> res = stability(lambda x: 0.5 * (x**2).sum(-1), MALA(0.9),
        ...                 {"a": torch.zeros(32, 2), "b": torch.ones(32, 2)}, 300,
        ...                 criteria=StabilityCriteria(window=200))
        >>> report_stability(res, tempfile.mkdtemp()).name
        'report.html'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verdict = "STABLE" if result.passed else "NOT STABLE"
    findings = [Finding("ok" if result.passed else "error", f"verdict: {verdict}")]
    findings += result.findings
    cfg = result.config
    notes = [
        f"{cfg.get('num_steps', '?')} steps from "
        + ", ".join(f"{n} {shape}" for n, shape in cfg.get("starts", {}).items())
        + f"; kernel {cfg.get('kernel', '?')}; short-run step {result.short_run}; "
        f"seed {cfg.get('seed', '?')}"
    ]
    if any(math.isfinite(v) for v in result.nested_rhat.values()):
        notes.append(
            "Nested R-hat with the starts as superchains: "
            + ", ".join(f"{k} {v:.4f}" for k, v in result.nested_rhat.items())
        )
    table = {}
    for n, df in result.curves.items():
        ref = df[df["step"] == result.short_run].iloc[0]
        last = df.iloc[-1]
        for col in ("energy_mean", "quality", "saturation", "nonfinite", "divergences"):
            table[f"{n}: {col}"] = [float(ref[col]), float(last[col])]
    columns = [f"step {result.short_run}", f"step {int(result.steps[-1])}"]
    sections = [Section("Summary", table=pd.DataFrame.from_dict(table, "index", columns=columns))]
    try:
        _plot_curves(result, out)
        sections.append(Section("Long-run curves (dotted: the short-run step)", figure=CURVES_FILE))
    except Exception as err:  # noqa: BLE001 - a failed plot must not lose the report
        findings.append(Finding("warning", f"curve plot failed: {err}"))
    return write_report(
        out, title or "Long-run stability report", findings, notes=notes, sections=sections
    )
