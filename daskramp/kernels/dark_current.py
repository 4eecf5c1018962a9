"""dark_current: match the DARK to the science frame timing and subtract it (spec 05).

The reference helpers use numpy functions only (``np.where``, ``np.concatenate``, slicing), so
they accept numpy or dask arrays alike; the kernel itself works on numpy blocks.
"""

from __future__ import annotations

import math

import numpy as np


def total_frames(ngroups: int, nframes: int, groupgap: int) -> int:
    """Frames spanned by a ramp: ``ngroups·nframes + (ngroups−1)·groupgap``."""
    return ngroups * nframes + (ngroups - 1) * groupgap


def dark_usable(*, nframes: int, groupgap: int, dark_nframes: int, dark_groupgap: int) -> bool:
    """False when the dark averages more frames or skips more than the science (step SKIPPED)."""
    return not (dark_nframes > nframes or dark_groupgap > groupgap)


def extrapolate_dark(dark, n_extra: int):
    """Append ``n_extra`` planes continuing the slope of the last two planes.

    Plane ``N−1+j = dark[N−1] + j·(dark[N−1] − dark[N−2])``, j = 1 … n_extra.

    Parameters
    ----------
    dark : array, (planes, y, x), DN
    n_extra : int

    Returns
    -------
    array, (planes + n_extra, y, x), float64 (the integer ramp index promotes the slope)
    """
    if dark.shape[0] < 2:
        raise ValueError(f"cannot extrapolate a dark with {dark.shape[0]} plane(s); need at least 2")
    slope = dark[-1] - dark[-2]
    steps = np.arange(1, n_extra + 1).reshape(-1, 1, 1)
    new = steps * slope[None] + dark[-1][None]
    return np.concatenate([dark.astype(new.dtype), new], axis=0)


def average_dark_frames(dark, *, ngroups: int, nframes: int, groupgap: int):
    """One dark plane per science group: the mean of the dark frames that group spans.

    Group g uses dark planes ``start … start+nframes−1`` with ``start = g·(nframes+groupgap)``
    (dark planes are single frames, as in CRDS darks with NFRAMES = 1, GROUPGAP = 0).  The
    frames are summed in order, divided by ``nframes`` in the dark's dtype, and the averaged dark
    is stored as float32 (as the official averaged dark is).

    Parameters
    ----------
    dark : array, (planes, y, x), DN
    ngroups, nframes, groupgap : int
        Science NGROUPS, NFRAMES, GROUPGAP.

    Returns
    -------
    array, (ngroups, y, x), float32
    """
    planes = []
    start = 0
    for _ in range(ngroups):
        if nframes == 1:
            planes.append(dark[start])
        else:
            acc = dark[start]
            for k in range(1, nframes):
                acc = acc + dark[start + k]
            planes.append(acc / nframes)
        start += nframes + groupgap
    return np.stack(planes, axis=0).astype(np.float32)


def prepare_dark(
    dark,
    *,
    ngroups: int,
    nframes: int,
    groupgap: int,
    dark_nframes: int = 1,
    dark_groupgap: int = 0,
):
    """The dark to subtract, one plane per science group (extrapolated, NaN → 0, averaged).

    Call only when :func:`dark_usable` is true.

    Parameters
    ----------
    dark : array, (planes, y, x), DN
        DARK SCI (not cut: same image shape as the science).
    ngroups, nframes, groupgap : int
        Science NGROUPS, NFRAMES, GROUPGAP.
    dark_nframes, dark_groupgap : int
        NFRAMES and GROUPGAP of the dark.

    Returns
    -------
    array, (ngroups, y, x), float32 — or float64 when the dark was extrapolated and is used
    plane by plane (the promotion of the official extrapolation is kept)
    """
    sci = total_frames(ngroups, nframes, groupgap)
    have = total_frames(dark.shape[0], dark_nframes, dark_groupgap)
    if sci > have:
        extra = math.ceil((sci - have + dark_groupgap) / (dark_nframes + dark_groupgap))
        dark = extrapolate_dark(dark, extra)
    dark = np.where(np.isnan(dark), dark.dtype.type(0), dark)
    if nframes == dark_nframes and groupgap == dark_groupgap:
        return dark[:ngroups]
    return average_dark_frames(dark, ngroups=ngroups, nframes=nframes, groupgap=groupgap)


def subtract_dark(data: np.ndarray, dark: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``data[i, g] − dark[g]`` for every integration.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32, DN
    dark : ndarray, (group, y, x), float, DN (from :func:`prepare_dark`)
    out : ndarray, float32, data's shape, optional
        Where to write the result (``data`` itself will do).

    Returns
    -------
    ndarray, (integration, group, y, x), float32, DN
        The difference is taken in the wider of the two dtypes, then stored as float32.
    """
    if out is None:
        return (data - dark[None]).astype(np.float32, copy=False)
    # the ufunc loop follows the inputs' dtypes (float64 for an extrapolated dark) and the
    # result is rounded to float32 once, as above
    return np.subtract(data, dark[None], out=out, casting="same_kind")


def dark_pixeldq(pixeldq: np.ndarray, dark_dq: np.ndarray) -> np.ndarray:
    """``pixeldq | dark_dq`` ((y, x), uint32)."""
    return np.bitwise_or(pixeldq, dark_dq).astype(np.uint32)
