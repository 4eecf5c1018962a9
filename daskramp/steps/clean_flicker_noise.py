"""clean_flicker_noise step wrapper (spec 06, spec 12 §3): 1/f noise removed at group level.

Default official path (``fit_method='median'``): draft rate → scene mask → for every group
difference, the median of the background pixels of each fast-read line (one value per
``|SLOWAXIS|`` index and amplifier channel) is removed and the ramp rebuilt from group 0.

Laziness and layout:

1. **Draft rate** — as the official step: an ``OLS_C`` ramp fit with the code defaults of
   RampFitStep, using the GAIN and READNOISE references, of each uncal segment on its own
   (the official pipeline processes one segment file at a time), so one scene mask per
   segment (:func:`official_scene_mask`).  It runs on the input's pixel tiles, holding
   every integration of a segment (:func:`daskramp.kernels.clean_flicker_noise.draft_rate_terms`),
   and keeps only the rate terms; the rate is finalized as ramp_fit finalizes its own.
   Without GAIN/READNOISE (the wrapper called on its own) a quick endpoint slope stands in
   (:func:`draft_rate`), which is not the official mask.
2. **Scene mask** — clipped statistics of each draft rate image (one image-sized task each).
3. **Line values and background levels** — blocks of ``k`` integrations × all groups ×
   whole frames (the background level and the clip limits are whole-frame statistics); the
   output is tiny: ``(channel + 1, integration, group, line)``.
4. **Rebuild** — the official float32 recurrence ``out[g] = out[g−1] + ((D − b) − s) + b``
   on the same whole-frame blocks, so the layout of later steps is unchanged (the engine
   lays the blocks back out as the input's chunks).

Only ``data`` changes; ``groupdq`` and ``pixeldq`` are returned as they are.  With
``apply_flat_field`` the FLAT reference (its bad values replaced when it is read) divides the
draft rate before the mask and every difference before its values are found, and multiplies
the cleaned differences back (:func:`daskramp.kernels.clean_flicker_noise.apply_clean`).

That is the layout of the wrapper on a lazy exposure (the step-by-step graph).  The fused
engine runs the same kernels through a checkpoint of the ramp the step receives
(:mod:`daskramp.engine.checkpoint`): :func:`tile_draft` on each tile, :func:`scene_masks`
once per segment, :func:`frame_block` on whole frames, and the wrapper given the line values
(``flicker``) on each tile (:func:`apply_given`); ``SPEC.frame_pass`` names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..dims import (
    CUBE_DIMS,
    DATA,
    FLOAT_DTYPE,
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
from ..errors import ConfigError
from ..kernels import clean_flicker_noise as kernel
from ..kernels import nsclean
from ..kernels import ramp_fit as _fit_kernel
from ..params import boolean, check, floating, image, int_list, option
from . import ramp_fit as _ramp_fit
from ._apply import chunk_by_segment, map_ramp_blocks, rechunk_method
from ._spec import FramePass, StepSpec, ref, ref_array
from ._wrapper import COMPLETE, SKIPPED, with_status

STATUS = "S_CLNFNS"
CHANNEL = "channel"
#: optional outputs (``save_mask``, ``save_noise``, ``save_background``)
MASK_VAR = "flicker_mask"
STRIPES_VAR = "flicker_stripes"
NOISE_VAR = "flicker_noise"
BACKGROUND_VAR = "flicker_background"
#: exposure types the official step fits with ``fit_method='fft'`` (NSClean)
FFT_EXP_TYPES = ("NRS_MSASPEC", "NRS_IFU", "NRS_FIXEDSLIT", "NRS_BRIGHTOBJ")


@dataclass(frozen=True)
class Params:
    """CleanFlickerNoiseStep parameters (official names and defaults).

    Implemented: ``fit_method`` 'median' or 'fft' (NIRSpec subarrays: NRS_MSASPEC, NRS_IFU,
    NRS_FIXEDSLIT, NRS_BRIGHTOBJ), ``background_method`` 'median', 'model' (with
    ``background_box_size``) or None, ``n_sigma``, ``fit_histogram``, ``fit_by_channel``, ``single_mask``,
    ``user_mask`` (FITS path, array or DataArray ``(y, x)``, True = background),
    ``save_mask``, ``save_noise`` and ``save_background`` (kept as the Dataset variables
    ``flicker_mask``; ``flicker_stripes``, the line values, or ``flicker_noise``, the removed
    noise of every group, for the whole-image corrections; ``flicker_background``, the
    background level of every group's difference), ``apply_flat_field`` (the FLAT
    reference; none applies to NIRSpec spectroscopy: a warning, as officially), and
    ``autoparam`` and ``mask_science_regions`` where the official step gives them no effect
    (:func:`check_exposure` refuses them elsewhere).  ``background_method='median_image'``
    is refused by :mod:`daskramp.params` (:class:`~daskramp.params.NotImplementedParameter`).
    """

    autoparam: bool = boolean(False, note="no effect outside NIS_IMAGE/NRC_IMAGE, as officially; "
                                         "refused there")
    fit_method: str = option("median", ("fft", "median"))
    fit_by_channel: bool = boolean(False)
    background_method: str | None = option("median", ("median", "model", "median_image", None),
                                           implemented=("median", "model", None))
    background_box_size: tuple[int, int] | None = int_list(
        None, length=2, min=1, none=True, note="used by background_method='model' only")
    mask_science_regions: bool = boolean(False, note="no effect on NIRCam and NIRISS non-SOSS exposures, "
                                                    "as officially; refused where it masks regions")
    apply_flat_field: bool = boolean(False)
    #: official float without a minimum; a clipping level <= 0 would mask every pixel
    n_sigma: float = floating(2.0, above=0)
    fit_histogram: bool = boolean(False)
    single_mask: bool = boolean(True)
    user_mask: object = image(None, ndim=(2, 3),
                              note="officially a FITS path; daskramp also takes an array")
    save_mask: bool = boolean(False)
    save_background: bool = boolean(False)
    save_noise: bool = boolean(False)
    skip: bool = boolean(True)


def rechunk_data(a: xr.DataArray, chunks: dict) -> xr.DataArray:
    """``a`` with its dask data rechunked (``{dim: size}``); coordinates stay as they are.

    ``DataArray.chunk`` would also turn per-integration coordinates (INT_TIMES, segment) into
    dask arrays, which later comparisons would compute.
    """
    if a.chunks is None:
        return a
    return a.copy(data=a.data.rechunk({a.get_axis_num(d): c for d, c in chunks.items() if d in a.dims}))


def nanmedian(a: xr.DataArray, dim: str) -> xr.DataArray:
    """Median over ``dim`` ignoring NaN, lazily on dask (``dim`` gathered in one chunk).

    Unlike ``DataArray.median`` this also works when ``dim`` is the only dim of a dask array.
    """
    import warnings

    def _med(v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
            return np.nanmedian(v, axis=-1)

    return xr.apply_ufunc(_med, rechunk_data(a, {dim: -1}), input_core_dims=[[dim]],
                          dask="parallelized", output_dtypes=[np.float64 if a.dtype.kind != "f" else a.dtype])


def whole_image(params) -> bool:
    """Whether the correction of a difference is a whole image (``fit_method='fft'`` or
    ``background_method='model'``), not one value per line: the step then cleans whole
    frames in one pass (:func:`daskramp.kernels.clean_flicker_noise.clean_ramp`)."""
    return params.fit_method == "fft" or params.background_method == "model"


#: exposure types whose fit parameters ``autoparam`` chooses (from the data and the FLAT)
AUTOPARAM_EXP_TYPES = ("NIS_IMAGE", "NRC_IMAGE")


class OfficialNoEffectWarning(UserWarning):
    """An option the user turned on has no effect on this exposure, as in the official step
    (which logs the same)."""


def _exp_type(attrs: dict) -> str:
    return str(attrs.get("EXP_TYPE", "")).strip().upper()


def science_regions(attrs: dict) -> str | None:
    """What ``mask_science_regions`` masks on this exposure in the official step (None:
    nothing; the official step then only makes the scene mask from the draft rate)."""
    exp_type = _exp_type(attrs)
    if exp_type.startswith("NRS"):
        return "the slits of the NIRSpec WCS and the failed-open MSA shutters"
    if exp_type == "NIS_SOSS":
        return "the SOSS traces of the PASTASOSS reference"
    if exp_type == "MIR_IMAGE":
        return "the non-science regions flagged by the MIRI FLAT's DQ"
    return None


def check_exposure(params, attrs: dict, frame_shape) -> None:
    """Refuse the options that do not apply to the exposure, before the run.

    * ``fit_method='fft'`` where it does not apply: EXP_TYPE outside :data:`FFT_EXP_TYPES`
      (the official step logs a warning and skips itself there) and full frames (their
      NSClean model is not implemented);
    * ``autoparam`` on :data:`AUTOPARAM_EXP_TYPES` (not implemented); elsewhere the official
      step warns that no parameters are set for the exposure type and uses the ones given:
      so does daskramp (:class:`OfficialNoEffectWarning`);
    * ``mask_science_regions`` where it masks something (:func:`science_regions`: not
      implemented); on the other exposures the official step masks nothing more (a warning
      says so);
    ``apply_flat_field`` needs the FLAT reference where one applies (the reference
    selection says so, :meth:`daskramp.steps.StepSpec.required_for`).
    """
    import warnings

    if params.skip:
        return
    exp_type = _exp_type(attrs)
    shown = exp_type or "without EXP_TYPE"
    if params.fit_method == "fft":
        if exp_type not in FFT_EXP_TYPES:
            raise ConfigError(f"clean_flicker_noise: fit_method='fft' applies to EXP_TYPE "
                              f"{', '.join(FFT_EXP_TYPES)}; this exposure is {shown} "
                              f"(the official step would skip itself): use fit_method='median'")
        if tuple(frame_shape) == (2048, 2048):
            raise ConfigError("clean_flicker_noise: fit_method='fft' on full-frame (2048 x 2048) data is not "
                              "implemented; it is implemented for subarrays")
    if params.autoparam:
        if exp_type in AUTOPARAM_EXP_TYPES:
            raise ConfigError(f"clean_flicker_noise: autoparam=True on {exp_type} (where the official step "
                              f"chooses the fit parameters from the data and the FLAT reference) is not "
                              f"implemented: set autoparam=False and the parameters yourself")
        warnings.warn(f"clean_flicker_noise: autoparam has no parameters for EXP_TYPE {shown} (as in the "
                      f"official step): the parameters given are used", OfficialNoEffectWarning, stacklevel=2)
    if params.mask_science_regions:
        regions = science_regions(attrs)
        if regions is not None:
            raise ConfigError(f"clean_flicker_noise: mask_science_regions=True on {exp_type} masks {regions} "
                              f"in the official step; not implemented: set mask_science_regions=False "
                              f"(or give the regions as user_mask)")
        warnings.warn(f"clean_flicker_noise: mask_science_regions masks nothing more on EXP_TYPE {shown} "
                      f"(as in the official step)", OfficialNoEffectWarning, stacklevel=2)


def by_amplifier(params, attrs: dict) -> bool:
    """Whether line values are found per amplifier channel: ``fit_by_channel`` on full-frame
    data only, as the official step applies it."""
    return bool(params.fit_by_channel) and str(attrs.get("SUBARRAY", "FULL")).upper() == "FULL"


def axis_to_correct(attrs: dict) -> int:
    """``|SLOWAXIS|`` (1 → one value per column, NIRISS/NIRSpec; 2 → per row, NIRCam); MIRI → 1."""
    if str(attrs.get("INSTRUME", "")).upper() == "MIRI":
        return 1
    return abs(int(attrs["SLOWAXIS"]))


def read_user_mask(user_mask, ds: xr.Dataset) -> xr.DataArray:
    """A user mask (FITS path, array or DataArray) as a bool ``(y, x)`` DataArray."""
    if isinstance(user_mask, (str, bytes)) or hasattr(user_mask, "__fspath__"):
        from astropy.io import fits

        with fits.open(user_mask) as hdul:
            arr = next(h.data for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2)
            arr = np.asarray(arr)
    elif isinstance(user_mask, xr.DataArray):
        arr = user_mask.data
    else:
        arr = np.asarray(user_mask)
    dims = IMAGE_DIMS if arr.ndim == 2 else CUBE_DIMS
    shape = tuple(ds.sizes[d] for d in dims)
    if arr.ndim not in (2, 3) or tuple(arr.shape) != shape:
        raise ValueError(f"clean_flicker_noise: user_mask shape {arr.shape} does not match the data {shape}")
    coords = {d: ds[d] for d in dims if d in ds.coords and d != INTEGRATION}
    return xr.DataArray(arr.astype(bool), dims=dims, coords=coords, name=MASK_VAR)


def draft_rate(ds: xr.Dataset, *, per_integration: bool = False) -> xr.DataArray:
    """Lazy quick draft rate, DN/s: ``(y, x)`` or ``(integration, y, x)``, needing no reference.

    Per integration, the slope between the first and last usable groups; the exposure rate is
    their median over integrations (robust against a cosmic ray in one integration).  The
    step uses it only when it is not given GAIN and READNOISE; the official draft rate is
    :func:`official_draft_rates`.
    """
    slopes = map_ramp_blocks(
        kernel.draft_slopes,
        ds[DATA],
        ds[GROUPDQ],
        ds[PIXELDQ],
        dims_out=CUBE_DIMS,
        dtype=FLOAT_DTYPE,
        tgroup=float(ds.attrs["TGROUP"]),
        name="draft_slopes",
    )
    if per_integration:
        return slopes
    return slopes.median(INTEGRATION, skipna=True)


def _draft_inputs(ds: xr.Dataset, gain, readnoise):
    """GAIN, READNOISE and average dark current as (y, x) DataArrays on the science grid."""
    g = _ramp_fit.reference_image(gain, ds, "gain")
    rn = _ramp_fit.reference_image(readnoise, ds, "readnoise")
    if _ramp_fit.AVERAGE_DARK_CURRENT in ds:
        dark = ds[_ramp_fit.AVERAGE_DARK_CURRENT]
    else:
        dark = xr.DataArray(np.zeros((ds.sizes[Y], ds.sizes[X]), np.float32), dims=IMAGE_DIMS)
    return g, rn, dark


def official_draft_rates(ds: xr.Dataset, *, gain, readnoise, per_integration: bool = False):
    """The official draft rate (lazy), DN/s: an ``OLS_C`` fit with RampFitStep's code defaults.

    Each uncal segment is fitted on its own, as the official pipeline, which runs the step on
    one segment file at a time, does.

    Parameters
    ----------
    ds : xarray.Dataset
        The ramp as the step receives it (after jump: JUMP_DET groups are left out of the fit).
    gain, readnoise : array-like or xarray.DataArray, (y, x)
        GAIN (e⁻/DN) and READNOISE (DN), cut to the subarray.
    per_integration : bool
        Return the draft ``rateints`` ``(integration, y, x)`` instead (``single_mask=False``).

    Returns
    -------
    list of ((start, stop), xarray.DataArray (y, x) float32), one per segment in order, or an
    xarray.DataArray (integration, y, x) float32 with ``per_integration``.
    """
    g, rn, dark = _draft_inputs(ds, gain, readnoise)
    a = ds.attrs
    kw = dict(nframes=int(a["NFRAMES"]), tframe=float(a["TFRAME"]), tgroup=float(a["TGROUP"]))
    tiles = chunk_by_segment(ds[[DATA, GROUPDQ, PIXELDQ]], stats_scope="segment")
    if per_integration:
        bounds = segment_bounds(ds)
        parts = [tiles.isel({INTEGRATION: slice(lo, hi)}) for lo, hi in bounds]
        cubes = [map_ramp_blocks(kernel.draft_rateints, p[DATA], p[GROUPDQ], p[PIXELDQ], g, rn, dark,
                                 dims_out=CUBE_DIMS, dtype=FLOAT_DTYPE, name="draft_rateints", **kw)
                 for p in parts]
        return cubes[0] if len(cubes) == 1 else xr.concat(cubes, dim=INTEGRATION)
    nterm = len(_fit_kernel.RATE_TERMS)
    rates = []
    for lo, hi in segment_bounds(ds):
        part = tiles.isel({INTEGRATION: slice(lo, hi)})
        terms = map_ramp_blocks(kernel.draft_rate_terms, part[DATA], part[GROUPDQ], part[PIXELDQ], g, rn,
                                dark, dims_out=IMAGE_DIMS, new_axis=("term", nterm), dtype=np.float64,
                                name="draft_rate_terms", **kw)
        sums = [terms.isel(term=k, drop=True) for k in range(nterm)]
        rate = _ramp_fit.finalize_rate(sums, part[PIXELDQ], g, nints=hi - lo)[DATA]
        rates.append(((lo, hi), rate))
    return rates


def official_scene_mask(ds: xr.Dataset, *, gain, readnoise, n_sigma: float,
                        single_mask: bool = True, fit_histogram: bool = False, flat=None) -> xr.DataArray:
    """Scene mask (True = background) from the official draft rate, lazily.

    ``(y, x)`` for a one-segment exposure with ``single_mask``; ``(integration, y, x)``
    otherwise: each integration gets its segment's mask (``single_mask``) or its own
    (from the draft ``rateints``).  With ``flat`` (``apply_flat_field``) the draft rate is
    divided by it first.
    """
    def flat_fielded(rate):
        return rate if flat is None else rate / flat

    if not single_mask:
        rateints = official_draft_rates(ds, gain=gain, readnoise=readnoise, per_integration=True)
        return make_scene_mask(flat_fielded(rateints), n_sigma=n_sigma, fit_histogram=fit_histogram)
    masks = [(hi - lo, make_scene_mask(flat_fielded(rate), n_sigma=n_sigma, fit_histogram=fit_histogram))
             for (lo, hi), rate in official_draft_rates(ds, gain=gain, readnoise=readnoise)]
    if len(masks) == 1:
        return masks[0][1]
    per_int = [m.expand_dims({INTEGRATION: n}) for n, m in masks]
    return xr.concat(per_int, dim=INTEGRATION).rename(MASK_VAR)


def make_scene_mask(rate: xr.DataArray, *, n_sigma: float, fit_histogram: bool = False) -> xr.DataArray:
    """Scene mask (True = background) of a draft rate ``(..., y, x)``, lazily."""
    rate = rechunk_data(rate, {Y: -1, X: -1})
    return xr.apply_ufunc(
        kernel.scene_mask,
        rate,
        input_core_dims=[[Y, X]],
        output_core_dims=[[Y, X]],
        vectorize=rate.ndim > 2,
        dask="parallelized",
        output_dtypes=[bool],
        kwargs={"n_sigma": float(n_sigma), "fit_histogram": bool(fit_histogram)},
    ).rename(MASK_VAR)


def _flat_used(p, flat, ds: xr.Dataset, reason: str | None = None, *, warn: bool = True) -> xr.DataArray | None:
    """The flat the step divides by: ``flat`` as a ``(y, x)`` DataArray on ``ds``'s pixels
    with ``apply_flat_field`` (a warning when there is none, unless not ``warn``), None
    without."""
    import warnings

    if not p.apply_flat_field:
        return None
    if flat is None:
        if not warn:
            return None
        why = reason or f"none given for EXP_TYPE {_exp_type(ds.attrs) or '(none)'}"
        warnings.warn(f"clean_flicker_noise: apply_flat_field without a FLAT ({why}): as in the official "
                      f"step, the fit runs without a flat", OfficialNoEffectWarning, stacklevel=3)
        return None
    if isinstance(flat, xr.DataArray):
        return flat
    arr = np.asarray(flat, dtype=FLOAT_DTYPE)
    if arr.shape != (ds.sizes[Y], ds.sizes[X]):
        raise ValueError(f"clean_flicker_noise: flat of shape {arr.shape} for frames of "
                         f"{(ds.sizes[Y], ds.sizes[X])}")
    return xr.DataArray(arr, dims=IMAGE_DIMS, coords={d: ds[d] for d in IMAGE_DIMS if d in ds.coords})


def _flicker_terms(data, groupdq, mask, flat=None, **kw):
    # kernel.flicker_terms with the flat as a block argument (map_ramp_blocks passes blocks
    # positionally)
    return kernel.flicker_terms(data, groupdq, mask, flat=flat, **kw)


def _apply_clean_flat(data, flat, channel, background, *stripes, **kw):
    return kernel.apply_clean(data, channel, background, *stripes, flat=flat, **kw)


def _clean_ramp(data, groupdq, mask, flat=None, **kw):
    return kernel.clean_ramp(data, groupdq, mask, flat=flat, **kw)


def whole_frames(ds: xr.Dataset, integrations: int = 1, names=(DATA, GROUPDQ)) -> xr.Dataset:
    """``names`` of ``ds`` re-chunked to blocks of ``integrations`` × all groups × whole
    frames (a pipeline sizes them: :func:`daskramp.engine.plan.frame_block_integrations`)."""
    sub = ds[list(names)]
    if not any(v.chunks is not None for v in sub.data_vars.values()):
        return sub
    k = int(max(1, min(ds.sizes[INTEGRATION], integrations)))
    method = rechunk_method()
    return sub.assign({n: v.copy(data=v.data.rechunk((k, -1, -1, -1), method=method))
                       for n, v in sub.data_vars.items()})


def fast_dim(axis: int) -> str:
    """Array dim along which the line values are measured (the fast-read direction)."""
    return Y if axis == 1 else X


def line_dim(axis: int) -> str:
    """Array dim indexing the lines (the slow axis)."""
    return X if axis == 1 else Y


def apply_line_values(ds: xr.Dataset, stripes: xr.DataArray, channel: np.ndarray, axis: int) -> xr.DataArray:
    """``data − cumulative line values`` on the input's own chunks (lazy)."""
    fd = fast_dim(axis)
    chan = xr.DataArray(np.asarray(channel, np.int8), dims=(fd,), coords={fd: ds[fd]})
    pieces = [stripes.isel({CHANNEL: c}, drop=True) for c in range(stripes.sizes[CHANNEL])]
    data = ds[DATA] if ds[DATA].dtype == FLOAT_DTYPE else ds[DATA].astype(FLOAT_DTYPE)
    return map_ramp_blocks(
        kernel.apply_stripes, data, chan, *pieces, dtype=FLOAT_DTYPE, axis_to_correct=axis,
        name="clean_flicker_noise",
    )


