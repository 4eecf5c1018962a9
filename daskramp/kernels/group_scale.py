"""group_scale: undo the on-board power-of-two frame divisor (spec 02).

The instrument averages NFRAMES frames by summing them and dividing by FRMDIVSR, a power of two.
When NFRAMES is not a power of two every group is off by FRMDIVSR/NFRAMES.
"""

from __future__ import annotations

import numpy as np


def group_scale_needed(nframes: int | None, frame_divisor: int | None) -> bool:
    """Whether the correction applies (the official decision table, spec 02).

    Missing NFRAMES or FRMDIVSR, or FRMDIVSR == NFRAMES → no correction (step SKIPPED).
    """
    if nframes is None or frame_divisor is None:
        return False
    return int(frame_divisor) != int(nframes)


def group_scale(data: np.ndarray, *, nframes: int, frame_divisor: int) -> np.ndarray:
    """Rescale every group by ``frame_divisor / nframes``.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32 or uint16, DN
    nframes : int
        NFRAMES, frames averaged per group.
    frame_divisor : int
        FRMDIVSR, the divisor used on board.

    Returns
    -------
    ndarray, same shape, float32, DN
        ``data · (frame_divisor / nframes)``; the factor is computed in double precision and
        applied as a float32 scalar, like an in-place float32 multiplication.
    """
    scale = np.float32(float(frame_divisor) / int(nframes))
    return np.multiply(data, scale, dtype=np.float32)
