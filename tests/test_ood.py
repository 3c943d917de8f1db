"""OOD detection: AUROC against scikit-learn's, the scores of a joint model, the OOD image sets
(from synthetic IDX files; real MNIST when ``EBMCMC_MNIST_DIR`` names its folder)."""

from __future__ import annotations

import gzip
import math
import os
import struct

import numpy as np
import pytest
import torch

from ebmcmc.datasets import (
    OOD_SETS,
    load_digits,
    load_mnist_ood_sets,
    mnist_ood_sets,
    resize_images,
)
from ebmcmc.evaluation import (
    auroc,
    level_score,
    marginal_score,
    ood_auroc_table,
    score_batches,
)

roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score


def _sk(a: torch.Tensor, b: torch.Tensor) -> float:
    y = np.r_[np.ones(a.numel()), np.zeros(b.numel())]
    return float(roc_auc_score(y, np.r_[a.numpy(), b.numpy()]))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_scikit_learn_with_and_without_ties(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(300, generator=g) + 0.5
    b = torch.randn(200, generator=g)
    assert auroc(a, b) == pytest.approx(_sk(a, b), abs=1e-12)
    a, b = a.round(), b.round()  # many ties
    assert auroc(a, b) == pytest.approx(_sk(a, b), abs=1e-12)


def test_auroc_extremes_and_errors():
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 0.0
    assert auroc(torch.ones(4), torch.ones(3)) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.ones(0), torch.ones(2))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([1.0, math.nan]), torch.ones(2))


def _joint(x, t):
    """A joint energy with known values: E(x, t) = |x|^2 / 2 * (t + 1) + t."""
    td = t.to(x.dtype)
    return 0.5 * (x**2).flatten(1).sum(-1) * (td + 1) + td


def test_marginal_and_level_scores_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    sq = 0.5 * (x**2).sum(-1)
    by_hand = torch.log(sum(torch.exp(-(sq * (t + 1) + t)) for t in range(4)))
    assert torch.allclose(marginal_score(_joint, 4)(x), by_hand)
    assert torch.allclose(level_score(_joint, 0)(x), -sq)
    assert torch.allclose(level_score(_joint, 2)(x), -(3 * sq + 2))
    with pytest.raises(ValueError, match="num_levels"):
        marginal_score(_joint, 0)
    with pytest.raises(ValueError, match="level"):
        level_score(_joint, -1)


def test_ood_auroc_table_scores_each_set_against_the_in_distribution():
    g = torch.Generator().manual_seed(0)
    x_in = torch.randn(200, 2, generator=g)
    sets = {"far": torch.randn(150, 2, generator=g) + 3, "near": torch.randn(100, 2, generator=g)}
    score = level_score(_joint, 0)
    table = ood_auroc_table(score, x_in, sets, batch_size=64)
    assert list(table) == ["far", "near"]
    s_in = score_batches(score, x_in, 64)
    assert torch.equal(s_in, score(x_in))
    for name, x in sets.items():
        assert table[name] == auroc(s_in, score(x))
    assert table["far"] > 0.9 and 0.35 < table["near"] < 0.65
    with pytest.raises(ValueError, match="at least one"):
        ood_auroc_table(score, x_in, {})


# ------------------------------------------------------------------ the OOD image sets


def _images(n: int, seed: int = 0) -> torch.Tensor:
    u8 = torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    return u8.to(torch.float32) / 127.5 - 1


def test_ood_sets_from_mnist_images():
    x = _images(12)
    ood = mnist_ood_sets(x)
    assert tuple(ood) == OOD_SETS
    for name, v in ood.items():
        assert v.shape == (12, 1, 28, 28) and v.dtype == torch.float32, name
        assert float(v.min()) >= -1 and float(v.max()) <= 1, name
    assert torch.equal(ood["inverted"], -x)
    # a 90-degree counter-clockwise turn: out[i, j] = in[j, W - 1 - i]
    assert torch.equal(ood["rotated"][:, 0, 3, 5], x[:, 0, 5, 27 - 3])
    assert torch.equal(torch.rot90(ood["rotated"], -1, dims=(2, 3)), x)
    flat = ood["constant"].flatten(1)
    assert torch.equal(flat, flat[:, :1].expand_as(flat)) and flat[:, 0].unique().numel() == 12
    assert ood["uniform"].std() > 0.5  # uniform on [-1, 1]: sd 0.577
    digits = resize_images(load_digits()[0], 28)
    assert all((digits == d).all((1, 2, 3)).any() for d in ood["digits"])


def test_ood_sets_subsample_and_check_arguments():
    x = _images(20)
    a = mnist_ood_sets(x, num=5, generator=3, sets=("inverted", "constant"))
    b = mnist_ood_sets(x, num=5, generator=3, sets=("inverted", "constant"))
    assert list(a) == ["inverted", "constant"] and a["inverted"].shape[0] == 5
    assert torch.equal(a["inverted"], b["inverted"]) and torch.equal(a["constant"], b["constant"])
    assert all((x == -v).all((1, 2, 3)).any() for v in a["inverted"])
    with pytest.raises(ValueError, match="unknown"):
        mnist_ood_sets(x, sets=("svhn",))
    with pytest.raises(ValueError, match="num"):
        mnist_ood_sets(x, num=21)
    with pytest.raises(ValueError, match="S, S"):
        mnist_ood_sets(torch.zeros(3, 1, 8, 9))
    small = mnist_ood_sets(load_digits()[0][:6], sets=("rotated", "uniform"))  # 8 x 8 images
    assert small["rotated"].shape == small["uniform"].shape == (6, 1, 8, 8)


def test_resize_images():
    d = load_digits()[0][:3]
    r = resize_images(d, 28)
    assert r.shape == (3, 1, 28, 28) and float(r.min()) >= -1 and float(r.max()) <= 1
    assert torch.allclose(resize_images(d, 8), d)
    with pytest.raises(ValueError, match="size"):
        resize_images(d, 0)


def _write_idx(folder, images_u8: np.ndarray, labels: np.ndarray) -> None:
    n = images_u8.shape[0]
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, n, 28, 28) + images_u8.tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 0x08, 1, n) + labels.astype(np.uint8).tobytes())


def test_load_mnist_ood_sets_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path, u8, rng.integers(0, 10, 7))
    ood = load_mnist_ood_sets(tmp_path, sets=("inverted", "rotated"))
    x = torch.from_numpy(u8).unsqueeze(1).float() / 127.5 - 1
    assert torch.equal(ood["inverted"], -x)
    assert torch.equal(ood["rotated"], torch.rot90(x, 1, dims=(2, 3)))
    with pytest.raises(FileNotFoundError):
        load_mnist_ood_sets(tmp_path / "missing")


MNIST_DIR = os.environ.get("EBMCMC_MNIST_DIR")


@pytest.mark.skipif(not MNIST_DIR, reason="EBMCMC_MNIST_DIR is not set")
def test_ood_sets_from_real_mnist():
    ood = load_mnist_ood_sets(MNIST_DIR, num=1000, generator=0)
    assert tuple(ood) == OOD_SETS
    assert all(v.shape == (1000, 1, 28, 28) for v in ood.values())
    # MNIST's background is black (-1): inverted images are mostly white
    assert float((ood["inverted"] > 0.9).double().mean()) > 0.6