def rebuild(ds: xr.Dataset, stripes: xr.DataArray, background: xr.DataArray, channel: np.ndarray,
            axis: int, flat: xr.DataArray | None = None) -> xr.DataArray:
    """The cleaned ramp from line values and background levels, on ``ds``'s chunks (lazy)
    (:func:`daskramp.kernels.clean_flicker_noise.apply_clean`)."""
    fd = fast_dim(axis)
    chan = xr.DataArray(np.asarray(channel, np.int8), dims=(fd,), coords={fd: ds[fd]})
    pieces = [stripes.isel({CHANNEL: c}, drop=True) for c in range(stripes.sizes[CHANNEL])]
    data = ds[DATA] if ds[DATA].dtype == FLOAT_DTYPE else ds[DATA].astype(FLOAT_DTYPE)
    if flat is None:
        return map_ramp_blocks(kernel.apply_clean, data, chan, background, *pieces, dtype=FLOAT_DTYPE,
                               axis_to_correct=axis, name="clean_flicker_noise")
    return map_ramp_blocks(_apply_clean_flat, data, flat, chan, background, *pieces, dtype=FLOAT_DTYPE,
                           axis_to_correct=axis, name="clean_flicker_noise")


def clean_flicker_noise(ds: xr.Dataset, *, skip: bool = False, gain=None, readnoise=None, flat=None,
                        flat_reason: str | None = None, flicker=None, flicker_channel=None,
                        frame_integrations: int = 1, **params) -> xr.Dataset:
    """Remove 1/f noise from every group difference (lazy).

    As for every wrapper, calling it runs the step (``skip=False``); the pipeline default of
    skipping it comes from :class:`Params` (``skip=True``), which the pipeline checks first.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (see :mod:`daskramp.dims`), float32 DN, after jump (JUMP_DET and DO_NOT_USE
        groups are left out of the background).  Uses SLOWAXIS, TGROUP, SUBARRAY, INSTRUME.
    skip : bool
        Return ``ds`` unchanged with status SKIPPED.
    gain, readnoise : array-like or xarray.DataArray (y, x), optional
        GAIN (e⁻/DN) and READNOISE (DN) cut to the subarray, for the official draft rate
        (:func:`official_draft_rates`; the pipeline passes the references of jump/ramp_fit).
        Without them the scene mask comes from the quick :func:`draft_rate`.
    flat : array-like or xarray.DataArray (y, x), optional
        The FLAT reference's image cut to ``ds``'s pixels, its zeros and non-finite values
        replaced (:func:`daskramp.kernels.clean_flicker_noise.prepared_flat`; the reference
        loader does it), used with ``apply_flat_field``: the draft rate and every difference
        are divided by it before the fits, the cleaned differences multiplied by it.  With
        ``apply_flat_field`` and no flat (none applies: NIRSpec spectroscopy, or an N/A
        override) the fit runs without one, as the official step does, with a warning.
    flat_reason : str, optional
        Why there is no FLAT (the reference set's reason), for that warning.
    flicker, flicker_channel : xarray.DataArray, optional
        The line values and background levels of ``ds``'s differences, found beforehand on
        whole frames (:func:`frame_block`): ``(channel, integration, group, line)`` float32
        with the detector coordinates of the lines, and the channel of every fast-axis
        position ``(y,)`` or ``(x,)``; ``ds`` may then be any window of the frame (the fused
        engine's tiles).  ``flicker="status"`` sets the status only (the engine's one-pixel
        status run), as does ``flicker="rewritten"`` (the fused engine's tiles of a
        whole-image correction, whose frame pass has written the cleaned ramp they read).
    frame_integrations : int
        Integrations per task of whole frames that finds the line values of a lazy ``ds``
        (the engine's :func:`daskramp.engine.plan.frame_block_integrations`).
    **params
        Other :class:`Params` fields (official names); unknown names raise TypeError.

    Returns
    -------
    xarray.Dataset
        ``data`` corrected (float32 DN, same chunks as the input); ``attrs["S_CLNFNS"]``
        ``COMPLETE`` or ``SKIPPED``; ``flicker_mask`` ``(y, x)`` with ``save_mask`` and
        ``flicker_stripes`` ``(channel, integration, group, line)`` with ``save_noise``.
    """
    # the parameters as the pipeline validates them (daskramp.params): the official values
    # daskramp does not implement raise NotImplementedParameter
    p = check(Params(skip=skip, **params))
    validate(ds, source="clean_flicker_noise")
    if p.skip:
        return with_status(ds, STATUS, SKIPPED)
    background_method = p.background_method
    a = ds.attrs
    # the fused engine's tiles (statistics given) are windows of an exposure checked, and
    # warned about, before its run: their workers say nothing again
    tile = flicker is not None and not (isinstance(flicker, str) and flicker == "status")
    if flicker is None:
        check_exposure(p, a, (ds.sizes[Y], ds.sizes[X]))
    axis = axis_to_correct(a)
    if ds.sizes[GROUP] < 2:
        return with_status(ds, STATUS, COMPLETE)
    by_channel = by_amplifier(p, a)
    flat = _flat_used(p, flat, ds, flat_reason, warn=not tile)
    if isinstance(flicker, str) and flicker in ("status", "rewritten"):
        # "rewritten": the fused engine's frame pass has cleaned ``ds`` already
        return with_status(ds, STATUS, COMPLETE)
    if flicker is not None:
        return with_status(ds, STATUS, COMPLETE,
                           **{DATA: apply_given(ds, flicker, flicker_channel, axis, flat=flat)})

    if p.user_mask is not None:
        mask = read_user_mask(p.user_mask, ds)
    elif gain is not None and readnoise is not None:
        mask = official_scene_mask(ds, gain=gain, readnoise=readnoise, n_sigma=p.n_sigma,
                                   single_mask=p.single_mask, fit_histogram=p.fit_histogram, flat=flat)
    else:
        rate = draft_rate(ds, per_integration=not p.single_mask)
        if flat is not None:
            rate = rate / flat
        mask = make_scene_mask(rate, n_sigma=p.n_sigma, fit_histogram=p.fit_histogram)

    frames = whole_frames(ds, frame_integrations)
    if whole_image(p):
        return with_status(ds, STATUS, COMPLETE,
                           **_whole_image_updates(ds, frames, mask, p, axis, by_channel, flat))
    fast_size = ds.sizes[fast_dim(axis)]
    channel = kernel.channel_index(fast_size, fit_by_channel=by_channel)
    nchan = int(channel.max()) + 1
    ldim = line_dim(axis)
    terms = map_ramp_blocks(
        _flicker_terms,
        frames[DATA],
        frames[GROUPDQ],
        mask,
        *([] if flat is None else [flat]),
        dims_out=(INTEGRATION, GROUP, ldim),
        new_axis=(CHANNEL, nchan + 1),
        dtype=np.float32,
        axis_to_correct=axis,
        n_sigma=float(p.n_sigma),
        background_method=background_method,
        fit_by_channel=by_channel,
        name="flicker_terms",
    )
    stripes = terms.isel({CHANNEL: slice(0, nchan)})
    background = terms.isel({CHANNEL: nchan, ldim: 0}, drop=True)
    # applied on the whole-frame blocks, not on the input's tiles: the input is then read
    # once, into those blocks, and never waits in memory for the stripes of every frame
    updates = {DATA: rebuild(frames, stripes, background, channel, axis, flat=flat), GROUPDQ: frames[GROUPDQ]}
    if p.save_mask:
        updates[MASK_VAR] = mask
    if p.save_noise:
        updates[STRIPES_VAR] = stripes.assign_attrs(units="DN")
    if p.save_background:
        # the level of each difference, as the official cube holds it (every pixel)
        cube = background.astype(FLOAT_DTYPE).broadcast_like(frames[DATA]).transpose(*frames[DATA].dims)
        updates[BACKGROUND_VAR] = cube.rename(BACKGROUND_VAR).assign_attrs(units="DN")
    return with_status(ds, STATUS, COMPLETE, **updates)


