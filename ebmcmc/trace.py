"""Traces: what a sampling run recorded, in ArviZ's chain-major layout, plus a resumable state.

A :class:`Trace` holds named variables of shape ``(chain, draw, *shape)``, sample statistics of
shape ``(chain, draw)``, and everything needed to continue the run bit for bit: the final
chain state, the (adapted) kernel, the generator's state and, for a run interrupted during
warm-up, the warm-up's progress. Chains are the batch of the run flattened to one dimension;
``batch_shape`` remembers the original shape.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._files import atomic_write
from .kernels.base import ChainState, Kernel, State

__all__ = ["Trace", "WarmupProgress", "LazyColumns"]

_FORMAT = "ebmcmc-trace/1"
#: the index of a streamed trace directory (see :mod:`ebmcmc.stream`)
STREAM_FORMAT = "ebmcmc-trace-stream/1"


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.to(torch.float32)  # bfloat16, float8: NumPy has no such dtype; float32 holds them
    return t.numpy()


@dataclasses.dataclass
class WarmupProgress:
    """How far an interrupted warm-up got: what :func:`ebmcmc.sample` needs to finish it bit
    for bit.

    A trace returned by a run interrupted during warm-up has no draws; its ``final_state``,
    ``kernel`` (with the hyperparameters tuned so far) and ``generator_state`` are those after
    ``done`` warm-up steps, and ``warmup`` holds the rest.

    Attributes:
        done: warm-up steps completed.
        total: the run's ``num_warmup`` (the warm-up schedule depends on it).
        moved: ``batch``-shaped bools: the chains that have accepted a proposal so far.
        adapter: the adaptation's running state as ``name -> tensor | number | None | tuple``
            (``None`` when the run had no adaptation).

    Example:
        >>> import torch
        >>> WarmupProgress(10, 100, torch.ones(4, dtype=torch.bool)).done
        10
    """

    done: int
    total: int
    moved: Tensor
    adapter: dict[str, Any] | None = None


class LazyColumns(MutableMapping):
    """Named ``(chain, draw, *shape)`` tensors read on first access.

    A trace loaded from a streamed directory (:mod:`ebmcmc.stream`) holds its variables and
    statistics this way: opening it reads only the index, and a column is read (and kept)
    when it is first used. Shapes are known without reading.

    Example:
        >>> import torch
        >>> cols = LazyColumns({"x": (2, 3)}, lambda name: torch.zeros(2, 3))
        >>> cols.shape("x"), cols.loaded("x"), cols["x"].shape, cols.loaded("x")
        ((2, 3), False, torch.Size([2, 3]), True)
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], read: Callable[[str], Tensor]):
        self._shapes = {k: tuple(v) for k, v in shapes.items()}
        self._read = read
        self._cache: dict[str, Tensor] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        """The full shape of column ``name`` (without reading it)."""
        return self._shapes[name]

    def loaded(self, name: str) -> bool:
        """Whether column ``name`` has been read."""
        return name in self._cache

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._cache:
            if name not in self._shapes:
                raise KeyError(name)
            self._cache[name] = self._read(name)
        return self._cache[name]

    def __setitem__(self, name: str, value: Tensor) -> None:
        self._cache[name] = value
        self._shapes[name] = tuple(value.shape)

    def __delitem__(self, name: str) -> None:
        del self._shapes[name]
        self._cache.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def _shape(columns, name: str) -> tuple[int, ...]:
    if isinstance(columns, LazyColumns):
        return columns.shape(name)
    return tuple(columns[name].shape)


def _columns(mapping) -> dict[str, Tensor] | LazyColumns:
    return mapping if isinstance(mapping, LazyColumns) else dict(mapping)


