"""Traces: what a sampling run recorded, in ArviZ's chain-major layout, plus a resumable state.

A :class:`Trace` holds named variables of shape ``(chain, draw, *shape)``, sample statistics of
shape ``(chain, draw)``, and everything needed to continue the run bit for bit: the final
chain state, the (adapted) kernel and the generator's state. Chains are the batch of the run
flattened to one dimension; ``batch_shape`` remembers the original shape.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._files import atomic_write
from .kernels.base import ChainState, Kernel, State

__all__ = ["Trace"]

_FORMAT = "ebmcmc-trace/1"


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.to(torch.float32)  # bfloat16, float8: NumPy has no such dtype; float32 holds them
    return t.numpy()


class Trace:
    """The result of :func:`ebmcmc.sample`.

    Attributes:
        variables: ``name -> Tensor (chain, draw, *shape)``. The default ``trace_fn`` records
            the positions under ``"x"``.
        stats: ``name -> Tensor (chain, draw)``: ``energy``, ``accept_prob``, ``step_size``,
            ``diverging`` (and whatever else the kernel reports).
        final_state: the chains' last kernel state (original batch shape).
        kernel: the kernel as used for sampling (adapted hyperparameters).
        generator_state: the generator's state after the last step (``torch.uint8`` tensor).
        batch_shape: the batch shape of the run.
        attrs: run metadata (kernel name, warm-up, thinning, what was recorded).

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA
        >>> energy = lambda x: 0.5 * (x**2).sum(-1)
        >>> tr = ebmcmc.sample(energy, MALA(0.5), torch.zeros(4, 2), num_samples=100,
        ...                    generator=torch.Generator().manual_seed(0), progress=False)
        >>> tr.draws.shape, tr.stats["accept_prob"].shape
        (torch.Size([4, 100, 2]), torch.Size([4, 100]))
    """

    def __init__(
        self,
        variables: dict[str, Tensor],
        stats: dict[str, Tensor],
        final_state: ChainState | None = None,
        kernel: Kernel | None = None,
        generator_state: Tensor | None = None,
        batch_shape: tuple[int, ...] | None = None,
        attrs: dict[str, Any] | None = None,
    ):
        if not variables:
            raise ValueError("a Trace needs at least one recorded variable")
        shapes = {tuple(v.shape[:2]) for v in list(variables.values()) + list(stats.values())}
        if len(shapes) != 1:
            raise ValueError(f"variables and stats disagree on (chain, draw): {sorted(shapes)}")
        self.variables = dict(variables)
        self.stats = dict(stats)
        self.final_state = final_state
        self.kernel = kernel
        self.generator_state = generator_state
        (self.num_chains, self.num_draws) = shapes.pop()
        self.batch_shape = tuple(batch_shape) if batch_shape is not None else (self.num_chains,)
        self.attrs = dict(attrs or {})

    # ------------------------------------------------------------------ access
    @property
    def draws(self) -> Tensor:
        """The recorded positions ``(chain, draw, *event)`` (variable ``"x"``)."""
        if "x" not in self.variables:
            raise KeyError(
                f"this trace recorded {sorted(self.variables)} (a custom trace_fn), not 'x'"
            )
        return self.variables["x"]

    def __repr__(self) -> str:
        vs = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.variables.items())
        return f"Trace(chains={self.num_chains}, draws={self.num_draws}, variables=[{vs}])"

    # ------------------------------------------------------------------ arviz
    def to_arviz(self):
        """This trace as an ArviZ object: ``InferenceData`` (ArviZ 0.x) or ``DataTree`` (1.x).

        Groups ``posterior`` (the variables) and ``sample_stats`` (the statistics, plus
        ``lp = -energy``).

        Example:
            >>> import torch, ebmcmc
            >>> from ebmcmc.kernels import MALA
            >>> tr = ebmcmc.sample(lambda x: (x**2).sum(-1), MALA(0.3), torch.zeros(2, 1),
            ...                    num_samples=5, generator=torch.Generator().manual_seed(0),
            ...                    progress=False)
            >>> idata = tr.to_arviz()
        """
        from . import arviz_bridge  # ArviZ loads only when a trace is converted

        posterior = {k: _to_numpy(v) for k, v in self.variables.items()}
        stats = {k: _to_numpy(v) for k, v in self.stats.items()}
        if "energy" in stats:
            stats["lp"] = -stats["energy"]
        return arviz_bridge.to_arviz(posterior, stats, attrs=_plain_attrs(self.attrs))

    # ------------------------------------------------------------------ concatenation
    @classmethod
    def concatenate(cls, traces: list[Trace]) -> Trace:
        """Join consecutive runs of the same chains along the draw axis.

        The result keeps the last trace's final state, kernel and generator state, so it can
        be resumed in turn.

        Example:
            >>> import torch, ebmcmc
            >>> from ebmcmc.kernels import MALA
            >>> e = lambda x: (x**2).sum(-1)
            >>> a = ebmcmc.sample(e, MALA(0.3), torch.zeros(2, 1), 5, progress=False,
            ...                   generator=torch.Generator().manual_seed(0))
            >>> b = ebmcmc.sample(e, a.kernel, a, 5, progress=False)
            >>> Trace.concatenate([a, b]).num_draws
            10
        """
        if not traces:
            raise ValueError("concatenate needs at least one trace")
        names = set(traces[0].variables)
        for t in traces[1:]:
            if set(t.variables) != names or t.num_chains != traces[0].num_chains:
                raise ValueError("traces to concatenate must record the same variables and chains")
        variables = {k: torch.cat([t.variables[k] for t in traces], dim=1) for k in names}
        stat_names = set.intersection(*(set(t.stats) for t in traces))
        stats = {k: torch.cat([t.stats[k] for t in traces], dim=1) for k in stat_names}
        last = traces[-1]
        attrs = dict(last.attrs)
        attrs["num_samples"] = sum(t.num_draws for t in traces)
        return cls(
            variables,
            stats,
            last.final_state,
            last.kernel,
            last.generator_state,
            last.batch_shape,
            attrs,
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace to a NetCDF file (HDF5 through ``h5netcdf``), atomically.

        The file holds the variables, statistics, final state, kernel hyperparameters and the
        generator state; :meth:`load` restores all of them.

        Returns:
            The path written.
        """
        import xarray as xr

        path = Path(path)
        data_vars: dict[str, Any] = {}

        def dims_for(name: str, arr: np.ndarray, lead: tuple[str, ...]) -> tuple[str, ...]:
            rest = tuple(f"{name}_dim_{i}" for i in range(arr.ndim - len(lead)))
            return lead + rest

        for k, v in self.variables.items():
            a = _to_numpy(v)
            data_vars[f"var.{k}"] = (dims_for(f"var.{k}", a, ("chain", "draw")), a)
        for k, v in self.stats.items():
            a = _to_numpy(v)
            data_vars[f"stat.{k}"] = (dims_for(f"stat.{k}", a, ("chain", "draw")), a)
        attrs = {"format": _FORMAT, "batch_shape": list(self.batch_shape)}
        attrs["run_attrs"] = repr(_plain_attrs(self.attrs))
        if self.final_state is not None:
            # every field of the state, nested states included (a ReplicaState's inner
            # state and parity, a LevelState's level), so a resumed run continues bit for bit
            sattrs, sarrays = _to_flat(self.final_state, "state", ChainState)
            attrs.update(sattrs)
            for k, a in sarrays.items():
                data_vars[k] = (dims_for(k, a, ()), a)
        if self.generator_state is not None:
            a = _to_numpy(self.generator_state)
            data_vars["generator_state"] = (("generator_state_dim",), a)
        if self.kernel is not None:
            kattrs, karrays = _to_flat(self.kernel, "kernel", Kernel)
            attrs.update(kattrs)
            for k, a in karrays.items():
                data_vars[k] = (dims_for(k, a, ()), a)
        ds = xr.Dataset(data_vars, attrs=attrs)
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by :meth:`save`.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is not an ebmcmc trace, is corrupt, or holds anything
                :meth:`save` does not write (checked with h5py before anything is read).

        Example:
            >>> import torch, ebmcmc, tempfile, os
            >>> tr = ebmcmc.sample(lambda x: (x**2).sum(-1), ebmcmc.kernels.MALA(0.3),
            ...                    torch.zeros(2, 1), 5, progress=False,
            ...                    generator=torch.Generator().manual_seed(0))
            >>> p = tr.save(os.path.join(tempfile.mkdtemp(), "t.nc"))
            >>> bool(torch.equal(Trace.load(p).draws, tr.draws))
            True
        """
        import xarray as xr

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trace file at {str(path)!r}")
        from ._trace_files import check_file, check_loaded  # h5py inspects it before xarray

        check_file(path, _FORMAT)
        try:
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                ds = ds.load()
        except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
            raise ValueError(f"{str(path)!r} is not a readable NetCDF trace: {err}") from err
        if ds.attrs.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not an ebmcmc trace (format {_FORMAT!r})")

        def t(name: str) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(ds[name].values))

        names = [str(k) for k in ds.data_vars]
        variables = {k[4:]: t(k) for k in names if k.startswith("var.")}
        stats = {k[5:]: t(k) for k in names if k.startswith("stat.")}
        if "diverging" in stats:
            stats["diverging"] = stats["diverging"].bool()
        state = None
        if "state.class" in ds.attrs:
            state = _from_flat(ds, "state", ChainState)
        elif "state.position" in ds:
            state = State(
                t("state.position"),
                t("state.energy"),
                t("state.grad") if "state.grad" in ds else None,
            )
        gen = t("generator_state").to(torch.uint8) if "generator_state" in ds else None
        kernel = None
        if "kernel.class" in ds.attrs:
            if ds.attrs["kernel.class"].startswith("ebmcmc."):
                kernel = _from_flat(ds, "kernel", Kernel)
            else:
                # a user's own kernel class is not imported from a file; sample() takes the
                # kernel as an argument anyway, so the trace stays resumable
                warnings.warn(
                    f"trace was made with kernel {ds.attrs['kernel.class']!r} from outside "
                    "ebmcmc; loaded without it (pass your kernel to sample() to resume)",
                    stacklevel=2,
                )
        import ast

        run_attrs = ast.literal_eval(ds.attrs.get("run_attrs", "{}"))
        batch_shape = tuple(int(b) for b in np.atleast_1d(ds.attrs["batch_shape"]))
        trace = cls(variables, stats, state, kernel, gen, batch_shape, run_attrs)
        return check_loaded(trace, path)


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Keep only attributes NetCDF/ArviZ can store (str, int, float, bool)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, int | float | str):
            out[k] = v
        elif v is not None:
            out[k] = str(v)
    return out


# ---------------------------------------------------------------------- (de)serialization
#
# Kernels and states are dataclasses, possibly subclassed and nested (a wrapper kernel holds
# its inner kernel; a replica state holds the inner state). Both are flattened to NetCDF
# attributes (scalars, flags, the class path) and arrays under dotted keys, and rebuilt only
# from classes inside ebmcmc of the expected base class.


def _to_flat(obj, prefix: str, base: type) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    cls = type(obj)
    attrs: dict[str, Any] = {f"{prefix}.class": f"{cls.__module__}.{cls.__qualname__}"}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}.{f.name}"
        if isinstance(v, base):
            a2, r2 = _to_flat(v, key, base)
            attrs.update(a2)
            arrays.update(r2)
        elif isinstance(v, tuple) and v and all(isinstance(i, base) for i in v):
            attrs[key + ".items"] = len(v)  # e.g. the kernels of a Cycle
            for j, item in enumerate(v):
                a2, r2 = _to_flat(item, f"{key}.{j}", base)
                attrs.update(a2)
                arrays.update(r2)
        elif isinstance(v, Tensor):
            if v.dtype == torch.bool:
                attrs[key + ".is_bool"] = 1
                v = v.to(torch.uint8)
            arrays[key] = _to_numpy(v)
        elif v is None:
            attrs[key + ".none"] = 1
        elif isinstance(v, bool):
            attrs[key + ".bool"] = int(v)
        elif isinstance(v, int | float):
            attrs[key] = v
        elif isinstance(v, tuple | list) and all(isinstance(i, int | float) for i in v):
            attrs[key + ".is_tuple"] = 1
            arrays[key] = np.asarray(v)
        else:
            raise TypeError(
                f"cannot save {base.__name__.lower()} field {f.name!r} of type {type(v).__name__}"
            )
    return attrs, arrays


#: fields renamed since ebmcmc 0.1: new name -> the name a 0.1 trace file stores
_OLD_FIELD_NAMES = {"num_leapfrog_steps": "num_steps"}


def _stored(ds, key: str) -> bool:
    return any(
        k in ds.attrs or k in ds.data_vars
        for k in (key, f"{key}.class", f"{key}.none", f"{key}.bool")
    )


def _from_flat(ds, prefix: str, base: type):
    path = ds.attrs[f"{prefix}.class"]
    what = base.__name__.lower()
    module, _, name = path.rpartition(".")
    if not module.startswith("ebmcmc."):
        raise ValueError(f"refusing to load {what} class {path!r} from outside ebmcmc")
    cls = getattr(importlib.import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{path!r} is not an ebmcmc {what}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        key = f"{prefix}.{f.name}"
        old = _OLD_FIELD_NAMES.get(f.name)
        if old is not None and not _stored(ds, key) and _stored(ds, f"{prefix}.{old}"):
            key = f"{prefix}.{old}"  # a trace written by ebmcmc 0.1
        if f"{key}.class" in ds.attrs:
            kwargs[f.name] = _from_flat(ds, key, base)
        elif f"{key}.items" in ds.attrs:
            n = int(ds.attrs[f"{key}.items"])
            kwargs[f.name] = tuple(_from_flat(ds, f"{key}.{j}", base) for j in range(n))
        elif key in ds.data_vars:
            # np.array keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
            t = torch.from_numpy(np.array(ds[key].values, order="C"))
            if f"{key}.is_tuple" in ds.attrs:
                kwargs[f.name] = tuple(t.tolist())
            else:
                kwargs[f.name] = t.bool() if f"{key}.is_bool" in ds.attrs else t
        elif f"{key}.none" in ds.attrs:
            kwargs[f.name] = None
        elif f"{key}.bool" in ds.attrs:
            kwargs[f.name] = bool(ds.attrs[f"{key}.bool"])
        elif key in ds.attrs:
            v = ds.attrs[key]
            kwargs[f.name] = v.item() if hasattr(v, "item") else v
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"the saved {what} is incomplete ({err})") from err
