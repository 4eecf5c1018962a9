"""Whole-frame statistics: what a tile cannot see by itself, found first on small windows.

* refpix offsets: one task per block of integrations runs the chain up to refpix on each
  rectangle of reference pixels (the border strips) and returns only the offsets
  (:func:`daskramp.engine.chain.refpix_block`); the blocks come in whole rounds of the
  cluster's worker threads, as every tile waits for all of them
  (:func:`daskramp.engine.plan.in_rounds`);
* jump's "every pixel DO_NOT_USE" planes: a probe window
  (:data:`daskramp.engine.plan.PROBE_SHAPE` at the frame's centre) is run up to jump; a
  plane with one usable pixel in the probe is not all DO_NOT_USE, which settles every plane
  in practice.  Only planes the probe cannot settle are evaluated over every tile
  (:func:`daskramp.engine.chain.settle_planes`).

Each statistic is chunked (one task per block of windows), combined and finalised by the
tasks of one graph; :func:`frame_statistics` returns them computed or lazy."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import dims
from .. import steps as registry
from ..cluster import worker_slots
from ..dims import GROUP, GROUPDQ, INTEGRATION, X, Y
from ..steps import params_kwargs
from ..steps.refpix import reference_boxes
from .chain import Plan, Reader, given_stats, status_of
from .graph import draft_rate_graph, refpix_statistics, settled, staged
from .plan import BLOCK_BYTES, SETTLE_INT_BLOCK, bounds, in_rounds, probe_window, stats_int_block
from .policy import needs_draft_rate

#: the whole-frame statistics the tiles are given
STAT_KEYS = ("refpix_offsets", "refpix_zf_offsets", "plane_dnu", "draft_rate")


def complete(stats, params) -> bool:
    """Whether given statistics hold all that the steps that run take (jump's
    ``plane_dnu``, the draft rate of a step that takes it)."""
    return not ((stats.get("plane_dnu") is None and not params["jump"].skip)
                or (stats.get("draft_rate") is None and needs_draft_rate(params)))


def stand_ins(stats: dict, *, lazy: bool = False) -> dict:
    """``stats`` with the lazy statistics replaced by zeros of their shape and dtype; with
    ``lazy`` the zeros are dask arrays, made by the tasks of a graph that uses them (as numpy
    they would travel inside the graph: a few MB per hundred integrations)."""
    given = dict(stats)
    for k, v in given.items():
        if dask.is_dask_collection(v):
            data = v.data if isinstance(v, xr.DataArray) else v
            zeros = (da.zeros(data.shape, dtype=data.dtype, chunks=data.chunks) if lazy
                     else np.zeros(data.shape, data.dtype))
            given[k] = v.copy(data=zeros) if isinstance(v, xr.DataArray) else zeros
    return given


def probe_needs_offsets(params) -> bool:
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


def status_stats(plan: Plan, stats: dict) -> dict:
    """Stand-ins for the statistics of a one-pixel window: statuses do not depend on their
    values, so lazy ones become zeros of their shape (keeps the status graph-free)."""
    given = stand_ins(given_stats(stats, 0, 1))
    # statistics the caller has not computed yet only need the right shape here
    given.setdefault("plane_dnu", np.zeros((1, plan.skeleton.sizes[GROUP]), bool))
    for key in ("refpix_offsets", "refpix_zf_offsets", "draft_rate"):
        given.setdefault(key, None)
    # a step given its statistics from a checkpoint's frame pass sets its status only
    given.setdefault("flicker", "status")
    return given


def statuses(plan: Plan, reader: Reader, refs, stats: dict, until: str) -> tuple[dict, dict]:
    """Step statuses and provenance records, from the chain run on a one-pixel window."""
    return status_of(plan, reader, refs, status_stats(plan, stats), until)


def frame_statistics(ds: xr.Dataset, plan: Plan, reader: Reader, refs_key, *, compute: bool = True,
                     int_block: int | None = None) -> dict:
    """The whole-frame statistics (``refpix_offsets``, ``refpix_zf_offsets``, ``plane_dnu``,
    ``draft_rate`` when a step takes it) from small windows (see the module docstring); ``int_block`` integrations per window
    (default :func:`stats_int_block`, shortened by :func:`in_rounds` to whole rounds of
    the cluster's worker threads).

    With ``compute`` they are computed here through the active dask scheduler (one graph;
    the probe runs beside the refpix windows on stand-in offsets unless a step after refpix
    flags by level, see :func:`probe_needs_offsets`); otherwise they are returned lazy and
    the product graph computes them (or the caller, see :func:`computed_stats`).
    """
    nint, ngroup, ny, nx = ds.sizes[INTEGRATION], ds.sizes[GROUP], ds.sizes[Y], ds.sizes[X]
    stats: dict = {"refpix_offsets": None, "refpix_zf_offsets": None}
    boxes = reference_boxes(plan.skeleton, **params_kwargs(plan.params["refpix"]))
    if int_block is None:
        # cut as for one segment, the longest, whatever the exposure's length: a block of
        # more integrations is a task of more memory (cut for the whole 4-segment exposure,
        # the blocks would have 53 integrations, not 40, and peak above the tiles), and at
        # most one round is then left part-filled, once per run
        longest = max(b - a for a, b in dims.segment_bounds(ds))
        int_block = in_rounds(longest, stats_int_block(boxes, plan.halo, ngroup, ny, nx), worker_slots())
    ints = bounds(nint, int_block)
    if boxes:
        stats.update(refpix_statistics(plan, reader, refs_key, ints))
    jp = plan.params["jump"]
    if not jp.skip:
        ys, xs = probe_window(ny, nx)
        given = stats if probe_needs_offsets(plan.params) else stand_ins(stats, lazy=True)
        arrs = staged(plan, reader, refs_key, given, until="jump", int_bounds=ints,
                      y_bounds=[(ys.start, ys.stop)], x_bounds=[(xs.start, xs.stop)], names=(GROUPDQ,))
        probe = ((arrs[GROUPDQ] & np.uint8(1)) != 0).all(axis=(2, 3)).rechunk((nint, ngroup))
        stats["plane_dnu"] = settled(probe, plan, reader, refs_key, given, SETTLE_INT_BLOCK)
    else:
        stats["plane_dnu"] = None
    stats["draft_rate"] = draft_rate(ds, reader) if needs_draft_rate(plan.params) else None
    return computed_stats(stats)[0] if compute else stats


def draft_rate(ds: xr.Dataset, reader: Reader) -> xr.DataArray:
    """The exposure's draft rate (y, x) DN/s from its raw ramp, lazily: per segment, bands of
    all rows holding about :data:`~daskramp.engine.plan.BLOCK_BYTES` of float32 slopes;
    the same numbers as :func:`daskramp.steps.group_1overf.exposure_draft_rate`."""
    ny, nx = ds.sizes[Y], ds.sizes[X]
    segments = dims.segment_bounds(ds)
    longest = max(b - a for a, b in segments)
    band = max(1, min(nx, BLOCK_BYTES // (4 * longest * ny)))
    arr = draft_rate_graph(reader, segments, ny, nx, band=band, ngroup=ds.sizes[GROUP],
                           tgroup=float(ds.attrs["TGROUP"]))
    return xr.DataArray(arr, dims=dims.IMAGE_DIMS, coords={Y: ds[Y], X: ds[X]})


def finished_stats(stats: dict) -> dict:
    """Computed statistics as the tiles take them (``plane_dnu`` a plain array)."""
    stats = dict(stats)
    if stats.get("plane_dnu") is not None:
        dnu = stats["plane_dnu"]
        stats["plane_dnu"] = np.asarray(dnu.data if isinstance(dnu, xr.DataArray) else dnu)
    return stats


def with_stats(stats: dict, extra: dict) -> dict:
    return {**stats, **extra}


def computed_stats(stats: dict, *also):
    """``stats`` (and the ``also`` collections) computed in one call of the active scheduler."""
    stats, *rest = dask.compute(stats, *also)
    if stats.get("plane_dnu") is not None:
        stats["plane_dnu"] = np.asarray(stats["plane_dnu"])
    return (stats, *rest)
