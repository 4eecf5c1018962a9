"""Spectral tracing: per-integration centroids per column and a spline.

Every near-IR TSO spectrograph of stage 1 disperses along DMS x (NIRISS SOSS, NIRSpec BOTS,
NIRCam grism TSO), so a trace is a row position per column in all of them; what differs is
the cross-dispersion profile: SOSS's defocused, double-horned ~25-pixel profile against the
2–3-pixel FWHM of NIRSpec and NIRCam, which sit in strips of only 16–256 rows.

Per integration (lazily over integration chunks), each column of the order's column range is
cleaned of outliers with a running median, smoothed with a Gaussian filter (the default
``gauss_filter_width = 10`` turns the double-peaked SOSS profile into a single peak; a narrow
trace wants ~1 pixel, see :func:`find_orders`) and centroided (flux-weighted) within
``profile_radius`` rows of a guess.  The guess is a rough row position (then the previous
column's centroid is followed, walking away from ``x_start``) or a template row per column.
A least-squares B-spline through the centroids gives a smooth trace; its row at a reference
column versus integration is a systematics vector (trace drift).

:func:`find_orders` guesses the settings from an image: the illuminated column range (a
NIRCam grism spectrum covers only part of the detector), the start row and, for a narrow
trace, the smoothing and the centroid window.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import DATA, INTEGRATION, X, Y
from ..steps.clean_flicker_noise import nanmedian, rechunk_data

ORDER = "order"


def _mad_sigma(v):
    med = np.nanmedian(v)
    return 1.4826 * np.nanmedian(np.abs(v - med))


def centroid_columns(
    image,
    *,
    columns,
    y_guess,
    follow: bool = True,
    profile_radius: float = 20.0,
    gauss_filter_width: float = 10.0,
    nsigma: float = 100.0,
    y_tolerance: float = 5.0,
    recenter: int = 3,
    good=None,
) -> np.ndarray:
    """Centroid row of the trace in each of ``columns`` of one image.

    Parameters
    ----------
    image : array (y, x), float
    columns : array of int
        Array column indices, traced in this order.
    y_guess : float or array like ``columns``
        Start row (``follow``: later columns start from the previous centroid) or a template
        row per column.
    nsigma : float
        Pixels deviating from a 5-pixel running median by more than ``nsigma`` MAD-sigmas (and
        pixels with ``good`` False) are replaced by the running median.
    y_tolerance : float
        A centroid further than this from the previous one (a cosmic ray…) is replaced by it.
    recenter : int
        Centroid passes, each with the window centred on the previous estimate.

    Returns
    -------
    numpy.ndarray (len(columns),) float64 centroid rows (NaN where a column has no data).
    """
    from scipy.ndimage import gaussian_filter1d, median_filter

    img = np.asarray(image, np.float64)
    rows = np.arange(img.shape[0], dtype=np.float64)
    cols = np.asarray(columns, dtype=np.intp)
    guess = np.broadcast_to(np.asarray(y_guess, np.float64), cols.shape)
    out = np.full(cols.size, np.nan)
    current = guess[0]
    for n, c in enumerate(cols):
        col = img[:, c]
        finite = np.isfinite(col)
        if not finite.any():
            continue
        filled = np.where(finite, col, np.nanmedian(col))
        mf = median_filter(filled, size=5)
        sig = _mad_sigma(mf - filled)
        bad = ~finite
        if sig > 0:
            bad |= np.abs(mf - filled) > nsigma * sig
        if good is not None:
            bad |= ~np.asarray(good)[:, c]
        filled = np.where(bad, mf, filled)
        smooth = gaussian_filter1d(filled - np.median(filled), gauss_filter_width)
        cen = current if follow else guess[n]
        # re-centre the window on the estimate: a window centred off the peak weights one
        # wing more than the other and pulls the centroid towards the guess
        for _ in range(max(1, int(recenter))):
            sel = np.abs(rows - cen) < profile_radius
            w = smooth[sel]
            if w.sum() <= 0:
                cen = np.nan
                break
            cen = float(np.sum(rows[sel] * w) / np.sum(w))
        if not np.isfinite(cen):
            continue
        if n > 0 and np.isfinite(out[n - 1]) and abs(cen - out[n - 1]) > y_tolerance:
            cen = out[n - 1]
        out[n] = cen
        if follow:
            current = cen
    return out


def spline_trace(x, y, *, n_knots: int = 10, x_eval=None) -> np.ndarray:
    """Least-squares cubic B-spline through centroids with ``n_knots`` equally spaced interior
    knots, evaluated at ``x_eval`` (default ``x``).  NaN centroids are ignored."""
    from scipy.interpolate import LSQUnivariateSpline

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(y)
    order = np.argsort(x[ok])
    xs, ys = x[ok][order], y[ok][order]
    x_eval = x if x_eval is None else np.asarray(x_eval, np.float64)
    if xs.size < 4:
        return np.full(x_eval.shape, np.nan)
    n_knots = int(min(n_knots, max(0, xs.size - 4)))
    knots = np.linspace(xs[0], xs[-1], n_knots + 2)[1:-1]
    spl = LSQUnivariateSpline(xs, ys, knots, k=3)
    return spl(x_eval)


def _trace_frame(image, *, nx, columns, y_guess, follow, n_knots, row_offset, **kw):
    cen = centroid_columns(image, columns=columns, y_guess=np.asarray(y_guess) - row_offset,
                           follow=follow, **kw) + row_offset
    out = np.full((2, nx), np.nan)
    out[0, columns] = cen
    out[1, columns] = spline_trace(columns, cen, n_knots=n_knots)
    return out


def trace_order(
    data: xr.DataArray,
    *,
    x_start: int,
    x_end: int,
    y_start=None,
    template=None,
    rows: tuple[int, int] | None = None,
    n_knots: int = 10,
    profile_radius: float = 20.0,
    gauss_filter_width: float = 10.0,
    nsigma: float = 100.0,
    y_tolerance: float = 5.0,
    recenter: int = 3,
) -> xr.Dataset:
    """Trace one spectral order in every integration (lazy over integration chunks).

    Parameters
    ----------
    data : xarray.DataArray (integration, y, x) or (y, x)
        Rates (e.g. rateints ``data``, 1/f corrected).
    x_start, x_end : int
        Array columns where tracing starts and ends (inclusive; walked from ``x_start``).
    y_start : float
        Rough row of the trace at ``x_start`` (array index, within ``rows``).
    template : array (x,), optional
        A template row per column instead of ``y_start`` (no following).
    rows : (int, int), optional
        Only rows ``rows[0]:rows[1]`` are searched (e.g. to keep order 1 away from order 2).

    Returns
    -------
    xarray.Dataset with ``centroid`` and ``trace`` (spline), dims (integration, x), in array
    row units (NaN outside the traced columns); ``trace_y`` adds the detector y offset.
    """
    if (y_start is None) == (template is None):
        raise ValueError("give exactly one of y_start or template")
    step = -1 if x_end < x_start else 1
    columns = np.arange(x_start, x_end + step, step)
    follow = template is None
    y_guess = float(y_start) if follow else np.asarray(template, np.float64)[columns]
    r0, r1 = rows if rows is not None else (0, data.sizes[Y])
    img = data.isel({Y: slice(r0, r1)})
    img = rechunk_data(img, {Y: -1, X: -1})
    kw = dict(nx=data.sizes[X], columns=columns, y_guess=y_guess, follow=follow, n_knots=n_knots,
              row_offset=r0, profile_radius=profile_radius, gauss_filter_width=gauss_filter_width,
              nsigma=nsigma, y_tolerance=y_tolerance, recenter=recenter)
    both = xr.apply_ufunc(
        _trace_frame, img, input_core_dims=[[Y, X]], output_core_dims=[["field", X]],
        exclude_dims={X}, vectorize=True, dask="parallelized", output_dtypes=[np.float64], keep_attrs=False,
        dask_gufunc_kwargs={"output_sizes": {"field": 2, X: data.sizes[X]}}, kwargs=kw,
    )
    both = both.assign_coords({X: data[X]}) if X in data.coords else both
    ds = xr.Dataset({"centroid": both.isel(field=0, drop=True), "trace": both.isel(field=1, drop=True)})
    y0 = int(data[Y].values[0]) if Y in data.coords else 0
    ds["trace_y"] = ds["trace"] + y0
    for v in ds.data_vars.values():
        v.attrs["units"] = "pixel"

    ds.attrs.update(x_start=int(x_start), x_end=int(x_end))
    return ds


def trace_orders(data: xr.DataArray, orders: dict) -> xr.Dataset:
    """Trace several orders: ``orders = {1: dict(x_start=…, x_end=…, y_start=…), 2: {...}}``.

    Returns the :func:`trace_order` variables stacked along an ``order`` dim.
    """
    parts = [trace_order(data, **kw).expand_dims({ORDER: [o]}) for o, kw in orders.items()]
    return xr.concat(parts, dim=ORDER, combine_attrs="drop")


def trace_position(trace: xr.DataArray, *, x=None, relative: bool = True) -> xr.DataArray:
    """Trace row at column ``x`` (detector coordinate; default the middle traced column) per
    integration, minus its median if ``relative`` — the trace-drift systematics vector."""
    if x is None:
        valid = trace[X].where(np.isfinite(trace).any(INTEGRATION) if INTEGRATION in trace.dims
                               else np.isfinite(trace), drop=True)
        x = int(valid.values[valid.size // 2])
    pos = trace.sel({X: x})
    if relative:
        pos = pos - nanmedian(pos, INTEGRATION)
    return pos.rename("trace_position")


def trace_mask(trace: xr.DataArray, shape_like: xr.DataArray, *, halfwidth: float = 30.0) -> xr.DataArray:
    """True where a pixel is further than ``halfwidth`` rows from the trace(s) (background).

    ``trace`` (…, x) in array rows (``trace`` of :func:`trace_order`, optionally with an
    ``order`` dim: every order is masked); columns without a trace are all background.
    ``shape_like`` provides the ``y``/``x`` dims.  Lazy when ``trace`` is.
    """
    rows = xr.DataArray(np.arange(shape_like.sizes[Y], dtype=np.float64), dims=(Y,),
                        coords={Y: shape_like[Y]} if Y in shape_like.coords else None)
    near = np.abs(rows - trace) <= halfwidth
    if ORDER in near.dims:
        near = near.any(ORDER)
    return (~near).transpose(..., Y, X).rename("background_mask")


def trace_rateints(rateints: xr.Dataset, orders: dict) -> xr.Dataset:
    """:func:`trace_orders` on a rateints Dataset's ``data``."""
    return trace_orders(rateints[DATA], orders)


