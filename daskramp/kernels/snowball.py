"""Snowball flagging on group DQ planes (jump with ``expand_large_events``; spec 12 §1).

Pure numpy (plus :mod:`scipy.ndimage` for connected regions) on uint8 group DQ; no data
values are read.  The pass is sequential in group (a grown saturated core rewrites the later
groups of its integration and so reshapes their regions) and its regions are unbounded in
size, so it runs on **whole** ``(y, x)`` planes: a block is ``(integration, group, y, x)``
with every group and every pixel of the frame, any number of integrations.

Per integration, group g = 1 … ngroups−1, on the group DQ after the two-point pass:

* regions (8-connected) of JUMP_DET in g with filled area ≥ ``min_jump_area``; of newly
  saturated pixels (SATURATED in g not in g−1, and in g+1 not in g) with filled area ≥
  ``min_sat_area``; each region becomes an ellipse from its second moments (centroid;
  full axes ``h = minor − 1``, ``w = major − 1`` with minor/major = 4·√eigenvalue; angle θ);
* with ``sat_required_snowball``, a jump region is a snowball when its centre is near the
  frame edge (``edge_size``; the official test compares both coordinates with the number
  of rows) or the centre of a new saturated region lies inside its ellipse; each new
  saturated region with ``min(h, w) > min_sat_radius_extend`` is redrawn with both full axes
  grown by ``sat_expand2`` (≤ ``max_width``) as SATURATED (the byte set to exactly
  SATURATED) in groups g … end, and its ungrown ellipse goes into the integration's core map;
* without it every jump region is a snowball (no core growth, empty core map);
* each snowball's ellipse grown by ``expand_factor`` (full axes ``f·h`` and
  ``w + (f−1)·h``, ≤ ``max_width``) gets JUMP_DET in group g, where g is not SATURATED.

The core map of integration i then flags JUMP_DET in groups 1 … n_next−1 of integration i+1
(:func:`mask_next_integration`), within one uncal segment.

Ellipses are drawn with the geometry of ``skimage.draw.ellipse`` (the official step's): centre
(round(row), round(col)), semi-axes round(A/2) (half to even), a pixel is in when its rotated
normalised distance is < 1; the moments follow ``skimage.measure.regionprops``' arithmetic
so that borderline radii round the same way.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .. import dq

_SAT = np.uint8(dq.SATURATED)
_JUMP = np.uint8(dq.JUMP_DET)
_EIGHT = np.ones((3, 3), dtype=bool)
#: moments up to this order, as regionprops computes them (the sums' shapes fix their rounding)
_ORDER = 3


def regions(mask: np.ndarray, min_area: float) -> list[tuple]:
    """Ellipses of the 8-connected regions of ``mask`` with filled area ≥ ``min_area``.

    Parameters
    ----------
    mask : ndarray (y, x)
        Nonzero = in a region.
    min_area : float
        Minimum area (pixels) of the region with its holes filled.

    Returns
    -------
    list of ``(cx, cy, h, w, theta)``
        Centroid column and row (pixels), full minor and major axes minus one (pixels; −1 for
        a single pixel) and orientation θ (degrees, regionprops' convention), in raster
        order of each region's first pixel.
    """
    lab, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return []
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    out = []
    for k, sl in enumerate(ndimage.find_objects(lab)):
        img = lab[sl] == k + 1
        if area[k] < min_area:
            # a hole needs a 4-connected ring of at least 8 pixels; the filled area counts it
            if area[k] < 8 or ndimage.binary_fill_holes(img, _EIGHT).sum() < min_area:
                continue
        out.append(_ellipse(img, sl[0].start, sl[1].start))
    return out


def _ellipse(img: np.ndarray, r0: int, c0: int) -> tuple:
    """``(cx, cy, h, w, theta)`` of one region (bool image cut to its bounding box at (r0, c0))."""
    rows, cols = np.nonzero(img)
    n = rows.size
    # centroid: mean of the pixel coordinates (integers, so the sums are exact)
    cy = float((rows + r0).astype(np.float64).sum() / n)
    cx = float((cols + c0).astype(np.float64).sum() / n)
    ry = rows.astype(np.float64).sum() / n
    rx = cols.astype(np.float64).sum() / n
    orders = np.arange(_ORDER + 1, dtype=np.float64)
    pr = (np.arange(img.shape[0], dtype=np.float64) - ry)[:, None] ** orders
    pc = (np.arange(img.shape[1], dtype=np.float64) - rx)[:, None] ** orders
    calc = img.astype(np.float64)
    # contract rows first, then columns: the order (and shapes) regionprops sums in
    calc = np.einsum(calc, [2, 1], pr, [2, 3], [3, 1], optimize="greedy")
    mu = np.einsum(calc, [0, 2], pc, [2, 3], [0, 3], optimize="greedy")
    mu0 = mu[0, 0]
    diag = np.array([mu[2, 0], mu[0, 2]])
    d = (diag.sum() - diag) / mu0
    off = -mu[1, 1] / mu0
    tensor = np.array([[d[0], off], [off, d[1]]])
    ev = np.clip(np.linalg.eigvalsh(tensor), 0, None)
    l1, l2 = max(ev), min(ev)
    w = 4 * math.sqrt(l1) - 1
    h = 4 * math.sqrt(l2) - 1
    a, b, c = tensor[0, 0], tensor[0, 1], tensor[1, 1]
    if a - c == 0:
        orient = math.pi / 4 if b < 0 else -math.pi / 4
    else:
        orient = 0.5 * math.atan2(-2 * b, c - a)
    return (cx, cy, h, w, np.degrees(orient))


def draw(shape: tuple[int, int], cx: float, cy: float, axis1: float, axis2: float,
         theta) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(rows, cols)`` of a filled ellipse, clipped to ``shape``.

    Centre (round(cy), round(cx)); column semi-axis round(axis1/2), row semi-axis
    round(axis2/2) (full axes in pixels, rounded half to even); ``theta`` in degrees.
    A zero semi-axis draws nothing.
    """
    empty = (np.empty(0, np.intp), np.empty(0, np.intp))
    yc, xc = round(cx), round(cy)          # column, row of the centre
    c_rad, r_rad = round(axis1 / 2), round(axis2 / 2)
    if c_rad == 0 or r_rad == 0:
        return empty
    # the box the official step draws in: ± (largest semi-axis + 2) around the centre
    half = max(c_rad, r_rad) + 2
    col1, col2 = max(yc - half, 0), min(yc + half + 1, shape[1])
    row1, row2 = max(xc - half, 0), min(xc + half + 1, shape[0])
    sub = np.array([row2 - row1, col2 - col1])
    center = np.array([xc - row1, yc - col1])
    rot = np.radians(theta) % np.pi
    cos, sin = np.cos(rot), np.sin(rot)
    ext = np.array([abs(r_rad * cos) + c_rad * sin, r_rad * sin + abs(c_rad * cos)])
    lo = np.maximum(np.ceil(center - ext).astype(int), 0)
    hi = np.minimum(np.floor(center + ext).astype(int), sub - 1)
    size = hi - lo + 1
    if (size <= 0).any():
        return empty
    rc = center - lo
    r = np.arange(size[0], dtype=np.float64)[:, None] - rc[0]
    c = np.arange(size[1], dtype=np.float64)[None, :] - rc[1]
    dist = ((r * cos + c * sin) / r_rad) ** 2 + ((r * sin - c * cos) / c_rad) ** 2
    rr, cc = np.nonzero(dist < 1)
    return rr + lo[0] + row1, cc + lo[1] + col1


def _inside(px: float, py: float, e: tuple) -> bool:
    """Whether point (column px, row py) lies inside ellipse ``e`` (unexpanded axes)."""
    cx, cy, h, w, theta = e
    angle = np.radians(180 - theta)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = px - cx, py - cy
    xr = dx * cos - dy * sin
    yr = dx * sin + dy * cos
    major, minor = (np.float64(w) * 0.5, np.float64(h) * 0.5) if w >= h else (np.float64(h) * 0.5,
                                                                              np.float64(w) * 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        return bool(xr**2 / major**2 + yr**2 / minor**2 <= 1)


def _near_edge(e: tuple, low: float, high: float) -> bool:
    # the official test compares both coordinates with the row-based bound
    return e[0] < low or e[1] < low or e[0] > high or e[1] > high


def snowballs(gdq: np.ndarray, *, min_jump_area: float = 5.0, min_sat_area: float = 1.0,
              expand_factor: float = 2.0, sat_required_snowball: bool = True,
              min_sat_radius_extend: float = 2.5, sat_expand: int = 2, edge_size: int = 25,
              max_extended_radius: int = 200) -> tuple[np.ndarray, np.ndarray, int]:
    """Snowball flags of every integration of a block of whole planes.

    Parameters
    ----------
    gdq : ndarray uint8 (integration, group, y, x)
        Group DQ after the two-point pass (JUMP_DET removed where SATURATED or DO_NOT_USE),
        whole frames, every group.
    min_jump_area, min_sat_area, expand_factor, sat_required_snowball, min_sat_radius_extend,
    sat_expand, edge_size, max_extended_radius
        The jump step's parameters (official names and values: ``sat_expand`` is pixels per
        radius, ``max_extended_radius`` a radius; both are doubled into full axes here, as
        the official step does).

    Returns
    -------
    gdq : ndarray uint8 (integration, group, y, x)
        New group DQ with grown cores (SATURATED) and snowball halos (JUMP_DET).
    cores : ndarray uint8 (integration, y, x)
        JUMP_DET on the (ungrown) saturated cores of each integration, for
        :func:`mask_next_integration`.
    count : int
        Number of snowballs (the official "Total snowballs").
    """
    gdq = np.array(gdq, dtype=np.uint8, copy=True)
    nint, ng, ny, nx = gdq.shape
    cores = np.zeros((nint, ny, nx), np.uint8)
    satexp = 2 * int(sat_expand)
    width = 2 * int(max_extended_radius)
    low, high = edge_size, max(0, ny - edge_size)
    count = 0
    for i in range(nint):
        cube, core = gdq[i], cores[i]
        for g in range(1, ng):
            cur_sat = (cube[g] & _SAT) != 0
            new_sat = cur_sat & ((cube[g - 1] & _SAT) == 0)
            last = g == ng - 1
            next_new = None if last else ((cube[g + 1] & _SAT) != 0) & ~cur_sat
            jumps = regions(cube[g] & _JUMP, min_jump_area)
            if sat_required_snowball:
                sats = regions(new_sat, min_sat_area)
                next_sats = [] if last else regions(next_new, min_sat_area)
                balls = [j for j in jumps
                         if _near_edge(j, low, high)
                         or any(_inside(s[0], s[1], j) for s in sats)
                         or any(_inside(s[0], s[1], j) for s in next_sats)]
                for s in sats:
                    _, _, h, w, theta = s
                    if min(h, w) > min_sat_radius_extend:
                        rr, cc = draw((ny, nx), s[0], s[1], min(h + satexp, width),
                                      min(w + satexp, width), theta)
                        cube[g:, rr, cc] = _SAT
                        rr, cc = draw((ny, nx), s[0], s[1], h, w, theta)
                        core[rr, cc] = _JUMP
            else:
                balls = jumps
            count += len(balls)
            for cx, cy, h, w, theta in balls:
                if w < h:
                    a1, a2 = h + (expand_factor - 1.0) * w, w * expand_factor
                else:
                    a1, a2 = h * expand_factor, w + (expand_factor - 1.0) * h
                a1, a2 = 2 * round(min(a1, width) / 2), 2 * round(min(a2, width) / 2)
                rr, cc = draw((ny, nx), cx, cy, a1, a2, theta)
                plane = cube[g]
                keep = (plane[rr, cc] & _SAT) == 0
                plane[rr[keep], cc[keep]] |= _JUMP
    return gdq, cores, count


def n_next_groups(snowball_time_masked_next_int: float, tgroup: float) -> int:
    """Groups of the next integration a core is flagged in: ``int(time // TGROUP)``."""
    return int(snowball_time_masked_next_int // tgroup)


def mask_next_integration(gdq: np.ndarray, prev_cores: np.ndarray, n_next: int) -> np.ndarray:
    """OR each integration's previous-integration core map into its groups 1 … n_next−1.

    Parameters
    ----------
    gdq : ndarray uint8 (integration, group, y, x)
    prev_cores : ndarray uint8 (integration, y, x)
        For each integration, the core map of the integration before it in the same
        segment (zeros for a segment's first integration).
    n_next : int
        :func:`n_next_groups`; below 1 nothing is flagged.

    Returns
    -------
    ndarray uint8, a new array (JUMP_DET may then sit with SATURATED/DO_NOT_USE, as officially).
    """
    out = np.array(gdq, dtype=np.uint8, copy=True)
    if n_next >= 1:
        last = min(n_next, out.shape[1])
        out[:, 1:last] |= prev_cores[:, None]
    return out


def snowball_block(gdq: np.ndarray, **params) -> np.ndarray:
    """:func:`snowballs` packed for a dask block: ``(integration, group + 1, y, x)`` uint8,
    the group DQ followed by the core map as one extra plane per integration."""
    out, cores, _ = snowballs(gdq, **params)
    return np.concatenate([out, cores[:, None]], axis=1)


__all__ = ["draw", "mask_next_integration", "n_next_groups", "regions", "snowball_block", "snowballs"]
