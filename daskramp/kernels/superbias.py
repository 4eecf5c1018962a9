"""superbias: subtract the bias image (spec 02)."""

from __future__ import annotations

import numpy as np


def _clean_bias(bias: np.ndarray) -> np.ndarray:
    # a pixel without a bias measurement is left as is rather than turned into NaN
    return np.where(np.isnan(bias), np.float32(0), bias).astype(np.float32)


def subtract_superbias(data: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``data − bias`` in every integration and group, NaN bias values taken as 0.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32 or uint16, DN
    bias : ndarray, (y, x), float, DN
    out : ndarray, float32, data's shape, optional
        Where to write the result (``data`` itself will do).

    Returns
    -------
    ndarray, same shape, float32, DN
    """
    return np.subtract(data, _clean_bias(bias)[None, None], dtype=np.float32, out=out)


def superbias_zeroframe(zeroframe: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Subtract the bias from the zero frame, keeping 0 (the "bad frame 0" marker) at 0.

    Parameters
    ----------
    zeroframe : ndarray, (integration, y, x) — or any shape ending in (y, x) — DN
    bias : ndarray, (y, x), DN

    Returns
    -------
    ndarray, same shape, float32, DN
    """
    out = np.subtract(zeroframe, _clean_bias(bias), dtype=np.float32)
    return np.where(zeroframe == 0, np.float32(0), out)


def superbias_pixeldq(pixeldq: np.ndarray, bias_dq: np.ndarray) -> np.ndarray:
    """``pixeldq | bias_dq`` (uint32, (y, x))."""
    return np.bitwise_or(pixeldq, bias_dq).astype(np.uint32)