class Trace:
    """The result of :func:`ebmcmc.sample`.

    Attributes:
        variables: ``name -> Tensor (chain, draw, *shape)``. The default ``trace_fn`` records
            the positions under ``"x"``.
        stats: ``name -> Tensor (chain, draw)``: ``energy``, ``accept_prob``, ``step_size``,
            ``diverging`` (and whatever else the kernel reports). A step size that stayed
            constant is a zero-stride view of one value per chain (no memory per draw).
        final_state: the chains' last kernel state (original batch shape).
        kernel: the kernel as used for sampling (adapted hyperparameters).
        generator_state: the generator's state after the last step (``torch.uint8`` tensor).
        batch_shape: the batch shape of the run.
        attrs: run metadata (kernel name, warm-up, thinning, what was recorded).
        warmup: a :class:`WarmupProgress` when the run was interrupted during warm-up (the
            trace then has no draws), else ``None``.

    A trace loaded from a streamed directory (``sample(..., out=...)``) reads its variables
    and statistics on first access (:class:`LazyColumns`).

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
        variables: dict[str, Tensor] | LazyColumns,
        stats: dict[str, Tensor] | LazyColumns,
        final_state: ChainState | None = None,
        kernel: Kernel | None = None,
        generator_state: Tensor | None = None,
        batch_shape: tuple[int, ...] | None = None,
        attrs: dict[str, Any] | None = None,
        warmup: WarmupProgress | None = None,
    ):
        if not variables:
            # a run interrupted before its first draw: no draws, a resumable state
            if final_state is None or stats:
                raise ValueError("a Trace needs at least one recorded variable")
            shape = batch_shape if batch_shape is not None else final_state.batch_shape
            self.num_chains, self.num_draws = math.prod(shape), 0
        else:
            shapes = {_shape(m, k)[:2] for m in (variables, stats) for k in m}
            if len(shapes) != 1:
                raise ValueError(f"variables and stats disagree on (chain, draw): {sorted(shapes)}")
            (self.num_chains, self.num_draws) = shapes.pop()
        self.variables = _columns(variables)
        self.stats = _columns(stats)
        self.final_state = final_state
        self.kernel = kernel
        self.generator_state = generator_state
        self.batch_shape = tuple(batch_shape) if batch_shape is not None else (self.num_chains,)
        self.attrs = dict(attrs or {})
        self.warmup = warmup
        #: the trace directory this trace was read from (``None``: made in memory or read
        #: from a single file), and how many chunks it had then
        self.source: Path | None = None
        self.source_chunks = 0

    # ------------------------------------------------------------------ access
    @property
    def draws(self) -> Tensor:
        """The recorded positions ``(chain, draw, *event)`` (variable ``"x"``)."""
        if "x" not in self.variables:
            if self.num_draws == 0:
                raise KeyError("this trace holds no draws (its run stopped before the first)")
            raise KeyError(
                f"this trace recorded {sorted(self.variables)} (a custom trace_fn), not 'x'"
            )
        return self.variables["x"]

    def __repr__(self) -> str:
        vs = ", ".join(f"{k}{_shape(self.variables, k)}" for k in self.variables)
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

        if self.num_draws == 0:
            raise ValueError("this trace has no draws to convert")
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
        be resumed in turn. Traces without draws (a run interrupted during warm-up) add none.

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
        last = traces[-1]
        parts = [t for t in traces if t.num_draws]
        if any(t.num_chains != last.num_chains for t in traces):
            raise ValueError("traces to concatenate must record the same variables and chains")
        if not parts:
            return last
        names = set(parts[0].variables)
        for t in parts[1:]:
            if set(t.variables) != names:
                raise ValueError("traces to concatenate must record the same variables and chains")
        variables = {k: torch.cat([t.variables[k] for t in parts], dim=1) for k in names}
        stat_names = set.intersection(*(set(t.stats) for t in parts))
        stats = {k: torch.cat([t.stats[k] for t in parts], dim=1) for k in stat_names}
        attrs = dict(last.attrs)
        attrs["num_samples"] = sum(t.num_draws for t in parts)
        return cls(variables, stats, last.final_state, last.kernel, last.generator_state,
                   last.batch_shape, attrs, last.warmup)  # fmt: skip

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the trace to a NetCDF file (HDF5 through ``h5netcdf``), atomically.

        The file holds the variables, statistics, final state, kernel hyperparameters, the
        generator state and, for a run interrupted during warm-up, the warm-up's progress;
        :meth:`load` restores all of them. A statistic that stayed constant over the draws
        (the step size after warm-up) is stored once per chain.

        Returns:
            The path written.
        """
        import xarray as xr

        path = Path(path)
        data_vars: dict[str, Any] = {}
        for k, v in self.variables.items():
            a = _to_numpy(v)
            data_vars[f"var.{k}"] = (_dims(f"var.{k}", a, ("chain", "draw")), a)
        for k, v in self.stats.items():
            if _constant_over_draws(v):
                data_vars[f"const.{k}"] = (("chain",), _to_numpy(v[:, 0]))
                continue
            a = _to_numpy(v)
            data_vars[f"stat.{k}"] = (_dims(f"stat.{k}", a, ("chain", "draw")), a)
        attrs, header = _header(self)
        attrs["format"] = _FORMAT
        data_vars.update(header)
        ds = xr.Dataset(data_vars, attrs=attrs)
        atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trace:
        """Read a trace written by :meth:`save`, or a streamed trace directory written by
        ``sample(..., out=...)`` (read lazily: see :mod:`ebmcmc.stream`).

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
        if path.is_dir():
            from .stream import load_stream  # a streamed trace: an index and chunk files

            return load_stream(path)
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
        num_draws = next(iter(variables.values())).shape[1] if variables else 0
        for k in names:
            if k.startswith("const.") and variables:  # one value per chain, every draw
                stats[k[6:]] = t(k)[:, None].expand(-1, num_draws)
        if "diverging" in stats:
            stats["diverging"] = stats["diverging"].bool()
        head = _read_header(ds)
        trace = cls(variables, stats, head["state"], head["kernel"], head["generator_state"],
                    head["batch_shape"], head["attrs"], head["warmup"])  # fmt: skip
        return check_loaded(trace, path)


def _dims(name: str, arr: np.ndarray, lead: tuple[str, ...]) -> tuple[str, ...]:
    return lead + tuple(f"{name}_dim_{i}" for i in range(arr.ndim - len(lead)))


def _constant_over_draws(v: Tensor) -> bool:
    """A ``(chain, draw)`` statistic stored as one value per chain (a zero-stride view)."""
    return v.ndim == 2 and v.shape[1] > 1 and v.stride(1) == 0


def _header(trace: Trace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The attributes and arrays of a trace file other than its draws: batch shape, run
    attributes, final state, kernel, generator state and warm-up progress."""
    data_vars: dict[str, Any] = {}
    attrs: dict[str, Any] = {"batch_shape": list(trace.batch_shape)}
    # repr() of a dict that ast.literal_eval reads back; nan and inf (R-hat of a short run)
    # are not literals, so they are written as ("float", "nan")
    plain = {k: ("float", repr(v)) if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in _plain_attrs(trace.attrs).items()}  # fmt: skip
    attrs["run_attrs"] = repr(plain)

    def put(flat: tuple[dict[str, Any], dict[str, np.ndarray]]) -> None:
        attrs.update(flat[0])
        for k, a in flat[1].items():
            data_vars[k] = (_dims(k, a, ()), a)

    if trace.final_state is not None:
        # every field of the state, nested states included (a ReplicaState's inner
        # state and parity, a LevelState's level), so a resumed run continues bit for bit
        put(_to_flat(trace.final_state, "state", ChainState))
    if trace.generator_state is not None:
        a = _to_numpy(trace.generator_state)
        data_vars["generator_state"] = (("generator_state_dim",), a)
    if trace.kernel is not None:
        put(_to_flat(trace.kernel, "kernel", Kernel))
    w = trace.warmup
    if w is not None:
        attrs["warmup.done"], attrs["warmup.total"] = int(w.done), int(w.total)
        moved = _to_numpy(w.moved.to(torch.uint8))
        data_vars["warmup.moved"] = (_dims("warmup.moved", moved, ()), moved)
        if w.adapter is not None:
            put(_encode_values(w.adapter, "warmup.adapter"))
    return attrs, data_vars


