"""Convergence reports people read: ``report.md`` with PNGs beside it and a self-contained
``report.html`` (images embedded), built from a trace by ArviZ's diagnostics and plots that
stay readable for any number of chains (:mod:`ebmcmc.diagnostics.plots`).
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import arviz_bridge
from .._files import atomic_write
from ..trace import Trace
from .summary import constant_chains, summary

__all__ = [
    "report",
    "write_report",
    "markdown_table",
    "Finding",
    "Section",
    "check_trace",
    "RHAT_LIMIT",
    "ESS_MIN",
    "BFMI_MIN",
]

#: R-hat at or above this is flagged (Vehtari et al. 2021)
RHAT_LIMIT = 1.01
#: bulk or tail ESS below this (over all chains) is flagged
ESS_MIN = 400
#: BFMI below this is flagged
BFMI_MIN = 0.3


@dataclass
class Finding:
    """One line of a report's verdict: ``level`` is ``"ok"``, ``"warning"`` or ``"error"``.

    Example:
        >>> Finding("warning", "R-hat 1.05 >= 1.01 for x[0]").level
        'warning'
    """

    level: str
    message: str


@dataclass
class Section:
    """One headed part of a composed report (see :func:`write_report`).

    Args:
        heading: the section's title.
        text: paragraphs (plain text; blank lines separate paragraphs).
        table: a table; numbers are shown to 4 significant digits, and columns named
            ``r_hat``, ``ess_bulk`` or ``ess_tail`` are flagged like the summary's.
        figure: the file name of a PNG inside the report's directory.

    Example:
        >>> Section("Samples", text="2,000 draws.", figure="samples.png").heading
        'Samples'
    """

    heading: str
    text: str = ""
    table: pd.DataFrame | None = None
    figure: str | None = None


@dataclass
class _Content:
    title: str
    findings: list[Finding] = field(default_factory=list)
    table: pd.DataFrame | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name)
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


def _plot_arrays(trace: Trace, max_coords: int) -> dict[str, np.ndarray]:
    """At most ``max_coords`` scalar coordinates of the trace, ``name[i] -> (chain, draw)``."""
    out: dict[str, np.ndarray] = {}
    for name, v in trace.variables.items():
        a = v.detach().cpu().numpy().astype(float)
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        for i in range(flat.shape[-1]):
            if len(out) >= max_coords:
                return out
            label = name if a.ndim == 2 else f"{name}[{i}]"
            out[label] = flat[:, :, i]
    return out


def _listed(ids, most: int = 8) -> str:
    ids = [str(i) for i in ids]
    return ", ".join(ids[:most]) + (f", … ({len(ids)} in all)" if len(ids) > most else "")


def _stuck_findings(trace: Trace) -> list[Finding]:
    """Chains that are constant (every draw identical) in some recorded coordinate."""
    chains: set[int] = set()
    coords: list[str] = []
    for name, v in trace.variables.items():
        if trace.num_draws < 2:
            break
        a = v.detach().cpu()
        const = constant_chains(a.reshape(a.shape[0], a.shape[1], -1).numpy())  # (chain, k)
        chains.update(np.flatnonzero(const.any(axis=1)).tolist())
        for i in np.flatnonzero(const.any(axis=0)):
            coords.append(name if a.ndim == 2 else f"{name}[{i}]")
    if not chains:
        return []
    return [
        Finding(
            "error",
            f"{len(chains)} of {trace.num_chains} chains are constant (stuck: every draw the "
            f"same) in {len(coords)} coordinates (chains {_listed(sorted(chains))}; coordinates "
            f"{_listed(coords, 4)}): R-hat, ESS and MCSE are undefined (NaN) there",
        )
    ]


def check_trace(trace: Trace, table: pd.DataFrame | None) -> list[Finding]:
    """The verdict on a trace: R-hat, ESS, divergences, acceptance and BFMI.

    A NaN R-hat or ESS, a chain that never moved and a constant energy are errors, named as
    such; they never count as passing.

    Example:
        >>> import torch, ebmcmc
        >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), ebmcmc.kernels.MALA(0.8),
        ...                    torch.zeros(4, 1), 200, generator=0, progress=False)
        >>> [f.level for f in check_trace(tr, summary(tr))][:1]
        ['ok']
    """
    found: list[Finding] = []
    n_chains = trace.num_chains
    stuck = _stuck_findings(trace)
    if table is not None:
        rhat = table["r_hat"]
        if n_chains < 2:
            found.append(Finding("warning", "R-hat needs at least 2 chains: this trace has 1"))
        elif rhat.isna().any():
            nan = rhat.index[rhat.isna()].tolist()
            found.append(
                Finding(
                    "error",
                    f"R-hat is NaN (undefined) for {len(nan)} of {len(table)} coordinates "
                    f"({_listed(nan, 4)}): a chain is constant or the draws are degenerate",
                )
            )
        else:
            bad = table[rhat >= RHAT_LIMIT]
            if len(bad):
                worst = bad["r_hat"].idxmax()
                found.append(
                    Finding(
                        "warning",
                        f"R-hat >= {RHAT_LIMIT} for {len(bad)} of {len(table)} coordinates "
                        f"(worst {worst}: {bad['r_hat'].max():.4f}): chains disagree or are too "
                        "short",
                    )
                )
            else:
                found.append(
                    Finding(
                        "ok", f"R-hat < {RHAT_LIMIT} for every coordinate (max {rhat.max():.4f})"
                    )
                )
        ess = table[["ess_bulk", "ess_tail"]]
        nan_ess = ess.isna().any(axis=1)
        low = (ess < ESS_MIN).any(axis=1)
        if nan_ess.any():
            found.append(
                Finding(
                    "error",
                    f"ESS is NaN (undefined) for {int(nan_ess.sum())} of {len(table)} coordinates "
                    f"({_listed(table.index[nan_ess].tolist(), 4)})",
                )
            )
        if low.any():
            found.append(
                Finding(
                    "warning",
                    f"ESS below {ESS_MIN} for {int(low.sum())} coordinates (min bulk "
                    f"{table['ess_bulk'].min():.0f}, min tail {table['ess_tail'].min():.0f})",
                )
            )
        elif not nan_ess.any():
            found.append(
                Finding(
                    "ok",
                    f"bulk and tail ESS >= {ESS_MIN} everywhere (min bulk "
                    f"{table['ess_bulk'].min():.0f})",
                )
            )
    found.extend(stuck)
    div = trace.stats.get("diverging")
    if div is not None:
        n_div = int(div.sum())
        level = "warning" if n_div else "ok"
        found.append(Finding(level, f"{n_div} divergent transitions of {div.numel()}"))
    acc = trace.stats.get("accept_prob")
    if acc is not None:
        mean = float(acc.double().mean())
        if mean > 0:
            found.append(Finding("ok", f"mean acceptance probability {mean:.3f}"))
        elif math.isnan(mean):
            found.append(Finding("error", "the acceptance probabilities are not finite"))
        else:
            found.append(Finding("error", "no proposal was accepted (acceptance probability 0)"))
    energy = trace.stats.get("energy")
    if energy is not None and trace.num_draws >= 4:
        e = energy.detach().cpu().numpy().astype(float)
        if not np.isfinite(e).all():
            found.append(Finding("error", "the energy trace has non-finite values"))
            return found
        flat = e.var(axis=1) == 0
        if flat.any():
            found.append(
                Finding(
                    "error",
                    f"the energy is constant in {int(flat.sum())} of {n_chains} chains (chains "
                    f"{_listed(np.flatnonzero(flat).tolist())}): E-BFMI is undefined there "
                    "(stuck chains)",
                )
            )
        if not flat.all():
            bfmi = arviz_bridge.bfmi(e[~flat])
            level = "warning" if (bfmi < BFMI_MIN).any() else "ok"
            over = " over the moving chains" if flat.any() else " over chains"
            found.append(
                Finding(
                    level,
                    f"E-BFMI (potential energy) min {bfmi.min():.2f}{over} (flag below {BFMI_MIN})",
                )
            )
    return found


def _content_for_trace(trace: Trace, out: Path, title: str, max_coords: int) -> _Content:
    c = _Content(title)
    attrs = trace.attrs
    c.notes.append(
        f"{trace.num_chains} chains x {trace.num_draws} draws; kernel {attrs.get('kernel', '?')}, "
        f"warm-up {attrs.get('num_warmup', '?')}, thin {attrs.get('thin', 1)}; recorded: "
        + ", ".join(f"`{k}` {tuple(v.shape[2:])}" for k, v in trace.variables.items())
    )
    try:
        c.table = summary(trace)
    except ValueError as err:
        c.findings.append(Finding("error", f"no summary: {err}"))
        return c
    c.findings.extend(check_trace(trace, c.table))
    arrays = _plot_arrays(trace, max_coords)
    if len(arrays) < sum(int(np.prod(v.shape[2:])) for v in trace.variables.values()):
        c.notes.append(f"Plots show the first {len(arrays)} coordinates; the table shows all.")
    c.figures.extend(_plots(trace, arrays, out, c.findings))
    return c


def _plots(trace: Trace, arrays: dict[str, np.ndarray], out: Path, findings: list[Finding]):
    """Draw the report's plots; ``(caption, file name)`` for each one drawn."""
    from . import plots

    shown, which = plots.shown_chains(arrays)
    n = trace.num_chains
    todo = [
        ("trace", f"Trace and marginal densities: shaded, all {n} chains; lines, {which}"
         + (f"; black, the 5 and 95 % quantiles of all {n}" if len(shown) < n else ""),
         lambda p: plots.plot_trace(arrays, shown, p)),
        ("rank", f"Rank plots (uniform when chains agree): {which}"
         + (f"; right, every one of the {n} chains" if len(shown) < n else ""),
         lambda p: plots.plot_rank(arrays, shown, p)),
        ("ess_evolution", f"ESS of all {n} chains as draws accumulate (bulk and tail)",
         lambda p: plots.plot_ess_evolution(arrays, p, ESS_MIN)),
        ("autocorr", f"Autocorrelation: mean and 5–95 % band over all {n} chains",
         lambda p: plots.plot_autocorr(arrays, p)),
    ]  # fmt: skip
    if "energy" in trace.stats:
        e = trace.stats["energy"].detach().cpu().numpy().astype(float)
        if np.isfinite(e).all():
            todo.append((
                "energy", f"Energy: marginal vs transition distribution over all {n} chains, "
                "and E-BFMI per chain", lambda p: plots.plot_energy(e, p, BFMI_MIN),
            ))  # fmt: skip
    drawn = []
    for kind, caption, draw in todo:
        if n < 2 and kind == "rank":
            continue
        name = f"{kind}.png"
        try:
            draw(out / name)
        except Exception as err:  # noqa: BLE001 - a failed plot must not lose the report
            findings.append(Finding("warning", f"{kind} plot failed: {err}"))
            continue
        drawn.append((caption, name))
    return drawn


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
        return str(v)
    return "nan" if not math.isfinite(v) else f"{v:.4g}"


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, numbers to 4 significant digits, R-hat/ESS flagged.

    Example:
        >>> print(markdown_table(pd.DataFrame({"r_hat": [1.02]}, index=["x"])))
        | | r_hat |
        |---|---|
        | x | **1.02** ⚠ |
    """
    return _table_md(df)


def _table_md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in df.iterrows():
        cells = []
        for col in df.columns:
            v = row[col]
            cell = _cell(v)
            if _flag(col, v):
                cell = f"**{cell}** {'✗' if cell == 'nan' else '⚠'}"
            cells.append(cell)
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _flag(col: str, v) -> bool:
    """Whether a cell fails: R-hat at or above the limit, ESS below the minimum, or any of
    them (or the MCSE) NaN, which means undefined (a constant chain), never a pass."""
    if not isinstance(v, (int, float, np.number)) or isinstance(v, (bool, np.bool_)):
        return False
    if col in ("r_hat", "ess_bulk", "ess_tail", "mcse_mean") and math.isnan(v):
        return True
    if col == "r_hat":
        return bool(math.isfinite(v) and v >= RHAT_LIMIT)
    if col in ("ess_bulk", "ess_tail"):
        return bool(math.isfinite(v) and v < ESS_MIN)
    return False


def _table_html(df: pd.DataFrame, table_id: str = "summary") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for idx, row in df.iterrows():
        cells = []
        for col in df.columns:
            v = row[col]
            cls = ' class="warn"' if _flag(col, v) else ""
            cells.append(f"<td{cls}>{html.escape(_cell(v))}</td>")
        rows.append(f"<tr><th>{html.escape(str(idx))}</th>{''.join(cells)}</tr>")
    return (
        f'<table id="{table_id}"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_ICON = {"ok": "✓", "warning": "⚠", "error": "✗"}

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}td.warn{background:#ffe0e0;font-weight:bold}li.warning{color:#a60}
li.error{color:#c00;font-weight:bold}li.ok{color:#060}img{max-width:100%}figure{margin:1em 0}"""


