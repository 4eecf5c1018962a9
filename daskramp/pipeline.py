"""calwebb_detector1 as one lazy graph: ordered steps → rate / rateints (no compute here).

Layout (see ``docs/design.md``): pixel-local steps run on whatever chunks the exposure has
(integration chunks from FITS, or pixel tiles from a Zarr store written with inner column
chunks); before jump the ramp is laid out in *pixel tiles* — every integration of one
segment (or of the whole exposure with ``stats_scope="exposure"``), all groups, all rows and
a band of columns — because jump and ramp_fit pool statistics over integrations.  The tile
width comes from the worker memory budget (:func:`plan_tiles`).
"""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from . import dims
from . import steps as registry
from .config import ConfigError
from .steps import params_kwargs, ref, ref_array
from .steps import ramp_fit as _ramp_fit

#: the tables of the step registry (:data:`daskramp.steps.REGISTRY`, where each step declares
#: its facts): step order (jwst 3.0 calwebb_detector1, spec 00 §4), FITS status keyword of
#: each step (spec 01 §5) and the reference types each step reads
STEP_ORDER = registry.STEP_ORDER
STATUS_KEY = {s.name: s.status for s in registry.REGISTRY}
STEP_REFTYPES = {s.name: s.reftypes for s in registry.REGISTRY if s.reftypes}

#: peak task memory per byte of float32 ramp in a tile, input included: the steps on one tile
#: run as one task, whose peak is 7.3–7.8 × the tile (the largest single step, ramp_fit,
#: alone: 4.5 ×; see daskramp.memory.CHAIN_FACTOR for how to measure it).
#: Used to size tiles before anything runs, against the per-task budget of
#: daskramp.memory.task_budget
TILE_MEMORY_FACTOR = 7.8


def step_params(name: str, given: Mapping | None = None):
    """The validated frozen ``Params`` of a step from ``given`` (a mapping of official
    parameter names, None, or a ``Params``): what both engines run with.

    Values are coerced and checked against the rules declared on the step's ``Params``
    (:mod:`daskramp.params`); anything not allowed raises a one-line :class:`ConfigError`
    naming ``steps.<step>.<param>`` (an official value daskramp does not implement:
    :class:`daskramp.params.NotImplementedParameter`).
    """
    from .params import validate

    return validate(name, given)


def validate_steps(steps: Mapping | None) -> dict:
    """``{step: Params}`` for every registered step (:func:`daskramp.steps.step_order`) from
    a configuration's ``steps`` mapping (defaults for the steps not given), raising the first
    error; see :func:`daskramp.params.validate_steps`."""
    from .params import validate_steps as _validate_steps

    return _validate_steps(steps)


@dataclass
class Detector1Result:
    """Lazy products of :func:`detector1`."""

    rate: xr.Dataset | None
    rateints: xr.Dataset | None
    intermediates: dict[str, xr.Dataset] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    #: whole-frame statistics (lazy unless given): refpix offsets, jump's DO_NOT_USE planes
    frame_stats: dict = field(default_factory=dict)
    #: the fused layout's products one integration block at a time
    #: (:class:`daskramp.fused.SegmentProducts`), None in the step-by-step layout
    segments: object | None = None

    def products(self) -> dict[str, xr.Dataset]:
        out = {k: v for k, v in (("rateints", self.rateints), ("rate", self.rate)) if v is not None}
        out.update({f"{k}_ramp": v for k, v in self.intermediates.items()})
        return out

    def __repr__(self) -> str:
        """One line per product (its shape) and the steps' statuses, not the whole graph."""
        lines = ["Detector1Result("]
        for name, ds in self.products().items():
            var = ds["data"] if "data" in ds else None
            shape = "" if var is None else " × ".join(f"{d} {n}" for d, n in zip(var.dims, var.shape))
            lazy = var is not None and var.chunks is not None
            lines.append(f"  {name}: {shape}{' (lazy)' if lazy else ''}")
        steps = (self.provenance or {}).get("steps") or {}
        status = ", ".join(f"{k} {v.get('status') if isinstance(v, dict) else v}" for k, v in steps.items())
        if status:
            lines.append(f"  steps: {status}")
        if self.segments is not None:
            lines.append("  layout: fused, by integration block")
        return "\n".join(lines) + "\n)"