# ---------------------------------------------------------------- order finding

#: a trace whose full width at half maximum is below this (pixels) is "narrow" (NIRSpec, NIRCam)
NARROW_FWHM = 6.0


def rowwise_nanmedian(band: np.ndarray) -> np.ndarray:
    """Median of the finite values of each row; NaN for a row without any (reference pixels,
    flagged columns), without numpy's "All-NaN slice" warning."""
    band = np.asarray(band, np.float64)
    out = np.full(band.shape[0], np.nan)
    rows = np.isfinite(band).any(axis=1)
    if rows.any():
        out[rows] = np.nanmedian(band[rows], axis=1)
    return out


def column_profile(image: np.ndarray, col: int, half: int = 2) -> np.ndarray:
    """Cross-dispersion profile at column ``col``: row-wise median of ``2·half + 1`` columns,
    NaN rows filled with the median, minus the median (background ≈ 0)."""
    band = np.asarray(image)[:, max(0, col - half): col + half + 1]
    prof = rowwise_nanmedian(band)
    prof = np.where(np.isfinite(prof), prof, np.nanmedian(prof) if np.isfinite(prof).any() else 0.0)
    return prof - np.median(prof)


def smooth_profile(image: np.ndarray, col: int, half: int = 2) -> np.ndarray:
    """:func:`column_profile` smoothed with a 3-pixel Gaussian (finds broad and narrow ridges)."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(column_profile(image, col, half), 3.0)


def image_noise(image: np.ndarray) -> float:
    """Robust (MAD) standard deviation of the finite pixels of an image."""
    v = np.asarray(image)[np.isfinite(image)]
    if v.size == 0:
        return np.inf
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med))) or float(np.std(v)) or 1.0


def profile_fwhm(image: np.ndarray, col: int, row: float) -> float:
    """Full width at half maximum (pixels) of the cross-dispersion profile near ``row`` at
    ``col`` (5-column median, linear interpolation of the half-maximum crossings)."""
    prof = column_profile(image, col)
    r = int(np.clip(round(row), 0, prof.size - 1))
    lo, hi = max(0, r - 3), min(prof.size, r + 4)
    r = lo + int(np.argmax(prof[lo:hi]))
    half = 0.5 * prof[r]
    if not half > 0:
        return np.nan
    a = r
    while a > 0 and prof[a - 1] > half:
        a -= 1
    b = r
    while b < prof.size - 1 and prof[b + 1] > half:
        b += 1
    left = a - 1 + (half - prof[a - 1]) / (prof[a] - prof[a - 1]) if a > 0 else a - 0.5
    right = b + (prof[b] - half) / (prof[b] - prof[b + 1]) if b < prof.size - 1 else b + 0.5
    return float(right - left)


def _longest_run(flags: np.ndarray, max_gap: int) -> tuple[int, int] | None:
    """First and last index of the longest run of True, gaps of ≤ ``max_gap`` closed."""
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    k = int(np.argmax(idx[ends] - idx[starts]))
    return int(idx[starts[k]]), int(idx[ends[k]])


def find_orders(image, x_detector=None, *, snr: float = 20.0) -> dict:
    """Guess :func:`trace_orders` settings from a rate image (order 1, and order 2 if seen).

    Order 1 is the brightest ridge, traced from the last illuminated column towards the first:
    a column is illuminated when its smoothed profile peaks ``snr`` background-sigmas above
    the column median; the longest run of such columns (gaps of ≤ 10 columns closed) is the
    order's range, so a spectrum that covers only part of the detector (NIRCam grism,
    detector columns ~600–2000) is not traced into the dark columns.  When every usable column
    is lit (SOSS, NIRSpec BOTS) the range is the usable columns less one at each end.  A narrow
    trace (FWHM < :data:`NARROW_FWHM`: NIRSpec, NIRCam) also gets ``gauss_filter_width = 1``
    and ``profile_radius = max(4, 2·FWHM)`` instead of the SOSS defaults (10, 20).  SOSS order
    2 is looked for at detector column ≤ 1750 (it fades beyond ~1800), more than 20 rows from
    order 1.  Returns ``{}`` for an unilluminated image.
    """
    img = np.asarray(image, np.float64)
    ny, nx = img.shape
    xd = np.arange(nx) if x_detector is None else np.asarray(x_detector)
    good_cols = np.flatnonzero(np.isfinite(img).mean(axis=0) > 0.5)
    if good_cols.size < 16:
        return {}
    x_lo, x_hi = int(good_cols[0]) + 1, int(good_cols[-1]) - 1
    sig = image_noise(img) / np.sqrt(5.0)  # a 5-column median profile, before the smoothing
    level = snr * sig / 4.0  # the 3-px Gaussian smoothing lowers the noise ~4×
    p1 = smooth_profile(img, x_hi)
    if not p1.max() > level:
        # the last usable column is dark: find the illuminated range
        lit = np.zeros(nx, bool)
        for c in range(x_lo, x_hi + 1):
            lit[c] = smooth_profile(img, c).max() > level
        run = _longest_run(lit, max_gap=10)
        if run is None or run[1] - run[0] < 16:
            return {}
        x_lo, x_hi = run[0] + 1, run[1] - 1
        p1 = smooth_profile(img, x_hi)
    else:
        lit_lo = smooth_profile(img, x_lo).max() > level
        if not lit_lo:
            lit = np.zeros(nx, bool)
            for c in range(x_lo, x_hi + 1):
                lit[c] = smooth_profile(img, c).max() > level
            run = _longest_run(lit, max_gap=10)
            if run is not None and run[1] >= x_hi - 10:
                x_lo = max(x_lo, run[0] + 1)
    y1 = int(np.argmax(p1))
    if not p1[y1] > level:
        return {}
    orders = {1: dict(x_start=x_hi, x_end=x_lo, y_start=float(y1))}
    fwhm = profile_fwhm(img, x_hi, y1)
    if np.isfinite(fwhm) and fwhm < NARROW_FWHM:
        orders[1].update(gauss_filter_width=1.0, profile_radius=float(max(4.0, 2.0 * fwhm)))
        return orders  # NIRSpec/NIRCam: one order
    cand = np.flatnonzero((xd <= 1750) & (np.arange(nx) <= x_hi) & (np.arange(nx) >= x_lo + 16))
    if cand.size:
        x2 = int(cand[-1])
        prof = smooth_profile(img, x2)
        r1 = int(np.argmax(prof))  # order 1 at that column
        far = np.abs(np.arange(ny) - r1) > 20
        if far.any():
            y2 = int(np.flatnonzero(far)[np.argmax(prof[far])])
            if prof[y2] > level and prof[y2] > 0.02 * prof[r1]:
                split = (r1 + y2) // 2
                lo_rows, hi_rows = (0, split), (split, ny)
                o1_rows, o2_rows = (lo_rows, hi_rows) if r1 < y2 else (hi_rows, lo_rows)
                orders[1]["rows"] = o1_rows
                orders[2] = dict(x_start=x2, x_end=x_lo, y_start=float(y2), rows=o2_rows)
    return orders
