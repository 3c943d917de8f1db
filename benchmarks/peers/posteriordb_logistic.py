"""Write the benchmark's posteriordb logistic regression record,
``benchmarks/peers/posteriordb/wells_data-wells_dae_c_model.json``.

posteriordb has logistic regressions (the arsenic-wells models) but no reference posterior
for any of them, and the records under ``tests/posteriordb/`` (which carry posteriordb's
reference draws) include none. So this script takes the posterior's definition, Stan code and
data from a posteriordb git snapshot and computes the reference itself, independently of any
MCMC: self-normalised importance sampling from a multivariate Student-t (5 degrees of freedom)
centred at the posterior mode with the inverse Hessian as its scale (the Laplace fit). The
posterior is 5-dimensional, log-concave and close to normal, so the weights are well behaved
(the record stores their effective sample size); the standard errors of the mean and sd are
the delta-method ones of the self-normalised estimator.

Usage (numpy and scipy; the JAX environment has both)::

    benchmarks/.jaxenv/bin/python benchmarks/peers/posteriordb_logistic.py \\
        /path/to/posteriordb/.git [--draws 1000000] [--seed 0]

The record has the layout of ``tests/posteriordb/<posterior>.json`` (posterior, source, model and
data names, dimensions, Stan code, data, reference) with ``reference.mcse_mean`` added and
``reference.inference`` describing the importance sampler; ``draws_subset`` holds 500 draws
resampled from the weighted ones. The model: ``switched ~ bernoulli_logit(alpha + x beta)``
with x = (centred dist/100, centred arsenic, their product, educ/4) and flat priors.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from scipy import special, stats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jax_runner import wells_design  # noqa: E402  (numpy-only helper, no JAX imported)

POSTERIOR = "wells_data-wells_dae_c_model"
DB = "posterior_database"
OUT = HERE / "posteriordb" / f"{POSTERIOR}.json"
NAMES = ["alpha", "beta[1]", "beta[2]", "beta[3]", "beta[4]"]
NU = 5.0


def _show(git_dir: str, path: str) -> bytes:
    cmd = ["git", "--git-dir", git_dir, "show", f"HEAD:{path}"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def _unzip_json(raw: bytes):
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        (member,) = [n for n in z.namelist() if n.endswith(".json")]
        return json.loads(z.read(member))


def log_post(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Log posterior (flat priors) for ``theta`` ``(M, 5)``: sum of Bernoulli-logit terms."""
    eta = theta[:, :1] + theta[:, 1:] @ x.T  # (M, N)
    return (y * eta - np.logaddexp(0.0, eta)).sum(-1)


