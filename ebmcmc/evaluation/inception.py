"""Inception Score and FID through an established package, with local weights only.

ebmcmc does not re-implement Inception features: it calls torch-fidelity (IS and FID) or
pytorch-fid (FID), whichever imports first, with Inception weights from a local file. Nothing is
ever downloaded; when a package or the weights are missing, :class:`InceptionUnavailable` says
what is missing.

Images are exchanged as uint8 arrays ``(N, H, W, 3)`` (the layout FID tools read);
:func:`to_uint8` converts model samples in ``[-1, 1]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["to_uint8", "inception_backend", "inception_metrics", "InceptionUnavailable"]

BACKENDS = ("torch_fidelity", "pytorch_fid")


class InceptionUnavailable(RuntimeError):
    """IS/FID cannot be computed here (no package imports, or no local weights).

    Example:
        >>> str(InceptionUnavailable("no weights"))
        'no weights'
    """


def to_uint8(x: Tensor) -> np.ndarray:
    """Images ``(N, 3, H, W)`` in ``[-1, 1]`` as uint8 ``(N, H, W, 3)``.

    Example:
        >>> import torch
        >>> to_uint8(torch.zeros(1, 3, 2, 2)).shape, int(to_uint8(torch.ones(1, 3, 1, 1)).max())
        ((1, 2, 2, 3), 255)
    """
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def inception_backend() -> str | None:
    """The first of ``torch_fidelity`` and ``pytorch_fid`` that imports, or ``None``.

    Example:
        >>> inception_backend() in (None, "torch_fidelity", "pytorch_fid")
        True
    """
    for mod in BACKENDS:
        try:
            __import__(mod)
            return mod
        except Exception:  # noqa: BLE001 -- e.g. a torchvision that does not match torch
            continue
    return None


class _UInt8Images(torch.utils.data.Dataset):
    """uint8 ``(N, H, W, 3)`` as a dataset of ``(3, H, W)`` uint8 tensors (torch-fidelity)."""

    def __init__(self, imgs: np.ndarray):
        self.imgs = imgs

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.imgs[i])).permute(2, 0, 1)


def inception_metrics(
    samples: np.ndarray,
    weights: str | os.PathLike,
    reference: dict[str, np.ndarray] | None = None,
    backend: str | None = None,
    batch_size: int = 200,
) -> dict[str, float]:
    """IS (torch-fidelity) and FID of ``samples`` against ``reference``.

    Args:
        samples: uint8 ``(N, H, W, 3)``.
        weights: a local Inception weights file (torch-fidelity:
            ``weights-inception-2015-12-05-6726825d.pth``; pytorch-fid:
            ``pt_inception-2015-12-05-6726825d.pth``).
        reference: ``{"images": uint8 (M, H, W, 3)}``, or pytorch-fid's statistics
            ``{"mu": (2048,), "sigma": (2048, 2048)}``, or ``None`` (IS only).
        backend: ``"torch_fidelity"`` or ``"pytorch_fid"`` (default: the first that imports).
        batch_size: images per forward pass.

    Returns:
        ``{"is_mean", "is_std"}`` (torch-fidelity) and ``"fid"`` where a reference was given.

    Raises:
        InceptionUnavailable: neither package imports, the weights file is missing, or
            pytorch-fid was given no reference.

    Example:
        >>> import numpy as np
        >>> try:
        ...     inception_metrics(np.zeros((2, 32, 32, 3), np.uint8), "/no/such/file")
        ... except InceptionUnavailable as err:
        ...     print("unavailable")
        unavailable
    """
    backend = backend or inception_backend()
    if backend is None:
        raise InceptionUnavailable(
            "neither torch-fidelity nor pytorch-fid imports here (weights and data are never "
            "downloaded)"
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if weights is None or not Path(weights).is_file():
        raise InceptionUnavailable(
            f"the Inception weights must be an existing local file (given: {weights}); "
            "weights are never downloaded"
        )
    imgs = None if reference is None else reference.get("images")
    cuda = torch.cuda.is_available()
    if backend == "torch_fidelity":
        import torch_fidelity

        m = torch_fidelity.calculate_metrics(
            input1=_UInt8Images(samples),
            input2=None if imgs is None else _UInt8Images(imgs),
            isc=True,
            fid=imgs is not None,
            feature_extractor_weights_path=str(weights),
            cuda=cuda,
            batch_size=batch_size,
            verbose=False,
        )
        out = {
            "is_mean": float(m["inception_score_mean"]),
            "is_std": float(m["inception_score_std"]),
        }
        if imgs is not None:
            out["fid"] = float(m["frechet_inception_distance"])
        return out
    if not reference:
        raise InceptionUnavailable(
            "pytorch-fid computes FID only, and needs reference images or statistics"
        )
    return {"fid": _pytorch_fid(samples, weights, reference, cuda, batch_size)}


def _pytorch_fid(samples, weights, reference, cuda: bool, batch_size: int) -> float:
    from pytorch_fid import inception as pfi
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    dev = torch.device("cuda" if cuda else "cpu")
    # pytorch-fid loads its FID Inception weights with torch.hub from FID_WEIGHTS_URL; put the
    # user's file where torch.hub looks first, so it is found and nothing is fetched
    hub = Path(tempfile.mkdtemp(prefix="fid_hub_"))
    (hub / "checkpoints").mkdir()
    (hub / "checkpoints" / os.path.basename(pfi.FID_WEIGHTS_URL)).symlink_to(
        Path(weights).resolve()
    )
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except Exception as err:  # noqa: BLE001
        raise InceptionUnavailable(f"could not load {weights}: {err}") from err
    finally:
        torch.hub.set_dir(old_hub)

    def stats(imgs: np.ndarray):
        net.to(dev).eval()
        feats = []
        with torch.no_grad():
            for i in range(0, len(imgs), batch_size):
                b = torch.from_numpy(imgs[i : i + batch_size]).permute(0, 3, 1, 2).float() / 255
                feats.append(net(b.to(dev))[0].squeeze(-1).squeeze(-1).cpu().numpy())
        f = np.concatenate(feats).astype(np.float64)
        return f.mean(0), np.cov(f, rowvar=False)

    imgs = reference.get("images")
    mu2, s2 = (reference["mu"], reference["sigma"]) if imgs is None else stats(imgs)
    mu1, s1 = stats(samples)
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))
