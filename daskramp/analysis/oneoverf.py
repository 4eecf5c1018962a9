"""1/f noise: a simple group-level column background, the rateints-level correction, and the
power spectrum of the column background with the detector clocking.

* :func:`subtract_group_1overf` — the simple group-level variant: in every group difference,
  the background of each fast-read line (per amplifier) from unilluminated pixels (a trace
  mask, or a sigma threshold on a draft rate), median or clipped mean, removed cumulatively.
  Same lazy layout as the ``clean_flicker_noise`` step (whole-frame line values, blockwise
  apply on the input chunks), so it can run anywhere between dark_current and jump.
* :func:`correct_rateints_1overf` — the same line background removed from every integration
  of a ``rateints`` product.
* :func:`pixel_times`, :func:`column_background_psd` — read times of every pixel (10 µs per
  pixel, 120 µs extra at the end of each fast-read line) and the Lomb-Scargle PSD of the
  unilluminated pixels of each line.

For NIRISS (FASTAXIS = ±2, SLOWAXIS = ±1) the fast-read lines are columns; for NIRCam
(FASTAXIS = ±1, SLOWAXIS = ±2) they are rows.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, GROUP, GROUPDQ, INTEGRATION, RAMP_DIMS, X, Y, validate
from ..engine.plan import frame_block_integrations
from ..kernels import clean_flicker_noise as _k
from ..steps import clean_flicker_noise as _step
from ..steps._apply import map_ramp_blocks
from ..steps._wrapper import with_status

FREQUENCY = "frequency"
#: detector clocking of the near-IR SIDECAR readout (seed notebook 001 §3.4)
PIXEL_TIME = 10e-6
LINE_GAP = 120e-6


def _axis(obj, slowaxis) -> int:
    if slowaxis is None:
        slowaxis = obj.attrs.get("SLOWAXIS")
    if slowaxis is None:
        raise ValueError("SLOWAXIS is not in attrs; pass slowaxis=")
    return abs(int(slowaxis))


def amplifier_index(obj, axis: int, *, by_amplifier: bool = True) -> np.ndarray:
    """Amplifier (0…3) of each position along the fast axis from detector coordinates.

    With NOUTPUTS = 4 the detector is read in four 512-pixel stripes along the fast axis;
    detector coordinates (``y``/``x`` coords) place a subarray in them.  Otherwise one output.
    """
    fd = _step.fast_dim(axis)
    n = obj.sizes[fd]
    if not by_amplifier or int(obj.attrs.get("NOUTPUTS", 1)) != 4:
        return np.zeros(n, np.int8)
    coord = np.asarray(obj[fd].values) if fd in obj.coords else np.arange(n)
    return (coord // _k.CHANNEL_SIZE).astype(np.int8)


def _stripes_kernel(data, groupdq, mask, channel, *, axis_to_correct, method, sigma, keep_level):
    """Line values of every group difference of a whole-frame block (see line_stripes)."""
    nint, ngroup = data.shape[:2]
    chan = np.asarray(channel).astype(np.intp)
    nchan = int(chan.max()) + 1
    nline = data.shape[3] if axis_to_correct == 1 else data.shape[2]
    out = np.zeros((nchan, nint, ngroup, nline), np.float32)
    mask = np.asarray(mask, bool)
    for i in range(nint):
        m_i = mask if mask.ndim == 2 else mask[i]
        for g in range(1, ngroup):
            diff = data[i, g].astype(np.float32) - data[i, g - 1].astype(np.float32)
            m = m_i & ((groupdq[i, g] & _k.UNUSABLE) == 0)
            out[:, i, g] = _k.line_stripes(diff, m, axis_to_correct=axis_to_correct, channel=chan,
                                           method=method, sigma=sigma, keep_level=keep_level)
    return out


def background_mask(ds: xr.Dataset, mask=None, *, n_sigma: float = 3.0) -> xr.DataArray:
    """Unilluminated-pixel mask (True = background) for a ramp or rateints Dataset.

    ``mask`` given (array or DataArray, (y, x) or (integration, y, x), True = background) → used
    as is; otherwise a sigma threshold on a draft rate (``n_sigma`` above the clipped median of
    the median rate image is "illuminated"; NaN/0 pixels excluded).
    """
    if mask is not None:
        if isinstance(mask, xr.DataArray):
            return mask.astype(bool)
        arr = np.asarray(mask, bool)
        dims = (Y, X) if arr.ndim == 2 else (INTEGRATION, Y, X)
        return xr.DataArray(arr, dims=dims)
    if GROUP in ds.dims:
        rate = _step.draft_rate(ds)
    else:
        rate = ds[DATA].median(INTEGRATION, skipna=True) if INTEGRATION in ds[DATA].dims else ds[DATA]
    return _step.make_scene_mask(rate, n_sigma=n_sigma)


def subtract_group_1overf(
    ds: xr.Dataset,
    mask=None,
    *,
    method: str = "median",
    n_sigma: float = 3.0,
    sigma: float = 3.0,
    by_amplifier: bool = True,
    keep_level: bool = True,
    slowaxis: int | None = None,
) -> xr.Dataset:
    """Remove the column (fast-read line) background of every group difference (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (integration, group, y, x), float32 DN, e.g. after dark_current.
    mask : array or DataArray (y, x) or (integration, y, x), bool, optional
        True = unilluminated pixel (e.g. :func:`daskramp.analysis.trace.trace_mask`); default:
        sigma threshold ``n_sigma`` on a draft rate.
    method : {'median', 'mean'}
        Median or sigma-clipped (``sigma``) mean of the masked pixels of each line.
    by_amplifier : bool
        Separate values per 512-pixel amplifier stripe when NOUTPUTS = 4.
    keep_level : bool
        Keep each difference's overall background level (only the stripes are removed), so the
        background rate survives; False removes the whole line level (background subtraction).
    slowaxis : int, optional
        Default ``ds.attrs["SLOWAXIS"]``.

    Returns
    -------
    xarray.Dataset like ``ds`` with corrected ``data`` (same chunks), ``one_over_f_stripes``
    (channel, integration, group, line) DN and ``attrs["ONEOVERF"] = method``.
    """
    validate(ds, source="subtract_group_1overf")
    axis = _axis(ds, slowaxis)
    m = background_mask(ds, mask, n_sigma=n_sigma)
    chan = amplifier_index(ds, axis, by_amplifier=by_amplifier)
    fd = _step.fast_dim(axis)
    chan_da = xr.DataArray(chan, dims=(fd,))
    frames = _step.whole_frames(ds, frame_block_integrations(*(ds.sizes[d] for d in RAMP_DIMS)))
    stripes = map_ramp_blocks(
        _stripes_kernel,
        frames[DATA],
        frames[GROUPDQ],
        m,
        chan_da,
        dims_out=(INTEGRATION, GROUP, _step.line_dim(axis)),
        new_axis=(_step.CHANNEL, int(chan.max()) + 1),
        dtype=np.float32,
        axis_to_correct=axis,
        method=method,
        sigma=float(sigma),
        keep_level=bool(keep_level),
        name="one_over_f_stripes",
    )
    data = _step.apply_line_values(ds, stripes, chan, axis)
    out = with_status(ds, "ONEOVERF", method, **{DATA: data})
    out["one_over_f_stripes"] = stripes.assign_attrs(units="DN")
    return out


def _correct_frame(image, mask, *, axis_to_correct, channel, method, sigma, keep_level):
    vals = _k.line_stripes(image, mask, axis_to_correct=axis_to_correct, channel=channel,
                           method=method, sigma=sigma, keep_level=keep_level)
    return (np.asarray(image, np.float32)
            - _k.expand_stripes(vals, channel, axis_to_correct=axis_to_correct)).astype(np.float32)


def correct_rateints_1overf(
    rateints: xr.Dataset,
    mask=None,
    *,
    method: str = "median",
    n_sigma: float = 3.0,
    sigma: float = 3.0,
    by_amplifier: bool = True,
    keep_level: bool = False,
    slowaxis: int | None = None,
) -> xr.Dataset:
    """Subtract the background of every fast-read line from each integration (lazy).

    The rateints-level correction of seed notebook 001 (§3.6, §5.2): per integration and
    column (NIRISS) or row (NIRCam), the median (or clipped mean) of the unilluminated
    pixels is subtracted.  ``mask`` (True = background; e.g. a trace mask) defaults to a sigma
    threshold ``n_sigma`` on the median rate image.  ``keep_level=False`` (default, as in the
    notebook) removes the whole line level.  ``err`` and the variances are unchanged.

    Returns
    -------
    xarray.Dataset like ``rateints`` with corrected ``data`` (float32 DN/s).
    """
    axis = _axis(rateints, slowaxis)
    data = rateints[DATA]
    m = background_mask(rateints, mask, n_sigma=n_sigma)
    chan = amplifier_index(rateints, axis, by_amplifier=by_amplifier)
    data = _step.rechunk_data(data, {Y: -1, X: -1})
    m = _step.rechunk_data(m, {Y: -1, X: -1})
    corrected = xr.apply_ufunc(
        _correct_frame,
        data,
        m,
        input_core_dims=[[Y, X], [Y, X]],
        output_core_dims=[[Y, X]],
        vectorize=True,
        dask="parallelized",
        output_dtypes=[FLOAT_DTYPE],
        kwargs={"axis_to_correct": axis, "channel": chan, "method": method, "sigma": float(sigma),
                "keep_level": bool(keep_level)},
    ).transpose(*rateints[DATA].dims)
    out = rateints.copy()
    out[DATA] = corrected.assign_attrs(rateints[DATA].attrs)
    out.attrs["ONEOVERF"] = method
    return out


def pixel_times(ny: int, nx: int, *, fastaxis: int = -2, pixel_time: float = PIXEL_TIME,
                line_gap: float = LINE_GAP) -> xr.DataArray:
    """Read time (s) of every pixel of a frame since the first pixel read, (y, x) float64.

    Pixels along the fast axis are ``pixel_time`` apart; each fast-read line ends with an
    extra ``line_gap`` before the next line starts.  Negative FASTAXIS/SLOWAXIS (reading
    direction reversed) do not change the spacing, only the order, which a power spectrum
    does not see, so reading starts at index 0 here.
    """
    if abs(int(fastaxis)) == 2:  # fast along y: lines are columns
        n_fast = ny
        fast_i, line_i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    else:
        n_fast = nx
        line_i, fast_i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    t = line_i * (n_fast * pixel_time + line_gap) + fast_i * pixel_time
    return xr.DataArray(t, dims=(Y, X), name="pixel_time", attrs={"units": "s"})


def _psd_kernel(image, mask, frequencies, *, fast_axis_index, pixel_time, line_gap, n_sigma, combine):
    from astropy.timeseries import LombScargle

    img = np.asarray(image, np.float64)
    if fast_axis_index == 1:  # lines along x → work on columns of the transpose
        img = img.T
        mask = None if mask is None else np.asarray(mask).T
    n_fast, n_line = img.shape
    t_fast = np.arange(n_fast) * pixel_time
    psds, ts, vs = [], [], []
    for j in range(n_line):
        col = img[:, j]
        ok = np.isfinite(col)
        if mask is not None:
            ok &= np.asarray(mask[:, j], bool)
        elif n_sigma is not None:
            med = np.nanmedian(col[ok]) if ok.any() else np.nan
            mad = 1.4826 * np.nanmedian(np.abs(col[ok] - med)) if ok.any() else np.nan
            ok &= np.abs(col - med) < n_sigma * mad
        if ok.sum() < 3:
            continue
        if combine == "median":
            psds.append(LombScargle(t_fast[ok], col[ok], normalization="psd").power(frequencies))
        else:
            ts.append(t_fast[ok] + j * (n_fast * pixel_time + line_gap))
            vs.append(col[ok] - np.median(col[ok]) if combine == "frame_demeaned" else col[ok])
    if combine == "median":
        return np.median(np.array(psds), axis=0) if psds else np.full(frequencies.size, np.nan)
    if not ts:
        return np.full(frequencies.size, np.nan)
    return LombScargle(np.concatenate(ts), np.concatenate(vs), normalization="psd").power(frequencies)


def column_background_psd(
    image: xr.DataArray,
    mask=None,
    *,
    fastaxis: int | None = None,
    frequencies=None,
    n_frequencies: int = 1000,
    pixel_time: float = PIXEL_TIME,
    line_gap: float = LINE_GAP,
    n_sigma: float | None = 3.0,
    combine: str = "median",
) -> xr.DataArray:
    """Lomb-Scargle PSD of the unilluminated pixels of each fast-read line.

    Parameters
    ----------
    image : xarray.DataArray (..., y, x)
        A group difference, or a stack of them (leading dims are kept, lazily over dask).
    mask : DataArray (y, x), bool, optional
        True = background pixel.  Default: per line, pixels within ``n_sigma`` MAD-sigmas of the
        line median (the seed notebook used 1 sigma, which narrows the distribution; 3 keeps the
        white-noise level).
    fastaxis : int
        Default ``image.attrs["FASTAXIS"]`` or −2 (NIRISS).
    frequencies : array (Hz), optional
        Default ``n_frequencies`` points from 1/(line read time) to the Nyquist 1/(2·pixel_time).
    combine : {'median', 'frame', 'frame_demeaned'}
        'median': PSD of each line (10 µs spacing) and their median, as in the notebook;
        'frame': one PSD of all lines joined with the real clock (line gaps included) — shows
        the line-to-line 1/f power; 'frame_demeaned' subtracts each line's median first.

    Returns
    -------
    xarray.DataArray (..., frequency), with coordinate ``frequency`` (Hz) and
    ``pixel_scale = 1/(frequency·pixel_time)`` (length scale in pixels).
    """
    if fastaxis is None:
        fastaxis = int(image.attrs.get("FASTAXIS", -2))
    fast_index = 0 if abs(fastaxis) == 2 else 1  # array axis of (y, x) that is read fast
    n_fast = image.sizes[Y] if fast_index == 0 else image.sizes[X]
    if frequencies is None:
        frequencies = np.linspace(1.0 / (n_fast * pixel_time), 0.5 / pixel_time, n_frequencies)
    frequencies = np.asarray(frequencies, np.float64)
    image = _step.rechunk_data(image, {Y: -1, X: -1})
    kwargs = {"fast_axis_index": fast_index, "pixel_time": pixel_time, "line_gap": line_gap,
              "n_sigma": n_sigma, "combine": combine}
    if mask is not None:
        m = mask if isinstance(mask, xr.DataArray) else xr.DataArray(np.asarray(mask, bool), dims=(Y, X))

        def fn(img, mk):
            return _psd_kernel(img, mk, frequencies, **kwargs)

        args, core = [image, m], [[Y, X], [Y, X]]
    else:

        def fn(img):
            return _psd_kernel(img, None, frequencies, **kwargs)

        args, core = [image], [[Y, X]]
    psd = xr.apply_ufunc(
        fn, *args, input_core_dims=core, output_core_dims=[[FREQUENCY]], vectorize=True,
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {FREQUENCY: frequencies.size}},
    )
    return psd.assign_coords({FREQUENCY: frequencies,
                              "pixel_scale": (FREQUENCY, 1.0 / (frequencies * pixel_time))}).rename("psd")