def _whole_image_kwargs(p, attrs, axis: int, by_channel: bool) -> dict:
    """Keywords of :func:`daskramp.kernels.clean_flicker_noise.clean_ramp` for ``p``."""
    box = None if p.background_box_size is None else tuple(int(b) for b in p.background_box_size)
    return dict(fit_method=p.fit_method, background_method=p.background_method, background_box_size=box,
                n_sigma=float(p.n_sigma), axis_to_correct=axis, fit_by_channel=by_channel,
                detector=str(attrs.get("DETECTOR", "")).strip().upper(),
                fc=nsclean.frequency_cutoffs(attrs.get("SUBARRAY", "")))


def _whole_image_updates(ds, frames, mask, p, axis: int, by_channel: bool, flat=None) -> dict:
    # whole-image corrections: each block of whole frames cleaned in one task
    a = ds.attrs
    data = frames[DATA] if frames[DATA].dtype == FLOAT_DTYPE else frames[DATA].astype(FLOAT_DTYPE)
    kw = dict(_whole_image_kwargs(p, a, axis, by_channel), name="clean_flicker_noise")
    args = (data, frames[GROUPDQ], mask, *([] if flat is None else [flat]))
    if p.save_background:
        both = map_ramp_blocks(_clean_ramp, *args, dtype=FLOAT_DTYPE, new_axis=("product", 2),
                               with_background=True, **kw)
        cleaned = both.isel(product=0, drop=True)
        background = both.isel(product=1, drop=True)
    else:
        cleaned = map_ramp_blocks(_clean_ramp, *args, dtype=FLOAT_DTYPE, **kw)
    updates = {DATA: cleaned, GROUPDQ: frames[GROUPDQ]}
    if p.save_background:
        updates[BACKGROUND_VAR] = background.rename(BACKGROUND_VAR).assign_attrs(units="DN")
    if p.save_mask:
        updates[MASK_VAR] = mask
    if p.save_noise:
        # the official noise product: cleaned minus input, every group
        updates[NOISE_VAR] = (cleaned - data).rename(NOISE_VAR).assign_attrs(units="DN")
    return updates


