"""saturation: flag saturated, A/D-floor and partially saturated groups (spec 03).

Three passes per integration on raw DN:

1. forward — a group at or above the threshold is SATURATED together with every later group;
   a group at or below 0 DN gets AD_FLOOR|DO_NOT_USE (that group only); SATURATED flags are grown
   by a square box of half-width ``n_pix_grow_sat`` (charge spilling into neighbours);
2. backward — with frame averaging, a group whose last frames saturated looks diluted; a group
   above ``threshold · mean(frames)/last(frame)`` followed by a SATURATED group gets DO_NOT_USE
   (grown by the same box);
3. second group — a jump into group 1 large enough to be a saturating event in its last frame,
   while group 0 does not predict saturation by the end of group 2, gets DO_NOT_USE.

All passes are vectorised over integrations; pass 1 is vectorised over groups as well
(saturation persists, so "ever saturated" is a cumulative OR along ``group``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from ..dq import AD_FLOOR, DO_NOT_USE, NO_SAT_CHECK, SATURATED

#: hard limit of the 16-bit A/D converter (DN)
ATOD_LIMIT = 65535.0


def read_pattern(ngroups: int, nframes: int) -> list[list[int]]:
    """1-based frame numbers averaged into each group: ``[[1…nf], [nf+1…2nf], …]``.

    GROUPGAP is not included, as in the official pipeline.
    """
    return [[g * nframes + j + 1 for j in range(nframes)] for g in range(ngroups)]


def no_sat_check_mask(sat_thresh: np.ndarray, sat_dq: np.ndarray | None) -> np.ndarray:
    """Pixels never checked: NO_SAT_CHECK in the SATURATION DQ, or a NaN threshold ((y, x) bool)."""
    nosat = np.isnan(sat_thresh)
    if sat_dq is not None:
        nosat = nosat | (np.bitwise_and(sat_dq, NO_SAT_CHECK) != 0)
    return nosat


def effective_threshold(sat_thresh: np.ndarray, sat_dq: np.ndarray | None) -> np.ndarray:
    """The threshold actually compared with the data: ATOD_LIMIT + 1 where the pixel is not checked.

    Parameters
    ----------
    sat_thresh : ndarray, (y, x), float, raw DN (NaN allowed)
    sat_dq : ndarray, (y, x), uint32, optional

    Returns
    -------
    ndarray, (y, x), float32 (or the float dtype of ``sat_thresh`` if wider)
    """
    dtype = np.result_type(sat_thresh.dtype, np.float32)
    nosat = no_sat_check_mask(sat_thresh, sat_dq)
    return np.where(nosat, dtype.type(ATOD_LIMIT + 1), sat_thresh).astype(dtype)


def saturation_pixeldq(
    pixeldq: np.ndarray, sat_dq: np.ndarray | None, sat_thresh: np.ndarray
) -> np.ndarray:
    """``pixeldq | sat_dq | NO_SAT_CHECK where the threshold is NaN`` ((y, x), uint32).

    The whole SATURATION DQ is carried over, including any DO_NOT_USE it holds.
    """
    out = np.bitwise_or(pixeldq, np.where(np.isnan(sat_thresh), np.uint32(NO_SAT_CHECK), np.uint32(0)))
    if sat_dq is not None:
        out = np.bitwise_or(out, sat_dq)
    return out.astype(np.uint32)


def grow_box(mask: np.ndarray, n: int) -> np.ndarray:
    """Binary dilation of the last two axes with a (2n+1)×(2n+1) square, clipped at the edges.

    Separable: a square box is a running OR along ``y`` followed by one along ``x``.

    Parameters
    ----------
    mask : ndarray of bool, (..., y, x)
    n : int, half-width in pixels (0 → copy)

    Returns
    -------
    ndarray of bool, same shape
    """
    if n <= 0:
        return mask.copy()
    ny, nx = mask.shape[-2:]
    rows = mask.copy()
    for k in range(1, min(n, ny - 1) + 1):
        rows[..., k:, :] |= mask[..., :-k, :]
        rows[..., :-k, :] |= mask[..., k:, :]
    out = rows.copy()
    for k in range(1, min(n, nx - 1) + 1):
        out[..., :, k:] |= rows[..., :, :-k]
        out[..., :, :-k] |= rows[..., :, k:]
    return out


def cumulative_or(mask: np.ndarray) -> np.ndarray:
    """Running OR along ``group`` (axis 1) of a (integration, group, y, x) boolean array.

    A loop over groups with whole-plane ``np.logical_or`` is much faster than
    ``np.logical_or.accumulate(axis=1)``, which walks the array with a small inner stride.
    """
    out = mask.copy()
    for g in range(1, mask.shape[1]):
        np.logical_or(out[:, g - 1], mask[:, g], out=out[:, g])
    return out


@numba.njit(cache=True)
def _pass1_numba(data, groupdq, thresh, out, has_sat):
    # one read of data and groupdq: thresholds, persistence and A/D floor in a single pass
    nint, ngroup, ny, nx = data.shape
    ever = np.zeros((ny, nx), np.bool_)
    sat = np.uint8(SATURATED)
    low = np.uint8(AD_FLOOR | DO_NOT_USE)
    for i in range(nint):
        ever[:, :] = False
        for g in range(ngroup):
            hit = False
            for y in range(ny):
                for x in range(nx):
                    v = data[i, g, y, x]
                    f = groupdq[i, g, y, x]
                    if v >= thresh[y, x]:
                        ever[y, x] = True
                    if ever[y, x]:
                        f |= sat
                    if v <= 0:
                        f |= low
                    if f & sat:
                        hit = True
                    out[i, g, y, x] = f
            has_sat[i, g] = hit


def _grow_planes(mask: np.ndarray, n: int) -> np.ndarray:
    """:func:`grow_box` on (integration, group, y, x), touching only planes with a flag set."""
    if n <= 0:
        return mask
    lead = mask.shape[:-2]
    flat = mask.reshape((-1, *mask.shape[-2:]))
    hit = np.flatnonzero(flat.any(axis=(1, 2)))
    if hit.size == 0:
        return mask
    out = flat.copy()
    out[hit] = grow_box(flat[hit], n)
    return out.reshape((*lead, *mask.shape[-2:]))


def flag_saturated_pixels(
    data: np.ndarray,
    groupdq: np.ndarray,
    sat_thresh: np.ndarray,
    sat_dq: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    n_pix_grow_sat: int = 1,
    read_pattern: Sequence[Sequence[int]] | None = None,
    engine: str = "numba",
) -> np.ndarray:
    """New ``groupdq`` with SATURATED, AD_FLOOR and DO_NOT_USE flags (spec 03, passes 1–3).

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), uint16 or float32, raw DN
    groupdq : ndarray, (integration, group, y, x), uint8
    sat_thresh : ndarray, (y, x), float, raw DN
        SATURATION threshold cut to the subarray (NaN → pixel never saturates).
    sat_dq : ndarray, (y, x), uint32, optional
        SATURATION DQ; NO_SAT_CHECK pixels never saturate.
    bias : ndarray, (y, x), float, raw DN, optional
        SUPERBIAS (NaN kept) for the second-group test; ``None`` → 0.
    n_pix_grow_sat : int
        Half-width of the square box flagged around each saturated pixel.
    read_pattern : list of lists of int, optional
        1-based frame numbers of each group (:func:`read_pattern`); ``None`` disables passes 2
        and 3 (``use_readpatt=False``).
    engine : {"numba", "numpy"}
        Implementation of the forward pass: one fused compiled loop (default) or the vectorised
        numpy reference; both give identical flags.

    Returns
    -------
    ndarray, (integration, group, y, x), uint8
    """
    nint, ngroup, ny, nx = data.shape
    n = int(n_pix_grow_sat)
    nosat = no_sat_check_mask(sat_thresh, sat_dq)
    thresh = effective_threshold(sat_thresh, sat_dq)

    # pass 1: saturation persists, so the flag of group g is "ever at or above T up to g"
    if engine == "numba":
        gdq = np.empty(groupdq.shape, np.uint8)
        has_sat = np.zeros(data.shape[:2], np.bool_)
        _pass1_numba(data, groupdq, thresh, gdq, has_sat)
    elif engine == "numpy":
        ever = cumulative_or(data >= thresh)
        gdq = np.bitwise_or(groupdq, ever.view(np.uint8) * np.uint8(SATURATED))
        gdq |= (data <= 0).view(np.uint8) * np.uint8(AD_FLOOR | DO_NOT_USE)
        has_sat = ((gdq & SATURATED) != 0).any(axis=(2, 3))
    else:
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    if n > 0 and has_sat.any():
        i, g = np.nonzero(has_sat)
        planes = (gdq[i, g] & SATURATED) != 0
        gdq[i, g] |= grow_box(planes, n).view(np.uint8) * np.uint8(SATURATED)

    if read_pattern is None:
        return gdq

    # pass 2 only adds DO_NOT_USE, so group g+1's SATURATED bits are final when g is examined
    for g in range(ngroup - 2, -1, -1):
        frames = read_pattern[g]
        dilution = np.mean(frames) / frames[-1]
        if dilution == 1:
            continue
        limit = thresh * np.where(nosat, 1.0, dilution)  # float64, like the reference code
        partial = (
            (data[:, g] >= limit)
            & ((gdq[:, g] & (SATURATED | DO_NOT_USE)) == 0)
            & ((gdq[:, g + 1] & SATURATED) != 0)
        )
        if n > 0:
            partial = _grow_planes(partial, n)
        gdq[:, g] |= partial.view(np.uint8) * np.uint8(DO_NOT_USE)

    if ngroup > 2:
        b = np.float32(0) if bias is None else bias
        d0 = data[:, 0].astype(np.float32)
        d1 = data[:, 1].astype(np.float32)
        # extrapolate group 0 (bias removed) to the last frame of group 2, in double precision
        predicted = ((d0 - b).astype(np.float64) / np.mean(read_pattern[0])) * read_pattern[2][-1] + b
        quiet = predicted < thresh
        big_jump = (d1 - d0) > (thresh - d0) / len(read_pattern[1])
        sat_next = ((gdq[:, 2] & SATURATED) != 0) & ((gdq[:, 1] & SATURATED) == 0)
        gdq[:, 1] |= (quiet & big_jump & sat_next).view(np.uint8) * np.uint8(DO_NOT_USE)
    return gdq


def saturation_zeroframe(
    zeroframe: np.ndarray,
    sat_thresh: np.ndarray,
    sat_dq: np.ndarray | None = None,
    *,
    n_pix_grow_sat: int = 1,
) -> np.ndarray:
    """Zero frame with saturated (grown) and A/D-floor values replaced by 0.

    0 is the "bad frame 0" marker that every later step respects.

    Parameters
    ----------
    zeroframe : ndarray, (integration, y, x), uint16 or float32, raw DN
    sat_thresh, sat_dq : as in :func:`flag_saturated_pixels`
    n_pix_grow_sat : int

    Returns
    -------
    ndarray, same shape and dtype
    """
    thresh = effective_threshold(sat_thresh, sat_dq)
    sat = _grow_planes(zeroframe >= thresh, int(n_pix_grow_sat))
    bad = sat | (zeroframe <= 0)
    return np.where(bad, zeroframe.dtype.type(0), zeroframe)
