"""refpix step wrapper (spec 04): bias drifts removed with the near-IR reference pixels.

The correction of one ``(integration, group)`` frame depends only on the reference pixels of
that frame, so the data are never gathered whole:

1. the candidate reference pixels (the part of the detector's 4-pixel border that lies in the
   subarray) are sliced out of the ramp lazily and concatenated along a ``refpix`` dim —
   a small array ``(integration, group, refpix)``;
2. :func:`daskramp.kernels.refpix.refpix_offsets` turns them into a per-frame description
   ``(integration, group, refpix_term)`` (amplifier × parity offsets and the side signal per
   detector row), chunked like ``integration``;
3. the description is spread along ``y`` and ``x`` (``(integration, group, y)`` and
   ``(integration, group, x)``) and subtracted block by block through
   :func:`daskramp.steps._apply.map_ramp_blocks`, whatever the chunking of the ramp
   (integration chunks of whole frames, or pixel tiles along ``x`` or ``y``).

Only ``data`` (and ``zeroframe``) change; ``pixeldq`` and ``groupdq`` are returned as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..dims import DATA, FLOAT_DTYPE, GROUP, INTEGRATION, PIXELDQ, ZEROFRAME, X, Y, validate
from ..kernels import refpix as kernel
from ..params import boolean, check, floating, integer, option
from ._apply import map_ramp_blocks
from ._spec import StepSpec

STATUS = "S_REFPIX"
COMPLETE = "COMPLETE"
SKIPPED = "SKIPPED"
#: dim of the gathered reference pixels and of the per-frame correction description
REFPIX_DIM = "refpix"
TERM_DIM = "refpix_term"


@dataclass(frozen=True)
class Params:
    """refpix parameters (official names and defaults).

    Only the near-IR "median" algorithm is implemented (``refpix_algorithm='sirs'`` is
    refused by :mod:`daskramp.params`): ``odd_even_rows`` is MIRI-only, and
    ``sigreject``/``gaussmooth``/``halfwidth`` (SIRS) and ``ovr_corr_mitigation_ftr``/
    ``preserve_irs2_refpix``/``irs2_mean_subtraction`` (NIRSpec IRS2, whose data are refused)
    are checked as the official step does and have no effect.
    """

    odd_even_columns: bool = boolean(True)
    use_side_ref_pixels: bool = boolean(True)
    #: official integer without a minimum; the running-median window needs >= 1 row
    side_smoothing_length: int = integer(11, min=1)
    side_gain: float = floating(1.0)
    odd_even_rows: bool = boolean(True, note="MIRI only; no effect in daskramp")
    ovr_corr_mitigation_ftr: float = floating(3.0, note="NIRSpec IRS2 only; no effect")
    preserve_irs2_refpix: bool = boolean(False, note="NIRSpec IRS2 only; no effect")
    irs2_mean_subtraction: bool = boolean(False, note="NIRSpec IRS2 only; no effect")
    refpix_algorithm: str = option("median", ("median", "sirs"), implemented=("median",))
    sigreject: float = floating(4.0, note="SIRS only; no effect")
    gaussmooth: float = floating(1.0, note="SIRS only; no effect")
    halfwidth: int = integer(30, note="SIRS only; no effect")
    #: official float without a minimum; the clipped means need a positive limit
    siglimit: float = floating(3.0, above=0)
    skip: bool = boolean(False)


def _with_status(ds: xr.Dataset, status: str, **updates) -> xr.Dataset:
    out = ds.copy()
    for name, value in updates.items():
        out[name] = value.assign_attrs(ds[name].attrs)
    out.attrs = {**ds.attrs, STATUS: status}
    return out


def _gather(arr: xr.DataArray, layout: kernel.ReferenceLayout) -> xr.DataArray:
    """The layout's boxes sliced out of ``arr`` (``(..., y, x)``) and joined along ``refpix``."""
    import dask

    # reference strips are small: plain task rechunks (stacking reshapes), no distributed shuffle
    with dask.config.set({"array.rechunk.method": "tasks"}):
        pieces = [
            arr.isel({Y: slice(a, b), X: slice(c, d)})
            .drop_vars([Y, X], errors="ignore")
            .stack({REFPIX_DIM: (Y, X)}, create_index=False)
            for a, b, c, d in layout.boxes
        ]
        out = pieces[0] if len(pieces) == 1 else xr.concat(pieces, dim=REFPIX_DIM)
        return out.chunk({REFPIX_DIM: -1}) if out.chunks is not None else out


