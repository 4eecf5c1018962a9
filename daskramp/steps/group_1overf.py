"""group_1overf step wrapper: the background of every fast-read line removed at group level.

Not an official step: the 1/f correction TSO reductions make before jump (seed notebook 001,
§3.5): in every group difference, the median of the unilluminated pixels of each fast-read
line (a column for NIRISS and NIRSpec, a row for NIRCam; per amplifier with NOUTPUTS = 4)
is that line's background, and it is removed cumulatively from the groups.  The stripes of
1/f noise go, and so does the line's background level (a background subtraction), so a
spectrum extracted afterwards needs no background of its own.

The unilluminated pixels are a trace mask: ``user_mask`` (True = background), or pixels
below ``n_sigma`` above the clipped background of a draft rate image made from the raw ramp,
the rest grown by ``mask_grow`` pixels on every side, in a first pass (:func:`daskramp.kernels.group_1overf.draft_slope`, per segment, averaged
over segments).  DO_NOT_USE and reference pixels, and pixels DO_NOT_USE or SATURATED in
either group of a difference, never count.

Layout: a call on a block that holds whole fast-read lines (the fused layout's tiles span
the fast axis, see the spec's ``fast_lines``) computes and applies its line values at once;
on a lazy exposure the line values are computed on blocks of whole frames and applied on
the input's own chunks.  Off by default (``skip=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from ..dims import (
    DATA,
    GROUP,
    GROUPDQ,
    IMAGE_DIMS,
    INTEGRATION,
    PIXELDQ,
    X,
    Y,
    segment_bounds,
    validate,
)
from ..kernels import group_1overf as kernel
from ..params import boolean, check, floating, image, integer, option
from ._apply import map_ramp_blocks
from ._spec import StepSpec
from ._wrapper import COMPLETE, SKIPPED, with_status
from .clean_flicker_noise import fast_dim, line_dim, read_user_mask, rechunk_data, whole_frames

STATUS = "S_1OVERF"
CHANNEL = "channel"
#: optional outputs (``save_mask`` / ``save_pattern``)
MASK_VAR = "oneoverf_mask"
PATTERN_VAR = "oneoverf_pattern"
#: pixels per amplifier along the fast axis (NOUTPUTS = 4)
AMPLIFIER_PIXELS = 512


@dataclass(frozen=True)
class Params:
    """group_1overf parameters (daskramp's own step; none is an official parameter)."""

    method: str = option("median", ("median", "mean"), official=False,
                         note="median, or sigma-clipped mean, of a line's background pixels")
    # 1σ and 4 pixels of growth: the trace's faint wings stay out of the line medians, which
    # they would pull by a level that hardly follows the star's flux (a transit 0.1–0.2 %
    # too deep with 3σ and no growth; benchmarks/README.md, lightcurve)
    n_sigma: float = floating(1.0, above=0, official=False,
                              note="trace mask: pixels above the draft rate's clipped background + n_sigma·σ")
    mask_grow: int = integer(4, min=0, official=False,
                             note="trace mask grown by this many pixels on every side (its faint wings)")
    sigma: float = floating(3.0, above=0, official=False, note="clipping of method='mean'")
    by_amplifier: bool = boolean(True, official=False, note="one value per amplifier when NOUTPUTS = 4")
    user_mask: object = image(None, ndim=(2,), official=False,
                              note="(y, x) True = background, FITS path or array; replaces the draft-rate mask")
    save_mask: bool = boolean(False, official=False)
    save_pattern: bool = boolean(False, official=False)
    skip: bool = boolean(True, official=False)


def axis_to_correct(attrs) -> int:
    """``|SLOWAXIS|``: 1 → the fast-read lines are columns, 2 → rows."""
    return abs(int(attrs["SLOWAXIS"]))


def amplifier_index(ds: xr.Dataset, axis: int, *, by_amplifier: bool) -> np.ndarray:
    """Amplifier (0…3) of each position along the fast axis, from the detector coordinates
    (four 512-pixel stripes with NOUTPUTS = 4; otherwise one output)."""
    fd = fast_dim(axis)
    n = ds.sizes[fd]
    if not by_amplifier or int(ds.attrs.get("NOUTPUTS", 1)) != 4:
        return np.zeros(n, np.int8)
    coord = np.asarray(ds[fd].values) if fd in ds.coords else np.arange(n)
    return (coord // AMPLIFIER_PIXELS).astype(np.int8)


def exposure_draft_rate(ds: xr.Dataset) -> xr.DataArray:
    """The exposure's draft rate ``(y, x)`` float32 DN/s from its raw ramp, lazily.

    One :func:`~daskramp.kernels.group_1overf.draft_slope` per segment (on the input's own
    pixel chunks, every integration of the segment in a block), their mean in one task: the
    same numbers as the fused layout's statistics pass (:func:`daskramp.engine.stats.draft_rate`).
    """
    tgroup = float(ds.attrs["TGROUP"])
    parts = []
    for a, b in segment_bounds(ds):
        seg = ds[DATA].isel({INTEGRATION: slice(a, b)})
        if seg.chunks is not None:
            seg = rechunk_data(seg, {INTEGRATION: -1, GROUP: -1})
        parts.append(map_ramp_blocks(kernel.draft_slope, seg, dims_out=IMAGE_DIMS, dtype=np.float32,
                                     tgroup=tgroup, name="draft-slope"))
    coords = {d: ds[d] for d in IMAGE_DIMS if d in ds.coords}
    if all(p.chunks is None for p in parts):
        return xr.DataArray(kernel.mean_of(*(p.values for p in parts)), dims=IMAGE_DIMS, coords=coords)
    whole = [da.asarray(p.data).rechunk(-1) for p in parts]
    out = da.map_blocks(kernel.mean_of, *whole, dtype=np.float32)
    return xr.DataArray(out, dims=IMAGE_DIMS, coords=coords)


def background_mask(rate: xr.DataArray, *, n_sigma: float, grow: int = 0) -> xr.DataArray:
    """True = background: the trace mask of a whole-frame draft rate (NaN and 0 never;
    :func:`daskramp.kernels.group_1overf.trace_mask`, the signal grown by ``grow`` pixels)."""
    kw = {"n_sigma": float(n_sigma), "grow": int(grow)}
    if rate.chunks is None:
        return rate.copy(data=kernel.trace_mask(np.asarray(rate.values), **kw)).rename(MASK_VAR)
    data = da.asarray(rate.data).rechunk(-1).map_blocks(kernel.trace_mask, dtype=bool, **kw)
    return rate.copy(data=data).rename(MASK_VAR)


def _window_of(image_: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """``image_`` (whole subarray, detector coordinates) cut to ``ds``'s pixels."""
    if image_.sizes[Y] == ds.sizes[Y] and image_.sizes[X] == ds.sizes[X]:
        return image_
    return image_.sel({Y: ds[Y].values, X: ds[X].values})


def _line_values_block(data, groupdq, pixeldq, mask, channel, *, axis_to_correct, method, sigma):
    return kernel.line_values(data, groupdq, pixeldq, mask, channel, axis_to_correct=axis_to_correct,
                              method=method, sigma=sigma)


def _subtract_block(data, channel, *pieces, axis_to_correct):
    return kernel.subtract_lines(data, np.stack(pieces), channel, axis_to_correct=axis_to_correct)


def group_1overf(ds: xr.Dataset, *, draft_rate: xr.DataArray | None = None, skip: bool = False,
                 **params) -> xr.Dataset:
    """Remove the background of every fast-read line from every group difference (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (see :mod:`daskramp.dims`), float32 DN, after dark_current.  Uses SLOWAXIS,
        NOUTPUTS, TGROUP.
    draft_rate : xarray.DataArray (y, x), optional
        The whole subarray's draft rate (DN/s, detector coordinates), as the engine computes
        it from the raw ramp; default: :func:`exposure_draft_rate` of ``ds``.  Not used with
        ``user_mask``.
    skip : bool
        Return ``ds`` unchanged with status SKIPPED.
    **params
        Other :class:`Params` fields.

    Returns
    -------
    xarray.Dataset
        ``data`` corrected (float32 DN, same chunks); ``attrs["S_1OVERF"]``; with
        ``save_mask`` the mask ``oneoverf_mask`` (y, x), with ``save_pattern`` the removed
        line values ``oneoverf_pattern`` (channel, integration, group, line) DN.
    """
    p = check(Params(skip=skip, **params))
    validate(ds, source="group_1overf")
    if p.skip:
        return with_status(ds, STATUS, SKIPPED)
    if ds.sizes[GROUP] < 2:
        return with_status(ds, STATUS, COMPLETE)
    axis = axis_to_correct(ds.attrs)
    if p.user_mask is not None:
        mask = read_user_mask(p.user_mask, ds)
    else:
        rate = exposure_draft_rate(ds) if draft_rate is None else draft_rate
        mask = _window_of(background_mask(rate, n_sigma=p.n_sigma, grow=p.mask_grow), ds)
    chan = amplifier_index(ds, axis, by_amplifier=p.by_amplifier)
    fd = fast_dim(axis)
    chan_da = xr.DataArray(chan, dims=(fd,), coords={fd: ds[fd]} if fd in ds.coords else None)
    kw = {"axis_to_correct": axis, "method": p.method, "sigma": float(p.sigma)}
    lazy = ds[DATA].chunks is not None
    frames = whole_frames(ds) if lazy else ds
    mask = mask.astype(bool)
    if lazy:
        mask = rechunk_data(mask, {Y: -1, X: -1}) if mask.chunks is not None else mask
    values = map_ramp_blocks(_line_values_block, frames[DATA], frames[GROUPDQ], ds[PIXELDQ], mask, chan_da,
                             dims_out=(INTEGRATION, GROUP, line_dim(axis)),
                             new_axis=(CHANNEL, int(chan.max()) + 1), dtype=np.float32,
                             name="oneoverf-lines", **kw)
    pieces = [values.isel({CHANNEL: c}, drop=True) for c in range(values.sizes[CHANNEL])]
    data = map_ramp_blocks(_subtract_block, ds[DATA], chan_da, *pieces, dtype=np.float32,
                           axis_to_correct=axis, name="group_1overf")
    updates = {DATA: data}
    if p.save_mask:
        updates[MASK_VAR] = mask
    if p.save_pattern:
        updates[PATTERN_VAR] = values.assign_attrs(units="DN")
    return with_status(ds, STATUS, COMPLETE, **updates)


def _stats_kwargs(ds, params, given, frame_shape) -> dict:
    # None: the wrapper finds the draft rate from ``ds``
    if params.user_mask is not None:
        return {}
    return {"draft_rate": given.get("draft_rate")}


def _load_mask(path) -> np.ndarray:
    """A user mask's FITS file as a (y, x) bool array (its first image extension)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        return np.asarray(next(h.data for h in hdul if getattr(h, "data", None) is not None), bool)


SPEC = StepSpec(name="group_1overf", status=STATUS, params=Params, run=group_1overf, scratch=1.5,
                stats_kwargs=_stats_kwargs,
                not_fusable=lambda p: (None if p.skip or not (p.save_mask or p.save_pattern)
                                       else "group_1overf saves its whole mask and pattern"),
                draft_rate=lambda p: not p.skip and p.user_mask is None,
                fast_lines=lambda p: not p.skip,
                image_params=(("user_mask", _load_mask),))
