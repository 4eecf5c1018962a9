"""Group-level 1/f kernels: the background of every fast-read line in every group difference.

1/f noise is common to the pixels read one after another along a fast-read line (a column
for NIRISS and NIRSpec, a row for NIRCam, per amplifier).  In every group difference of an
integration, the median (or sigma-clipped mean) of a line's unilluminated pixels is that
line's background; subtracting it cumulatively from the groups removes the stripes and the
background level of the line alike (the correction of seed notebook 001 and of the TSO
reductions, done before jump).

* :func:`draft_slope` — a draft rate image from the raw ramp (for the trace mask);
* :func:`line_values` — ``(channel, integration, group, line)`` backgrounds of a block that
  holds whole fast-read lines;
* :func:`subtract_lines` — ``data − Σ_{h≤g} value[h]`` on any block.

Pure numpy/numba: no dask, xarray or zarr.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import dq as _dq

#: group DQ that keeps a pixel out of a difference's background
UNUSABLE_GROUP = _dq.DO_NOT_USE | _dq.SATURATED
#: pixel DQ that keeps a pixel out of every background (reference pixels have no sky)
UNUSABLE_PIXEL = _dq.DO_NOT_USE | _dq.REFERENCE_PIXEL
#: passes of the sigma clipping of ``method="mean"``
MAXITERS = 5


def trace_mask(rate, *, n_sigma: float, grow: int = 0) -> np.ndarray:
    """Background mask of a draft rate image (True = background), ``(y, x)`` bool.

    :func:`daskramp.kernels.clean_flicker_noise.scene_mask` (NaN and 0 never background;
    above the clipped background + ``n_sigma``·σ is signal), then the signal grown by
    ``grow`` pixels in each direction (a square of side ``2·grow + 1``): a column's median is
    pulled by the faint wings of a trace by an amount that hardly follows their flux, so
    wings left in the background bias a transit's depth (benchmarks/README.md, lightcurve).
    """
    from .clean_flicker_noise import scene_mask

    background = scene_mask(rate, n_sigma=float(n_sigma))
    if grow <= 0:
        return background
    signal = ~background & np.isfinite(rate) & (rate != 0)
    grown = signal.copy()
    for axis in (0, 1):
        step = grown.copy()
        for s in range(1, int(grow) + 1):
            if axis == 0:
                step[s:] |= grown[:-s]
                step[:-s] |= grown[s:]
            else:
                step[:, s:] |= grown[:, :-s]
                step[:, :-s] |= grown[:, s:]
        grown = step
    return background & ~grown


def draft_slope(data, *, tgroup: float) -> np.ndarray:
    """Draft rate of a block of one segment, (y, x) float32 DN/s.

    Per pixel, the median over the block's integrations of ``(last − first group) /
    ((ngroups − 1)·TGROUP)`` of the raw ramp (superbias cancels in the difference, and
    saturated pixels stay bright, which only keeps them out of the background).  Works on
    any (y, x) window: every pixel is computed alone.

    Parameters
    ----------
    data : array (integration, group, y, x), uint16 or float, DN
    tgroup : float
        Seconds between groups.
    """
    data = np.asarray(data)
    ngroup = data.shape[1]
    if ngroup < 2:
        return np.zeros(data.shape[2:], np.float32)
    diff = data[:, -1].astype(np.float32) - data[:, 0].astype(np.float32)
    return (np.median(diff, axis=0) / np.float32((ngroup - 1) * tgroup)).astype(np.float32)


def mean_of(*drafts) -> np.ndarray:
    """The draft rate of an exposure from those of its segments (their mean), float32."""
    return np.mean(np.stack([np.asarray(d, np.float32) for d in drafts]), axis=0).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _clipped_mean(buf, n, sigma):
    vals = buf[:n].copy()
    keep = np.ones(n, np.bool_)
    for _ in range(MAXITERS):
        k = 0
        for j in range(n):
            if keep[j]:
                k += 1
        if k == 0:
            return 0.0
        kept = np.empty(k, np.float64)
        k = 0
        for j in range(n):
            if keep[j]:
                kept[k] = vals[j]
                k += 1
        med = np.median(kept)
        std = np.std(kept)
        changed = False
        for j in range(n):
            new = (vals[j] >= med - sigma * std) and (vals[j] <= med + sigma * std)
            if new != keep[j]:
                changed = True
            keep[j] = new
        if not changed:
            break
    s = 0.0
    k = 0
    for j in range(n):
        if keep[j]:
            s += vals[j]
            k += 1
    return s / k if k else 0.0


@numba.njit(cache=True, nogil=True)
def _line_values(data, groupdq, mask, chan, nchan, lines_on_x, use_mean, sigma, out):
    nint, ngroup, ny, nx = data.shape
    nfast = ny if lines_on_x else nx
    nline = nx if lines_on_x else ny
    buf = np.empty(nfast, np.float64)
    for i in range(nint):
        for g in range(1, ngroup):
            for line in range(nline):
                for c in range(nchan):
                    n = 0
                    for f in range(nfast):
                        if chan[f] != c:
                            continue
                        y = f if lines_on_x else line
                        x = line if lines_on_x else f
                        if not mask[y, x]:
                            continue
                        if (groupdq[i, g, y, x] & UNUSABLE_GROUP) or (groupdq[i, g - 1, y, x] & UNUSABLE_GROUP):
                            continue
                        d = np.float64(data[i, g, y, x]) - np.float64(data[i, g - 1, y, x])
                        if np.isnan(d):
                            continue
                        buf[n] = d
                        n += 1
                    if n == 0:
                        out[c, i, g, line] = 0.0
                    elif use_mean:
                        out[c, i, g, line] = _clipped_mean(buf, n, sigma)
                    else:
                        out[c, i, g, line] = np.median(buf[:n])
    return out


def line_values(data, groupdq, pixeldq, mask, channel, *, axis_to_correct: int, method: str = "median",
                sigma: float = 3.0) -> np.ndarray:
    """Background of every fast-read line and amplifier in every group difference.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        A block holding whole fast-read lines (all ``y`` for ``axis_to_correct=1``, all
        ``x`` for 2).
    groupdq : array like ``data``, uint8
        Pixels DO_NOT_USE or SATURATED in either group of a difference are left out.
    pixeldq : array (y, x), uint32
        DO_NOT_USE and reference pixels are left out.
    mask : array (y, x), bool
        True = unilluminated pixel, usable for the background.
    channel : array (fast,), int
        Amplifier of each position along the fast axis (0 … nchan − 1).
    axis_to_correct : {1, 2}
        ``|SLOWAXIS|``: 1 → fast-read lines are columns (one value per ``x``), 2 → rows.
    method : {"median", "mean"}
        Median, or sigma-clipped mean (median centre, ``sigma`` × std, up to 5 passes).

    Returns
    -------
    numpy.ndarray (channel, integration, group, line) float32 DN; group 0 and lines without
    a usable pixel are 0.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    groupdq = np.ascontiguousarray(groupdq, dtype=np.uint8)
    ok = np.asarray(mask, bool) & ((np.asarray(pixeldq) & UNUSABLE_PIXEL) == 0)
    chan = np.ascontiguousarray(channel, dtype=np.int64)
    nchan = int(chan.max()) + 1 if chan.size else 1
    lines_on_x = int(axis_to_correct) == 1
    if method not in ("median", "mean"):
        raise ValueError(f"method must be 'median' or 'mean', got {method!r}")
    nint, ngroup, ny, nx = data.shape
    out = np.zeros((nchan, nint, ngroup, nx if lines_on_x else ny), np.float64)
    _line_values(data, groupdq, np.ascontiguousarray(ok), chan, nchan, lines_on_x, method == "mean",
                 float(sigma), out)
    return out.astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _subtract(data, values, chan, lines_on_x, out):
    nint, ngroup, ny, nx = data.shape
    for i in range(nint):
        for y in range(ny):
            for x in range(nx):
                f = y if lines_on_x else x
                line = x if lines_on_x else y
                c = chan[f]
                acc = 0.0
                out[i, 0, y, x] = data[i, 0, y, x]
                for g in range(1, ngroup):
                    acc += values[c, i, g, line]
                    out[i, g, y, x] = np.float32(np.float64(data[i, g, y, x]) - acc)
    return out


def subtract_lines(data, values, channel, *, axis_to_correct: int) -> np.ndarray:
    """``data[i, g] − Σ_{1≤h≤g} values[c, i, h, line]`` for every pixel of a block.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        Any block whose lines match ``values``' last axis.
    values : array (channel, integration, group, line), float32
        From :func:`line_values` (cut to the block's lines).
    channel : array (fast,), int
        Amplifier of each block position along the fast axis.

    Returns
    -------
    numpy.ndarray like ``data``, float32.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    out = np.empty_like(data)
    return _subtract(data, np.ascontiguousarray(values, np.float64), np.ascontiguousarray(channel, np.int64),
                     int(axis_to_correct) == 1, out)


__all__ = ["UNUSABLE_GROUP", "UNUSABLE_PIXEL", "draft_slope", "line_values", "mean_of", "subtract_lines"]
