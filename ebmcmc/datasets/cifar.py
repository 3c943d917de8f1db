"""CIFAR-10 in its python-batch format, read through a restricted unpickler.

CIFAR-10 batches are pickles. They are read with a restricted unpickler that resolves only the
handful of globals a plain numpy array needs; anything else (``os.system``, ``builtins.eval``,
...) raises ``pickle.UnpicklingError`` before it can run. Nothing here downloads.
"""

from __future__ import annotations

import io
import math
import operator
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_cifar10", "CIFAR10_CLASSES", "RestrictedUnpickler"]


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""CIFAR-10 label names, index = label."""

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_SPLITS = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_MEMBERS = frozenset(
    [*_CIFAR_SPLITS["train"], *_CIFAR_SPLITS["test"], "batches.meta", "readme.html"]
)
_MAX_MEMBER_BYTES = 256 * 2**20


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


class _PickledArray(np.ndarray):
    """The array numpy's pickles rebuild, with its state checked before numpy allocates it."""

    def __setstate__(self, state):
        try:
            _, shape, dtype, _, raw = state if len(state) == 5 else (1, *state)
            dims = tuple(operator.index(n) for n in shape)
        except (TypeError, ValueError) as err:
            raise pickle.UnpicklingError(
                f"restricted unpickler: malformed array state ({err})"
            ) from None
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError("restricted unpickler: only arrays of numbers")
        if not isinstance(raw, bytes | bytearray) or any(n < 0 for n in dims):
            raise pickle.UnpicklingError("restricted unpickler: malformed array state")
        size = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
        if size != len(raw):
            raise pickle.UnpicklingError(
                f"restricted unpickler: an array of shape {dims} and dtype {dtype} needs {size} "
                f"bytes but its buffer holds {len(raw)}"
            )
        super().__setstate__(state)


def _placeholder(reconstruct):
    """numpy's ``_reconstruct`` for the empty placeholder numpy pickles start from (shape
    ``(0,)``); any other shape would be allocated before the buffer is seen."""

    def build(cls, shape, typecode):
        try:
            dims = tuple(operator.index(n) for n in shape)
        except TypeError:
            dims = (-1,)
        if cls is not np.ndarray or math.prod(dims) != 0 or min(dims, default=0) < 0:
            raise pickle.UnpicklingError(
                f"restricted unpickler: an array placeholder must be empty, got shape {shape!r}"
            )
        return reconstruct(_PickledArray, dims, typecode)

    return build


def _plain(obj, depth: int):
    """``obj`` with every checked array as a plain ndarray (containers walked, 64 deep)."""
    if depth > 64:
        raise pickle.UnpicklingError("restricted unpickler: containers nested too deeply")
    if isinstance(obj, _PickledArray):
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, depth + 1) for v in obj)
    return obj


