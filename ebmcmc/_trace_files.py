"""What a trace file may hold, checked before and after :meth:`ebmcmc.Trace.load` reads it.

A trace file is NetCDF-4, that is HDF5, and HDF5 can do much more than a trace needs: a
dataset's bytes may live in another file (external storage) or be stitched from other files
(virtual datasets), a name may be a soft or external link, a filter may load a plugin, and
attributes may tell xarray to decode values. A trace written by :meth:`~ebmcmc.Trace.save`
uses none of this, so :func:`check_file` inspects the file with ``h5py`` *before* xarray opens
it and accepts only what ``save`` writes:

* hard links only, no groups, no named types (but the one h5netcdf names for complex
  numbers); no external storage, no virtual datasets, no
  filters but the standard lossless ones (deflate, shuffle, Fletcher-32);
* datasets named ``var.*``, ``stat.*`` (``(chain, draw, …)``), ``const.*`` (``(chain,)``: a
  statistic constant over the draws), ``state.*``, ``kernel.*``, ``generator_state``,
  ``warmup.*`` (an interrupted warm-up's progress) and their NetCDF dimensions, with plain
  numeric dtypes in the machine's byte order, the dimensions ``save`` gives them, and data
  actually stored in the file;
* the attributes ``save`` writes: ``format``, ``batch_shape``, ``run_attrs`` (a Python literal
  of a flat dict), the flattened kernel and state (``kernel.class``, ``kernel.step_size``,
  …), every one of the class's fields and nothing else, each class inside ebmcmc and of the
  expected base class, and for a run stopped during warm-up ``warmup.done``,
  ``warmup.total`` and ``warmup.adapter`` (a Python literal naming each value's kind).

After the trace is built, :func:`check_loaded` checks what only the built objects show: the
batch shape against the chains and the final state, and a finite final state. Every refusal
is a ``ValueError`` that names the file and what is wrong.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .kernels.base import ChainState, Kernel

__all__ = ["check_file", "check_loaded", "MAX_ATTR_BYTES"]

#: the largest attribute accepted (``run_attrs`` is the only long one)
MAX_ATTR_BYTES = 1 << 20
#: how deeply kernels and states may nest (a Cycle of Masked of MALA is depth 3)
_MAX_DEPTH = 16
#: a composite's kernels (``kernel.kernels.items``)
_MAX_ITEMS = 1024

# HDF5 filters that decode in-library (no plugin is loaded): deflate, shuffle, Fletcher-32
_SAFE_FILTERS = {1, 2, 3}
_DATA_ATTRS = {"DIMENSION_LIST", "_Netcdf4Coordinates", "_Netcdf4Dimid", "_FillValue", "dtype"}
_SCALE_ATTRS = {"CLASS", "NAME", "REFERENCE_LIST", "_Netcdf4Dimid"}
_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"
_ROOT_ATTRS = {"format", "batch_shape", "run_attrs", "_NCProperties"}
_WARMUP_ATTRS = {"warmup.done", "warmup.total", "warmup.adapter"}
_NON_FINITE = {"nan", "inf", "-inf"}
_FLAGS = ("none", "bool", "is_bool", "is_tuple")
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_NAME = re.compile(r"[^\x00-\x1f\x7f/]+")
_COMPLEX_TYPE = re.compile(r"_PFNC_[A-Z_]*COMPLEX[A-Z_]*")


class _Refused(ValueError):
    pass


def _refuse(path: Path, why: str) -> _Refused:
    return _Refused(f"{str(path)!r} is not a valid ebmcmc trace: {why}")


# ---------------------------------------------------------------------------- the HDF5 layer


def check_file(
    path: str | Path, fmt: str | None, kind: str = "trace", table: dict | None = None
) -> dict[str, Any]:
    """Inspect a trace file with ``h5py`` before anything reads its data.

    Args:
        path: the file (it exists).
        fmt: the format string written in the file (``"ebmcmc-trace/1"`` for
            ``Trace.save``); ``None`` for a chunk file, which has none.
        kind: ``"trace"`` (a file of ``Trace.save``), ``"index"`` (a streamed directory's
            ``index.nc``: the trace without its draws, and the ``stream`` table) or
            ``"chunk"`` (one of its ``draws-*.nc`` files).
        table: for a chunk, what the index says it holds: ``chains``, ``draws`` (its number
            of draws), ``variables`` and ``stats`` (``name -> (shape, dtype name)``).

    Returns:
        The file's root attributes (checked), for :func:`check_loaded`.

    Raises:
        ValueError: the file is not HDF5, not an ebmcmc trace, or holds anything a trace does
            not (the message says what).

    Example:
        >>> import torch, ebmcmc, tempfile, os
        >>> tr = ebmcmc.sample(lambda x: (x**2).sum(-1), ebmcmc.kernels.MALA(0.3),
        ...                    torch.zeros(2, 1), 5, progress=False, generator=0)
        >>> p = tr.save(os.path.join(tempfile.mkdtemp(), "t.nc"))
        >>> check_file(p, "ebmcmc-trace/1")["kernel.class"]
        'ebmcmc.kernels.langevin.MALA'
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        raise ValueError(f"{str(path)!r} is not a readable NetCDF trace: {err}") from err
    with f:
        try:
            return _check_open_file(f, path, fmt, kind, table)
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed HDF5 structure
            raise _refuse(path, f"unreadable HDF5 structure ({type(err).__name__}: {err})") from err


