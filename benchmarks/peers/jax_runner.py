"""Run one JAX peer sampler on one benchmark target and print one JSON result.

Run it with the JAX environment's interpreter (``benchmarks/peers/jaxenv.py`` builds it)::

    benchmarks/.jaxenv/bin/python benchmarks/peers/jax_runner.py '{"target": "banana",
        "sampler": "blackjax_chees"}'
    echo '{"target": "gaussian", "sampler": "numpyro_nuts", "chains": 4}' \\
        | benchmarks/.jaxenv/bin/python benchmarks/peers/jax_runner.py
    benchmarks/.jaxenv/bin/python benchmarks/peers/jax_runner.py --smoke   # every pair, tiny

The job (a JSON object, from argv[1] or stdin; absent keys take the defaults):

- ``target``: ``gaussian``, ``banana``, ``gaussian100``, ``funnel10_nc``, ``logistic`` or
  ``blr`` (see ``common.py`` for their exact definitions).
- ``sampler``: ``blackjax_chees``, ``blackjax_nuts`` or ``numpyro_nuts``.
- ``chains`` (default 1,024 for ChEES, 128 for the NUTS), ``warmup`` (500), ``draws`` (1,000),
  ``seed`` (0: the JAX PRNG key), ``dtype`` (``float32`` or ``float64``).
- ``init``: starting points, a ``chains x dim`` list; default
  ``common.initial_points(target, chains, init_seed)`` with ``init_seed`` defaulting to
  ``seed``.
- ``repeat`` (true): run a second identical call to time the run without compilation.
- ``chees_learning_rate`` (0.025, Adam), ``chees_step_size`` (0.1, initial),
  ``chees_mass_matrix`` (null: BlackJAX's default identity metric; ``"diagonal"``: its opt-in
  ensemble-estimated diagonal one).
- ``posteriordb_dir``: where ``<posterior>.json`` records are (see ``common.find_posteriordb``).
- ``save_draws``: a path; the draws are saved there as ``.npy`` (``chains x draws x dim``).

The result (one JSON object on stdout; progress and warnings go to stderr): the job as run,
the versions, timings (``first_*``: compile + run, ``run_*``: the second identical call,
``compile_*``: their difference; ``*_cpu_s`` from ``time.process_time``, ``*_wall_s`` from
``time.perf_counter``), gradient counts, the tuned parameters, and ``summary``: per coordinate
the mean, variance and ArviZ ``ess_bulk``, ``ess_tail``, ``mcse_mean``, ``r_hat`` of the draws
and of the squared centred draws ``(x - truth.mean)^2``, the errors in MCSE units against the
reference, and the headline figures (min bulk ESS, ESS per CPU-second, max R-hat, max |z|).

Gradient counts: ``grads_warmup`` and ``grads_sampling`` add up every chain's leapfrog steps
(one gradient each) over the iterations, as reported by the samplers' infos (NUTS: trajectory
length ``num_integration_steps`` / NumPyro ``num_steps``; ChEES: the jittered number of
steps), plus one gradient per chain at initialisation (NumPyro's initial step-size search is
not counted). Under ``vmap`` every iteration runs in lock step: a NUTS batch costs its deepest
trajectory, i.e. ``chains * (2^K - 1)`` gradients with ``K`` the most doublings of any chain in
that iteration (``lockstep_*``); ``lockstep_maxsteps_*`` is the smaller ``chains * max steps``.
ChEES's chains share the number of steps, so its lock-step work equals its useful work.

One thread, CPU: ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` are set before
JAX is imported; ``float64`` jobs turn on ``jax_enable_x64``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import numpy as np  # noqa: E402

_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _log(msg: str) -> None:
    print(f"[jax_runner] {msg}", file=sys.stderr, flush=True)


def _setup_jax(dtype: str):
    """Import JAX on one CPU thread, with x64 on for float64. Returns (jax, jnp)."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_XLA_ONE_THREAD}".strip()
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    return jax, jnp


# ----------------------------------------------------------------------------- targets


