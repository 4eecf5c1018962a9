"""Aperture extraction along a trace with fractional edge pixels and propagated errors.

Pixel row ``j`` covers ``[j − 0.5, j + 0.5]``; the aperture of a column is
``[c − r, c + r]`` around the trace row ``c``; each pixel's weight is the length of its
overlap with the aperture (1 inside, a fraction at the two edges, 0 outside).  Per column

* ``flux = Σ w · (data − background)``,
* ``flux_err = sqrt(Σ w² · err²)`` (pixel errors independent; the background's own error is
  not propagated),
* ``background`` = median of the pixels with ``r < |row − c| ≤ background_radius`` (optional).

Runs per integration, lazily over integration chunks (whole frames per chunk).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..dims import DATA, INTEGRATION, X, Y
from ..steps.clean_flicker_noise import rechunk_data

FIELD = "field"


def aperture_weights(center, ny: int, radius: float) -> np.ndarray:
    """Fractional overlap weights (y, x) of the aperture ``center ± radius`` (center (x,) rows).

    NaN centres give all-zero columns.
    """
    c = np.asarray(center, np.float64)[None, :]
    j = np.arange(ny, dtype=np.float64)[:, None]
    lo = np.maximum(j - 0.5, c - radius)
    hi = np.minimum(j + 0.5, c + radius)
    w = np.clip(hi - lo, 0.0, 1.0)
    return np.where(np.isfinite(c), w, 0.0)


def _extract_frame(data, err, center, *, radius, background_radius, bad):
    data = np.asarray(data, np.float64)
    ny = data.shape[0]
    w = aperture_weights(center, ny, radius)
    if bad is not None:
        w = np.where(bad, 0.0, w)
    if background_radius is not None:
        dist = np.abs(np.arange(ny)[:, None] - np.asarray(center)[None, :])
        ring = (dist > radius) & (dist <= background_radius) & np.isfinite(data)
        if bad is not None:
            ring &= ~bad
        vals = np.where(ring, data, np.nan)
        has = ring.any(axis=0)
        bkg = np.zeros(data.shape[1])
        if has.any():
            bkg[has] = np.nanmedian(vals[:, has], axis=0)
    else:
        bkg = np.zeros(data.shape[1])
    used = w > 0
    flux = np.where(used, w * (data - bkg[None, :]), 0.0).sum(axis=0)
    e = np.asarray(err, np.float64)
    var = np.where(used, w**2 * e**2, 0.0).sum(axis=0)
    npix = w.sum(axis=0)
    nan_col = ~np.isfinite(np.asarray(center, np.float64))
    flux = np.where(nan_col, np.nan, flux)
    return np.stack([flux, np.sqrt(np.where(nan_col, np.nan, var)), bkg, npix])


def _weighted_wavelength(wmap, center, *, radius):
    w = aperture_weights(center, wmap.shape[0], radius)
    wm = np.asarray(wmap, np.float64)
    ok = np.isfinite(wm) & (w > 0)
    s = np.where(ok, w, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, np.where(ok, w * wm, 0.0).sum(axis=0) / s, np.nan)


def extract_aperture(
    rateints: xr.Dataset,
    trace: xr.DataArray,
    *,
    radius: float,
    background_radius: float | None = None,
    wavelength=None,
    bad: xr.DataArray | None = None,
) -> xr.Dataset:
    """Extract a spectrum per integration along ``trace``.

    Parameters
    ----------
    rateints : xarray.Dataset
        ``data`` and ``err`` (integration, y, x), DN/s.
    trace : xarray.DataArray (integration, x) or (x,)
        Trace centre in array rows (``trace`` of :func:`daskramp.analysis.trace.trace_order`);
        NaN columns are not extracted.
    radius : float
        Aperture half-height in pixels (fractional edges).
    background_radius : float, optional
        Outer radius of the background band (median subtracted per column).
    wavelength : DataArray/array (y, x) or (x,), optional
        Wavelength map (aperture-weighted mean per column, first integration's trace) or a
        wavelength per column; becomes the ``wavelength`` coordinate on ``x``.
    bad : DataArray (y, x) or (integration, y, x), bool, optional
        Pixels left out of the aperture sum and the background.

    Returns
    -------
    xarray.Dataset (integration, x): ``flux``, ``flux_err``, ``background`` (DN/s) and
    ``npix`` (sum of weights); coordinate ``wavelength`` when given.
    """
    data, err = rateints[DATA], rateints["err"]
    data = rechunk_data(data, {Y: -1, X: -1})
    err = rechunk_data(err, {Y: -1, X: -1})
    tr = trace.drop_vars([c for c in trace.coords if c not in trace.dims], errors="ignore")
    if X in data.coords:
        tr = tr.assign_coords({X: data[X]})
    tr = rechunk_data(tr, {X: -1})
    args = [data, err, tr]
    core = [[Y, X], [Y, X], [X]]
    if bad is not None:
        b = bad if isinstance(bad, xr.DataArray) else xr.DataArray(np.asarray(bad, bool), dims=(Y, X))
        b = rechunk_data(b, {Y: -1, X: -1})

        def fn(d, e, c, bb):
            return _extract_frame(d, e, c, radius=radius, background_radius=background_radius, bad=bb)

        args.append(b)
        core.append([Y, X])
    else:

        def fn(d, e, c):
            return _extract_frame(d, e, c, radius=radius, background_radius=background_radius, bad=None)

    res = xr.apply_ufunc(
        fn, *args, input_core_dims=core, output_core_dims=[[FIELD, X]], vectorize=True,
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {FIELD: 4}},
    )
    out = xr.Dataset({
        "flux": res.isel({FIELD: 0}, drop=True).assign_attrs(units="DN/s"),
        "flux_err": res.isel({FIELD: 1}, drop=True).assign_attrs(units="DN/s"),
        "background": res.isel({FIELD: 2}, drop=True).assign_attrs(units="DN/s"),
        "npix": res.isel({FIELD: 3}, drop=True),
    })
    for name, c in rateints[DATA].coords.items():
        if c.dims == (INTEGRATION,):
            out = out.assign_coords({name: c})
    if wavelength is not None:
        w = wavelength if isinstance(wavelength, xr.DataArray) else None
        warr = np.asarray(w.data if w is not None else wavelength, np.float64)
        if warr.ndim == 1:
            out = out.assign_coords(wavelength=(X, warr))
        else:
            tr0 = tr.isel({INTEGRATION: 0}) if INTEGRATION in tr.dims else tr
            wm = xr.DataArray(warr, dims=(Y, X))
            wl = xr.apply_ufunc(
                lambda m, c: _weighted_wavelength(m, c, radius=radius), wm, rechunk_data(tr0, {X: -1}),
                input_core_dims=[[Y, X], [X]], output_core_dims=[[X]], dask="parallelized",
                output_dtypes=[np.float64],
            )
            out = out.assign_coords(wavelength=wl.variable)
    out.attrs.update(radius=float(radius),
                     background_radius=None if background_radius is None else float(background_radius))
    return out
