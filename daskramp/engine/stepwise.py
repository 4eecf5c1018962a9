"""Detector1 step by step: one dask layer per step on a pixel-tile layout.

Pixel-local steps run on whatever chunks the exposure has; before the steps that pool
integrations, the ramp is laid out in *pixel tiles* — every integration of one segment (or
of the whole exposure with ``stats_scope="exposure"``), all groups, all rows and a band of
columns (:func:`daskramp.engine.plan.plan_tiles`).  Halos are dask overlaps and the
whole-frame statistics lazy reductions of the steps themselves.  This is the layout of
``save_steps`` and of the steps that fit whole frames (:mod:`daskramp.engine.policy`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import dims
from .. import steps as registry
from ..config import ConfigError
from ..io import open_exposure
from ..steps._apply import chunk_by_segment
from ..steps.group_1overf import exposure_draft_rate
from .plan import plan_tiles, tile_chunks
from .policy import needs_draft_rate
from .stages import Detector1Result, as_float, call_step, finish, lazy_refs, ramp_steps


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
    set and the provenance record made there; same products as the fused layout)."""
    if isinstance(frame_stats, str):
        if frame_stats not in ("compute", "submit"):
            raise ConfigError(f"frame_stats must be a mapping, 'compute' or 'submit', got {frame_stats!r}")
        first = detector1_stepwise(ds, refs, params=params, provenance=dict(provenance, steps={}),
                                   stats_scope=stats_scope, memory_limit=memory_limit,
                                   tile_columns=tile_columns)
        (computed,) = dask.compute(first.frame_stats)
        return detector1_stepwise(ds, refs, params=params, provenance=provenance, stats_scope=stats_scope,
                                  save_steps=save_steps, memory_limit=memory_limit,
                                  tile_columns=tile_columns, frame_stats=computed)
    given_stats = dict(frame_stats or {})
    lazy_stats: dict = {}
    if needs_draft_rate(params) and given_stats.get("draft_rate") is None:
        # from the raw ramp, before any step: the fused layout's statistics pass reads it so
        lazy_stats["draft_rate"] = given_stats["draft_rate"] = exposure_draft_rate(ds)

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
                    lazy_stats=lazy_stats, provenance=provenance, save_steps=save_steps,
                    intermediates=intermediates)
    fields = None
    fit = registry.FIT_STEP
    if not params[fit].skip:
        # per-integration fields; finish() makes the products from them
        fields = call_step(fit, ds, refs, params[fit], stats_scope=stats_scope, fields_only=True)
    rate, rateints = finish(fields, ds, refs, params, provenance)
    return Detector1Result(rate=rate, rateints=rateints, intermediates=intermediates,
                           provenance=provenance, frame_stats={**lazy_stats, **given_stats})
