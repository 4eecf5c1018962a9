"""Detector1 as one task per pixel tile: every step of the chain fused over a window.

The step-by-step graph of :func:`daskramp.pipeline.detector1` (one dask layer per step) is
exact, but on a pixel tile layout its halos (saturation growth, jump's neighbour flags) become
dask overlaps: every tile then waits for slivers of its neighbours, which travel between
workers, and the scheduler tracks several tasks per tile and step.  Here instead each task

1. reads its own window straight from the source — every integration of one segment (or of
   the exposure with ``stats_scope="exposure"``), all groups, all rows, a band of columns
   widened by a *ghost* margin on each side (:func:`halo_width`: the sum of the halos of the
   neighbour-looking steps) — from the uncal FITS files (only the band's bytes are mapped),
   a Zarr store, or any array;
2. runs the same step wrappers on it as numpy (:func:`daskramp.pipeline.ramp_steps`, the
   window being a smaller subarray: :func:`daskramp.dims.window`);
3. trims the ghost margin and returns the products of its band: the rateints variables
   and its sums of the rate terms over integrations (:func:`daskramp.steps.ramp_fit.block_products`).

Tiles never exchange data, so the graph is one task per tile (plus small getters) and
a worker's memory is one tile's chain.  The two whole-frame statistics a window cannot see
are computed first, cheaply, by the same machinery on small windows:

* refpix offsets: one task per block of integrations runs the chain up to refpix on each
  rectangle of reference pixels (the border strips) and returns only the offsets
  (:func:`_refpix_block`); the blocks come in whole rounds of the cluster's worker threads,
  as every tile waits for all of them (:func:`_in_rounds`);
* jump's "every pixel DO_NOT_USE" planes: a probe window (:data:`PROBE_SHAPE` at the frame's
  centre) is run up to jump; a plane with one usable pixel in the probe is not all
  DO_NOT_USE, which settles every plane in practice.
  Only planes the probe cannot settle are evaluated over every tile.

The results equal the step-by-step graph's exactly (``tests/test_fused.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed

from . import dims
from . import steps as registry
from .dims import DATA, GROUP, GROUPDQ, INTEGRATION, PIXELDQ, ZEROFRAME, X, Y
from .steps import params_kwargs

#: per-process cache of opened Zarr arrays (path → group)
_ZARR: dict = {}


def _shrinks(params) -> list[tuple[str, int]]:
    """Where a window's exact region shrinks: ``(step, k)`` = the steps before ``step`` have
    made the outermost ``k`` columns/rows on each side depend on pixels outside the window.

    Each step that runs and looks at neighbours (its spec's ``halo``: saturation growth
    ``2·n_pix_grow_sat``, charge_migration 1, jump's neighbour flagging 1) shrinks it by its
    halo before the step that follows it; the other steps are pixel-local.
    """
    specs = registry.active()
    out = []
    for s, after in zip(specs, specs[1:]):
        p = params[s.name]
        k = 0 if s.halo is None or p.skip else int(s.halo(p))
        if k:
            out.append((after.name, k))
    return out


def halo_width(params) -> int:
    """Ghost columns/rows each window needs so that its interior equals the whole-frame result:
    the sum of the :func:`_shrinks` of the steps that look at neighbours."""
    return sum(k for _, k in _shrinks(params))


def unsupported(ds: xr.Dataset, params) -> str | None:
    """Why the fused layout cannot run this configuration (None: it can): a step's reason
    (its spec's ``not_fusable``: clean_flicker_noise fits whole frames, ramp_fit skipped
    leaves no products, dark_current's ``dark_output`` is the whole frame), or an exposure
    held in memory."""
    for s in registry.active():
        why = None if s.not_fusable is None else s.not_fusable(params[s.name])
        if why is not None:
            return why
    if not any(hasattr(v.data, "dask") for v in ds.data_vars.values()):
        return "the exposure is in memory"
    return None


# ------------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class Reader:
    """Where the raw ramp of an exposure lives; :meth:`read` returns numpy windows.

    ``kind`` is ``"fits"`` (uncal segment files: ``segments`` = (path, byte offset,
    frame shape, nints, zeroframe (offset, shape) or None)), ``"zarr"`` (a store at ``path``)
    or ``"arrays"`` (``arrays``: variable → numpy or dask array, sliced and computed in the
    task).
    """

    kind: str
    segments: tuple = ()
    path: str = ""
    arrays: tuple = ()
    has_zeroframe: bool = False

    def read(self, i0: int, i1: int, ys: slice, xs: slice) -> dict[str, np.ndarray]:
        """``data`` (uint16 or as stored), ``groupdq``/``pixeldq`` when the source has them,
        ``zeroframe`` when present; integrations ``i0:i1`` of the exposure."""
        if self.kind == "fits":
            return self._read_fits(i0, i1, ys, xs)
        if self.kind == "zarr":
            from .io.store import VerifiedArray

            # a lost chunk or one whose crc32c does not match raises, naming it (never the
            # fill value)
            out = {DATA: VerifiedArray(self.path, DATA)[i0:i1, :, ys, xs]}
            if self.has_zeroframe:
                out[ZEROFRAME] = VerifiedArray(self.path, ZEROFRAME)[i0:i1, ys, xs]
            return out
        out = {}
        for name, arr in self.arrays:
            key = {4: (slice(i0, i1), slice(None), ys, xs), 3: (slice(i0, i1), ys, xs), 2: (ys, xs)}[arr.ndim]
            part = arr[key]
            out[name] = np.asarray(part.compute(scheduler="sync") if hasattr(part, "dask") else part)
        return out

    def _read_fits(self, i0, i1, ys, xs):
        from .io.uncal import read_window

        data, zf = [], []
        start = 0
        for path, offset, frame, nint, zeroframe in self.segments:
            a, b = max(i0, start), min(i1, start + nint)
            if a < b:
                data.append(read_window(path, offset, frame, a - start, b - start, ys, xs))
                if self.has_zeroframe:
                    zf.append(read_window(path, zeroframe[0], zeroframe[1], a - start, b - start, ys, xs))
            start += nint
        out = {DATA: data[0] if len(data) == 1 else np.concatenate(data)}
        if self.has_zeroframe:
            out[ZEROFRAME] = zf[0] if len(zf) == 1 else np.concatenate(zf)
        return out


def reader_for(ds: xr.Dataset) -> Reader:
    """The cheapest :class:`Reader` for ``ds``: its source files when it is unchanged since
    :func:`daskramp.io.open_exposure` opened it, else its own arrays."""
    src = ds.encoding.get("daskramp_source")
    names = {k: v.data.name for k, v in ds.data_vars.items() if hasattr(v.data, "dask")}
    has_zf = ZEROFRAME in ds
    # the source files hold no DQ: reading them is right only while pixeldq is still zero
    # (one (y, x) image, the size of a frame, is evaluated here)
    if src and src.get("names") == names and not np.any(ds[PIXELDQ].values):
        if src["kind"] == "fits" and (not has_zf or all(s[4] is not None for s in src["segments"])):
            return Reader("fits", segments=tuple(src["segments"]), has_zeroframe=has_zf)
        if src["kind"] == "zarr":
            return Reader("zarr", path=src["path"], has_zeroframe=has_zf)
    arrays = tuple((k, v.data) for k, v in ds.data_vars.items())
    return Reader("arrays", arrays=arrays, has_zeroframe=has_zf)


# ------------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Plan:
    """Everything a window task needs besides the pixels (small, shipped with each task)."""

    skeleton: xr.Dataset  # the exposure's coords and attrs, no data variables
    var_attrs: dict
    params: dict
    stats_scope: str
    halo: int


def _skeleton(ds: xr.Dataset) -> xr.Dataset:
    sk = ds.drop_vars(list(ds.data_vars))
    sk.attrs = dict(ds.attrs)
    sk.encoding = {}
    return sk


def _window_exposure(plan: Plan, raw: dict, i0, i1, ys: slice, xs: slice) -> xr.Dataset:
    """The raw window as an exposure of its own (float32 ``data``, as the pipeline converts)."""
    win = dims.window(plan.skeleton.isel({INTEGRATION: slice(i0, i1)}), y=ys, x=xs)
    shape4 = raw[DATA].shape
    data = raw[DATA].astype(dims.FLOAT_DTYPE, copy=False)
    groupdq = raw.get(GROUPDQ)
    pixeldq = raw.get(PIXELDQ)
    variables = {
        DATA: (dims.RAMP_DIMS, data, plan.var_attrs.get(DATA, {})),
        GROUPDQ: (dims.RAMP_DIMS, np.zeros(shape4, dims.GROUPDQ_DTYPE) if groupdq is None
                  else np.array(groupdq, dims.GROUPDQ_DTYPE)),
        PIXELDQ: (dims.IMAGE_DIMS, np.zeros(shape4[2:], dims.PIXELDQ_DTYPE) if pixeldq is None
                  else np.array(pixeldq, dims.PIXELDQ_DTYPE)),
    }
    if ZEROFRAME in raw:
        variables[ZEROFRAME] = (dims.CUBE_DIMS, raw[ZEROFRAME].astype(dims.FLOAT_DTYPE),
                                plan.var_attrs.get(ZEROFRAME, {}))
    return win.assign(variables)


def _image_params():
    """``(step, parameter, FITS loader)`` of the step parameters that are (y, x) images of the
    whole subarray (their specs' ``image_params``)."""
    return [(s.name, field, load) for s in registry.active() for field, load in s.image_params]


def _loaded_params(params: Mapping) -> dict:
    """``params`` with image parameters given as FITS paths loaded (once, by the client)."""
    out = dict(params)
    for step, field, load in _image_params():
        value = getattr(out[step], field, None)
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            out[step] = dataclasses.replace(out[step], **{field: load(value)})
    return out


def _window_params(params: Mapping, frame_shape, ys: slice, xs: slice) -> dict:
    """``params`` with the image parameters cut to the window (others unchanged)."""
    out = dict(params)
    for step, field, _ in _image_params():
        value = getattr(out[step], field, None)
        if value is None:
            continue
        if tuple(np.shape(value)) != tuple(frame_shape):
            continue  # left for the step to reject with its own message
        part = value.isel({Y: ys, X: xs}) if isinstance(value, xr.DataArray) else value[ys, xs]
        out[step] = dataclasses.replace(out[step], **{field: part})
    return out


def _given_stats(stats: dict, i0: int, i1: int) -> dict:
    """The whole-frame statistics of integrations ``i0:i1`` (lazy ones stay lazy)."""
    out = {}
    for k, v in stats.items():
        if v is None or np.ndim(v) == 0:
            out[k] = v  # None, or a scalar of the whole exposure (gain_median)
        elif isinstance(v, xr.DataArray):
            out[k] = v.isel({INTEGRATION: slice(i0, i1)})
        else:
            out[k] = (v if dask.is_dask_collection(v) else np.asarray(v))[i0:i1]
    return out


def _widen(s: slice, h: int, n: int) -> tuple[slice, slice]:
    """The window ``s`` widened by ``h`` on each side (clipped), and ``s`` relative to it."""
    a, b = max(0, s.start - h), min(n, s.stop + h)
    return slice(a, b), slice(s.start - a, s.stop - a)


#: bytes of float32 ramp a window task runs through the per-integration steps (before jump)
#: at a time: each step makes new arrays the size of its input, so only the assembled cube
#: and the arrays of one block exist at once instead of several whole-window cubes (on a
#: 158-integration SOSS tile, 40 integrations a block: 231 instead of 333 MiB traced peak).
#: Each block costs the steps' per-call overhead (a few ms each), hence blocks of tens of MB
#: rather than small cache-sized ones.
BLOCK_BYTES = 40 * 2**20


def _run_stages(plan: Plan, ds: xr.Dataset, refs, given: dict, stages, start, wy: slice, wx: slice,
                margin: int, keep, provenance):
    """Run ``ds`` through ``stages`` (``(stop, k)``: the steps up to ``stop``, then cut ``k``
    ghost columns/rows around ``keep``) from step ``start``."""
    from .pipeline import ramp_steps

    frame = (plan.skeleton.sizes[Y], plan.skeleton.sizes[X])
    wrefs = None
    for stop, k in stages:
        wrefs = None if refs is None else refs.window(frame, wy, wx)
        ds = ramp_steps(ds, wrefs, _window_params(plan.params, frame, wy, wx),
                        stats_scope=plan.stats_scope, given_stats=given, until=stop, start=start,
                        frame_shape=frame, provenance=provenance)
        start = stop
        if k:
            margin -= k
            ny_, nx_ = _widen(keep[0], margin, frame[0])[0], _widen(keep[1], margin, frame[1])[0]
            ds = dims.window(ds, y=slice(ny_.start - wy.start, ny_.stop - wy.start),
                             x=slice(nx_.start - wx.start, nx_.stop - wx.start))
            wy, wx = ny_, nx_
    return ds, wrefs, wy, wx, margin


def _assemble(plan: Plan, parts: list, blocks: list, i0: int, i1: int) -> xr.Dataset:
    """One window exposure for integrations ``i0:i1`` from the results of its blocks."""
    last = parts[-1]
    variables = {}
    for name, var in last.data_vars.items():
        if INTEGRATION in var.dims:
            full = np.empty((i1 - i0, *var.shape[1:]), var.dtype)
            for (a, b), part in zip(blocks, parts):
                full[a - i0: b - i0] = part[name].values
        else:
            full = var.values
            for part in parts[:-1]:
                if not np.array_equal(part[name].values, full, equal_nan=True):
                    raise RuntimeError(f"{name} differs between integration blocks of a window")
        variables[name] = (var.dims, full, var.attrs)
    sk = plan.skeleton.isel({INTEGRATION: slice(i0, i1)}).sel({Y: last[Y], X: last[X]})
    out = sk.assign(variables)
    out.attrs = dict(last.attrs)
    return out


def _chain(plan: Plan, reader: Reader, refs, given: dict, i0: int, i1: int, wy: slice, wx: slice,
           until: str, provenance: dict | None = None, keep: tuple[slice, slice] | None = None,
           block: int | None = None):
    """Read the window ``[i0:i1, :, wy, wx]`` and run the steps before ``until`` on it as
    numpy; returns the window's exposure after them, the reference files cut to it and its
    ``(y, x)`` slices of the frame.

    With ``keep`` (the frame slices whose result is wanted; ``wy``/``wx`` being them widened
    by ``plan.halo``) the window is cut down to ``keep`` widened by what the remaining steps
    still need each time a step that looks at neighbours has run (:func:`_shrinks`), so the
    later steps do not process ghost pixels whose results are not exact anyway.

    The steps before jump (the first that pools integrations) work on each integration alone
    (the whole-frame statistics they need are given): they run ``block`` integrations at a
    time (default: blocks of about :data:`BLOCK_BYTES`) and the blocks are assembled for jump
    and ramp_fit.
    """
    order = registry.step_order().index
    stops = []
    if keep is not None:
        stops = [(s, k) for s, k in _shrinks(plan.params) if order(s) < order(until)]
    pool = registry.pooling_step()
    local = pool if order(until) > order(pool) else until
    first = [(s, k) for s, k in stops if order(s) <= order(local)]
    if not first or first[-1][0] != local:
        first.append((local, 0))
    rest = [(s, k) for s, k in stops if order(s) > order(local)]
    if local != until:
        rest.append((until, 0))
    if block is None:
        per_int = 4 * plan.skeleton.sizes[GROUP] * (wy.stop - wy.start) * (wx.stop - wx.start)
        nblocks = max(1, math.ceil((i1 - i0) * per_int / BLOCK_BYTES))
        block = max(1, math.ceil((i1 - i0) / nblocks))
    block = max(1, int(block))
    blocks = [(a, min(a + block, i1)) for a in range(i0, i1, block)] or [(i0, i1)]
    parts = []
    for a, b in blocks:
        ds = _window_exposure(plan, reader.read(a, b, wy, wx), a, b, wy, wx)
        ds, wrefs, wy_b, wx_b, margin = _run_stages(
            plan, ds, refs, _given_stats(given, a - i0, b - i0), first, None, wy, wx, plan.halo,
            keep, provenance)
        parts.append(ds)
    wy, wx = wy_b, wx_b
    ds = parts[0] if len(parts) == 1 else _assemble(plan, parts, blocks, i0, i1)
    del parts
    if rest:
        ds, wrefs, wy, wx, margin = _run_stages(plan, ds, refs, given, rest, local, wy, wx, margin,
                                                keep, provenance)
    return ds, wrefs, (wy, wx)


def run_window(plan: Plan, reader: Reader, refs, stats: dict, i0: int, i1: int, ys: slice,
               xs: slice, until: str) -> dict[str, np.ndarray]:
    """Read a window widened by the ghost margin, run the steps before ``until`` on it and
    return its interior: ``data``/``groupdq``/``pixeldq`` (and ``zeroframe``), or for
    ``until="ramp_fit"`` the :func:`daskramp.steps.ramp_fit.block_products` of its ramps and
    ``pixeldq``."""
    from .pipeline import _call_step

    sk = plan.skeleton
    ny, nx = sk.sizes[Y], sk.sizes[X]
    wy, _ = _widen(ys, plan.halo, ny)
    wx, _ = _widen(xs, plan.halo, nx)
    out, wrefs, (wy, wx) = _chain(plan, reader, refs, _given_stats(stats, i0, i1), i0, i1, wy, wx,
                                  until, keep=(ys, xs))
    iy = slice(ys.start - wy.start, ys.stop - wy.start)
    ix = slice(xs.start - wx.start, xs.stop - wx.start)
    if until == "ramp_fit":
        # only the interior is fitted (ramp_fit is pixel-local), straight to its products:
        # 20 instead of 88 bytes per pixel and integration wait in worker memory
        out = dims.window(out, y=iy, x=ix)
        res = _call_step("ramp_fit", out, wrefs, plan.params["ramp_fit"],
                         stats_scope=plan.stats_scope, products_only=True)
        res[PIXELDQ] = np.ascontiguousarray(out[PIXELDQ].values)
    else:
        res = {PIXELDQ: np.ascontiguousarray(out[PIXELDQ].values[iy, ix])}
        for name in (DATA, GROUPDQ, ZEROFRAME):
            if name in out:
                res[name] = np.ascontiguousarray(out[name].values[..., iy, ix])
    del out, wrefs
    release_free_memory()
    return res


_TRIM = None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; elsewhere a no-op).

    A window's temporaries are hundreds of MB of arrays below the workers' mmap threshold
    (:mod:`daskramp.cluster`), so they come from the heap; freed, they stay in the process
    as fragments that the next window's different sizes do not fill exactly, and the
    worker's resident memory creeps up over a run of many segments.  Trimming after each
    window costs the next window a page fault per page it touches again (tens of ms).
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


def _stand_ins(stats: dict, *, lazy: bool = False) -> dict:
    """``stats`` with the lazy statistics replaced by zeros of their shape and dtype; with
    ``lazy`` the zeros are dask arrays, made by the tasks of a graph that uses them (as numpy
    they would travel inside the graph: a few MB per hundred integrations)."""
    import dask.array as da

    given = dict(stats)
    for k, v in given.items():
        if dask.is_dask_collection(v):
            data = v.data if isinstance(v, xr.DataArray) else v
            zeros = (da.zeros(data.shape, dtype=data.dtype, chunks=data.chunks) if lazy
                     else np.zeros(data.shape, data.dtype))
            given[k] = v.copy(data=zeros) if isinstance(v, xr.DataArray) else zeros
    return given


def _probe_needs_offsets(params) -> bool:
    """Whether the group DQ that jump sees depends on the refpix offsets' values.

    refpix only shifts values; of the steps after it, those whose spec says ``value_flags``
    (charge_migration flags groups by their level) make the group DQ depend on them, while
    linearity and dark_current only propagate reference DQ.  When nothing value-dependent
    runs, the probe of all-DO_NOT_USE planes can run on stand-in offsets, alongside the
    refpix statistics instead of after them.
    """
    specs = registry.active()
    names = [s.name for s in specs]
    between = specs[names.index("refpix") + 1 : names.index(registry.pooling_step())]
    return any(not params[s.name].skip for s in between if s.value_flags and s.name in params)


def _status_stats(plan: Plan, stats: dict) -> dict:
    """Stand-ins for the statistics of a one-pixel window: statuses do not depend on their
    values, so lazy ones become zeros of their shape (keeps the status graph-free)."""
    given = _stand_ins(_given_stats(stats, 0, 1))
    # statistics the caller has not computed yet only need the right shape here
    given.setdefault("plane_dnu", np.zeros((1, plan.skeleton.sizes[GROUP]), bool))
    for key in ("refpix_offsets", "refpix_zf_offsets"):
        given.setdefault(key, None)
    return given


def _status_of(plan: Plan, reader: Reader, refs, given: dict, until: str) -> tuple[dict, dict]:
    prov: dict = {}
    out, _, _ = _chain(plan, reader, refs, given, 0, 1, slice(0, 1), slice(0, 1), until, provenance=prov)
    attrs = {k: v for k, v in out.attrs.items() if k.startswith("S_")}
    return attrs, prov.get("steps", {})


def _status(plan: Plan, reader: Reader, refs, stats: dict, until: str) -> tuple[dict, dict]:
    """Step statuses and provenance records, from the chain run on a one-pixel window."""
    return _status_of(plan, reader, refs, _status_stats(plan, stats), until)


def staged(plan: Plan, reader: Reader, refs_key, stats: dict | Delayed, *, until: str,
           int_bounds, y_bounds, x_bounds, names=(DATA, GROUPDQ, PIXELDQ)) -> dict[str, da.Array]:
    """Lazy arrays of the chain run up to ``until`` on a grid of windows (one task each).

    ``stats``: the whole-frame statistics (a mapping, or one delayed mapping); ``*_bounds``
    are lists of (start, stop) along integration, y and x.  Returns dask arrays
    for ``names`` (``fields`` for ``until="ramp_fit"``); ``pixeldq`` comes from the first
    integration block.  Blocks that nothing asks for are never computed.
    """
    from dask.base import tokenize

    sk = plan.skeleton
    # the statistics (computed or lazy) travel as one key, like the reference files
    stats_key = stats if isinstance(stats, Delayed) else dask.delayed(dict(stats), pure=True)
    # and so does the plan: its skeleton holds the exposure's per-integration coordinates
    # (194 KiB unpickled for 16 SOSS segments), and a worker keeps each task's own unpickled
    # copy of its arguments for as long as it remembers the task, which for a window is
    # until the counts of its stored blocks are added up
    plan_key = dask.delayed(plan, pure=True, traverse=False)
    token = tokenize(plan.params, plan.stats_scope, plan.halo, reader, until, int_bounds, y_bounds,
                     x_bounds, refs_key, stats_key, plan_key)
    wname = f"window-{until}-{token}"
    dsk: dict = {}
    deps = [plan_key, stats_key] if refs_key is None else [plan_key, refs_key, stats_key]
    refs_arg = None if refs_key is None else refs_key.key
    for a, (i0, i1) in enumerate(int_bounds):
        for b, (y0, y1) in enumerate(y_bounds):
            for c, (x0, x1) in enumerate(x_bounds):
                dsk[(wname, a, b, c)] = (run_window, plan_key.key, reader, refs_arg, stats_key.key,
                                         i0, i1, slice(y0, y1), slice(x0, x1), until)
    ichunks = tuple(b - a for a, b in int_bounds)
    ychunks = tuple(b - a for a, b in y_bounds)
    xchunks = tuple(b - a for a, b in x_bounds)
    ngroup = sk.sizes[GROUP]
    out = {}
    for name in names:
        lname = f"{name}-{wname}"
        layer = {}
        if name == PIXELDQ:
            for b in range(len(y_bounds)):
                for c in range(len(x_bounds)):
                    layer[(lname, b, c)] = (dict.__getitem__, (wname, 0, b, c), name)
            chunks, dtype = (ychunks, xchunks), dims.PIXELDQ_DTYPE
        else:
            if name == "rate_terms":
                from .kernels.ramp_fit import RATE_TERMS

                chunks = ((1,) * len(int_bounds), (len(RATE_TERMS),), ychunks, xchunks)
                dtype, zero_axis = np.float64, True
            elif until == "ramp_fit" or name == ZEROFRAME:
                # rateints variables (integration, y, x)
                dtype = {ZEROFRAME: dims.FLOAT_DTYPE, "dq": np.uint32}.get(name, np.float32)
                chunks, zero_axis = (ichunks, ychunks, xchunks), False
            else:
                chunks = (ichunks, (ngroup,), ychunks, xchunks)
                dtype = dims.FLOAT_DTYPE if name == DATA else dims.GROUPDQ_DTYPE
                zero_axis = True  # the single group / term block
            for a in range(len(int_bounds)):
                for b in range(len(y_bounds)):
                    for c in range(len(x_bounds)):
                        key = (lname, a, 0, b, c) if zero_axis else (lname, a, b, c)
                        layer[key] = (dict.__getitem__, (wname, a, b, c), name)
        graph = {**dsk, **layer}
        for d in deps:
            graph.update(d.__dask_graph__())
        out[name] = da.Array(graph, lname, chunks=chunks, dtype=dtype)
    return out


# ------------------------------------------------------------------------------- pipeline


def _bounds(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _in_rounds(n: int, step: int, slots: int) -> int:
    """``step`` shortened (never lengthened) so that the ``ceil(n / step)`` blocks of ``n``
    come, as nearly as whole lengths allow, in whole rounds of ``slots`` (the cluster's
    worker threads).  The tiles wait for every block: three blocks of a SOSS segment (≈ 0.9 s
    each) on two one-thread workers run as two rounds, the second on one worker, where four
    shorter blocks make two full rounds."""
    step = max(1, min(step, n))
    if slots <= 1:
        return step
    blocks = -(-n // step)
    blocks = min(n, -(-blocks // slots) * slots)
    return max(1, -(-n // blocks))


def _worker_slots() -> int:
    """Worker threads of the dask.distributed cluster that is the active scheduler (1 when
    there is none: the local schedulers gain nothing from rounds)."""
    client = _distributed_client()
    if client is None:
        return 1
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a scheduler that does not answer is no reason to fail the run
        return 1


def _int_bounds(ds: xr.Dataset, stats_scope: str) -> list[tuple[int, int]]:
    if stats_scope == "exposure":
        return [(0, ds.sizes[INTEGRATION])]
    return dims.segment_bounds(ds)


def _settle_planes(probe: np.ndarray, plan: Plan, reader: Reader, refs, stats: dict,
                   int_block: int, band: int = 64) -> np.ndarray:
    """Jump's "every pixel DO_NOT_USE" planes (integration, group) from the probe's answer.

    A plane with a usable pixel in the probe is settled (not all DO_NOT_USE).  The planes the
    probe cannot settle are evaluated over every column band, one band at a time in this task
    (memory: one band), which only happens for frames that are unusable almost everywhere.
    """
    planes = np.array(probe, bool)
    if not planes.any():
        return planes
    ny, nx = plan.skeleton.sizes[Y], plan.skeleton.sizes[X]
    for i0, i1 in _bounds(planes.shape[0], int_block):
        todo = planes[i0:i1]
        for x0, x1 in _bounds(nx, band):
            if not todo.any():
                break
            gdq = run_window(plan, reader, refs, stats, i0, i1, slice(0, ny), slice(x0, x1),
                             until="jump")[GROUPDQ]
            todo &= ((gdq & np.uint8(1)) != 0).all(axis=(2, 3))
        planes[i0:i1] = todo
    return planes


def _settled(probe: da.Array, plan: Plan, reader: Reader, refs_key, stats: dict,
             int_block: int) -> da.Array:
    """:func:`_settle_planes` as one task of a lazy (integration, group) array."""
    from dask.base import tokenize

    stats_key = dask.delayed(dict(stats), pure=True)
    name = "plane-dnu-" + tokenize(probe, plan, reader, refs_key, stats_key, int_block)
    refs_arg = None if refs_key is None else refs_key.key
    graph = {(name, 0, 0): (_settle_planes, (probe.name, 0, 0), plan, reader, refs_arg,
                            stats_key.key, int_block)}
    graph.update(probe.__dask_graph__())
    graph.update(stats_key.__dask_graph__())
    if refs_key is not None:
        graph.update(refs_key.__dask_graph__())
    return da.Array(graph, name, chunks=tuple((n,) for n in probe.shape), dtype=bool)


#: rows × columns of the probe window at the centre of the frame (a short, wide window: the
#: uncal file is read row by row, see :func:`daskramp.pipeline.tile_shape`)
PROBE_SHAPE = (32, 64)


def probe_window(ny: int, nx: int) -> tuple[slice, slice]:
    """The ``(y, x)`` slices of the probe window of a ``ny × nx`` frame."""
    h, w = min(ny, PROBE_SHAPE[0]), min(nx, PROBE_SHAPE[1])
    y0, x0 = max(0, ny // 2 - h // 2), max(0, nx // 2 - w // 2)
    return slice(y0, y0 + h), slice(x0, x0 + w)


#: integrations per block when planes the probe cannot settle are evaluated over whole bands
SETTLE_INT_BLOCK = 16


def _stats_int_block(boxes, plan: Plan, ngroup: int, ny: int, nx: int) -> int:
    """Integrations per statistics window: blocks of about :data:`BLOCK_BYTES` of float32 in
    the largest window (a border strip or the probe, ghost margin included), so each task's
    fixed cost (≈ 40 ms) is small beside its work (blocks of 16 integrations would make 50
    tasks of a SOSS segment's border windows).  A refpix task (:func:`_refpix_block`) keeps every
    reference rectangle of its block: 0.5× the largest window for SOSS, 1.6× for a full
    frame (ghost margin 3)."""
    h = plan.halo
    boxes = list(boxes)
    ys, xs = probe_window(ny, nx)
    boxes.append((ys.start, ys.stop, xs.start, xs.stop))
    largest = max((min(ny, b - a + 2 * h) * min(nx, d - c + 2 * h) for a, b, c, d in boxes), default=1)
    return max(1, BLOCK_BYTES // (4 * ngroup * max(1, largest)))


def _refpix_block(plan: Plan, reader: Reader, refs, i0: int, i1: int) -> dict:
    """refpix's per-frame offsets (and the zero frame's) of integrations ``i0:i1``: the
    chain before refpix run on each reference-pixel rectangle, the offsets found here.
    Only the offsets leave the task, so no rectangle waits in worker memory for the others
    (as parts of an array, joined by separate tasks, up to ≈ 150 MB of them wait on one
    worker of a 4-segment SOSS run)."""
    from .steps import refpix as step

    rp = params_kwargs(plan.params["refpix"])
    data, zf, dq = [], [], []
    for a, b, c, d in step.reference_boxes(plan.skeleton, **rp):
        w = run_window(plan, reader, refs, {}, i0, i1, slice(a, b), slice(c, d), until="refpix")
        data.append(w[DATA])
        dq.append(w[PIXELDQ])
        if ZEROFRAME in w:
            zf.append(w[ZEROFRAME][:, None])
        del w
    out = {"refpix_offsets": step.offsets_from_boxes(data, dq, plan.skeleton, **rp)}
    out["refpix_zf_offsets"] = step.offsets_from_boxes(zf, dq, plan.skeleton, **rp) if zf else None
    return out


def _refpix_statistics(plan: Plan, reader: Reader, refs_key, ints) -> dict:
    """Lazy ``refpix_offsets`` and ``refpix_zf_offsets`` DataArrays ``(integration, group,
    refpix_term)``, one :func:`_refpix_block` task per block of integrations ``ints``."""
    from dask.base import tokenize

    from .steps import refpix as step

    sk = plan.skeleton
    ngroup = sk.sizes[GROUP]
    plan_key = dask.delayed(plan, pure=True, traverse=False)
    name = "refpix-block-" + tokenize(plan_key, reader, refs_key, ints)
    refs_arg = None if refs_key is None else refs_key.key
    blocks = {(name, a): (_refpix_block, plan_key.key, reader, refs_arg, i0, i1)
              for a, (i0, i1) in enumerate(ints)}
    deps = [plan_key] if refs_key is None else [plan_key, refs_key]
    nterms = step.offsets_size(sk, **params_kwargs(plan.params["refpix"]))
    out = {}
    for key, groups, keep in (("refpix_offsets", ngroup, {INTEGRATION, GROUP}),
                              ("refpix_zf_offsets", 1, {INTEGRATION})):
        if key == "refpix_zf_offsets" and not reader.has_zeroframe:
            out[key] = None
            continue
        kname = f"{key}-{name}"
        layer = {(kname, a, 0, 0): (dict.__getitem__, (name, a), key) for a in range(len(ints))}
        graph = {**blocks, **layer}
        for d in deps:
            graph.update(d.__dask_graph__())
        arr = da.Array(graph, kname, chunks=(tuple(b - a for a, b in ints), (groups,), (nterms,)),
                       dtype=np.float64)
        coords = {k: v for k, v in sk.coords.items() if set(v.dims) <= keep}
        out[key] = xr.DataArray(arr, dims=(INTEGRATION, GROUP, step.TERM_DIM), coords=coords)
    return out


def frame_statistics(ds: xr.Dataset, plan: Plan, reader: Reader, refs_key, *, compute: bool = True,
                     int_block: int | None = None) -> dict:
    """The whole-frame statistics (``refpix_offsets``, ``refpix_zf_offsets``, ``plane_dnu``)
    from small windows (see the module docstring); ``int_block`` integrations per window
    (default :func:`_stats_int_block`, shortened by :func:`_in_rounds` to whole rounds of
    the cluster's worker threads).

    With ``compute`` they are computed here through the active dask scheduler (one graph;
    the probe runs beside the refpix windows on stand-in offsets unless a step after refpix
    flags by level, see :func:`_probe_needs_offsets`); otherwise they are returned lazy and
    the product graph computes them (or the caller, see :func:`_computed`).
    """
    from .steps.refpix import reference_boxes

    nint, ngroup, ny, nx = ds.sizes[INTEGRATION], ds.sizes[GROUP], ds.sizes[Y], ds.sizes[X]
    stats: dict = {"refpix_offsets": None, "refpix_zf_offsets": None}
    boxes = reference_boxes(plan.skeleton, **params_kwargs(plan.params["refpix"]))
    if int_block is None:
        # cut as for one segment, the longest, whatever the exposure's length: a block of
        # more integrations is a task of more memory (cut for the whole 4-segment exposure,
        # the blocks would have 53 integrations, not 40, and peak above the tiles), and at
        # most one round is then left part-filled, once per run
        longest = max(b - a for a, b in dims.segment_bounds(ds))
        int_block = _in_rounds(longest, _stats_int_block(boxes, plan, ngroup, ny, nx), _worker_slots())
    ints = _bounds(nint, int_block)
    if boxes:
        stats.update(_refpix_statistics(plan, reader, refs_key, ints))
    jp = plan.params["jump"]
    if not jp.skip:
        ys, xs = probe_window(ny, nx)
        given = stats if _probe_needs_offsets(plan.params) else _stand_ins(stats, lazy=True)
        arrs = staged(plan, reader, refs_key, given, until="jump", int_bounds=ints,
                      y_bounds=[(ys.start, ys.stop)], x_bounds=[(xs.start, xs.stop)], names=(GROUPDQ,))
        probe = ((arrs[GROUPDQ] & np.uint8(1)) != 0).all(axis=(2, 3)).rechunk((nint, ngroup))
        stats["plane_dnu"] = _settled(probe, plan, reader, refs_key, given, SETTLE_INT_BLOCK)
    else:
        stats["plane_dnu"] = None
    return _computed(stats)[0] if compute else stats


def _distributed_client():
    """The dask.distributed client that is the active scheduler, or None."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    from dask.base import get_scheduler

    return client if get_scheduler() == client.get else None


def _finished(stats: dict) -> dict:
    """Computed statistics as the tiles take them (``plane_dnu`` a plain array)."""
    stats = dict(stats)
    if stats.get("plane_dnu") is not None:
        dnu = stats["plane_dnu"]
        stats["plane_dnu"] = np.asarray(dnu.data if isinstance(dnu, xr.DataArray) else dnu)
    return stats


def _with(stats: dict, extra: dict) -> dict:
    return {**stats, **extra}


def _computed(stats: dict, *also):
    """``stats`` (and the ``also`` collections) computed in one call of the active scheduler."""
    stats, *rest = dask.compute(stats, *also)
    if stats.get("plane_dnu") is not None:
        stats["plane_dnu"] = np.asarray(stats["plane_dnu"])
    return (stats, *rest)


def _row_align(reader: Reader, ds: xr.Dataset) -> int:
    """Rows a tile keeps together so that it reads whole chunks of its source: a Zarr store's
    chunk length along ``y`` (its chunks are decoded whole), a dask array's largest ``y``
    chunk (computed whole before being sliced), 1 for the uncal files (read row by row)."""
    if reader.kind == "fits":
        return 1
    if reader.kind == "zarr":
        import zarr

        grp = _ZARR.get(reader.path) or zarr.open_group(reader.path, mode="r", zarr_format=3)
        return int(grp[DATA].chunks[2])
    chunks = ds[DATA].chunks
    return max(chunks[2]) if chunks is not None else ds.sizes[Y]


def detector1_fused(ds: xr.Dataset, refs, *, params, provenance: dict, stats_scope: str,
                    memory_limit: int | None, tile_columns: int | None, frame_stats,
                    tile_rows: int | None = None):
    """:func:`daskramp.pipeline.detector1` in the fused tile layout (same arguments, same
    products).  ``frame_stats``: "compute" computes the whole-frame statistics first (small
    windows, see :func:`frame_statistics`), None leaves them lazy in the product graph, a
    mapping gives them."""
    from .config import ConfigError
    from .pipeline import TILE_MEMORY_FACTOR, Detector1Result, finish, plan_tiles, tile_shape

    p = _loaded_params(params)
    h = halo_width(p)
    plan = Plan(skeleton=_skeleton(ds), var_attrs={k: dict(v.attrs) for k, v in ds.data_vars.items()},
                params=dict(p), stats_scope=stats_scope, halo=h)
    reader = reader_for(ds)
    # the reference files are one graph key, not inside every task; a set read from files is
    # read again by the worker that computes the key (tens of MB stay out of the graph)
    if refs is None:
        refs_key = None
    elif refs.recipe() is not None:
        from .io.refs import RefSet

        refs_key = dask.delayed(RefSet.from_recipe, pure=True)(*refs.recipe())
    else:
        refs_key = dask.delayed(refs, pure=True)
    if isinstance(frame_stats, Mapping):
        stats = {k: frame_stats.get(k) for k in ("refpix_offsets", "refpix_zf_offsets", "plane_dnu")}
        if stats["plane_dnu"] is None and not p["jump"].skip:
            stats = frame_statistics(ds, plan, reader, refs_key)
    elif frame_stats in ("compute", "submit"):
        if refs_key is not None:
            # read once and kept for the products too: computed only for the statistics,
            # the key would be released after them and read again by the product graph
            (refs_key,) = dask.persist(refs_key)
        stats = frame_statistics(ds, plan, reader, refs_key, compute=False)
        client = _distributed_client() if frame_stats == "submit" else None
        if client is None:
            # the statuses (the chain on a one-pixel window) found by a worker meanwhile
            status = dask.delayed(_status_of, pure=True)(plan, reader, refs_key,
                                                         _status_stats(plan, stats), "ramp_fit")
            stats, status = _computed(stats, status)
        else:
            # the statistics run on the cluster while this process builds and submits the
            # product graph, whose tiles wait for them there.  The statuses (needed for the
            # products' attributes) are found here, on a one-pixel window (≈ 0.9 s in a fresh
            # process, mostly loading the compiled kernels): as a task they would queue behind
            # the reference files' load and the statistics windows, and this process would
            # wait ≈ 1.9 s for them (SOSS segment, 2 workers)
            lazy = stats
            (stats,) = client.compute([dask.delayed(_finished, pure=True)(lazy)])
            status = _status(plan, reader, refs, lazy, until="ramp_fit")
    elif frame_stats is None:
        stats = frame_statistics(ds, plan, reader, refs_key, compute=False)
    else:
        raise ConfigError(f"frame_stats must be a mapping, 'compute' or 'submit', got {frame_stats!r}")
    extra = {}
    gain = None if refs is None else refs.get("gain")
    if gain is not None:
        # after-jump thresholds scale with the median gain of the whole subarray, not a window's
        extra["gain_median"] = float(np.nanmedian(np.asarray(gain.arrays["SCI"], np.float32)))
    if isinstance(stats, dict):
        if isinstance(stats.get("plane_dnu"), xr.DataArray):
            stats["plane_dnu"] = stats["plane_dnu"].data
        stats.update(extra)
        result_stats = stats
    else:
        # a Future of the statistics, with the figures found here: one key for every tile
        stats = dask.delayed(_with, pure=True)(stats, extra)
        result_stats = {k: stats[k] for k in ("refpix_offsets", "refpix_zf_offsets", "plane_dnu")}

    # the ghost margin is part of each task's memory too
    cols = plan_tiles(ds, memory_limit=memory_limit, stats_scope=stats_scope, tile_columns=tile_columns,
                      ghost=h)
    nx, ny = ds.sizes[X], ds.sizes[Y]
    ints = _int_bounds(ds, stats_scope)
    # the same pixels in a shorter, wider tile: fewer rows of each frame to read
    budget = None
    if memory_limit is not None:
        nint = max(b - a for a, b in ints)
        budget = int(memory_limit // (TILE_MEMORY_FACTOR * 4 * nint * ds.sizes[GROUP]))
    rows, cols = tile_shape(ny, nx, columns=cols, ghost=h, pixel_budget=budget,
                            row_align=_row_align(reader, ds), tile_rows=tile_rows)
    cube = ["data", "err", "var_poisson", "var_rnoise", "dq"]
    if p["ramp_fit"].save_intercepts:
        cube.append("intercept")
    arrs = staged(plan, reader, refs_key, stats, until="ramp_fit", int_bounds=ints,
                  y_bounds=_bounds(ny, rows), x_bounds=_bounds(nx, cols),
                  names=(*cube, "rate_terms", PIXELDQ))
    cube_coords = {k: v for k, v in plan.skeleton.coords.items() if set(v.dims) <= set(dims.CUBE_DIMS)}
    parts = {k: xr.DataArray(arrs[k], dims=dims.CUBE_DIMS, coords=cube_coords) for k in cube}
    parts["rate_terms"] = xr.DataArray(arrs["rate_terms"], dims=("block", "term", *dims.IMAGE_DIMS),
                                       coords={Y: ds[Y], X: ds[X]})
    parts["nints"] = ds.sizes[INTEGRATION]
    pixeldq = xr.DataArray(arrs[PIXELDQ], dims=dims.IMAGE_DIMS, coords={Y: ds[Y], X: ds[X]})
    if frame_stats not in ("compute", "submit"):
        status = _status(plan, reader, refs, stats, until="ramp_fit")
    status_attrs, records = status
    provenance["steps"].update(records)
    provenance["tile_columns"] = cols
    provenance["tile_rows"] = rows
    provenance["layout"] = {"fused": True, "ghost_columns": h,
                            "tiles": len(ints) * len(_bounds(ny, rows)) * len(_bounds(nx, cols))}
    meta = plan.skeleton.assign({PIXELDQ: pixeldq})
    meta.attrs.update(status_attrs)
    segments = SegmentProducts(plan=plan, reader=reader, refs_key=refs_key, stats=stats, refs=refs,
                               params=p, provenance=copy.deepcopy(provenance),
                               status_attrs=dict(status_attrs), int_bounds=tuple(ints),
                               y_bounds=tuple(_bounds(ny, rows)), x_bounds=tuple(_bounds(nx, cols)),
                               cube=tuple(cube))
    rate, rateints = finish(parts, meta, refs, p, provenance, pixeldq=pixeldq)
    return Detector1Result(rate=rate, rateints=rateints, intermediates={}, provenance=provenance,
                           frame_stats=result_stats, segments=segments)


@dataclass(frozen=True)
class SegmentProducts:
    """The fused products of one integration block (a segment) at a time, and the rate from
    their summed terms: what :mod:`daskramp.segments` submits one block after another.

    The windows of block ``a`` are the windows of the whole-exposure graph of
    :func:`detector1_fused` with the same arguments, so every value is the same.
    """

    plan: Plan
    reader: Reader
    refs_key: object
    stats: object
    refs: object
    params: dict
    provenance: dict
    status_attrs: dict
    int_bounds: tuple
    y_bounds: tuple
    x_bounds: tuple
    cube: tuple

    def _parts(self, a: int):
        i0, i1 = self.int_bounds[a]
        arrs = staged(self.plan, self.reader, self.refs_key, self.stats, until="ramp_fit",
                      int_bounds=[(i0, i1)], y_bounds=list(self.y_bounds), x_bounds=list(self.x_bounds),
                      names=(*self.cube, "rate_terms", PIXELDQ))
        sk = self.plan.skeleton.isel({INTEGRATION: slice(i0, i1)})
        coords = {k: v for k, v in sk.coords.items() if set(v.dims) <= set(dims.CUBE_DIMS)}
        image = {Y: sk[Y], X: sk[X]}
        parts = {k: xr.DataArray(arrs[k], dims=dims.CUBE_DIMS, coords=coords) for k in self.cube}
        parts["rate_terms"] = xr.DataArray(arrs["rate_terms"], dims=("block", "term", *dims.IMAGE_DIMS),
                                           coords=image)
        parts["nints"] = i1 - i0
        pixeldq = xr.DataArray(arrs[PIXELDQ], dims=dims.IMAGE_DIMS, coords=image)
        return sk, parts, pixeldq

    def _finish(self, sk: xr.Dataset, parts: dict, pixeldq: xr.DataArray):
        from .pipeline import finish

        meta = sk.assign({PIXELDQ: pixeldq})
        meta.attrs.update(self.status_attrs)
        return finish(parts, meta, self.refs, self.params, copy.deepcopy(self.provenance),
                      pixeldq=pixeldq)

    def block(self, a: int) -> tuple[xr.Dataset, da.Array, da.Array]:
        """Block ``a``'s lazy ``rateints`` (its integrations only), its rate terms
        (1, term, y, x) float64 and its pixeldq (y, x): one task per tile and block."""
        sk, parts, pixeldq = self._parts(a)
        _, rateints = self._finish(sk, parts, pixeldq)
        return rateints, parts["rate_terms"].data, pixeldq.data

    def rate(self, terms: da.Array, pixeldq: da.Array) -> xr.Dataset:
        """The exposure's lazy ``rate`` from its terms summed over every block in order
        (1, term, y, x; :func:`daskramp.kernels.ramp_fit.add_block_terms`) and the first
        block's pixeldq."""
        _, parts, _ = self._parts(0)  # their rateints is built but never computed
        image = {Y: self.plan.skeleton[Y], X: self.plan.skeleton[X]}
        parts["rate_terms"] = xr.DataArray(terms, dims=("block", "term", *dims.IMAGE_DIMS), coords=image)
        parts["nints"] = self.int_bounds[-1][1]
        pdq = xr.DataArray(pixeldq, dims=dims.IMAGE_DIMS, coords=image)
        rate, _ = self._finish(self.plan.skeleton, parts, pdq)
        return rate


__all__ = ["Plan", "Reader", "SegmentProducts", "detector1_fused", "frame_statistics", "halo_width", "reader_for",
           "run_window", "staged", "unsupported"]
