"""What ``tests/test_cifar_drl.py`` and ``tests/test_cifar_cdrl.py`` share: loading an example
script as a module, running it in a subprocess (one CPU thread, this checkout's ``ebmcmc``) and
reading the checkpoint it writes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import warnings
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


#: what a gloo rank prints when its worker threads are torn down after its work is done; seen
#: once in about a hundred launches on a loaded 2-core machine, never reproduced on demand
TEARDOWN_ABORT = "terminate called without an active exception"


def run_torchrun(script: Path, args: list[str], out: Path, timeout: float):
    """``torchrun --nproc_per_node 2 --standalone script *args`` writing into ``out``.

    A launch that fails only by the teardown abort above is run once more from the same
    starting files (a warning says so); any other failure, or a second abort, is returned.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone",  # a free port, so parallel test workers never collide
           str(script), *args]  # fmt: skip
    before = out.with_name(out.name + ".before")
    if out.exists():
        shutil.copytree(out, before)
    r = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT)  # fmt: skip
    if r.returncode != 0 and TEARDOWN_ABORT in r.stderr:
        warnings.warn(f"torchrun: a rank aborted at teardown; launching again\n{r.stderr[-1500:]}",
                      stacklevel=2)  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
        if before.exists():
            shutil.copytree(before, out)
        r = subprocess.run(cmd, env=script_env(), capture_output=True, text=True,
                           timeout=timeout, cwd=ROOT)  # fmt: skip
    shutil.rmtree(before, ignore_errors=True)
    return r


def read_ckpt(path: Path) -> dict:
    """The ``checkpoint.pt`` of run directory ``path``, on the CPU."""
    return torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
