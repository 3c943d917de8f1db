"""Peak memory of a long run streamed to disk, and a bit-for-bit resume of the trace on disk.

MALA on a 2-D Gaussian (correlation 0.9), ``CHAINS`` chains, recording the default draws
(``"x"``) and statistics, streamed with ``out=`` (``checkpoint_every=1000``). Each run is a
fresh process measured by ``/usr/bin/time -v`` (peak RSS, wall and CPU time). Then, unless
``--no-resume``, the same run is killed part-way (the process ends without any clean-up,
``os._exit`` from inside the energy, right in the middle of a step), resumed from its directory
in another fresh process, and the two directories are compared chunk file by chunk file
(every variable and statistic, bit for bit) along with the final state and generator state.

Run::

    python benchmarks/streaming_memory.py --steps 200000              # the full measurement
    python benchmarks/streaming_memory.py --steps 10000 25000 50000   # peak vs. run length
    python benchmarks/streaming_memory.py --smoke --out /tmp/sm       # 16 chains, 3,000 steps (CI)

With ``--out DIR`` the rows are also written to ``DIR/streaming_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAINS = 1024

RUN = r"""
import os, sys, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
import ebmcmc
from ebmcmc.kernels import MALA
from ebmcmc.targets import Gaussian

steps, out, die_at = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
target = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
calls = [0]

def energy(x):
    calls[0] += 1
    if calls[0] == die_at:
        os._exit(3)  # killed: no clean-up, in the middle of a step
    return target(x)

x0 = torch.randn(int(sys.argv[4]), 2, generator=torch.Generator().manual_seed(0))
if os.path.isdir(out):  # resume what is on disk
    tr = ebmcmc.Trace.load(out)
    tr = ebmcmc.sample(energy, tr.kernel, tr, steps - tr.num_draws, progress=False, out=out)
else:
    tr = ebmcmc.sample(energy, MALA(0.5), x0, steps, generator=0, progress=False, out=out,
                       checkpoint_every=1000)
print("draws", tr.num_draws, "max_rhat", tr.attrs.get("max_rhat"))
"""


def _timed(args: list[str]) -> dict:
    """Run the sampling script under /usr/bin/time -v; its figures and return code."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RUN, *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    text = r.stderr

    def grab(pattern: str) -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else "nan"

    wall = grab(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
    parts = [float(p) for p in wall.split(":")] if wall != "nan" else [float("nan")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {
        "returncode": r.returncode,
        "peak_rss_mb": int(grab(r"Maximum resident set size \(kbytes\): (\d+)")) / 1024,
        "wall_s": round(seconds, 1),
        "cpu_s": round(
            float(grab(r"User time \(seconds\): ([\d.]+)"))
            + float(grab(r"System time \(seconds\): ([\d.]+)")),
            1,
        ),  # fmt: skip
        "stdout": r.stdout.strip()[-200:],
    }


def _same_directories(a: Path, b: Path) -> bool:
    """Every chunk file's arrays equal, and the same final state and generator state."""
    import h5py
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    import ebmcmc

    ta, tb = ebmcmc.Trace.load(a), ebmcmc.Trace.load(b)
    if ta.num_draws != tb.num_draws:
        return False
    if not (torch.equal(ta.final_state.position, tb.final_state.position)
            and torch.equal(ta.generator_state, tb.generator_state)):  # fmt: skip
        return False
    files = sorted(p.name for p in a.glob("draws-*.nc"))
    if files != sorted(p.name for p in b.glob("draws-*.nc")):
        return False
    for name in files:
        with h5py.File(a / name, "r") as fa, h5py.File(b / name, "r") as fb:
            keys = [k for k in fa if k.startswith(("var.", "stat.", "const."))]
            if sorted(keys) != sorted(k for k in fb if k.startswith(("var.", "stat.", "const."))):
                return False
            if not all(np.array_equal(fa[k][()], fb[k][()]) for k in keys):
                return False
    return True


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[200_000])
    p.add_argument("--chains", type=int, default=CHAINS)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--smoke", action="store_true", help="16 chains, 3,000 steps (CI)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.chains = [3000], 16
    tmp = Path(tempfile.mkdtemp(prefix="ebmcmc-stream-"))
    rows = []
    try:
        for steps in args.steps:
            out = tmp / f"full-{steps}"
            row = {"chains": args.chains, "steps": steps}
            row.update(_timed([str(steps), str(out), "0", str(args.chains)]))
            size = sum(f.stat().st_size for f in out.iterdir())
            row["on_disk_mb"] = round(size / 2**20, 1)
            if not args.no_resume:
                killed = tmp / f"killed-{steps}"
                die = 2 + int(steps * 0.61)  # about 61 % through, in the middle of a step
                first = _timed([str(steps), str(killed), str(die), str(args.chains)])
                resumed = _timed([str(steps), str(killed), "0", str(args.chains)])
                row["killed_returncode"] = first["returncode"]
                row["resume_peak_rss_mb"] = resumed["peak_rss_mb"]
                row["resumed_bit_identical"] = _same_directories(out, killed)
                shutil.rmtree(killed, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "streaming_memory.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
