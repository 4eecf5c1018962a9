"""ramp_fit step: ramps → ``rate`` (y, x) and ``rateints`` (integration, y, x) (spec 08).

The kernel (:mod:`daskramp.kernels.ramp_fit`) runs on blocks holding every integration of one
segment (``stats_scope="segment"``, what the official pipeline does since it fits each uncal
segment separately) or of the whole exposure (``stats_scope="exposure"``), on any spatial
tile.  It returns per-integration fields; ``rateints`` is read from them and the exposure
``rate`` is a lazy sum of per-integration partials over ``integration`` (chunk → combine)
followed by :func:`daskramp.kernels.ramp_fit.combine_rate` (finalize).  With one segment the
rate equals the official one; with several, each segment's integrations carry their own
median rate R̃ and the rate combines them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
from dask.base import tokenize

from .. import dq as _dq
from ..dims import (
    CUBE_DIMS,
    DATA,
    GROUP,
    GROUPDQ,
    IMAGE_DIMS,
    INTEGRATION,
    PIXELDQ,
    ZEROFRAME,
    X,
    Y,
    segment_bounds,
    validate,
)
from ..kernels import ramp_fit as _k
from ..kernels import ramp_fit_likely as _kl
from ..params import boolean, check, cores, integer, option, string
from ..taskgraph import Tasks
from ._apply import chunk_by_segment, map_ramp_blocks
from ._spec import StepSpec, ref_array

STATUS = "S_RAMP"
AVERAGE_DARK_CURRENT = "average_dark_current"
#: rateints / rate variables, their kernel field and dtype
_OUTPUTS = (
    (DATA, "slope", np.float32, "DN/s"),
    ("err", "err", np.float32, "DN/s"),
    ("var_poisson", "var_poisson", np.float32, "(DN/s)^2"),
    ("var_rnoise", "var_rnoise", np.float32, "(DN/s)^2"),
    ("dq", "dq", np.uint32, None),
)


@dataclass(frozen=True)
class Params:
    """RampFitStep parameters (official names and defaults) plus daskramp options.

    ``maximum_cores``, ``opt_name`` and ``int_name`` are accepted for compatibility and
    ignored (dask provides the parallelism; file names belong to the io layer; the official
    step does not use ``int_name`` either).  ``algorithm='LIKELY'`` is the likelihood fit
    (:mod:`daskramp.kernels.ramp_fit_likely`; with fewer than 4 groups OLS_C, as the official
    step falls back); ``save_opt=True`` is refused
    (:class:`~daskramp.params.NotImplementedParameter`).  ``save_intercepts`` adds an
    ``intercept`` variable (DN at the time of group 0, from the first segment's fit) to
    ``rateints``.
    """

    algorithm: str = option("OLS_C", ("OLS_C", "LIKELY"))
    suppress_one_group: bool = boolean(True)
    #: zero-indexed (official integer without a minimum; daskramp refuses negative ones)
    firstgroup: int | None = integer(None, min=0, none=True)
    lastgroup: int | None = integer(None, min=0, none=True)
    save_opt: bool = boolean(False, implemented=(False,))
    opt_name: str = string("", note="no effect (save_opt is not implemented)")
    int_name: str = string("", note="no effect")
    maximum_cores: str = cores("1")
    save_intercepts: bool = boolean(False, official=False)
    skip: bool = boolean(False)


def reference_image(arr, ds: xr.Dataset, name: str) -> xr.DataArray:
    """A (y, x) reference image as a DataArray on the science grid."""
    if isinstance(arr, xr.DataArray):
        if arr.dims != IMAGE_DIMS:
            raise ValueError(f"{name} has dims {arr.dims}, expected {IMAGE_DIMS}")
        da_ = arr
    else:
        da_ = xr.DataArray(arr, dims=IMAGE_DIMS)
    shape = (ds.sizes[Y], ds.sizes[X])
    if da_.shape != shape:
        raise ValueError(f"{name} has shape {da_.shape}, the science data are {shape}")
    return da_.drop_vars([c for c in da_.coords], errors="ignore").assign_coords(
        {d: ds[d] for d in IMAGE_DIMS if d in ds.coords}
    )


def _uses_zeroframe(ds: xr.Dataset) -> bool:
    if ZEROFRAME not in ds:
        return False
    flag = ds.attrs.get("ZEROFRAM", True)
    if isinstance(flag, str):
        return flag.strip().upper() in ("T", "TRUE")
    return bool(flag)


def nothing_to_fit(ds: xr.Dataset) -> xr.DataArray:
    """Lazy 0-d boolean: group 0 of every pixel of every integration is SATURATED.

    The official step then returns no rate and no rateints (and gain_scale is skipped).
    Deciding it needs the whole exposure, so :func:`ramp_fit` does not: the pipeline may
    compute this small reduction and drop the products (every pixel would be NaN, dq 3).
    """
    first = ds[GROUPDQ].isel({GROUP: 0})
    return ((first & np.uint8(_dq.SATURATED)) != 0).all()


def ramp_fields(
    ds: xr.Dataset,
    *,
    gain,
    readnoise,
    stats_scope: str = "segment",
    suppress_one_group: bool = True,
    firstgroup: int | None = None,
    lastgroup: int | None = None,
    algorithm: str = "OLS_C",
) -> xr.DataArray:
    """Per-integration kernel fields, dims ``(field, integration, y, x)``, float64 (lazy).

    ``field`` is labelled with :data:`daskramp.kernels.ramp_fit.FIELDS`.  ``algorithm``
    ``"LIKELY"`` fits with :func:`daskramp.kernels.ramp_fit_likely.ramp_fit` (each
    integration on its own: ``stats_scope`` changes nothing) when there are at least 4 groups.
    """
    validate(ds, source="ramp_fit input")
    a = ds.attrs
    g = reference_image(gain, ds, "gain")
    rn = reference_image(readnoise, ds, "readnoise")
    if AVERAGE_DARK_CURRENT in ds:
        dark = ds[AVERAGE_DARK_CURRENT]
        if dark.dims != IMAGE_DIMS:
            raise ValueError(f"{AVERAGE_DARK_CURRENT} has dims {dark.dims}, expected {IMAGE_DIMS}")
    elif hasattr(ds[DATA].data, "dask"):
        # made by the tasks, not an image of zeros shipped inside the graph
        import dask.array as da

        dark = xr.DataArray(da.zeros((ds.sizes[Y], ds.sizes[X]), dtype=np.float32, chunks=-1), dims=IMAGE_DIMS)
    else:
        dark = xr.DataArray(np.zeros((ds.sizes[Y], ds.sizes[X]), np.float32), dims=IMAGE_DIMS)
    kwargs = dict(
        nframes=int(a["NFRAMES"]),
        tframe=float(a["TFRAME"]),
        tgroup=float(a["TGROUP"]),
        suppress_one_group=bool(suppress_one_group),
        firstgroup=firstgroup,
        lastgroup=lastgroup,
    )
    kernel = _k.ramp_fit
    if uses_likely(algorithm, ds.sizes[GROUP]):
        kernel = _kl.ramp_fit
        kwargs = dict(nframes=kwargs["nframes"], tframe=kwargs["tframe"], groupgap=_groupgap(a),
                      firstgroup=firstgroup, lastgroup=lastgroup)

    def apply(part: xr.Dataset) -> xr.DataArray:
        args = [part[DATA], part[GROUPDQ], part[PIXELDQ], g, rn, dark]
        if _uses_zeroframe(part):
            if part[ZEROFRAME].dims != CUBE_DIMS:
                raise ValueError(f"zeroframe has dims {part[ZEROFRAME].dims}, expected {CUBE_DIMS}")
            args.append(part[ZEROFRAME])
        return map_ramp_blocks(
            kernel,
            *args,
            dims_out=CUBE_DIMS,
            new_axis=("field", _k.NFIELDS),
            dtype="float64",
            name="ramp_fit",
            **kwargs,
        )

    chunked = chunk_by_segment(ds, stats_scope=stats_scope)
    lazy = chunked[DATA].chunks is not None
    if lazy or stats_scope == "exposure":
        out = apply(chunked)
    else:
        # numpy-backed input runs the kernel directly: one call per segment keeps R̃ per segment
        parts = [apply(ds.isel({INTEGRATION: slice(lo, hi)})) for lo, hi in segment_bounds(ds)]
        out = parts[0] if len(parts) == 1 else xr.concat(parts, dim=INTEGRATION)
    return out.assign_coords(field=list(_k.FIELDS))


def uses_likely(algorithm: str, ngroups: int) -> bool:
    """Whether the LIKELY fit runs: chosen, and enough groups (else the official step fits
    with OLS_C)."""
    return str(algorithm).upper() == "LIKELY" and ngroups >= _kl.LIKELY_MIN_NGROUPS


def _groupgap(attrs) -> int:
    return int(attrs.get("GROUPGAP", 0) or 0)


def _finalize(*arrays, nints):
    *partials, pixeldq, gain = arrays
    res = _k.combine_rate(np.stack(partials), pixeldq, gain, nints=nints)
    # apply_ufunc wants the new core dim last
    return np.moveaxis(res, 0, -1)


def block_products(fields: np.ndarray, *, save_intercepts: bool = False) -> dict[str, np.ndarray]:
    """The products of one block of per-integration fields ``(field, integration, y, x)``
    (numpy), so a task can keep these instead of the fields (88 bytes per pixel and
    integration → 20): the rateints variables (``data``, ``err``, ``var_poisson``,
    ``var_rnoise`` float32, ``dq`` uint32, ``intercept`` with ``save_intercepts``) and
    ``rate_terms`` ``(1, term, y, x)`` float64, this block's sums over integrations of the
    :data:`RATE_TERMS` (what :func:`combine_rate` sums per chunk).
    """
    return _k.products_of_fields(fields, save_intercepts=save_intercepts)


def ramp_products(ds: xr.Dataset, *, gain, readnoise, stats_scope: str = "segment",
                  suppress_one_group: bool = True, firstgroup: int | None = None,
                  lastgroup: int | None = None, save_intercepts: bool = False,
                  algorithm: str = "OLS_C") -> dict[str, np.ndarray]:
    """:func:`block_products` of an in-memory (numpy) exposure, fitted without keeping its
    fields (:func:`daskramp.kernels.ramp_fit.fit_products`): what one fused tile task needs.

    With ``stats_scope="segment"`` each segment of ``ds`` is fitted on its own (its own R̃);
    the cubes are joined along ``integration`` and the rate terms summed.
    """
    validate(ds, source="ramp_fit input")
    lazy = [k for k, v in ds.data_vars.items() if hasattr(v.data, "dask")]
    if lazy:
        raise TypeError(f"ramp_products fits in-memory windows; {lazy} are dask-backed "
                        "(use ramp_fit or ramp_fields for lazy exposures)")
    a = ds.attrs
    kwargs = dict(nframes=int(a["NFRAMES"]), tframe=float(a["TFRAME"]), tgroup=float(a["TGROUP"]),
                  suppress_one_group=bool(suppress_one_group), firstgroup=firstgroup,
                  lastgroup=lastgroup, save_intercepts=save_intercepts)
    fit = _k.fit_products
    if uses_likely(algorithm, ds.sizes[GROUP]):
        fit = _kl.fit_products
        kwargs = dict(nframes=kwargs["nframes"], tframe=kwargs["tframe"], groupgap=_groupgap(a),
                      firstgroup=firstgroup, lastgroup=lastgroup, save_intercepts=save_intercepts)
    g = np.asarray(reference_image(gain, ds, "gain").values)
    rn = np.asarray(reference_image(readnoise, ds, "readnoise").values)
    if AVERAGE_DARK_CURRENT in ds:
        dark = np.asarray(ds[AVERAGE_DARK_CURRENT].values)
    else:
        dark = np.zeros((ds.sizes[Y], ds.sizes[X]), np.float32)
    bounds = (segment_bounds(ds) if stats_scope == "segment" else [(0, ds.sizes[INTEGRATION])])
    parts = []
    for lo, hi in bounds:
        part = ds.isel({INTEGRATION: slice(lo, hi)}) if len(bounds) > 1 else ds
        zf = np.asarray(part[ZEROFRAME].values) if _uses_zeroframe(part) else None
        parts.append(fit(np.asarray(part[DATA].values), np.asarray(part[GROUPDQ].values),
                                     np.asarray(part[PIXELDQ].values), g, rn, dark, zf, **kwargs))
    if len(parts) == 1:
        return parts[0]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "rate_terms"}
    out["rate_terms"] = sum(p["rate_terms"] for p in parts)
    return out


def combine_rate(fields: xr.DataArray, pixeldq: xr.DataArray, gain: xr.DataArray) -> xr.Dataset:
    """Exposure ``rate`` (y, x) from per-integration fields of any number of blocks (lazy).

    Chunk → combine → finalize: the kernel's :data:`RATE_TERMS` summed over ``integration``
    (a tree reduction when chunked), then finalized pixel by pixel.
    """
    sums = []
    for _, field, mask in _k.RATE_TERMS:
        v = fields.sel(field=field, drop=True)
        if mask is not None:
            v = (v.astype(np.uint32) & np.uint32(mask)) != 0
        sums.append(v.sum(INTEGRATION, skipna=False, dtype=np.float64))
    return finalize_rate(sums, pixeldq, gain, nints=fields.sizes[INTEGRATION])


def _finalize_located(*blocks, nints, nsums, pixeldq=None, gain=None, block_info=None):
    """:func:`_finalize` of one (y, x) block: ``blocks`` are the sums' blocks, then those of
    the images given lazily; an image given whole (``pixeldq``/``gain``) is cut here."""
    loc = block_info[0]["array-location"]
    cut = (slice(*loc[0]), slice(*loc[1]))
    rest = list(blocks[nsums:])
    pdq = rest.pop(0) if pixeldq is None else pixeldq[cut]
    g = rest.pop(0) if gain is None else gain[cut]
    return _finalize(*blocks[:nsums], pdq, g, nints=nints)


def _finalize_lazy(sums, pixeldq: xr.DataArray, gain: xr.DataArray, *, nints: int) -> xr.DataArray:
    """:func:`_finalize` over the sums' (y, x) chunks.

    An image held in memory travels as **one** key that each task cuts: chunked into tasks
    of their own, its pieces would be root tasks, which the distributed scheduler queues
    behind the tile tasks; every rate block would then wait for the last tile.
    """
    import dask.array as da

    first = sums[0].transpose(*IMAGE_DIMS)
    arrays = [s.transpose(*IMAGE_DIMS).data for s in sums]
    whole = {}
    for name, img in (("pixeldq", pixeldq), ("gain", gain)):
        img = img.transpose(*IMAGE_DIMS)
        if img.chunks is not None:
            # a lazy image (pixeldq, or the GAIN the workers read: RefSet.lazy) is cut by
            # tasks that wait for it, not root tasks
            arrays.append(img.data.rechunk(arrays[0].chunks))
        else:
            whole[name] = dask.delayed(np.asarray(img.values), pure=True)
    data = da.map_blocks(_finalize_located, *arrays, nints=nints, nsums=len(sums), **whole,
                         new_axis=2, chunks=(*arrays[0].chunks, (len(_k.RATE_FIELDS),)),
                         dtype=np.float64, meta=np.empty((0, 0, 0), np.float64))
    coords = {k: v for k, v in first.coords.items() if set(v.dims) <= set(IMAGE_DIMS)}
    return xr.DataArray(data, dims=(*IMAGE_DIMS, "rate_field"), coords=coords)


def finalize_rate(sums, pixeldq: xr.DataArray, gain: xr.DataArray, *, nints: int) -> xr.Dataset:
    """Exposure ``rate`` (y, x) from the :data:`RATE_TERMS` summed over all ``nints``
    integrations (one (y, x) DataArray per term, in order)."""
    if sums[0].chunks is not None:
        res = _finalize_lazy(sums, pixeldq, gain, nints=nints)
    else:
        res = xr.apply_ufunc(
            _finalize, *sums, pixeldq, gain, output_core_dims=[["rate_field"]],
            kwargs={"nints": nints}, dask="parallelized", output_dtypes=[np.float64],
            dask_gufunc_kwargs={"output_sizes": {"rate_field": len(_k.RATE_FIELDS)}})
    return _rate_dataset(res)


def ramp_fit(
    ds: xr.Dataset, *, gain, readnoise, stats_scope: str = "segment", **params
) -> tuple[xr.Dataset, xr.Dataset] | tuple[None, None]:
    """Fit slopes with optimal weighting (official ``OLS_C``) or the likelihood fit
    (``algorithm="LIKELY"``); return ``(rate, rateints)``.

    Parameters
    ----------
    ds : xarray.Dataset
        Calibrated exposure (dims integration, group, y, x; data float32 DN), optionally with
        ``average_dark_current`` (y, x) and ``zeroframe`` (integration, y, x).
    gain : array-like or xarray.DataArray, (y, x)
        Gain (e⁻/DN) cut to the subarray.  A ``GAINFACT`` in its ``attrs`` is copied to the
        outputs' attrs (the official step copies it from the GAIN file header).
    readnoise : array-like or xarray.DataArray, (y, x)
        READNOISE (CDS read noise, DN) cut to the subarray.
    stats_scope : {"segment", "exposure"}
        Integrations pooled for the median rate R̃.
    **params
        :class:`Params` fields.

    Returns
    -------
    rate : xarray.Dataset, dims (y, x)
        ``data`` (float32, DN/s), ``dq`` (uint32), ``err``, ``var_poisson``, ``var_rnoise``
        (float32).  ``err = sqrt(var_poisson + var_rnoise)``.
    rateints : xarray.Dataset, dims (integration, y, x)
        Same variables per integration (``err`` from the per-segment total variances), the
        integration coordinates (segment, INT_TIMES) of ``ds``; ``intercept`` (float32, DN)
        when ``save_intercepts``.
    ``(None, None)`` when ``skip`` is set (no rate products; the ramp is unchanged).
    """
    # validated as the pipeline does (daskramp.params): algorithm='LIKELY' and save_opt=True
    # raise NotImplementedParameter
    p = check(Params(**params))
    if p.skip:
        return None, None
    fields = ramp_fields(
        ds,
        gain=gain,
        readnoise=readnoise,
        stats_scope=stats_scope,
        suppress_one_group=p.suppress_one_group,
        firstgroup=p.firstgroup,
        lastgroup=p.lastgroup,
        algorithm=p.algorithm,
    )
    return products(fields, ds, gain=gain, save_intercepts=p.save_intercepts, algorithm=p.algorithm)


def _add_squeezed(acc, block):
    return _k.add_block_terms(acc, block)[0]


def fold_block_terms(terms):
    """Lazy sum of rate terms over their blocks, one after another (NaN as 0, float64).

    ``terms``: dask array (block, term, y, x); returns (term, y, x).  One task per block and
    tile, each adding its block to the tile's sum so far
    (:func:`daskramp.kernels.ramp_fit.add_block_terms`): a tile holds one running sum
    (1.3 MB per SOSS tile of 64 columns), however many segments the exposure has, where a
    tree of pairwise sums keeps a partial sum per level; and the exposure's rate is the
    same as when its segments are submitted one after another (:mod:`daskramp.engine.submit`,
    which continues the same sum from files).
    """
    if any(c != 1 for c in terms.chunks[0]):
        terms = terms.rechunk({0: 1})
    name = f"rate-terms-sum-{tokenize(terms)}"
    nb = terms.numblocks
    tasks = Tasks(terms)
    for idx in np.ndindex(*nb[1:]):
        prev = None
        for k in range(nb[0]):
            if k == nb[0] - 1:
                tasks.call((name, *idx), _add_squeezed, prev, (terms.name, k, *idx))
            else:
                prev = tasks.call((f"{name}-part", k, *idx), _k.add_block_terms, prev, (terms.name, k, *idx))
    return tasks.array(name, terms.chunks[1:], np.float64)


def _sum_blocks(terms: xr.DataArray) -> xr.DataArray:
    """The rate terms (block, term, y, x) summed over their blocks in order (NaN as 0), float64
    (:func:`fold_block_terms`)."""
    axis = terms.get_axis_num("block")
    coords = {k: v for k, v in terms.coords.items() if "block" not in v.dims}
    dims_out = [d for d in terms.dims if d != "block"]
    if not dask.is_dask_collection(terms.data):
        data = np.moveaxis(np.asarray(terms.data), axis, 0)
        acc = None
        for k in range(data.shape[0]):
            acc = _k.add_block_terms(acc, data[k:k + 1])
        data = acc[0]
    else:
        import dask.array as da

        data = fold_block_terms(da.moveaxis(terms.data, axis, 0) if axis else terms.data)
    return xr.DataArray(data, dims=dims_out, coords=coords)


def _likely_rate(ints: Mapping) -> xr.Dataset:
    """Exposure ``rate`` (y, x) of LIKELY rateints: every integration of a pixel is needed
    at once (:func:`daskramp.kernels.ramp_fit_likely.combine_integrations` starts from their
    median), so ``integration`` is one chunk per (y, x) block (lazy)."""
    names = (DATA, "err", "var_poisson", "var_rnoise", "dq")
    args = [ints[k].transpose(INTEGRATION, *IMAGE_DIMS) for k in names]
    if args[0].chunks is not None:
        args = [a.chunk({INTEGRATION: -1}) for a in args]

    def combine(*arrs):
        return np.moveaxis(_kl.combine_integrations(*(np.moveaxis(a, -1, 0) for a in arrs)), 0, -1)

    res = xr.apply_ufunc(combine, *args, input_core_dims=[[INTEGRATION]] * len(args),
                         output_core_dims=[["rate_field"]], dask="parallelized",
                         output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"rate_field": len(_k.RATE_FIELDS)}})
    return _rate_dataset(res)


def products(fields, ds: xr.Dataset, *, gain, save_intercepts: bool = False,
             pixeldq: xr.DataArray | None = None, algorithm: str = "OLS_C") -> tuple[xr.Dataset, xr.Dataset]:
    """``(rate, rateints)`` from the per-integration fields of :func:`ramp_fields` (lazy).

    ``fields`` is the fields DataArray, or a mapping of :func:`block_products` assembled as
    lazy DataArrays (rateints variables on (integration, y, x), ``rate_terms`` on
    (block, term, y, x)) plus ``nints``.

    ``ds`` supplies the attrs and coordinates (its data are not used when ``pixeldq`` is
    given); ``pixeldq`` (y, x) defaults to ``ds["pixeldq"]``.  With the LIKELY fit
    (:func:`uses_likely`) the rate combines the rateints planes of every integration
    (:func:`_likely_rate`), so ``fields`` must hold them all.
    """
    likely = uses_likely(algorithm, ds.sizes.get(GROUP, 0))
    attrs = dict(ds.attrs)
    gain_attrs = getattr(gain, "attrs", {}) or {}
    if gain_attrs.get("GAINFACT") is not None:
        attrs["GAINFACT"] = gain_attrs["GAINFACT"]
    attrs.update({"BUNIT": "DN/s", STATUS: "COMPLETE"})

    pdq = ds[PIXELDQ] if pixeldq is None else pixeldq
    if isinstance(fields, Mapping):
        # per-block products (block_products, assembled lazily): rateints variables as they
        # are, the rate from the blocks' term sums summed over the blocks
        ints = {k: v.copy() for k, v in fields.items() if k not in ("rate_terms", "nints")}
        if likely:
            if ints[DATA].sizes[INTEGRATION] != int(fields["nints"]):
                raise NotImplementedError(
                    "ramp_fit algorithm='LIKELY' combines the rate from every integration at "
                    "once; it cannot be continued from one integration block's sums")
            rate = _likely_rate(ints)
        else:
            terms = _sum_blocks(fields["rate_terms"])
            sums = [terms.isel(term=i, drop=True) for i in range(len(_k.RATE_TERMS))]
            rate = finalize_rate(sums, pdq, reference_image(gain, ds, "gain"), nints=int(fields["nints"]))
    else:
        ints = {var: fields.sel(field=field, drop=True).astype(dtype) for var, field, dtype, _ in _OUTPUTS}
        if save_intercepts:
            ints["intercept"] = fields.sel(field="intercept", drop=True).astype(np.float32)
        rate = _likely_rate(ints) if likely else combine_rate(fields, pdq, reference_image(gain, ds, "gain"))
    for var, _, _, units in _OUTPUTS:
        if units:
            ints[var].attrs["units"] = units
    if "intercept" in ints:
        ints["intercept"].attrs["units"] = "DN"
    rateints = xr.Dataset(ints, attrs=dict(attrs))

    rate = rate.assign_coords({d: ds[d] for d in IMAGE_DIMS if d in ds.coords})
    rate.attrs.update(attrs)
    return rate, rateints


def run(ds: xr.Dataset, *, gain, readnoise, stats_scope: str = "segment", fields_only: bool = False,
        products_only: bool = False, **params):
    """What the engines call (the spec's ``run``): :func:`ramp_fit`, or one of its two parts.

    ``fields_only``: :func:`ramp_fields` (the step-by-step layout: the pipeline makes the
    products from them, :func:`daskramp.engine.stages.finish`); ``products_only``:
    :func:`ramp_products` (the in-memory window of a fused tile task: its rateints blocks and
    rate-term sums).
    """
    if not (fields_only or products_only):
        return ramp_fit(ds, gain=gain, readnoise=readnoise, stats_scope=stats_scope, **params)
    p = Params(**params)
    kw = dict(gain=gain, readnoise=readnoise, stats_scope=stats_scope,
              suppress_one_group=p.suppress_one_group, firstgroup=p.firstgroup, lastgroup=p.lastgroup,
              algorithm=p.algorithm)
    if products_only:
        return ramp_products(ds, save_intercepts=p.save_intercepts, **kw)
    return ramp_fields(ds, **kw)


def _refs_kwargs(refs, params, ds) -> dict:
    return {"gain": ref_array(refs.get("gain")), "readnoise": ref_array(refs.get("readnoise"))}


SPEC = StepSpec(name="ramp_fit", status=STATUS, params=Params, run=run, scratch=3.24,
                reftypes=("gain", "readnoise"), refs_kwargs=_refs_kwargs, refs_missing="error",
                pools_integrations=True,
                not_fusable=lambda p: "ramp_fit is skipped (no products)" if p.skip else None,
                # LIKELY combines the rate from every integration at once
                whole_exposure=lambda p, ngroups: uses_likely(p.algorithm, ngroups))


def _rate_dataset(res: xr.DataArray) -> xr.Dataset:
    """The rate products (y, x) from their fields stacked along a ``rate_field`` dim (in the
    order of :data:`daskramp.kernels.ramp_fit.RATE_FIELDS`)."""
    res = res.assign_coords(rate_field=list(_k.RATE_FIELDS))
    out = {}
    for var, field, dtype, units in _OUTPUTS:
        v = res.sel(rate_field=field, drop=True).astype(dtype).transpose(*IMAGE_DIMS)
        if units:
            v.attrs["units"] = units
        out[var] = v
    return xr.Dataset(out)
