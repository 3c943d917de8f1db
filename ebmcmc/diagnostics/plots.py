"""Diagnostic plots that stay readable and cheap from 2 chains to thousands.

ArviZ's plots draw every chain (a line, a density, a rank histogram and a legend entry each),
which for 1,024 chains takes minutes and gives pictures nobody can read. These plots show
*every* chain only through summaries (a pooled density, a band across chains, histograms over
chains) and draw individual chains for at most :data:`MAX_SHOWN` of them, chosen by
:func:`shown_chains`: all of them when there are few, else evenly spaced chains plus the chains
whose draws look least like the others' (the least uniform rank histograms, which is where a
stuck or lost chain shows). Each plot says which chains it draws.

All functions take plain NumPy arrays ``(chain, draw)`` and write a PNG.
"""

from __future__ import annotations

import numpy as np

from .. import arviz_bridge

__all__ = [
    "MAX_SHOWN",
    "shown_chains",
    "rank_chi2",
    "plot_trace",
    "plot_rank",
    "plot_ess_evolution",
    "plot_autocorr",
    "plot_energy",
]

#: the most chains a plot draws one by one
MAX_SHOWN = 16
_DPI = 80
_BAND = (5, 95)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks in ``[0, 1)`` of every draw among all chains' draws (ties broken by order)."""
    flat = a.reshape(-1)
    r = np.empty(flat.size)
    r[np.argsort(flat, kind="stable")] = np.arange(flat.size) / flat.size
    return r.reshape(a.shape)


