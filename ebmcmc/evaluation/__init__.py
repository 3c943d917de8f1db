"""Sample-quality figures: distances between sample sets, exact KL on 2-D grids, and a
classifier-feature FID for small grey images, and IS/FID through an established package
with local Inception weights.

Example:
    >>> import torch
    >>> from ebmcmc.evaluation import mmd
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    >>> abs(float(mmd(x, y))) < 0.05
    True
"""

from .classifier_fid import ClassifierFID, default_cache_dir
from .distances import (
    DEFAULT_MMD_SCALES,
    frechet_distance,
    median_bandwidth,
    mmd,
    sliced_wasserstein,
)
from .grid import (
    GridLogProb,
    kl_on_grid,
    kl_to_grid_density,
    model_log_prob_on_grid,
    recovery_log_prob_on_grid,
)
from .inception import InceptionUnavailable, inception_metrics, to_uint8
from .ood import auroc, level_score, marginal_score, ood_auroc_table, score_batches

__all__ = [
    "mmd",
    "DEFAULT_MMD_SCALES",
    "median_bandwidth",
    "sliced_wasserstein",
    "frechet_distance",
    "GridLogProb",
    "model_log_prob_on_grid",
    "kl_on_grid",
    "kl_to_grid_density",
    "recovery_log_prob_on_grid",
    "default_cache_dir",
    "ClassifierFID",
    "inception_metrics",
    "InceptionUnavailable",
    "to_uint8",
    "auroc",
    "marginal_score",
    "level_score",
    "score_batches",
    "ood_auroc_table",
]
