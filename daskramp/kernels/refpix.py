"""Reference-pixel correction for the near-IR detectors (spec 04), as pure numpy kernels.

The 2048×2048 near-IR detectors carry a 4-pixel border of insensitive reference pixels that
follow the bias drifts of the readout electronics.  The correction of one ``(integration,
group)`` frame depends only on the reference pixels of that same frame, so it is split in
three pieces that a distributed wrapper can place on different blocks:

1. :func:`refpix_offsets` turns the reference pixels of a block of frames (a gathered vector,
   see :func:`reference_layout`) into a small per-frame *description* of the correction in the
   detector frame: one offset per amplifier and column parity and, when the side reference
   pixels are used, one value per detector row;
2. :func:`offsets_along` spreads that description along one DMS image axis (the detector
   column axis or the detector row axis) for any range of detector coordinates;
3. :func:`apply_refpix` subtracts the two axis profiles from any block of pixels.

:func:`refpix` composes the three on whole frames and is the reference definition.

Geometry (spec 01 §4, 04): a subarray is embedded in the 2048×2048 DMS canvas at
``(SUBSTRT2 − 1, SUBSTRT1 − 1)``; the canvas border outside the subarray is unusable, so only
the reference pixels inside the subarray contribute.  The canvas is mapped to the detector
frame (fast read direction along detector columns' index, amplifiers as 512-column stripes)
with FASTAXIS/SLOWAXIS.  Every reference pixel of the canvas lies in its 4-pixel border in any
orientation, so the gathered vector is the part of that border inside the subarray (plus the
first and last four columns of the NIRSpec subarrays without reference pixels).  Reference
pixels flagged by the MASK outside the detector border (none in flight MASK files) are not
considered.

Arithmetic follows the official pipeline so that results agree to the last bit: clipped
means are taken in detector row-major order (scipy ``sigmaclip`` semantics), in float32
without the side correction and in float64 with it (see :func:`working_dtype`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..dq import DO_NOT_USE, REFERENCE_PIXEL

#: size of the near-IR detector (DMS canvas and detector frame), pixels
FULL = 2048
#: width of the border of reference pixels, pixels
BORDER = 4
#: width of one amplifier stripe in detector columns (amplifiers A, B, C, D)
AMPLIFIER_WIDTH = 512
NAMPLIFIERS = 4
#: number of top/bottom offsets in the correction description: amplifier × column parity
NTOPBOTTOM = 2 * NAMPLIFIERS
#: NIRSpec subarrays that reach no detector edge; their outer 4 DMS columns stand in
NRS_EDGELESS_SUBARRAYS = ("SUB32", "SUB512", "SUB512S")

#: correction modes (spec 04): per amplifier with side pixels, or one output
AMPLIFIERS = "amplifiers"
SINGLE = "single"


# --------------------------------------------------------------------------- geometry


def dms_to_detector(image, *, fastaxis: int, slowaxis: int) -> np.ndarray:
    """View of ``image`` (``(..., y, x)``, DMS frame) in the detector frame.

    |FASTAXIS| = 1 flips rows when SLOWAXIS < 0 and columns when FASTAXIS < 0;
    |FASTAXIS| = 2 flips rows by FASTAXIS, columns by SLOWAXIS, then transposes.
    """
    image = np.asarray(image)
    sf, ss = int(np.sign(fastaxis)), int(np.sign(slowaxis))
    if abs(fastaxis) == 1:
        return image[..., ::ss, ::sf]
    return np.swapaxes(image[..., ::sf, ::ss], -2, -1)


def detector_to_dms(image, *, fastaxis: int, slowaxis: int) -> np.ndarray:
    """Inverse of :func:`dms_to_detector` (``(..., row, column)`` → ``(..., y, x)``)."""
    image = np.asarray(image)
    sf, ss = int(np.sign(fastaxis)), int(np.sign(slowaxis))
    if abs(fastaxis) == 1:
        return image[..., ::ss, ::sf]
    return np.swapaxes(image, -2, -1)[..., ::sf, ::ss]


def detector_coords(y, x, *, fastaxis: int, slowaxis: int) -> tuple[np.ndarray, np.ndarray]:
    """Detector ``(row, column)`` of full-frame DMS pixels ``(y, x)`` (0-based, broadcast).

    The detector column index runs along the fast read direction, so for |FASTAXIS| = 2
    (NIRISS, NIRSpec) detector columns are DMS rows.
    """
    y, x = np.asarray(y), np.asarray(x)
    fast, slow = (x, y) if abs(fastaxis) == 1 else (y, x)
    col = fast if fastaxis > 0 else FULL - 1 - fast
    row = slow if slowaxis > 0 else FULL - 1 - slow
    return row, col


def subarray_fits(ny: int, nx: int, *, substrt1: int, substrt2: int) -> bool:
    """Whether a ``ny × nx`` subarray at 1-based (SUBSTRT1, SUBSTRT2) lies inside the detector."""
    y0, x0 = substrt2 - 1, substrt1 - 1
    return y0 >= 0 and x0 >= 0 and y0 + ny <= FULL and x0 + nx <= FULL


def correction_mode(ny: int, nx: int, *, noutputs: int) -> str:
    """:data:`AMPLIFIERS` for full frames and 4-output subarrays, else :data:`SINGLE`."""
    if (ny, nx) == (FULL, FULL) or noutputs == 4:
        return AMPLIFIERS
    return SINGLE


def offsets_size(mode: str, *, use_side_ref_pixels: bool) -> int:
    """Length of the per-frame correction description returned by :func:`refpix_offsets`."""
    side = mode == AMPLIFIERS and use_side_ref_pixels
    return NTOPBOTTOM + (FULL if side else 0)


@dataclass(frozen=True)
class ReferenceLayout:
    """Where the candidate reference pixels of a subarray are, in gathering order.

    Attributes
    ----------
    boxes : tuple of (y_start, y_stop, x_start, x_stop)
        Rectangles relative to the subarray; gathering concatenates each rectangle flattened
        in C order.
    y, x : ndarray of int64, shape (P,)
        Full-frame DMS coordinates of the gathered pixels.
    extra_dq : ndarray of uint32, shape (P,)
        Bits OR-ed into the gathered ``pixeldq`` (REFERENCE_PIXEL on the stand-in columns of
        NIRSpec subarrays without reference pixels).
    """

    boxes: tuple[tuple[int, int, int, int], ...]
    y: np.ndarray
    x: np.ndarray
    extra_dq: np.ndarray

    @property
    def size(self) -> int:
        return int(self.y.size)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a 1-D boolean mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def reference_layout(
    ny: int, nx: int, *, substrt1: int = 1, substrt2: int = 1, subarray: str | None = None
) -> ReferenceLayout:
    """Candidate reference pixels of a ``ny × nx`` image at 1-based (SUBSTRT1, SUBSTRT2).

    These are the pixels of the image inside the 4-pixel border of the 2048×2048 DMS canvas
    (whatever the orientation, the detector border is the DMS border), plus, for the NIRSpec
    subarrays SUB32, SUB512 and SUB512S, the first and last four DMS columns of the subarray.
    """
    y0, x0 = substrt2 - 1, substrt1 - 1
    rows = np.arange(y0, y0 + ny)
    cols = np.arange(x0, x0 + nx)
    row_strip = (rows < BORDER) | (rows >= FULL - BORDER)
    col_strip = (cols < BORDER) | (cols >= FULL - BORDER)
    edgeless = np.zeros(nx, bool)
    full = (ny, nx) == (FULL, FULL)
    if not full and subarray is not None and subarray.strip().upper() in NRS_EDGELESS_SUBARRAYS:
        edgeless[:BORDER] = True
        edgeless[max(nx - BORDER, 0) :] = True
    col_strip |= edgeless

    boxes = [(a, b, 0, nx) for a, b in _runs(row_strip)]
    for a, b in _runs(~row_strip):
        boxes += [(a, b, c, d) for c, d in _runs(col_strip)]
    ys, xs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for a, b, c, d in boxes:
        yy, xx = np.meshgrid(np.arange(a, b), np.arange(c, d), indexing="ij")
        ys.append(yy.ravel())
        xs.append(xx.ravel())
    y, x = np.concatenate(ys), np.concatenate(xs)
    return ReferenceLayout(
        boxes=tuple(boxes),
        y=y + y0,
        x=x + x0,
        extra_dq=np.where(edgeless[x], REFERENCE_PIXEL, 0).astype(np.uint32),
    )


def gather_reference_pixels(image, layout: ReferenceLayout) -> np.ndarray:
    """The gathered reference-pixel vector of ``image`` (``(..., ny, nx)`` → ``(..., P)``)."""
    image = np.asarray(image)
    lead = image.shape[:-2]
    if not layout.boxes:
        return np.zeros((*lead, 0), image.dtype)
    return np.concatenate(
        [image[..., a:b, c:d].reshape(*lead, -1) for a, b, c, d in layout.boxes], axis=-1
    )


# --------------------------------------------------------------------------- statistics


def clipped_mean(values, *, siglimit: float = 3.0) -> float:
    """Sigma-clipped mean of usable reference pixels (scipy ``stats.sigmaclip`` semantics).

    Iterates mean ± ``siglimit`` × population std until no value is removed and returns the
    mean of the survivors; a set with zero spread returns its plain (float64) mean.  The
    statistics are computed in float32 for float32 values (ramps) and in float64 otherwise,
    in their order, with numpy's arithmetic (see :func:`clipped_means`).

    Parameters
    ----------
    values : array_like
        Reference pixel values (DN); unusable pixels already removed.
    siglimit : float
        Clipping limit (low = high) in standard deviations.

    Returns
    -------
    float
        The clipped mean (DN), NaN when ``values`` is empty.
    """
    c = np.asarray(values).ravel()
    return float(clipped_means(c[None, :], np.arange(c.size), siglimit=siglimit)[0])


def clipped_means(frames, idx, *, siglimit: float = 3.0) -> np.ndarray:
    """:func:`clipped_mean` of ``frames[f, idx]`` for every frame ``f``.

    Parameters
    ----------
    frames : ndarray, shape (nframes, npix), float32 or float64
        Reference pixels of a block of frames (DN).
    idx : ndarray of int, shape (m,)
        The pixels of the set, in the order their sums are taken.
    siglimit : float
        Clipping limit in standard deviations.

    Returns
    -------
    ndarray, shape (nframes,), float64
        The clipped means (DN); NaN for an empty set.

    The sums follow numpy's pairwise summation and its rounding of means (a float32 sum
    divided by the count in float64, rounded back), so the results equal numpy's
    ``std``/``mean`` loop (and scipy's ``sigmaclip``) bit for bit.  Compiled, because a
    SOSS segment has 2 × 1,422 such sets and numpy's calls cost ≈ 0.3 ms per set, where
    this loop takes microseconds.
    """
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.float32:
        frames = frames.astype(np.float64, copy=False)
    out = np.empty(frames.shape[0], np.float64)
    limit = np.array([siglimit], frames.dtype)
    _clipped_means(frames, np.ascontiguousarray(idx, dtype=np.int64), limit, out)
    return out


#: numpy's pairwise-summation block (``PW_BLOCKSIZE``)
_PW_BLOCK = 128


@numba.njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's pairwise sum of a run of at most :data:`_PW_BLOCK` values (n ≥ 1)."""
    if n < 8:
        res = a[lo]
        for i in range(1, n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True)
def _pairwise_sum(a, lo, n):
    """numpy's pairwise sum of ``a[lo:lo + n]`` (n ≥ 1), in the dtype of ``a``: halves (cut
    at a multiple of 8) summed separately down to blocks of :data:`_PW_BLOCK`.  Walked with
    an explicit stack (a recursive compiled function does not survive numba's cache when
    another module's kernel calls it)."""
    if n <= _PW_BLOCK:
        return _block_sum(a, lo, n)
    starts = np.empty(128, np.int64)
    sizes = np.empty(128, np.int64)
    done = np.zeros(128, np.bool_)
    values = np.empty(128, a.dtype)
    top, nval = 1, 0
    starts[0], sizes[0] = lo, n
    while top > 0:
        top -= 1
        s0, m = starts[top], sizes[top]
        if m <= _PW_BLOCK:
            values[nval] = _block_sum(a, s0, m)
            nval += 1
        elif done[top]:
            # both halves are on the value stack (addition commutes: their order is moot)
            values[nval - 2] = values[nval - 2] + values[nval - 1]
            nval -= 1
            done[top] = False
        else:
            h = m // 2
            h -= h % 8
            done[top] = True
            top += 1
            starts[top], sizes[top], done[top] = s0, h, False
            top += 1
            starts[top], sizes[top], done[top] = s0 + h, m - h, False
            top += 1
    return values[0]


@numba.njit(cache=True)
def _mean_std(c, n, sq, cell):
    """numpy's ``c[:n].mean()`` and ``c[:n].std()``, in the dtype of ``c``: sums divided by
    the count in float64 and rounded back (``cell``: a one-element buffer of that dtype)."""
    cell[0] = np.float64(_pairwise_sum(c, 0, n)) / n
    mu = cell[0]
    for j in range(n):
        d = c[j] - mu
        sq[j] = d * d
    cell[0] = np.float64(_pairwise_sum(sq, 0, n)) / n
    return mu, np.sqrt(cell[0])


@numba.njit(cache=True)
def _clipped_mean_of(c, sq, cell, k):
    """The clipped mean of ``c`` (reordered in place), NaN when empty."""
    n = c.size
    if n == 0:
        return np.nan
    spread = False
    for j in range(1, n):
        if c[j] != c[0]:
            spread = True
            break
    if not spread and c[0] == c[0]:
        # zero spread: the plain float64 mean (the value itself for float32 values; float64
        # ones need not add up exactly, and then numpy's spread is not zero but the clipping
        # keeps them all and returns the same mean)
        wide = np.empty(n, np.float64)
        for j in range(n):
            wide[j] = c[j]
        return _pairwise_sum(wide, 0, n) / n
    while n > 0:
        mu, sd = _mean_std(c, n, sq, cell)
        lo = mu - sd * k
        hi = mu + sd * k
        kept = 0
        for j in range(n):
            v = c[j]
            if v >= lo and v <= hi:
                c[kept] = v
                kept += 1
        if kept == n:
            return np.float64(mu)
        n = kept
    return np.nan


@numba.njit(cache=True)
def _clipped_means(frames, idx, limit, out):
    m = idx.size
    c = np.empty(m, frames.dtype)
    sq = np.empty(m, frames.dtype)
    cell = np.empty(1, frames.dtype)
    for f in range(frames.shape[0]):
        for j in range(m):
            c[j] = frames[f, idx[j]]
        out[f] = _clipped_mean_of(c, sq, cell, limit[0])


def running_median(values, *, side_smoothing_length: int = 11) -> np.ndarray:
    """Running median down the rows of the side reference pixels, reflected at the ends.

    Parameters
    ----------
    values : ndarray, shape (..., nrows, ncols), float32 or float64
        Side reference pixels (DN); NaN marks unusable pixels.  ``nrows`` must exceed
        ``side_smoothing_length // 2``.
    side_smoothing_length : int
        Window height L in rows (≥ 1).

    Returns
    -------
    ndarray, shape (..., nrows), float64
        Median of the usable pixels of the ``L × ncols`` window of each row (NaN when none),
        computed in the dtype of ``values``.  The window of row i spans rows
        ``i − L//2 … i − L//2 + L − 1`` (centred for odd L; for even L one row more before
        than after, as in the official pipeline, which pads for L + 1 but keeps an L-row
        window); rows beyond the ends are mirrored without repeating the edge row.
    """
    values = np.asarray(values)
    if values.dtype != np.float64:
        values = values.astype(np.float32)
    length = int(side_smoothing_length)
    if length < 1:
        raise ValueError(f"side_smoothing_length must be at least 1, got {length}")
    half = length // 2
    nrows, ncols = values.shape[-2:]
    rows = np.concatenate(
        [np.arange(half, 0, -1), np.arange(nrows), np.arange(nrows - 2, nrows - 2 - half, -1)]
    ).astype(np.int64)
    flat = np.ascontiguousarray(values.reshape(-1, nrows, ncols))
    out = np.empty((flat.shape[0], nrows), np.float64)
    # one window at a time: the windows of every row at once would be L × the input,
    # sorted (≈ 0.5 GB for 61 integrations of a 4-output SUBGRISM64)
    _running_median(flat, rows, length, np.full(1, 2, flat.dtype), out)
    return out.reshape(*values.shape[:-2], nrows)


@numba.njit(cache=True, nogil=True)
def _running_median(values, rows, length, two, out):
    """:func:`running_median` of ``values`` (m, nrows, ncols) with the reflected row index
    ``rows`` (nrows + 2·(length // 2)); the median of the finite values of each window, the
    two middle ones averaged in the dtype of ``values`` (as numpy's median; ``two``: 2 in
    that dtype)."""
    m, nrows, ncols = values.shape
    buf = np.empty(length * ncols, values.dtype)
    for f in range(m):
        for i in range(nrows):
            n = 0
            for r in range(i, i + length):
                row = rows[r]
                for c in range(ncols):
                    v = values[f, row, c]
                    if not np.isnan(v):
                        # insertion into the sorted prefix
                        j = n
                        while j > 0 and buf[j - 1] > v:
                            buf[j] = buf[j - 1]
                            j -= 1
                        buf[j] = v
                        n += 1
            if n == 0:
                out[f, i] = np.nan
            else:
                out[f, i] = (buf[(n - 1) // 2] + buf[n // 2]) / two[0]


def _mean_of_two(a: float, b: float, dtype) -> float:
    """Top/bottom combination: average if both exist, the one that exists, or NaN."""
    if np.isnan(a):
        return b
    if np.isnan(b):
        return a
    t = np.dtype(dtype).type
    return float(t(0.5) * (t(a) + t(b)))


def _combine_sides(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per row: mean of left and right if both finite, the finite one, or 0."""
    both = 0.5 * (left + right)
    return np.where(
        np.isnan(left), np.where(np.isnan(right), 0.0, right), np.where(np.isnan(right), left, both)
    )


# --------------------------------------------------------------------------- the three kernels


def working_dtype(mode: str, *, use_side_ref_pixels: bool) -> np.dtype:
    """Arithmetic precision of the correction (the official pipeline's, see below).

    With the side correction the official pipeline's frame buffer becomes float64 after the
    first frame, so every statistic and subtraction is done in float64 of the float32 data
    and rounded to float32 once at the end; without it everything stays float32.  (The very
    first frame of an exposure is done in float32 there, and may differ by 1 float32 ulp.)
    """
    side = mode == AMPLIFIERS and use_side_ref_pixels
    return np.dtype(np.float64 if side else np.float32)


def refpix_offsets(
    ref_data,
    ref_dq,
    *,
    ref_y,
    ref_x,
    fastaxis: int,
    slowaxis: int,
    mode: str,
    odd_even_columns: bool = True,
    use_side_ref_pixels: bool = True,
    side_smoothing_length: int = 11,
    side_gain: float = 1.0,
    siglimit: float = 3.0,
) -> np.ndarray:
    """Per-frame description of the reference-pixel correction, in the detector frame.

    Parameters
    ----------
    ref_data : ndarray, shape (..., P)
        Gathered reference pixels (DN) of a block of frames, e.g. ``(integration, group, P)``
        (see :func:`gather_reference_pixels`); cast to float32.
    ref_dq : ndarray of uint32, shape (P,) or (1, ..., 1, P)
        Canvas ``pixeldq`` of the gathered pixels (time independent).
    ref_y, ref_x : ndarray of int, shape (P,)
        Full-frame DMS coordinates of the gathered pixels.
    fastaxis, slowaxis : int
        FASTAXIS, SLOWAXIS keywords (±1, ±2).
    mode : {"amplifiers", "single"}
        See :func:`correction_mode`.
    odd_even_columns, use_side_ref_pixels, side_smoothing_length, side_gain, siglimit
        Step parameters (official names and defaults); ``use_side_ref_pixels``,
        ``side_smoothing_length`` and ``side_gain`` only act in the amplifier mode.

    Returns
    -------
    ndarray, shape (..., K), float64
        ``[..., 2 * amplifier + parity]`` (K ≥ 8): the offset (DN) subtracted from detector
        columns of that amplifier (0–3 = A–D) and column-index parity (0 even, 1 odd); 0 where
        nothing is subtracted.  In the amplifier mode with ``use_side_ref_pixels``,
        ``[..., 8 + row]`` (K = 2056): ``side_gain`` × the smoothed side signal (DN) of each
        detector row.  In the single-output mode all four amplifiers carry the same two values.
    """
    work = working_dtype(mode, use_side_ref_pixels=use_side_ref_pixels)
    # float32 DN first (the calibrated ramp), then the working precision
    ref = np.asarray(ref_data, dtype=np.float32).astype(work)
    lead, npix = ref.shape[:-1], ref.shape[-1]
    frames = ref.reshape(int(np.prod(lead)), npix)
    nframes = frames.shape[0]
    dq = np.asarray(ref_dq, dtype=np.uint32).reshape(-1)[-npix:] if npix else np.zeros(0, np.uint32)
    row, col = detector_coords(ref_y, ref_x, fastaxis=fastaxis, slowaxis=slowaxis)
    # the clipped means are order dependent in float32: use detector row-major order
    order = np.lexsort((col, row))
    frames, dq, row, col = frames[:, order], dq[order], row[order], col[order]
    usable = (dq & DO_NOT_USE) == 0
    parity = col % 2
    amplifier = col // AMPLIFIER_WIDTH

    out = np.zeros((nframes, offsets_size(mode, use_side_ref_pixels=use_side_ref_pixels)))
    if mode == SINGLE:
        selected = usable & ((dq & REFERENCE_PIXEL) != 0)
        if not selected.any():
            return out.reshape(*lead, -1)
        sets = [selected & (parity == p) for p in (0, 1)] if odd_even_columns else [selected]
        idx = [np.flatnonzero(s) for s in sets]
        means = [clipped_means(frames, i, siglimit=siglimit) for i in idx]
        # an empty parity set (a single reference column) leaves that parity alone
        means = [np.where(np.isnan(m), 0.0, m) for m in means]
        out[:, 0:NTOPBOTTOM:2] = means[0][:, None]
        out[:, 1:NTOPBOTTOM:2] = means[-1][:, None]
        return out.reshape(*lead, -1)

    if mode != AMPLIFIERS:
        raise ValueError(f"mode must be {AMPLIFIERS!r} or {SINGLE!r}, got {mode!r}")
    bottom, top = row < BORDER, row >= FULL - BORDER
    for amp in range(NAMPLIFIERS):
        here = usable & (amplifier == amp)
        parities = (0, 1) if odd_even_columns else (None,)
        idx = {
            (p, edge): np.flatnonzero(here & side & (True if p is None else parity == p))
            for p in parities
            for edge, side in (("top", top), ("bottom", bottom))
        }
        means = {key: clipped_means(frames, i, siglimit=siglimit) for key, i in idx.items()}
        for f in range(nframes):
            vals = [_mean_of_two(means[p, "top"][f], means[p, "bottom"][f], work) for p in parities]
            # an amplifier lacking any of its values is left uncorrected
            if not any(np.isnan(v) for v in vals):
                out[f, 2 * amp] = vals[0]
                out[f, 2 * amp + 1] = vals[-1]

    if use_side_ref_pixels:
        tb = out[:, :NTOPBOTTOM].astype(work)
        signals = []
        for first in (0, FULL - BORDER):
            i = np.flatnonzero((col >= first) & (col < first + BORDER))
            # the side pixels are read after the top/bottom correction of their own column
            corrected = frames[:, i] - tb[:, 2 * amplifier[i] + parity[i]]
            grid = np.full((nframes, FULL, BORDER), np.nan, work)
            grid[:, row[i], col[i] - first] = np.where(usable[i], corrected, np.nan)
            signals.append(running_median(grid, side_smoothing_length=side_smoothing_length))
        out[:, NTOPBOTTOM:] = side_gain * _combine_sides(*signals)
    return out.reshape(*lead, -1)


def offsets_along(offsets, coord, *, dim: str, fastaxis: int, slowaxis: int) -> np.ndarray:
    """Spread the correction description along one DMS image axis.

    Parameters
    ----------
    offsets : ndarray, shape (..., K), float64
        Output of :func:`refpix_offsets`.
    coord : ndarray of int, shape (n,)
        Full-frame DMS coordinates (0-based) along ``dim`` of the pixels to correct.
    dim : {"y", "x"}
        The DMS axis of ``coord``.
    fastaxis, slowaxis : int
        FASTAXIS, SLOWAXIS keywords.

    Returns
    -------
    ndarray, shape (..., n), float64
        Along the detector column axis (DMS x for |FASTAXIS| = 1, y for 2): the top/bottom
        offset of each coordinate's amplifier and parity.  Along the detector row axis: the
        side term of each detector row (zeros when the description has none).
    """
    if dim not in ("y", "x"):
        raise ValueError(f"dim must be 'y' or 'x', got {dim!r}")
    offsets = np.asarray(offsets)
    coord = np.asarray(coord, dtype=np.int64)
    if (dim == "x") == (abs(fastaxis) == 1):
        _, col = detector_coords(coord, coord, fastaxis=fastaxis, slowaxis=slowaxis)
        return offsets[..., 2 * (col // AMPLIFIER_WIDTH) + col % 2]
    if offsets.shape[-1] == NTOPBOTTOM:
        return np.zeros((*offsets.shape[:-1], coord.size))
    row, _ = detector_coords(coord, coord, fastaxis=fastaxis, slowaxis=slowaxis)
    return offsets[..., NTOPBOTTOM + row]


def apply_refpix(data, offsets_y, offsets_x, *, fastaxis: int, float64: bool = False,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Subtract the reference-pixel correction from a block of pixels.

    Parameters
    ----------
    data : ndarray, shape (integration, group, y, x)
        Ramp block (DN), any pixel tile.
    offsets_y : ndarray, shape (integration, group, y), float64
        :func:`offsets_along` for the block's ``y`` coordinates.
    offsets_x : ndarray, shape (integration, group, x), float64
        :func:`offsets_along` for the block's ``x`` coordinates.
    fastaxis : int
        FASTAXIS keyword: tells which profile runs along detector columns.
    float64 : bool
        Subtract in float64 and round once (see :func:`working_dtype`); otherwise the column
        term is subtracted in float32 (and the row term, if any, in float64).
    out : ndarray, float32, data's shape, optional
        Where to write the result (``data`` itself will do: each value is read before its
        own place is written).

    Returns
    -------
    ndarray, shape (integration, group, y, x), float32
        Corrected data (DN).
    """
    data = np.asarray(data)
    oy = np.asarray(offsets_y, dtype=np.float64)
    ox = np.asarray(offsets_x, dtype=np.float64)
    if data.ndim != 4:
        raise ValueError(f"apply_refpix needs a (integration, group, y, x) block, got shape {data.shape}")
    # profiles given for fewer integrations or groups are broadcast (views, nothing copied)
    oy = np.broadcast_to(oy, (*data.shape[:2], data.shape[2]))
    ox = np.broadcast_to(ox, (*data.shape[:2], data.shape[3]))
    if data.dtype not in (np.float32, np.float64, np.uint16):
        data = data.astype(np.float64 if float64 else np.float32)
    if out is None:
        out = np.empty(data.shape, np.float32)
    _apply_profiles(data, oy, ox, abs(fastaxis) == 1, bool(float64), out)
    return out


@numba.njit(cache=True, nogil=True)
def _apply_profiles(data, oy, ox, col_is_x, float64, out):
    """``out = data − column term − row term`` in :func:`apply_refpix`'s arithmetic: in
    float64 rounded once, or the column term in float32 and the row term in float64 (a zero
    row term leaves the float32 difference as it is).  One compiled pass: numpy would need a
    few calls on each (integration, group) frame of the window (≈ 1,400 frames per SOSS tile)."""
    nint, ng, ny, nx = data.shape
    for i in range(nint):
        for g in range(ng):
            for y in range(ny):
                ry = oy[i, g, y]
                for x in range(nx):
                    rx = ox[i, g, x]
                    if col_is_x:
                        c, r = rx, ry
                    else:
                        c, r = ry, rx
                    if float64:
                        out[i, g, y, x] = np.float32((np.float64(data[i, g, y, x]) - c) - r)
                    else:
                        v = np.float32(data[i, g, y, x]) - np.float32(c)
                        out[i, g, y, x] = np.float32(np.float64(v) - r)


def refpix(
    data,
    pixeldq,
    *,
    substrt1: int = 1,
    substrt2: int = 1,
    fastaxis: int,
    slowaxis: int,
    noutputs: int,
    subarray: str | None = None,
    odd_even_columns: bool = True,
    use_side_ref_pixels: bool = True,
    side_smoothing_length: int = 11,
    side_gain: float = 1.0,
    siglimit: float = 3.0,
) -> np.ndarray:
    """Reference-pixel correction of whole frames (the reference definition).

    Parameters
    ----------
    data : ndarray, shape (integration, group, y, x)
        Ramps (DN) of a subarray or full frame, whole frames.
    pixeldq : ndarray of uint32, shape (y, x)
        Pixel DQ; reference pixels carry REFERENCE_PIXEL, unusable ones DO_NOT_USE.
    substrt1, substrt2 : int
        1-based position of the image on the detector (SUBSTRT1, SUBSTRT2).
    fastaxis, slowaxis, noutputs : int
        FASTAXIS, SLOWAXIS, NOUTPUTS keywords.
    subarray : str, optional
        SUBARRAY keyword (selects the NIRSpec stand-in reference columns).
    odd_even_columns, use_side_ref_pixels, side_smoothing_length, side_gain, siglimit
        Step parameters (official names and defaults).

    Returns
    -------
    ndarray, shape (integration, group, y, x), float32
        Corrected ramps (DN).

    Raises
    ------
    ValueError
        If the image does not fit inside the 2048×2048 detector.
    """
    data = np.asarray(data)
    ny, nx = data.shape[-2:]
    if not subarray_fits(ny, nx, substrt1=substrt1, substrt2=substrt2):
        raise ValueError(f"a {ny}×{nx} image at SUBSTRT1={substrt1}, SUBSTRT2={substrt2} does not fit")
    mode = correction_mode(ny, nx, noutputs=noutputs)
    layout = reference_layout(ny, nx, substrt1=substrt1, substrt2=substrt2, subarray=subarray)
    ref = gather_reference_pixels(data, layout)
    ref_dq = gather_reference_pixels(np.asarray(pixeldq, np.uint32), layout) | layout.extra_dq
    offsets = refpix_offsets(
        ref,
        ref_dq,
        ref_y=layout.y,
        ref_x=layout.x,
        fastaxis=fastaxis,
        slowaxis=slowaxis,
        mode=mode,
        odd_even_columns=odd_even_columns,
        use_side_ref_pixels=use_side_ref_pixels,
        side_smoothing_length=side_smoothing_length,
        side_gain=side_gain,
        siglimit=siglimit,
    )
    axes = {"y": np.arange(substrt2 - 1, substrt2 - 1 + ny), "x": np.arange(substrt1 - 1, substrt1 - 1 + nx)}
    prof = {d: offsets_along(offsets, c, dim=d, fastaxis=fastaxis, slowaxis=slowaxis) for d, c in axes.items()}
    float64 = working_dtype(mode, use_side_ref_pixels=use_side_ref_pixels) == np.float64
    return apply_refpix(data, prof["y"], prof["x"], fastaxis=fastaxis, float64=float64)


def refpix_zeroframe(zeroframe, pixeldq, **kwargs) -> np.ndarray:
    """Reference-pixel correction of the ZEROFRAME cube.

    Each integration's frame zero is corrected as a one-group ramp; pixels where the zero
    frame is 0 (no frame-zero value was recorded) are 0 again afterwards.

    Parameters
    ----------
    zeroframe : ndarray, shape (integration, y, x)
        Frame-zero images (DN).
    pixeldq : ndarray of uint32, shape (y, x)
    **kwargs
        Keywords of :func:`refpix`.

    Returns
    -------
    ndarray, shape (integration, y, x), float32
    """
    zeroframe = np.asarray(zeroframe)
    out = refpix(zeroframe[:, None], pixeldq, **kwargs)[:, 0]
    out[zeroframe == 0] = 0.0
    return out