def plan_tiles(ds: xr.Dataset, *, memory_limit: int | None, stats_scope: str = "segment",
               tile_columns: int | None = None, factor: float = TILE_MEMORY_FACTOR,
               ghost: int = 0) -> int:
    """Columns per pixel tile for jump/ramp_fit so one task fits in ``memory_limit`` bytes.

    A tile holds every integration of the largest segment (or of the exposure), all groups and
    rows; the projected task memory is ``factor × 4 bytes × nint × ngroups × ny × (columns +
    2 × ghost)``, ``ghost`` being the margin read on each side of a tile by the fused layout.
    Raises :class:`MemoryError` naming the projection and the limit when even one column
    cannot fit.
    """
    nx = ds.sizes[dims.X]
    if stats_scope == "exposure":
        nint = ds.sizes[dims.INTEGRATION]
    else:
        nint = max(b - a for a, b in dims.segment_bounds(ds))
    per_column = factor * 4 * nint * ds.sizes[dims.GROUP] * ds.sizes[dims.Y]
    if tile_columns is not None:
        cols = int(tile_columns)
    elif memory_limit is None:
        cols = nx
    else:
        cols = int(memory_limit // per_column) - 2 * int(ghost)
        if cols < 1:
            raise MemoryError(
                f"jump/ramp_fit tile of one column (+{2 * int(ghost)} ghost columns) needs "
                f"{per_column * (1 + 2 * int(ghost)) / 2**20:.0f} MiB "
                f"(nint={nint}, ngroups={ds.sizes[dims.GROUP]}, ny={ds.sizes[dims.Y]}, factor {factor}) "
                f"but the worker memory limit is {memory_limit / 2**20:.0f} MiB; use "
                f"stats_scope='segment', fewer integrations per segment or larger workers"
            )
    cols = max(1, min(cols, nx))
    # prefer a power of two that divides the width, so tiles line up with store chunks
    p = 2 ** int(math.log2(cols))
    while p > 1 and nx % p:
        p //= 2
    return p if p >= max(1, cols // 2) else cols


#: cost of a fused tile task in units of one pixel taken through the whole chain (all
#: integrations and groups), for 158-integration SOSS windows read from the uncal file:
#: reading one row of the window in every frame costs about as much as 15 pixels (the file is
#: mapped page by page, and a row of a narrow window still costs a page per frame: a 70-column
#: band of 256 rows reads in 0.26 s, a 70 × 262 tile in 0.09 s), and a task's fixed cost
#: (opening, the steps' per-call overhead) about as much as 700 (an 8 × 8 window: 0.067 s)
READ_ROW_PIXELS = 15
TASK_PIXELS = 700


def _pow2_divisors(n: int, align: int = 1) -> list[int]:
    """Powers of two that divide ``n`` and are multiples of ``align``, and ``n`` itself."""
    out = {n}
    p = 1
    while p < n:
        if n % p == 0 and p % align == 0:
            out.add(p)
        p *= 2
    return sorted(out)


def tile_shape(ny: int, nx: int, *, columns: int, ghost: int = 0, pixel_budget: int | None = None,
               row_align: int = 1, tile_rows: int | None = None) -> tuple[int, int]:
    """Rows and columns of a tile of the fused layout (:mod:`daskramp.fused`).

    :func:`plan_tiles` sizes a band of all ``ny`` rows × ``columns``; the same number of
    pixels laid out as a shorter, wider tile costs less to read: the uncal file stores whole
    frames row by row, so a task pays for every row of its window in every frame, however
    narrow the window (:data:`READ_ROW_PIXELS`).  Among tiles of powers of two (or the whole
    axis) with no more interior pixels than the band (``ny × columns``) and whose ghost-widened
    window fits ``pixel_budget`` (pixels a task may hold, from the worker memory; default the
    band's own window, ``ny × (columns + 2 ghost)``), the one of least cost per pixel is taken
    — ghost pixels, rows read and the task's fixed cost (:data:`TASK_PIXELS`) counted.

    ``row_align``: the source's chunk length along ``y`` (a Zarr store's chunks are decoded
    whole, so tiles keep to them); ``tile_rows``: the rows asked for (``columns`` is then
    kept as given).  Returns ``(rows, columns)``.
    """
    columns = max(1, min(int(columns), nx))
    if tile_rows is not None:
        rows = int(tile_rows)
        if not 1 <= rows <= ny:
            raise ConfigError(f"tile_rows must be between 1 and the {ny} rows of the subarray, got {tile_rows}")
        return rows, columns
    g = int(ghost)
    area = ny * columns
    budget = max(ny * (columns + 2 * g), int(pixel_budget or 0))
    best = None
    for h in _pow2_divisors(ny, max(1, int(row_align))):
        gy = g if h < ny else 0
        for w in sorted({columns, *_pow2_divisors(nx)}):
            gx = g if w < nx else 0
            window = (h + 2 * gy) * (w + 2 * gx)
            if h * w > area or window > budget:
                continue
            pages = 1 + (2 * (w + 2 * gx)) // 4096
            cost = (window + READ_ROW_PIXELS * pages * (h + 2 * gy) + TASK_PIXELS) / (h * w)
            key = (cost, -h)
            if best is None or key < best[0]:
                best = (key, h, w)
    return (ny, columns) if best is None else (best[1], best[2])


def _as_float(ds: xr.Dataset) -> xr.Dataset:
    if ds[dims.DATA].dtype != dims.FLOAT_DTYPE:
        ds = ds.assign({dims.DATA: ds[dims.DATA].astype(dims.FLOAT_DTYPE)})
    if dims.ZEROFRAME in ds and ds[dims.ZEROFRAME].dtype != dims.FLOAT_DTYPE:
        ds = ds.assign({dims.ZEROFRAME: ds[dims.ZEROFRAME].astype(dims.FLOAT_DTYPE)})
    return ds


def _call_step(name: str, ds: xr.Dataset, refs, params, *, stats_scope: str, **extra):
    """Run one step lazily, as its spec (:class:`daskramp.steps.StepSpec`) says: the reference
    files mapped to the keyword arguments of its ``run``, ``stats_scope`` for a step that
    pools integrations, ``extra`` passed on.  None when a reference the step cannot do
    without is missing and the step is skipped for it; :class:`ConfigError` when it is one
    the step cannot be skipped for."""
    spec = registry.spec(name)
    missing = spec.missing(refs)
    if missing:
        if spec.refs_missing == "error":
            raise ConfigError(f"{name} needs reference files {missing}; none was found or given")
        return None
    kw = {**params_kwargs(params), **extra}
    if spec.pools_integrations:
        kw["stats_scope"] = stats_scope
    refs_kw = {} if spec.refs_kwargs is None else spec.refs_kwargs(refs, params, ds)
    return spec.run(ds, **refs_kw, **kw)


def needed_reftypes(params: Mapping) -> set[str]:
    """Reference types the steps that run (not ``skip``) cannot do without (their optional
    ones left out: saturation runs without SUPERBIAS, gain_scale without GAIN)."""
    return {rt for s in registry.active() if not params[s.name].skip for rt in s.required_reftypes}


def reference_set(ds: xr.Dataset, refs, params: Mapping, overrides: Mapping | None = None, *,
                  strict: bool = False):
    """The :class:`daskramp.io.refs.RefSet` of the exposure ``ds`` for the steps that run.

    As the official pipeline prefetches the references of every step that runs, one missing
    from the directory is an error naming every file rejected, not a silently skipped step;
    :meth:`RefSet.from_dir` leaves out overridden reftypes ("N/A" skips the step) and those
    that do not apply to the instrument.  Without a directory only the overrides are read and
    the steps needing another reference are skipped, unless ``strict`` (``daskramp run``):
    then a reference nobody gave is an error.  A RefSet is returned as it is.
    """
    from .io.refs import RefSet

    if isinstance(refs, RefSet):
        return refs
    needed = needed_reftypes(params)
    if refs is None:
        missing = sorted(needed - {k.lower().removeprefix("override_") for k in (overrides or {})})
        if strict and missing:
            steps = sorted({s.name for s in registry.active() if not params[s.name].skip
                            and set(s.reftypes) & set(missing)})
            raise ConfigError(
                f"no reference files given: steps {', '.join(steps)} need "
                f"{', '.join(m.upper() for m in missing)}; give --refs DIR (or --override-<reftype> "
                f"FILE, or skip the steps with --steps.<step>.skip=true)")
        if not overrides:
            return None
    return RefSet.from_dir(refs, ds.attrs, overrides=overrides,
                           required=() if refs is None else needed)


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("daskramp", "numpy", "dask", "distributed", "xarray", "zarr", "astropy", "numba"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def detector1(
    exposure,
    refs=None,
    *,
    steps: Mapping[str, Mapping] | None = None,
    stats_scope: str = "segment",
    save_steps: Sequence[str] = (),
    memory_limit: int | None = None,
    tile_columns: int | None = None,
    overrides: Mapping[str, str] | None = None,
    frame_stats: Mapping | str | None = None,
    fused: bool | None = None,
    tile_rows: int | None = None,
) -> Detector1Result:
    """Build the calwebb_detector1 graph for an exposure; nothing is computed.

    Parameters
    ----------
    exposure : xarray.Dataset or path(s)
        The exposure Dataset (see :mod:`daskramp.dims`), a Zarr store or uncal FITS files.
    refs : RefSet, path or None
        Reference files: a :class:`daskramp.io.refs.RefSet`, a directory of CRDS-format FITS
        files (every reference an active step needs must be found there or in ``overrides``,
        else :class:`~daskramp.io.refs.ReferenceFileError`), or None (steps that need a
        reference are skipped, as with "N/A", reason "no reference files given").
    steps : mapping
        ``{step: {param: value}}`` with the official parameter names (or ``{step: Params}``);
        ``{"skip": True}`` skips.  Validated before anything else (:func:`validate_steps`): a
        value that is not allowed raises :class:`ConfigError` naming ``steps.<step>.<param>``.
    stats_scope : {"segment", "exposure"}
        Pool jump/ramp_fit statistics per uncal segment (the official behaviour) or over the
        whole stitched exposure.
    save_steps : sequence of str
        Steps whose output ramp is returned in ``intermediates`` (like ``save_results``).
    memory_limit : int, optional
        Bytes per worker task budget used to size the pixel tiles of jump/ramp_fit.
    tile_columns : int, optional
        Columns of a pixel tile (default: from ``memory_limit``, :func:`plan_tiles`).
    tile_rows : int, optional
        Rows of a tile in the fused layout.  By default the pixels of an all-rows ×
        ``tile_columns`` band are laid out as the shorter, wider tile that costs least to read
        and compute (:func:`tile_shape`); the step-by-step layout always uses all rows.
    frame_stats : mapping, "compute" or "submit", optional
        Whole-frame statistics that tile-local work cannot see: refpix's per-frame
        reference-pixel offsets and jump's "every pixel DO_NOT_USE" planes.  By default they
        are lazy reductions inside the one graph (``result.frame_stats``), which then has a
        barrier: every tile must pass the early steps before the first tile can be corrected.
        ``"compute"`` evaluates them first (a streaming pass that keeps only reference pixels
        and flags, through the active dask scheduler) and builds the graph on the results,
        so tiles then flow through independently with bounded memory; ``"submit"`` does the
        same on a dask.distributed client without waiting for them: they are computed on the
        cluster while the caller builds and submits the product graph, whose tiles wait for
        them there (``result.frame_stats`` then holds delayed values; without a distributed
        client it is ``"compute"``); a mapping passes results computed earlier.
    fused : bool, optional
        Run the chain as one task per tile (:mod:`daskramp.fused`; same products).  Default:
        whenever no intermediate is saved and the configuration allows it (not with
        clean_flicker_noise, nor for an exposure held in memory); ``False`` builds one
        dask layer per step.

    Returns
    -------
    Detector1Result
        ``rate`` (y, x) and ``rateints`` (integration, y, x) lazy Datasets in DN/s, the
        requested intermediates and a provenance record.
    """
    if not isinstance(exposure, xr.Dataset):
        from .io import open_exposure

        exposure = open_exposure(exposure)
    ds = dims.validate(exposure)
    # every step parameter is checked here, before either engine is chosen; both engines run
    # with these validated Params (nothing reads the raw ``steps`` mapping again)
    params = validate_steps(steps)
    ramp = registry.ramp_step_names()
    for name in save_steps:
        if name not in ramp:
            raise ConfigError(f"save_steps: {name!r} is not a ramp step; choose from {ramp}")
    if stats_scope not in ("segment", "exposure"):
        raise ConfigError(f"stats_scope must be 'segment' or 'exposure', got {stats_scope!r}")
    refs = reference_set(ds, refs, params, overrides)

    provenance: dict = {
        "pipeline": "calwebb_detector1",
        "stats_scope": stats_scope,
        "steps": {},
        "reference_files": refs.provenance() if refs is not None else {},
        "versions": package_versions(),
    }

    if fused is None:
        fused = not save_steps
    if fused:
        from . import fused as _fused

        why = _fused.unsupported(ds, params)
        if why is None:
            return _fused.detector1_fused(
                ds, refs, params=params, provenance=provenance, stats_scope=stats_scope,
                memory_limit=memory_limit, tile_columns=tile_columns, frame_stats=frame_stats,
                tile_rows=tile_rows)
        provenance["fused"] = f"not used: {why}"

    if isinstance(frame_stats, str):
        if frame_stats not in ("compute", "submit"):
            raise ConfigError(f"frame_stats must be a mapping, 'compute' or 'submit', got {frame_stats!r}")
        import dask

        first = detector1(ds, refs, steps=params, stats_scope=stats_scope, memory_limit=memory_limit,
                          tile_columns=tile_columns, fused=False)
        (computed,) = dask.compute(first.frame_stats)
        return detector1(ds, refs, steps=params, stats_scope=stats_scope, save_steps=save_steps,
                         memory_limit=memory_limit, tile_columns=tile_columns, frame_stats=computed,
                         fused=False)
    given_stats = dict(frame_stats or {})
    lazy_stats: dict = {}

    ds = _as_float(ds)
    # the whole chain runs on pixel tiles (all integrations of a segment × a band of columns),
    # so no step ever needs more than one tile (plus halos) in memory
    cols = plan_tiles(ds, memory_limit=memory_limit, stats_scope=stats_scope,
                      tile_columns=tile_columns)
    ds = _tile(ds, cols, stats_scope)
    # the reference arrays enter the graph as dask arrays a worker reads from the files
    # (RefSet.lazy), not as numpy data inside the tasks
    refs = lazy_refs(refs, ds)
    provenance["tile_columns"] = cols
    intermediates: dict[str, xr.Dataset] = {}
    ds = ramp_steps(ds, refs, params, stats_scope=stats_scope, given_stats=given_stats,
                    lazy_stats=lazy_stats, provenance=provenance, save_steps=save_steps,
                    intermediates=intermediates)
    fields = None
    fit = registry.FIT_STEP
    if not params[fit].skip:
        # per-integration fields; finish() makes the products from them
        fields = _call_step(fit, ds, refs, params[fit], stats_scope=stats_scope, fields_only=True)
    rate, rateints = finish(fields, ds, refs, params, provenance)
    return Detector1Result(rate=rate, rateints=rateints, intermediates=intermediates,
                           provenance=provenance, frame_stats={**lazy_stats, **given_stats})


def ramp_steps(ds: xr.Dataset, refs, params: Mapping, *, stats_scope: str, given_stats: Mapping,
               lazy_stats: dict | None = None, provenance: dict | None = None,
               save_steps: Sequence[str] = (), intermediates: dict | None = None,
               until: str = registry.FIT_STEP, frame_shape: tuple[int, int] | None = None,
               start: str | None = None) -> xr.Dataset:
    """Run the ramp steps of the registry from ``start`` (default: the first) up to, not
    including, ``until`` on ``ds`` (lazy or numpy).

    ``given_stats`` holds whole-frame statistics (``refpix_offsets``, ``refpix_zf_offsets``,
    ``plane_dnu``, ``gain_median``), which the steps take through their spec's
    ``stats_kwargs``; those missing are derived from ``ds`` itself (lazily, recorded in
    ``lazy_stats``).  ``frame_shape`` is the parent subarray size when ``ds`` is a window of it.
    Step statuses and parameters are recorded in ``provenance["steps"]`` when given.
    """
    lazy_stats = {} if lazy_stats is None else lazy_stats
    record_steps = None if provenance is None else provenance.setdefault("steps", {})
    order = registry.step_order()
    first = 0 if start is None else order.index(start)
    for name in order[first: order.index(until)]:
        spec = registry.spec(name)
        p = params[name]
        record = {"parameters": dataclasses.asdict(p)}
        if record_steps is not None:
            record_steps[name] = record
        if p.skip:
            record["status"] = "SKIPPED"
            _set_status(ds, name, "SKIPPED")
            continue
        extra = {}
        if spec.stats_kwargs is not None:
            extra = spec.stats_kwargs(ds, p, given_stats, lazy_stats, frame_shape)
        out = _call_step(name, ds, refs, p, stats_scope=stats_scope, **extra)
        if out is None:
            _skipped(record, spec, refs)
            _set_status(ds, name, "SKIPPED")
        else:
            ds = out
            record["status"] = ds.attrs.get(spec.status, "COMPLETE")
        if name in save_steps and intermediates is not None:
            intermediates[name] = ds
    return ds


def _is_lazy(value) -> bool:
    import dask

    if isinstance(value, xr.Dataset):
        return any(dask.is_dask_collection(v.data) for v in value.data_vars.values())
    if isinstance(value, Mapping):
        return any(_is_lazy(v) for v in value.values())
    return dask.is_dask_collection(getattr(value, "data", value))


def lazy_refs(refs, ds):
    """``refs`` (a RefSet or None) for a graph on ``ds``: :meth:`RefSet.lazy` when ``ds`` is
    dask-backed, so the reference arrays are read by the workers (from the files when the
    set has a recipe) instead of travelling inside the tasks; as it is for an in-memory
    ``ds`` (numpy all the way, nothing to ship)."""
    if refs is None or not _is_lazy(ds):
        return refs
    return refs.lazy()


def _skipped(record: dict, spec, refs) -> None:
    """Record a step skipped for want of references: the ones it cannot run without, and why
    each is missing."""
    record["status"] = "SKIPPED"
    record["reason"] = "; ".join(
        f"{rt.upper()}: no reference files given" if refs is None else refs.reason(rt)
        for rt in spec.missing(refs)) or "no reference file"


def finish(fields, ds: xr.Dataset, refs, params: Mapping, provenance: dict,
           *, pixeldq: xr.DataArray | None = None):
    """``(rate, rateints)`` from ramp_fit's per-integration fields (or per-block products,
    see :func:`daskramp.steps.ramp_fit.products`), then the steps on the rate products
    (gain_scale; lazy)."""
    rate = rateints = None
    steps = provenance.setdefault("steps", {})
    # lazy products: the GAIN image (rate) and header come from the workers' reference set
    refs = lazy_refs(refs, fields)
    order = registry.step_order()
    for name in order[order.index(registry.FIT_STEP):]:
        spec = registry.spec(name)
        p = params[name]
        record = steps[name] = {"parameters": dataclasses.asdict(p)}
        if p.skip or (spec.on_rate and rate is None):
            record["status"] = "SKIPPED"
            if not spec.on_rate:
                _set_status(ds, name, "SKIPPED")
            continue
        if name == registry.FIT_STEP:
            rate, rateints = _ramp_fit.products(fields, ds, gain=ref_array(ref(refs, "gain")),
                                               save_intercepts=p.save_intercepts, pixeldq=pixeldq)
            record["status"] = "COMPLETE"
            continue
        scope = provenance.get("stats_scope", "segment")
        out = _call_step(name, rate, refs, p, stats_scope=scope)
        if out is None:
            _skipped(record, spec, refs)
            continue
        rate, rateints = out, _call_step(name, rateints, refs, p, stats_scope=scope)
        record["status"] = rate.attrs.get(spec.status, "COMPLETE")

    statuses = {registry.spec(n).status: steps[n]["status"] for n in order if n in steps}
    for prod in (rate, rateints):
        if prod is not None:
            prod.attrs.update(statuses)
    return rate, rateints


def _set_status(ds: xr.Dataset, name: str, status: str) -> None:
    ds.attrs[registry.spec(name).status] = status


def _tile(ds: xr.Dataset, cols: int, stats_scope: str) -> xr.Dataset:
    """Lay the ramp out in pixel tiles: whole segments × all groups × all rows × ``cols`` columns."""
    from .steps._apply import chunk_by_segment

    if not any(hasattr(v.data, "dask") for v in ds.data_vars.values()):
        return ds
    pdq = ds.get(dims.PIXELDQ)
    if pdq is not None and not hasattr(pdq.data, "dask") and not np.any(pdq.data):
        # the zeros of an uncal exposure: made by the tasks, not shipped inside the graph
        import dask.array as da

        ds = ds.assign({dims.PIXELDQ: pdq.copy(data=da.zeros(pdq.shape, dtype=pdq.dtype, chunks=-1))})
    ds = chunk_by_segment(ds, stats_scope=stats_scope)
    return dims.chunk(ds, {dims.Y: -1, dims.X: cols})


def tile_chunks(ds: xr.Dataset, cols: int, stats_scope: str = "segment") -> dict:
    """Dask chunks of the pixel-tile layout, to open an exposure directly in it."""
    if stats_scope == "exposure":
        ints = (ds.sizes[dims.INTEGRATION],)
    else:
        ints = tuple(b - a for a, b in dims.segment_bounds(ds))
    return {dims.INTEGRATION: ints, dims.GROUP: -1, dims.Y: -1, dims.X: cols}


def open_tiled(path_or_files, *, memory_limit: int | None = None, stats_scope: str = "segment",
               tile_columns: int | None = None) -> xr.Dataset:
    """Open an exposure directly in the pixel-tile layout sized for ``memory_limit``.

    Each dask chunk then reads only its own tile from the store (the store's inner chunks are
    column bands), so no task ever loads whole frames of every integration.
    """
    from .io import open_exposure

    probe = open_exposure(path_or_files)
    cols = plan_tiles(probe, memory_limit=memory_limit, stats_scope=stats_scope,
                      tile_columns=tile_columns)
    return open_exposure(path_or_files, chunks=tile_chunks(probe, cols, stats_scope))


def summary_figures(rate: xr.Dataset | None, rateints: xr.Dataset | None = None) -> dict:
    """The figures of :func:`summarize` as lazy dask values (nothing computed): computed in
    the graph that writes the products, they cost no second pass over the data."""
    import dask
    import dask.array as da

    from . import dq

    if rate is None:
        return {}
    r = da.asarray(rate["data"].data)
    rdq = da.asarray(rate["dq"].data)
    # the rate image is small: gather it with plain tasks, not a distributed shuffle
    with dask.config.set({"array.rechunk.method": "tasks"}):
        flat = r.ravel().rechunk(-1)
    out = {
        "rate_median_DN_s": da.nanmedian(flat, axis=0),
        "finite_fraction": da.isfinite(r).mean(),
        "jump_flagged_fraction": ((rdq & dq.JUMP_DET) != 0).mean(),
        "saturated_fraction": ((rdq & dq.SATURATED) != 0).mean(),
    }
    if rateints is not None:
        idq = da.asarray(rateints["dq"].data)
        out["jump_fraction_per_integration"] = ((idq & dq.JUMP_DET) != 0).mean(axis=(1, 2))
    return out


def figures_of(values: dict) -> dict:
    """Computed :func:`summary_figures` as plain floats and lists."""
    return {k: (v.tolist() if np.ndim(v) else float(v)) for k, v in values.items()}


def summarize(rate: xr.Dataset | None, rateints: xr.Dataset | None = None) -> dict:
    """A few figures describing written (or lazy) products, computed through dask reductions."""
    import dask

    (vals,) = dask.compute(summary_figures(rate, rateints))
    return figures_of(vals)
