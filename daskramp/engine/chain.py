"""The chain on one window: read a tile's pixels, run the steps on them as numpy.

Each task of the fused layout (:mod:`daskramp.engine.fused`)

1. reads its own window straight from the source (:class:`Reader`) — every integration of
   one segment (or of the exposure with ``stats_scope="exposure"``), all groups, a window of
   rows × columns widened by a *ghost* margin on each side
   (:func:`daskramp.engine.policy.halo_width`: the sum of the halos of the neighbour-looking
   steps) — from the uncal FITS files (only the window's bytes are mapped), a Zarr store, or
   any array;
2. runs the same step wrappers on it as numpy (:func:`daskramp.engine.stages.ramp_steps`,
   the window being a smaller subarray: :func:`daskramp.dims.window`);
3. trims the ghost margin and returns the products of its interior: the rateints variables
   and its sums of the rate terms over integrations
   (:func:`daskramp.steps.ramp_fit.block_products`).

The whole-frame statistics windows cannot see are given (:mod:`daskramp.engine.stats`);
the windows that compute them run here too (:func:`refpix_block`, :func:`settle_planes`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
import zarr

from .. import dims
from .. import steps as registry
from ..dims import DATA, GROUP, GROUPDQ, INTEGRATION, PIXELDQ, ZEROFRAME, X, Y
from ..io import checkpoint as checkpoint_store
from ..io.store import VerifiedArray
from ..io.uncal import read_window
from ..kernels import group_1overf as oneoverf_kernel
from ..steps import params_kwargs
from ..steps import refpix as refpix_step
from ..steps._apply import owned_window
from .plan import BLOCK_BYTES, bounds
from .policy import halo_width, shrinks
from .stages import call_step, ramp_steps

#: per-process cache of opened Zarr arrays (path → group)
_ZARR: dict = {}


@dataclass(frozen=True)
class Reader:
    """Where the raw ramp of an exposure lives; :meth:`read` returns numpy windows.

    ``kind`` is ``"fits"`` (uncal segment files: ``segments`` = (path, byte offset,
    frame shape, nints, zeroframe (offset, shape) or None)), ``"zarr"`` (a store at ``path``),
    ``"checkpoint"`` (the ramp as a step receives it, every variable of it, in a store at
    ``path``: :mod:`daskramp.io.checkpoint`) or ``"arrays"`` (``arrays``: variable → numpy or
    dask array, sliced and computed in the task).  ``replace``: pairs ``(stored, name)`` of a
    checkpoint whose variable ``stored`` is read as ``name`` (``name`` itself is not read).
    """

    kind: str
    segments: tuple = ()
    path: str = ""
    arrays: tuple = ()
    has_zeroframe: bool = False
    replace: tuple = ()

    def read(self, i0: int, i1: int, ys: slice, xs: slice, groups=None, out=None) -> dict[str, np.ndarray]:
        """``data`` (uint16 or as stored), ``groupdq``/``pixeldq`` when the source has them,
        ``zeroframe`` when present; integrations ``i0:i1`` of the exposure; only the
        ``groups`` (indices) of the ramps when given.  The arrays are new, the caller's own;
        ``out`` (an array of the window's shape, e.g. float32) receives ``data``, converted."""
        if out is not None:
            if self.kind == "fits":
                return self._read_fits(i0, i1, ys, xs, groups, out=out)
            res = self.read(i0, i1, ys, xs, groups)
            out[...] = res[DATA]
            res[DATA] = out
            return res
        gs = slice(None) if groups is None else list(groups)
        if self.kind == "fits":
            return self._read_fits(i0, i1, ys, xs, groups)
        if self.kind == "checkpoint":
            if groups is not None:
                raise ValueError("a checkpoint is read with every group")
            if not self.replace:
                return checkpoint_store.read(self.path, i0, i1, ys, xs)
            stored = dict(self.replace)
            hidden = set(stored.values())
            names = [n for n in checkpoint_store.names(self.path) if n not in hidden]
            out = checkpoint_store.read(self.path, i0, i1, ys, xs, names)
            return {stored.get(k, k): v for k, v in out.items()}
        if self.kind == "zarr":
            # a lost chunk or one whose crc32c does not match raises, naming it (never the
            # fill value)
            data = VerifiedArray(self.path, DATA)[i0:i1, :, ys, xs]
            out = {DATA: data if groups is None else data[:, gs]}
            if self.has_zeroframe:
                out[ZEROFRAME] = VerifiedArray(self.path, ZEROFRAME)[i0:i1, ys, xs]
            return out
        out = {}
        for name, arr in self.arrays:
            key = {4: (slice(i0, i1), slice(None), ys, xs), 3: (slice(i0, i1), ys, xs), 2: (ys, xs)}[arr.ndim]
            part = arr[key]
            if arr.ndim == 4 and groups is not None:
                part = part[:, gs]
            # a copy: the window's steps may write over what they are given, and a slice of a
            # numpy array (or a dask array made from one) is a view of the caller's data
            out[name] = np.array(part.compute(scheduler="sync") if hasattr(part, "dask") else part)
        return out

    def _read_fits(self, i0, i1, ys, xs, groups=None, out=None):
        data, zf = [], []
        start = 0
        for path, offset, frame, nint, zeroframe in self.segments:
            a, b = max(i0, start), min(i1, start + nint)
            if a < b:
                dst = None if out is None else out[a - i0: b - i0]
                data.append(read_window(path, offset, frame, a - start, b - start, ys, xs, groups=groups,
                                        out=dst))
                if self.has_zeroframe:
                    zf.append(read_window(path, zeroframe[0], zeroframe[1], a - start, b - start, ys, xs))
            start += nint
        res = {DATA: out if out is not None else data[0] if len(data) == 1 else np.concatenate(data)}
        if self.has_zeroframe:
            res[ZEROFRAME] = zf[0] if len(zf) == 1 else np.concatenate(zf)
        return res


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


@dataclass(frozen=True)
class Plan:
    """Everything a window task needs besides the pixels (small, shipped with each task)."""

    skeleton: xr.Dataset  # the exposure's coords and attrs, no data variables
    var_attrs: dict
    params: dict
    stats_scope: str
    halo: int


def window_plan(ds: xr.Dataset, params: Mapping, stats_scope: str) -> Plan:
    """The :class:`Plan` of windows of ``ds`` for the validated step ``params`` (image
    parameters given as paths loaded here, once)."""
    p = loaded_params(params)
    return Plan(skeleton=skeleton(ds), var_attrs={k: dict(v.attrs) for k, v in ds.data_vars.items()},
                params=dict(p), stats_scope=stats_scope, halo=halo_width(p))


def skeleton(ds: xr.Dataset) -> xr.Dataset:
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
    for name, arr in raw.items():
        # what the steps before a checkpoint added (average_dark_current)
        if name not in variables:
            shape_dims = {2: dims.IMAGE_DIMS, 3: dims.CUBE_DIMS, 4: dims.RAMP_DIMS}[arr.ndim]
            variables[name] = (shape_dims, arr, plan.var_attrs.get(name, {}))
    return win.assign(variables)


def _image_params():
    """``(step, parameter, FITS loader)`` of the step parameters that are (y, x) images of the
    whole subarray (their specs' ``image_params``)."""
    return [(s.name, field, load) for s in registry.active() for field, load in s.image_params]


def loaded_params(params: Mapping) -> dict:
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


def given_stats(stats: dict, i0: int, i1: int) -> dict:
    """The whole-frame statistics of integrations ``i0:i1`` (lazy ones stay lazy)."""
    out = {}
    for k, v in stats.items():
        if v is None or np.ndim(v) == 0:
            out[k] = v  # None, or a scalar of the whole exposure (gain_median)
        elif isinstance(v, xr.DataArray):
            # images of the whole frame (the draft rate) are the same for every integration
            out[k] = v.isel({INTEGRATION: slice(i0, i1)}) if INTEGRATION in v.dims else v
        else:
            out[k] = (v if dask.is_dask_collection(v) else np.asarray(v))[i0:i1]
    return out


def _widen(s: slice, h: int, n: int) -> tuple[slice, slice]:
    """The window ``s`` widened by ``h`` on each side (clipped), and ``s`` relative to it."""
    a, b = max(0, s.start - h), min(n, s.stop + h)
    return slice(a, b), slice(s.start - a, s.stop - a)


def _run_stages(plan: Plan, ds: xr.Dataset, refs, given: dict, stages, start, wy: slice, wx: slice,
                margin: int, keep, provenance):
    """Run ``ds`` through ``stages`` (``(stop, k)``: the steps up to ``stop``, then cut ``k``
    ghost columns/rows around ``keep``) from step ``start``."""
    frame = (plan.skeleton.sizes[Y], plan.skeleton.sizes[X])
    wrefs = None
    for stop, k in stages:
        wrefs = None if refs is None else refs.window(frame, wy, wx)
        # the window's arrays were read for this task alone (Reader.read): the steps may
        # write their results over their inputs
        with owned_window():
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


def _in_place(base: np.ndarray, parts: list, blocks: list, i0: int, where: tuple[slice, slice]):
    """``base[..., where]`` when every block's ``data`` is that view's integrations of the
    block (its steps wrote over the array the block was read into), else None."""
    whole = base[..., where[0], where[1]]
    for (a, b), part in zip(blocks, parts):
        v = part[DATA].values
        w = whole[a - i0: b - i0]
        if (v.shape != w.shape or v.strides != w.strides or v.dtype != w.dtype
                or v.__array_interface__["data"][0] != w.__array_interface__["data"][0]):
            return None
    return whole


def _assemble(plan: Plan, parts: list, blocks: list, i0: int, i1: int, base: np.ndarray | None = None,
              where: tuple[slice, slice] | None = None) -> xr.Dataset:
    """One window exposure for integrations ``i0:i1`` from the results of its blocks.
    ``base``: the array the blocks' ``data`` was read into, ``where`` the part of its
    window the blocks ended with; their ``data`` is taken as it lies there when the steps
    wrote it in place (nothing copied)."""
    last = parts[-1]
    variables = {}
    for name, var in last.data_vars.items():
        if INTEGRATION in var.dims:
            full = None
            if name == DATA and base is not None:
                full = _in_place(base, parts, blocks, i0, where)
                if full is not None:
                    variables[name] = (var.dims, full, var.attrs)
                    continue
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
           block: int | None = None, start: str | None = None):
    """Read the window ``[i0:i1, :, wy, wx]`` and run the steps before ``until`` on it as
    numpy; returns the window's exposure after them, the reference files cut to it and its
    ``(y, x)`` slices of the frame.

    With ``keep`` (the frame slices whose result is wanted; ``wy``/``wx`` being them widened
    by ``plan.halo``) the window is cut down to ``keep`` widened by what the remaining steps
    still need (:func:`shrinks`): once after the steps before the pooling step, then each
    time a later step that looks at neighbours has run, so the later steps do not process
    ghost pixels whose results are not exact anyway.

    The steps before jump (the first that pools integrations) work on each integration alone
    (the whole-frame statistics they need are given): they run ``block`` integrations at a
    time (default: blocks of about :data:`BLOCK_BYTES`), each read into its integrations of the
    window's one float32 cube and written over there, which jump and ramp_fit then take whole
    (the blocks' other variables are joined).

    With ``start`` (a step after jump) the window is read from a checkpoint (``reader`` of
    kind ``"checkpoint"``: the ramp as that step receives it) and the steps from ``start`` on
    are run.
    """
    order = registry.step_order().index
    stops = []
    if keep is not None:
        stops = [(s, k) for s, k in shrinks(plan.params)
                 if order(s) < order(until) and (start is None or order(s) > order(start))]
    pool = registry.pooling_step()
    if start is not None:
        # the ramp as ``start`` receives it, from a checkpoint: the steps left run on every
        # integration of the window at once, as after the pooling step
        if order(start) <= order(pool):
            raise ValueError(f"a window starts at {start!r}, before {pool!r}: only after it")
        ds = _window_exposure(plan, reader.read(i0, i1, wy, wx), i0, i1, wy, wx)
        ds, wrefs, wy, wx, _ = _run_stages(plan, ds, refs, given, [*stops, (until, 0)], start, wy, wx,
                                           plan.halo, keep, provenance)
        return ds, wrefs, (wy, wx)
    local = pool if order(until) > order(pool) else until
    # the integration blocks run every step before ``local`` on the whole widened window and
    # are cut once at the end: the steps write over the array the block was read into, and a
    # cut in between would leave the later ones a strided view of it (a few % of ghost pixels
    # computed in vain cost less than that)
    cut = sum(k for s, k in stops if order(s) <= order(local))
    first = [(local, cut)]
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
    # the window's ramp, converted to float32 as it is read, block by block; the steps write
    # their results over it, so the blocks need no assembling
    base = np.empty((i1 - i0, plan.skeleton.sizes[GROUP], wy.stop - wy.start, wx.stop - wx.start),
                    dims.FLOAT_DTYPE)
    for a, b in blocks:
        ds = _window_exposure(plan, reader.read(a, b, wy, wx, out=base[a - i0: b - i0]), a, b, wy, wx)
        ds, wrefs, wy_b, wx_b, margin = _run_stages(
            plan, ds, refs, given_stats(given, a - i0, b - i0), first, None, wy, wx, plan.halo,
            keep, provenance)
        parts.append(ds)
    where = (slice(wy_b.start - wy.start, wy_b.stop - wy.start), slice(wx_b.start - wx.start, wx_b.stop - wx.start))
    wy, wx = wy_b, wx_b
    ds = parts[0] if len(parts) == 1 else _assemble(plan, parts, blocks, i0, i1, base, where)
    del base
    del parts
    if rest:
        ds, wrefs, wy, wx, margin = _run_stages(plan, ds, refs, given, rest, local, wy, wx, margin,
                                                keep, provenance)
    return ds, wrefs, (wy, wx)


