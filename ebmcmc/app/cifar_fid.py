"""FID and IS of the samples the CIFAR-10 scripts write, through torch-fidelity or pytorch-fid
with local Inception weights (nothing is ever downloaded); part of :mod:`ebmcmc.app.cifar`,
which re-exports both functions.

Example:
    >>> import argparse
    >>> from ebmcmc.app.cifar_fid import fid_reference
    >>> fid_reference(argparse.Namespace(fid_ref=None), {"data": None})
    {}
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..datasets import load_cifar10
from ..evaluation import InceptionUnavailable, inception_metrics, to_uint8
from ..evaluation.inception import inception_backend

__all__ = ["fid_reference", "fid_if_possible"]


def fid_reference(args: argparse.Namespace, cfg: dict) -> dict[str, np.ndarray]:
    """The FID reference, read once: ``{"images": uint8 (N, 32, 32, 3)}`` from ``--fid-ref``
    (its first array) or, by default, the CIFAR-10 training images at ``--data``;
    ``{"mu": ..., "sigma": ...}`` when ``--fid-ref`` holds pytorch-fid's statistics; ``{}``
    when there is neither.

    Example:
        >>> fid_reference(argparse.Namespace(fid_ref=None), {"data": None})
        {}
    """
    if args.fid_ref is not None:
        ref = np.load(args.fid_ref)
        if "mu" in ref.files:
            return {"mu": ref["mu"], "sigma": ref["sigma"]}
        return {"images": ref[ref.files[0]]}
    if cfg["data"] is not None:
        return {"images": to_uint8(load_cifar10(cfg["data"], "train")[0])}
    return {}


def fid_if_possible(
    npz: Path,
    cfg: dict,
    args: argparse.Namespace,
    log: Callable[[str], None],
    script: str = "examples/cifar_drl.py",
) -> dict:
    """FID (and IS) of the samples in ``npz`` through torch-fidelity or pytorch-fid, with the
    Inception weights at ``--inception-weights`` (never downloaded). Returns the metrics
    computed (``{}`` with a message saying how to compute them when that is not possible;
    ``script`` is the command the message suggests).

    Example:
        >>> args = argparse.Namespace(out="runs/x", inception_weights=None, fid_ref=None)
        >>> said = []
        >>> fid_if_possible(Path("samples.npz"), {"data": None}, args, said.append)
        {}
        >>> said[0].startswith("FID/IS not computed")
        True
    """
    how = (
        f"To compute them here: install torch-fidelity (FID and IS) or pytorch-fid (FID), "
        f"put its Inception weights in a local file, and run\n"
        f"  python {script} --out {args.out} --eval-only --eval 50000 "
        f"--data PATH/cifar-10-python.tar.gz --inception-weights FILE\n"
        f"(torch-fidelity: weights-inception-2015-12-05-6726825d.pth; pytorch-fid: "
        f"pt_inception-2015-12-05-6726825d.pth), or feed {npz} (key 'samples': uint8 "
        f"N x 32 x 32 x 3) to your own FID/IS tool."
    )
    backend = inception_backend()
    w = args.inception_weights
    if backend is None:
        log(f"FID/IS not computed: neither torch-fidelity nor pytorch-fid imports here "
            f"(weights and data are never downloaded).\n{how}")  # fmt: skip
        return {}
    if w is None or not Path(w).is_file():
        log(f"FID/IS not computed: --inception-weights must name an existing local file "
            f"(given: {w}); weights are never downloaded.\n{how}")  # fmt: skip
        return {}
    ref = fid_reference(args, cfg)
    try:
        out = inception_metrics(np.load(npz)["samples"], w, ref or None, backend=backend)
    except InceptionUnavailable as err:
        log(f"FID/IS not computed: {err}; give reference images with --data or --fid-ref.\n{how}")
        return {}
    if "is_mean" in out:
        msg = f"IS = {out['is_mean']:.3f} ± {out['is_std']:.3f}"
        if "fid" in out:
            msg += f", FID = {out['fid']:.3f} against {len(ref['images'])} reference images"
        else:
            msg += " (FID needs --data or --fid-ref images)"
        log(msg + " (torch-fidelity)")
    else:
        log(f"FID = {out['fid']:.3f} (pytorch-fid features; IS needs torch-fidelity)")
    return out