def apply_given(ds: xr.Dataset, flicker: xr.DataArray, channel: xr.DataArray, axis: int,
                flat=None) -> xr.DataArray:
    """``ds``'s data cleaned with line values found on whole frames, on ``ds``'s own layout
    (a numpy window of the frame; :func:`daskramp.kernels.clean_flicker_noise.apply_clean`)."""
    fd, ld = fast_dim(axis), line_dim(axis)
    terms = flicker.sel({ld: ds[ld].values})
    nchan = terms.sizes[CHANNEL] - 1
    chan = np.asarray(channel.sel({fd: ds[fd].values}).values, np.int8)
    background = np.asarray(terms.isel({CHANNEL: nchan, ld: 0}).values) if terms.sizes[ld] else \
        np.zeros(terms.shape[1:3], np.float32)
    stripes = [np.asarray(terms.isel({CHANNEL: c}).values) for c in range(nchan)]
    data = np.asarray(ds[DATA].values, FLOAT_DTYPE)
    out = kernel.apply_clean(data, chan, background, *stripes, axis_to_correct=axis,
                             flat=None if flat is None else np.asarray(getattr(flat, "values", flat)))
    return ds[DATA].copy(data=out)


# ---- the whole-frame pass of the fused engine (daskramp.engine.chain.checkpoint_window):
# each tile of the ramp as the step receives it gives its draft (tile_draft), the drafts
# make the scene masks (scene_masks), blocks of whole frames give the line values
# (frame_block), and every tile is then cleaned with them (apply_given)

