"""The one module that imports ArviZ: a bridge over ArviZ 0.x (InferenceData) and 1.x (DataTree).

On Python 3.11 pip resolves ArviZ 0.2x, whose containers are ``InferenceData`` and whose
diagnostics live in ``arviz``; on Python >= 3.12 it resolves 1.x, whose containers are xarray
``DataTree`` objects and whose diagnostics live in ``arviz_stats``. Everything else in ebmcmc
talks to ArviZ through the functions here, which take and return plain NumPy arrays or xarray
``Dataset`` objects with ``chain`` and ``draw`` dimensions. This module imports neither torch
nor anything else of ebmcmc, so it can be tested on its own under either ArviZ.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "ARVIZ_VERSION",
    "ARVIZ_MAJOR",
    "dataset",
    "to_arviz",
    "posterior_dataset",
    "ess",
    "rhat",
    "mcse",
    "bfmi",
    "arviz_module",
    "save_plot",
    "PLOT_KINDS",
]

import warnings

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.x refactor on import; that is this module's business.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as _az

ARVIZ_VERSION: str = _az.__version__
#: 0 for the InferenceData generation, 1 for the DataTree generation.
ARVIZ_MAJOR: int = int(ARVIZ_VERSION.split(".")[0])

if ARVIZ_MAJOR >= 1:  # pragma: no cover - exercised on Python >= 3.12
    import arviz_stats as _stats
else:
    _stats = _az


def arviz_module():
    """The imported ``arviz`` module (for plotting helpers that need it).

    Example:
        >>> arviz_module().__name__
        'arviz'
    """
    return _az


def dataset(arrays: dict[str, np.ndarray]) -> xr.Dataset:
    """Arrays of shape ``(chain, draw, *shape)`` as an xarray ``Dataset``.

    Dimensions are named ``chain``, ``draw`` and ``{name}_dim_{i}`` (ArviZ's convention).

    Example:
        >>> import numpy as np
        >>> ds = dataset({"x": np.zeros((2, 10, 3))})
        >>> dict(ds.sizes)
        {'chain': 2, 'draw': 10, 'x_dim_0': 3}
    """
    data_vars, coords = {}, {}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.ndim < 2:
            raise ValueError(f"{name!r} must have shape (chain, draw, ...), got {a.shape}")
        dims = ("chain", "draw") + tuple(f"{name}_dim_{i}" for i in range(a.ndim - 2))
        data_vars[name] = (dims, a)
        # explicit index coordinates: ArviZ 1.x selects along every dimension by label
        for d, n in zip(dims, a.shape, strict=True):
            coords.setdefault(d, np.arange(n))
    return xr.Dataset(data_vars, coords=coords)


def to_arviz(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray] | None = None,
    attrs: dict[str, Any] | None = None,
):
    """Build the ArviZ container for draws and statistics.

    Args:
        posterior: ``name -> (chain, draw, *shape)`` arrays.
        sample_stats: ``name -> (chain, draw)`` arrays.
        attrs: metadata stored on the groups.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

    Example:
        >>> import numpy as np
        >>> obj = to_arviz({"x": np.zeros((2, 5))}, {"energy": np.zeros((2, 5))})
    """
    post = dataset(posterior)
    stats = dataset(sample_stats or {})
    if attrs:
        post.attrs.update(attrs)
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        tree = {"posterior": post}
        if sample_stats:
            tree["sample_stats"] = stats
        return xr.DataTree.from_dict(tree)
    groups = {"posterior": post}
    if sample_stats:
        groups["sample_stats"] = stats
    return _az.InferenceData(**groups)


def posterior_dataset(obj) -> xr.Dataset:
    """The posterior group of an ``InferenceData`` or ``DataTree`` as a ``Dataset``.

    Example:
        >>> import numpy as np
        >>> ds = posterior_dataset(to_arviz({"x": np.zeros((2, 5))}))
        >>> list(ds.data_vars)
        ['x']
    """
    if isinstance(obj, xr.Dataset):
        return obj
    if hasattr(obj, "posterior"):
        post = obj.posterior
        return post.to_dataset() if hasattr(post, "to_dataset") else post
    if hasattr(obj, "children") and "posterior" in obj.children:  # DataTree
        return obj["posterior"].to_dataset()
    raise TypeError(f"no posterior group in {type(obj).__name__}")


def _as_dataset(data) -> xr.Dataset:
    if isinstance(data, xr.Dataset):
        return data
    if isinstance(data, dict):
        return dataset(data)
    return dataset({"x": np.asarray(data)})


def _check_draws(ds: xr.Dataset, need_chains: int = 1) -> None:
    n_chain, n_draw = ds.sizes["chain"], ds.sizes["draw"]
    if n_chain < need_chains:
        raise ValueError(f"this diagnostic needs at least {need_chains} chains, got {n_chain}")
    if n_draw < 4:
        raise ValueError(f"this diagnostic needs at least 4 draws per chain, got {n_draw}")


def ess(data, method: str = "bulk") -> xr.Dataset:
    """Effective sample size (``"bulk"``, ``"tail"``, ``"mean"``, …) as ArviZ computes it.

    Args:
        data: ``Dataset`` with ``chain``/``draw`` dims, a dict of ``(chain, draw, ...)``
            arrays, or one such array.
        method: ArviZ's ESS method.

    Returns:
        A ``Dataset`` without the ``chain``/``draw`` dimensions.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 500))
        >>> float(ess(x)["x"]) > 1000
        True
    """
    ds = _as_dataset(data)
    _check_draws(ds)
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return _stats.ess(ds, sample_dims=["chain", "draw"], method=method)
    return _az.ess(ds, method=method)


def rhat(data, method: str = "rank") -> xr.Dataset:
    """Potential scale reduction; ``"rank"`` is the rank-normalised split R-hat.

    Raises:
        ValueError: with fewer than 2 chains (R-hat compares chains).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 500))
        >>> float(rhat(x)["x"]) < 1.01
        True
    """
    ds = _as_dataset(data)
    _check_draws(ds, need_chains=2)
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return _stats.rhat(ds, sample_dims=["chain", "draw"], method=method)
    return _az.rhat(ds, method=method)


def mcse(data, method: str = "mean") -> xr.Dataset:
    """Monte Carlo standard error of the mean (or ``"sd"``, ``"median"``).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 500))
        >>> 0.01 < float(mcse(x)["x"]) < 0.04
        True
    """
    ds = _as_dataset(data)
    _check_draws(ds)
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        return _stats.mcse(ds, sample_dims=["chain", "draw"], method=method)
    return _az.mcse(ds, method=method)


def bfmi(energy: np.ndarray) -> np.ndarray:
    """Bayesian fraction of missing information per chain from ``(chain, draw)`` energies.

    Computed as ArviZ defines it: ``mean(diff(E)^2) / var(E)`` per chain, with ``E`` the
    Hamiltonian (or, as a proxy, the potential) energy.

    Example:
        >>> import numpy as np
        >>> bfmi(np.random.default_rng(0).normal(size=(2, 1000))).shape
        (2,)
    """
    e = np.asarray(energy, dtype=float)
    if e.ndim != 2:
        raise ValueError(f"energy must have shape (chain, draw), got {e.shape}")
    if ARVIZ_MAJOR >= 1:  # pragma: no cover
        out = _stats.bfmi(dataset({"energy": e}).rename({"energy": "energy"}))
        return np.asarray(out["energy"] if isinstance(out, xr.Dataset) else out).reshape(-1)
    return np.asarray(_az.bfmi(e))


# ---------------------------------------------------------------------- plots

#: the diagnostic plots :func:`save_plot` can draw
PLOT_KINDS = ("trace", "rank", "ess_evolution", "autocorr", "energy")


def save_plot(kind: str, obj, path, var_names: list[str] | None = None) -> None:
    """Draw one ArviZ diagnostic plot of an ArviZ object and save it as a PNG.

    Args:
        kind: one of :data:`PLOT_KINDS`. ``"energy"`` needs ``sample_stats.energy``.
        obj: what :func:`to_arviz` returned.
        path: the PNG to write.
        var_names: the posterior variables to draw (default: all).

    Uses ``arviz.plot_trace``/``plot_rank``/``plot_ess``/``plot_autocorr``/``plot_energy``
    under ArviZ 0.x and ``plot_trace_dist``/``plot_rank``/``plot_ess_evolution``/
    ``plot_autocorr``/``plot_energy`` (matplotlib backend) under 1.x.

    Example:
        >>> import numpy as np, tempfile, os
        >>> obj = to_arviz({"x": np.random.default_rng(0).normal(size=(2, 50))})
        >>> save_plot("trace", obj, os.path.join(tempfile.mkdtemp(), "t.png"))
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if kind not in PLOT_KINDS:
        raise ValueError(f"kind must be one of {PLOT_KINDS}, got {kind!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:  # pragma: no cover - exercised on Python >= 3.12
            fns = {
                "trace": _az.plot_trace_dist,
                "rank": _az.plot_rank,
                "ess_evolution": _az.plot_ess_evolution,
                "autocorr": _az.plot_autocorr,
                "energy": _az.plot_energy,
            }
            kw = {} if kind == "energy" else {"var_names": var_names}
            pc = fns[kind](obj, backend="matplotlib", **kw)
            pc.savefig(str(path))
            plt.close("all")
            return
        if kind == "trace":
            axes = _az.plot_trace(obj, var_names=var_names, compact=True)
        elif kind == "rank":
            axes = _az.plot_rank(obj, var_names=var_names)
        elif kind == "ess_evolution":
            axes = _az.plot_ess(obj, var_names=var_names, kind="evolution")
        elif kind == "autocorr":
            axes = _az.plot_autocorr(obj, var_names=var_names, combined=True)
        else:
            axes = _az.plot_energy(obj)
        fig = np.asarray(axes).ravel()[0].get_figure()
        fig.savefig(str(path), dpi=90, bbox_inches="tight")
        plt.close("all")