def laplace(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mode (Newton) and the inverse Hessian there."""
    a = np.column_stack([np.ones(len(y)), x])
    theta = np.zeros(a.shape[1])
    for _ in range(50):
        p = special.expit(a @ theta)
        grad = a.T @ (y - p)
        hess = (a * (p * (1 - p))[:, None]).T @ a
        step = np.linalg.solve(hess, grad)
        theta = theta + step
        if np.abs(step).max() < 1e-12:
            break
    p = special.expit(a @ theta)
    hess = (a * (p * (1 - p))[:, None]).T @ a
    return theta, np.linalg.inv(hess)


def weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v)
    cdf = np.cumsum(w[order])
    return float(np.interp(q, cdf / cdf[-1], v[order]))


def reference(x, y, draws: int, seed: int, chunk: int = 50_000) -> dict:
    mode, cov = laplace(x, y)
    proposal = stats.multivariate_t(loc=mode, shape=cov, df=NU, seed=seed)
    thetas, logw = [], []
    for start in range(0, draws, chunk):
        t = proposal.rvs(size=min(chunk, draws - start))
        thetas.append(t)
        logw.append(log_post(t, x, y) - proposal.logpdf(t))
    theta, logw = np.concatenate(thetas), np.concatenate(logw)
    w = np.exp(logw - logw.max())
    wn = w / w.sum()
    ess = 1.0 / np.sum(wn**2)
    mean = wn @ theta
    dev = theta - mean
    var = wn @ dev**2
    sd = np.sqrt(var)
    # delta-method standard errors of the self-normalised estimates
    mcse_mean = np.sqrt(np.sum(wn[:, None] ** 2 * dev**2, axis=0))
    mcse_var = np.sqrt(np.sum(wn[:, None] ** 2 * (dev**2 - var) ** 2, axis=0))
    qs = {
        k: [weighted_quantile(theta[:, i], wn, q) for i in range(theta.shape[1])]
        for k, q in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95))
    }
    rng = np.random.default_rng(seed + 1)
    subset = theta[rng.choice(len(wn), size=500, replace=True, p=wn)]
    return {
        "names": NAMES,
        "n_draws": int(round(ess)),
        "n_chains": None,
        "inference": {
            "method": "self-normalised importance sampling (not MCMC; computed by "
            "benchmarks/peers/posteriordb_logistic.py)",
            "proposal": f"multivariate Student-t, df {NU:g}, at the posterior mode, scale = "
            "inverse Hessian there",
            "proposal_draws": draws,
            "importance_ess": float(ess),
            "max_normalised_weight": float(wn.max()),
            "seed": seed,
            "laplace_mode": [float(v) for v in mode],
            "laplace_sd": [float(v) for v in np.sqrt(np.diag(cov))],
        },
        "mean": [float(f"{v:.10g}") for v in mean],
        "sd": [float(f"{v:.8g}") for v in sd],
        **{k: [float(f"{v:.8g}") for v in vals] for k, vals in qs.items()},
        "mcse_mean": [float(f"{v:.6g}") for v in mcse_mean],
        "mcse_sd": [float(f"{v:.6g}") for v in mcse_var / (2 * sd)],
        "draws_subset": [[float(f"{v:.7g}") for v in row] for row in subset],
    }


def _dumps(obj, indent: int = 0) -> str:
    """JSON with one key per line and every list of numbers (or of such rows) on one line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        rows = [f"{pad}{json.dumps(r, separators=(',', ':'))}" for r in obj]
        return "[\n" + ",\n".join(rows) + "\n" + " " * indent + "]"
    return json.dumps(obj, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("git_dir", help="a posteriordb git directory (its .git, or a bare mirror)")
    ap.add_argument("--draws", type=int, default=1_000_000, help="importance-sampling draws")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    git = args.git_dir
    commit = subprocess.run(
        ["git", "--git-dir", git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    paths = {"posterior": f"{DB}/posteriors/{POSTERIOR}.json"}
    post = json.loads(_show(git, paths["posterior"]))
    paths["model"] = f"{DB}/models/stan/{post['model_name']}.stan"
    paths["data"] = f"{DB}/data/data/{post['data_name']}.json.zip"
    data = _unzip_json(_show(git, paths["data"]))
    x, y = wells_design(data)
    ref = reference(x, y, args.draws, args.seed)
    record = {
        "posterior": POSTERIOR,
        "source": {"repository": "https://github.com/stan-dev/posteriordb", "commit": commit}
        | paths,
        "model_name": post["model_name"],
        "data_name": post["data_name"],
        "dimensions": post["dimensions"],
        "stan_code": _show(git, paths["model"]).decode(),
        "data": data,
        "reference": ref,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dumps(record) + "\n")
    inf = ref["inference"]
    print(
        f"{args.out}: importance ESS {inf['importance_ess']:.0f} of {args.draws}, "
        f"max weight {inf['max_normalised_weight']:.2e}"
    )
    for i, n in enumerate(NAMES):
        print(
            f"  {n:8s} mean {ref['mean'][i]: .5f} (se {ref['mcse_mean'][i]:.1e})  "
            f"sd {ref['sd'][i]:.5f} (se {ref['mcse_sd'][i]:.1e})  "
            f"Laplace {inf['laplace_mode'][i]: .5f} / {inf['laplace_sd'][i]:.5f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
