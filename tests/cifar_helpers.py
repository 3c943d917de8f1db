"""What ``tests/test_cifar_drl.py`` and ``tests/test_cifar_cdrl.py`` share: loading an example
script as a module, running it in a subprocess (one CPU thread, this checkout's ``ebmcmc``) and
reading the checkpoint it writes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(script: Path, name: str) -> ModuleType:
    """The example ``script`` imported as module ``name`` (its ``main`` does not run)."""
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def script_env() -> dict[str, str]:
    """The environment of a script's subprocess: this checkout first on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_script(script: Path, args: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """``python script *args`` from the repository root, its output captured as text."""
    cmd = [sys.executable, str(script), *args]
    return subprocess.run(
        cmd, env=script_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw
    )


def read_ckpt(path: Path) -> dict:
    """The ``checkpoint.pt`` of run directory ``path``, on the CPU."""
    return torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
