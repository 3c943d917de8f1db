"""Golden values from the 0.1 kernel layer (run at commit 1ebda23, before the kernel layer was
rebuilt), for the bit-identity tests in tests/test_kernel_contract.py. Kept as the record of
how tests/data/golden_0_1_kernels.pt was made; it needs that commit to run."""

import torch

torch.set_num_threads(1)
import ebmcmc
from ebmcmc.diffusion import DRLSchedule
from ebmcmc.estimators import (
    DiffusionRecoveryLikelihood,
    ContrastiveDivergence,
    PersistentContrastiveDivergence,
)
from ebmcmc.kernels import (
    MALA,
    HMC,
    Langevin,
    RandomWalk,
    IndependenceMetropolis,
    ReplicaExchange,
    LevelGibbs,
)
from ebmcmc.nn import TimeMLP
from ebmcmc.targets import Banana, GaussianMixture

out = {}


def net(levels):
    torch.manual_seed(0)
    return TimeMLP(2, hidden=16, num_levels=levels)


x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
for name, kw in {"plain": {}, "jump": {"jump_every": 2}, "mala": {"metropolis": True}}.items():
    est = DiffusionRecoveryLikelihood(DRLSchedule(6), num_langevin_steps=5, step_size_b2=4e-3, **kw)
    m = net(6)
    o = est.loss(m, x, torch.Generator().manual_seed(2))
    out[f"drl_{name}_loss"] = o.loss.detach().clone()
    out[f"drl_{name}_neg"] = o.negatives.clone()
    out[f"drl_{name}_gen"] = est.generate(m, (8, 2), torch.Generator().manual_seed(3), clip=None)
for name, est in {
    "cd": ContrastiveDivergence(MALA(0.01), 4),
    "pcd": PersistentContrastiveDivergence(Langevin(0.01), 4, buffer_size=32),
}.items():
    m = TimeMLP(2, hidden=16)
    torch.manual_seed(0)
    m = TimeMLP(2, hidden=16)
    o = est.loss(m, x, torch.Generator().manual_seed(2))
    out[f"{name}_loss"] = o.loss.detach().clone()
    out[f"{name}_neg"] = o.negatives.clone()
mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5 * torch.eye(2))
kernels = {
    "mala": MALA(0.3),
    "langevin": Langevin(0.05, noise_scale=0.9),
    "rw": RandomWalk(0.5),
    "hmc": HMC(0.2, 5),
    "hmc_jitter": HMC(0.2, 5, jitter=0.5),
    "hmc_perchain": HMC(0.2, torch.tensor([1, 3, 5, 2] * 8)),
    "im": IndependenceMetropolis(torch.zeros(2), 2.0),
    "rex": ReplicaExchange(MALA(0.3), betas=(1.0, 0.5, 0.25)),
}
x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
for name, k in kernels.items():
    for adapt in (False, True):
        tr = ebmcmc.sample(
            Banana() if name != "rex" else mix,
            k,
            x0,
            30,
            num_warmup=40 if adapt else 0,
            generator=5,
            progress=False,
            adaptation="default" if adapt else None,
        )
        out[f"k_{name}_{adapt}_x"] = tr.draws.clone()
        out[f"k_{name}_{adapt}_e"] = tr.stats["energy"].clone()
        out[f"k_{name}_{adapt}_a"] = tr.stats["accept_prob"].clone()
joint = lambda y, t: 0.5 * ((y - t[..., None].to(y.dtype)) ** 2).sum(-1)
tr = ebmcmc.sample(
    joint,
    LevelGibbs(MALA(0.5), num_levels=3),
    x0,
    30,
    generator=6,
    progress=False,
    adaptation=None,
    trace_fn=lambda s, i: {"x": s.position, "level": s.level},
)
out["k_levelgibbs_x"] = tr.draws.clone()
out["k_levelgibbs_level"] = tr.variables["level"].clone()
tr = ebmcmc.sample(
    joint,
    LevelGibbs(MALA(0.5), num_levels=3, step_sizes=(0.2, 0.4, 0.8)),
    x0,
    30,
    generator=6,
    progress=False,
    adaptation=None,
    trace_fn=lambda s, i: {"x": s.position, "level": s.level},
)
out["k_levelgibbs_table_x"] = tr.draws.clone()
out["k_levelgibbs_table_level"] = tr.variables["level"].clone()
torch.save(out, "tests/data/golden_0_1_kernels.pt")
print(len(out), "golden arrays")
