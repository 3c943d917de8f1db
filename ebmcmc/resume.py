"""What resuming a run needs beyond its final state: the warm-up's running state and the kernel.

An interrupted warm-up is resumed from the :class:`~ebmcmc.adaptation.Adapter`'s running
state: its attributes (numbers, tensors, named tuples, lists, nested objects), flattened to
dotted names by :func:`adapter_state` and put back by :func:`restore_adapter` into a fresh
Adapter built by the same configuration for the same kernel and number of steps. Nothing here
depends on the Adapter's particular fields, so the adaptation layer can change them freely.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .kernels.base import Kernel
from .trace import Trace, _to_flat

__all__ = ["adapter_state", "restore_adapter", "resume_kernel"]

_PLAIN = (bool, int, float, str, type(None))


def _plain(v) -> bool:
    return isinstance(v, _PLAIN) or (
        isinstance(v, tuple | list) and not hasattr(v, "_fields") and all(_plain(i) for i in v)
    )


def _frozen(v):
    return tuple(_frozen(i) for i in v) if isinstance(v, tuple | list) else v


def adapter_state(adapter) -> dict[str, Any]:
    """The running state of a warm-up :class:`~ebmcmc.adaptation.Adapter` as ``name ->
    tensor | number | None | tuple`` (what :class:`~ebmcmc.trace.WarmupProgress` stores).

    Example:
        >>> import torch
        >>> from ebmcmc import WindowAdaptation
        >>> from ebmcmc.kernels import MALA
        >>> k = MALA(0.1)
        >>> s = k.init(lambda x: (x**2).sum(-1), torch.zeros(4, 2))
        >>> adapter_state(WindowAdaptation().start(k, s, 100))["iteration"]
        0
    """
    out: dict[str, Any] = {}

    def walk(obj, key: str) -> None:
        if isinstance(obj, Tensor):
            out[key] = obj.detach().clone()
        elif _plain(obj):
            out[key] = _frozen(obj)
        elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
            for f in obj._fields:
                walk(getattr(obj, f), f"{key}.{f}")
        elif isinstance(obj, list | tuple):
            out[f"{key}.#"] = len(obj)
            for i, item in enumerate(obj):
                walk(item, f"{key}.{i}")
        elif hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                walk(v, f"{key}.{k}" if key else k)
        else:
            raise TypeError(f"cannot keep the warm-up's {key!r} ({type(obj).__name__})")

    walk(adapter, "")
    return out


def restore_adapter(adapter, values: dict[str, Any], device: torch.device) -> None:
    """Put a state from :func:`adapter_state` back into ``adapter`` (built by the same
    :class:`~ebmcmc.adaptation.WindowAdaptation` for the same kernel and number of steps).

    Raises:
        ValueError: the state was made with another configuration or for another kernel.

    Example:
        >>> import torch
        >>> from ebmcmc import WindowAdaptation
        >>> from ebmcmc.kernels import MALA
        >>> k = MALA(0.1)
        >>> s = k.init(lambda x: (x**2).sum(-1), torch.zeros(4, 2))
        >>> a, b = WindowAdaptation().start(k, s, 100), WindowAdaptation().start(k, s, 100)
        >>> a.iteration = 7
        >>> restore_adapter(b, adapter_state(a), torch.device("cpu"))
        >>> b.iteration
        7
    """
    mine = adapter_state(adapter)
    config = {k: v for k, v in mine.items() if k.startswith("config.")}
    if any(values.get(k) != v for k, v in config.items()):
        raise ValueError(
            "the interrupted warm-up was configured with another WindowAdaptation; pass the "
            "same adaptation to finish it"
        )

    def get(key: str):
        if key not in values:
            raise ValueError(f"the saved warm-up has no {key!r}: made for another kernel?")
        v = values[key]
        return v.to(device) if isinstance(v, Tensor) else v

    def rebuild(obj, key: str):
        if isinstance(obj, Tensor) or _plain(obj):
            v = get(key)
            return list(v) if isinstance(obj, list) and isinstance(v, tuple) else v
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*(rebuild(getattr(obj, f), f"{key}.{f}") for f in obj._fields))
        if isinstance(obj, list | tuple):
            if get(f"{key}.#") != len(obj):
                raise ValueError(f"the saved warm-up's {key!r} differs: made for another kernel?")
            items = [rebuild(item, f"{key}.{i}") for i, item in enumerate(obj)]
            return items if isinstance(obj, list) else tuple(items)
        for k, v in vars(obj).items():
            if not (key == "" and k == "config"):
                setattr(obj, k, rebuild(v, f"{key}.{k}" if key else k))
        return obj

    rebuild(adapter, "")


def _same_kernel(a: Kernel, b: Kernel) -> bool:
    if type(a) is not type(b):
        return False
    try:
        (fa, ra), (fb, rb) = _to_flat(a, "k", Kernel), _to_flat(b, "k", Kernel)
    except TypeError:
        return True  # cannot tell
    return fa == fb and ra.keys() == rb.keys() and all(np.array_equal(ra[k], rb[k]) for k in ra)


def resume_kernel(kernel: Kernel, trace: Trace, num_warmup: int, adaptation) -> Kernel:
    """The kernel to continue ``trace`` with, checking the arguments of a resumed warm-up.

    A trace stopped during warm-up continues with its own kernel (the hyperparameters tuned so
    far); ``kernel`` must be of the same class and ``num_warmup`` the interrupted call's. A
    finished warm-up continues with ``kernel``, with a warning when it is not the trace's.

    Example:
        >>> import torch, ebmcmc
        >>> from ebmcmc.kernels import MALA
        >>> tr = ebmcmc.sample(lambda x: (x**2).sum(-1), MALA(0.3), torch.zeros(2, 1), 3,
        ...                    generator=0, progress=False)
        >>> resume_kernel(tr.kernel, tr, 0, None)
        MALA(step_size=0.3, inverse_mass_matrix=None, dense_mass=None)
    """
    w = trace.warmup
    if w is None:
        if trace.kernel is not None and not _same_kernel(kernel, trace.kernel):
            warnings.warn(
                "init is a trace but kernel is not the trace's kernel: the run continues with "
                "the kernel given; pass trace.kernel (the adapted one) to continue it bit for "
                "bit",
                stacklevel=3,
            )
        return kernel
    if num_warmup != w.total:
        raise ValueError(
            f"init stopped after {w.done} of {w.total} warm-up steps; pass num_warmup={w.total} "
            "(the interrupted call's value) to finish that warm-up"
        )
    if (w.adapter is None) != (adaptation is None):
        given = "without" if adaptation is None else "with"
        raise ValueError(
            f"the interrupted warm-up ran {'without' if w.adapter is None else 'with'} "
            f"adaptation; it cannot be finished {given} it (pass the same adaptation)"
        )
    if trace.kernel is None:
        raise ValueError("init has no kernel to finish its warm-up with (a kernel class from "
                         "outside ebmcmc is not saved); start the warm-up again")  # fmt: skip
    if type(kernel) is not type(trace.kernel):
        raise TypeError(f"init's warm-up ran {type(trace.kernel).__name__}, not "
                        f"{type(kernel).__name__}")  # fmt: skip
    return trace.kernel  # with the hyperparameters tuned so far
