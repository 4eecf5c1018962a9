"""clean_flicker_noise kernels (spec 06, spec 12 §3): 1/f stripes of group differences.

1/f ("flicker") noise of the near-IR SIDECAR readout is correlated in read order: pixels read
one after the other along the *fast* axis (10 µs apart) share nearly the same offset, so each
group difference shows stripes that are constant along the fast-read lines and change from
line to line along the slow axis.  The default official algorithm measures, in every group
difference, the median of the background pixels of each fast-read line (one value per
``|SLOWAXIS|`` index, optionally per 512-pixel amplifier channel) and removes it; the group
values are then rebuilt cumulatively from the unchanged group 0.

Because the correction of a group difference is one number per line (and channel), the work
splits into

* :func:`flicker_terms` — per ``(integration, group)`` frame, the line values ``s`` and the
  background level ``b`` of the official algorithm (needs whole frames; the output is small);
  :func:`flicker_stripes` is its line values alone, :func:`line_stripes` a simpler variant;
* :func:`apply_clean` — the official float32 rebuild ``out[g] = out[g−1] + ((D − b) − s) + b``
  on any block holding every group (:func:`apply_stripes`: ``data[g] − Σ_{h≤g} s[h]``);
* :func:`draft_rate_terms` / :func:`draft_rateints` — the official draft rate, an ``OLS_C``
  ramp fit with RampFitStep's code defaults (:mod:`daskramp.kernels.ramp_fit`), from which
  the scene mask is made (:func:`scene_mask`); :func:`draft_slopes` is a quick stand-in
  needing no reference file.

Conventions: ``stripes`` arrays have shape ``(nchan, nint, ngroup, nline)`` float32, where
``nline`` is the length of the slow axis (``nx`` for ``axis_to_correct = 1``, ``ny`` for 2),
``stripes[:, :, 0]`` is 0 (group 0 is never changed) and ``stripes[:, i, g]`` belongs to the
difference ``data[i, g] − data[i, g−1]``.  A difference with no usable background pixel is
left uncorrected and marked with NaN in every channel and line ("skipped").
"""

from __future__ import annotations

import numba
import numpy as np

from .. import dq as _dq
from . import nsclean
from . import ramp_fit as _rf
from .selection import lower_of_selected, select

#: sigma and iterations of the basic clipped statistics (astropy ``sigma_clipped_stats`` defaults)
SIGMA_LIMIT = 3.0
MAXITERS = 5
#: width of one amplifier channel along the fast axis (H2RG outputs)
CHANNEL_SIZE = 512
#: group DQ bits that remove a pixel from the background of a difference
UNUSABLE = _dq.DO_NOT_USE | _dq.JUMP_DET


# ---------------------------------------------------------------- statistics


def sigma_clipped_stats(values, *, sigma: float = SIGMA_LIMIT, maxiters: int = MAXITERS,
                        overwrite: bool = False):
    """Mean, median and standard deviation after iterative sigma clipping.

    Same rules as astropy's ``sigma_clipped_stats`` with its defaults: centre = median,
    spread = standard deviation (ddof 0), keep ``centre − σ·std ≤ v ≤ centre + σ·std``
    (inclusive), repeat until nothing changes or ``maxiters`` passes.

    Parameters
    ----------
    values : array, any shape
        Data (NaN ignored); converted to float64.
    overwrite : bool
        ``values`` (a 1-D float64 array) may be reordered and overwritten: no copy is made.

    Returns
    -------
    (mean, median, std) : floats, NaN when no value is left.
    """
    if not (overwrite and isinstance(values, np.ndarray) and values.dtype == np.float64 and values.ndim == 1):
        values = np.array(values, dtype=np.float64).ravel()  # a copy of its own
    v = values[: _finite_in_place(values)]
    # the values of np.nanmedian / np.nanstd (what astropy evaluates when bottleneck is
    # absent, so that a value on a clip limit falls on the same side), found faster: the
    # values are finite; the median is selected among the values near the last one; the
    # clip keeps the values in order (np.std's sum depends on it), in place; and the
    # statistics of the last pass are those of the values kept
    n = v.size
    med = std = None
    guess = window = None
    buf = None
    for _ in range(maxiters):
        if n == 0:
            break
        w = v[:n]
        med = _median_near(w, guess, window)
        std = np.std(w)
        # the clip pass also gathers the values near this median, where the next pass's
        # median is looked for first (its guess is this pass's median and spread)
        if buf is None:
            buf = np.empty(n + 1, np.float64)
        wlo, whi = _median_window(med, std)
        kept, below, upto, inside = _clip_in_place(v, n, med - std * sigma, med + std * sigma,
                                                   wlo, whi, buf)
        if kept == n:
            break
        guess = (med, std)
        window = (below, upto, buf[:inside])
        n = kept
        med = std = None
    if n == 0:
        return np.nan, np.nan, np.nan
    w = v[:n]
    if med is None:
        med, std = _median_near(w, guess, window), np.std(w)
    return float(np.mean(w)), float(med), float(std)


@numba.njit(cache=True, nogil=True)
def _finite_in_place(a):
    # a[:n] = a[np.isfinite(a)], in order; returns n
    bad = 0
    for x in a:
        bad += not np.isfinite(x)
    if bad == 0:
        return a.size
    m = 0
    for x in a:
        if np.isfinite(x):
            a[m] = x
            m += 1
    return m


#: half-width, in standard deviations, of the window the median is first looked for in
MEDIAN_WINDOW = 0.15