def _bins(num_draws: int) -> int:
    return int(np.clip(num_draws // 10, 2, 20))


def rank_chi2(a: np.ndarray) -> np.ndarray:
    """How far each chain's rank histogram is from uniform: the chi-square statistic of its
    draws' ranks among all draws, binned, ``(chain, draw) -> (chain,)``.

    Near ``bins - 1`` (times the autocorrelation's inflation) for chains that agree; large for
    a chain that sits apart or never moves.

    Example:
        >>> import numpy as np
        >>> a = np.random.default_rng(0).normal(size=(4, 400))
        >>> a[3] += 3.0
        >>> int(np.argmax(rank_chi2(a)))
        3
    """
    a = np.asarray(a, dtype=float)
    counts = _rank_counts(_ranks(a), _bins(a.shape[1]))
    expected = a.shape[1] / counts.shape[1]
    return ((counts - expected) ** 2 / expected).sum(axis=1)


def _rank_counts(ranks: np.ndarray, bins: int) -> np.ndarray:
    """``(chain, draw)`` ranks in ``[0, 1)`` -> ``(chain, bins)`` histogram counts."""
    which = np.minimum((ranks * bins).astype(int), bins - 1)
    offset = which + bins * np.arange(which.shape[0])[:, None]
    return np.bincount(offset.reshape(-1), minlength=bins * which.shape[0]).reshape(-1, bins)


def _listed(ids, most: int = 16) -> str:
    ids = [str(int(i)) for i in ids]
    return ", ".join(ids[:most]) + (" …" if len(ids) > most else "")


def shown_chains(arrays: dict[str, np.ndarray], most: int = MAX_SHOWN) -> tuple[np.ndarray, str]:
    """Which chains to draw one by one, and a sentence saying which.

    Every chain when there are at most ``most``; otherwise ``most // 2`` evenly spaced chains
    and the chains with the least uniform rank histograms (:func:`rank_chi2`, worst over the
    coordinates), ``most`` in all.

    Args:
        arrays: ``name -> (chain, draw)`` arrays (one per plotted coordinate).
        most: the most chains to pick.

    Returns:
        ``(chain indices, description)``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(100, 50))
        >>> x[42] = 0.0   # a stuck chain
        >>> idx, text = shown_chains({"x": x}, most=6)
        >>> 42 in idx, len(idx)
        (True, 6)
    """
    n = next(iter(arrays.values())).shape[0]
    if n <= most:
        return np.arange(n), f"all {n} chains"
    spaced = np.unique(np.linspace(0, n - 1, most // 2).round().astype(int))
    score = np.max([rank_chi2(a) for a in arrays.values()], axis=0)
    worst = [int(i) for i in np.argsort(-score, kind="stable") if i not in set(spaced)]
    worst = worst[: most - len(spaced)]
    idx = np.array(sorted(set(spaced.tolist()) | set(worst)))
    text = (
        f"{len(idx)} of {n} chains: {_listed(spaced)} (evenly spaced) and "
        f"{_listed(worst)} (the least uniform rank histograms)"
    )
    return idx, text


def _colors(k: int):
    plt = _plt()
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(k)]


def _save(fig, path) -> None:
    plt = _plt()
    fig.savefig(str(path), dpi=_DPI)
    plt.close(fig)


def _thin(n: int, most: int = 1500) -> np.ndarray:
    """Draw indices to plot a line of ``n`` points with at most ``most`` of them."""
    return np.arange(0, n, max(1, int(np.ceil(n / most))))


def plot_trace(arrays: dict[str, np.ndarray], shown: np.ndarray, path) -> None:
    """Per coordinate: the pooled density of all chains with the shown chains' densities, and
    the shown chains' traces (with more chains than shown, the 5 and 95 % quantiles over all
    chains at each draw).

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).normal(size=(3, 100))
        >>> plot_trace({"x": x}, np.arange(3), os.path.join(tempfile.mkdtemp(), "t.png"))
    """
    plt = _plt()
    k = len(arrays)
    grid = {"width_ratios": [1, 2.4]}
    fig, axes = plt.subplots(k, 2, figsize=(10, 2.1 * k + 0.4), squeeze=False,
                             gridspec_kw=grid, layout="constrained")  # fmt: skip
    colors = _colors(len(shown))
    for row, (name, a) in zip(axes, arrays.items(), strict=True):
        lo, hi = np.percentile(a, [0.5, 99.5])
        edges = np.linspace(lo, hi + 1e-12 * max(1.0, abs(hi)), 41)
        row[0].hist(a.reshape(-1), bins=edges, density=True, color="0.8",
                    label=f"all {a.shape[0]} chains")  # fmt: skip
        for c, col in zip(shown, colors, strict=True):
            dens, _ = np.histogram(a[c], bins=edges, density=True)
            row[0].stairs(dens, edges, color=col, lw=0.8, alpha=0.8)
        row[0].set_title(name, fontsize=9, loc="left")
        t = _thin(a.shape[1])
        many = a.shape[0] > len(shown)
        for c, col in zip(shown, colors, strict=True):
            row[1].plot(t, a[c, t], color=col, lw=0.4 if many else 0.6, alpha=0.6 if many else 0.8)
        if many:  # every chain, through the band that holds 90 % of them at each draw
            q = np.percentile(a[:, t], _BAND, axis=0)
            row[1].plot(t, q[0], color="k", lw=0.8, label="5 and 95 % of all chains")
            row[1].plot(t, q[1], color="k", lw=0.8)
        row[1].set_xlim(0, a.shape[1] - 1)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if axes[0, 1].get_legend_handles_labels()[0]:
        axes[0, 1].legend(fontsize=7, loc="upper right")
    axes[-1, 1].set_xlabel("draw")
    _save(fig, path)


def plot_rank(arrays: dict[str, np.ndarray], shown: np.ndarray, path) -> None:
    """Per coordinate: the rank histograms of the shown chains as one heat map (a row per
    chain, 1 = uniform) and, with more chains than shown, the distribution over all chains of
    how far each one's ranks are from uniform.

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).normal(size=(3, 100))
        >>> plot_rank({"x": x}, np.arange(3), os.path.join(tempfile.mkdtemp(), "r.png"))
    """
    plt = _plt()
    k = len(arrays)
    many = next(iter(arrays.values())).shape[0] > len(shown)
    ncol = 2 if many else 1
    h = max(1.6, 0.16 * len(shown) + 0.8)
    fig, axes = plt.subplots(k, ncol, figsize=(10 if many else 7, h * k + 0.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    image = None
    for row, (name, a) in zip(axes, arrays.items(), strict=True):
        bins = _bins(a.shape[1])
        counts = _rank_counts(_ranks(a), bins)  # ranks among all chains' draws
        rel = counts[shown] / (a.shape[1] / bins)
        image = row[0].imshow(rel, aspect="auto", cmap="RdBu_r", vmin=0, vmax=2,
                              interpolation="nearest", extent=(0, 1, len(shown), 0))  # fmt: skip
        row[0].set_yticks(np.arange(len(shown)) + 0.5, [str(int(c)) for c in shown], fontsize=6)
        row[0].set_ylabel("chain", fontsize=8)
        row[0].set_title(f"{name}: rank histograms (1 = uniform)", fontsize=9, loc="left")
        if many:
            expected = a.shape[1] / bins
            chi2 = ((counts - expected) ** 2 / expected).sum(axis=1)
            row[1].hist(np.log10(chi2 + 1e-3), bins=40, color="0.6")
            row[1].axvline(np.log10(bins - 1), color="k", lw=0.8, ls="--",
                           label=f"{bins - 1}: uniform, independent draws")  # fmt: skip
            row[1].set_title(f"all {a.shape[0]} chains: log10 rank chi-square", fontsize=9,
                             loc="left")  # fmt: skip
            row[1].legend(fontsize=7)
    axes[-1, 0].set_xlabel("rank among all draws")
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="count / expected",
                     location="left" if many else "right")  # fmt: skip
    _save(fig, path)


def plot_ess_evolution(arrays: dict[str, np.ndarray], path, min_ess: float = 400) -> None:
    """Bulk and tail ESS over all chains as draws accumulate (it should grow linearly).

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).normal(size=(3, 100))
        >>> plot_ess_evolution({"x": x}, os.path.join(tempfile.mkdtemp(), "e.png"))
    """
    plt = _plt()
    n_chain, n_draw = next(iter(arrays.values())).shape
    points = 8 if n_chain * n_draw <= 200_000 else 5
    ns = np.unique(np.linspace(max(4, n_draw // points), n_draw, points).astype(int))
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    colors = _colors(len(arrays))
    with np.errstate(invalid="ignore", divide="ignore"):
        for (name, a), col in zip(arrays.items(), colors, strict=True):
            for method, ls in (("bulk", "-"), ("tail", "--")):
                ess = [float(arviz_bridge.ess({"v": a[:, :n]}, method)["v"]) for n in ns]
                ax.plot(ns, ess, ls, color=col, marker="o", ms=3, label=f"{name} {method}")
    ax.axhline(min_ess, color="k", lw=0.8, ls=":", label=f"{min_ess:g}")
    ax.set_xlabel("draws per chain")
    ax.set_ylabel(f"ESS (all {n_chain} chains)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _acf(a: np.ndarray, lags: int) -> np.ndarray:
    """Autocorrelation per chain up to ``lags`` (FFT), ``(chain, draw) -> (chain, lags + 1)``."""
    x = a - a.mean(axis=1, keepdims=True)
    n = x.shape[1]
    f = np.fft.rfft(x, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, : lags + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov / acov[:, :1]


def plot_autocorr(arrays: dict[str, np.ndarray], path) -> None:
    """Per coordinate: the mean autocorrelation over all chains and the band holding 90 % of
    the chains at each lag (constant chains left out).

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).normal(size=(3, 100))
        >>> plot_autocorr({"x": x}, os.path.join(tempfile.mkdtemp(), "a.png"))
    """
    plt = _plt()
    k = len(arrays)
    fig, axes = plt.subplots(1, k, figsize=(min(3.2 * k, 12), 2.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (name, a) in zip(axes[0], arrays.items(), strict=True):
        lags = int(min(100, a.shape[1] // 2))
        r = _acf(a, lags)
        r = r[np.isfinite(r).all(axis=1)]
        lag = np.arange(lags + 1)
        if len(r):
            q = np.percentile(r, _BAND, axis=0)
            ax.fill_between(lag, q[0], q[1], color="0.85", lw=0, label="5–95 % of chains")
            ax.plot(lag, r.mean(axis=0), color="C0", lw=1.2, label="mean")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlabel("lag")
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def plot_energy(energy: np.ndarray, path, bfmi_min: float = 0.3) -> None:
    """The energy's marginal distribution (centred per chain) against its transitions, pooled
    over all chains, and the E-BFMI of every chain.

    Example:
        >>> import numpy as np, tempfile, os
        >>> e = np.random.default_rng(0).normal(size=(3, 100))
        >>> plot_energy(e, os.path.join(tempfile.mkdtemp(), "e.png"))
    """
    plt = _plt()
    e = np.asarray(energy, dtype=float)
    moving = e.var(axis=1) > 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 3), squeeze=False, layout="constrained")
    ax = axes[0, 0]
    centred = (e - e.mean(axis=1, keepdims=True))[moving].reshape(-1)
    steps = np.diff(e[moving], axis=1).reshape(-1)
    if centred.size:
        lo, hi = np.percentile(np.concatenate([centred, steps]), [0.5, 99.5])
        edges = np.linspace(lo, hi + 1e-12, 51)
        ax.hist(centred, bins=edges, density=True, alpha=0.6, label="marginal (E − chain mean)")
        ax.hist(steps, bins=edges, density=True, alpha=0.6, label="transition (ΔE)")
        ax.legend(fontsize=7)
    ax.set_title(f"energy, {int(moving.sum())} of {e.shape[0]} chains (constant ones left out)",
                 fontsize=9, loc="left")  # fmt: skip
    ax = axes[0, 1]
    if moving.any():
        bfmi = arviz_bridge.bfmi(e[moving])
        ax.hist(bfmi, bins=min(40, max(5, len(bfmi) // 4)), color="0.6")
        ax.axvline(bfmi_min, color="C3", lw=1, ls="--", label=f"{bfmi_min}: flagged below")
        ax.set_title(f"E-BFMI per chain: min {bfmi.min():.2f}, median {np.median(bfmi):.2f}",
                     fontsize=9, loc="left")  # fmt: skip
        ax.legend(fontsize=7)
    _save(fig, path)