def _attr(obj, name: str, path: Path, where: str):
    """One attribute's value, its size checked before it is read."""
    import h5py

    aid = h5py.h5a.open(obj.id, name.encode())
    dt = aid.dtype
    if h5py.check_vlen_dtype(dt) is not None or dt.kind == "O":
        # variable-length data: its size is known only after reading, so bound the storage
        size = aid.get_storage_size()
        if size > MAX_ATTR_BYTES // 4:
            raise _refuse(path, f"attribute {name!r} of {where} is too large")
    elif int(np.prod(aid.shape, dtype=np.int64)) * dt.itemsize > MAX_ATTR_BYTES:
        raise _refuse(path, f"attribute {name!r} of {where} is too large")
    return obj.attrs[name]


def _text(value) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _scalar(value) -> float | int | None:
    """A number stored as a scalar or a one-element array (NetCDF's attribute convention)."""
    a = np.asarray(value)
    if a.size != 1 or a.dtype.kind not in "iuf" or a.ndim > 1:
        return None
    v = a.reshape(()).item()
    return v if isinstance(v, int | float) else None


def _check_open_file(f, path: Path, fmt: str | None, kind: str, table) -> dict[str, Any]:
    import h5py

    attrs: dict[str, Any] = {}
    for name in f.attrs:
        attrs[name] = _attr(f, name, path, "the file")
    if kind == "chunk":
        if set(attrs) - {"_NCProperties"}:
            raise _refuse(path, f"unexpected attributes {sorted(attrs)} in a chunk file")
    elif _text(attrs.get("format")) != fmt:
        raise ValueError(f"{str(path)!r} is not an ebmcmc trace (format {fmt!r})")
    # ---- every name in the file: hard links to datasets only
    datasets: dict[str, Any] = {}
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            links = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link"}
            what = links.get(type(link), "a link")
            raise _refuse(path, f"{name!r} is {what}; a trace holds no links")
        obj = f[name]
        if (
            isinstance(obj, h5py.Datatype)
            and _COMPLEX_TYPE.fullmatch(name)
            and (obj.dtype.kind == "c")
        ):
            continue  # how h5netcdf names the type of complex variables
        if not isinstance(obj, h5py.Dataset):
            raise _refuse(path, f"{name!r} is a {type(obj).__name__.lower()}; a trace holds only "
                                "datasets")  # fmt: skip
        _check_storage(obj, name, path)
        datasets[name] = obj
    scales = {n for n, d in datasets.items() if "CLASS" in d.attrs}
    data = {n: d for n, d in datasets.items() if n not in scales}
    for name, d in data.items():
        _check_data(name, d, path, scales, datasets)
    used = set()
    for name, d in data.items():
        used.update(_dims(d, path, name, scales))
    for name in scales:
        _check_scale(name, datasets[name], path, used)
    from ._stream_files import check_chunk

    columns = {n for n in data if n.split(".")[0] in ("var", "stat", "const")}
    if kind == "chunk":
        check_chunk(data, path, table or {})
    elif kind == "index" and columns:
        raise _refuse(path, f"a trace index holds no draws, found {sorted(columns)[0]!r}")
    else:
        _check_root_attrs(attrs, path, data, kind)
    return attrs