#: the per-integration draft slopes a checkpoint holds (``single_mask=False``)
DRAFT_VAR = "flicker_draft_rateints"
#: the statistic that orders the tiles after a whole-image frame pass (a marker of zeros)
REWRITTEN_MARK = "flicker_rewritten"


def checkpoint_variables(params) -> dict:
    """Variables the checkpoint holds for the step besides the ramp: ``{name: (dims, dtype)}``."""
    if params.user_mask is None and not params.single_mask:
        return {DRAFT_VAR: (CUBE_DIMS, np.float32)}
    return {}


def tile_draft(ds: xr.Dataset, wrefs, params) -> tuple[dict, dict]:
    """The draft of one numpy window of the ramp the step receives (every integration of its
    block): ``(saved, returned)``.

    ``saved``: per-integration draft slopes to keep in the checkpoint (``single_mask=False``);
    ``returned``: the rate terms of each uncal segment, ``(segment, term, y, x)`` float64
    (official draft, with GAIN and READNOISE) or the quick draft image of each segment
    ``(segment, y, x)`` float32 (without them).  Nothing with a ``user_mask``.
    """
    if params.user_mask is not None or ds.sizes[GROUP] < 2:
        return {}, {}
    gain, readnoise = ref_array(ref(wrefs, "gain")), ref_array(ref(wrefs, "readnoise"))
    official = gain is not None and readnoise is not None
    data = np.asarray(ds[DATA].values, FLOAT_DTYPE)
    gdq, pdq = ds[GROUPDQ].values, ds[PIXELDQ].values
    a = ds.attrs
    segs = segment_bounds(ds)
    if official:
        g, rn, dark = (np.asarray(v.values) for v in _draft_inputs(ds, np.asarray(gain), np.asarray(readnoise)))
        kw = dict(nframes=int(a["NFRAMES"]), tframe=float(a["TFRAME"]), tgroup=float(a["TGROUP"]))
        if not params.single_mask:
            ints = [kernel.draft_rateints(data[lo:hi], gdq[lo:hi], pdq, g, rn, dark, **kw) for lo, hi in segs]
            return {DRAFT_VAR: np.concatenate(ints)}, {}
        terms = [kernel.draft_rate_terms(data[lo:hi], gdq[lo:hi], pdq, g, rn, dark, **kw) for lo, hi in segs]
        return {}, {"draft_terms": np.stack(terms)}
    slopes = kernel.draft_slopes(data, gdq, pdq, tgroup=float(a["TGROUP"]))
    if not params.single_mask:
        return {DRAFT_VAR: slopes}, {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        images = [np.nanmedian(slopes[lo:hi], axis=0) for lo, hi in segs]
    return {}, {"draft_images": np.stack(images).astype(np.float32)}


def scene_masks(tiles: dict, pixeldq: np.ndarray, skeleton: xr.Dataset, refs, params) -> dict:
    """The frame pass's context of a block: ``{"masks": …, "flat": …}``.

    ``masks``: the scene mask of each uncal segment, ``(segment, y, x)`` bool (True =
    background), from the tiles' drafts assembled into whole images (``tiles``: name → array
    of the frame), divided by the flat with ``apply_flat_field``; a user mask ``(y, x)`` or
    ``(integration, y, x)``; None when each integration has its own (from the checkpoint's
    draft slopes, :func:`frame_block`).  ``flat``: the whole frame's FLAT image with
    ``apply_flat_field`` (None without)."""
    flat = None
    if params.apply_flat_field:
        flat = ref_array(ref(refs, "flat"))
    if params.user_mask is not None:
        return {"masks": user_mask_array(params.user_mask, (skeleton.sizes[Y], skeleton.sizes[X])), "flat": flat}
    if "draft_terms" in tiles:
        terms = tiles["draft_terms"]
        g = np.asarray(ref_array(ref(refs, "gain")))
        coords = {Y: skeleton[Y], X: skeleton[X]}
        pdq = xr.DataArray(pixeldq, dims=IMAGE_DIMS, coords=coords)
        gain = xr.DataArray(g, dims=IMAGE_DIMS, coords=coords)
        rates = []
        for k, (lo, hi) in enumerate(segment_bounds(skeleton)):
            sums = [xr.DataArray(terms[k, t], dims=IMAGE_DIMS, coords=coords) for t in range(terms.shape[1])]
            rates.append(_ramp_fit.finalize_rate(sums, pdq, gain, nints=hi - lo)[DATA].values)
    elif "draft_images" in tiles:
        rates = list(tiles["draft_images"])
    else:
        return {"masks": None, "flat": flat}
    if flat is not None:
        rates = [r / flat for r in rates]
    masks = np.stack([kernel.scene_mask(r, n_sigma=float(params.n_sigma), fit_histogram=params.fit_histogram)
                      for r in rates])
    return {"masks": masks, "flat": flat}


def user_mask_array(user_mask, frame_shape) -> np.ndarray:
    """A user mask (FITS path, array or DataArray) as bool ``(y, x)`` or ``(integration, y, x)``
    (the exposure's integrations), its frame shape checked."""
    if isinstance(user_mask, (str, bytes)) or hasattr(user_mask, "__fspath__"):
        from astropy.io import fits

        with fits.open(user_mask) as hdul:
            arr = next(h.data for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2)
    elif isinstance(user_mask, xr.DataArray):
        arr = user_mask.values
    else:
        arr = user_mask
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3) or tuple(arr.shape[-2:]) != tuple(frame_shape):
        raise ValueError(f"clean_flicker_noise: user_mask shape {arr.shape} does not match the "
                         f"frame {tuple(frame_shape)}")
    return arr.astype(bool)


