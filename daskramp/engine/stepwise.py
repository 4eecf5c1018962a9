"""Detector1 step by step: one dask layer per step on a pixel-tile layout.

Pixel-local steps run on whatever chunks the exposure has; before the steps that pool
integrations, the ramp is laid out in *pixel tiles* — every integration of one segment (or
of the whole exposure with ``stats_scope="exposure"``), all groups, all rows and a band of
columns (:func:`daskramp.engine.plan.plan_tiles`).  Halos are dask overlaps; the
whole-frame statistics are the fused layout's (:mod:`daskramp.engine.stats`).  This is the layout of
``save_steps`` and of the steps that fit whole frames (:mod:`daskramp.engine.policy`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import dims
from .. import steps as registry
from ..cluster import distributed_client
from ..config import ConfigError
from ..io import open_exposure
from ..steps._apply import chunk_by_segment
from .chain import reader_for, window_plan
from .graph import refs_graph_key
from .plan import plan_tiles, tile_chunks
from .policy import without_output_files
from .stages import Detector1Result, as_float, call_step, finish, is_lazy, lazy_refs, ramp_steps
from .stats import STAT_KEYS, complete, frame_statistics


def _tile(ds: xr.Dataset, cols: int, stats_scope: str) -> xr.Dataset:
    """Lay the ramp out in pixel tiles: whole segments × all groups × all rows × ``cols`` columns."""
    if not any(hasattr(v.data, "dask") for v in ds.data_vars.values()):
        return ds
    pdq = ds.get(dims.PIXELDQ)
    if pdq is not None and not hasattr(pdq.data, "dask") and not np.any(pdq.data):
        # the zeros of an uncal exposure: made by the tasks, not shipped inside the graph
        ds = ds.assign({dims.PIXELDQ: pdq.copy(data=da.zeros(pdq.shape, dtype=pdq.dtype, chunks=-1))})
    ds = chunk_by_segment(ds, stats_scope=stats_scope)
    return dims.chunk(ds, {dims.Y: -1, dims.X: cols})


def open_tiled(path_or_files, *, memory_limit: int | None = None, stats_scope: str = "segment",
               tile_columns: int | None = None) -> xr.Dataset:
    """Open an exposure directly in the pixel-tile layout sized for ``memory_limit``.

    Each dask chunk then reads only its own tile from the store (the store's inner chunks are
    column bands), so no task ever loads whole frames of every integration.
    """
    probe = open_exposure(path_or_files)
    cols = plan_tiles(probe, memory_limit=memory_limit, stats_scope=stats_scope,
                      tile_columns=tile_columns)
    return open_exposure(path_or_files, chunks=tile_chunks(probe, cols, stats_scope))


def detector1_stepwise(ds: xr.Dataset, refs, *, params: Mapping, provenance: dict, stats_scope: str,
                       save_steps: Sequence[str] = (), memory_limit: int | None = None,
                       tile_columns: int | None = None, frame_stats=None) -> Detector1Result:
    """:func:`daskramp.pipeline.detector1` step by step (validated ``params``, the reference
    set and the provenance record made there; same products as the fused layout).

    The whole-frame statistics are the fused layout's (:func:`frame_statistics`, from small
    windows of the raw ramp), given to the steps: ``frame_stats`` "compute"/"submit"
    computes them first, None leaves them lazy in the graph (an exposure held in memory has
    them computed), a mapping gives them."""
    if isinstance(frame_stats, Mapping) and complete(frame_stats, params):
        stats = dict(frame_stats)
    elif frame_stats is None or frame_stats in ("compute", "submit") or isinstance(frame_stats, Mapping):
        # the windows run the chain only up to jump and never write a step's own output file
        plan = window_plan(ds, without_output_files(params), stats_scope)
        compute = frame_stats is not None or not is_lazy(ds)
        client = distributed_client() if compute and is_lazy(ds) else None
        stats = frame_statistics(ds, plan, reader_for(ds), refs_graph_key(refs), compute=compute and client is None)
        if client is not None:
            # computed on the cluster and kept there: the product graph refers to them by
            # key, instead of carrying arrays that grow with the exposure (refpix offsets
            # are integration × group × line)
            names = [k for k, v in stats.items() if dask.is_dask_collection(v)]
            stats = {**stats, **dict(zip(names, dask.persist(*(stats[k] for k in names))))}
    else:
        raise ConfigError(f"frame_stats must be a mapping, 'compute' or 'submit', got {frame_stats!r}")
    given_stats = {k: stats.get(k) for k in STAT_KEYS}

    ds = as_float(ds)
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
                    provenance=provenance, save_steps=save_steps, intermediates=intermediates)
    fields = None
    fit = registry.FIT_STEP
    if not params[fit].skip:
        # per-integration fields; finish() makes the products from them
        fields = call_step(fit, ds, refs, params[fit], stats_scope=stats_scope, fields_only=True)
    rate, rateints = finish(fields, ds, refs, params, provenance)
    return Detector1Result(rate=rate, rateints=rateints, intermediates=intermediates,
                           provenance=provenance, frame_stats=given_stats)