def _latin1_encode(obj, encoding="latin1", *args):
    """``_codecs.encode`` restricted to what Python 3 writes for ``bytes`` at protocol < 3."""
    if args or not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(
            "restricted unpickler: _codecs.encode is allowed only as encode(str, 'latin1')"
        )
    return obj.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise pickle.UnpicklingError("restricted unpickler: builtins.bytes takes no arguments")
    return b""


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild plain numpy arrays.

    Allowed: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar`` (and its
    ``numpy._core`` twin), plus ``_codecs.encode(str, 'latin1')`` and ``bytes()``, which
    Python 3 emits for ``bytes`` objects at pickle protocol 2. Containers (dict, list, tuple),
    strings, bytes and numbers need no globals. Every other global raises
    ``pickle.UnpicklingError`` before anything is called. Arrays are checked before numpy
    allocates them: the placeholder numpy pickles start from must be empty, and an array's
    shape and dtype must describe exactly the bytes of its buffer (a small pickle cannot
    describe a huge array); object arrays are refused.

    Example:
        >>> import io, pickle, numpy as np
        >>> blob = pickle.dumps({b"a": np.arange(3, dtype=np.uint8)}, protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()[b"a"].tolist()
        [0, 1, 2]
        >>> import os
        >>> class Evil:
        ...     def __reduce__(self):
        ...         return (os.system, ("echo pwned",))
        >>> try:
        ...     RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
        ... except pickle.UnpicklingError as e:
        ...     print("rejected:", e)
        rejected: restricted unpickler: global '...system' is not allowed ...
    """

    def load(self):
        """Unpickle, with every array a plain ``numpy.ndarray``."""
        return _plain(super().load(), 0)

    def find_class(self, module: str, name: str):
        """Resolve ``module.name`` from the allow-list, else raise ``UnpicklingError``."""
        reconstruct, scalar = _np_reconstruct()
        reconstruct = _placeholder(reconstruct)
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.multiarray", "scalar"): scalar,
            ("numpy._core.multiarray", "scalar"): scalar,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
            ("builtins", "bytes"): _empty_bytes,
        }
        obj = allowed.get((module, name))
        if obj is None:
            raise _ForbiddenGlobal(
                f"restricted unpickler: global '{module}.{name}' is not allowed (only plain "
                "numpy arrays and containers may be loaded from a data file)"
            )
        return obj


def _unpickle_batch(blob: bytes, where: str, n_expected: int | None = None):
    try:
        d = RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise pickle.UnpicklingError(f"{where}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, struct.error) as e:
        raise ValueError(f"{where}: corrupt pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{where}: expected a dict with keys b'data' and b'labels'")
    data, labels = d[b"data"], d[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(f"{where}: b'data' must be a uint8 array (N, 3072), got {desc}")
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError):
        lab = np.asarray([], dtype=object)
    if (
        lab.ndim != 1
        or lab.shape[0] != data.shape[0]
        or (lab.size and (lab.dtype.kind not in "iu" or lab.min() < 0 or lab.max() > 9))
    ):
        raise ValueError(f"{where}: b'labels' must be {data.shape[0]} integers in 0..9")
    return data, lab.astype(np.int64)


def _locate_cifar(path: Path, names: tuple[str, ...]) -> tuple[str, Path]:
    expected = (
        f"{_CIFAR_TAR}, or a directory {_CIFAR_DIR}/ holding {', '.join(names)} "
        "(path may be the archive, its directory, or the batches directory)"
    )
    if path.is_file():
        return "tar", path
    if path.is_dir():
        if any((path / n).is_file() for n in _CIFAR_MEMBERS - {"readme.html"}):
            return "dir", path
        if (path / _CIFAR_DIR).is_dir():
            return "dir", path / _CIFAR_DIR
        if (path / _CIFAR_TAR).is_file():
            return "tar", path / _CIFAR_TAR
        raise FileNotFoundError(f"no CIFAR-10 data in {path}; expected {expected}")
    raise FileNotFoundError(f"CIFAR-10 path not found: {path}; expected {expected}")


def _read_cifar_tar(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                name = name.rstrip("/")
                if name == _CIFAR_DIR:
                    if not m.isdir():
                        raise ValueError(f"{path}: member {m.name!r} should be a directory")
                    continue
                prefix, _, base = name.partition("/")
                if prefix != _CIFAR_DIR or base not in _CIFAR_MEMBERS:
                    raise ValueError(
                        f"{path}: unexpected archive member {m.name!r}; a CIFAR-10 archive "
                        f"holds only {_CIFAR_DIR}/{{{', '.join(sorted(_CIFAR_MEMBERS))}}}"
                    )
                if not m.isfile():
                    raise ValueError(f"{path}: member {m.name!r} is not a regular file")
                if base not in names:
                    continue
                if m.size > _MAX_MEMBER_BYTES:
                    raise ValueError(f"{path}: member {m.name!r} is implausibly large")
                f = tar.extractfile(m)
                if f is None:  # not expected for a regular file (checked above)
                    raise ValueError(f"{path}: member {m.name!r} could not be read")
                found[base] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable tar archive ({e})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise FileNotFoundError(
            f"{path}: archive lacks {', '.join(_CIFAR_DIR + '/' + n for n in missing)}"
        )
    return found


def load_cifar10(path: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 in its "python version" format (no download).

    ``path`` may be the archive ``cifar-10-python.tar.gz``, a directory holding it or the
    extracted ``cifar-10-batches-py/``, or ``cifar-10-batches-py/`` itself. The archive is
    read in memory (never extracted); members other than the known ``cifar-10-batches-py/``
    files are rejected. Each batch is a pickled dict whose ``b"data"`` is a uint8 array
    ``(N, 3072)`` -- per row the red plane (1024 values), then green, then blue, each a
    row-major 32 x 32 image -- and ``b"labels"`` a list of N ints. Batches are read with
    :class:`RestrictedUnpickler`.

    Args:
        path: see above.
        split: ``"train"`` (``data_batch_1`` .. ``data_batch_5``, in that order) or ``"test"``
            (``test_batch``).

    Returns:
        ``(images, labels)``: float32 ``(N, 3, 32, 32)`` scaled by ``v / 127.5 - 1`` to
        ``[-1, 1]``, and int64 ``(N,)``.

    Raises:
        FileNotFoundError: nothing CIFAR-like at ``path`` (the message names the files).
        pickle.UnpicklingError: a batch references anything but numpy array internals.
        ValueError: corrupt archive or batch, unexpected archive member.

    Example:
        >>> x, y = load_cifar10("~/data/cifar-10-python.tar.gz", "test")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    if split not in _CIFAR_SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = _CIFAR_SPLITS[split]
    kind, where = _locate_cifar(Path(path).expanduser(), names)
    if kind == "tar":
        blobs = _read_cifar_tar(where, names)
    else:
        missing = [n for n in names if not (where / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{where}: missing CIFAR-10 batch file(s) {', '.join(missing)} "
                f"(split {split!r} needs {', '.join(names)})"
            )
        blobs = {n: (where / n).read_bytes() for n in names}
    xs, ys = [], []
    for n in names:
        data, lab = _unpickle_batch(blobs[n], f"{where}:{n}")
        xs.append(data)
        ys.append(lab)
    data = np.concatenate(xs) if len(xs) > 1 else xs[0]
    x = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    x = x.to(torch.float32).div_(127.5).sub_(1.0)
    y = torch.from_numpy(np.concatenate(ys))
    return x, y
