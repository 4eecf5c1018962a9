"""A step that needs whole frames, in the fused layout: checkpoint, frame pass, resume.

The fused tiles hold a band of pixels of every integration of a block (a segment); a step
whose statistics are taken over whole frames of the ramp it receives (its spec's
``frame_pass``: clean_flicker_noise's scene mask from a draft rate of the segment, and its
line values from every group difference of whole frames) cannot find them in a tile.  For
each integration block the engine then

1. runs every tile up to that step as usual (ghost margins, whole-frame statistics given)
   and writes its interior into the block's checkpoint store
   (:func:`daskramp.engine.chain.checkpoint_window`, :mod:`daskramp.io.checkpoint`); each
   tile returns the little the pass takes from it (the draft rate terms) and its pixeldq;
2. one task assembles those into whole images and makes the pass's context (the scene
   masks: ``frame_pass.combine``);
3. tasks of a few whole frames each, read back from the checkpoint, find the step's
   statistics (``frame_pass.block``: one value per line, group and integration);
4. every tile reads its window back from the checkpoint and runs the step, given the
   statistics, and the rest of the chain (:func:`daskramp.engine.graph.staged` from the step).

Worker memory stays that of a tile (step 3 reads
:data:`daskramp.engine.plan.FRAME_BLOCK_BYTES` of float32 ramp per task, projected by
:func:`daskramp.engine.plan.check_memory`); the disk holds one block's ramp at that point
(about 5 bytes per pixel and group) until the block's products are written.  The products
equal the step-by-step layout's (``tests/test_fused.py``).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from .. import dims
from .. import steps as registry
from ..dims import DATA, GROUP, GROUPDQ, INTEGRATION, PIXELDQ, X, Y
from ..io import checkpoint as checkpoint_store
from ..taskgraph import Tasks
from .chain import Plan, Reader, checkpoint_window
from .graph import staged
from .plan import frame_block_integrations
from .policy import frame_steps


def frame_step(params) -> str | None:
    """The first step that runs a ``frame_pass`` (None: no checkpoint)."""
    names = frame_steps(params)
    return names[0] if names else None


def checkpoint_at(step: str) -> str:
    """The step the checkpoint of ``step``'s frame pass is taken before (the one after it
    when its window part runs first: ``frame_pass.after``) and the tiles resume at."""
    if not registry.spec(step).frame_pass.after:
        return step
    order = registry.step_order()
    return order[order.index(step) + 1]


#: what a step's window part is given when its whole-frame part runs in a frame pass after it
DEFERRED = {"frame_pass": "deferred"}


def with_deferred(stats: dict) -> dict:
    """``stats`` and :data:`DEFERRED` (for the tiles that write the checkpoint)."""
    return {**stats, **DEFERRED}


def frame_blocks(nint: int, ngroup: int, ny: int, nx: int) -> list[tuple[int, int]]:
    """Integration ranges of the frame pass's tasks
    (:func:`daskramp.engine.plan.frame_block_integrations` each)."""
    k = frame_block_integrations(nint, ngroup, ny, nx)
    return [(a, min(a + k, nint)) for a in range(0, nint, k)]


def _assemble(results, y_bounds, x_bounds) -> dict[str, np.ndarray]:
    """The tiles' returned arrays (``results[b][c]``, each (..., y, x)) as whole images."""
    out = {}
    for name in results[0][0]:
        rows = [np.concatenate([results[b][c][name] for c in range(len(x_bounds))], axis=-1)
                for b in range(len(y_bounds))]
        out[name] = np.concatenate(rows, axis=-2)
    return out


def frame_context(results, y_bounds, x_bounds, skeleton: xr.Dataset, refs, params, step: str):
    """The frame pass's context of one block (``frame_pass.combine``) from its tiles."""
    images = _assemble(results, y_bounds, x_bounds)
    pixeldq = images.pop(PIXELDQ)
    return registry.spec(step).frame_pass.combine(images, pixeldq, skeleton, refs, params[step])


def rewritten_name(variable: str) -> str:
    """The checkpoint variable holding a rewriting pass's output ``variable``."""
    return f"rewritten_{variable}"


def rewrites(step: str, params) -> bool:
    """Whether ``step``'s frame pass writes its output ramp into the checkpoint."""
    fp = registry.spec(step).frame_pass
    return fp.rewrites is not None and bool(fp.rewrites(params[step]))


def frame_block(path: str, j0: int, j1: int, context, segment_of: np.ndarray, positions: np.ndarray,
                attrs: dict, params, step: str, variables) -> np.ndarray:
    """``frame_pass.block`` on integrations ``j0:j1`` of a block, whole frames read from its
    checkpoint (from ``frame_pass.lookback`` integrations before ``j0``, within the block;
    the results for those are dropped).  A rewriting pass's ramp is written into the
    checkpoint (under :func:`rewritten_name`, so a rerun of the task reads the same input)
    and a marker of zeros ``(1, integration, 1, 1)`` returned."""
    fp = registry.spec(step).frame_pass
    a = max(0, j0 - fp.lookback)
    ramp = checkpoint_store.read(path, a, j1, slice(None), slice(None), variables)
    out = fp.block(ramp, context, segment_of[a:j1], positions[a:j1], attrs, params[step])
    del ramp
    if not rewrites(step, params):
        return out if a == j0 else out[:, j0 - a:]
    name = fp.rewritten
    checkpoint_store.write(path, {rewritten_name(name): out[name][j0 - a:]}, slice(None), slice(None), j0, j1)
    return np.zeros((1, j1 - j0, 1, 1), np.float32)