def _median_window(centre, spread) -> tuple[float, float]:
    """The values where :func:`_median_near` looks for a median first, around a guess."""
    centre, spread = float(centre), float(spread)
    return centre - MEDIAN_WINDOW * spread, centre + MEDIAN_WINDOW * spread


def _median_near(w: np.ndarray, guess, window=None):
    """``median_of_finite(w)`` (float64), selected among the values within
    :data:`MEDIAN_WINDOW` standard deviations of a guess (the last pass's median and
    standard deviation, or those of a sample) when the middle ranks fall there, which one
    counting pass tells (or ``window``: ``(below, upto, inside)``, the counts below and up
    to the window and the values in it, gathered by the pass that made ``w``); otherwise
    among all."""
    n = w.size
    if n < 4096:
        return median_of_finite(w)
    if guess is None:
        sample = w[:: n // 1024]
        guess = (np.median(sample), np.std(sample))
    if not float(guess[1]) > 0:
        return median_of_finite(w)
    h = n // 2
    ka, kb = (h - 1 if n % 2 == 0 else h), h
    if window is None:
        lo, hi = _median_window(*guess)
        window = _window_ranks(w, lo, hi, ka, kb)
    below, upto, inside = window
    if not (below <= ka and kb < upto) or inside.size == 0:
        return median_of_finite(w)
    part = np.partition(inside, (ka - below, kb - below))
    a, b = part[ka - below], part[kb - below]
    return b if n % 2 else (a + b) / 2


@numba.njit(cache=True, nogil=True)
def _window_ranks(w, lo, hi, ka, kb):
    # how many values of w are below lo and up to hi, and (when the ranks ka, kb fall
    # within [lo, hi]) those values within it, else an empty array
    # without branches: the values fall on either side at random
    below = 0
    upto = 0
    for x in w:
        below += x < lo
        upto += x <= hi
    m = upto - below
    if not (below <= ka and kb < upto):
        return below, upto, np.empty(0, np.float64)
    buf = np.empty(m + 1, np.float64)
    m = 0
    for x in w:
        buf[m] = x
        m += (x >= lo) & (x <= hi)
    return below, upto, buf[:m]


@numba.njit(cache=True, nogil=True)
def _clip_in_place(v, n, lo, hi, wlo, whi, buf):
    # v[:n] keeps the values within [lo, hi], in order; of those kept, counts the values
    # below wlo and up to whi and gathers the ones within [wlo, whi] into buf; returns
    # (kept, below, upto, gathered)
    m = 0
    below = 0
    upto = 0
    k = 0
    for i in range(n):
        x = v[i]
        v[m] = x
        keep = (x >= lo) & (x <= hi)
        m += keep
        below += keep & (x < wlo)
        upto += keep & (x <= whi)
        buf[k] = x
        k += keep & (x >= wlo) & (x <= whi)
    return m, below, upto, k


def median_of_finite(v: np.ndarray):
    """``np.median`` of a 1-D array of finite values, in its dtype: the middle value, or the
    mean of the two middle ones (summed and halved in the array's dtype, as ``np.median``)."""
    n = v.size
    h = n // 2
    if n % 2:
        return np.partition(v, h)[h]
    part = np.partition(v, (h - 1, h))
    return (part[h - 1] + part[h]) / 2


def clip_to_background(
    image,
    mask,
    *,
    sigma_lower: float = 3.0,
    sigma_upper: float = 2.0,
    lower_half_only: bool = False,
    fit_histogram: bool = False,
) -> np.ndarray:
    """A new background mask with signal and bad values of ``image`` removed.

    Centre and sigma come from clipped statistics of the masked pixels; with
    ``lower_half_only`` the values at or below the centre are mirrored about it and the
    statistics redone, so that bright sources (one-sided outliers) do not inflate sigma.
    With ``fit_histogram`` the clipped mean is the first centre, and centre and sigma are then
    those of a Gaussian fitted to the histogram of the values (:func:`histogram_peak`).
    Pixels below ``centre − sigma_lower·σ`` (bad) or above ``centre + sigma_upper·σ``
    (signal) are removed from the mask.

    Parameters
    ----------
    image : array (y, x), float
    mask : array (y, x), bool
        True = background pixel (usable).  Not modified.

    Returns
    -------
    numpy.ndarray of bool, (y, x)
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    image = np.asarray(image)
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float64)
    # the same float64 values and operations as numpy's masked indexing, concatenation and
    # comparisons, in single passes
    # (the arrays are this function's own: the statistics may reorder them, unless the
    # histogram is made of them afterwards)
    values = _masked_values(image, mask)
    mean, center, sigma = sigma_clipped_stats(values, overwrite=not fit_histogram)
    if fit_histogram:
        center = mean
    if lower_half_only:
        values = _mirrored_low_half(image, mask, center)
        mean, center, sigma = sigma_clipped_stats(values, overwrite=not fit_histogram)
        if fit_histogram:
            center = mean
    if fit_histogram:
        center, sigma = histogram_peak(values, center, sigma)
    return _within(image, mask, center - sigma_lower * sigma, center + sigma_upper * sigma)


#: bins of the histogram :func:`histogram_peak` fits, over centre ± ``HISTOGRAM_HALF_WIDTH``·σ
HISTOGRAM_BINS = 2000
HISTOGRAM_HALF_WIDTH = 4.0


def _gaussian(x, amplitude, mean, sigma):
    return amplitude * np.exp(-0.5 * ((x - mean) / sigma) ** 2)


def histogram_peak(values, center: float, sigma: float) -> tuple[float, float]:
    """Centre and sigma of a Gaussian fitted (least squares) to the histogram of ``values``.

    ``HISTOGRAM_BINS`` bins over ``center ± 4·sigma``; the fit starts from the fullest bin
    and is bounded to positive heights, centres within the range and widths up to it.  When
    the histogram cannot be made (no finite range) or the fit does not converge, ``center``
    and ``sigma`` are returned unchanged (``clean_flicker_noise.fit_histogram``).
    """
    from scipy.optimize import curve_fit

    try:
        hist, edges = np.histogram(values, bins=HISTOGRAM_BINS,
                                   range=(center - HISTOGRAM_HALF_WIDTH * sigma, center + HISTOGRAM_HALF_WIDTH * sigma))
    except ValueError:
        return center, sigma
    mids = (edges[1:] + edges[0:-1]) / 2.0
    peak = np.argmax(hist)
    try:
        fitted, _ = curve_fit(_gaussian, mids, hist, p0=(hist[peak], mids[peak], sigma),
                              bounds=[(0, mids[0], 0), (np.inf, mids[-1], mids[-1] - mids[0])])
    except RuntimeError:
        return center, sigma
    return fitted[1], fitted[2]


@numba.njit(cache=True, nogil=True)
def _masked_values(image, mask):
    # image[mask] as float64, in order
    n = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            n += mask[i, j]
    out = np.empty(n, np.float64)
    m = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            if mask[i, j]:
                out[m] = image[i, j]
                m += 1
    return out


@numba.njit(cache=True, nogil=True)
def _mirrored_low_half(image, mask, center):
    # concatenate((low − c, c − low)) + c of low = image[mask & (image <= c)], in float64
    n = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            n += mask[i, j] & (np.float64(image[i, j]) <= center)
    out = np.empty(2 * n + 1, np.float64)
    m = 0
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            # without branches (half the pixels are on either side): written, then kept or
            # overwritten; the second half is filled below
            x = np.float64(image[i, j])
            out[m] = x
            m += mask[i, j] & (x <= center)
    for m in range(n):
        x = out[m]
        out[m] = (x - center) + center
        out[n + m] = (center - x) + center
    return out[: 2 * n]


@numba.njit(cache=True, nogil=True)
def _within(image, mask, lo, hi):
    # mask & ~(image < lo) & ~(image > hi)  (NaN compares false: kept as numpy keeps it)
    out = np.empty(mask.shape, np.bool_)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            x = np.float64(image[i, j])
            out[i, j] = mask[i, j] and not (x < lo) and not (x > hi)
    return out


def scene_mask(rate, *, n_sigma: float = 2.0, fit_histogram: bool = False) -> np.ndarray:
    """Background mask of a draft rate image (True = background usable).

    Pixels whose rate is NaN or exactly 0 (reference pixels, DO_NOT_USE pixels) are never
    background; with ``n_sigma > 0`` sources above ``median + n_sigma·σ`` and bad pixels
    below ``median − 3σ`` of the clipped rate distribution are removed too.

    Parameters
    ----------
    rate : array (y, x), float, DN/s

    Returns
    -------
    numpy.ndarray of bool, (y, x)
    """
    rate = np.asarray(rate)
    mask = ~(np.isnan(rate) | (rate == 0))
    if n_sigma > 0:
        mask = clip_to_background(rate, mask, sigma_lower=3.0, sigma_upper=n_sigma, fit_histogram=fit_histogram)
    return mask


def channel_index(size: int, *, fit_by_channel: bool) -> np.ndarray:
    """Amplifier channel (0…3) of each position along the corrected axis, int8 (size,).

    Channels are 512-pixel stripes; they are only used when the axis spans the full 2048
    pixels, otherwise the whole axis is one channel.
    """
    if fit_by_channel and size == 4 * CHANNEL_SIZE:
        return (np.arange(size) // CHANNEL_SIZE).astype(np.int8)
    return np.zeros(size, np.int8)


def _masked_line_median(image, mask, axis: int, chan: np.ndarray, nchan: int) -> np.ndarray:
    """Median of masked pixels along ``axis`` (the fast axis) per channel → (nchan, nline).

    The value ``np.nanmedian`` gives for the line with the unmasked pixels set to NaN (the
    middle value, or the two middle ones summed and halved in the image's float32); lines
    without any masked pixel get 0.
    """
    image = np.asarray(image, np.float32)
    mask = np.asarray(mask, bool)
    if axis == 1:
        image, mask = image.T, mask.T
    return _line_medians(image, mask, np.asarray(chan, np.int64), int(nchan))


@numba.njit(cache=True, nogil=True)
def _line_medians(image, mask, chan, nchan):
    # image, mask (fast, line): one median per line and channel over the fast axis
    nfast, nline = image.shape
    out = np.zeros((nchan, nline), np.float64)
    buf = np.empty(nfast, np.float32)
    for c in range(nchan):
        for j in range(nline):
            n = 0
            for i in range(nfast):
                v = image[i, j]
                if chan[i] == c and mask[i, j] and v == v:  # NaN: not a value, as nanmedian
                    buf[n] = v
                    n += 1
            if n == 0:
                continue
            h = n // 2
            upper = select(buf, n, h)
            if n % 2:
                out[c, j] = upper
            else:
                out[c, j] = (lower_of_selected(buf, h) + upper) / np.float32(2.0)
    return out


def _clipped_line_mean(image, mask, axis: int, chan: np.ndarray, nchan: int, sigma: float):
    """Sigma-clipped mean (median centre, ``sigma`` × std, 5 passes) per line and channel."""
    nline = image.shape[1 - axis]
    out = np.zeros((nchan, nline), np.float64)
    for c in range(nchan):
        sel = chan == c
        if axis == 0:
            sub = np.where(mask[sel, :], image[sel, :], np.nan).astype(np.float64)
        else:
            sub = np.where(mask[:, sel], image[:, sel], np.nan).T.astype(np.float64)
        keep = ~np.isnan(sub)
        for _ in range(MAXITERS):
            n = keep.sum(axis=0)
            if not n.any():
                break
            vals = np.where(keep, sub, np.nan)
            with np.errstate(invalid="ignore"), _quiet():
                med = np.nanmedian(vals, axis=0)
                std = np.nanstd(vals, axis=0)
                new = keep & (sub >= med - sigma * std) & (sub <= med + sigma * std)
            if (new == keep).all():
                break
            keep = new
        n = keep.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(keep, sub, 0.0).sum(axis=0) / n
        out[c] = np.where(n > 0, mean, 0.0)
    return out


class _quiet:
    """Silence numpy's all-NaN slice warnings (empty lines are handled explicitly)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _frame_mask(mask, i: int) -> np.ndarray:
    return mask if mask.ndim == 2 else mask[i]


# ---------------------------------------------------------------- official algorithm


def clean_difference(
    diff, mask, *, axis_to_correct: int, n_sigma: float, background_method, chan: np.ndarray, nchan: int
):
    """Line values and background level of one group difference (official default algorithm).

    Parameters
    ----------
    diff : array (y, x), float32, DN
        ``data[g] − data[g−1]``.
    mask : array (y, x), bool
        Scene mask minus DO_NOT_USE/JUMP_DET pixels of group g.
    axis_to_correct : {1, 2}
        ``|SLOWAXIS|``: 1 → one value per column (median over y), 2 → one per row.

    Returns
    -------
    (stripes, background) : numpy.ndarray (nchan, nline) float32 DN, numpy.float32 DN
        The line values of the background-subtracted difference (0 for a line without a
        background pixel) and the level removed before measuring them (0 without a
        background method; NaN if the clip left no pixel).  None when no background pixel
        is left at all: the official step then leaves this difference uncorrected.
    """
    prepared = _background_subtracted(diff, mask, background_method=background_method, n_sigma=n_sigma)
    if prepared is None:
        return None
    bkg_sub, mask, background, _ = prepared
    axis = axis_to_correct - 1  # array axis the medians run along (the fast axis)
    stripes = _masked_line_median(bkg_sub, mask, axis, chan, nchan).astype(np.float32)
    return stripes, background


def _background_subtracted(diff, mask, *, background_method, n_sigma: float, background_box_size=None):
    """The official preamble of a difference's cleaning: NaN → 0 and out of the mask; the
    background level (``median``: median of the background after a 3σ clip of the
    lower-half distribution; ``model``: :func:`model_background`; None: 0) subtracted; with
    ``n_sigma > 0`` the mask clipped again on the subtracted image.  The level only shifts
    which pixels count as background: it is restored after the noise is removed.

    Returns ``(bkg_sub, mask, background, nan_pix)``, or None when no background pixel is
    left (the official step then leaves the difference uncorrected).
    """
    diff = np.asarray(diff, dtype=np.float32)
    nan_pix = np.isnan(diff)
    image = np.where(nan_pix, np.float32(0), diff)
    mask = np.asarray(mask, bool) & ~nan_pix
    if not mask.any():
        return None
    if background_method is None:
        return image, mask, np.float32(0), nan_pix
    mask = clip_to_background(image, mask, sigma_lower=SIGMA_LIMIT, sigma_upper=SIGMA_LIMIT,
                              lower_half_only=True)
    if background_method == "model":
        background = model_background(image, mask, background_box_size=background_box_size)
    else:
        kept = image[mask]
        background = np.float32(median_of_finite(kept)) if kept.size else np.float32(np.nan)
    bkg_sub = image - background
    if n_sigma > 0:
        mask = clip_to_background(bkg_sub, mask, sigma_lower=n_sigma, sigma_upper=n_sigma,
                                  lower_half_only=True)
    return bkg_sub, mask, background, nan_pix


def flicker_terms(
    data,
    groupdq,
    mask,
    *,
    axis_to_correct: int,
    n_sigma: float = 2.0,
    background_method: str | None = "median",
    fit_by_channel: bool = False,
    flat=None,
) -> np.ndarray:
    """Per-difference line values and background levels of the default algorithm.

    Same inputs as :func:`flicker_stripes`, and ``flat``: ``(y, x)`` float32 (a
    :func:`prepared_flat`), which divides every difference before its values are found
    (``apply_flat_field``; the values are then those of the flat-fielded difference).

    Returns
    -------
    numpy.ndarray (nchan + 1, integration, group, nline), float32, DN
        Planes ``0 … nchan−1``: the line values (:func:`flicker_stripes`); plane ``nchan``:
        the background level of each difference, repeated along ``nline`` (0 for group 0 and
        for skipped differences).  :func:`apply_clean` takes both.
    """
    if axis_to_correct not in (1, 2):
        raise ValueError(f"axis_to_correct must be 1 or 2, got {axis_to_correct}")
    if background_method not in ("median", None):
        raise ValueError(f"background_method must be 'median' or None, got {background_method!r}")
    nint, ngroup, ny, nx = data.shape
    fast = ny if axis_to_correct == 1 else nx
    nline = nx if axis_to_correct == 1 else ny
    chan = channel_index(fast, fit_by_channel=fit_by_channel)
    nchan = int(chan.max()) + 1
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros((nchan + 1, nint, ngroup, nline), np.float32)
    for i in range(nint):
        for g in range(1, ngroup):
            # float32 difference, as the official step takes it from the float32 ramp
            diff = data[i, g].astype(np.float32) - data[i, g - 1].astype(np.float32)
            if flat is not None:
                diff /= flat
            m = _frame_mask(mask, i) & ((groupdq[i, g] & UNUSABLE) == 0)
            res = clean_difference(diff, m, axis_to_correct=axis_to_correct, n_sigma=n_sigma,
                                   background_method=background_method, chan=chan, nchan=nchan)
            if res is None:
                out[:nchan, i, g] = np.nan
            else:
                out[:nchan, i, g] = res[0]
                out[nchan, i, g] = res[1]
    return out


def flicker_stripes(
    data,
    groupdq,
    mask,
    *,
    axis_to_correct: int,
    n_sigma: float = 2.0,
    background_method: str | None = "median",
    fit_by_channel: bool = False,
) -> np.ndarray:
    """Per-difference line values of the default clean_flicker_noise algorithm.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        Whole frames, every group.
    groupdq : array (integration, group, y, x), uint8
    mask : array (y, x) or (integration, y, x), bool
        Scene mask (True = background).
    axis_to_correct : {1, 2}
        ``|SLOWAXIS|``.
    n_sigma : float
        Clip level of the background-subtracted difference (0 → no clipping).
    background_method : {'median', None}
    fit_by_channel : bool
        Separate values per 512-pixel channel when the fast axis spans 2048 pixels.

    Returns
    -------
    numpy.ndarray (nchan, integration, group, nline), float32, DN
        See the module docstring; skipped differences are NaN.
    """
    return flicker_terms(data, groupdq, mask, axis_to_correct=axis_to_correct, n_sigma=n_sigma,
                         background_method=background_method, fit_by_channel=fit_by_channel)[:-1]


# ---------------------------------------------------------------- simple variant


def line_stripes(
    image,
    mask,
    *,
    axis_to_correct: int,
    channel,
    method: str = "median",
    sigma: float = 3.0,
    keep_level: bool = True,
) -> np.ndarray:
    """Background of each fast-read line (per amplifier) of one frame.

    Parameters
    ----------
    image : array (y, x), float
        A group difference (DN) or a rate image (DN/s).
    mask : array (y, x), bool
        True = unilluminated pixel usable for the background.
    axis_to_correct : {1, 2}
        ``|SLOWAXIS|``: 1 → one value per column, 2 → one value per row.
    channel : array (fast,), int
        Amplifier of each pixel along the fast axis (see :func:`channel_index`).
    method : {'median', 'mean'}
        Median, or sigma-clipped mean (``sigma``) of the masked pixels of a line.
    keep_level : bool
        Subtract the median of all masked pixels from the line values, so the frame's
        overall background level is kept and only the stripes are removed.

    Returns
    -------
    numpy.ndarray (nchan, nline) float32.  Lines with no masked pixel get 0 (not corrected).
    """
    img = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(img)
    chan = np.asarray(channel).astype(np.intp)
    nchan = int(chan.max()) + 1 if chan.size else 1
    axis = axis_to_correct - 1
    if method == "median":
        vals = _masked_line_median(img, mask, axis, chan, nchan)
    elif method == "mean":
        vals = _clipped_line_mean(img, mask, axis, chan, nchan, sigma)
    else:
        raise ValueError(f"method must be 'median' or 'mean', got {method!r}")
    if keep_level and mask.any():
        level = np.median(img[mask])
        has = _has_pixels(mask, axis, chan, nchan)
        vals = np.where(has, vals - level, 0.0)
    return vals.astype(np.float32)


def _has_pixels(mask, axis, chan, nchan):
    nline = mask.shape[1 - axis]
    has = np.zeros((nchan, nline), bool)
    for c in range(nchan):
        sel = chan == c
        sub = mask[sel, :] if axis == 0 else mask[:, sel].T
        has[c] = sub.any(axis=0)
    return has


# ---------------------------------------------------------------- apply


def expand_stripes(stripes, channel, *, axis_to_correct: int) -> np.ndarray:
    """Spread line values ``(nchan, ..., nline)`` to images ``(..., y, x)``.

    ``channel`` (fast,) gives the channel of each pixel along the fast axis.
    """
    s = np.moveaxis(np.asarray(stripes), 0, -2)  # (..., nchan, nline)
    picked = s[..., np.asarray(channel).astype(np.intp), :]  # (..., fast, nline)
    return picked if axis_to_correct == 1 else np.swapaxes(picked, -1, -2)


def apply_stripes(data, channel, *stripes, axis_to_correct: int) -> np.ndarray:
    """Remove accumulated line values from a ramp block.

    ``out[i, g] = data[i, g] − Σ_{1≤h≤g} s[i, h]``; a skipped difference ``h`` (NaN line
    values) restarts the sum, because the official step leaves that group as read and
    rebuilds the later ones from it.  Where a difference involves a NaN sample the output is
    NaN from that group on (until a skipped difference), as the official cumulative rebuild
    gives.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        Any spatial block; every group.
    channel : array (y,) for ``axis_to_correct = 1`` or (x,) for 2, int
        Channel of each block position along the fast axis.
    *stripes : arrays (integration, group, x) for 1 or (integration, group, y) for 2
        One per channel, as returned (split) by :func:`flicker_stripes`.

    Returns
    -------
    numpy.ndarray, same shape as ``data``, float32.
    """
    data = np.asarray(data, dtype=np.float32)
    st = np.stack([np.asarray(s, dtype=np.float64) for s in stripes])  # (nchan, i, g, line)
    nint, ngroup = data.shape[:2]
    out = np.empty_like(data)
    out[:, 0] = data[:, 0]
    acc = np.zeros((st.shape[0], nint, st.shape[-1]), np.float64)
    isnan = np.isnan(data)
    nan_state = isnan[:, 0].copy()
    for g in range(1, ngroup):
        s = st[:, :, g]
        skipped = np.isnan(s).all(axis=(0, 2))  # (i,)
        acc = np.where(skipped[None, :, None], 0.0, acc + np.nan_to_num(s))
        corr = expand_stripes(acc, channel, axis_to_correct=axis_to_correct)  # (i, y, x)
        step_nan = nan_state | isnan[:, g] | isnan[:, g - 1]
        nan_state = np.where(skipped[:, None, None], isnan[:, g], step_nan)
        vals = (data[:, g].astype(np.float64) - corr).astype(np.float32)
        out[:, g] = np.where(nan_state, np.float32(np.nan), vals)
    return out


def apply_clean(data, channel, background, *stripes, axis_to_correct: int, flat=None) -> np.ndarray:
    """Rebuild a ramp block from its cleaned group differences, as the official step does.

    In float32, group by group: ``clean = ((D − b) − s) + b`` with ``D = data[g] − data[g−1]``,
    ``b`` the difference's background level and ``s`` the line value of the pixel's line, and
    ``out[g] = out[g−1] + clean``, ``out[0] = data[0]``.  With ``flat`` (the block's pixels of
    a :func:`prepared_flat`, ``(y, x)``): ``clean = (((D / f − b) − s) + b) · f``.  A skipped difference (line values
    all NaN) leaves ``out[g] = data[g]`` and the rebuild resumes from it.  A NaN sample makes
    the differences it enters NaN, so the pixel stays NaN until a skipped difference.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        Any spatial block; every group.
    channel : array (y,) for ``axis_to_correct = 1`` or (x,) for 2, int
        Channel of each block position along the fast axis.
    background : array (integration, group), float32, DN
        Background level of each difference (plane ``nchan`` of :func:`flicker_terms`).
    *stripes : arrays (integration, group, x) for 1 or (integration, group, y) for 2
        Line values, one array per channel (planes ``0 … nchan−1`` of :func:`flicker_terms`).

    Returns
    -------
    numpy.ndarray, same shape as ``data``, float32.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    st = np.ascontiguousarray(np.stack([np.asarray(s, dtype=np.float32) for s in stripes]))  # (nchan, i, g, line)
    bkg = np.ascontiguousarray(background, dtype=np.float32)
    if axis_to_correct not in (1, 2):
        raise ValueError(f"axis_to_correct must be 1 or 2, got {axis_to_correct}")
    skipped = np.isnan(st).all(axis=(0, 3))  # (i, g)
    if flat is None:
        f, use_flat = np.ones((1, 1), np.float32), False
    else:
        f, use_flat = np.ascontiguousarray(flat, dtype=np.float32), True
        if f.shape != data.shape[2:]:
            raise ValueError(f"flat of shape {f.shape} for a block of frames {data.shape[2:]}")
    return _rebuild(data, np.asarray(channel, np.int64), bkg, st, skipped, axis_to_correct == 1, f, use_flat)


@numba.njit(cache=True, nogil=True)
def _rebuild(data, channel, bkg, st, skipped, lines_are_columns, flat, use_flat):
    # the float32 recurrence of apply_clean, one pixel at a time: the same operations, in
    # the same order, as the whole-array form (each result rounded to float32)
    nint, ngroup, ny, nx = data.shape
    out = np.empty_like(data)
    for i in range(nint):
        for y in range(ny):
            for x in range(nx):
                out[i, 0, y, x] = data[i, 0, y, x]
        for g in range(1, ngroup):
            if skipped[i, g]:
                for y in range(ny):
                    for x in range(nx):
                        out[i, g, y, x] = data[i, g, y, x]
                continue
            b = bkg[i, g]
            for y in range(ny):
                for x in range(nx):
                    if lines_are_columns:
                        s = st[channel[y], i, g, x]
                    else:
                        s = st[channel[x], i, g, y]
                    d = data[i, g, y, x] - data[i, g - 1, y, x]
                    if use_flat:
                        clean = ((((d / flat[y, x]) - b) - s) + b) * flat[y, x]
                    else:
                        clean = ((d - b) - s) + b
                    out[i, g, y, x] = out[i, g - 1, y, x] + clean
    return out


# ---------------------------------------------------------------- whole-image corrections


def box_size(shape) -> tuple[int, int]:
    """The background model's default box: per axis the largest divisor ≤ 32 of its length."""
    return tuple(max(d for d in range(1, 33) if n % d == 0) for n in shape)


def model_background(image, mask, *, background_box_size=None):
    """Low-resolution background of an image, ``background_method='model'`` (spec 12 §3).

    A photutils ``Background2D`` of the background pixels: sigma-clipped (3σ, 5 passes)
    medians in boxes of ``background_box_size`` (default :func:`box_size`), filtered over 5 × 5
    boxes and interpolated to every pixel.  When photutils cannot fit it (too few pixels in
    the boxes) the median of the background pixels stands in, as in the official step.

    Parameters
    ----------
    image : array (y, x), float32, DN
    mask : array (y, x), bool
        True = background pixel.

    Returns
    -------
    numpy.ndarray (y, x) float32, or a float32 scalar (the fallback).
    """
    import warnings

    from astropy.stats import SigmaClip
    from astropy.utils.exceptions import AstropyUserWarning
    from photutils.background import Background2D, MedianBackground

    box = box_size(image.shape) if background_box_size is None else tuple(int(b) for b in background_box_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            return Background2D(image, box_size=box, filter_size=(5, 5), mask=~mask,
                                sigma_clip=SigmaClip(sigma=SIGMA_LIMIT, maxiters=MAXITERS),
                                bkg_estimator=MedianBackground()).background
    except ValueError:
        kept = image[mask]
        return np.float32(np.nanmedian(kept)) if kept.size else np.float32(np.nan)


def prepared_flat(flat) -> np.ndarray:
    """A FLAT's image as the step divides by it (``apply_flat_field``), float32 ``(y, x)``.

    A copy of ``flat`` (already cut to the science subarray) whose zeros and non-finite
    values are replaced by a smoothed local level, so that the fits near them are not
    affected: the official ``background_level(flat, good, 'model')`` — the good pixels
    clipped (:func:`clip_to_background`, 3σ on both sides, lower-half statistics), then
    :func:`model_background` of the default box — at those pixels, or its scalar fallback
    everywhere.
    """
    flat = np.array(flat, dtype=np.float32)
    bad = (flat == 0) | ~np.isfinite(flat)
    if not bad.any():
        return flat
    good = clip_to_background(flat, ~bad, sigma_lower=SIGMA_LIMIT, sigma_upper=SIGMA_LIMIT, lower_half_only=True)
    smoothed = model_background(flat, good)
    flat[bad] = smoothed if np.ndim(smoothed) == 0 else smoothed[bad]
    return flat


def clean_image(diff, mask, *, fit_method: str = "median", background_method="median",
                background_box_size=None, n_sigma: float = 2.0, axis_to_correct: int = 1,
                chan: np.ndarray | None = None, nchan: int = 1, detector: str = "NRS1", fc=None,
                return_background: bool = False, flat=None):
    """One group difference with its 1/f noise removed and its background kept (official order).

    NaN → 0 and out of the mask; background level (``median``: clipped median; ``model``:
    :func:`model_background`; None: 0) subtracted; with ``n_sigma > 0`` the mask clipped
    again on the subtracted image; the noise fitted on the background pixels and removed
    (``median``: line medians; ``fft``: :func:`daskramp.kernels.nsclean.clean_subarray`);
    the background added back and NaN restored.

    Parameters
    ----------
    diff : array (y, x), float32, DN
    mask : array (y, x), bool
        Scene mask minus the DO_NOT_USE/JUMP_DET pixels of the later group.
    chan, nchan : channel of each fast-axis position and their number (``median`` only).
    detector, fc : NIRSpec detector and apodizer corners (``fft`` only).
    flat : array (y, x), float32, optional
        A :func:`prepared_flat`: the difference is divided by it first and the cleaned
        image multiplied by it last (``apply_flat_field``).

    Returns
    -------
    numpy.ndarray (y, x) (float32, or float64 from ``fft``), or None when no background
    pixel is left (the official step then leaves the difference uncorrected); with
    ``return_background``, ``(cleaned, background)`` (the level removed and restored: an
    image, or a scalar), ``(None, 0)`` when left uncorrected.

    Raises
    ------
    ValueError
        ``fft`` found no pixel to fit after its outlier search, or a section's fit was
        singular: the official step would then return its input uncorrected.
    """
    if flat is not None:
        diff = np.asarray(diff, dtype=np.float32) / flat
    prepared = _background_subtracted(diff, mask, background_method=background_method, n_sigma=n_sigma,
                                      background_box_size=background_box_size)
    if prepared is None:
        return (None, np.float32(0)) if return_background else None
    bkg_sub, mask, background, nan_pix = prepared
    if fit_method == "fft":
        try:
            cleaned = nsclean.clean_subarray(bkg_sub, mask, detector,
                                             fc=nsclean.DEFAULT_FC if fc is None else fc)
        except np.linalg.LinAlgError as err:
            raise ValueError(f"clean_flicker_noise: the fft fit of a group difference is singular ({err})") from err
        if cleaned is None:
            raise ValueError("clean_flicker_noise: no background pixel left for the fft fit of a "
                             "group difference after its outlier search")
    else:
        if chan is None:
            chan = np.zeros(bkg_sub.shape[axis_to_correct - 1], np.int8)
        stripes = _masked_line_median(bkg_sub, mask, axis_to_correct - 1, chan, nchan).astype(np.float32)
        cleaned = bkg_sub - expand_stripes(stripes, chan, axis_to_correct=axis_to_correct)
    cleaned += background
    if flat is not None:
        cleaned *= flat
    cleaned[nan_pix] = np.nan
    return (cleaned, background) if return_background else cleaned


def clean_ramp(data, groupdq, mask, *, fit_method: str = "median", background_method="median",
               background_box_size=None, n_sigma: float = 2.0, axis_to_correct: int = 1,
               fit_by_channel: bool = False, detector: str = "NRS1", fc=None,
               with_background: bool = False, flat=None) -> np.ndarray:
    """A block of whole frames cleaned difference by difference (:func:`clean_image`).

    The general form of the step, for the options whose correction is a whole image per
    difference (``fit_method='fft'``, ``background_method='model'``):
    ``out[i, g] = out[i, g−1] + clean(data[i, g] − data[i, g−1])``, ``out[i, 0] = data[i, 0]``;
    a difference without background pixels leaves ``out[i, g] = data[i, g]``.

    Parameters
    ----------
    data : array (integration, group, y, x), float32, DN
        Whole frames, every group.
    groupdq : array (integration, group, y, x), uint8
    mask : array (y, x) or (integration, y, x), bool
        Scene mask (True = background).
    with_background : bool
        Also return the background level of every difference (``save_background``).
    flat : array (y, x), float32, optional
        A :func:`prepared_flat` (``apply_flat_field``, :func:`clean_image`).

    Returns
    -------
    numpy.ndarray, same shape as ``data``, float32; with ``with_background``, shape
    ``(2, *data.shape)``: the cleaned ramp and the background of each group's difference
    with the group before (0 for group 0 and for uncorrected differences).
    """
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    nint, ngroup = data.shape[:2]
    background = np.zeros(data.shape, np.float32) if with_background else None
    fast = data.shape[2] if axis_to_correct == 1 else data.shape[3]
    chan = channel_index(fast, fit_by_channel=fit_by_channel)
    nchan = int(chan.max()) + 1
    out = data.copy()
    for i in range(nint):
        for g in range(1, ngroup):
            m = _frame_mask(mask, i) & ((groupdq[i, g] & UNUSABLE) == 0)
            cleaned, bkg = clean_image(data[i, g] - data[i, g - 1], m, fit_method=fit_method,
                                       background_method=background_method,
                                       background_box_size=background_box_size, n_sigma=n_sigma,
                                       axis_to_correct=axis_to_correct, chan=chan, nchan=nchan,
                                       detector=detector, fc=fc, return_background=True, flat=flat)
            if cleaned is not None:
                out[i, g] = out[i, g - 1] + cleaned
                if background is not None:
                    background[i, g] = bkg
    return out if background is None else np.stack([out, background])


# ---------------------------------------------------------------- draft rate


def draft_slopes(data, groupdq, pixeldq, *, tgroup: float) -> np.ndarray:
    """A quick per-integration slope, (integration, y, x) float32 DN/s, needing no reference
    file (not the official draft rate, :func:`draft_rate_terms`).

    ``(data[last] − data[first]) / ((last − first)·TGROUP)`` over the first and last groups
    that are neither DO_NOT_USE nor SATURATED.  Jumps are not removed: they raise the
    estimate, which only masks the pixel from the background (the safe direction).  NaN when
    fewer than two groups are usable or the pixel is DO_NOT_USE / a reference pixel, as the
    ramp fit gives for those pixels.
    """
    good = (groupdq & (_dq.DO_NOT_USE | _dq.SATURATED)) == 0  # (i, g, y, x)
    ngroup = data.shape[1]
    g = np.arange(ngroup)[None, :, None, None]
    first = np.where(good, g, ngroup).min(axis=1)
    last = np.where(good, g, -1).max(axis=1)
    d_first = np.take_along_axis(data, np.clip(first, 0, ngroup - 1)[:, None], axis=1)[:, 0]
    d_last = np.take_along_axis(data, np.clip(last, 0, ngroup - 1)[:, None], axis=1)[:, 0]
    span = (last - first).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (d_last.astype(np.float64) - d_first) / (span * float(tgroup))
    bad_pix = (np.asarray(pixeldq) & (_dq.DO_NOT_USE | _dq.REFERENCE_PIXEL)) != 0
    slope = np.where((span < 1) | bad_pix[None], np.nan, slope)
    return slope.astype(np.float32)


def draft_rate_terms(data, groupdq, pixeldq, gain, readnoise, average_dark_current, *,
                     nframes: int, tframe: float, tgroup: float) -> np.ndarray:
    """Rate terms of the official draft ramp fit of one block, ``(term, y, x)`` float64.

    The block holds every integration of one segment (any spatial tile).  The fit is
    ``OLS_C`` with the code defaults of the official RampFitStep (``suppress_one_group``,
    every group): :func:`daskramp.kernels.ramp_fit.fit_products`, of which only the sums
    over integrations of :data:`~daskramp.kernels.ramp_fit.RATE_TERMS` are kept;
    :func:`daskramp.kernels.ramp_fit.combine_rate` turns them into the segment's rate.
    Inputs as :func:`daskramp.kernels.ramp_fit.ramp_fit`.
    """
    res = _rf.fit_products(data, groupdq, pixeldq, gain, readnoise, average_dark_current,
                           nframes=nframes, tframe=tframe, tgroup=tgroup)
    return res["rate_terms"][0]


def draft_rateints(data, groupdq, pixeldq, gain, readnoise, average_dark_current, *,
                   nframes: int, tframe: float, tgroup: float) -> np.ndarray:
    """Per-integration slopes of the official draft ramp fit (see :func:`draft_rate_terms`),
    ``(integration, y, x)`` float32 DN/s: the draft ``rateints`` (``single_mask=False``)."""
    res = _rf.fit_products(data, groupdq, pixeldq, gain, readnoise, average_dark_current,
                           nframes=nframes, tframe=tframe, tgroup=tgroup)
    return res["data"]