def frame_block(ramp: dict, context: dict, segment_of: np.ndarray, positions: np.ndarray, attrs: dict,
                params) -> np.ndarray:
    """Line values and background levels of a block of whole frames of the ramp the step
    receives (:func:`daskramp.kernels.clean_flicker_noise.flicker_terms`),
    ``(channel + 1, integration, group, line)`` float32; for a whole-image correction
    (:func:`whole_image`) the cleaned ramp, ``{"data": (integration, group, y, x)}``.

    ``ramp``: ``data``, ``groupdq`` (and the draft slopes with ``single_mask=False``) of the
    block's integrations; ``context``: from :func:`scene_masks`; ``segment_of``: each
    integration's index among the segments of :func:`scene_masks`; ``positions``: each
    integration's position in the exposure (a per-integration user mask).
    """
    axis = axis_to_correct(attrs)
    by_channel = by_amplifier(params, attrs)
    masks, flat = context["masks"], context["flat"]
    if masks is None:
        rates = ramp[DRAFT_VAR] if flat is None else ramp[DRAFT_VAR] / flat
        mask = np.stack([kernel.scene_mask(r, n_sigma=float(params.n_sigma), fit_histogram=params.fit_histogram)
                         for r in rates])
    elif masks.ndim == 2:
        mask = masks
    elif params.user_mask is not None:
        if masks.shape[0] <= int(np.max(positions)):
            raise ValueError(f"clean_flicker_noise: user_mask has {masks.shape[0]} integrations, "
                             f"the exposure more")
        mask = masks[positions]
    elif np.all(segment_of == segment_of[0]):
        mask = masks[segment_of[0]]
    else:
        mask = masks[segment_of]
    if whole_image(params):
        # the cleaned ramp itself (the engine writes it into the checkpoint: FramePass.rewrites)
        cleaned = kernel.clean_ramp(ramp[DATA], ramp[GROUPDQ], mask, flat=flat,
                                    **_whole_image_kwargs(params, attrs, axis, by_channel))
        return {DATA: cleaned}
    return kernel.flicker_terms(ramp[DATA], ramp[GROUPDQ], mask, axis_to_correct=axis,
                                n_sigma=float(params.n_sigma), background_method=params.background_method,
                                fit_by_channel=by_channel, flat=flat)


