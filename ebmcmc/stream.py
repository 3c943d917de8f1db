"""Streamed traces: a run's draws written to disk chunk by chunk, resumable after every chunk.

``sample(..., out=PATH, checkpoint_every=N)`` writes a *trace directory*::

    PATH/
      index.nc           the commit record: what was recorded, the chunks, the final state,
                         kernel, generator state (and warm-up progress), run attributes
      draws-000000.nc    draws 0 … N-1: variables (chain, draw, …) and statistics
      draws-000001.nc    draws N … 2N-1
      …

**Why chunk files and an index, not one growing HDF5 file.** HDF5 updates a file in place
(data, then B-tree and header metadata); a process killed in the middle of that can leave a file
no reader opens, and HDF5 has no journal to roll it back. Here nothing is ever modified in
place: each chunk file is written under a temporary name, flushed to disk and renamed
(:func:`~ebmcmc._files.atomic_write`), and then the index is rewritten the same way. The index
is the commit point: a kill before its rename leaves the previous index, which lists only
complete chunks (an unlisted chunk file is ignored and later overwritten); a kill after it
leaves the new one. Memory is bounded by one chunk, the work per chunk by its own size (no
rewrite of earlier draws), and committed chunk files never change, so a trace already opened
keeps reading a consistent set while the run goes on.

The files are NetCDF-4 (HDF5), readable by xarray one by one; :meth:`ebmcmc.Trace.load` reads
the directory as one trace, lazily: the index at once, each variable or statistic when first
used (:class:`~ebmcmc.trace.LazyColumns`).

One process writes a directory at a time.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._files import atomic_write
from .kernels.base import Kernel
from .recording import Chunk, Spec
from .trace import STREAM_FORMAT, LazyColumns, Trace, WarmupProgress, _header, _read_header

__all__ = ["StreamWriter", "load_stream", "INDEX", "chunk_name"]

INDEX = "index.nc"


def chunk_name(k: int) -> str:
    """The file name of chunk ``k``.

    Example:
        >>> chunk_name(3)
        'draws-000003.nc'
    """
    return f"draws-{k:06d}.nc"


def _dtype_name(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


def _read_index(path: Path) -> tuple[dict[str, Any], Any]:
    import xarray as xr

    index = path / INDEX
    if not index.is_file():
        raise FileNotFoundError(f"{str(path)!r} is a directory without a trace index ({INDEX})")
    from ._stream_files import check_stream_table
    from ._trace_files import check_file  # h5py inspects it first

    check_file(index, STREAM_FORMAT, kind="index")
    try:
        with xr.open_dataset(index, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file
        raise ValueError(f"{str(index)!r} is not a readable trace index: {err}") from err
    if ds.attrs.get("format") != STREAM_FORMAT:
        raise ValueError(f"{str(index)!r} is not an ebmcmc trace index ({STREAM_FORMAT!r})")
    table = check_stream_table(ast.literal_eval(ds.attrs["stream"]), index)
    return table, ds


def _read_array(
    file: Path, name: str, checked: dict[Path, dict] | None = None
) -> np.ndarray | None:
    """Dataset ``name`` of a chunk file (``None`` if it has none); with ``checked``, the file is
    first inspected (once) against what the index says it holds (``checked[file]``)."""
    import h5py

    if checked is not None and not checked[file].get("ok"):
        from ._trace_files import check_file

        check_file(file, None, kind="chunk", table=checked[file])
        checked[file]["ok"] = True
    with h5py.File(file, "r") as f:
        return f[name][()] if name in f else None


def load_stream(path: str | os.PathLike) -> Trace:
    """Open a trace directory written by ``sample(..., out=path)``.

    Only the index is read; variables and statistics are read from the chunk files when first
    used. The trace's ``source`` is the directory (``sample(..., init=trace, out=path)``
    continues it).

    Raises:
        FileNotFoundError: no index in the directory.
        ValueError: the index is not an ebmcmc trace index, or a chunk it lists is missing.

    Example:
        >>> import torch, ebmcmc, tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "run")
        >>> tr = ebmcmc.sample(lambda x: (x**2).sum(-1), ebmcmc.kernels.MALA(0.3),
        ...                    torch.zeros(2, 1), 5, out=out, checkpoint_every=2,
        ...                    generator=0, progress=False)
        >>> back = load_stream(out)
        >>> back.num_draws, sorted(os.listdir(out))[:2]
        (5, ['draws-000000.nc', 'draws-000001.nc'])
    """
    path = Path(path)
    table, ds = _read_index(path)
    head = _read_header(ds)
    counts: list[int] = list(table["chunks"])
    files = [path / chunk_name(k) for k in range(len(counts))]
    for f in files:
        if not f.is_file():
            raise ValueError(f"the trace index of {str(path)!r} lists {f.name}, which is missing")
    total = sum(counts)
    chains = math.prod(head["batch_shape"])
    columns: dict[str, tuple[str, tuple[int, ...], str]] = {}
    for prefix, group in (("var", "variables"), ("stat", "stats")):
        for name, (shape, dtype) in table[group].items():
            columns[f"{prefix}.{name}"] = (name, tuple(shape), dtype)

    expect = {f: {"chains": chains, "draws": n, "variables": table["variables"],
                  "stats": table["stats"]} for f, n in zip(files, counts, strict=True)}  # fmt: skip

    def read(key: str) -> Tensor:
        name, shape, dtype = columns[key]
        torch_dtype = getattr(torch, dtype)
        if key == "stat.step_size":
            found = [_read_array(f, "const.step_size", expect) for f in files]
            rows = [r for r in found if r is not None]
            if (
                rows
                and len(rows) == len(found)
                and all(np.array_equal(rows[0], r) for r in rows[1:])
            ):
                row = torch.from_numpy(np.asarray(rows[0])).to(torch_dtype)
                return row[:, None].expand(-1, total)
        out = torch.empty((chains, total) + shape, dtype=torch_dtype)
        a = 0
        for f, n in zip(files, counts, strict=True):
            arr = _read_array(f, key, expect)
            if arr is None and key == "stat.step_size":
                row = torch.from_numpy(np.asarray(_read_array(f, "const.step_size", expect)))
                out[:, a : a + n] = row[:, None]
            elif arr is None:
                raise ValueError(f"{str(f)!r} has no {key!r}")
            else:
                out[:, a : a + n] = torch.from_numpy(np.asarray(arr)).to(torch_dtype)
            a += n
        return out

    def lazy(prefix: str) -> LazyColumns:
        keys = {k: v for k, v in columns.items() if k.startswith(prefix + ".")}
        shapes = {v[0]: (chains, total) + v[1] for v in keys.values()}
        return LazyColumns(shapes, lambda name: read(f"{prefix}.{name}"))

    variables, stats = (lazy("var"), lazy("stat")) if total else ({}, {})
    attrs = dict(head["attrs"])
    trace = Trace(variables, stats, head["state"], head["kernel"], head["generator_state"],
                  head["batch_shape"], attrs, head["warmup"])  # fmt: skip
    trace.source = path
    trace.source_chunks = len(counts)
    return trace


class StreamWriter:
    """Writes a trace directory: chunk files, then the index that commits them.

    Args:
        path: the directory (created; it must not exist unless ``continuing``).
        continuing: append to the trace already there (its index is read).
        attrs: run attributes for a new directory.

    Example:
        >>> import torch, tempfile, os
        >>> from ebmcmc.kernels import State
        >>> w = StreamWriter(os.path.join(tempfile.mkdtemp(), "run"), attrs={"kernel": "MALA"})
        >>> w.write(Chunk(0, {"x": torch.ones(3, 2, 1)}, torch.zeros(3, 2), torch.ones(3, 2),
        ...               torch.zeros(3, 2, dtype=torch.bool), torch.full((2,), 0.1)),
        ...         (State(torch.ones(2, 1), torch.zeros(2)), None, 3))
        >>> load_stream(w.path).draws.shape
        torch.Size([2, 3, 1])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        continuing: bool = False,
        attrs: dict[str, Any] | None = None,
        expected_chunks: int | None = None,
    ):
        self.path = Path(path)
        self.kernel: Kernel | None = None
        self.batch_shape: tuple[int, ...] | None = None
        if continuing:
            table, ds = _read_index(self.path)
            self.chunks: list[int] = list(table["chunks"])
            if expected_chunks is not None and expected_chunks != len(self.chunks):
                raise ValueError(
                    f"{str(self.path)!r} has {len(self.chunks)} chunks now, but the trace to "
                    f"continue was read when it had {expected_chunks}; load it again"
                )
            self.variables: Spec | None = {k: (tuple(s), getattr(torch, d))
                                           for k, (s, d) in table["variables"].items()}  # fmt: skip
            if not self.chunks:
                self.variables = None  # nothing recorded yet (stopped during warm-up)
            self.stats: dict[str, str] = {k: d for k, (_, d) in table["stats"].items()}
            self.attrs = dict(_read_header(ds)["attrs"])
            self.attrs.update({k: v for k, v in (attrs or {}).items() if k not in self.attrs})
        else:
            if self.path.exists():
                raise FileExistsError(
                    f"{str(self.path)!r} already exists; continue it with init={str(self.path)!r}"
                    " (and the same out=), or choose another path"
                )
            if not self.path.parent.is_dir():
                raise FileNotFoundError(f"directory {str(self.path.parent)!r} does not exist")
            self.path.mkdir()
            self.chunks = []
            self.variables = None
            self.stats = {}
            self.attrs = dict(attrs or {})
        for leftover in self.path.glob("*.tmp"):  # from a write killed before its rename
            leftover.unlink(missing_ok=True)
        #: a thinned copy of the draws (at most ``check_draws`` per chain) for the end-of-run
        #: R-hat, and the divergences counted over all draws
        self.check_stride = 1
        self.check_parts: dict[str, list[Tensor]] = {}
        self.divergent = 0
        self.draws_written = 0

    @property
    def num_draws(self) -> int:
        """Draws committed to the directory."""
        return sum(self.chunks)

    # ------------------------------------------------------------------ chunks
    def write(self, chunk: Chunk, snapshot: tuple) -> None:
        """Write a chunk file, then commit it with the state after its last draw."""
        state, generator_state, _ = snapshot
        import h5netcdf

        n, chains = chunk.num_draws, int(chunk.energy.shape[1])
        spec = {k: (tuple(v.shape[2:]), v.dtype) for k, v in chunk.variables.items()}
        if self.variables is None:
            self.variables = spec
        stats = {"energy": chunk.energy, "accept_prob": chunk.accept_prob,
                 "diverging": chunk.diverging}  # fmt: skip
        arrays: dict[str, np.ndarray] = {}
        for k, v in chunk.variables.items():
            arrays[f"var.{k}"] = _chain_major(v)
        for k, v in stats.items():
            arrays[f"stat.{k}"] = _chain_major(v.to(torch.uint8) if v.dtype == torch.bool else v)
            self.stats.setdefault(k, _dtype_name(v.dtype))
        if chunk.step_size is not None:
            if chunk.step_size.ndim == 1:
                arrays["const.step_size"] = chunk.step_size.detach().cpu().numpy()
            else:
                arrays["stat.step_size"] = _chain_major(chunk.step_size)
            self.stats.setdefault("step_size", _dtype_name(chunk.step_size.dtype))

        def put(tmp: str) -> None:
            with h5netcdf.File(tmp, "w") as f:
                f.dimensions = {"chain": chains, "draw": n}
                for k, a in arrays.items():
                    dims: tuple[str, ...] = ("chain",) if a.ndim == 1 else ("chain", "draw")
                    for i, size in enumerate(a.shape[len(dims) :]):
                        f.dimensions[f"{k}_dim_{i}"] = size
                        dims += (f"{k}_dim_{i}",)
                    f.create_variable(k, dims, data=a)

        atomic_write(self.path / chunk_name(len(self.chunks)), put)
        self.chunks.append(n)
        self._keep_for_check(chunk)
        self.commit(state, generator_state)

    def _keep_for_check(self, chunk: Chunk) -> None:
        a = self.draws_written
        pick = [j for j in range(chunk.num_draws) if (a + j) % self.check_stride == 0]
        if pick:
            idx = torch.tensor(pick, device=chunk.energy.device)
            for k, v in chunk.variables.items():
                if v.is_floating_point() and v[0, 0].numel() <= 1000:
                    self.check_parts.setdefault(k, []).append(v.index_select(0, idx).cpu())
        self.divergent += int(chunk.diverging.sum())
        self.draws_written += chunk.num_draws

    def check_draws(self) -> dict[str, Tensor]:
        """The thinned draws kept for the end-of-run check, ``(chain, draw, …)``."""
        return {k: torch.cat(v, 0).movedim(0, 1) for k, v in self.check_parts.items()}

    # ------------------------------------------------------------------ index
    def commit(
        self,
        state,
        generator_state: Tensor | None,
        kernel=None,
        warmup: WarmupProgress | None = None,
        attrs: dict[str, Any] | None = None,
    ):
        """Rewrite the index (atomically): the chunks written so far and the state after them."""
        import xarray as xr

        if attrs:
            self.attrs.update(attrs)
        self.attrs["num_samples"] = self.num_draws
        head = Trace({}, {}, state, kernel if kernel is not None else self.kernel,
                     generator_state, self.batch_shape or tuple(state.batch_shape),
                     self.attrs, warmup)  # fmt: skip
        header_attrs, data_vars = _header(head)
        header_attrs["format"] = STREAM_FORMAT
        variables = {k: (list(s), _dtype_name(d)) for k, (s, d) in (self.variables or {}).items()}
        stats: dict[str, tuple[list[int], str]] = {k: ([], d) for k, d in self.stats.items()}
        header_attrs["stream"] = repr({"chunks": list(self.chunks), "variables": variables,
                                       "stats": stats})  # fmt: skip
        ds = xr.Dataset(data_vars, attrs=header_attrs)
        atomic_write(self.path / INDEX, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def _chain_major(t: Tensor) -> np.ndarray:
    return t.detach().movedim(0, 1).contiguous().cpu().numpy()
