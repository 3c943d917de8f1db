"""Out-of-distribution detection with an energy model: scores, AUROC and the AUROC table.

A *score* maps inputs ``(n, *event)`` to ``(n,)``, **higher meaning more in-distribution**.
For a joint model ``E(x, t)`` over diffusion levels (DAEBM) two scores are natural:

* :func:`marginal_score`: the model's marginal over the levels,
  ``log p(x) = logsumexp_t(-E(x, t))`` up to the (common) log normaliser;
* :func:`level_score`: the negative energy at one level, ``-E(x, 0)`` by default (level 0 is
  the model of the data).

:func:`auroc` is the area under the ROC curve of telling in-distribution inputs (positives)
from others by the score (the Mann–Whitney statistic, ties counted one half); 0.5 is chance,
1 a perfect detector. :func:`ood_auroc_table` scores an in-distribution set and several
out-of-distribution sets (e.g. :func:`ebmcmc.datasets.mnist_ood_sets`) and returns one AUROC
per set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

__all__ = ["auroc", "marginal_score", "level_score", "score_batches", "ood_auroc_table"]

Score = Callable[[Tensor], Tensor]


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """The AUROC of in-distribution scores against out-of-distribution ones.

    ``P(s_in > s_out) + P(s_in = s_out) / 2`` over all pairs, computed from average ranks
    (``O(n log n)``).

    Args:
        scores_in: scores of the in-distribution inputs (the positives), any shape.
        scores_out: scores of the out-of-distribution inputs, any shape.

    Returns:
        The AUROC in ``[0, 1]``.

    Raises:
        ValueError: a set is empty or holds a NaN.

    Example:
        >>> import torch
        >>> auroc(torch.tensor([3.0, 2.0, 2.0]), torch.tensor([1.0, 2.0]))  # 4 wins, 2 ties of 6
        0.8333333333333334
    """
    a = torch.as_tensor(scores_in).detach().reshape(-1).double().cpu()
    b = torch.as_tensor(scores_out).detach().reshape(-1).double().cpu()
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("auroc needs at least one in- and one out-of-distribution score")
    if bool(torch.isnan(a).any()) or bool(torch.isnan(b).any()):
        raise ValueError("auroc: the scores hold NaN")
    s = torch.cat([a, b])
    order = torch.argsort(s, stable=True)
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True,
                                                  return_counts=True)  # fmt: skip
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each tie group's last member
    avg = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = avg[inverse]
    n_in, n_out = a.numel(), b.numel()
    u = float(ranks[:n_in].sum()) - n_in * (n_in + 1) / 2
    return u / (n_in * n_out)


def _levels(n: int, t: int, like: Tensor) -> Tensor:
    return torch.full((n,), t, dtype=torch.long, device=like.device)


def marginal_score(model, num_levels: int) -> Score:
    """The score ``x -> logsumexp_t(-E(x, t))`` over the levels ``t = 0..num_levels-1`` of a
    joint model ``model(x, t)`` (``num_levels`` forward passes per input).

    Args:
        model: ``model(x (n, *event), t (n,)) -> (n,)``.
        num_levels: ``T + 1``.

    Example:
        >>> import math, torch
        >>> score = marginal_score(lambda x, t: x.sum(-1) + t, 2)
        >>> round(float(score(torch.zeros(1, 3))), 6) == round(math.log(1 + math.exp(-1)), 6)
        True
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be an int >= 1, got {num_levels!r}")

    def score(x: Tensor) -> Tensor:
        n = x.shape[0]
        table = torch.stack([model(x, _levels(n, t, x)) for t in range(num_levels)])
        return torch.logsumexp(-table, dim=0)

    return score


def level_score(model, level: int = 0) -> Score:
    """The score ``x -> -E(x, level)`` of a joint model ``model(x, t)``.

    Example:
        >>> import torch
        >>> level_score(lambda x, t: x.sum(-1) + t, 0)(torch.ones(2, 3))
        tensor([-3., -3.])
    """
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"level must be an int >= 0, got {level!r}")

    def score(x: Tensor) -> Tensor:
        return -model(x, _levels(x.shape[0], level, x))

    return score


@torch.no_grad()
def score_batches(score: Score, data: Tensor, batch_size: int = 500) -> Tensor:
    """Apply ``score`` to ``data`` ``(n, *event)`` in batches without gradients; ``(n,)``.

    Example:
        >>> import torch
        >>> score_batches(lambda x: x.sum(-1), torch.ones(5, 2), batch_size=2).tolist()
        [2.0, 2.0, 2.0, 2.0, 2.0]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if data.shape[0] == 0:
        raise ValueError("data is empty")
    return torch.cat([score(data[i : i + batch_size]).detach().reshape(-1)
                      for i in range(0, data.shape[0], batch_size)])  # fmt: skip


def ood_auroc_table(
    score: Score,
    in_data: Tensor,
    ood_sets: Mapping[str, Tensor],
    batch_size: int = 500,
) -> dict[str, float]:
    """The AUROC of ``score`` for the in-distribution ``in_data`` against each set of
    ``ood_sets``.

    Args:
        score: ``(n, *event) -> (n,)``, higher = more in-distribution (e.g.
            :func:`marginal_score` or :func:`level_score` of a trained model).
        in_data: the in-distribution test inputs ``(n, *event)``.
        ood_sets: ``name -> inputs (m, *event)``.
        batch_size: inputs scored per call.

    Returns:
        ``name -> AUROC``, in ``ood_sets``' order.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> score = lambda x: -(x**2).sum(-1)  # a standard normal's log density, up to a constant
        >>> table = ood_auroc_table(score, torch.randn(500, 2, generator=g),
        ...                         {"wide": 3 * torch.randn(500, 2, generator=g),
        ...                          "same": torch.randn(500, 2, generator=g)})
        >>> table["wide"] > 0.8, abs(table["same"] - 0.5) < 0.1
        (True, True)
    """
    if not ood_sets:
        raise ValueError("ood_sets must name at least one set")
    s_in = score_batches(score, in_data, batch_size)
    return {name: auroc(s_in, score_batches(score, x, batch_size)) for name, x in ood_sets.items()}