def run_window(plan: Plan, reader: Reader, refs, stats: dict, i0: int, i1: int, ys: slice,
               xs: slice, until: str, start: str | None = None) -> dict[str, np.ndarray]:
    """Read a window widened by the ghost margin, run the steps before ``until`` on it (from
    ``start``, reading a checkpoint, when given) and return its interior:
    ``data``/``groupdq``/``pixeldq`` (and ``zeroframe``), or for ``until="ramp_fit"`` the
    :func:`daskramp.steps.ramp_fit.block_products` of its ramps and ``pixeldq``."""
    sk = plan.skeleton
    ny, nx = sk.sizes[Y], sk.sizes[X]
    wy, _ = _widen(ys, plan.halo, ny)
    wx, _ = _widen(xs, plan.halo, nx)
    out, wrefs, (wy, wx) = _chain(plan, reader, refs, given_stats(stats, i0, i1), i0, i1, wy, wx,
                                  until, keep=(ys, xs), start=start)
    iy = slice(ys.start - wy.start, ys.stop - wy.start)
    ix = slice(xs.start - wx.start, xs.stop - wx.start)
    if until == "ramp_fit":
        # only the interior is fitted (ramp_fit is pixel-local), straight to its products:
        # 20 instead of 88 bytes per pixel and integration wait in worker memory
        out = dims.window(out, y=iy, x=ix)
        res = call_step("ramp_fit", out, wrefs, plan.params["ramp_fit"],
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


def status_of(plan: Plan, reader: Reader, refs, given: dict, until: str) -> tuple[dict, dict]:
    prov: dict = {}
    out, _, _ = _chain(plan, reader, refs, given, 0, 1, slice(0, 1), slice(0, 1), until, provenance=prov)
    attrs = {k: v for k, v in out.attrs.items() if k.startswith("S_")}
    return attrs, prov.get("steps", {})


def layout_at(plan: Plan, reader: Reader, refs, given: dict, step: str) -> tuple[dict, dict]:
    """The variables ``{name: (dims, dtype)}`` of the ramp as ``step`` receives it, and its
    attributes (those of a window's position left out), from the chain run on one pixel."""
    out, _, _ = _chain(plan, reader, refs, given, 0, 1, slice(0, 1), slice(0, 1), step)
    layout = {k: (tuple(v.dims), v.dtype) for k, v in out.data_vars.items()}
    attrs = {k: v for k, v in out.attrs.items() if k not in ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")}
    return layout, attrs


def checkpoint_window(plan: Plan, reader: Reader, refs, stats: dict, i0: int, i1: int, ys: slice,
                      xs: slice, step: str, path: str, created=None, until: str | None = None
                      ) -> dict[str, np.ndarray]:
    """Run a window of integration block ``i0:i1`` up to ``step`` (up to ``until`` when
    given: the step after ``step`` for a frame pass that runs after the step's window part),
    write its interior (every variable, and what the step's frame pass saves) into the
    block's checkpoint store at ``path`` (:mod:`daskramp.io.checkpoint`) and return what the
    pass takes from each tile (its spec's ``frame_pass.tile``) with the window's ``pixeldq``.
    ``created``: the task that made the store (a dependency only)."""
    sk = plan.skeleton
    ny, nx = sk.sizes[Y], sk.sizes[X]
    wy, _ = _widen(ys, plan.halo, ny)
    wx, _ = _widen(xs, plan.halo, nx)
    out, _, (wy, wx) = _chain(plan, reader, refs, given_stats(stats, i0, i1), i0, i1, wy, wx,
                              until or step, keep=(ys, xs))
    out = dims.window(out, y=slice(ys.start - wy.start, ys.stop - wy.start),
                      x=slice(xs.start - wx.start, xs.stop - wx.start))
    wrefs = None if refs is None else refs.window((ny, nx), ys, xs)
    saved, returned = registry.spec(step).frame_pass.tile(out, wrefs, plan.params[step])
    arrays = {k: v.values for k, v in out.data_vars.items()}
    arrays.update(saved)
    checkpoint_store.write(path, arrays, ys, xs)
    returned = dict(returned)
    returned[PIXELDQ] = np.ascontiguousarray(out[PIXELDQ].values)
    del out, arrays, saved
    release_free_memory()
    return returned


def row_align(reader: Reader, ds: xr.Dataset) -> int:
    """Rows a tile keeps together so that it reads whole chunks of its source: a Zarr store's
    chunk length along ``y`` (its chunks are decoded whole), a dask array's largest ``y``
    chunk (computed whole before being sliced), 1 for the uncal files (read row by row)."""
    if reader.kind == "fits":
        return 1
    if reader.kind == "zarr":
        grp = _ZARR.get(reader.path) or zarr.open_group(reader.path, mode="r", zarr_format=3)
        return int(grp[DATA].chunks[2])
    chunks = ds[DATA].chunks
    return max(chunks[2]) if chunks is not None else ds.sizes[Y]


def settle_planes(probe: np.ndarray, plan: Plan, reader: Reader, refs, stats: dict,
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
    for i0, i1 in bounds(planes.shape[0], int_block):
        todo = planes[i0:i1]
        for x0, x1 in bounds(nx, band):
            if not todo.any():
                break
            gdq = run_window(plan, reader, refs, stats, i0, i1, slice(0, ny), slice(x0, x1),
                             until="jump")[GROUPDQ]
            todo &= ((gdq & np.uint8(1)) != 0).all(axis=(2, 3))
        planes[i0:i1] = todo
    return planes


def draft_window(reader: Reader, i0: int, i1: int, ys: slice, xs: slice, *, ngroup: int, tgroup: float,
                 block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """The draft slope (:func:`daskramp.kernels.group_1overf.draft_slope`) of the raw
    window ``[i0:i1, :, ys, xs]`` of one segment, (y, x) float32 DN/s, from its first and
    last groups, read ``block_bytes`` at a time."""
    npix = len(range(*ys.indices(10**9))) * len(range(*xs.indices(10**9)))
    if ngroup < 2:
        return np.zeros((len(range(*ys.indices(10**9))), len(range(*xs.indices(10**9)))), np.float32)
    # only the first and last groups are read: the pages of the others are never touched
    step = max(1, int(block_bytes) // max(1, 2 * 2 * npix))
    ends = [reader.read(a, min(i1, a + step), ys, xs, groups=(0, ngroup - 1))[DATA]
            for a in range(i0, i1, step)]
    ramp = np.concatenate(ends)
    # the two groups are (ngroup - 1) group times apart
    return oneoverf_kernel.draft_slope(ramp, tgroup=tgroup * (ngroup - 1))


def refpix_block(plan: Plan, reader: Reader, refs, i0: int, i1: int) -> dict:
    """refpix's per-frame offsets (and the zero frame's) of integrations ``i0:i1``: the
    chain before refpix run on each reference-pixel rectangle, the offsets found here.
    Only the offsets leave the task, so no rectangle waits in worker memory for the others
    (as parts of an array, joined by separate tasks, up to ≈ 150 MB of them wait on one
    worker of a 4-segment SOSS run)."""
    rp = params_kwargs(plan.params["refpix"])
    data, zf, dq = [], [], []
    for a, b, c, d in refpix_step.reference_boxes(plan.skeleton, **rp):
        w = run_window(plan, reader, refs, {}, i0, i1, slice(a, b), slice(c, d), until="refpix")
        data.append(w[DATA])
        dq.append(w[PIXELDQ])
        if ZEROFRAME in w:
            zf.append(w[ZEROFRAME][:, None])
        del w
    out = {"refpix_offsets": refpix_step.offsets_from_boxes(data, dq, plan.skeleton, **rp)}
    out["refpix_zf_offsets"] = refpix_step.offsets_from_boxes(zf, dq, plan.skeleton, **rp) if zf else None
    return out
