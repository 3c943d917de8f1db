"""Golden MALA runs for tests/test_kernels.py::test_mala_sample_bit_identical_to_golden.

``runs()`` samples MALA through ``ebmcmc.sample`` in every configuration its step supports
(float32 and float64, one chain and a 2-D batch, a 2-D event, a per-chain step size, an int
step size, a mass matrix, warm-up, thinning, runs longer than the driver's recording chunks,
an energy of another precision than the positions, and proposals with NaN and +inf energies).
Run as a script, it saves their outputs to tests/data/golden_mala.pt; that file was made at
commit e1f2f35 (before MALA's step and the driver's recording were optimized for small
batches), and the test checks that the current code still gives the same bits.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

OUT = Path(__file__).parent / "golden_mala.pt"


def _std_normal(event_ndim: int):
    def energy(x):
        return 0.5 * (x**2).flatten(start_dim=x.ndim - event_ndim).sum(-1)

    return energy


def _walled(x):  # a standard normal behind walls: NaN and +inf energies beyond them
    e = 0.5 * (x**2).sum(-1)
    e = torch.where(x[..., 0] > 1.2, torch.full_like(e, math.nan), e)
    return torch.where(x[..., 0] < -1.4, torch.full_like(e, math.inf), e)


def runs() -> dict[str, torch.Tensor]:
    """The golden quantities (draws and per-step stats of each run), by name."""
    import ebmcmc
    from ebmcmc.kernels import MALA
    from ebmcmc.targets import Banana, Gaussian

    def x0(*shape, dtype=torch.float64, seed=0):
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)

    g2 = Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    g2d = Gaussian(torch.zeros(2, dtype=torch.float64),
                   torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64))  # fmt: skip
    f64, f32 = torch.float64, torch.float32
    cases = {
        # name: (energy, kernel, init, draws, keyword arguments of sample)
        "f32_1chain": (g2, MALA(0.5), torch.zeros(1, 2), 300, {}),
        "f64_1chain": (g2d, MALA(0.5), torch.zeros(1, 2, dtype=f64), 300, {}),
        "f32_batch2d": (_std_normal(1), MALA(0.7), x0(2, 3, 4, dtype=f32), 40, {}),
        "event2d": (_std_normal(2), MALA(0.4), x0(4, 3, 3), 40, {}),
        "perchain": (_std_normal(1), MALA(torch.linspace(0.1, 1.2, 6, dtype=f64)), x0(6, 3),
                     40, {"thin": 2}),
        "int_step": (_std_normal(1), MALA(1), x0(5, 2), 40, {}),
        "mass": (_std_normal(1), MALA(0.3, inverse_mass_matrix=torch.tensor([0.5, 1.0, 2.0],
                 dtype=f64)), x0(5, 3), 40, {}),
        # (diagonal: the golden draws were made before MALA could adapt a dense matrix)
        "warmup": (Banana(), MALA(0.1, dense_mass=False), x0(8, 2), 40,
                   {"num_warmup": 60, "adaptation": "default"}),
        "walls": (_walled, MALA(1.3), 0.5 * x0(6, 2, seed=3), 60, {}),
        "f32_energy": (lambda x: _std_normal(1)(x).float(), MALA(0.45), x0(4, 3), 40, {}),
        "f64_energy": (lambda x: _std_normal(1)(x).double(), MALA(0.45), x0(4, 3, dtype=f32),
                       40, {}),
    }  # fmt: skip
    out = {}
    for i, (name, (energy, kernel, x, n, kw)) in enumerate(cases.items()):
        kw = {"adaptation": None, **kw}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = ebmcmc.sample(energy, kernel, x, n, generator=10 + i, progress=False, **kw)
        out[f"{name}_x"] = tr.draws
        for s in ("energy", "accept_prob", "diverging"):
            out[f"{name}_{s}"] = tr.stats[s]
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.save(runs(), OUT)
    print(f"wrote {OUT}")
