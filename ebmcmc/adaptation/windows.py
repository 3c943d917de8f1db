"""Stan's warm-up windows: a fast initial buffer, slow windows of doubling length for the mass
matrix, and a fast terminal buffer."""

from __future__ import annotations

__all__ = ["warmup_schedule"]


def warmup_schedule(
    num_warmup: int, initial_buffer: int = 75, term_buffer: int = 50, base_window: int = 25
) -> list[tuple[int, int]]:
    """The slow (mass-matrix) windows of a Stan-style warm-up, as ``(start, end)`` pairs.

    When the buffers do not fit, they shrink to 15 % / 10 % of ``num_warmup`` as in Stan.
    With fewer than 20 warm-up steps there is no slow window.

    Example:
        >>> warmup_schedule(1000)
        [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    """
    if base_window < 1 or initial_buffer < 0 or term_buffer < 0:
        raise ValueError(
            f"warm-up windows need base_window >= 1 and non-negative buffers, got "
            f"initial_buffer={initial_buffer}, term_buffer={term_buffer}, base_window={base_window}"
        )
    if num_warmup < 20:
        return []
    if initial_buffer + base_window + term_buffer > num_warmup:
        initial_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - initial_buffer - term_buffer
    end_slow = num_warmup - term_buffer
    windows = []
    start, size = initial_buffer, base_window
    while start < end_slow:
        end = start + size
        # the last window stretches to the terminal buffer when the next would not fit
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows
