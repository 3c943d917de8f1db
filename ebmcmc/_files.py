"""Atomic file writes: a temporary file in the target's directory, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves the previous version
in place. The data are flushed to disk (``fsync``) before the rename.

A write killed outright (``SIGKILL``, power loss) cannot clean up after itself, so temporary
files carry a recognisable name, ``<target>.ebmcmc-tmp.<host>.<pid>.<random>``, and the next
write to the same target removes those of its writers that are gone: same host and a process
that no longer exists, or older than a day. Files of the older naming, ``<target>.<8
random>.tmp``, are removed once they are an hour old.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "TMP_TAG"]

#: what every temporary file of :func:`atomic_write` has after the target's name
TMP_TAG = ".ebmcmc-tmp."
_DAY = 24 * 3600.0


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: trust the age rule only
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or not ours to ask: assume it lives
        return True
    return True


def _remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files that killed writes to ``path`` left; returns them."""
    mine = re.compile(re.escape(path.name + TMP_TAG) + r"([0-9a-f]{8})\.(\d+)\.[A-Za-z0-9_]+")
    legacy = re.compile(re.escape(path.name) + r"\.[a-z0-9_]{8}\.tmp")
    now, host = time.time(), _host()
    removed: list[Path] = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    except OSError:
        return removed
    for p in candidates:
        try:
            age = now - p.lstat().st_mtime
            m = mine.fullmatch(p.name)
            if m:
                stale = age > _DAY or (m.group(1) == host and not _alive(int(m.group(2))))
            else:
                stale = legacy.fullmatch(p.name) is not None and age > 3600
            if stale and p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    """Flush a written file's data to disk, so the rename never publishes an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (where the platform allows opening directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` (its return value is ignored) and move the result over ``path``
    atomically.

    The directory must exist. The new file gets the usual ``0o666 & ~umask`` permissions
    (``mkstemp`` alone would leave it readable by its owner only). The temporary file is
    ``<name>.ebmcmc-tmp.<host>.<pid>.<random>`` beside the target; those that killed writes
    left are removed first (see the module's description).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(p, lambda tmp: open(tmp, "w").write("hi")).read_text()
        'hi'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist")
    _remove_stale(path)
    prefix = f"{path.name}{TMP_TAG}{_host()}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
