"""charge_migration: flag groups where charge starts leaking to neighbours (spec 06).

Above ``signal_threshold`` DN a NIRISS pixel starts losing charge to its neighbours, so that
group, every later group, and the 4 edge neighbours get CHARGELOSS|DO_NOT_USE.
"""

from __future__ import annotations

import numpy as np

from ..dq import CHARGELOSS, DO_NOT_USE
from .saturation import cumulative_or


def grow_cross(mask: np.ndarray) -> np.ndarray:
    """A pixel and its 4 edge neighbours (last two axes), clipped at the array edge."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    out[..., :, 1:] |= mask[..., :, :-1]
    out[..., :, :-1] |= mask[..., :, 1:]
    return out


def charge_migration(
    data: np.ndarray, groupdq: np.ndarray, *, signal_threshold: float = 25000.0
) -> np.ndarray:
    """New ``groupdq`` with CHARGELOSS|DO_NOT_USE set.

    A group triggers when ``data > signal_threshold`` and its groupdq is not exactly DO_NOT_USE
    (a byte comparison, as in the official step: a group with DO_NOT_USE plus another flag still
    triggers).

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32, DN
    groupdq : ndarray, (integration, group, y, x), uint8
    signal_threshold : float, DN

    Returns
    -------
    ndarray, (integration, group, y, x), uint8
    """
    hit = (data > signal_threshold) & (groupdq != DO_NOT_USE)
    if not hit.any():
        return groupdq.copy()
    later = cumulative_or(hit)
    flag = grow_cross(later)
    return np.bitwise_or(groupdq, flag.view(np.uint8) * np.uint8(CHARGELOSS | DO_NOT_USE))