def _check_storage(d, name: str, path: Path) -> None:
    import h5py

    if d.is_virtual:
        raise _refuse(path, f"dataset {name!r} is a virtual dataset (its data live elsewhere)")
    if d.external:
        raise _refuse(path, f"dataset {name!r} stores its data in an external file")
    plist = d.id.get_create_plist()
    if plist.get_layout() not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
        raise _refuse(path, f"dataset {name!r} has an unsupported storage layout")
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _SAFE_FILTERS:
            raise _refuse(path, f"dataset {name!r} uses HDF5 filter {code}, which a trace does "
                                "not use")  # fmt: skip


def _check_data(name: str, d, path: Path, scales: set[str], datasets: dict) -> None:
    kind, _, rest = name.partition(".")
    if name == "generator_state":
        if d.dtype != np.uint8 or d.ndim != 1:
            raise _refuse(path, "generator_state must be a 1-D uint8 array")
    elif kind in ("var", "stat", "const"):
        if not rest or not _NAME.fullmatch(rest):
            raise _refuse(path, f"dataset name {name!r} is not allowed")
        if kind == "const" and d.ndim != 1:
            raise _refuse(path, f"{name!r} must have dimensions (chain,)")
        if kind != "const" and d.ndim < 2:
            raise _refuse(path, f"{name!r} must have dimensions (chain, draw, ...)")
    elif kind in ("state", "kernel"):
        if not all(_SEGMENT.fullmatch(s) for s in rest.split(".")) or not rest:
            raise _refuse(path, f"dataset name {name!r} is not allowed")
    elif name == "warmup.moved" or name.startswith("warmup.adapter."):
        from ._stream_files import segments

        if name != "warmup.moved" and not segments(name[len("warmup.adapter.") :]):
            raise _refuse(path, f"dataset name {name!r} is not allowed")
    else:
        raise _refuse(path, f"unexpected dataset {name!r} (a trace holds var.*, stat.*, const.*, "
                            "state.*, kernel.*, warmup.* and generator_state)")  # fmt: skip
    dt = d.dtype
    if dt.kind not in "iufbc" or dt.fields is not None or dt.subdtype is not None:
        raise _refuse(path, f"dataset {name!r} has dtype {dt}; a trace stores plain numbers")
    if dt.byteorder == (">" if np.little_endian else "<"):
        raise _refuse(path, f"dataset {name!r} is stored in non-native byte order ({dt})")
    declared = int(np.prod(d.shape, dtype=object)) * dt.itemsize
    stored = d.id.get_storage_size()
    filtered = d.id.get_create_plist().get_nfilters() > 0
    # data must be in the file: an unwritten dataset of a huge declared shape would make the
    # reader allocate it (compressed data may expand, by a bounded factor)
    if (stored < declared and not filtered) or (filtered and declared > 1024 * stored + 2**20):
        raise _refuse(path, f"dataset {name!r} declares {declared} bytes but the file stores "
                            f"{stored}")  # fmt: skip
    for a in d.attrs:
        if a not in _DATA_ATTRS:
            raise _refuse(path, f"unexpected attribute {a!r} on {name!r}")
    if "dtype" in d.attrs and _text(_attr(d, "dtype", path, name)) != "bool":
        raise _refuse(path, f"attribute 'dtype' of {name!r} must be 'bool'")
    if "_FillValue" in d.attrs and _scalar(_attr(d, "_FillValue", path, name)) is None:
        raise _refuse(path, f"attribute '_FillValue' of {name!r} must be one number")


def _refs_to(value, f, path: Path, what: str) -> list[str]:
    names = []
    for ref in np.asarray(value, dtype=object).ravel():
        if not isinstance(ref, np.ndarray | list | tuple):
            ref = [ref]
        for r in ref:
            target = f[r].name if r else None
            if not target or not target.startswith("/"):
                raise _refuse(path, f"{what} refers to an object with no name")
            names.append(target[1:])
    return names


