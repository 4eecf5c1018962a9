"""Detector1 fused: one task per tile runs every step (:mod:`daskramp.engine.chain`).

Tiles never exchange data, so the graph is one task per tile (plus small getters) and a
worker's memory is one tile's chain; the whole-frame statistics come first
(:mod:`daskramp.engine.stats`).  :class:`SegmentProducts` gives the same products one
integration block at a time (:mod:`daskramp.engine.submit`).  The products equal the
step-by-step layout's exactly (``tests/test_fused.py``)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import dims
from ..cluster import distributed_client
from ..config import ConfigError
from ..dims import GROUP, INTEGRATION, PIXELDQ, X, Y
from ..io import checkpoint as checkpoint_store
from .chain import Plan, Reader, layout_at, reader_for, row_align, status_of, window_plan
from .checkpoint import checkpoint_at, frame_step, resumed, with_deferred
from .graph import refs_graph_key, staged
from .plan import CHAIN_FACTOR, bounds, int_bounds, plan_tiles, sizing_budget, tile_shape
from .policy import whole_axis
from .stages import Detector1Result, finish
from .stats import (
    STAT_KEYS,
    complete,
    computed_stats,
    finished_stats,
    frame_statistics,
    status_stats,
    statuses,
    with_stats,
)


def detector1_fused(ds: xr.Dataset, refs, *, params, provenance: dict, stats_scope: str,
                    memory_limit: int | None, tile_columns: int | None, frame_stats,
                    tile_rows: int | None = None, scratch=None):
    """:func:`daskramp.pipeline.detector1` in the fused tile layout (same arguments, same
    products).  ``frame_stats``: "compute" computes the whole-frame statistics first (small
    windows, see :func:`frame_statistics`), None leaves them lazy in the product graph, a
    mapping gives them.  ``scratch``: the directory of the checkpoint stores of a step that
    needs whole frames (:mod:`daskramp.engine.checkpoint`; required when one runs)."""
    plan = window_plan(ds, params, stats_scope)
    p, h = plan.params, plan.halo
    reader = reader_for(ds)
    refs_key = refs_graph_key(refs)
    if isinstance(frame_stats, Mapping):
        stats = {k: frame_stats.get(k) for k in STAT_KEYS}
        if not complete(stats, p):
            stats = frame_statistics(ds, plan, reader, refs_key)
    elif frame_stats in ("compute", "submit"):
        if refs_key is not None:
            # read once and kept for the products too: computed only for the statistics,
            # the key would be released after them and read again by the product graph
            (refs_key,) = dask.persist(refs_key)
        stats = frame_statistics(ds, plan, reader, refs_key, compute=False)
        client = distributed_client() if frame_stats == "submit" else None
        if client is None:
            # the statuses (the chain on a one-pixel window) found by a worker meanwhile
            status = dask.delayed(status_of, pure=True)(plan, reader, refs_key,
                                                         status_stats(plan, stats), "ramp_fit")
            stats, status = computed_stats(stats, status)
        else:
            # the statistics run on the cluster while this process builds and submits the
            # product graph, whose tiles wait for them there.  The statuses (needed for the
            # products' attributes) are found here, on a one-pixel window: as a task they
            # would queue behind the reference files' load and the statistics windows
            lazy = stats
            (stats,) = client.compute([dask.delayed(finished_stats, pure=True)(lazy)])
            status = statuses(plan, reader, refs, lazy, until="ramp_fit")
    elif frame_stats is None:
        stats = frame_statistics(ds, plan, reader, refs_key, compute=False)
    else:
        raise ConfigError(f"frame_stats must be a mapping, 'compute' or 'submit', got {frame_stats!r}")
    # the statistics as a mapping (lazy or computed) for the one-pixel runs
    known = lazy if not isinstance(stats, dict) else stats
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
        stats = dask.delayed(with_stats, pure=True)(stats, extra)
        result_stats = {k: stats[k] for k in STAT_KEYS}

    # the ghost margin is part of each task's memory too
    cols = plan_tiles(ds, memory_limit=memory_limit, stats_scope=stats_scope, tile_columns=tile_columns,
                      ghost=h)
    nx, ny = ds.sizes[X], ds.sizes[Y]
    ints = int_bounds(ds, stats_scope)
    # the same pixels in a shorter, wider tile: fewer rows of each frame to read
    budget = None
    if memory_limit is not None:
        nint = max(b - a for a, b in ints)
        budget = int(sizing_budget(memory_limit) // (CHAIN_FACTOR * 4 * nint * ds.sizes[GROUP]))
    rows, cols = tile_shape(ny, nx, columns=cols, ghost=h, pixel_budget=budget,
                            row_align=row_align(reader, ds), tile_rows=tile_rows, whole=whole_axis(ds, p))
    cube = ["data", "err", "var_poisson", "var_rnoise", "dq"]
    if p["ramp_fit"].save_intercepts:
        cube.append("intercept")
    step = frame_step(p)
    checkpoint = None
    if step is not None:
        if scratch is None:
            raise ConfigError(f"{step} runs on whole frames: the fused layout needs a scratch directory")
        given = status_stats(plan, known)
        if checkpoint_at(step) != step:
            given = with_deferred(given)
        layout, attrs = layout_at(plan, reader, refs, given, checkpoint_at(step))
        checkpoint = Checkpoint(step=step, layout=layout, attrs=attrs, scratch=str(scratch))
    segments = SegmentProducts(plan=plan, reader=reader, refs_key=refs_key, stats=stats, refs=refs,
                               params=p, provenance=copy.deepcopy(provenance),
                               status_attrs={}, int_bounds=tuple(ints),
                               y_bounds=tuple(bounds(ny, rows)), x_bounds=tuple(bounds(nx, cols)),
                               cube=tuple(cube), checkpoint=checkpoint)
    arrs = segments.arrays()
    cube_coords = {k: v for k, v in plan.skeleton.coords.items() if set(v.dims) <= set(dims.CUBE_DIMS)}
    parts = {k: xr.DataArray(arrs[k], dims=dims.CUBE_DIMS, coords=cube_coords) for k in cube}
    parts["rate_terms"] = xr.DataArray(arrs["rate_terms"], dims=("block", "term", *dims.IMAGE_DIMS),
                                       coords={Y: ds[Y], X: ds[X]})
    parts["nints"] = ds.sizes[INTEGRATION]
    pixeldq = xr.DataArray(arrs[PIXELDQ], dims=dims.IMAGE_DIMS, coords={Y: ds[Y], X: ds[X]})
    if frame_stats not in ("compute", "submit"):
        status = statuses(plan, reader, refs, stats, until="ramp_fit")
    status_attrs, records = status
    provenance["steps"].update(records)
    provenance["tile_columns"] = cols
    provenance["tile_rows"] = rows
    provenance["layout"] = {"fused": True, "ghost_columns": h,
                            "tiles": len(ints) * len(bounds(ny, rows)) * len(bounds(nx, cols))}
    meta = plan.skeleton.assign({PIXELDQ: pixeldq})
    meta.attrs.update(status_attrs)
    if checkpoint is not None:
        provenance["layout"]["checkpoint"] = {"before": checkpoint_at(step), "frame_pass": step,
                                              "scratch": str(scratch)}
    segments = dataclasses.replace(segments, provenance=copy.deepcopy(provenance),
                                   status_attrs=dict(status_attrs))
    rate, rateints = finish(parts, meta, refs, p, provenance, pixeldq=pixeldq)
    return Detector1Result(rate=rate, rateints=rateints, intermediates={}, provenance=provenance,
                           frame_stats=result_stats, segments=segments)


@dataclass(frozen=True)
class Checkpoint:
    """A step that needs whole frames runs (:mod:`daskramp.engine.checkpoint`): its name, the
    ramp's variables and attributes as it receives it, and the directory of the blocks'
    checkpoint stores."""

    step: str
    layout: dict
    attrs: dict
    scratch: str

    def path(self, a: int) -> str:
        return str(Path(self.scratch) / f"block-{a}.zarr")


@dataclass(frozen=True)
class SegmentProducts:
    """The fused products of one integration block (a segment) at a time, and the rate from
    their summed terms: what :mod:`daskramp.engine.submit` submits one block after another.

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
    checkpoint: Checkpoint | None = None

    def arrays(self, a: int | None = None) -> dict[str, da.Array]:
        """The products of block ``a`` (integrations numbered from the block's first), or of
        every block (``None``; ``pixeldq`` the first block's): what
        :func:`daskramp.engine.graph.staged` returns for ``until="ramp_fit"``."""
        names = (*self.cube, "rate_terms", PIXELDQ)
        which = range(len(self.int_bounds)) if a is None else [a]
        ck = self.checkpoint
        if ck is None:
            return staged(self.plan, self.reader, self.refs_key, self.stats, until="ramp_fit",
                          int_bounds=[self.int_bounds[k] for k in which], y_bounds=list(self.y_bounds),
                          x_bounds=list(self.x_bounds), names=names)
        parts = [resumed(self.plan, self.reader, self.refs_key, self.stats, step=ck.step, layout=ck.layout,
                         attrs=ck.attrs, i0=self.int_bounds[k][0], i1=self.int_bounds[k][1],
                         y_bounds=list(self.y_bounds), x_bounds=list(self.x_bounds), path=ck.path(k),
                         names=names)
                 for k in which]
        if len(parts) == 1:
            return parts[0]
        out = {name: da.concatenate([q[name] for q in parts], axis=0) for name in names if name != PIXELDQ}
        out[PIXELDQ] = parts[0][PIXELDQ]
        return out

    def release(self, a: int) -> None:
        """Remove block ``a``'s checkpoint store, once its products are written."""
        if self.checkpoint is not None:
            checkpoint_store.remove(self.checkpoint.path(a))

    def _parts(self, a: int):
        i0, i1 = self.int_bounds[a]
        arrs = self.arrays(a)
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
