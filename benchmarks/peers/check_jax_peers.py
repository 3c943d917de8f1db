"""Check that each JAX peer samples the 2-D Gaussian correctly before its rows are compared.

::

    python benchmarks/peers/check_jax_peers.py          # any Python; builds the env if needed
    python benchmarks/peers/check_jax_peers.py --smoke  # every target x sampler, tiny sizes

Each sampler runs on ``gaussian`` (mean 0, covariance [[1, .9], [.9, 1]]) at small sizes and
must have every coordinate's mean within 4 MCSE of 0 (ArviZ ``mcse_mean``). The variance
(mean of x^2 against 1, in its own MCSE) and the rank R-hat are printed beside it; the
variance must be within 4 MCSE too. Exit status 0 when all pass, 1 when one fails, 2 when the
JAX environment is unavailable (the reason is printed). About a minute, mostly compilation.

``--smoke`` instead runs ``jax_runner.py --smoke``: every target with every sampler at tiny sizes
(8 chains, 30 + 30 iterations) to check that each runs at all; its statistics mean nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from client import JaxJobFailed, JaxPeersUnavailable, run_jax_job  # noqa: E402

Z = 4.0
#: sizes: enough draws for MCSE-based checks to have power, small enough to run in seconds
JOBS = [
    {"sampler": "blackjax_chees", "chains": 256, "warmup": 300, "draws": 300},
    {"sampler": "blackjax_nuts", "chains": 16, "warmup": 300, "draws": 500},
    {"sampler": "numpyro_nuts", "chains": 16, "warmup": 300, "draws": 500},
]


def main(argv: list[str]) -> int:
    if "--smoke" in argv:
        import jaxenv

        try:
            python = jaxenv.ensure()
        except jaxenv.JaxEnvError as e:
            print(f"JAX peers unavailable: {e}")
            return 2
        return subprocess.run([str(python), str(HERE / "jax_runner.py"), "--smoke"]).returncode
    failed = 0
    for spec in JOBS:
        job = {"target": "gaussian", "seed": 1, "repeat": False, **spec}
        try:
            r = run_jax_job(job)
        except JaxPeersUnavailable as e:
            print(f"JAX peers unavailable: {e}")
            return 2
        except JaxJobFailed as e:
            print(f"{spec['sampler']:15s} FAILED to run: {e}")
            failed += 1
            continue
        s = r["summary"]
        ok = s["max_z_mean"] < Z and s["max_z_var"] < Z
        failed += not ok
        zm = ", ".join(f"{z:.2f}" for z in s["z_mean"])
        zv = ", ".join(f"{z:.2f}" for z in s["z_var"])
        print(
            f"{spec['sampler']:15s} {'ok  ' if ok else 'FAIL'} |mean|/MCSE [{zm}]  "
            f"|var err|/MCSE [{zv}]  R-hat {s['max_r_hat']:.3f}  ESS {s['min_ess_bulk']:.0f}  "
            f"({spec['chains']} chains, {spec['warmup']} + {spec['draws']})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