def frame_block_shape(skeleton: xr.Dataset, params) -> tuple[int, int, int]:
    """``(channel + 1, group, line)``: the shape of :func:`frame_block`'s result but for its
    integration axis."""
    axis = axis_to_correct(skeleton.attrs)
    by_channel = by_amplifier(params, skeleton.attrs)
    nchan = int(kernel.channel_index(skeleton.sizes[fast_dim(axis)], fit_by_channel=by_channel).max()) + 1
    return nchan + 1, skeleton.sizes[GROUP], skeleton.sizes[line_dim(axis)]


def given_flicker(terms, skeleton: xr.Dataset, params) -> dict:
    """The statistics the step's tiles are given (:func:`_stats_kwargs`): ``flicker``
    (``terms``, lazy ``(channel + 1, integration, group, line)``, on the lines' detector
    coordinates) and ``flicker_channel`` (the channel of each fast-axis position); for a
    whole-image correction the frame pass's marker (``flicker_rewritten``)."""
    if whole_image(params):
        return {REWRITTEN_MARK: xr.DataArray(terms, dims=(CHANNEL, INTEGRATION, GROUP, "marker"))}
    axis = axis_to_correct(skeleton.attrs)
    fd, ld = fast_dim(axis), line_dim(axis)
    by_channel = by_amplifier(params, skeleton.attrs)
    chan = kernel.channel_index(skeleton.sizes[fd], fit_by_channel=by_channel)
    return {
        "flicker": xr.DataArray(terms, dims=(CHANNEL, INTEGRATION, GROUP, ld),
                                coords={ld: skeleton[ld].values}),
        "flicker_channel": xr.DataArray(chan, dims=(fd,), coords={fd: skeleton[fd].values}),
    }


