"""DRL learns eight Gaussians: a short CPU run that an untrained model fails.

The run is a shortened version of the 2-D configuration of ``examples/toy2d.py`` (data / 2,
``DRLSchedule(6)``, K = 30, b^2 = 4e-3, Adam lr 1e-3 betas (0.5, 0.999), grad clip 1) with a
narrower network (hidden 64), batch 128, EMA 0.95 and 800 steps (about 50 s on one loaded
CPU core). The quality figure is the squared MMD (V-statistic, RBF bandwidths h * (1/8 .. 2),
h the held-out median distance) between 1000 samples of DRL's progressive generation and 1000
held-out points, divided by the mean of the same statistic between the held-out points and
8 independent data samples of the same size (the floor: an exact sampler scores about 1).

Why RATIO_BOUND = 20. Reference ratios with this statistic and n = 1000 (measured once with
the same code): independent data samples 0.4 - 1.3; modes 2x / 3x / 4x too wide 1.5 / 4.9 /
9.2; one of the eight modes missing 11.8; circle radius 2.2 instead of 2 10.7; a Gaussian with
the data's mean and covariance 39; the untrained network about 390. A ratio <= 20 therefore
says the samples resolve the eight modes, about twice as close as the best unimodal fit; it
is a weaker bound than the issue's acceptance figure (ratio <= 2 after 10 minutes), which this
short run does not reach (it ends near 15).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ebmcmc import data as D
from ebmcmc.metrics import DEFAULT_MMD_SCALES, median_bandwidth
from ebmcmc.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
RATIO_BOUND = 20.0
N_EVAL = 1000


def _example():
    spec = importlib.util.spec_from_file_location("toy2d", ROOT / "examples" / "toy2d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ratio(toy, model, est, args, seed: int = 7) -> float:
    g = torch.Generator().manual_seed(seed)
    gen = toy.generate(model, est, N_EVAL, g, args) * args.scale
    noise = 0.01 * args.scale  # level 0 carries sigma_bar_0 = 0.01 (scaled units) of noise
    ref = D.eight_gaussians(N_EVAL, 1000) + noise * torch.randn(N_EVAL, 2, generator=g)
    bw = median_bandwidth(ref) * torch.tensor(DEFAULT_MMD_SCALES, dtype=torch.float64)
    floor = 0.0  # the mean over 8 independent data samples (one alone is too noisy)
    for s in range(1001, 1009):
        other = D.eight_gaussians(N_EVAL, s) + noise * torch.randn(N_EVAL, 2, generator=g)
        floor += toy.mmd_v(ref, other, bw) / 8
    return toy.mmd_v(ref, gen, bw) / floor


@pytest.mark.slow
def test_drl_learns_eight_gaussians(tmp_path):
    toy = _example()
    args = toy.parse(["--hidden", "64", "--batch", "128", "--no-progress"])
    torch.manual_seed(0)
    train = D.eight_gaussians(20000, 0) / args.scale
    model, est = toy.build(args, train.shape[0])
    cfg = TrainConfig(lr=1e-3, betas=(0.5, 0.999), warmup_steps=50, grad_clip=1.0,
                      ema_decay=0.95, batch_size=args.batch)  # fmt: skip
    trainer = Trainer(model, est, train, cfg, seed=0, progress=False)

    untrained = _ratio(toy, trainer.ema_model, est, args)
    assert untrained > RATIO_BOUND, f"the bound is too loose: untrained ratio {untrained:.3g}"

    trainer.fit(STEPS)
    trained = _ratio(toy, trainer.ema_model, est, args)
    assert trained <= RATIO_BOUND, f"trained ratio {trained:.3g} > {RATIO_BOUND}"


STEPS = 800
