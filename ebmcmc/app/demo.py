"""The README's main job, ``ebmcmc demo``: train → sample → diagnose → report, on a CPU.

1. **Samplers against exact answers**: MALA and HMC (with warm-up adaptation) on four
   reference targets; per target, the largest |error| / MCSE of the mean and variance,
   R-hat and ESS (``summary.md``, and a full convergence report of HMC on the banana).
2. **Train DRL** on eight Gaussians (:func:`ebmcmc.app.setups.toy_setup`), then generate
   samples with its progressive sampler; KL(data ‖ model) at level 0 on a grid and the MMD of
   the samples.
3. **AIS** for the level-0 model's ``log Z`` with its standard error, checked against
   quadrature on a grid (exact up to the grid in 2-D).
4. **Long-run stability** of level 0's chains, 100× past the training length, from held-out
   data and from the generated samples (:func:`ebmcmc.studies.stability`).

Everything goes into one self-contained ``report.html`` (and ``report.md`` with PNGs) in the
output directory; :func:`run_demo` returns its path.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from ..trace import Trace

__all__ = ["run_demo", "sample_reference_targets"]


def sample_reference_targets(
    seed: int, chains: int, draws: int, progress: bool
) -> tuple[pd.DataFrame, Trace]:
    """MALA and HMC on four reference targets; returns the table and the banana HMC trace.

    One row per (target, kernel): the largest |error| / MCSE of the mean and of the
    variance over coordinates, the largest R-hat, the smallest bulk ESS, the acceptance rate
    and the seconds taken; ``chains`` chains of ``draws`` draws each.

    Example:
        >>> df, _ = sample_reference_targets(0, 4, 20, False)
        >>> list(df.columns)[:3]
        ['kernel', 'max z (mean)', 'max z (var)']
    """
    from .. import sample
    from ..diagnostics import summary
    from ..kernels import HMC, MALA
    from ..targets import Banana, Gaussian, GaussianMixture

    targets = {
        "gaussian-2d (rho=0.9)": Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]])),
        "banana": Banana(),
        "mixture (0.3/0.7)": GaussianMixture(
            torch.tensor([[-1.5, 0.0], [1.5, 0.0]]), 0.5 * torch.eye(2), torch.tensor([0.3, 0.7])
        ),
        "gaussian-50d (cond 100)": Gaussian.ill_conditioned(
            50, 100.0, torch.Generator().manual_seed(seed)
        ),
    }
    rows, index = [], []
    banana: Trace | None = None
    for name, target in targets.items():
        d = target.event_shape[0]
        for kernel in (MALA(step_size=0.1), HMC(step_size=0.1, num_leapfrog_steps=16, jitter=0.5)):
            g = torch.Generator().manual_seed(seed)
            x0 = torch.randn(chains, d, generator=g, dtype=torch.float64)
            t0 = time.perf_counter()
            # MALA's steps cost 1/16 of HMC's: run it 4x longer and keep every 4th draw
            thin = 4 if isinstance(kernel, MALA) else 1
            tr = sample(
                target,
                kernel,
                x0,
                num_samples=draws,
                num_warmup=thin * draws,
                thin=thin,
                generator=g,
                progress=progress,
            )
            secs = time.perf_counter() - t0
            x = tr.draws.numpy()
            s1 = summary({"x": x})
            s2 = summary({"x2": (x - target.mean.numpy()) ** 2})
            z_mean = np.abs((s1["mean"] - target.mean.numpy()) / s1["mcse_mean"]).max()
            z_var = np.abs((s2["mean"] - np.diag(target.cov.numpy())) / s2["mcse_mean"]).max()
            index.append(name)
            rows.append(
                {
                    "kernel": type(kernel).__name__,
                    "max z (mean)": z_mean,
                    "max z (var)": z_var,
                    "r_hat": s1["r_hat"].max(),
                    "ess_bulk": s1["ess_bulk"].min(),
                    "accept": float(tr.stats["accept_prob"].mean()),
                    "seconds": secs,
                }
            )
            if name == "banana" and isinstance(kernel, HMC):
                banana = tr
    if banana is None:  # "banana" is one of the targets above
        raise RuntimeError("the banana target was not sampled with HMC")
    return pd.DataFrame(rows, index=index), banana


def _mmd_ratio(x, ref, others) -> tuple[float, float]:
    """Squared MMD (V-statistic) of ``x`` to ``ref``, and its mean over ``others``
    (independent data of the same size: the floor a perfect model reaches)."""
    from ..evaluation import mmd

    gen = float(mmd(ref, x, unbiased=False))
    floor = float(np.mean([float(mmd(ref, o, unbiased=False)) for o in others]))
    return gen, floor


def _plot(path: Path, draw, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    draw(ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_demo(
    out: str | Path,
    seed: int = 0,
    chains: int = 128,
    draws: int = 1000,
    train_steps: int = 600,
    long_run_steps: int = 3000,
    ais_particles: int = 512,
    ais_temperatures: int = 200,
    smoke: bool = False,
    progress: bool = True,
) -> Path:
    """Run the demo and write ``report.html`` / ``report.md`` in ``out``.

    Args:
        out: output directory (created).
        seed: the one seed everything derives from.
        chains: chains per reference-target run.
        draws: draws per chain of those runs (warm-up as many).
        train_steps: DRL optimisation steps (batch 256).
        long_run_steps: steps of the level-0 long-run chains (training uses K = 30).
        ais_particles: the AIS run's particles.
        ais_temperatures: the AIS run's temperatures.
        smoke: shrink everything to seconds (CI).
        progress: tqdm progress bars.

    Returns:
        The path of ``report.html``.

    Example:
        >>> import tempfile
        >>> run_demo(tempfile.mkdtemp(), smoke=True, progress=False).name  # doctest: +SKIP
        'report.html'
    """
    from .._files import atomic_write
    from ..ais import ais
    from ..datasets import eight_gaussians_target, toy_dataset
    from ..diagnostics import Finding, Section, report, write_report
    from ..diagnostics.report import markdown_table
    from ..estimators import DiffusionRecoveryLikelihood
    from ..evaluation import kl_on_grid, mmd, model_log_prob_on_grid
    from ..kernels import MALA
    from ..studies import StabilityCriteria, report_stability, stability
    from ..targets import Gaussian
    from ..train import Trainer
    from .setups import toy_setup

    if smoke:
        chains, draws, train_steps, long_run_steps = 8, 60, 20, 200
        ais_particles, ais_temperatures = 64, 20
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    findings: list[Finding] = []
    sections: list[Section] = []
    t_start = time.perf_counter()

    # 1. samplers against exact answers ------------------------------------------------------
    print(f"[1/4] MALA and HMC on four reference targets ({chains} chains x {draws} draws)")
    table, banana = sample_reference_targets(seed, chains, draws, progress)
    md = markdown_table(table)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(md + "\n"))
    banana.save(out / "banana-hmc.nc")
    report(banana, out / "banana-hmc", title="Banana, HMC with adaptation")
    z = table[["max z (mean)", "max z (var)"]].max(axis=1)
    ok = (table["r_hat"] < 1.01) & (z < 4)
    rows = zip(table.index, table["kernel"], table["r_hat"], z, ok, strict=True)
    bad = [f"{n}/{k} (R-hat {r:.3f}, max z {zz:.1f})" for n, k, r, zz, good in rows if not good]
    findings.append(
        Finding(
            "ok" if not bad else "warning",
            f"reference targets: {int(ok.sum())} of {len(ok)} runs converged (R-hat < 1.01) "
            "and agree with the exact mean and variance (|error| / MCSE < 4)"
            + (f"; not converged in this short budget: {', '.join(bad)}" if bad else ""),
        )
    )
    sections.append(
        Section(
            "Samplers against exact answers",
            text=f"{chains} chains × {draws} draws after as many warm-up steps: HMC with 16 "
            "leapfrog steps and a ±50 % step jitter (step size and diagonal mass matrix "
            "adapted); MALA (step size adapted) runs 4× as many steps and keeps every 4th. "
            "max z: the largest |estimate − truth| / MCSE over "
            "coordinates, of the mean and of the variance. The banana's HMC run has its own full "
            "report in banana-hmc/report.html.",
            table=table,
        )
    )

    # 2. train DRL ---------------------------------------------------------------------------
    print(f"[2/4] training DRL on eight Gaussians ({train_steps} steps)")
    g = torch.Generator().manual_seed(seed)
    setup = toy_setup("drl", seed=seed, decay_at=int(0.6 * train_steps))
    drl = setup.estimator
    if not isinstance(drl, DiffusionRecoveryLikelihood):  # toy_setup("drl") builds one
        raise TypeError(f"expected a DRL estimator, got {type(drl).__name__}")
    train = toy_dataset("eight_gaussians", 50000, seed) / setup.scale
    trainer = Trainer(
        setup.model, setup.estimator, train, setup.config, seed=seed, progress=progress
    )
    t0 = time.perf_counter()
    trainer.fit(train_steps)
    train_s = time.perf_counter() - t0
    model = trainer.ema_model
    for p in model.parameters():
        p.requires_grad_(False)
    target = eight_gaussians_target(setup.noise_std)
    lim = 3.0
    kl = kl_on_grid(
        target.log_prob, lambda x: setup.energy(x, model), lim, 300, dtype=torch.float32
    )
    n_eval = 256 if smoke else 2000
    gen = setup.generate(n_eval, g, model)

    def noisy(n: int, data_seed: int):  # data with level 0's noise, in data units
        x = toy_dataset("eight_gaussians", n, data_seed)
        return x + setup.noise_std * torch.randn(n, 2, generator=g)

    ref = noisy(n_eval, seed + 1000)
    mmd_gen, mmd_floor = _mmd_ratio(gen, ref, [noisy(n_eval, seed + 1001 + k) for k in range(4)])
    loss = [h["loss"] for h in trainer.history]
    _plot(
        out / "drl-loss.png",
        lambda ax: (ax.plot(loss, lw=0.6), ax.set_xlabel("step")),
        "DRL training loss",
    )
    grid = model_log_prob_on_grid(lambda x: setup.energy(x, model), lim, 200, dtype=torch.float32)
    s = gen.numpy()
    _plot(
        out / "drl-density.png",
        lambda ax: ax.imshow(grid.log_prob.exp().numpy(), origin="lower", extent=grid.extent),
        "level-0 model density",
    )
    _plot(
        out / "drl-samples.png",
        lambda ax: (
            ax.scatter(s[:, 0], s[:, 1], s=1),
            ax.set_xlim(-lim, lim),
            ax.set_ylim(-lim, lim),
            ax.set_aspect("equal"),
        ),
        f"{len(s)} DRL samples (T·K = {drl.schedule.num_levels * 30} steps)",
    )
    findings.append(
        Finding(
            "ok" if kl <= 0.1 else "warning",
            f"DRL after {train_steps} steps ({train_s:.0f} s): KL(data ‖ model) at level 0 "
            f"{kl:.3f} nats; MMD² of samples vs held-out over data vs data "
            f"{mmd_gen / mmd_floor:.2f} (1 = as close as data)",
        )
    )
    sections.append(
        Section(
            "DRL on eight Gaussians: training",
            text=f"{train_steps} steps of batch {setup.config.batch_size} in {train_s:.0f} s. "
            f"Configuration: ebmcmc.toy.toy_setup('drl') (T = 6, K = 30, b² = 4e-3, TimeMLP with "
            "Fourier features, likelihood loss weights, tether jumps; the module's docstring "
            "says why).",
            figure="drl-loss.png",
        )
    )
    sections.append(
        Section(
            "DRL: level-0 density (EMA weights)",
            figure="drl-density.png",
            text=f"KL(data ‖ model) = {kl:.4f} nats on a 300² grid over [−{lim}, {lim}]².",
        )
    )
    sections.append(
        Section(
            "DRL: generated samples",
            figure="drl-samples.png",
            text=f"Squared MMD (V-statistic) to held-out data {mmd_gen:.3e}; between "
            f"independent data samples of the same size {mmd_floor:.3e} (ratio "
            f"{mmd_gen / mmd_floor:.2f}).",
        )
    )

    # 3. AIS ---------------------------------------------------------------------------------
    print(f"[3/4] AIS for log Z of the level-0 model ({ais_particles} particles)")
    energy_f32 = setup.chain_energy(model)  # scaled units; the network is float32

    def energy0(x):
        return energy_f32(x.float()).to(x.dtype)

    base = Gaussian(torch.zeros(2), torch.eye(2))
    res = ais(
        energy0,
        base,
        MALA(0.05),
        ais_particles,
        num_temperatures=ais_temperatures,
        generator=seed,
        progress=progress,
    )
    quad = model_log_prob_on_grid(energy0, lim / setup.scale, 600, dtype=torch.float64)
    log_z_quad = float(quad.log_z)
    lz, se = float(res.log_z), float(res.log_z_se)
    z = (lz - log_z_quad) / se if se > 0 else math.inf
    findings.append(
        Finding(
            "ok" if abs(z) < 4 else "warning",
            f"AIS log Z = {lz:.4f} ± {se:.4f} (quadrature {log_z_quad:.4f}, z = {z:+.2f})",
        )
    )
    sections.append(
        Section(
            "AIS: log Z of the level-0 model",
            text=f"Annealed importance sampling from N(0, I) with MALA at {ais_temperatures} "
            f"temperatures (sigmoid schedule, per-temperature step sizes), {ais_particles} "
            f"particles: log Z = {lz:.4f} ± {se:.4f} (standard error), weight ESS "
            f"{float(res.ess):.0f}. Quadrature on a 600² grid: {log_z_quad:.4f}; "
            f"z = {z:+.2f}.",
        )
    )

    # 4. long-run stability --------------------------------------------------------------------
    print(f"[4/4] long-run stability of level 0 ({long_run_steps} steps)")
    n_chain = 64 if smoke else 256
    data_start = noisy(n_chain, seed + 2000) / setup.scale
    gen_start = gen[:n_chain] / setup.scale
    ref_scaled = ref / setup.scale

    def quality(x):  # squared MMD to held-out data, with the reference's default kernel
        return float(mmd(ref_scaled, x))

    study = stability(
        energy0,
        setup.chain_kernel(),
        {"data": data_start, "generated": gen_start},
        long_run_steps,
        short_run=30,
        checkpoints=10,
        quality_fn=quality,
        criteria=StabilityCriteria(agreement="nested", window=min(1000, long_run_steps // 2)),
        generator=seed,
    )
    # its own full report in long-run/, whose curve figure the main report shows too
    report_stability(study, out / "long-run", title="Long-run stability of level 0")
    curves = "long-run/stability_curves.png"
    findings.append(
        Finding(
            "ok" if study.passed else "warning",
            f"long run ({long_run_steps} steps = {long_run_steps // 30}× the training K): "
            + ("stable" if study.passed else "NOT stable: " + "; ".join(study.reasons)),
        )
    )
    text = "\n\n".join(f.message for f in study.findings)
    sections.append(
        Section(
            "Long-run stability of level 0",
            text="Unadjusted Langevin at level 0's training step (s₀²/2) on the level-0 marginal "
            f"energy, {n_chain} chains from held-out data and {n_chain} from the DRL samples. "
            "Quality: squared MMD to held-out data. Agreement: nested R-hat with the two starts as "
            "superchains (each chain stays in its mode). Full report: "
            "long-run/report.html.\n\n" + text,
            figure=curves if (out / curves).is_file() else None,
        )
    )
    total = time.perf_counter() - t_start
    metrics = {
        "kl": kl,
        "mmd_gen": mmd_gen,
        "mmd_floor": mmd_floor,
        "ais_log_z": lz,
        "ais_log_z_se": se,
        "log_z_quadrature": log_z_quad,
        "ais_z": z,
        "stable": study.passed,
        "train_seconds": train_s,
        "total_seconds": total,
    }
    atomic_write(
        out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2) + "\n")
    )
    return write_report(
        out,
        "ebmcmc demo: train → sample → diagnose",
        findings,
        notes=[f"Seed {seed}; {total:.0f} s in all on this machine."],
        sections=sections,
    )
