"""The checks of what :func:`ebmcmc._trace_files.check_file` reads beyond a plain trace file:
a streamed directory's index (its ``stream`` table) and chunk files, and an interrupted
warm-up's progress (``warmup.*``), which a trace file or an index may hold.

Every refusal is a ``ValueError`` that names the file and what is wrong.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._trace_files import _NAME, _SEGMENT, _WARMUP_ATTRS, _refuse, _scalar, _text

__all__ = ["check_chunk", "check_stream_table", "check_warmup", "segments"]


def check_chunk(data: dict, path: Path, table: dict) -> None:
    """A chunk file holds the columns the index lists, for its chains and draws, and nothing
    else."""
    chains, draws = table["chains"], table["draws"]
    for name, d in data.items():
        kind, _, rest = name.partition(".")
        listed = table["variables" if kind == "var" else "stats"].get(rest)
        if kind not in ("var", "stat", "const") or listed is None:
            raise _refuse(path, f"unexpected dataset {name!r} in a chunk file")
        lead = (chains,) if kind == "const" else (chains, draws)
        want = lead + (tuple(listed[0]) if kind == "var" else ())
        if tuple(d.shape) != want:
            raise _refuse(path, f"{name!r} has shape {tuple(d.shape)}, the index says {want}")
    for group, prefix in (("variables", "var"), ("stats", "stat")):
        for name in table[group]:
            if f"{prefix}.{name}" not in data and f"const.{name}" not in data:
                raise _refuse(path, f"the chunk file lacks {prefix}.{name}")


def check_stream_table(table, path: str | Path) -> dict[str, Any]:
    """The ``stream`` attribute of a trace index: chunk sizes and the recorded columns.

    Returns:
        ``table`` (checked): ``chunks`` (draws per chunk file), ``variables`` and ``stats``
        (``name -> (shape, dtype name)``).

    Example:
        >>> check_stream_table({"chunks": [5], "variables": {"x": ([2], "float32")},
        ...                     "stats": {"energy": ([], "float32")}}, "index.nc")["chunks"]
        [5]
    """
    path = Path(path)
    if not (isinstance(table, dict) and set(table) == {"chunks", "variables", "stats"}):
        raise _refuse(path, "the stream table must hold chunks, variables and stats")
    chunks = table["chunks"]
    if not (isinstance(chunks, list) and all(isinstance(n, int) and n > 0 for n in chunks)):
        raise _refuse(path, "the stream table's chunks must be positive draw counts")
    for group in ("variables", "stats"):
        columns = table[group]
        if not isinstance(columns, dict):
            raise _refuse(path, f"the stream table's {group} must be a dict")
        for name, entry in columns.items():
            ok = isinstance(name, str) and bool(_NAME.fullmatch(name))
            ok = ok and isinstance(entry, tuple | list) and len(entry) == 2
            if ok:
                shape, dtype = entry
                ok = isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
                ok = ok and isinstance(dtype, str) and isinstance(getattr(torch, dtype, None),
                                                                   torch.dtype)  # fmt: skip
            if not ok:
                raise _refuse(path, f"the stream table's entry {name!r} is malformed")
    if chunks and not table["variables"]:
        raise _refuse(path, "it records no variable")
    return table


def segments(name: str) -> bool:
    """A dotted name whose every part is an identifier, an index or ``#`` (a count):
    ``leaves.0.step``, ``leaves.#``.

    Example:
        >>> segments("leaves.0.step"), segments("leaves.#"), segments("a/b")
        (True, True, False)
    """
    return all(p == "#" or _SEGMENT.fullmatch(p) for p in name.split("."))


def check_warmup(attrs: dict[str, Any], path: Path, data: dict, batch: tuple) -> bool:
    """An interrupted warm-up's progress: steps done of the total, the chains that moved, and
    the adaptation's values (each tensor one ``warmup.adapter.*`` dataset). Whether there is
    one."""
    names = {n for n in data if n.startswith("warmup.")}
    keys = _WARMUP_ATTRS & set(attrs)
    if not keys and not names:
        return False
    if not {"warmup.done", "warmup.total"} <= keys or "warmup.moved" not in names:
        raise _refuse(path, "an incomplete warm-up record (warmup.done, warmup.total and "
                            "warmup.moved go together)")  # fmt: skip
    done, total = _scalar(attrs["warmup.done"]), _scalar(attrs["warmup.total"])
    if not (isinstance(done, int) and isinstance(total, int) and 0 <= done <= total):
        raise _refuse(path, f"warm-up steps done {done} of {total} are not counts")
    moved = data["warmup.moved"]
    if tuple(moved.shape) != batch or moved.dtype != np.uint8:
        raise _refuse(path, f"warmup.moved must be uint8 of the batch shape {batch}")
    tensors: set[str] = set()
    if "warmup.adapter" in keys:
        text = _text(attrs["warmup.adapter"])
        try:
            meta = ast.literal_eval(text) if text is not None else None
        except Exception:  # noqa: BLE001 - SyntaxError, ValueError, MemoryError, ...
            meta = None
        if not isinstance(meta, dict):
            raise _refuse(path, "warmup.adapter must be a Python literal dict")
        for k, entry in meta.items():
            if not (isinstance(k, str) and segments(k) and isinstance(entry, tuple)
                    and len(entry) == 2):  # fmt: skip
                raise _refuse(path, f"warmup.adapter entry {k!r} is malformed")
            kind, v = entry
            if kind == "tensor":
                if not (isinstance(v, str) and isinstance(getattr(torch, v, None), torch.dtype)):
                    raise _refuse(path, f"warmup.adapter entry {k!r} names no dtype")
                tensors.add(f"warmup.adapter.{k}")
            elif kind == "float":
                try:
                    float.fromhex(v)
                except (TypeError, ValueError) as err:
                    raise _refuse(path, f"warmup.adapter entry {k!r} is not a float") from err
            elif kind != "value":
                raise _refuse(path, f"warmup.adapter entry {k!r} has unknown kind {kind!r}")
    if names - {"warmup.moved"} != tensors:
        raise _refuse(path, "the warm-up's arrays do not match warmup.adapter")
    return True
