"""Classifier-feature FID for 8 x 8 digits and 28 x 28 MNIST (no downloaded weights).

:class:`ClassifierFID` trains a small CNN once (CPU, fixed seed), caches it on disk
(atomically), and reports the Frechet distance between its penultimate-layer features of two
image sets. It is a self-contained stand-in for Inception-based FID on small grey images.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from .._files import atomic_write
from .distances import frechet_distance

__all__ = ["default_cache_dir", "ClassifierFID"]


def default_cache_dir() -> Path:
    """The cache directory: ``$EBMCMC_CACHE`` if set, else ``~/.cache/ebmcmc``.

    Example:
        >>> "EBMCMC_CACHE" in os.environ or default_cache_dir().parts[-2:] == (".cache", "ebmcmc")
        True
    """
    env = os.environ.get("EBMCMC_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/ebmcmc").expanduser()


class _SmallCNN(nn.Module):
    """3 x 3 conv blocks (ReLU, optional 2 x 2 max-pool) -> hidden FC + ReLU -> 10-way FC."""

    def __init__(self, size: int, blocks: tuple[tuple[int, bool], ...], feature_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 1, size
        for c_out, pool in blocks:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Linear(c_in * side * side, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(self.body(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _init_params(net: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Conv/Linear initialization, drawn from ``g``."""
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=g)
            fan_in = mod.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            if mod.bias is not None:
                nn.init.uniform_(mod.bias, -bound, bound, generator=g)


class _FIDConfig(TypedDict):
    size: int
    blocks: tuple[tuple[int, bool], ...]
    feature_dim: int
    epochs: int
    batch: int
    lr: float
    subset: int | None


# per dataset: image side, conv blocks (channels, pool after), feature dim, training settings
_FID_CONFIGS: dict[str, _FIDConfig] = {
    "digits": _FIDConfig(
        size=8,
        blocks=((16, False), (32, True), (32, True)),
        feature_dim=64,
        epochs=8,
        batch=32,
        lr=2e-3,
        subset=None,
    ),
    "mnist": _FIDConfig(
        size=28,
        blocks=((16, True), (32, True)),
        feature_dim=128,
        epochs=1,
        batch=64,
        lr=2e-3,
        subset=10000,
    ),
}
_FID_VERSION = 1