def resumed(plan: Plan, reader: Reader, refs_key, stats, *, step: str, layout: dict, attrs: dict,
            i0: int, i1: int, y_bounds, x_bounds, path, names) -> dict[str, da.Array]:
    """Lazy products of integration block ``i0:i1`` through a checkpoint before ``step``.

    ``layout``/``attrs``: the ramp's variables and attributes as ``step`` receives it
    (:func:`daskramp.engine.chain.layout_at`); ``path``: where the block's checkpoint store
    is made (by a task of the graph, before the tiles write it).  Returns what :func:`staged` returns for
    ``until="ramp_fit"``, with the block's integrations numbered from 0.
    """
    sk = plan.skeleton.isel({INTEGRATION: slice(i0, i1)})
    n, ngroup, ny, nx = i1 - i0, sk.sizes[GROUP], sk.sizes[Y], sk.sizes[X]
    fp = registry.spec(step).frame_pass
    p = plan.params[step]
    extra = fp.variables(p)
    rewrite = rewrites(step, plan.params)
    stored = {**layout, **extra}
    if rewrite:
        stored[rewritten_name(fp.rewritten)] = layout[fp.rewritten]
    rows = max(b - a for a, b in y_bounds)
    cols = max(b - a for a, b in x_bounds)
    sizes = {INTEGRATION: n, GROUP: ngroup, Y: ny, X: nx}
    path = str(path)

    stats_key = stats if isinstance(stats, Delayed) else dask.delayed(dict(stats), pure=True)
    plan_key = dask.delayed(plan, pure=True, traverse=False)
    sk_key = dask.delayed(sk, pure=True, traverse=False)
    params_key = dask.delayed(plan.params, pure=True, traverse=False)
    token = tokenize(plan_key, reader, refs_key, stats_key, step, i0, i1, y_bounds, x_bounds, path)
    refs_arg = None if refs_key is None else refs_key.key
    at = checkpoint_at(step)
    tile_stats = stats_key
    if fp.after:
        # the step's window part runs in the tiles before the checkpoint, without its
        # whole-frame part
        tile_stats = dask.delayed(with_deferred, pure=True)(stats_key)
    tasks = Tasks(plan_key, stats_key, tile_stats, sk_key, params_key, refs_key)
    # the store is made by a task, not while the graph is built: building has no side effect
    made = tasks.call(f"checkpoint-create-{token}", checkpoint_store.create, path, stored,
                      sizes, rows, cols, token)
    aname = f"checkpoint-{step}-{token}"
    for b, (y0, y1) in enumerate(y_bounds):
        for c, (x0, x1) in enumerate(x_bounds):
            tasks.call((aname, b, c), checkpoint_window, plan_key.key, reader, refs_arg, tile_stats.key,
                       i0, i1, slice(y0, y1), slice(x0, x1), step, path, made, at)
    grid = [[(aname, b, c) for c in range(len(x_bounds))] for b in range(len(y_bounds))]
    cname = tasks.call(f"frame-context-{step}-{token}", frame_context, grid, list(y_bounds),
                       list(x_bounds), sk_key.key, refs_arg, params_key.key, step)
    segment_of = np.zeros(n, np.int64)
    for k, (lo, hi) in enumerate(dims.segment_bounds(sk)):
        segment_of[lo:hi] = k
    positions = np.arange(i0, i1)
    variables = [DATA, GROUPDQ, *extra] if fp.reads is None else list(fp.reads)
    fname = f"frame-block-{step}-{token}"
    blocks = frame_blocks(n, ngroup, ny, nx)
    for k, (j0, j1) in enumerate(blocks):
        tasks.call((fname, 0, k, 0, 0), frame_block, path, j0, j1, cname, segment_of, positions,
                   dict(attrs), params_key.key, step, variables)
    shape = (1, 1, 1) if rewrite else fp.block_shape(sk, p)
    terms = tasks.array(fname, ((shape[0],), tuple(j1 - j0 for j0, j1 in blocks), (shape[1],), (shape[2],)),
                        np.float32)
    given = fp.given(terms, sk, p)
    sk_after = sk.copy()
    sk_after.attrs = {**sk.attrs, **attrs}
    after = Plan(skeleton=sk_after, var_attrs=plan.var_attrs, params=plan.params,
                 stats_scope=plan.stats_scope, halo=0)
    # a rewriting pass's tiles read its output as the variable it rewrote
    replace = ((rewritten_name(fp.rewritten), fp.rewritten),) if rewrite else ()
    reader = Reader("checkpoint", path=path, replace=replace)
    return staged(after, reader, refs_key, given, until="ramp_fit",
                  int_bounds=[(0, n)], y_bounds=y_bounds, x_bounds=x_bounds, names=names, start=at)