def _offsets_setup(ny: int, nx: int, geometry: dict, params: Params):
    """``(layout, nterms, kwargs of kernel.refpix_offsets)`` of a ``ny × nx`` subarray."""
    mode = kernel.correction_mode(ny, nx, noutputs=geometry["noutputs"])
    layout = kernel.reference_layout(
        ny, nx, substrt1=geometry["x0"] + 1, substrt2=geometry["y0"] + 1, subarray=geometry["subarray"]
    )
    nterms = kernel.offsets_size(mode, use_side_ref_pixels=params.use_side_ref_pixels)
    kwargs = {
        "ref_y": layout.y,
        "ref_x": layout.x,
        "fastaxis": geometry["fastaxis"],
        "slowaxis": geometry["slowaxis"],
        "mode": mode,
        "odd_even_columns": params.odd_even_columns,
        "use_side_ref_pixels": params.use_side_ref_pixels,
        "side_smoothing_length": params.side_smoothing_length,
        "side_gain": params.side_gain,
        "siglimit": params.siglimit,
    }
    return layout, nterms, kwargs


def _offsets(
    ramp: xr.DataArray, pixeldq: xr.DataArray, *, geometry: dict, params: Params
) -> xr.DataArray | None:
    """Lazy per-frame offsets ``(integration, group, refpix_term)`` (None: no reference pixel)."""
    layout, nterms, kwargs = _offsets_setup(ramp.sizes[Y], ramp.sizes[X], geometry, params)
    if layout.size == 0:
        return None
    ref = _gather(ramp, layout)
    ref_dq = _gather(pixeldq, layout) | xr.DataArray(layout.extra_dq, dims=REFPIX_DIM)
    return xr.apply_ufunc(
        kernel.refpix_offsets,
        ref,
        ref_dq,
        input_core_dims=[[REFPIX_DIM], [REFPIX_DIM]],
        output_core_dims=[[TERM_DIM]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {TERM_DIM: nterms}},
        kwargs=kwargs,
    )


def reference_boxes(ds: xr.Dataset, **params) -> tuple[tuple[int, int, int, int], ...]:
    """The rectangles ``(y0, y1, x0, x1)`` of ``ds``'s frame (subarray-relative) that hold
    its candidate reference pixels, in gathering order; empty when refpix has none to use
    (skipped, no reference pixel, or a subarray that does not fit on the detector)."""
    p = Params(**params)
    geometry = _geometry(ds)
    if geometry is None or p.skip:
        return ()
    layout, _, _ = _offsets_setup(ds.sizes[Y], ds.sizes[X], geometry, p)
    return layout.boxes if layout.size else ()


def offsets_size(ds: xr.Dataset, **params) -> int:
    """Length of the ``refpix_term`` dim of :func:`refpix_offsets` for ``ds``'s frame."""
    p = Params(**params)
    _, nterms, _ = _offsets_setup(ds.sizes[Y], ds.sizes[X], _geometry(ds), p)
    return nterms


def offsets_from_boxes(data_boxes, dq_boxes, ds: xr.Dataset, **params) -> np.ndarray:
    """:func:`refpix_offsets` of a block of frames from its reference boxes, cut out already.

    The numpy form, for a task that reads the boxes itself.  ``data_boxes``: one array
    ``(integration, group, h, w)`` (DN) per rectangle of :func:`reference_boxes`, in its
    order (a zero frame as ``(integration, 1, h, w)``); ``dq_boxes``: their ``pixeldq``
    ``(h, w)``; ``ds`` gives the frame size and placement (attrs and ``y``/``x`` coordinates:
    a data-less skeleton will do).  Returns ``(integration, group, refpix_term)`` float64 DN.
    """
    p = Params(**params)
    layout, _, kwargs = _offsets_setup(ds.sizes[Y], ds.sizes[X], _geometry(ds), p)
    lead = np.shape(data_boxes[0])[:-2]
    ref = np.concatenate([np.reshape(b, (*lead, -1)) for b in data_boxes], axis=-1)
    ref_dq = np.concatenate([np.ravel(b) for b in dq_boxes]) | layout.extra_dq
    return kernel.refpix_offsets(ref, ref_dq, **kwargs)


