"""Per-coordinate summaries of a trace: mean, sd, MCSE, bulk/tail ESS and rank R-hat; per-chain
sample-statistic summaries (BFMI, divergences, acceptance); nested R-hat for many short chains."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .. import arviz_bridge
from ..trace import Trace

__all__ = [
    "summary",
    "COLUMNS",
    "sample_stats_summary",
    "STATS_COLUMNS",
    "nested_rhat",
    "constant_chains",
]

#: the columns of :func:`summary`, in order
COLUMNS = ["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]
#: the columns of :func:`sample_stats_summary`, in order
STATS_COLUMNS = ["bfmi", "divergences", "divergence_rate", "accept_mean"]


def _arrays(trace, var_names) -> dict[str, np.ndarray]:
    if isinstance(trace, Trace):
        arrays = {k: v.detach().cpu().numpy() for k, v in trace.variables.items()}
    elif isinstance(trace, dict):
        arrays = {k: np.asarray(v) for k, v in trace.items()}
    else:
        ds = arviz_bridge.posterior_dataset(trace)
        arrays = {str(k): ds[k].values for k in ds.data_vars}
    if var_names is not None:
        missing = [v for v in var_names if v not in arrays]
        if missing:
            raise KeyError(f"variables {missing} not in the trace (it has {sorted(arrays)})")
        arrays = {k: arrays[k] for k in var_names}
    for k, a in arrays.items():
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise TypeError(f"variable {k!r} is not numeric")
        if not np.isfinite(a.astype(float)).all():
            raise ValueError(f"variable {k!r} has non-finite draws; no summary can be trusted")
    return arrays


def summary(trace, var_names: list[str] | None = None) -> pd.DataFrame:
    """Per-coordinate summary of a trace, computed by ArviZ (0.x or 1.x).

    Args:
        trace: a :class:`~ebmcmc.Trace`, a dict of ``(chain, draw, ...)`` arrays, or an ArviZ
            ``InferenceData``/``DataTree``.
        var_names: which recorded variables to summarise (default: all).

    Returns:
        A ``pandas.DataFrame`` indexed ``name[i,j,...]`` with columns ``mean``, ``sd``,
        ``mcse_mean``, ``ess_bulk``, ``ess_tail`` and ``r_hat`` (rank-normalised split R-hat;
        NaN when the trace has a single chain, for which R-hat is undefined). Where a chain is
        constant in a coordinate (a stuck chain: every draw the same), ``mcse_mean``,
        ``ess_bulk``, ``ess_tail`` and ``r_hat`` are NaN: they are undefined there (ArviZ would
        report the full sample size and a zero error), and reports flag NaN as a failure.

    Raises:
        ValueError: non-finite draws, or fewer than 4 draws per chain.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 400, 2))
        >>> summary({"x": x}).shape
        (2, 6)
        >>> x[1, :, 0] = 0.5                  # chain 1 stuck in x[0]
        >>> bool(summary({"x": x}).loc["x[0]", ["ess_bulk", "r_hat"]].isna().all())
        True
    """
    arrays = _arrays(trace, var_names)
    rows, index = [], []
    one_chain = any(a.shape[0] < 2 for a in arrays.values())
    with np.errstate(invalid="ignore", divide="ignore"):  # constant chains: NaN, set below
        ess_b = arviz_bridge.ess(arrays, "bulk")
        ess_t = arviz_bridge.ess(arrays, "tail")
        se = arviz_bridge.mcse(arrays, "mean")
        rh = None if one_chain else arviz_bridge.rhat(arrays, "rank")
    for name, a in arrays.items():
        a = a.astype(float)
        mean = a.mean(axis=(0, 1))
        sd = a.std(axis=(0, 1), ddof=1)
        stuck = constant_chains(a).any(axis=0)  # per coordinate: some chain never changed
        cols = {
            "mean": mean,
            "sd": sd,
            "mcse_mean": np.asarray(se[name].values),
            "ess_bulk": np.asarray(ess_b[name].values),
            "ess_tail": np.asarray(ess_t[name].values),
            "r_hat": np.full(mean.shape, np.nan) if rh is None else np.asarray(rh[name].values),
        }
        for c in ("mcse_mean", "ess_bulk", "ess_tail", "r_hat"):
            cols[c] = np.where(stuck, np.nan, cols[c].astype(float))
        shape = a.shape[2:]
        for idx in itertools.product(*(range(s) for s in shape)):
            label = f"{name}[{','.join(map(str, idx))}]" if shape else name
            index.append(label)
            rows.append([float(np.asarray(cols[c])[idx]) for c in COLUMNS])
    return pd.DataFrame(rows, index=index, columns=COLUMNS)


def constant_chains(a: np.ndarray) -> np.ndarray:
    """Which chains are constant, per coordinate: ``(chain, draw, *shape) -> (chain, *shape)``
    booleans, True where every draw of that chain equals its first (a stuck chain).

    Example:
        >>> import numpy as np
        >>> a = np.zeros((2, 5, 1)); a[0, 3] = 1.0
        >>> constant_chains(a)[:, 0].tolist()
        [False, True]
    """
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"expected (chain, draw, ...) draws, got shape {a.shape}")
    return (a == a[:, :1]).all(axis=1)


def _stats_arrays(trace) -> dict[str, np.ndarray]:
    if isinstance(trace, Trace):
        return {k: v.detach().cpu().numpy() for k, v in trace.stats.items()}
    if isinstance(trace, dict):
        return {k: np.asarray(v) for k, v in trace.items()}
    raise TypeError(
        f"trace must be a Trace or a dict of (chain, draw) statistics, got {type(trace).__name__}"
    )


def sample_stats_summary(trace) -> pd.DataFrame:
    """Per-chain summary of the sample statistics: BFMI, divergences and acceptance.

    Args:
        trace: a :class:`~ebmcmc.Trace`, or a dict of ``(chain, draw)`` statistics named as a
            trace's (``energy``, ``diverging``, ``accept_prob``).

    Returns:
        A ``DataFrame`` indexed by chain with columns ``bfmi`` (E-BFMI from the ``energy``
        statistic, :func:`ebmcmc.arviz_bridge.bfmi`; NaN when absent, shorter than 4 draws,
        constant or non-finite), ``divergences`` (count), ``divergence_rate`` (per draw) and
        ``accept_mean`` (mean ``accept_prob``). A missing statistic gives a NaN column.

    Example:
        >>> import torch, ebmcmc
        >>> tr = ebmcmc.sample(lambda x: 0.5 * (x**2).sum(-1), ebmcmc.kernels.MALA(0.8),
        ...                    torch.zeros(3, 2), 100, generator=0, progress=False)
        >>> list(sample_stats_summary(tr).columns)
        ['bfmi', 'divergences', 'divergence_rate', 'accept_mean']
    """
    stats = _stats_arrays(trace)
    if not stats:
        raise ValueError("the trace has no sample statistics")
    n_chain, n_draw = next(iter(stats.values())).shape[:2]
    out = pd.DataFrame(np.nan, index=pd.RangeIndex(n_chain, name="chain"), columns=STATS_COLUMNS)
    e = stats.get("energy")
    if e is not None and n_draw >= 4:
        e = e.astype(float)
        ok = np.isfinite(e).all(axis=1) & (e.var(axis=1) > 0)
        if ok.any():
            out.loc[ok, "bfmi"] = arviz_bridge.bfmi(e[ok])
    d = stats.get("diverging")
    if d is not None:
        out["divergences"] = d.astype(bool).sum(axis=1).astype(float)
        out["divergence_rate"] = d.astype(bool).mean(axis=1)
    a = stats.get("accept_prob")
    if a is not None:
        out["accept_mean"] = a.astype(float).mean(axis=1)
    return out


def nested_rhat(trace, superchains, var_names: list[str] | None = None, method: str = "rank"):
    """Nested R-hat (Margossian et al. 2024) per coordinate, for many short chains.

    Chains are grouped into superchains, chains that started at the same point (or from the
    same initial distribution draw); nR-hat compares the superchain means with the variation
    within superchains, so it stays informative when each chain is too short for R-hat.
    Computed by ArviZ 1.x's ``rhat_nested`` or, under ArviZ 0.x, by the bridge's NumPy
    implementation of the same formula (:func:`ebmcmc.arviz_bridge.nested_rhat_numpy`).

    Args:
        trace: as for :func:`summary`.
        superchains: the number of superchains (consecutive equal groups of chains, e.g.
            ``superchains=4`` for chains ``0..M-1`` from start 0, ``M..2M-1`` from start 1, …)
            or one integer id per chain.
        var_names: which variables (default: all).
        method: ``"rank"`` (rank-normalised, the larger of bulk and folded; default),
            ``"folded"``, ``"z_scale"``, ``"split"`` or ``"identity"``.

    Returns:
        A ``pandas.Series`` named ``nested_r_hat`` indexed like :func:`summary`'s rows.
        Values near 1 mean the superchains agree; values well above 1 mean they do not
        (e.g. superchains started in different modes that have not mixed yet).

    Raises:
        ValueError: superchains of unequal size, fewer than 2 of them, non-finite draws, or
            fewer than 4 draws per chain.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(16, 50, 2))
        >>> bool((nested_rhat({"x": x}, superchains=4) < 1.02).all())
        True
    """
    arrays = _arrays(trace, var_names)
    res = arviz_bridge.rhat_nested(arrays, superchains, method)
    index, values = [], []
    for name, a in arrays.items():
        vals = np.asarray(res[name].values, dtype=float).reshape(a.shape[2:])
        shape = a.shape[2:]
        for idx in itertools.product(*(range(s) for s in shape)):
            index.append(f"{name}[{','.join(map(str, idx))}]" if shape else name)
            values.append(float(vals[idx]))
    return pd.Series(values, index=index, name="nested_r_hat")
