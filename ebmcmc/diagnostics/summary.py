"""Per-coordinate summaries of a trace: mean, sd, MCSE, bulk/tail ESS and rank R-hat."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .. import arviz_bridge
from ..trace import Trace

__all__ = ["summary", "COLUMNS"]

#: the columns of :func:`summary`, in order
COLUMNS = ["mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"]


def _arrays(trace, var_names) -> dict[str, np.ndarray]:
    if isinstance(trace, Trace):
        arrays = {k: v.detach().cpu().numpy() for k, v in trace.variables.items()}
    elif isinstance(trace, dict):
        arrays = {k: np.asarray(v) for k, v in trace.items()}
    else:
        ds = arviz_bridge.posterior_dataset(trace)
        arrays = {k: ds[k].values for k in ds.data_vars}
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
        NaN when the trace has a single chain, for which R-hat is undefined).

    Raises:
        ValueError: non-finite draws, or fewer than 4 draws per chain.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 400, 2))
        >>> summary({"x": x}).shape
        (2, 6)
    """
    arrays = _arrays(trace, var_names)
    rows, index = [], []
    one_chain = any(a.shape[0] < 2 for a in arrays.values())
    ess_b = arviz_bridge.ess(arrays, "bulk")
    ess_t = arviz_bridge.ess(arrays, "tail")
    se = arviz_bridge.mcse(arrays, "mean")
    rh = None if one_chain else arviz_bridge.rhat(arrays, "rank")
    for name, a in arrays.items():
        a = a.astype(float)
        mean = a.mean(axis=(0, 1))
        sd = a.std(axis=(0, 1), ddof=1)
        cols = {
            "mean": mean,
            "sd": sd,
            "mcse_mean": np.asarray(se[name].values),
            "ess_bulk": np.asarray(ess_b[name].values),
            "ess_tail": np.asarray(ess_t[name].values),
            "r_hat": np.full(mean.shape, np.nan) if rh is None else np.asarray(rh[name].values),
        }
        shape = a.shape[2:]
        for idx in itertools.product(*(range(s) for s in shape)):
            label = f"{name}[{','.join(map(str, idx))}]" if shape else name
            index.append(label)
            rows.append([float(np.asarray(cols[c])[idx]) for c in COLUMNS])
    return pd.DataFrame(rows, index=index, columns=COLUMNS)
