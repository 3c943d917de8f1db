"""Ctrl-C handled at step boundaries: a long loop finishes the step it is in before it stops.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives:
in the middle of a kernel step (after the generator has drawn some of the step's random
numbers), between an optimizer step and the update of the learning-rate schedule, inside the
bookkeeping of a trace. A run stopped there cannot be resumed bit for bit. Inside
:func:`deferred_interrupts`, the first Ctrl-C only sets a flag, which the loop reads after each
complete step and then stops cleanly; a second Ctrl-C raises ``KeyboardInterrupt`` at once (a
step that hangs can still be stopped, at the price of an exact resume).

The handler is installed only in the main thread and only when SIGINT has Python's default
handler; otherwise (another thread, or an application with its own handler) the flag is never
set and the loop's own ``KeyboardInterrupt`` handling applies.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InterruptFlag", "deferred_interrupts"]


class InterruptFlag:
    """Set by the first Ctrl-C inside :func:`deferred_interrupts`.

    Attributes:
        requested: a Ctrl-C arrived; stop after the current step.
        installed: the deferring handler is in place (main thread, default handler before).

    Example:
        >>> InterruptFlag().requested
        False
    """

    __slots__ = ("requested", "installed")

    def __init__(self) -> None:
        self.requested = False
        self.installed = False


@contextmanager
def deferred_interrupts() -> Iterator[InterruptFlag]:
    """Defer Ctrl-C to the loop's step boundaries for the duration of the block.

    Yields:
        An :class:`InterruptFlag`: check ``flag.requested`` after each complete step and stop
        there (e.g. by raising ``KeyboardInterrupt`` from a consistent point).

    Example:
        >>> with deferred_interrupts() as flag:
        ...     for step in range(3):
        ...         if flag.requested:
        ...             break
        >>> flag.requested
        False
    """
    flag = InterruptFlag()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    flag.installed = True
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
