"""Run JAX peer jobs from ebmcmc's own environment (no JAX needed here).

::

    import sys; sys.path.insert(0, "benchmarks/peers")
    from client import JaxPeersUnavailable, run_jax_job

    try:
        result = run_jax_job({"target": "banana", "sampler": "blackjax_chees"})
    except JaxPeersUnavailable as e:        # no JAX environment and no way to build it
        print(f"JAX rows skipped: {e}")

``run_jax_job`` builds ``benchmarks/.jaxenv`` on first use (``jaxenv.ensure``), runs
``jax_runner.py`` in it on the job and returns its JSON result (see ``jax_runner.py`` for the
job's keys and the result's fields). ``init`` may be a numpy array.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jaxenv  # noqa: E402

RUNNER = HERE / "jax_runner.py"

__all__ = ["JaxPeersUnavailable", "JaxJobFailed", "run_jax_job"]


class JaxPeersUnavailable(RuntimeError):
    """The JAX environment is missing and cannot be built; ``str(e)`` says why."""


class JaxJobFailed(RuntimeError):
    """The runner rejected the job or crashed; ``str(e)`` has its message."""


def run_jax_job(job: dict, timeout: float | None = None, quiet: bool = True) -> dict:
    """Run one job in the JAX environment and return the runner's result dict.

    Raises:
        JaxPeersUnavailable: the environment cannot be built (e.g. no package index).
        JaxJobFailed: a bad job, a crash or a timeout.
    """
    try:
        python = jaxenv.ensure(quiet=quiet)
    except jaxenv.JaxEnvError as e:
        raise JaxPeersUnavailable(str(e)) from None
    job = dict(job)
    if job.get("init") is not None and hasattr(job["init"], "tolist"):
        job["init"] = job["init"].tolist()
    try:
        r = subprocess.run(
            [str(python), str(RUNNER)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise JaxJobFailed(f"job timed out after {timeout} s: {job.get('sampler')}") from None
    if not quiet and r.stderr:
        print(r.stderr, file=sys.stderr, end="")
    lines = r.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])
        raise JaxJobFailed(f"runner exited {r.returncode} without a result: {tail}") from None
    if not result.get("ok"):
        raise JaxJobFailed(result.get("error", "unknown error"))
    return result
