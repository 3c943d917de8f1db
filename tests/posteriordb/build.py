"""Regenerate the stored ``<posterior>.json`` files from a posteriordb git snapshot (not run by
the tests; nothing is downloaded at test time).

Usage::

    python tests/posteriordb/build.py /path/to/posteriordb/.git

It reads, at the snapshot's ``HEAD``, each posterior's definition, Stan model, data
(``data/data/*.json.zip``) and reference draws (``reference_posteriors/draws/draws/*.json.zip``:
10 chains x 1,000 thinned draws) and writes one small JSON per posterior next to this file:
the data as posteriordb stores it, the Stan code, and per reference quantity the mean, sd,
5/50/95 % quantiles, ArviZ's MCSE of the sd, the reference run's bulk ESS and R-hat, and a
subset of 500 reference draws (the first 50 of every chain) for distribution-level comparisons.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import arviz as az
import numpy as np

POSTERIORS = [
    "eight_schools-eight_schools_noncentered",
    "sblrc-blr",
    "kidiq-kidscore_momiq",
    "gp_pois_regr-gp_pois_regr",
    "arK-arK",
    "low_dim_gauss_mix-low_dim_gauss_mix",
]
DB = "posterior_database"
SUBSET_PER_CHAIN = 50


def _show(git_dir: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], check=True, capture_output=True
    ).stdout


def _unzip_json(raw: bytes):
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        (member,) = [n for n in z.namelist() if n.endswith(".json")]
        return json.loads(z.read(member))


def _round(a: np.ndarray, digits: int = 8) -> list:
    return [float(f"{x:.{digits}g}") for x in np.ravel(a)]


def _dumps(obj, indent: int = 0) -> str:
    """JSON with one key per line and every list of numbers (or of such rows) on one line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        rows = [f"{pad}{json.dumps(r, separators=(',', ':'))}" for r in obj]
        return "[\n" + ",\n".join(rows) + "\n" + " " * indent + "]"
    return json.dumps(obj, separators=(", ", ": ") if isinstance(obj, dict) else (",", ":"))


def build(git_dir: str, out: Path) -> None:
    commit = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for name in POSTERIORS:
        paths = {"posterior": f"{DB}/posteriors/{name}.json"}
        post = json.loads(_show(git_dir, paths["posterior"]))
        paths["model"] = f"{DB}/models/stan/{post['model_name']}.stan"
        paths["data"] = f"{DB}/data/data/{post['data_name']}.json.zip"
        ref_name = post["reference_posterior_name"]
        paths["reference_draws"] = f"{DB}/reference_posteriors/draws/draws/{ref_name}.json.zip"
        paths["reference_info"] = f"{DB}/reference_posteriors/draws/info/{ref_name}.info.json"
        data = _unzip_json(_show(git_dir, paths["data"]))
        chains = _unzip_json(_show(git_dir, paths["reference_draws"]))
        info = json.loads(_show(git_dir, paths["reference_info"]))
        names = list(chains[0])
        draws = np.array([[c[k] for k in names] for c in chains])  # (chain, name, draw)
        draws = draws.transpose(0, 2, 1)  # (chain, draw, name)
        flat = draws.reshape(-1, len(names))
        diag = info["diagnostics"]
        order = [diag["diagnostic_information"]["names"].index(n) for n in names]
        q = np.quantile(flat, [0.05, 0.5, 0.95], axis=0)
        mcse_sd = [float(az.mcse(draws[:, :, i], method="sd")) for i in range(len(names))]
        subset = draws[:, :SUBSET_PER_CHAIN].reshape(-1, len(names))
        record = {
            "posterior": name,
            "source": {
                "repository": "https://github.com/stan-dev/posteriordb",
                "commit": commit,
                **paths,
            },
            "model_name": post["model_name"],
            "data_name": post["data_name"],
            "dimensions": post["dimensions"],
            "stan_code": _show(git_dir, paths["model"]).decode(),
            "data": data,
            "reference": {
                "names": names,
                "n_draws": int(flat.shape[0]),
                "n_chains": len(chains),
                "inference": info["inference"],
                "mean": _round(flat.mean(0), 10),
                "sd": _round(flat.std(0, ddof=1)),
                "q05": _round(q[0]),
                "q50": _round(q[1]),
                "q95": _round(q[2]),
                "mcse_sd": _round(np.array(mcse_sd), 6),
                "ess_bulk": _round(np.array(diag["effective_sample_size_bulk"])[order], 6),
                "r_hat": _round(np.array(diag["r_hat"])[order], 6),
                "draws_subset": [_round(row, 7) for row in subset],
            },
        }
        path = out / f"{name}.json"
        path.write_text(_dumps(record) + "\n")
        print(f"{path.name}: {len(names)} quantities, {path.stat().st_size / 1000:.0f} kB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(sys.argv[1], Path(__file__).resolve().parent)
