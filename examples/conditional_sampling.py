"""Conditional and compositional sampling with composed kernels.

Three parts, each printed and written to ``OUT/conditional.json`` (and ``OUT/inpainting.png``):

1. **A Gaussian conditional with a known answer.** ``Masked(MALA(...), mask)`` moves only the
   free coordinates of a correlated 4-D Gaussian, which samples their conditional given the
   fixed ones; the estimates are compared with the closed form in units of their Monte Carlo
   standard error. A ``Cycle`` of two ``Masked`` blocks (Gibbs) recovers the joint.
2. **Inpainting digits with a DRL model.** A small DRL model is trained on scikit-learn's 8 x 8
   digits (``ebmcmc.app.setups.digits_setup``); then the top half of held-out digits is kept
   and the bottom half is generated: DRL's progressive sampler with every level's Langevin
   chain wrapped in ``Masked``, the known pixels set to their noisy version at that level. A
   small classifier (``ClassifierFID("digits")``) reads the completed digits; its accuracy on
   them is compared with its accuracy on the originals and on digits whose bottom half is
   noise.
3. **A product of experts.** ``SumOf(E1, E2)`` of two Gaussian experts is the Gaussian whose
   precision is the sum of theirs; sampling it with ``MALA`` recovers that mean and covariance.

Run::

    python examples/conditional_sampling.py --out out/conditional          # ~5 minutes on CPU
    python examples/conditional_sampling.py --smoke --out /tmp/conditional  # seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import ebmcmc
from ebmcmc.diagnostics import summary
from ebmcmc.energy import SumOf
from ebmcmc.kernels import HMC, MALA, Cycle, Masked
from ebmcmc.targets import Gaussian

DT = torch.float64


# ----------------------------------------------------------------------------- 1. Gaussian
def gaussian_conditional(draws: int, seed: int) -> dict:
    """Masked MALA on the free coordinates of a 4-D Gaussian, against the closed form."""
    a = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0.3, -0.5, 0.8, 0], [0.2, 0.4, 0.3, 0.7]],
                     dtype=DT)  # fmt: skip
    mu, sigma = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=DT), a @ a.T
    target = Gaussian(mu, sigma)
    free = torch.tensor([True, False, True, False])
    value = torch.tensor([0.0, 0.3, 0.0, 2.5], dtype=DT)  # the fixed coordinates' values
    # exact conditional of x[free] given x[~free]
    s_ab = sigma[free][:, ~free]
    inv = torch.linalg.inv(sigma[~free][:, ~free])
    exact_mean = mu[free] + s_ab @ inv @ (value[~free] - mu[~free])
    exact_var = (sigma[free][:, free] - s_ab @ inv @ s_ab.T).diagonal()
    tr = ebmcmc.sample(target, Masked(MALA(0.5), free), value.expand(64, 4).clone(), draws,
                       num_warmup=draws // 2, generator=seed, progress=False)  # fmt: skip
    x = tr.draws[..., free]
    table = summary({"x0": x[..., 0].numpy(), "x2": x[..., 1].numpy(),
                     "v0": ((x[..., 0] - exact_mean[0]) ** 2).numpy(),
                     "v2": ((x[..., 1] - exact_mean[1]) ** 2).numpy()})  # fmt: skip
    rows = {}
    for i, name in enumerate(("x0", "x2")):
        m, v = table.loc[name], table.loc["v" + name[1]]
        rows[name] = {
            "mean": float(m["mean"]), "exact_mean": float(exact_mean[i]),
            "z_mean": float((m["mean"] - exact_mean[i]) / m["mcse_mean"]),
            "var": float(v["mean"]), "exact_var": float(exact_var[i]),
            "z_var": float((v["mean"] - exact_var[i]) / v["mcse_mean"]),
            "r_hat": float(m["r_hat"]),
        }  # fmt: skip
    fixed_never_moved = bool((tr.draws[..., ~free] == value[~free]).all())
    # Gibbs blocks recover the joint
    blocks = Cycle(Masked(HMC(0.3, 5, jitter=0.5), free), Masked(HMC(0.3, 5, jitter=0.5), ~free))
    trj = ebmcmc.sample(target, blocks, target.sample(32, generator=seed), draws,
                        num_warmup=draws // 2, generator=seed + 1, progress=False)  # fmt: skip
    sj = summary(trj)
    z_joint = (torch.tensor(sj["mean"].to_numpy()) - mu) / torch.tensor(sj["mcse_mean"].to_numpy())
    return {
        "conditional": rows,
        "fixed_coordinates_never_moved": fixed_never_moved,
        "gibbs_blocks_max_abs_z_mean": float(z_joint.abs().max()),
        "gibbs_blocks_max_r_hat": float(sj["r_hat"].max()),
    }


# ---------------------------------------------------------------------------- 2. inpainting
@torch.no_grad()
def inpaint(estimator, model, x_known: torch.Tensor, free: torch.Tensor, generator) -> torch.Tensor:
    """Generate the ``free`` pixels of ``x_known`` (``(n, d)`` in [-1, 1]) with DRL's
    progressive sampler, each level's Langevin chain moving the free pixels only.

    At level ``t`` the known pixels take their noisy value ``signal_bar_t x + sigma_bar_t eps``
    and the free ones start from the level above; ``Masked`` then samples the level's recovery
    conditional of the free pixels given the known ones. (Each level's conditional is exact;
    replacing the known pixels level by level is the usual approximation of inpainting with a
    hierarchical model.)
    """
    sched = estimator.schedule
    n = x_known.shape[0]
    x = torch.randn(x_known.shape, generator=generator, dtype=x_known.dtype)
    for level in range(sched.num_levels - 1, -1, -1):
        t = torch.full((n,), level, dtype=torch.long)
        a = float(sched.signal_prime[level + 1])
        known_t = sched.q_sample(x_known, t, generator=generator)
        energy = estimator.recovery_energy(model, t, x)
        kernel = Masked(estimator.kernel(t, x, noise_scale=0.99), free)
        y = torch.where(free, x, a * known_t)  # the start, in the chain's y = a' x units
        with torch.enable_grad():
            state = kernel.init(energy, y, validate=False)
            for _ in range(estimator.num_langevin_steps):
                state, _ = kernel.step(energy, state, generator)
        x = state.position / a
    return torch.where(free, x, x_known).clamp(-1, 1)


def digits_inpainting(steps: int, n_test: int, seed: int, out: Path, smoke: bool) -> dict:
    from ebmcmc.app.setups import digits_setup
    from ebmcmc.datasets import load_digits
    from ebmcmc.evaluation import ClassifierFID
    from ebmcmc.train import Trainer

    (train_x, _), (test_x, test_y) = load_digits("train"), load_digits("test")
    setup = digits_setup("drl", seed=seed, hidden=32 if smoke else 256,
                         num_langevin_steps=3 if smoke else 30,
                         decay_at=int(0.6 * steps))  # fmt: skip
    t0 = time.time()
    trainer = Trainer(setup.model, setup.estimator, train_x.flatten(1), setup.config,
                      seed=seed, progress=not smoke)  # fmt: skip
    trainer.fit(steps)
    train_s = time.time() - t0
    model = trainer.ema_model
    x = test_x[:n_test].flatten(1)
    free = torch.zeros(8, 8, dtype=torch.bool)
    free[4:] = True  # the bottom half is generated, the top half is kept
    free = free.flatten()
    g = torch.Generator().manual_seed(seed + 1)
    filled = inpaint(setup.estimator, model, x, free, g)
    noise = torch.where(free, 2 * torch.rand(x.shape, generator=g) - 1, x)
    clf = ClassifierFID("digits")
    img = lambda v: v.reshape(-1, 1, 8, 8)  # noqa: E731
    y = test_y[:n_test]
    acc = {
        "originals": clf.accuracy(img(x), y),
        "inpainted": clf.accuracy(img(filled), y),
        "bottom_half_noise": clf.accuracy(img(noise), y),
    }
    _grid(out / "inpainting.png", img(x[:12]), img(noise[:12]), img(filled[:12]))
    return {"train_steps": steps, "train_seconds": round(train_s, 1), "test_digits": n_test,
            "classifier_accuracy": acc}  # fmt: skip


def _grid(path: Path, *rows: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("originals", "bottom half noise", "bottom half inpainted")
    fig, axes = plt.subplots(len(rows), rows[0].shape[0], figsize=(rows[0].shape[0] * 0.7, 2.4))
    for r, (row, title) in enumerate(zip(rows, titles, strict=True)):
        for c in range(row.shape[0]):
            ax = axes[r][c]
            ax.imshow(row[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_axis_off()
        axes[r][0].set_title(title, fontsize=7, loc="left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------ 3. product of experts
def product_of_experts(draws: int, seed: int) -> dict:
    """SumOf two Gaussian experts: the product is Gaussian with summed precisions."""
    e1 = Gaussian(
        torch.tensor([1.0, 0.0], dtype=DT), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=DT)
    )
    e2 = Gaussian(
        torch.tensor([-1.0, 1.0], dtype=DT), torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=DT)
    )
    p1, p2 = torch.linalg.inv(e1.cov), torch.linalg.inv(e2.cov)
    cov = torch.linalg.inv(p1 + p2)
    mean = cov @ (p1 @ e1.mean + p2 @ e2.mean)
    tr = ebmcmc.sample(SumOf(e1, e2), MALA(0.3), torch.zeros(64, 2, dtype=DT), draws,
                       num_warmup=draws // 2, generator=seed, progress=False)  # fmt: skip
    s = summary(tr)
    z = (torch.tensor(s["mean"].to_numpy()) - mean) / torch.tensor(s["mcse_mean"].to_numpy())
    return {
        "exact_mean": mean.tolist(),
        "estimated_mean": s["mean"].tolist(),
        "max_abs_z_mean": float(z.abs().max()),
        "max_r_hat": float(s["r_hat"].max()),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/conditional"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=2000, help="draws per chain (parts 1 and 3)")
    p.add_argument("--train-steps", type=int, default=1500, help="DRL training steps (part 2)")
    p.add_argument("--test-digits", type=int, default=359, help="digits to inpaint (part 2)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        args.draws, args.train_steps, args.test_digits = 200, 5, 24
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "gaussian": gaussian_conditional(args.draws, args.seed),
        "inpainting": digits_inpainting(
            args.train_steps, args.test_digits, args.seed, args.out, args.smoke
        ),  # fmt: skip
        "product_of_experts": product_of_experts(args.draws, args.seed),
    }
    (args.out / "conditional.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not args.smoke:
        worst = max(abs(r[k]) for r in result["gaussian"]["conditional"].values()
                    for k in ("z_mean", "z_var"))  # fmt: skip
        verdict = "ok" if worst < 4 and math.isfinite(worst) else "NOT within 4 MCSE"
        print(f"Gaussian conditional: worst error {worst:.2f} MCSE ({verdict})")
    return result


if __name__ == "__main__":
    main()
