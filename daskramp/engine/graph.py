"""The doorway to dask for the engine: the graphs of windows, built by hand.

A window task returns a dict of numpy arrays (:func:`daskramp.engine.chain.run_window`);
the graph here gives each array of a grid of windows as a dask array of small getters, so a
grid is one task per window however many products it has.  The reference set, the plan and
the statistics each travel as one key, not inside every task."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from .. import dims
from ..dims import DATA, GROUP, GROUPDQ, INTEGRATION, PIXELDQ, ZEROFRAME
from ..io.refs import RefSet
from ..kernels.group_1overf import mean_of
from ..kernels.ramp_fit import RATE_TERMS
from ..steps import params_kwargs
from ..steps import refpix as refpix_step
from ..taskgraph import Tasks
from .chain import Plan, Reader, draft_window, refpix_block, run_window, settle_planes


def refs_graph_key(refs):
    """The reference set as one graph key (None for none): a set read from files is read
    again by the worker that computes the key, so tens of MB stay out of the graph."""
    if refs is None:
        return None
    if refs.recipe() is not None:
        return dask.delayed(RefSet.from_recipe, pure=True)(*refs.recipe())
    return dask.delayed(refs, pure=True)


def staged(plan: Plan, reader: Reader, refs_key, stats: dict | Delayed, *, until: str,
           int_bounds, y_bounds, x_bounds, names=(DATA, GROUPDQ, PIXELDQ),
           start: str | None = None) -> dict[str, da.Array]:
    """Lazy arrays of the chain run up to ``until`` on a grid of windows (one task each),
    from the first step or, reading a checkpoint, from ``start``.

    ``stats``: the whole-frame statistics (a mapping, or one delayed mapping); ``*bounds``
    are lists of (start, stop) along integration, y and x.  Returns dask arrays
    for ``names`` (``fields`` for ``until="ramp_fit"``); ``pixeldq`` comes from the first
    integration block.  Blocks that nothing asks for are never computed.
    """
    sk = plan.skeleton
    # the statistics (computed or lazy) travel as one key, like the reference files
    stats_key = stats if isinstance(stats, Delayed) else dask.delayed(dict(stats), pure=True)
    # and so does the plan: its skeleton holds the exposure's per-integration coordinates
    # (194 KiB unpickled for 16 SOSS segments), and a worker keeps each task's own unpickled
    # copy of its arguments for as long as it remembers the task, which for a window is
    # until the counts of its stored blocks are added up
    plan_key = dask.delayed(plan, pure=True, traverse=False)
    token = tokenize(plan.params, plan.stats_scope, plan.halo, reader, until, int_bounds, y_bounds,
                     x_bounds, refs_key, stats_key, plan_key, start)
    wname = f"window-{until}-{token}"
    refs_arg = None if refs_key is None else refs_key.key
    windows = Tasks(plan_key, refs_key, stats_key)
    for a, (i0, i1) in enumerate(int_bounds):
        for b, (y0, y1) in enumerate(y_bounds):
            for c, (x0, x1) in enumerate(x_bounds):
                windows.call((wname, a, b, c), run_window, plan_key.key, reader, refs_arg, stats_key.key,
                             i0, i1, slice(y0, y1), slice(x0, x1), until, start)
    ichunks = tuple(b - a for a, b in int_bounds)
    ychunks = tuple(b - a for a, b in y_bounds)
    xchunks = tuple(b - a for a, b in x_bounds)
    ngroup = sk.sizes[GROUP]
    out = {}
    for name in names:
        lname = f"{name}-{wname}"
        tasks = windows.copy()
        if name == PIXELDQ:
            for b in range(len(y_bounds)):
                for c in range(len(x_bounds)):
                    tasks.item((lname, b, c), (wname, 0, b, c), name)
            chunks, dtype = (ychunks, xchunks), dims.PIXELDQ_DTYPE
        else:
            if name == "rate_terms":
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
                        tasks.item(key, (wname, a, b, c), name)
        out[name] = tasks.array(lname, chunks, dtype)
    return out


def settled(probe: da.Array, plan: Plan, reader: Reader, refs_key, stats: dict,
             int_block: int) -> da.Array:
    """:func:`settle_planes` as one task of a lazy (integration, group) array."""
    stats_key = dask.delayed(dict(stats), pure=True)
    name = "plane-dnu-" + tokenize(probe, plan, reader, refs_key, stats_key, int_block)
    refs_arg = None if refs_key is None else refs_key.key
    tasks = Tasks(probe, stats_key, refs_key)
    tasks.call((name, 0, 0), settle_planes, (probe.name, 0, 0), plan, reader, refs_arg,
               stats_key.key, int_block)
    return tasks.array(name, tuple((n,) for n in probe.shape), bool)


def refpix_statistics(plan: Plan, reader: Reader, refs_key, ints) -> dict:
    """Lazy ``refpix_offsets`` and ``refpix_zf_offsets`` DataArrays ``(integration, group,
    refpix_term)``, one :func:`refpix_block` task per block of integrations ``ints``."""
    sk = plan.skeleton
    ngroup = sk.sizes[GROUP]
    plan_key = dask.delayed(plan, pure=True, traverse=False)
    name = "refpix-block-" + tokenize(plan_key, reader, refs_key, ints)
    refs_arg = None if refs_key is None else refs_key.key
    blocks = Tasks(plan_key, refs_key)
    for a, (i0, i1) in enumerate(ints):
        blocks.call((name, a), refpix_block, plan_key.key, reader, refs_arg, i0, i1)
    nterms = refpix_step.offsets_size(sk, **params_kwargs(plan.params["refpix"]))
    out = {}
    for key, groups, keep in (("refpix_offsets", ngroup, {INTEGRATION, GROUP}),
                              ("refpix_zf_offsets", 1, {INTEGRATION})):
        if key == "refpix_zf_offsets" and not reader.has_zeroframe:
            out[key] = None
            continue
        kname = f"{key}-{name}"
        tasks = blocks.copy()
        for a in range(len(ints)):
            tasks.item((kname, a, 0, 0), (name, a), key)
        arr = tasks.array(kname, (tuple(b - a for a, b in ints), (groups,), (nterms,)), np.float64)
        coords = {k: v for k, v in sk.coords.items() if set(v.dims) <= keep}
        out[key] = xr.DataArray(arr, dims=(INTEGRATION, GROUP, refpix_step.TERM_DIM), coords=coords)
    return out


def read_tile_files(bdir: Path, seg, *, leading: tuple, dtype, token: str) -> da.Array:
    """The tiles saved in ``bdir`` as a lazy (*leading, y, x) array, a task per tile (keys
    named by the run's ``token``: the same path holds other sums in another run)."""
    ychunks = tuple(b - a for a, b in seg.y_bounds)
    xchunks = tuple(b - a for a, b in seg.x_bounds)
    name = f"tiles-read-{tokenize(str(bdir), ychunks, xchunks, leading, token)}"
    zeros = (0,) * len(leading)
    tasks = Tasks()
    for b in range(len(ychunks)):
        for c in range(len(xchunks)):
            tasks.call((name, *zeros, b, c), np.load, str(Path(bdir) / f"{b}_{c}.npy"))
    return tasks.array(name, (*((n,) for n in leading), ychunks, xchunks), dtype)


def draft_rate_graph(reader: Reader, segments, ny: int, nx: int, *, band: int, ngroup: int,
                     tgroup: float) -> da.Array:
    """The exposure's draft rate, (y, x) float32 DN/s, lazily: one
    :func:`~daskramp.engine.chain.draft_window` task per segment and band of ``band``
    columns (all rows), the segments' images averaged in one task
    (:func:`daskramp.kernels.group_1overf.mean_of`)."""
    per_segment = []
    for i0, i1 in segments:
        bands = [da.from_delayed(dask.delayed(draft_window, pure=True)(reader, i0, i1, slice(0, ny),
                                                                        slice(x0, min(nx, x0 + band)),
                                                                        ngroup=ngroup, tgroup=tgroup),
                                 shape=(ny, min(nx, x0 + band) - x0), dtype=np.float32)
                 for x0 in range(0, nx, band)]
        per_segment.append(da.concatenate(bands, axis=1).rechunk(-1))
    return da.map_blocks(mean_of, *per_segment, dtype=np.float32)