def _stats_kwargs(ds, params, given, frame_shape) -> dict:
    # the fused engine gives the line values found on whole frames; the step-by-step
    # layout finds them itself
    if "flicker" not in given:
        return {"flicker": "rewritten"} if REWRITTEN_MARK in given else {}
    return {"flicker": given["flicker"], "flicker_channel": given.get("flicker_channel")}


def _refs_kwargs(refs, params, ds) -> dict:
    # the draft rate's ramp fit reads GAIN and READNOISE (the official RampFitStep asks CRDS
    # for them); without them the step runs on the quick draft rate.  The FLAT (loaded with
    # its bad values replaced) only with apply_flat_field
    kw = {"gain": ref_array(ref(refs, "gain")), "readnoise": ref_array(ref(refs, "readnoise"))}
    if params.apply_flat_field:
        kw["flat"] = ref_array(ref(refs, "flat"))
        if kw["flat"] is None and refs is not None:
            kw["flat_reason"] = refs.reason("flat")
    return kw


def _not_fusable(p) -> str | None:
    if p.skip:
        return None
    if p.save_mask or p.save_noise or p.save_background:
        return "clean_flicker_noise saves its mask, noise or background"
    return None


# scratch: above the factor ``python benchmarks/memory_factors.py --steps clean_flicker_noise``
# measures on whole frames (docs/scaling.md)
SPEC = StepSpec(name="clean_flicker_noise", status=STATUS, params=Params, run=clean_flicker_noise,
                scratch=3.0, reftypes=("gain", "readnoise"), optional_reftypes=("gain", "readnoise"),
                option_reftypes=lambda p: ("flat",) if p.apply_flat_field else (),
                refs_kwargs=_refs_kwargs,
                stats_kwargs=_stats_kwargs,
                # the saved mask and line values are variables of the ramp the tiles do not keep
                not_fusable=_not_fusable, check_exposure=check_exposure,
                # step by step, whole-image corrections clean blocks of whole frames, and
                # ramp_fit's tiles need every integration of a segment
                holds_segment=lambda p: not p.skip and whole_image(p),
                # fused, they write the cleaned ramp into the checkpoint
                frame_pass=FramePass(variables=checkpoint_variables, tile=tile_draft,
                                     combine=scene_masks, block=frame_block,
                                     block_shape=frame_block_shape, given=given_flicker,
                                     rewrites=whole_image))