def _dims(d, path: Path, name: str, scales: set[str]) -> list[str]:
    """The dimension names of a data dataset, which must be what ``save`` gives it."""
    if d.ndim == 0:
        if "DIMENSION_LIST" in d.attrs:
            raise _refuse(path, f"0-d dataset {name!r} has dimensions")
        return []
    if "DIMENSION_LIST" not in d.attrs:
        raise _refuse(path, f"dataset {name!r} has no NetCDF dimensions")
    lists = _attr(d, "DIMENSION_LIST", path, name)
    if len(lists) != d.ndim:
        raise _refuse(path, f"dataset {name!r} has {len(lists)} dimension lists for {d.ndim} "
                            "dimensions")  # fmt: skip
    dims = []
    for i, refs in enumerate(lists):
        got = _refs_to(refs, d.file, path, f"dimension {i} of {name!r}")
        if len(got) != 1 or got[0] not in scales:
            raise _refuse(path, f"dimension {i} of {name!r} is not a NetCDF dimension")
        dims.append(got[0])
    if name == "generator_state":
        lead: tuple[str, ...] = ()
        expect: tuple[str, ...] = ("generator_state_dim",)
    else:
        kind = name.split(".")[0]
        lead = (
            ("chain", "draw") if kind in ("var", "stat") else ("chain",) if kind == "const" else ()
        )
        expect = lead + tuple(f"{name}_dim_{i}" for i in range(d.ndim - len(lead)))
    if tuple(dims) != expect:
        raise _refuse(path, f"dataset {name!r} has dimensions {tuple(dims)}, expected {expect}")
    for i, dim in enumerate(dims):
        length = d.file[dim].shape[0] if d.file[dim].ndim == 1 else -1
        if length != d.shape[i]:
            raise _refuse(path, f"dataset {name!r} has {d.shape[i]} entries along {dim!r}, "
                                f"which has length {length}")  # fmt: skip
    return dims


def _check_scale(name: str, d, path: Path, used: set[str]) -> None:
    """A NetCDF dimension: a 1-D dimension scale that holds no data of its own."""
    if name not in used:
        raise _refuse(path, f"unexpected dataset {name!r} (a dimension no variable uses)")
    for a in d.attrs:
        if a not in _SCALE_ATTRS:
            raise _refuse(path, f"unexpected attribute {a!r} on dimension {name!r}")
    label = _attr(d, "NAME", path, name) if "NAME" in d.attrs else b""
    label = label.encode() if isinstance(label, str) else bytes(label)
    if d.ndim != 1 or not label.startswith(_NOT_A_VARIABLE):
        # otherwise xarray would read it as a coordinate variable
        raise _refuse(path, f"dimension {name!r} must be a plain NetCDF dimension")
    if "REFERENCE_LIST" in d.attrs:
        refs = _attr(d, "REFERENCE_LIST", path, name)
        try:
            targets = [r[0] for r in refs]
        except (TypeError, IndexError, KeyError) as err:
            raise _refuse(path, f"malformed REFERENCE_LIST on {name!r}") from err
        _refs_to(np.asarray(targets, dtype=object), d.file, path, f"dimension {name!r}")


# ---------------------------------------------------------------------------- attributes


def _check_root_attrs(attrs: dict[str, Any], path: Path, data: dict, kind: str) -> None:
    from ._stream_files import check_stream_table, check_warmup

    for name in attrs:
        if name in _ROOT_ATTRS or name in _WARMUP_ATTRS or (kind == "index" and name == "stream"):
            continue
        head, _, rest = name.partition(".")
        if head not in ("state", "kernel") or not all(
            _SEGMENT.fullmatch(s) for s in rest.split(".")
        ):
            raise _refuse(path, f"unexpected attribute {name!r}")
    if _text(attrs.get("_NCProperties", "")) is None:
        raise _refuse(path, "attribute '_NCProperties' must be text")
    # batch_shape: positive ints whose product is the number of chains
    shape = np.atleast_1d(np.asarray(attrs.get("batch_shape", np.zeros(0, np.int64))))
    if shape.ndim != 1 or shape.size == 0 or shape.dtype.kind not in "iu" or (shape < 1).any():
        raise _refuse(path, f"batch_shape must be positive integers, got {shape.tolist()}")
    chains = {d.shape[0] for n, d in data.items() if n.split(".")[0] in ("var", "stat", "const")}
    warmup = check_warmup(attrs, path, data, tuple(shape.tolist()))
    if kind == "index":
        text = _text(attrs.get("stream"))
        try:
            table = ast.literal_eval(text) if text is not None else None
        except Exception:  # noqa: BLE001 - SyntaxError, ValueError, MemoryError, ...
            table = None
        check_stream_table(table, path)
    elif not warmup and not any(n.startswith("var.") for n in data):
        raise _refuse(path, "it records no variable (var.*)")
    if chains - {math.prod(shape.tolist())}:
        raise _refuse(path, f"batch_shape {tuple(shape.tolist())} does not match "
                            f"{chains.pop()} chains")  # fmt: skip
    draws = {d.shape[1] for n, d in data.items() if n.split(".")[0] in ("var", "stat")}
    if kind == "trace" and not warmup and draws == {0}:
        raise _refuse(path, "it holds no draws")
    run = _text(attrs.get("run_attrs", "{}"))
    try:
        value = ast.literal_eval(run) if run is not None and len(run) <= MAX_ATTR_BYTES else None
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError, MemoryError, RecursionError, ...
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (isinstance(v, str | int | float) or _non_finite(v))
        for k, v in value.items()
    ):
        raise _refuse(path, "run_attrs must be a Python literal dict of str to str/int/float")
    arrays = {n for n in data if n.split(".")[0] in ("state", "kernel")}
    keys = set(attrs) - _ROOT_ATTRS
    for prefix, base in (("kernel", Kernel), ("state", ChainState)):
        mine = {k for k in keys | arrays if k.split(".")[0] == prefix}
        _check_tree(prefix, base, attrs, mine, arrays, path, value)