def make_logdensity(target: str, dtype, jnp, posteriordb_dir=None):
    """``(logdensity(x) for x of shape (dim,), to_quantities(draws ndarray) -> ndarray)``."""
    f = lambda a: jnp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype)  # noqa: E731
    ident = lambda d: d  # noqa: E731
    if target == "gaussian":
        prec = f(np.linalg.inv(np.array(common.GAUSSIAN_COV)))
        return (lambda x: -0.5 * x @ (prec @ x)), ident
    if target == "banana":
        return (lambda x: -0.5 * (1.0 - x[0]) ** 2 - 5.0 * (x[1] - x[0] ** 2) ** 2), ident
    if target == "gaussian100":
        inv_var = f(1.0 / common.gaussian100_variances())
        return (lambda x: -0.5 * jnp.sum(inv_var * x * x)), ident
    if target == "funnel10_nc":
        # v = 3 z0, x_i = exp(v/2) z_i: the funnel's density times the Jacobian is N(0, I) in z
        return (lambda z: -0.5 * jnp.sum(z * z)), ident
    if target == "logistic":
        rec = common.load_posteriordb(common.POSTERIORDB[target], posteriordb_dir)
        x, y = wells_design(rec["data"])
        xj, yj = f(x), f(y)

        def logistic(theta):
            eta = theta[0] + xj @ theta[1:]
            # log Bernoulli-logit: y * eta - log(1 + e^eta)
            return jnp.sum(yj * eta - jnp.logaddexp(0.0, eta))

        return logistic, ident
    if target == "blr":
        rec = common.load_posteriordb(common.POSTERIORDB[target], posteriordb_dir)
        xj, yj = f(rec["data"]["X"]), f(rec["data"]["y"])

        def blr(theta):
            beta, log_sigma = theta[:-1], theta[-1]
            sigma = jnp.exp(log_sigma)
            resid = yj - xj @ beta
            lp = -0.5 * jnp.sum(beta * beta) / 100.0 - 0.5 * sigma * sigma / 100.0
            lp = lp - 0.5 * jnp.sum(resid * resid) / (sigma * sigma) - yj.shape[0] * log_sigma
            return lp + log_sigma  # + log |d sigma / d log sigma|

        def to_quantities(d):
            return np.concatenate([d[..., :-1], np.exp(d[..., -1:])], axis=-1)

        return blr, to_quantities
    raise ValueError(f"unknown target {target!r}; known: {common.TARGETS}")