def _write(c: _Content, out: Path) -> Path:
    md = [f"# {c.title}", ""]
    md += [f"- {_ICON[f.level]} {f.message}" for f in c.findings] + [""]
    md += c.notes + [""]
    if c.table is not None:
        md += ["## Summary", "", _table_md(c.table), ""]
    for caption, name in c.figures:
        md += [f"## {caption}", "", f"![{caption}]({name})", ""]
    for sec in c.sections:
        md += [f"## {sec.heading}", ""]
        md += [sec.text, ""] if sec.text else []
        md += [_table_md(sec.table), ""] if sec.table is not None else []
        md += [f"![{sec.heading}]({sec.figure})", ""] if sec.figure else []
    body = [f"<h1>{html.escape(c.title)}</h1><ul>"]
    body += [
        f'<li class="{f.level}">{_ICON[f.level]} {html.escape(f.message)}</li>' for f in c.findings
    ]
    body.append("</ul>")
    body += [f"<p>{html.escape(n)}</p>" for n in c.notes]
    if c.table is not None:
        body += ["<h2>Summary</h2>", _table_html(c.table)]
    for caption, name in c.figures:
        body.append(_figure_html(out / name, caption))
    for i, sec in enumerate(c.sections):
        body.append(f"<h2>{html.escape(sec.heading)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in sec.text.split("\n\n") if p.strip()]
        if sec.table is not None:
            table_id = "summary" if c.table is None and i == 0 else f"table-{i}"
            body.append(_table_html(sec.table, table_id))
        if sec.figure:
            body.append(_figure_html(out / sec.figure, sec.heading))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(c.title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    _atomic_text(out / "report.md", "\n".join(md) + "\n")
    return _atomic_text(out / "report.html", page)


def _figure_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def write_report(
    out_dir: str | os.PathLike,
    title: str,
    findings=(),
    notes=(),
    sections=(),
) -> Path:
    """Compose a report of several parts: ``report.md`` (PNGs beside it) and ``report.html``.

    The same writer as :func:`report` (self-contained HTML with embedded images, atomic
    writes), for results that are not one trace: a training run, AIS estimates, a stability
    study and a summary table side by side (``ebmcmc demo`` uses it).

    Args:
        out_dir: the directory (created if missing); every ``Section.figure`` names a PNG in it.
        title: the heading.
        findings: :class:`Finding` lines for the verdict at the top.
        notes: paragraphs under the verdict.
        sections: :class:`Section` parts, in order.

    Returns:
        The path of ``report.html``.

    Example:
        >>> import tempfile, pandas as pd
        >>> df = pd.DataFrame({"r_hat": [1.002], "ess_bulk": [950.0]}, index=["x"])
        >>> path = write_report(tempfile.mkdtemp(), "Demo", [Finding("ok", "converged")],
        ...                     sections=[Section("Summary", table=df)])
        >>> path.name
        'report.html'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = list(sections)
    for sec in sections:
        if not isinstance(sec, Section):
            raise TypeError(f"sections must be Section objects, got {type(sec).__name__}")
        if sec.figure and not (out / sec.figure).is_file():
            raise ValueError(f"figure {sec.figure!r} of section {sec.heading!r} is not in {out}")
    c = _Content(title, findings=list(findings), notes=list(notes), sections=sections)
    return _write(c, out)


def _atomic_text(path: Path, text: str) -> Path:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def report(
    trace: Trace | str | os.PathLike,
    out_dir: str | os.PathLike,
    title: str | None = None,
    max_coords: int = 4,
) -> Path:
    """Write a convergence report for a trace.

    ``out_dir/report.md`` (with the PNGs beside it) and ``out_dir/report.html`` (one file,
    images embedded): the verdict (R-hat, ESS, divergences, acceptance, BFMI, with warnings
    highlighted; a NaN R-hat or ESS, a constant chain or energy are errors), what was
    recorded, the summary table and trace, rank, ESS-evolution, autocorrelation and energy
    plots (:mod:`ebmcmc.diagnostics.plots`: every chain through summaries, at most 16 drawn one
    by one, the caption saying which). Bad input (non-finite draws, one chain) is reported in
    the file, not raised.

    Args:
        trace: a :class:`~ebmcmc.Trace` or the path of a saved one.
        out_dir: directory to write into (created if missing).
        title: the report's heading.
        max_coords: how many coordinates the plots show (the table shows all).

    Returns:
        The path of ``report.html``.

    Example:
        >>> import torch, ebmcmc, tempfile
        >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), ebmcmc.kernels.MALA(0.8),
        ...                    torch.zeros(4, 2), 200, generator=0, progress=False)
        >>> report(tr, tempfile.mkdtemp()).name
        'report.html'
    """
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    content = _content_for_trace(trace, out, title or "Convergence report", max_coords)
    return _write(content, out)
