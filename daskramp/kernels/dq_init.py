"""dq_init: seed pixel and group DQ from the MASK reference (spec 02)."""

from __future__ import annotations

import numpy as np

from ..dq import DO_NOT_USE


def dq_init_pixeldq(
    pixeldq: np.ndarray, mask: np.ndarray, user_supplied_dq: np.ndarray | None = None
) -> np.ndarray:
    """``pixeldq | mask | user_supplied_dq``.

    Parameters
    ----------
    pixeldq : ndarray, (y, x), uint32
    mask : ndarray, (y, x), integer
        MASK reference DQ cut to the subarray.
    user_supplied_dq : ndarray, (y, x), integer, optional
        Extra DQ image, cast to the mask dtype and OR-ed into the mask first.

    Returns
    -------
    ndarray, (y, x), uint32
    """
    m = combined_mask(mask, user_supplied_dq)
    return np.bitwise_or(pixeldq, m).astype(np.uint32)


def combined_mask(mask: np.ndarray, user_supplied_dq: np.ndarray | None = None) -> np.ndarray:
    """The MASK with an optional user DQ image OR-ed in (user values cast to the mask dtype)."""
    if user_supplied_dq is None:
        return mask
    return np.bitwise_or(mask, user_supplied_dq.astype(mask.dtype))


def dq_init_groupdq(groupdq: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy the DO_NOT_USE bit of the mask into every group.

    Only bit 0 travels into ``groupdq``: a HOT|DO_NOT_USE pixel gets groupdq 1 in all groups, so
    ramp_fit finds no usable group and returns NaN for it.

    Parameters
    ----------
    groupdq : ndarray, (integration, group, y, x), uint8
    mask : ndarray, (y, x), integer (already combined with any user DQ)

    Returns
    -------
    ndarray, (integration, group, y, x), uint8
    """
    dnu = (np.bitwise_and(mask, DO_NOT_USE)).astype(np.uint8)
    return np.bitwise_or(groupdq, dnu[None, None])
