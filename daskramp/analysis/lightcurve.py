"""Light curves from extracted spectra: normalised matrix, white light, sensitivity, binned
scatter, PSD and transit depth.

Inputs are the :func:`daskramp.analysis.extract.extract_aperture` Dataset (``flux``,
``flux_err`` with dims (integration, x)) or plain DataArrays over ``integration``.
``out_of_transit`` is a boolean DataArray/array over ``integration`` (True = baseline).
Everything stays lazy on dask input; reductions over integrations go through dask.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import DATA, GROUP, INTEGRATION, X, Y
from ..steps.clean_flicker_noise import nanmedian, rechunk_data

BIN_SIZE = "bin_size"
FREQUENCY = "frequency"


def _oot(obj, out_of_transit) -> xr.DataArray:
    n = obj.sizes[INTEGRATION]
    if out_of_transit is None:
        return xr.DataArray(np.ones(n, bool), dims=(INTEGRATION,))
    if isinstance(out_of_transit, xr.DataArray):
        return out_of_transit.astype(bool)
    return xr.DataArray(np.asarray(out_of_transit, bool), dims=(INTEGRATION,))


def _whole_integration(a: xr.DataArray) -> xr.DataArray:
    return rechunk_data(a, {INTEGRATION: -1})


def integration_scale(ramp, *, min_dn: float = 2000.0, max_dn: float = 40000.0,
                      out_of_transit=None, smooth: int = 1) -> xr.DataArray:
    """Relative flux of each integration from the ramps, for ``jump``'s ``integration_scale``.

    ``S_i = Σ (last group − first group)`` over the pixels whose difference exceeds ``min_dn``
    and whose last group stays below ``max_dn`` in **every** integration (a fixed set, so
    pixels near either limit do not move in and out with the flux), divided by the median of
    ``S`` over ``out_of_transit`` integrations (default: all).  Raw uncal ramps will do: a
    bias cancels in the difference, and with bright pixels only, the frame-level offsets that
    refpix would remove (≈ 1 DN per group) are a few 10⁻⁴ of the signal; cosmic rays, summed
    over many pixels, are less.  ``smooth`` (a running median over integrations) averages
    what is left, at the cost of rounding the ingress and egress.

    Parameters
    ----------
    ramp : xarray.Dataset or DataArray, dims (integration, group, y, x)
        Exposure (``data`` in DN), e.g. :func:`daskramp.io.open_exposure` of the uncal files.
    min_dn : float
        Last − first group difference (DN) a pixel must exceed in every integration.
    max_dn : float
        Last-group level (DN) a pixel must stay below in every integration.
    out_of_transit : bool array over ``integration``, optional
        Integrations that define 1.
    smooth : int
        Running-median width in integrations (1: none).

    Returns
    -------
    xarray.DataArray, dims (integration,), float64
        Computed (two passes over the ramps through dask: the pixel set, then the sums).
    """
    data = ramp[DATA] if isinstance(ramp, xr.Dataset) else ramp
    first = data.isel({GROUP: 0}, drop=True).astype(np.float64)
    last = data.isel({GROUP: -1}, drop=True).astype(np.float64)
    diff = last - first
    # the pixel set first (an image): one graph holding both reductions would keep every
    # integration's difference image until the set is known
    keep = ((last < max_dn) & (diff > min_dn)).all(INTEGRATION).compute()
    signal = diff.where(keep).sum((Y, X)).compute()
    oot = _oot(signal, out_of_transit)
    scale = signal / float(np.median(signal.values[oot.values]))
    if smooth > 1:
        scale = scale.rolling({INTEGRATION: int(smooth)}, center=True, min_periods=1).median()
    return scale.rename("integration_scale").assign_attrs(
        units="1", pixels=int(keep.sum()), min_dn=float(min_dn), max_dn=float(max_dn))


def normalized_lightcurves(spec: xr.Dataset, *, out_of_transit=None) -> xr.Dataset:
    """Spectroscopic light-curve matrix in ppm: ``(flux / median − 1)·10⁶`` per column.

    The median is over ``out_of_transit`` integrations (default: all, as in the notebook).

    Returns
    -------
    xarray.Dataset with ``lc`` and ``lc_err`` (ppm), dims (x, integration) — wavelength
    along the first axis for an image of the light curves; ``wavelength`` kept as coordinate.
    """
    oot = _oot(spec, out_of_transit)
    flux = _whole_integration(spec["flux"])
    ref = nanmedian(flux.where(oot), INTEGRATION)
    lc = (flux / ref - 1.0) * 1e6
    err = spec["flux_err"] / ref * 1e6
    return xr.Dataset({"lc": lc.transpose(X, INTEGRATION).assign_attrs(units="ppm"),
                       "lc_err": err.transpose(X, INTEGRATION).assign_attrs(units="ppm")})


def sensitivity(lightcurves: xr.Dataset, *, out_of_transit=None) -> xr.DataArray:
    """Out-of-event scatter / median error per column (≈ 1 when the errors describe the noise).

    ``sqrt(var(lc[oot])) / median(lc_err[oot])`` with ``lightcurves`` from
    :func:`normalized_lightcurves` (or any Dataset with ``lc`` and ``lc_err``).
    """
    oot = _oot(lightcurves, out_of_transit)
    lc = _whole_integration(lightcurves["lc"]).where(oot)
    err = _whole_integration(lightcurves["lc_err"]).where(oot)
    return (lc.std(INTEGRATION, skipna=True) / nanmedian(err, INTEGRATION)).rename("sensitivity")


def scatter_ratio(flux: xr.DataArray, flux_err: xr.DataArray, *, out_of_transit=None) -> xr.Dataset:
    """Out-of-transit scatter of a light curve against the scatter its errors predict.

    ``scatter`` is the sample standard deviation (``ddof=1``) of the ``out_of_transit``
    points (default: all), ``expected`` the median of their ``flux_err``, ``ratio`` =
    ``scatter / expected``: ≈ 1 when the errors describe the noise, above 1 when the data
    hold noise the errors leave out (1/f noise: ``err`` carries photon and read noise only).
    NaN points are left out.  ``daskramp report`` prints this ratio for the white light.

    Returns
    -------
    xarray.Dataset: ``scatter`` and ``expected`` (units of ``flux``), ``ratio`` and ``n``
    (points used), with any extra dims of ``flux`` (e.g. x for a spectroscopic matrix).
    """
    oot = _oot(flux, out_of_transit)
    f = _whole_integration(flux).where(oot)
    e = _whole_integration(flux_err).where(oot & np.isfinite(f))
    scatter = f.std(INTEGRATION, ddof=1, skipna=True)
    expected = nanmedian(e, INTEGRATION)
    return xr.Dataset({"scatter": scatter, "expected": expected, "ratio": scatter / expected,
                       "n": np.isfinite(f).sum(INTEGRATION)})


def _median_filter_x(a: xr.DataArray, size: int) -> xr.DataArray:
    from scipy.ndimage import median_filter

    a = rechunk_data(a, {X: -1})
    return xr.apply_ufunc(
        lambda v: median_filter(v, size=(1,) * (v.ndim - 1) + (size,), mode="nearest"),
        a, input_core_dims=[[X]], output_core_dims=[[X]], dask="parallelized",
        output_dtypes=[np.float64],
    )


def white_light(
    spec: xr.Dataset,
    *,
    out_of_transit=None,
    nsigma: float = 10.0,
    filter_size: int = 11,
) -> xr.Dataset:
    """White-light curve with per-wavelength outliers replaced (seed notebook 001 §5.6).

    A median-filtered (along x, ``filter_size``) out-of-transit median spectrum, scaled to each
    integration by the median ratio of the filtered spectra, is the model of every spectrum;
    columns deviating from it by more than ``nsigma`` (in units of the equally built error
    model) are replaced by the model (flux and error).  The white light is the sum over
    columns, normalised by its out-of-transit median.

    Returns
    -------
    xarray.Dataset (integration): ``flux`` and ``flux_err`` (relative), ``n_replaced``; and
    the corrected spectra ``spectra``/``spectra_err`` (integration, x).
    """
    oot = _oot(spec, out_of_transit)
    f = spec["flux"].astype(np.float64)
    e = spec["flux_err"].astype(np.float64)
    f_i, e_i = _whole_integration(f), _whole_integration(e)
    master = _median_filter_x(nanmedian(f_i.where(oot), INTEGRATION), filter_size)
    master_e = _median_filter_x(nanmedian(e_i.where(oot), INTEGRATION), filter_size)
    cmf = _median_filter_x(f, filter_size)
    cmf_e = _median_filter_x(e, filter_size)
    model = master / nanmedian(master / cmf, X)
    model_e = master_e / nanmedian(master_e / cmf_e, X)
    outlier = np.abs(f - model) / model_e > nsigma
    fc = xr.where(outlier, model, f)
    ec = xr.where(outlier, model_e, e)
    wl = fc.sum(X, skipna=True)
    wl_err = np.sqrt((ec**2).sum(X, skipna=True))
    norm = nanmedian(wl.where(oot), INTEGRATION)
    return xr.Dataset({
        "flux": wl / norm,
        "flux_err": wl_err / norm,
        "n_replaced": outlier.sum(X),
        "spectra": fc,
        "spectra_err": ec,
    })


def binned_scatter(flux: xr.DataArray, bin_sizes=None, *, out_of_transit=None) -> xr.Dataset:
    """RMS of the light curve binned in consecutive groups of N integrations, vs N.

    Bins are means of ``N`` consecutive (out-of-transit) points; a last incomplete bin is
    dropped.  ``expected = rms(N=1) / sqrt(N)`` is the white-noise law.

    Returns
    -------
    xarray.Dataset with ``rms`` and ``expected`` over ``bin_size`` (same units as ``flux``).
    """
    oot = np.asarray(_oot(flux, out_of_transit).values)  # the selection is one bool per integration
    sel = _whole_integration(flux.isel({INTEGRATION: np.flatnonzero(oot)}))
    n = sel.sizes[INTEGRATION]
    if bin_sizes is None:
        bin_sizes = np.arange(1, max(2, n // 4) + 1)
    bin_sizes = np.asarray(bin_sizes, int)
    rms = []
    for b in bin_sizes:
        m = (n // b) * b
        binned = sel.isel({INTEGRATION: slice(0, m)}).coarsen({INTEGRATION: int(b)}).mean()
        rms.append(binned.std(INTEGRATION))
    rms_da = xr.concat(rms, dim=BIN_SIZE).assign_coords({BIN_SIZE: bin_sizes})
    sigma1 = sel.std(INTEGRATION)
    expected = sigma1 / np.sqrt(xr.DataArray(bin_sizes.astype(float), dims=(BIN_SIZE,),
                                             coords={BIN_SIZE: bin_sizes}))
    return xr.Dataset({"rms": rms_da, "expected": expected})


def time_seconds(obj, *, time_coord: str = "int_mid_BJD_TDB") -> np.ndarray:
    """Seconds since the first integration from an INT_TIMES coordinate (days), or None."""
    if time_coord not in obj.coords:
        return None
    t = np.asarray(obj[time_coord].values, np.float64)  # one float per integration
    return (t - t[0]) * 86400.0


def lightcurve_psd(
    flux: xr.DataArray,
    *,
    times=None,
    time_coord: str = "int_mid_BJD_TDB",
    out_of_transit=None,
    frequencies=None,
    n_frequencies: int = 1000,
) -> xr.DataArray:
    """Lomb-Scargle PSD (``normalization='psd'``) of a light curve's out-of-transit points.

    ``times`` in seconds (default from ``time_coord`` in days, else the integration index).
    Default frequencies: from 1/(time span) to the Nyquist 1/(2·median cadence).
    """
    from astropy.timeseries import LombScargle

    if times is None:
        times = time_seconds(flux, time_coord=time_coord)
    if times is None:
        times = np.arange(flux.sizes[INTEGRATION], dtype=np.float64)
    oot = np.asarray(_oot(flux, out_of_transit).values)
    t = np.asarray(times, np.float64)[oot]
    if frequencies is None:
        frequencies = np.linspace(1.0 / (t[-1] - t[0]), 0.5 / np.median(np.diff(t)), n_frequencies)
    frequencies = np.asarray(frequencies, np.float64)
    sel = _whole_integration(flux.isel({INTEGRATION: np.flatnonzero(oot)}))
    psd = xr.apply_ufunc(
        lambda y: LombScargle(t, y, normalization="psd").power(frequencies),
        sel, input_core_dims=[[INTEGRATION]], output_core_dims=[[FREQUENCY]], vectorize=True,
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {FREQUENCY: frequencies.size}},
    )
    return psd.assign_coords({FREQUENCY: frequencies}).rename("psd")


def depth_in_out(flux: xr.DataArray, flux_err: xr.DataArray, in_transit) -> xr.Dataset:
    """Transit depth from in- and out-of-transit means: ``1 − mean_in / mean_out``.

    Errors: standard errors of the two means from ``flux_err`` (``sqrt(Σσ²)/n``), propagated
    to the ratio.  ``in_transit`` bool over integration (True = fully in transit); the other
    integrations are the baseline.  Returns ``depth`` and ``depth_err`` (fraction).
    """
    it = _oot(flux, in_transit)
    fin, fout = flux.where(it), flux.where(~it)
    nin, nout = it.sum(), (~it).sum()
    m_in, m_out = fin.mean(INTEGRATION), fout.mean(INTEGRATION)
    e_in = np.sqrt((flux_err.where(it) ** 2).sum(INTEGRATION)) / nin
    e_out = np.sqrt((flux_err.where(~it) ** 2).sum(INTEGRATION)) / nout
    ratio = m_in / m_out
    err = np.abs(ratio) * np.sqrt((e_in / m_in) ** 2 + (e_out / m_out) ** 2)
    return xr.Dataset({"depth": 1.0 - ratio, "depth_err": err})


def trapezoid_shape(t, *, t0: float, duration: float, ingress: float = 0.0) -> np.ndarray:
    """Fraction of the full depth at times ``t``: 1 in full transit, 0 out, linear in
    ingress/egress (``ingress`` = 0 → box).  ``duration`` is first to last contact."""
    t = np.asarray(t, np.float64)
    d = np.abs(t - t0)
    half = duration / 2.0
    if ingress <= 0:
        return (d <= half).astype(np.float64)
    return np.clip((half - d) / ingress, 0.0, 1.0)


def _fit_fixed(f, e, shape):
    # flux = a − b·shape, weighted linear least squares; depth = b / a
    w = 1.0 / e**2
    A = np.stack([np.ones_like(shape), -shape], axis=1)
    ATA = A.T @ (A * w[:, None])
    cov = np.linalg.inv(ATA)
    a, b = cov @ (A.T @ (w * f))
    chi2 = float(np.sum(w * (f - a + b * shape) ** 2))
    depth = b / a
    j = np.array([-b / a**2, 1.0 / a])
    return depth, float(np.sqrt(j @ cov @ j)), a, chi2


def _fit_kernel(f, e, t, t0_grid, dur_grid, ingress):
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0)
    f, e, t = f[ok], e[ok], t[ok]
    best = (np.inf,)
    for t0 in t0_grid:
        for dur in dur_grid:
            shape = trapezoid_shape(t, t0=t0, duration=dur, ingress=ingress)
            if not shape.any() or shape.all():
                continue
            depth, err, base, chi2 = _fit_fixed(f, e, shape)
            if chi2 < best[0]:
                best = (chi2, depth, err, base, t0, dur)
    if not np.isfinite(best[0]):
        return np.full(6, np.nan)
    chi2, depth, err, base, t0, dur = best
    return np.array([depth, err, base, t0, dur, chi2])


def fit_transit(
    flux: xr.DataArray,
    flux_err: xr.DataArray,
    *,
    times=None,
    t0=None,
    duration=None,
    ingress: float = 0.0,
) -> xr.Dataset:
    """Box (``ingress=0``) or trapezoid fit of a light curve: depth, baseline, t0, duration.

    For each (t0, duration) the model ``baseline·(1 − depth·shape)`` is linear in its two
    amplitudes and is solved by weighted least squares (errors from the covariance); t0 and
    duration are given, or a grid search over them (arrays, or None → half-cadence steps over
    the span for t0, and from one cadence to half the span for the duration) keeps the lowest
    χ².

    Returns
    -------
    xarray.Dataset: ``depth``, ``depth_err`` (fraction), ``baseline``, ``t0``, ``duration``,
    ``chi2`` (with any extra dims of ``flux``, e.g. x for a spectroscopic fit).
    """
    if times is None:
        times = time_seconds(flux)
    if times is None:
        times = np.arange(flux.sizes[INTEGRATION], dtype=np.float64)
    t = np.asarray(times, np.float64)
    cad = np.median(np.diff(t))
    # half-cadence grids: a box edge between two samples is then represented exactly
    t0_grid = np.atleast_1d(np.arange(t[0], t[-1] + cad / 4, cad / 2) if t0 is None
                            else np.asarray(t0, np.float64))
    dur_grid = np.atleast_1d(np.arange(2, max(3, t.size)) * cad / 2 if duration is None
                             else np.asarray(duration, np.float64))
    fi, ei = _whole_integration(flux), _whole_integration(flux_err)
    res = xr.apply_ufunc(
        lambda f, e: _fit_kernel(f, e, t, t0_grid, dur_grid, ingress),
        fi, ei, input_core_dims=[[INTEGRATION], [INTEGRATION]], output_core_dims=[["param"]],
        vectorize=True, dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"param": 6}},
    )
    names = ("depth", "depth_err", "baseline", "t0", "duration", "chi2")
    return xr.Dataset({n: res.isel(param=i, drop=True) for i, n in enumerate(names)},
                      attrs={"ingress": float(ingress)})