def _correct(
    ramp: xr.DataArray, pixeldq: xr.DataArray, *, geometry: dict, params: Params,
    offsets: xr.DataArray | None = None, frame_shape: tuple[int, int] | None = None,
    inplace: bool = True,
) -> xr.DataArray:
    """Lazily corrected float32 copy of a ``(integration, group, y, x)`` ramp (written over
    ``ramp`` itself in an owned window unless ``inplace`` is False:
    :func:`daskramp.steps._apply.owned_window`)."""
    ny, nx = ramp.sizes[Y], ramp.sizes[X]
    y0, x0 = geometry["y0"], geometry["x0"]
    fast, slow = geometry["fastaxis"], geometry["slowaxis"]
    mode = kernel.correction_mode(*(frame_shape or (ny, nx)), noutputs=geometry["noutputs"])
    if offsets is None:
        offsets = _offsets(ramp, pixeldq, geometry=geometry, params=params)
    if offsets is None:
        # no reference pixel in the subarray: nothing to subtract
        return ramp.astype(FLOAT_DTYPE) if ramp.dtype != FLOAT_DTYPE else ramp
    profiles = {}
    for dim, start, size in ((Y, y0, ny), (X, x0, nx)):
        profiles[dim] = xr.apply_ufunc(
            kernel.offsets_along,
            offsets,
            input_core_dims=[[TERM_DIM]],
            output_core_dims=[[dim]],
            dask="parallelized",
            output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {dim: size}},
            kwargs={
                "coord": np.arange(start, start + size),
                "dim": dim,
                "fastaxis": fast,
                "slowaxis": slow,
            },
        ).transpose(INTEGRATION, GROUP, dim)
    float64 = kernel.working_dtype(mode, use_side_ref_pixels=params.use_side_ref_pixels) == np.float64
    return map_ramp_blocks(
        kernel.apply_refpix,
        ramp,
        profiles[Y],
        profiles[X],
        dtype=FLOAT_DTYPE,
        fastaxis=fast,
        float64=float64,
        inplace=inplace,
    )


def _geometry(ds: xr.Dataset) -> dict | None:
    """Detector placement of the subarray (None when it does not fit on the detector)."""
    a = ds.attrs
    ny, nx = ds.sizes[Y], ds.sizes[X]
    # the detector position of the subarray: coordinates if present, else SUBSTRT1/2
    y0 = int(ds[Y].values[0]) if Y in ds.coords and ny else int(a["SUBSTRT2"]) - 1
    x0 = int(ds[X].values[0]) if X in ds.coords and nx else int(a["SUBSTRT1"]) - 1
    if not kernel.subarray_fits(ny, nx, substrt1=x0 + 1, substrt2=y0 + 1):
        return None
    return {
        "y0": y0,
        "x0": x0,
        "fastaxis": int(a["FASTAXIS"]),
        "slowaxis": int(a["SLOWAXIS"]),
        "noutputs": int(a["NOUTPUTS"]),
        "subarray": str(a.get("SUBARRAY", "")),
    }


def refpix_offsets(ds: xr.Dataset, *, zeroframe: bool = False, **params) -> xr.DataArray | None:
    """The per-frame reference-pixel offsets of ``ds`` as a small lazy array.

    Dims ``(integration, group, refpix_term)`` float64 DN: the amplifier × column-parity
    offsets and, with side reference pixels, the per-detector-row side signal (see
    :func:`daskramp.kernels.refpix.refpix_offsets`).  None when the subarray has no reference
    pixels or does not fit on the detector.  Computing it reads every frame once but keeps
    only the reference pixels; :func:`refpix` accepts the computed result (``offsets=``) so a
    pipeline can evaluate these frame statistics in a first pass and then stream the
    correction tile by tile without holding whole frames.
    """
    p = Params(**params)
    geometry = _geometry(ds)
    if geometry is None or p.skip:
        return None
    if zeroframe:
        if ZEROFRAME not in ds:
            return None
        zf = ds[ZEROFRAME].expand_dims({GROUP: 1}, axis=1)
        return _offsets(zf, ds[PIXELDQ], geometry=geometry, params=p)
    return _offsets(ds[DATA], ds[PIXELDQ], geometry=geometry, params=p)