def wells_design(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """The Stan program's transformed data of ``wells_dae_c_model``: the ``(N, 4)`` design
    (centred dist/100, centred arsenic, their product, educ/4) and the ``(N,)`` outcomes."""
    dist = np.asarray(data["dist"], float)
    ars = np.asarray(data["arsenic"], float)
    educ = np.asarray(data["educ"], float)
    c_dist100 = (dist - dist.mean()) / 100.0
    c_ars = ars - ars.mean()
    x = np.stack([c_dist100, c_ars, c_dist100 * c_ars, educ / 4.0], axis=-1)
    return x, np.asarray(data["switched"], float)


# ----------------------------------------------------------------------------- samplers


def _lockstep(steps: np.ndarray) -> tuple[int, int]:
    """Lock-step work of a vmapped NUTS run from per-(iteration, chain) steps ``(T, C)``:
    (sum_t C (2^K_t - 1), sum_t C max_c n) with K_t the most doublings in iteration t."""
    steps = np.asarray(steps, dtype=np.int64)
    if steps.size == 0:
        return 0, 0
    chains = steps.shape[1]
    depth = np.ceil(np.log2(steps.max(axis=1) + 1.0)).astype(np.int64)
    return int(chains * ((2**depth) - 1).sum()), int(chains * steps.max(axis=1).sum())


def _timed(fn, jax):
    """Run ``fn()`` and wait for its arrays: (result, cpu seconds, wall seconds)."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    out = jax.block_until_ready(out)
    return out, time.process_time() - c0, time.perf_counter() - w0


def run_blackjax_chees(job, logdensity, init, jax, jnp):
    import blackjax
    import optax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    chains, warmup, draws = job["chains"], job["warmup"], job["draws"]
    lr = float(job.get("chees_learning_rate", 0.025))
    step0 = float(job.get("chees_step_size", 0.1))
    mass = job.get("chees_mass_matrix")

    adapt = blackjax.chees_adaptation(
        logdensity,
        chains,
        mass_matrix_estimation=mass,
        adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}),
    )

    @jax.jit
    def run(key, positions):
        key_warmup, key_sample = jax.random.split(key)
        (states, params), winfo = adapt.run(
            key_warmup, positions, step0, optax.adam(lr), warmup, max_sampling_steps=draws
        )
        step = blackjax.dynamic_hmc(logdensity, **params).step

        def one(states, k):
            states, info = jax.vmap(step)(jax.random.split(k, chains), states)
            stats = (info.num_integration_steps, info.acceptance_rate, info.is_divergent)
            return states, (states.position, stats)

        _, (pos, (nsteps, acc, div)) = jax.lax.scan(
            one, states, jax.random.split(key_sample, draws)
        )
        tuned = {
            "step_size": params["step_size"],
            "mean_num_steps": params["integration_steps_params"][0],
            "inverse_mass_matrix": params["inverse_mass_matrix"],
        }
        return pos, winfo.info.num_integration_steps, nsteps, acc, div, tuned

    key = jax.random.PRNGKey(job["seed"])
    return run, (key, init), lambda out: _chees_result(out)


def _chees_result(out):
    pos, wsteps, nsteps, acc, div, tuned = out
    wsteps, nsteps = np.asarray(wsteps), np.asarray(nsteps)  # (iterations, chains)
    imm = np.asarray(tuned["inverse_mass_matrix"])
    return {
        "draws": np.swapaxes(np.asarray(pos), 0, 1),
        "warmup_steps": wsteps,
        "sampling_steps": nsteps,
        "acceptance": float(np.mean(np.asarray(acc))),
        "divergences": int(np.sum(np.asarray(div))),
        "tuned": {
            "step_size": float(tuned["step_size"]),
            "mean_num_steps": float(tuned["mean_num_steps"]),
            "trajectory_length": float(tuned["step_size"] * tuned["mean_num_steps"]),
            "inverse_mass_matrix_range": [float(imm.min()), float(imm.max())],
        },
        "lockstep_model": "chains share the number of steps",
    }


def run_blackjax_nuts(job, logdensity, init, jax, jnp):
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    chains, warmup, draws = job["chains"], job["warmup"], job["draws"]
    adapt = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity,
        adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}),
    )
    kernel = blackjax.nuts.build_kernel()

    @jax.jit
    def run(key, positions):
        key_warmup, key_sample = jax.random.split(key)

        def warm(k, x0):  # each chain runs its own Stan-style window adaptation
            (state, params), info = adapt.run(k, x0, warmup)
            return state, params, info.info.num_integration_steps

        states, params, wsteps = jax.vmap(warm)(jax.random.split(key_warmup, chains), positions)
        params = {k: params[k] for k in ("step_size", "inverse_mass_matrix")}

        def one(states, k):
            def step(kk, s, p):
                return kernel(kk, s, logdensity, p["step_size"], p["inverse_mass_matrix"])

            states, info = jax.vmap(step)(jax.random.split(k, chains), states, params)
            stats = (info.num_integration_steps, info.acceptance_rate, info.is_divergent)
            return states, (states.position, stats)

        _, (pos, (nsteps, acc, div)) = jax.lax.scan(
            one, states, jax.random.split(key_sample, draws)
        )
        return pos, wsteps, nsteps, acc, div, params

    key = jax.random.PRNGKey(job["seed"])

    def result(out):
        pos, wsteps, nsteps, acc, div, params = out
        eps = np.asarray(params["step_size"])
        return {
            "draws": np.swapaxes(np.asarray(pos), 0, 1),
            "warmup_steps": np.asarray(wsteps).T,  # (chains, it) -> (it, chains)
            "sampling_steps": np.asarray(nsteps),
            "acceptance": float(np.mean(np.asarray(acc))),
            "divergences": int(np.sum(np.asarray(div))),
            "tuned": {"step_size_range": [float(eps.min()), float(eps.max())]},
            "lockstep_model": "vmapped NUTS: each iteration costs the deepest trajectory",
        }

    return run, (key, init), result


def run_numpyro_nuts(job, logdensity, init, jax, jnp):
    from numpyro.infer import MCMC, NUTS

    chains, warmup, draws = job["chains"], job["warmup"], job["draws"]
    mcmc = MCMC(
        NUTS(potential_fn=lambda z: -logdensity(z)),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(job["seed"]))

    # NumPyro re-traces and re-compiles its loops on every warmup()/run() call (its
    # fori_collect jits a fresh closure each time), so a second call would time compilation
    # again. Tracing the whole warmup() + run() inside one jax.jit (NumPyro supports running
    # MCMC under JAX transforms) compiles it once; the first call still pays everything.
    @jax.jit
    def run(key_w, key_s, positions):
        # warmup() then run(), NumPyro's documented split, to read the warm-up's step counts
        mcmc.warmup(key_w, init_params=positions, extra_fields=("num_steps",), collect_warmup=True)
        wsteps = mcmc.get_extra_fields(group_by_chain=True)["num_steps"]
        mcmc.run(key_s, extra_fields=("num_steps", "accept_prob"))
        extra = mcmc.get_extra_fields(group_by_chain=True)
        pos = mcmc.get_samples(group_by_chain=True)
        div = extra["diverging"]
        state = mcmc.last_state
        return pos, wsteps, extra["num_steps"], extra["accept_prob"], div, state.adapt_state

    def result(out):
        pos, wsteps, nsteps, acc, div, adapt_state = out
        eps = np.asarray(adapt_state.step_size)
        return {
            "draws": np.asarray(pos),
            "warmup_steps": np.asarray(wsteps).T,
            "sampling_steps": np.asarray(nsteps).T,
            "acceptance": float(np.mean(np.asarray(acc))),
            "divergences": int(np.sum(np.asarray(div))),
            "tuned": {"step_size_range": [float(eps.min()), float(eps.max())]},
            "lockstep_model": "vectorized NUTS: each iteration costs the deepest trajectory",
        }

    return run, (key_warmup, key_sample, init), result


SAMPLER_FNS = {
    "blackjax_chees": run_blackjax_chees,
    "blackjax_nuts": run_blackjax_nuts,
    "numpyro_nuts": run_numpyro_nuts,
}


# ----------------------------------------------------------------------------- diagnostics


def summarize(draws: np.ndarray, truth: common.Truth) -> dict:
    """Per-coordinate diagnostics of ``draws`` ``(chains, draws, P)`` against ``truth``."""
    import arviz as az

    def diag(a: np.ndarray) -> dict:
        ds = az.convert_to_dataset({"q": a})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = {
                "ess_bulk": az.ess(ds, method="bulk")["q"].values,
                "ess_tail": az.ess(ds, method="tail")["q"].values,
                "mcse_mean": az.mcse(ds, method="mean")["q"].values,
            }
            one = a.shape[0] == 1
            out["r_hat"] = np.full(a.shape[-1], np.nan) if one else az.rhat(ds)["q"].values
        out["mean"] = a.reshape(-1, a.shape[-1]).mean(0)
        return out

    flat = draws.reshape(-1, draws.shape[-1])
    d1 = diag(draws)
    d2 = diag((draws - truth.mean) ** 2)
    z_mean = np.abs(d1["mean"] - truth.mean) / np.sqrt(d1["mcse_mean"] ** 2 + truth.mean_se**2)
    z_var = np.abs(d2["mean"] - truth.var) / np.sqrt(d2["mcse_mean"] ** 2 + truth.var_se**2)
    finite = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
    rhat = np.concatenate([d1["r_hat"], d2["r_hat"]])
    return {
        "names": truth.names,
        "truth_source": truth.source,
        "mean": finite(d1["mean"]),
        "var": finite(flat.var(0, ddof=1)),
        "x": {k: finite(v) for k, v in d1.items()},
        "sq_centred": {k: finite(v) for k, v in d2.items()},
        "z_mean": finite(z_mean),
        "z_var": finite(z_var),
        "min_ess_bulk": float(np.min(d1["ess_bulk"])),
        "min_ess_tail": float(np.min(d1["ess_tail"])),
        "min_ess_bulk_sq": float(np.min(d2["ess_bulk"])),
        "max_r_hat": float(np.nanmax(rhat)) if np.isfinite(rhat).any() else None,
        "max_z_mean": float(np.max(z_mean)),
        "max_z_var": float(np.max(z_var)),
    }


# ----------------------------------------------------------------------------- job


def normalize_job(job: dict) -> dict:
    if not isinstance(job, dict):
        raise ValueError("the job must be a JSON object")
    job = {**common.DEFAULT_JOB, **job}
    for key in ("target", "sampler"):
        if key not in job:
            raise ValueError(f"the job needs {key!r}")
    if job["target"] not in common.TARGETS:
        raise ValueError(f"unknown target {job['target']!r}; known: {common.TARGETS}")
    if job["sampler"] not in common.SAMPLERS:
        raise ValueError(f"unknown sampler {job['sampler']!r}; known: {common.SAMPLERS}")
    if job["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {job['dtype']!r}")
    job.setdefault("chains", common.DEFAULT_CHAINS[job["sampler"]])
    for key in ("chains", "warmup", "draws", "seed"):
        if not isinstance(job[key], int) or isinstance(job[key], bool) or job[key] < 0:
            raise ValueError(f"{key} must be a non-negative int, got {job[key]!r}")
    if job["chains"] < 1 or job["draws"] < 4:
        raise ValueError("need chains >= 1 and draws >= 4")
    if job["sampler"] == "blackjax_chees" and job["chains"] < 2:
        raise ValueError("ChEES adapts across chains: it needs chains >= 2")
    return job


def run_job(job: dict) -> dict:
    """Run one job (see the module docstring) and return the result dict."""
    job = normalize_job(job)
    jax, jnp = _setup_jax(job["dtype"])
    dtype = jnp.float64 if job["dtype"] == "float64" else jnp.float32
    pdb = job.get("posteriordb_dir")
    if job.get("init") is not None:
        init_np = np.asarray(job["init"], dtype=np.float64)
        init_seed = None
    else:
        init_seed = int(job.get("init_seed", job["seed"]))
        init_np = common.initial_points(job["target"], job["chains"], init_seed, pdb)
    ndim = common.dim(job["target"], pdb)
    if init_np.shape != (job["chains"], ndim):
        raise ValueError(f"init must have shape ({job['chains']}, {ndim}), got {init_np.shape}")
    truth = common.truth(job["target"], pdb)
    logdensity, to_quantities = make_logdensity(job["target"], dtype, jnp, pdb)
    init = jnp.asarray(init_np, dtype=dtype)

    fn, args, to_result = SAMPLER_FNS[job["sampler"]](job, logdensity, init, jax, jnp)
    _log(
        f"{job['sampler']} on {job['target']}: {job['chains']} chains, "
        f"{job['warmup']} + {job['draws']}, {job['dtype']}: first call ..."
    )
    out, cpu1, wall1 = _timed(lambda: fn(*args), jax)
    timing = {"first_cpu_s": cpu1, "first_wall_s": wall1}
    if job["repeat"]:
        _log(f"first call {wall1:.1f} s wall; second identical call ...")
        out, cpu2, wall2 = _timed(lambda: fn(*args), jax)
        timing.update(
            run_cpu_s=cpu2,
            run_wall_s=wall2,
            compile_cpu_s=max(cpu1 - cpu2, 0.0),
            compile_wall_s=max(wall1 - wall2, 0.0),
        )
    res = to_result(out)
    draws = res.pop("draws").astype(np.float64)
    if not np.isfinite(draws).all():
        _log("warning: non-finite draws")
    if job.get("save_draws"):
        np.save(job["save_draws"], draws)
    _log("diagnostics ...")
    summary = summarize(to_quantities(draws), truth)

    chains = job["chains"]
    wsteps, ssteps = res.pop("warmup_steps"), res.pop("sampling_steps")
    grads = {
        "grads_init": chains,
        "grads_warmup": int(wsteps.sum()),
        "grads_sampling": int(ssteps.sum()),
    }
    grads["grads_total"] = grads["grads_init"] + grads["grads_warmup"] + grads["grads_sampling"]
    if job["sampler"] == "blackjax_chees":
        lock_w = int(chains * wsteps.max(axis=1).sum()) if wsteps.size else 0
        lock_s = int(chains * ssteps.max(axis=1).sum())
        grads.update(lockstep_warmup=lock_w, lockstep_sampling=lock_s)
        grads.update(lockstep_maxsteps_warmup=lock_w, lockstep_maxsteps_sampling=lock_s)
    else:
        lw, lmw = _lockstep(wsteps)
        ls, lms = _lockstep(ssteps)
        grads.update(lockstep_warmup=lw, lockstep_sampling=ls)
        grads.update(lockstep_maxsteps_warmup=lmw, lockstep_maxsteps_sampling=lms)
    grads["lockstep_total"] = (
        grads["grads_init"] + grads["lockstep_warmup"] + grads["lockstep_sampling"]
    )
    grads["lockstep_over_useful"] = grads["lockstep_total"] / max(grads["grads_total"], 1)
    grads["mean_steps_sampling"] = float(ssteps.mean())
    grads["max_steps_sampling"] = int(ssteps.max())

    ess = summary["min_ess_bulk"]
    cpu_run = timing.get("run_cpu_s", timing["first_cpu_s"])
    wall_run = timing.get("run_wall_s", timing["first_wall_s"])
    headline = {
        "min_ess_bulk": ess,
        "ess_per_cpu_s": ess / cpu_run,
        "ess_per_wall_s": ess / wall_run,
        "ess_per_cpu_s_with_compile": ess / timing["first_cpu_s"],
        "ess_per_1k_grads": 1000.0 * ess / grads["grads_total"],
        "ess_per_1k_lockstep_grads": 1000.0 * ess / grads["lockstep_total"],
        "compile_cpu_s": timing.get("compile_cpu_s"),
        "max_r_hat": summary["max_r_hat"],
        "max_z_mean": summary["max_z_mean"],
        "max_z_var": summary["max_z_var"],
        "correct": bool(
            summary["max_z_mean"] < 4.0
            and summary["max_z_var"] < 4.0
            and (summary["max_r_hat"] is None or summary["max_r_hat"] < 1.01)
        ),
    }
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("jax", "jaxlib", "blackjax", "numpyro", "arviz")}
    job_out = {k: v for k, v in job.items() if k != "init"}
    job_out["init_seed"] = init_seed
    job_out["init_recipe"] = (
        "given in the job"
        if init_seed is None
        else f"numpy.random.default_rng({init_seed}).uniform(-2, 2, ({chains}, {ndim}))"
    )
    return {
        "ok": True,
        "job": job_out,
        "dim": ndim,
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "headline": headline,
        "timing": timing,
        "gradients": grads,
        **res,
        "summary": summary,
    }


def smoke(targets=None, samplers=None) -> int:
    """Every (target, sampler) pair at tiny sizes; prints one line each. Exit status 1 if any
    raised (the statistics at these sizes mean nothing)."""
    failed = 0
    for target in targets or common.TARGETS:
        for sampler in samplers or common.SAMPLERS:
            job = {"target": target, "sampler": sampler, **common.SMOKE_SIZES}
            try:
                r = run_job(job)
            except FileNotFoundError as e:
                print(f"{target:12s} {sampler:15s} skipped: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - reported, the loop goes on
                failed += 1
                print(f"{target:12s} {sampler:15s} FAILED: {type(e).__name__}: {e}")
                continue
            h = r["headline"]
            print(
                f"{target:12s} {sampler:15s} ok: ess {h['min_ess_bulk']:.0f}, "
                f"compile {h['compile_cpu_s']:.1f} s, grads {r['gradients']['grads_total']}"
            )
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--smoke"]:
        return smoke(*(a.split(",") if a else None for a in argv[2:4]))
    try:
        text = argv[1] if len(argv) > 1 else sys.stdin.read()
        job = json.loads(text)
        result = run_job(job)
    except (ValueError, FileNotFoundError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
