"""Stage-1 diagnostics on ramps (seed notebooks 000/001): saturation per group, the linearity
check, the dark-current fraction map and up-the-ramp samples of chosen pixels.

Inputs are exposure Datasets (:mod:`daskramp.dims`); results are xarray objects, lazy on dask
input (reductions through dask).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import dq as _dq
from ..dims import DATA, GROUP, GROUPDQ, INTEGRATION, X, Y
from ..steps.clean_flicker_noise import rechunk_data

PIXEL = "pixel"
FLUENCE_BIN = "fluence_bin"


def saturation_summary(ramp: xr.Dataset) -> xr.Dataset:
    """Saturation per group and partially saturated pixels from ``groupdq``.

    Returns
    -------
    xarray.Dataset
        ``n_saturated`` (integration, group): pixels flagged SATURATED in that group;
        ``saturated_fraction`` (integration, group);
        ``first_saturated_group`` (integration, y, x): first SATURATED group, −1 if none;
        ``partial`` (integration, y, x): saturated in some but not all groups (usable groups
        before saturation remain);
        ``n_partial`` / ``n_full`` (integration): counts of partially / fully saturated pixels.
    """
    sat = (ramp[GROUPDQ] & _dq.SATURATED) != 0
    npix = ramp.sizes[Y] * ramp.sizes[X]
    n = sat.sum((Y, X), dtype=np.int64)
    ngroup = ramp.sizes[GROUP]
    g = xr.DataArray(np.arange(ngroup), dims=(GROUP,))
    first = xr.where(sat, g, ngroup).min(GROUP)
    first = xr.where(first == ngroup, -1, first)
    any_sat = sat.any(GROUP)
    all_sat = sat.all(GROUP)
    partial = any_sat & ~all_sat
    return xr.Dataset({
        "n_saturated": n,
        "saturated_fraction": n / npix,
        "first_saturated_group": first.astype(np.int16),
        "partial": partial,
        "n_partial": partial.sum((Y, X), dtype=np.int64),
        "n_full": all_sat.sum((Y, X), dtype=np.int64),
    })


def group_difference_ratio(ramp: xr.Dataset, *, first=(0, 1), last=(-2, -1)) -> xr.Dataset:
    """(last − previous) / (second − first) group differences and the fluence at the last group.

    A linear detector gives ratios ≈ 1 at every fluence (seed 000 §4.4.2).
    Returns ``ratio`` and ``fluence`` (integration, y, x), lazily.
    """
    d = ramp[DATA].astype(np.float32)
    lp = d.isel({GROUP: last[1]}, drop=True) - d.isel({GROUP: last[0]}, drop=True)
    fp = d.isel({GROUP: first[1]}, drop=True) - d.isel({GROUP: first[0]}, drop=True)
    ratio = (lp / fp.where(fp != 0))
    return xr.Dataset({"ratio": ratio, "fluence": d.isel({GROUP: -1}, drop=True)})


def _binned(ratio: xr.DataArray, fluence: xr.DataArray, edges: np.ndarray) -> xr.Dataset:
    import dask.array as da

    r = ratio.data.ravel() if not hasattr(ratio.data, "dask") else ratio.data.reshape(-1)
    f = fluence.data.ravel() if not hasattr(fluence.data, "dask") else fluence.data.reshape(-1)
    lazy = hasattr(r, "dask") or hasattr(f, "dask")
    xp = da if lazy else np
    ok = xp.isfinite(r) & xp.isfinite(f)
    r0 = xp.where(ok, r, 0.0)
    f0 = xp.where(ok, f, -np.inf)
    if lazy:
        cnt, _ = da.histogram(f0, bins=edges, weights=ok.astype(np.float64))
        s1, _ = da.histogram(f0, bins=edges, weights=r0)
        s2, _ = da.histogram(f0, bins=edges, weights=r0 * r0)
    else:
        cnt, _ = np.histogram(f0, bins=edges, weights=ok.astype(np.float64))
        s1, _ = np.histogram(f0, bins=edges, weights=r0)
        s2, _ = np.histogram(f0, bins=edges, weights=r0 * r0)
    has = cnt > 0
    safe = xp.where(has, cnt, 1.0)
    mean = xp.where(has, s1 / safe, np.nan)
    std = xp.where(has, xp.sqrt(xp.maximum(s2 / safe - (s1 / safe) ** 2, 0.0)), np.nan)
    centers = 0.5 * (edges[1:] + edges[:-1])
    dims = (FLUENCE_BIN,)
    return xr.Dataset({"mean_ratio": (dims, mean), "std_ratio": (dims, std), "count": (dims, cnt)},
                      coords={FLUENCE_BIN: centers})


def linearity_check(before: xr.Dataset, after: xr.Dataset, *, bins=None, first=(0, 1),
                    last=(-2, -1)) -> xr.Dataset:
    """The linearity check of seed 000 §4.4.2 before and after the linearity step.

    Parameters
    ----------
    before, after : xarray.Dataset
        Ramps before and after linearity (same shape).
    bins : array of fluence bin edges (DN), optional
        Default 50 bins from 0 to 65535.

    Returns
    -------
    xarray.Dataset: ``ratio_before``/``ratio_after`` and ``fluence_before``/``fluence_after``
    (integration, y, x) for a scatter plot, and per fluence bin (of each one's own fluence)
    ``mean_ratio_before``/``_after``, ``std_ratio_*`` and ``count_*`` — binned through dask
    histograms (sums and counts), never loading the cube.
    """
    edges = np.linspace(0.0, 65535.0, 51) if bins is None else np.asarray(bins, np.float64)
    out = {}
    for tag, ds in (("before", before), ("after", after)):
        r = group_difference_ratio(ds, first=first, last=last)
        out[f"ratio_{tag}"] = r["ratio"]
        out[f"fluence_{tag}"] = r["fluence"]
        b = _binned(r["ratio"], r["fluence"], edges)
        for k in ("mean_ratio", "std_ratio", "count"):
            out[f"{k}_{tag}"] = b[k]
    return xr.Dataset(out)


def dark_fraction(before: xr.Dataset, after: xr.Dataset, *, group: int = -1) -> xr.DataArray:
    """Median over integrations of the dark signal fraction on one group, in percent.

    ``100 · (before − after) / after`` at ``group`` (default the last, which holds the most
    dark signal), ``before``/``after`` the ramps before and after dark_current (seed 000 §4.5).
    """
    b = before[DATA].isel({GROUP: group}, drop=True).astype(np.float32)
    a = after[DATA].isel({GROUP: group}, drop=True).astype(np.float32)
    pct = 100.0 * (b - a) / a.where(a != 0)
    pct = rechunk_data(pct, {INTEGRATION: -1})
    return pct.median(INTEGRATION, skipna=True).rename("dark_percent").assign_attrs(units="%")


def _fit_line(t, y, gdq):
    ok = np.isfinite(y) & ((gdq & (_dq.DO_NOT_USE | _dq.SATURATED)) == 0)
    # use groups before the first jump only: a jump breaks the ramp into segments
    jumps = np.flatnonzero((gdq & _dq.JUMP_DET) != 0)
    if jumps.size:
        ok &= np.arange(y.size) < jumps[0]
    if ok.sum() < 2:
        return np.array([np.nan, np.nan])
    slope, intercept = np.polyfit(t[ok], y[ok], 1)
    return np.array([slope, intercept])


def pixel_ramps(ramp: xr.Dataset, pixels, *, rateints: xr.Dataset | None = None,
                group_time: float | None = None) -> xr.Dataset:
    """Up-the-ramp samples of chosen pixels with their group DQ and a fitted line.

    Parameters
    ----------
    ramp : xarray.Dataset
        Exposure (integration, group, y, x).
    pixels : sequence of (y, x)
        Detector coordinates (the ``y``/``x`` coords).
    rateints : xarray.Dataset, optional
        If given, its ``data`` slope (DN/s) and, when present (``save_intercepts``), its
        ``intercept`` (DN at group 0) draw the line; without ``intercept`` the intercept is the
        median of ``data − slope·t`` over usable groups.  Without ``rateints`` a line is fitted
        to the usable groups (not DO_NOT_USE/SATURATED) before the first jump.
    group_time : float, optional
        Seconds per group (default TGROUP); ``time`` is ``g·TGROUP`` since group 0.

    Returns
    -------
    xarray.Dataset (pixel, integration, group): ``data``, ``groupdq``, ``model`` (the line),
    ``time`` (group); ``slope`` and ``intercept`` (pixel, integration) and their ``source``.
    """
    pix = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    ys = xr.DataArray(pix[:, 0], dims=(PIXEL,))
    xs = xr.DataArray(pix[:, 1], dims=(PIXEL,))
    sub = ramp[[DATA, GROUPDQ]].sel({Y: ys, X: xs}).transpose(PIXEL, INTEGRATION, GROUP)
    tg = float(ramp.attrs.get("TGROUP", 1.0) if group_time is None else group_time)
    t = np.arange(ramp.sizes[GROUP]) * tg
    tda = xr.DataArray(t, dims=(GROUP,))
    data = sub[DATA].astype(np.float64)
    fit = xr.apply_ufunc(
        lambda y, q: _fit_line(t, y, q), data, sub[GROUPDQ],
        input_core_dims=[[GROUP], [GROUP]], output_core_dims=[["coef"]], vectorize=True,
        dask="parallelized", output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {"coef": 2}},
    )
    slope, intercept = fit.isel(coef=0, drop=True), fit.isel(coef=1, drop=True)
    source = "fit"
    if rateints is not None:
        ri = rateints.sel({Y: ys, X: xs}).transpose(PIXEL, INTEGRATION, ...)
        slope = ri[DATA].astype(np.float64)
        source = "rateints"
        if "intercept" in rateints:
            intercept = ri["intercept"].astype(np.float64)
            source = "rateints+intercept"
        else:
            ok = (sub[GROUPDQ] & (_dq.DO_NOT_USE | _dq.SATURATED)) == 0
            intercept = (data - slope * tda).where(ok).median(GROUP)
    model = intercept + slope * tda
    out = xr.Dataset({
        DATA: data, GROUPDQ: sub[GROUPDQ], "model": model.transpose(*data.dims),
        "slope": slope, "intercept": intercept,
    }, coords={"time": tda})
    out.attrs["line_source"] = source
    return out
