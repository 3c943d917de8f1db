"""Create (on demand, idempotently) the virtual environment of the JAX peers.

The JAX rows of the sampler benchmark (BlackJAX ChEES, BlackJAX NUTS, NumPyro NUTS) run in a
virtual environment of their own, ``benchmarks/.jaxenv``, so that ebmcmc's ``.venv`` and
``pyproject.toml`` never see JAX. This script builds it from ``requirements-jax.txt`` (the
pinned direct dependencies) constrained by ``jaxenv.lock`` (every package pinned, as recorded by
the last successful build), and records what it installed in ``.jaxenv/ebmcmc-jaxenv.json``.

Usage (any Python >= 3.10; ebmcmc's own interpreter is fine)::

    python benchmarks/peers/jaxenv.py            # create or reuse; prints the env's python
    python benchmarks/peers/jaxenv.py --check    # only report whether it is ready (exit 0/1)
    python benchmarks/peers/jaxenv.py --rebuild  # delete and create again
    python benchmarks/peers/jaxenv.py --relock   # also rewrite jaxenv.lock from the result

Exit status: 0 ready (the last stdout line is the interpreter's path), 1 not ready (``--check``),
2 could not be created, with a one-line reason on stderr starting with ``jaxenv:`` (for
example when the package index cannot be reached). No traceback in either case.

From Python (e.g. ebmcmc's benchmark)::

    from jaxenv import JaxEnvError, ensure   # with benchmarks/peers on sys.path
    try:
        python = ensure()
    except JaxEnvError as e:
        skip_jax_rows(reason=str(e))

Creating it needs a few minutes and about 1 GB of disk (jaxlib, scipy, pandas, matplotlib
come with the pins); reusing it costs one ``import`` check (a second or two).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENV = ROOT / "benchmarks" / ".jaxenv"
REQUIREMENTS = HERE / "requirements-jax.txt"
LOCK = HERE / "jaxenv.lock"
STAMP_NAME = "ebmcmc-jaxenv.json"
MODULES = ("jax", "jaxlib", "blackjax", "numpyro", "arviz")
PROBE_URL = "https://pypi.org/simple/blackjax/"

__all__ = ["ENV", "JaxEnvError", "ensure", "python_path", "is_ready"]


class JaxEnvError(RuntimeError):
    """The JAX environment could not be created; ``str(e)`` is a one-line reason."""


def python_path(env: Path = ENV) -> Path:
    """The environment's interpreter (it may not exist yet)."""
    return env / "bin" / "python"


def _fingerprint() -> str:
    h = hashlib.sha256()
    for path in (REQUIREMENTS, LOCK):
        if path.exists():
            h.update(path.read_bytes())
    h.update(f"{sys.version_info[:2]}".encode())
    return h.hexdigest()[:16]


def _stamp(env: Path) -> dict | None:
    try:
        return json.loads((env / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _versions(python: Path) -> dict[str, str] | None:
    """``{module: version}`` if every module imports in ``python``, else None."""
    code = (
        "import importlib.metadata as m, json\n"
        f"import {', '.join(MODULES)}\n"
        f"print(json.dumps({{k: m.version(k) for k in {list(MODULES)!r}}}))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def is_ready(env: Path = ENV) -> bool:
    """True if ``env`` was built from the current pins and its packages import."""
    stamp = _stamp(env)
    return (
        stamp is not None
        and stamp.get("fingerprint") == _fingerprint()
        and python_path(env).exists()
        and _versions(python_path(env)) is not None
    )


def _index_reachable(timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(PROBE_URL, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _base_python() -> str:
    """A plain interpreter to create the venv from (not a venv's own ``python``)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"jaxenv: {msg}", file=sys.stderr, flush=True)


def ensure(env: Path = ENV, *, rebuild: bool = False, relock: bool = False, quiet: bool = False):
    """Create ``env`` if it is missing or stale; return its interpreter's path.

    Raises:
        JaxEnvError: with a one-line reason, if the environment cannot be created.

    Example:
        >>> from jaxenv import ensure, JaxEnvError  # doctest: +SKIP
        >>> ensure()  # doctest: +SKIP
        PosixPath('.../benchmarks/.jaxenv/bin/python')
    """
    env = Path(env)
    if not rebuild and is_ready(env):
        return python_path(env)
    _log(f"building {env} (a few minutes) ...", quiet)
    if env.exists():
        shutil.rmtree(env)
    r = subprocess.run([_base_python(), "-m", "venv", str(env)], capture_output=True, text=True)
    if r.returncode != 0:
        raise JaxEnvError(f"python -m venv failed: {(r.stderr or r.stdout).strip()[-300:]}")
    py = python_path(env)
    cmd = [str(py), "-m", "pip", "install", "--timeout", "30", "--retries", "2"]
    cmd += ["-r", str(REQUIREMENTS)]
    if LOCK.exists() and not relock:
        cmd += ["-c", str(LOCK)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(env, ignore_errors=True)
        tail = " | ".join(line.strip() for line in (r.stderr or r.stdout).strip().splitlines()[-3:])
        if not _index_reachable():
            raise JaxEnvError(
                f"the package index ({PROBE_URL}) cannot be reached, so jax/blackjax/numpyro "
                f"cannot be installed; JAX peers unavailable (pip said: {tail[-300:]})"
            )
        raise JaxEnvError(f"pip install failed: {tail[-400:]}")
    versions = _versions(py)
    if versions is None:
        shutil.rmtree(env, ignore_errors=True)
        raise JaxEnvError("installed, but `import jax, blackjax, numpyro, arviz` fails")
    freeze = subprocess.run(
        [str(py), "-m", "pip", "freeze", "--all"], capture_output=True, text=True
    ).stdout
    if relock or not LOCK.exists():
        pins = [
            line
            for line in freeze.splitlines()
            if "==" in line and not line.lower().startswith(("pip==", "setuptools=="))
        ]
        LOCK.write_text(
            "# Every package of benchmarks/.jaxenv, as installed by the last `jaxenv.py --relock`\n"
            f"# (Python {sys.version_info[0]}.{sys.version_info[1]}, Linux x86_64); used as pip"
            " constraints.\n" + "\n".join(pins) + "\n"
        )
    (env / STAMP_NAME).write_text(
        json.dumps(
            {
                "fingerprint": _fingerprint(),
                "python": sys.version.split()[0],
                "versions": versions,
                "freeze": freeze.splitlines(),
            },
            indent=1,
        )
    )
    _log(f"ready: {', '.join(f'{k} {v}' for k, v in versions.items())}", quiet)
    return py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report readiness (exit 0/1)")
    ap.add_argument("--rebuild", action="store_true", help="delete and create again")
    ap.add_argument("--relock", action="store_true", help="rewrite jaxenv.lock from the result")
    ap.add_argument("--quiet", action="store_true", help="no progress messages")
    ap.add_argument("--env", type=Path, default=ENV, help=f"where (default {ENV})")
    args = ap.parse_args(argv)
    if args.check:
        ready = is_ready(args.env)
        print(python_path(args.env) if ready else f"jaxenv: {args.env} is not built or stale")
        return 0 if ready else 1
    try:
        py = ensure(
            args.env, rebuild=args.rebuild or args.relock, relock=args.relock, quiet=args.quiet
        )
    except JaxEnvError as e:
        print(f"jaxenv: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxenv: interrupted", file=sys.stderr)
        return 2
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