def refpix(ds: xr.Dataset, *, offsets: xr.DataArray | None = None,
           frame_shape: tuple[int, int] | None = None,
           zeroframe_offsets: xr.DataArray | None = None, **params) -> xr.Dataset:
    """Reference-pixel correction of a near-IR exposure (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (see :mod:`daskramp.dims`), ``data`` in DN; whole frames or pixel tiles.
        Geometry from the attrs SUBSTRT1/2 (and the ``y``/``x`` coordinates), FASTAXIS,
        SLOWAXIS, NOUTPUTS, SUBARRAY, INSTRUME.
    offsets : xarray.DataArray, optional
        Precomputed :func:`refpix_offsets` of this exposure (a pipeline's frame-statistics
        pass); by default they are derived lazily from ``ds`` itself.
    zeroframe_offsets : xarray.DataArray, optional
        The same for the zero frame (``refpix_offsets(ds, zeroframe=True)``).
    frame_shape : (ny, nx), optional
        Size of the subarray ``ds`` is a window of (:func:`daskramp.dims.window`); it decides
        between per-amplifier and single-output correction.  Default: ``ds``'s own size.
    **params
        Fields of :class:`Params` (official names); unknown names raise TypeError.

    Returns
    -------
    xarray.Dataset
        ``data`` (and ``zeroframe`` when present) corrected, float32 DN; ``pixeldq``/``groupdq``
        unchanged; ``attrs["S_REFPIX"]`` = ``COMPLETE``, or ``SKIPPED`` when asked to, when the
        subarray does not fit inside the detector, and for MIRI subarrays.

    Raises
    ------
    daskramp.config.ConfigError
        A parameter that is not allowed; ``refpix_algorithm="sirs"`` raises
        :class:`daskramp.params.NotImplementedParameter` (also a NotImplementedError).
    NotImplementedError
        NIRSpec IRS2 (an image axis longer than 2048) and MIRI full frames.
    """
    # validated as the pipeline does (daskramp.params): refpix_algorithm='sirs' raises
    # NotImplementedParameter
    p = check(Params(**params))
    validate(ds, source="refpix")
    if p.skip:
        return _with_status(ds, SKIPPED)
    a = ds.attrs
    ny, nx = ds.sizes[Y], ds.sizes[X]
    if max(ny, nx) > kernel.FULL:
        raise NotImplementedError(f"refpix: {ny}×{nx} image looks like NIRSpec IRS2, which is not implemented")
    if str(a["INSTRUME"]).upper() == "MIRI":
        if (ny, nx) != (1024, 1032):
            return _with_status(ds, SKIPPED)
        raise NotImplementedError("refpix: MIRI reference-pixel correction is not implemented")

    geometry = _geometry(ds)
    if geometry is None:
        return _with_status(ds, SKIPPED)
    updates = {DATA: _correct(ds[DATA], ds[PIXELDQ], geometry=geometry, params=p, offsets=offsets,
                              frame_shape=frame_shape)}
    if ZEROFRAME in ds and a.get("ZEROFRAM", True):
        zf = ds[ZEROFRAME]
        corrected = _correct(
            zf.expand_dims({GROUP: 1}, axis=1), ds[PIXELDQ], geometry=geometry, params=p,
            offsets=zeroframe_offsets, frame_shape=frame_shape, inplace=False,
        ).isel({GROUP: 0}, drop=True)
        # a zero frame of 0 means "not recorded" and stays 0
        updates[ZEROFRAME] = corrected.where(zf != 0, np.float32(0)).astype(FLOAT_DTYPE)
    return _with_status(ds, COMPLETE, **updates)


def _stats_kwargs(ds: xr.Dataset, params, given, frame_shape) -> dict:
    """The offsets of the data and the zero frame, as given (None: :func:`refpix` finds
    them), and ``frame_shape``."""
    return {"frame_shape": frame_shape, "offsets": given.get("refpix_offsets"),
            "zeroframe_offsets": given.get("refpix_zf_offsets")}


SPEC = StepSpec(name="refpix", status=STATUS, params=Params, run=refpix, scratch=1.03,
                stats_kwargs=_stats_kwargs)
