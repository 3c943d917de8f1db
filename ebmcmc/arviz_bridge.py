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
    "rhat_nested",
    "nested_rhat_numpy",
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
    data_vars: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    coords: dict[str, np.ndarray] = {}
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
    if sample_stats:
        return _az.InferenceData(posterior=post, sample_stats=stats)
    return _az.InferenceData(posterior=post)


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


def _superchain_ids(superchains, n_chain: int) -> np.ndarray:
    """Superchain id per chain from a count (contiguous equal groups) or a sequence of ids."""
    if isinstance(superchains, int | np.integer) and not isinstance(superchains, bool):
        k = int(superchains)
        if k < 2 or n_chain % k:
            raise ValueError(
                f"superchains={k} must be >= 2 and divide the number of chains ({n_chain})"
            )
        return np.repeat(np.arange(k), n_chain // k)
    ids = np.asarray(superchains)
    if ids.shape != (n_chain,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"superchains must be an int or {n_chain} integer ids (one per chain), got "
            f"{superchains!r}"
        )
    _, ids = np.unique(ids, return_inverse=True)
    counts = np.bincount(ids)
    if len(counts) < 2 or counts.min() != counts.max():
        raise ValueError(
            "superchains need at least 2 groups with the same number of chains each, got "
            f"sizes {counts.tolist()}"
        )
    return ids


def _nested_core(ary: np.ndarray, ids: np.ndarray) -> float:
    """nR-hat (Margossian et al. 2024, eqs. 4-8) of one ``(chain, draw)`` array."""
    k = ids.max() + 1
    chain_mean = ary.mean(axis=1)
    chain_var = ary.var(axis=1, ddof=1) if ary.shape[1] > 1 else np.zeros(len(ary))
    groups = [ids == j for j in range(k)]
    super_mean = np.array([chain_mean[g].mean() for g in groups])
    m = int(groups[0].sum())
    b_k = np.zeros(k) if m == 1 else np.array([chain_mean[g].var(ddof=1) for g in groups])
    w_k = np.array([chain_var[g].mean() for g in groups])
    b_nu = super_mean.var(ddof=1)
    w_nu = np.mean(b_k + w_k)
    return float(np.sqrt(1.0 + b_nu / w_nu))


def _z_scale(ary: np.ndarray) -> np.ndarray:
    from scipy import stats

    rank = stats.rankdata(ary, method="average").reshape(ary.shape)
    return stats.norm.ppf((rank - 3 / 8) / (ary.size + 1 / 4))


def nested_rhat_numpy(ary: np.ndarray, superchains, method: str = "rank") -> float:
    """Nested R-hat of one ``(chain, draw)`` array in plain NumPy (what ArviZ 0.x lacks).

    Follows Margossian et al. (2024): chains are grouped into superchains (chains started at
    the same point); ``nR-hat = sqrt(1 + B_nu / W_nu)`` with ``B_nu`` the variance of the
    superchain means and ``W_nu`` the mean over superchains of (variance of its chain means +
    mean within-chain variance). ``method`` as in ``arviz_stats.rhat_nested``: ``"identity"``
    (the raw draws), ``"split"`` (chains halved), ``"z_scale"`` (split, rank-normalised),
    ``"folded"`` (split, folded about the median, rank-normalised) or ``"rank"`` (the larger
    of z_scale and folded). Identical to ArviZ 1.x's ``rhat_nested``.

    Args:
        ary: ``(chain, draw)`` draws of one scalar.
        superchains: the number of superchains (consecutive equal groups of chains) or one
            integer id per chain.
        method: see above.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(8, 200))
        >>> nested_rhat_numpy(x, 4) < 1.01
        True
    """
    ary = np.asarray(ary, dtype=float)
    if ary.ndim != 2:
        raise ValueError(f"ary must have shape (chain, draw), got {ary.shape}")
    if ary.shape[0] < 2 or ary.shape[1] < 4:
        raise ValueError(f"nested R-hat needs >= 2 chains and >= 4 draws, got {ary.shape}")
    ids = _superchain_ids(superchains, ary.shape[0])
    if method == "identity":
        return _nested_core(ary, ids)
    half = ary.shape[1] // 2
    split = np.vstack((ary[:, :half], ary[:, -half:]))
    ids2 = np.hstack((ids, ids))
    if method == "split":
        return _nested_core(split, ids2)
    bulk = _nested_core(_z_scale(split), ids2)
    folded = _nested_core(_z_scale(np.abs(split - np.median(split))), ids2)
    if method == "z_scale":
        return bulk
    if method == "folded":
        return folded
    if method == "rank":
        return max(bulk, folded)
    raise ValueError(
        f"method must be one of 'rank', 'folded', 'z_scale', 'split', 'identity', got {method!r}"
    )


def rhat_nested(data, superchains, method: str = "rank") -> xr.Dataset:
    """Nested R-hat (Margossian et al. 2024) for many short chains grouped into superchains.

    ArviZ 1.x's ``arviz_stats.rhat_nested`` where available, else :func:`nested_rhat_numpy`
    applied per coordinate (ArviZ 0.x has none).

    Args:
        data: as for :func:`rhat`.
        superchains: the number of superchains (consecutive equal groups of chains) or one
            integer id per chain; chains in a superchain should share their start.
        method: ``"rank"`` (default), ``"folded"``, ``"z_scale"``, ``"split"``, ``"identity"``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(8, 200))
        >>> float(rhat_nested(x, 2)["x"]) < 1.01
        True
    """
    ds = _as_dataset(data)
    _check_draws(ds, need_chains=2)
    ids = _superchain_ids(superchains, ds.sizes["chain"])
    if ARVIZ_MAJOR >= 1 and hasattr(_stats, "rhat_nested"):  # pragma: no cover
        return _stats.rhat_nested(
            ds, sample_dims=["chain", "draw"], method=method, superchain_ids=list(ids)
        )
    out = {}
    for name, da in ds.data_vars.items():
        a = da.transpose("chain", "draw", ...).values.astype(float)
        flat = a.reshape(a.shape[0], a.shape[1], -1)
        vals = [nested_rhat_numpy(flat[:, :, i], ids, method) for i in range(flat.shape[2])]
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        out[name] = (dims, np.asarray(vals).reshape(a.shape[2:]))
    coords = {d: ds.coords[d] for d in ds.coords if d not in ("chain", "draw")}
    return xr.Dataset(out, coords=coords)


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
            # mypy checks against ArviZ 0.x (what Python 3.11 installs), which lacks the
            # 1.x-only plots below
            fns = {
                "trace": _az.plot_trace_dist,  # type: ignore[attr-defined]
                "rank": _az.plot_rank,
                "ess_evolution": _az.plot_ess_evolution,  # type: ignore[attr-defined]
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