def _non_finite(v) -> bool:
    """How ``save`` writes a float that is no literal (an R-hat of nan): ``("float", "nan")``."""
    return isinstance(v, tuple) and len(v) == 2 and v[0] == "float" and v[1] in _NON_FINITE


def _check_flag_values(attrs: dict[str, Any], keys: set[str], path: Path) -> None:
    for k in keys:
        if k not in attrs:
            continue
        suffix = k.rpartition(".")[2]
        v = attrs[k]
        if suffix == "class":
            text = _text(v)
            if text is None or len(text) > 300 or not _CLASS_PATH.fullmatch(text):
                raise _refuse(path, f"attribute {k!r} must name a class")
            continue
        number = _scalar(v)
        if number is None:
            raise _refuse(path, f"attribute {k!r} must be one number")
        if suffix in _FLAGS and number not in (0, 1):
            raise _refuse(path, f"attribute {k!r} must be 0 or 1")
        if suffix == "items" and not (isinstance(number, int) and 0 <= number <= _MAX_ITEMS):
            raise _refuse(path, f"attribute {k!r} must be a count")
        if not math.isfinite(number):
            raise _refuse(path, f"attribute {k!r} is not finite ({number})")


def _check_tree(prefix, base, attrs, keys: set[str], arrays: set[str], path, run) -> None:
    """The flattened kernel (or state) names a class of ``base`` inside ebmcmc, holds every
    field of it (nested ones included) and nothing else."""
    _check_flag_values(attrs, keys, path)
    what = base.__name__.lower()
    if not keys:
        return
    if f"{prefix}.class" not in attrs:
        if (
            prefix == "state"
            and keys <= {"state.position", "state.energy", "state.grad"}
            and ({"state.position", "state.energy"} <= keys & arrays)
        ):
            return  # a trace from before states named their class
        raise _refuse(path, f"the saved {what} names no class")
    top = _text(attrs[f"{prefix}.class"]) or ""
    if prefix == "kernel" and not top.startswith("ebmcmc."):
        return  # a user's kernel: Trace.load leaves it out (with a warning)
    used = _walk(prefix, base, attrs, keys, arrays, path, 0)
    extra = sorted(keys - used)
    if extra:
        raise _refuse(path, f"the saved {what} has entries its class {top!r} does not define: "
                            f"{', '.join(extra[:5])}")  # fmt: skip
    if prefix == "kernel":
        # the run's record names the kernel class it ran (another ebmcmc kernel: swapped)
        ran = run.get("kernel")
        name = top.rpartition(".")[2]
        if isinstance(ran, str) and ran != name and _is_kernel_name(ran):
            raise _refuse(path, f"the kernel class {top!r} is not the {ran} the run used")


def _is_kernel_name(name: str) -> bool:
    from . import kernels

    obj = getattr(kernels, name, None)
    return isinstance(obj, type) and issubclass(obj, Kernel)