class ClassifierFID:
    """Frechet distance between classifier features, for 8 x 8 digits or 28 x 28 MNIST.

    A small CNN (3 x 3 conv layers of 16, 32(, 32) channels with max-pooling, a hidden fully
    connected layer of 64 (digits) or 128 (MNIST) units, a 10-way head) is trained once on
    CPU, single-threaded (torch's intra-op thread count is set to 1 while training and
    restored afterwards), with a fixed seed: initialization and shuffling come from one
    ``torch.Generator``, so the same seed gives the same network. The features are the hidden
    layer's ReLU activations (the penultimate layer). Training: digits -- the ``"train"``
    split of :func:`ebmcmc.data.load_digits` (1438 images), 8 epochs of Adam, a few seconds,
    about 0.98 test accuracy; MNIST -- a random subset of 10 000 training images
    (``train_subset``), 1 epoch, about 10 s, about 0.94 accuracy.

    The trained weights are cached at
    ``<cache_dir>/classifier_fid/<dataset>-v1-seed<seed>-ep<epochs>-n<subset or "all">.pt``
    (``cache_dir``: argument, else ``$EBMCMC_CACHE``, else ``~/.cache/ebmcmc``), written
    atomically (temporary file + ``os.replace``) and read back with
    ``torch.load(..., weights_only=True)``. An unreadable cache file is replaced (with a
    warning). The file also records the held-out accuracy (``test_accuracy``).

    Inputs are images in ``[-1, 1]`` of shape ``(N, 1, S, S)`` or ``(N, S, S)`` with ``S`` 8
    (digits) or 28 (MNIST).

    Args:
        dataset: ``"digits"`` or ``"mnist"``.
        cache_dir: where to cache (see above).
        data_path: MNIST directory (for :func:`ebmcmc.data.load_mnist`); needed only when
            the MNIST classifier has to be trained.
        seed: training seed.
        epochs: override the number of training epochs.
        train_subset: MNIST only: number of training images used (``None``: all 60 000).
        device: device for feature extraction (training is always on CPU).

    Attributes:
        classifier: the trained network (eval mode).
        test_accuracy: accuracy on the held-out split (digits ``"test"``, MNIST ``t10k``).
        cache_path: the cache file.
        loaded_from_cache: whether the weights came from the cache.

    Example:
        >>> import os, tempfile
        >>> from ebmcmc.datasets import load_digits
        >>> cache = os.path.join(tempfile.gettempdir(), "ebmcmc-doctest-cache")
        >>> fid = ClassifierFID("digits", cache_dir=cache)  # trains once (seconds), then cached
        >>> x, _ = load_digits("test")
        >>> fid.fid(x, torch.rand_like(x) * 2 - 1) > 10 * fid.fid(x, load_digits("train")[0])
        True
    """

    def __init__(
        self,
        dataset: str = "digits",
        *,
        cache_dir: str | os.PathLike | None = None,
        data_path: str | os.PathLike | None = None,
        seed: int = 0,
        epochs: int | None = None,
        train_subset: int | None = 10000,
        device: torch.device | str = "cpu",
    ):
        if dataset not in _FID_CONFIGS:
            raise ValueError(f"dataset must be one of {', '.join(_FID_CONFIGS)}, got {dataset!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        cfg = _FID_CONFIGS[dataset].copy()
        if epochs is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"epochs must be a positive int, got {epochs!r}")
            cfg["epochs"] = epochs
        if dataset == "mnist":
            if train_subset is not None and (
                isinstance(train_subset, bool)
                or not isinstance(train_subset, int)
                or train_subset < 100
            ):
                raise ValueError(
                    f"train_subset must be an int >= 100 or None, got {train_subset!r}"
                )
            cfg["subset"] = train_subset
        self.dataset, self.seed, self._cfg = dataset, seed, cfg
        self.image_size = cfg["size"]
        self.feature_dim = cfg["feature_dim"]
        self.device = torch.device(device)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        n_tag = "all" if cfg["subset"] is None else str(cfg["subset"])
        self.cache_path = (
            root
            / "classifier_fid"
            / (f"{dataset}-v{_FID_VERSION}-seed{seed}-ep{cfg['epochs']}-n{n_tag}.pt")
        )
        net = self._new_net()
        payload = self._load_cache(net)
        self.loaded_from_cache = payload is not None
        if payload is None:
            payload = self._train(net, data_path)
            self._save_cache(payload)
        self.test_accuracy = float(payload["test_accuracy"])
        self.classifier = net.to(self.device).eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)

    # -- training and cache ---------------------------------------------------------

    def _new_net(self) -> _SmallCNN:
        c = self._cfg
        return _SmallCNN(c["size"], c["blocks"], c["feature_dim"])

    def _load_cache(self, net: nn.Module) -> dict | None:
        if not self.cache_path.is_file():
            return None
        try:
            payload = torch.load(self.cache_path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != "ebmcmc.ClassifierFID":
                raise ValueError("not a ClassifierFID cache file")
            if payload.get("version") != _FID_VERSION or payload.get("dataset") != self.dataset:
                raise ValueError("version or dataset mismatch")
            net.load_state_dict(payload["state_dict"])
            float(payload["test_accuracy"])
        except Exception as e:  # a cache is disposable: rebuild it
            warnings.warn(
                f"ignoring unreadable classifier cache {self.cache_path} ({e}); retraining",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return payload

    def _save_cache(self, payload: dict) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.cache_path, lambda tmp: torch.save(payload, tmp))

    def _data(self, data_path):
        from ..datasets import load_digits, load_mnist

        if self.dataset == "digits":
            xtr, ytr = load_digits("train")
            xte, yte = load_digits("test")
            return xtr, ytr, xte, yte
        if data_path is None:
            raise ValueError(
                "data_path is required to train the MNIST classifier (a directory with the "
                f"MNIST IDX files); no cached classifier at {self.cache_path}"
            )
        xtr, ytr = load_mnist(data_path, "train")
        xte, yte = load_mnist(data_path, "test")
        return xtr, ytr, xte, yte

    def _train(self, net: nn.Module, data_path) -> dict:
        from ..datasets import batches

        cfg = self._cfg
        xtr, ytr, xte, yte = self._data(data_path)
        g = torch.Generator().manual_seed(self.seed)
        if cfg["subset"] is not None and cfg["subset"] < xtr.shape[0]:
            idx = torch.randperm(xtr.shape[0], generator=g)[: cfg["subset"]]
            xtr, ytr = xtr[idx], ytr[idx]
        _init_params(net, g)
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        # One intra-op thread: the result does not depend on the machine's core count, and
        # tiny convolutions run faster than with contended OpenMP threads.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            net.train()
            with torch.enable_grad():
                for _ in range(cfg["epochs"]):
                    for xb, yb in batches((xtr, ytr), cfg["batch"], g):
                        loss = nn.functional.cross_entropy(net(xb), yb)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
            net.eval()
            acc = self._accuracy(net, xte, yte)
        finally:
            torch.set_num_threads(threads)
        return {
            "format": "ebmcmc.ClassifierFID",
            "version": _FID_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "epochs": cfg["epochs"],
            "train_size": int(xtr.shape[0]),
            "test_accuracy": acc,
            "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        }

    @staticmethod
    def _accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
        dev = next(net.parameters()).device
        correct = 0
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                pred = net(x[s : s + batch_size].to(dev)).argmax(-1).cpu()
                correct += int((pred == y[s : s + batch_size].cpu()).sum())
        return correct / max(1, x.shape[0])

    # -- public API --------------------------------------------------------------------

    def _images(self, name: str, x) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        s = self.image_size
        if x.ndim == 3 and tuple(x.shape[1:]) == (s, s):
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(
                f"{name} must be {self.dataset} images of shape (N, 1, {s}, {s}) or "
                f"(N, {s}, {s}), got {tuple(x.shape)}"
            )
        if x.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images, got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values")
        return x.to(device=self.device, dtype=torch.float32)

    def features(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Penultimate-layer features.

        Args:
            x: images ``(N, 1, S, S)`` or ``(N, S, S)`` in ``[-1, 1]``.
            batch_size: images per forward pass.

        Returns:
            float32 tensor ``(N, feature_dim)`` on CPU.

        Example:
            >>> import os, tempfile
            >>> cache = os.path.join(tempfile.gettempdir(), "ebmcmc-doctest-cache")
            >>> ClassifierFID("digits", cache_dir=cache).features(torch.zeros(2, 1, 8, 8)).shape
            torch.Size([2, 64])
        """
        x = self._images("x", x)
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                out.append(self.classifier.features(x[s : s + batch_size]).cpu())
        return torch.cat(out)

    def statistics(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean ``(F,)`` and covariance ``(F, F)`` (float64 numpy) of the images ``x``.

        Precompute these for a fixed reference set and pass them to :meth:`fid`.

        Example:
            >>> import os, tempfile
            >>> cache = os.path.join(tempfile.gettempdir(), "ebmcmc-doctest-cache")
            >>> f = ClassifierFID("digits", cache_dir=cache)
            >>> mu, cov = f.statistics(torch.zeros(5, 1, 8, 8))
            >>> mu.shape, cov.shape
            ((64,), (64, 64))
        """
        f = self.features(x).to(torch.float64).numpy()
        return f.mean(0), np.cov(f, rowvar=False)

    def fid(self, samples_a, samples_b) -> float:
        """Frechet distance between the feature distributions of two image sets.

        Args:
            samples_a: images ``(N, 1, S, S)``, or a ``(mean, cov)`` pair from
                :meth:`statistics`.
            samples_b: likewise.

        Returns:
            the distance (float; 0 for identical sets).

        Example:
            >>> import os, tempfile
            >>> from ebmcmc.datasets import load_digits
            >>> cache = os.path.join(tempfile.gettempdir(), "ebmcmc-doctest-cache")
            >>> f = ClassifierFID("digits", cache_dir=cache)
            >>> x_test, x_train = load_digits("test")[0], load_digits("train")[0]
            >>> f.fid(x_test, x_train) < f.fid(x_test, torch.rand_like(x_test) * 2 - 1) / 10
            True
        """
        mu1, c1 = samples_a if isinstance(samples_a, tuple) else self.statistics(samples_a)
        mu2, c2 = samples_b if isinstance(samples_b, tuple) else self.statistics(samples_b)
        return frechet_distance(mu1, c1, mu2, c2)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Classification accuracy on images ``x`` with int labels ``y`` ``(N,)``.

        Example:
            >>> import os, tempfile
            >>> from ebmcmc.datasets import load_digits
            >>> cache = os.path.join(tempfile.gettempdir(), "ebmcmc-doctest-cache")
            >>> ClassifierFID("digits", cache_dir=cache).accuracy(*load_digits("test")) > 0.9
            True
        """
        x = self._images("x", x)
        if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
            raise ValueError(f"y must be a tensor of shape ({x.shape[0]},)")
        return self._accuracy(self.classifier, x, y)