def _read_header(ds) -> dict[str, Any]:
    """What :func:`_header` wrote, as objects (the inverse)."""

    def t(name: str) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(ds[name].values))

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
                stacklevel=3,
            )
    warmup = None
    if "warmup.done" in ds.attrs:
        adapter = _decode_values(ds, "warmup.adapter") if "warmup.adapter" in ds.attrs else None
        warmup = WarmupProgress(int(ds.attrs["warmup.done"]), int(ds.attrs["warmup.total"]),
                                t("warmup.moved").bool(), adapter)  # fmt: skip
    run_attrs = {k: float(v[1]) if isinstance(v, tuple) else v
                 for k, v in ast.literal_eval(ds.attrs.get("run_attrs", "{}")).items()}  # fmt: skip
    batch_shape = tuple(int(b) for b in np.atleast_1d(ds.attrs["batch_shape"]))
    return {"state": state, "kernel": kernel, "generator_state": gen, "warmup": warmup,
            "attrs": run_attrs, "batch_shape": batch_shape}  # fmt: skip


def _encode_values(values: dict[str, Any], prefix: str):
    """``name -> tensor | int | float | bool | str | None | tuple`` as NetCDF attributes and
    arrays: tensors become arrays ``prefix.name``, the rest one attribute ``prefix`` (floats
    in hexadecimal, so they come back exactly)."""
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for k, v in values.items():
        if isinstance(v, Tensor):
            meta[k] = ("tensor", str(v.dtype).removeprefix("torch."))
            arrays[f"{prefix}.{k}"] = _to_numpy(v.to(torch.uint8) if v.dtype == torch.bool else v)
        elif isinstance(v, float):
            meta[k] = ("float", float.hex(v))
        elif v is None or isinstance(v, bool | int | str | tuple):
            meta[k] = ("value", v)
        else:
            raise TypeError(f"cannot save {prefix} value {k!r} of type {type(v).__name__}")
    return {prefix: repr(meta)}, arrays


def _decode_values(ds, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, (kind, v) in ast.literal_eval(ds.attrs[prefix]).items():
        if kind == "tensor":
            a = torch.from_numpy(np.array(ds[f"{prefix}.{k}"].values, order="C"))
            out[k] = a.to(getattr(torch, v))
        elif kind == "float":
            out[k] = float.fromhex(v)
        else:
            out[k] = v
    return out


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
#: fields added since files were first written (class name, field name): a file without one
#: was written before it existed, and the field's default reproduces what that file meant
_ADDED_FIELDS = {("MALA", "dense_mass")}


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
