"""Reference energy networks conditioned on a noise level.

Every network here is called as ``model(x, t)`` with ``t`` an integer tensor of levels (one per
example, shape ``batch``) and returns **one energy per example**, shape ``batch``. The sign is
ebmcmc's: the density is proportional to ``exp(-E)``. The papers (DRL, CDRL, DAEBM) write
``f = -E``; where a network reproduces a paper's architecture, its last operation is a
negation so that the module is an energy. Levels are checked on every call (integer dtype,
shape, range ``0..num_levels-1``); the range check reads two numbers back from the device.

* :func:`sinusoidal_embedding`: DDPM's sinusoidal embedding of (integer or real) levels.
* :class:`TimeMLP`: a small MLP energy of flat ``x`` and a level, for 2-D toys on CPU.
* :class:`DRLResNet`: the DRL image energy (Gao et al., ICLR 2021): an encoder-only DDPM-style
  ResNet with spectral normalization.
* :class:`LevelScaled`: a network's output scaled per level (energies in nats at every level).
* CDRL (Zhu et al., ICLR 2024): :class:`CDRLResNet` (the image energy) and :class:`CDRLUNet`
  (the initializer), conditioned on the log-SNR of their level through
  :class:`LogSNRLevels`; :class:`CDRLEnergyMLP` and :class:`CDRLInitializerMLP` for flat data;
  :class:`CooperativeModel` holds an energy and an initializer as one module.

Example:
    >>> import torch
    >>> from ebmcmc.nn import TimeMLP
    >>> net = TimeMLP(2, hidden=16, num_levels=3)
    >>> net(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)).shape
    torch.Size([4])
"""

from .cdrl_resnet import CDRLResNet
from .cooperative import CDRLEnergyMLP, CDRLInitializerMLP, CooperativeModel
from .levels import LevelScaled, sinusoidal_embedding
from .logsnr import LogSNRLevels, logsnr_to_unit
from .mlp import TimeMLP
from .resnet import DRLResNet
from .unet import CDRLUNet

__all__ = [
    "sinusoidal_embedding",
    "TimeMLP",
    "LevelScaled",
    "DRLResNet",
    "logsnr_to_unit",
    "LogSNRLevels",
    "CDRLResNet",
    "CDRLUNet",
    "CDRLEnergyMLP",
    "CDRLInitializerMLP",
    "CooperativeModel",
]