def _resolve(class_path: str, base: type, path: Path) -> type:
    what = base.__name__.lower()
    module, _, name = class_path.rpartition(".")
    if not module.startswith("ebmcmc."):
        raise _refuse(path, f"refusing to load {what} class {class_path!r} from outside ebmcmc")
    if not module.startswith("ebmcmc.kernels."):
        # every kernel and state class lives there: nothing else of ebmcmc is imported
        raise _refuse(path, f"{class_path!r} is not an ebmcmc {what}")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise _refuse(path, f"{what} class {class_path!r} does not exist ({err})") from err
    cls = getattr(mod, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base) and dataclasses.is_dataclass(cls)):
        raise _refuse(path, f"{class_path!r} is not an ebmcmc {what}")
    return cls


def _walk(prefix, base, attrs, keys, arrays, path, depth) -> set[str]:
    """The keys of ``keys`` that rebuilding ``prefix`` uses (mirrors ``trace._from_flat``)."""
    from .trace import _ADDED_FIELDS, _OLD_FIELD_NAMES

    if depth > _MAX_DEPTH:
        raise _refuse(path, f"{prefix!r} nests too deeply")
    cls = _resolve(_text(attrs[f"{prefix}.class"]) or "", base, path)
    used = {f"{prefix}.class"}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        old = _OLD_FIELD_NAMES.get(f.name)
        if old is not None and not _stored(key, keys) and _stored(f"{prefix}.{old}", keys):
            key = f"{prefix}.{old}"
        if f"{key}.class" in attrs:
            used |= _walk(key, base, attrs, keys, arrays, path, depth + 1)
        elif f"{key}.items" in attrs:
            used.add(f"{key}.items")
            for j in range(int(_scalar(attrs[f"{key}.items"]) or 0)):
                if f"{key}.{j}.class" not in attrs:
                    raise _refuse(path, f"{key!r} lacks item {j}")
                used |= _walk(f"{key}.{j}", base, attrs, keys, arrays, path, depth + 1)
        elif key in arrays:
            used |= {key} | {k for k in (f"{key}.is_tuple", f"{key}.is_bool") if k in keys}
        elif f"{key}.none" in keys or f"{key}.bool" in keys:
            used.add(f"{key}.none" if f"{key}.none" in keys else f"{key}.bool")
        elif key in attrs:
            used.add(key)
        elif (cls.__name__, f.name) in _ADDED_FIELDS and f.default is not dataclasses.MISSING:
            continue  # written before the field existed: its default applies
        else:
            # save stores every field, so a missing one means another class's fields
            raise _refuse(path, f"the saved {base.__name__.lower()} lacks field {f.name!r} of "
                                f"{cls.__name__}")  # fmt: skip
    return used


def _stored(key: str, keys: set[str]) -> bool:
    return any(k in keys for k in (key, f"{key}.class", f"{key}.none", f"{key}.bool",
                                   f"{key}.items"))  # fmt: skip


# ---------------------------------------------------------------------------- built objects


def _tensors(obj, name: str):
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name), f"{name}.{f.name}")


def check_loaded(trace, path: str | Path):
    """Checks of a loaded trace that need the rebuilt objects; returns the trace.

    The batch shape must hold the chains and be the final state's; every floating-point
    tensor of the final state must be finite (a sampler never leaves a chain at NaN).

    Raises:
        ValueError: what is inconsistent.

    Example:
        >>> import torch
        >>> from ebmcmc import Trace
        >>> tr = Trace({"x": torch.zeros(2, 5)}, {})
        >>> check_loaded(tr, "t.nc") is tr
        True
    """
    path = Path(path)
    if math.prod(trace.batch_shape) != trace.num_chains:
        raise _refuse(path, f"batch_shape {trace.batch_shape} does not hold "
                            f"{trace.num_chains} chains")  # fmt: skip
    state = trace.final_state
    if state is not None:
        try:
            shape = tuple(state.batch_shape)
            position = state.position
        except Exception as err:  # noqa: BLE001 - a crafted state whose parts do not fit
            raise _refuse(path, f"the final state is inconsistent ({err})") from err
        if shape != tuple(trace.batch_shape) or tuple(position.shape[: len(shape)]) != shape:
            raise _refuse(path, f"the final state has batch shape {shape}, the trace "
                                f"{trace.batch_shape}")  # fmt: skip
        for name, t in _tensors(state, "state"):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise _refuse(path, f"the final state's {name} is not finite")
    gen = trace.generator_state
    if gen is not None and (gen.ndim != 1 or gen.numel() == 0):
        raise _refuse(path, "the generator state is empty")
    return trace
