"""Sizing, in one place: how big a task is, before anything runs.

* **memory projection** — every step declares a working-memory factor (peak task bytes per
  float32 ramp byte, :attr:`daskramp.steps.StepSpec.scratch` plus the input it holds); the
  fused chain of every step on one tile has its own, larger factor (:data:`CHAIN_FACTOR`).
  :func:`check_memory` projects ``factor × 4 bytes × block elements`` for the chosen
  chunking and refuses, with :class:`MemoryBudgetError`, a task above the budget of one task
  on the smallest worker (:func:`task_budget`: :data:`USABLE_FRACTION` of its limit shared
  by its threads; the rest covers the interpreter, finished blocks waiting to be stored and
  allocator slack).  ``benchmarks/memory_factors.py`` measures the factors.
* **tiles** — jump and ramp_fit pool integrations, so the chain runs on pixel tiles: every
  integration of a segment (or of the exposure), all groups, a window of rows × columns.
  :func:`plan_tiles` sizes the band of columns from the budget, :func:`tile_shape` lays the
  same pixels out as the tile that costs least to read, :func:`plan_chunking` chunks an
  exposure for the run and checks every task.
* **integration blocks** — the blocks a tile's per-integration steps run on
  (:data:`BLOCK_BYTES`), the blocks of the whole-frame statistics (:func:`stats_int_block`,
  :func:`in_rounds`) and of the segments (:func:`int_bounds`).
* **darks** — :func:`plan_dark_tiles`, the tiles of a reduction over every integration of
  many exposures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import xarray as xr

from .. import dims
from .. import steps as registry
from ..config import ConfigError
from ..dims import INTEGRATION
from ..steps import validate

#: scratch + output bytes per float32 ramp byte of each step, as its spec declares it
#: (:attr:`daskramp.steps.StepSpec.scratch`).  Measured with ``python benchmarks/memory_factors.py``
#: on the cached 158-int NIRISS SOSS segment of ``benchmarks/_common.simulated``:
#: pixel-local steps on integrations 0–7 at full width (8 × 9 × 256 × 2048), jump and ramp_fit
#: on a 158 × 9 × 256 × 64 tile (columns 0–63 and 512–575 give the same figures); numpy 2.4,
#: numba 0.68.  clean_flicker_noise's figure is an estimate (the measurement runs the default
#: configuration, in which it is skipped).
MEASURED_SCRATCH = {s.name: s.scratch for s in registry.REGISTRY}


#: the pipeline lays the whole chain out in tiles and runs the per-tile steps as one task,
#: which holds the store read, the intermediates still referenced and ramp_fit's outputs at
#: once.  The peak RSS of one tile computed alone through the whole chain (synchronous
#: scheduler, tile read from a Zarr store, whole-frame statistics given) is 7.76 × the tile's
#: float32 bytes for 158 × 9 × 256 × 64 and 7.28 × for × 128; 7.8 is used.
CHAIN_STEP = "fused tile chain"


#: peak task memory per byte of float32 ramp in a tile when the steps on one tile run as
#: one task (the fused chain, input included): the peak RSS of one tile computed alone
#: through the whole chain, measured by ``benchmarks/memory_factors.py --chain``
CHAIN_FACTOR = 7.8


#: assembling a pixel tile from integration chunks holds the pieces and the concatenated tile
#: (data + groupdq twice); the tile steps are projected at least at this factor
TILE_ASSEMBLY_FACTOR = 2.5


#: the block a task also holds: float32 data + uint8 groupdq per float32 byte
INPUT_FACTOR = 1.25


#: steps that pool statistics over integrations and therefore run on pixel tiles
#: (:attr:`daskramp.steps.StepSpec.pools_integrations`)
TILE_STEPS = tuple(s.name for s in registry.REGISTRY if s.pools_integrations)


#: fraction of a worker's memory limit one task may plan to use: dask starts spilling at
#: 60 % of the limit (``distributed.worker.memory.target``), and the input and output blocks
#: of neighbouring tasks share the worker
USABLE_FRACTION = 0.6


#: the task memory tiles are sized for when the workers have more.  A tile task of this size
#: already runs at full speed: its fixed costs (opening the window, the steps' per-call
#: overhead, reading a page per row of each frame) are a few per cent of its work, and a
#: larger tile only holds more memory for the same wall time (``benchmarks/floor.py`` runs
#: the defaults, ``benchmarks/detector1.py --memory-limit`` other sizes).  Explicit sizes
#: (``tile_columns``, ``tile_rows``, ``integration_chunk``) are not capped.
FULL_SPEED_TASK_BYTES = 2**30


def sizing_budget(budget: int | None) -> int | None:
    """The bytes a task is sized for: the task budget, at most :data:`FULL_SPEED_TASK_BYTES`
    (None: no limit, every column in one tile)."""
    return None if budget is None else min(int(budget), FULL_SPEED_TASK_BYTES)


class MemoryBudgetError(MemoryError):
    """A task of the chosen chunking is projected to need more memory than a worker has."""


def _spec(step: str):
    """The spec of ``step`` in the active registry, or None."""
    return next((s for s in registry.active() if s.name == step), None)


def _on_tiles(step: str) -> bool:
    """Whether ``step`` pools integrations, so runs on pixel tiles."""
    spec = _spec(step)
    return spec is not None and spec.pools_integrations


def step_factor(step: str) -> float:
    """Peak task bytes per float32 ramp byte of ``step`` (input block included)."""
    if step == CHAIN_STEP:
        return CHAIN_FACTOR
    spec = _spec(step)
    if spec is None:
        raise ValueError(f"no memory factor for step {step!r}")
    f = INPUT_FACTOR + spec.scratch
    return max(f, TILE_ASSEMBLY_FACTOR) if spec.pools_integrations else f


def tile_factor(steps: Mapping[str, Mapping] | None = None, *, fused_chain: bool = True) -> float:
    """Bytes per float32 tile byte of the most demanding active tile step (or of the fused
    chain of every step on one tile)."""
    f = max((step_factor(s) for s in active_steps(steps) if _on_tiles(s)), default=INPUT_FACTOR)
    return max(f, CHAIN_FACTOR) if fused_chain else f


def task_budget(memory_limit: int | None, *, threads_per_worker: int = 1,
                fraction: float = USABLE_FRACTION) -> int | None:
    """Bytes one task may plan to use on a worker with ``memory_limit`` (None: unlimited)."""
    if not memory_limit:
        return None
    return int(memory_limit * fraction / max(1, threads_per_worker))


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


@dataclass(frozen=True)
class MemoryPlan:
    """Projected peak memory of one task of each step for a chunking."""

    budget: int | None
    integration_chunk: int
    tile_columns: int
    tile_integrations: int
    per_step: Mapping[str, int]

    @property
    def peak(self) -> int:
        return max(self.per_step.values(), default=0)

    @property
    def worst_step(self) -> str:
        return max(self.per_step, key=self.per_step.get)

    def describe(self) -> str:
        lim = "unlimited" if self.budget is None else _mib(self.budget)
        return (f"peak task {_mib(self.peak)} ({self.worst_step}) of budget {lim}; "
                f"integration chunks of {self.integration_chunk}, tiles of "
                f"{self.tile_integrations} integrations × {self.tile_columns} columns")


def active_steps(steps: Mapping[str, Mapping] | None = None) -> list[str]:
    """Steps that run (not skipped) with the given step parameters, in pipeline order."""
    return [s for s in registry.step_order() if not validate(s, (steps or {}).get(s)).skip]


def integrations_per_chunk(frame_elems: int, *, budget: int | None, factor: float) -> int | None:
    """Most integrations per pixel-local chunk that fit ``budget`` (None: no limit)."""
    if budget is None:
        return None
    return int(budget // (factor * 4 * frame_elems))


def check_memory(
    ds,
    *,
    memory_limit: int | None,
    threads_per_worker: int = 1,
    steps: Mapping[str, Mapping] | None = None,
    stats_scope: str = "segment",
    tile_columns: int,
    integration_chunk: int | None = None,
    fused_chain: bool = True,
) -> MemoryPlan:
    """Project the memory of one task of every active step and compare with the budget.

    Parameters
    ----------
    ds : xarray.Dataset
        The exposure as it will be processed (its ``data`` chunks along ``integration``
        are the pixel-local blocks unless ``integration_chunk`` is given).
    memory_limit : int or None
        The smallest worker memory limit in bytes (None: no check).
    threads_per_worker : int
        Tasks running at once on one worker share its memory.
    steps : mapping
        Step parameters (skipped steps are not checked).
    stats_scope : {"segment", "exposure"}
    tile_columns : int
        Columns per jump/ramp_fit tile (from :func:`daskramp.engine.plan.plan_tiles`).
    integration_chunk : int, optional
        Integrations per pixel-local block (default: the largest chunk of ``ds``).
    fused_chain : bool
        The steps run on tiles fused into one task per tile (the pipeline's layout): also
        project :data:`CHAIN_FACTOR` × the tile.

    Returns
    -------
    MemoryPlan

    Raises
    ------
    MemoryBudgetError
        When a task of some step is projected above the budget; the message names the step,
        the projection, the limit and the chunk size that would fit.
    """
    budget = task_budget(memory_limit, threads_per_worker=threads_per_worker)
    ngroups, ny, nx = (ds.sizes[d] for d in (dims.GROUP, dims.Y, dims.X))
    nint = ds.sizes[dims.INTEGRATION]
    data = ds[dims.DATA]
    if integration_chunk is None:
        ichunks = data.chunks[0] if data.chunks is not None else (nint,)
        integration_chunk = max(ichunks)
        xchunk = max(data.chunks[3]) if data.chunks is not None else nx
        ychunk = max(data.chunks[2]) if data.chunks is not None else ny
    else:
        xchunk, ychunk = nx, ny
    if stats_scope == "exposure":
        tile_ints = nint
    else:
        tile_ints = max(b - a for a, b in dims.segment_bounds(ds))
    frame = ngroups * ychunk * xchunk
    tile = tile_ints * ngroups * ny * tile_columns
    per_step = {}
    for step in active_steps(steps):
        if _spec(step).on_rate:
            continue  # works on 2-D/3-D rate products, far below any ramp block
        f = step_factor(step)
        # pixel-local steps run on the exposure's chunks or, when the pipeline lays the whole
        # chain out in tiles, on tiles: project the larger of the two
        elems = tile if _on_tiles(step) else max(integration_chunk * frame, tile)
        per_step[step] = int(f * 4 * elems)
    if fused_chain:
        per_step[CHAIN_STEP] = int(CHAIN_FACTOR * 4 * tile)
    for step in active_steps(steps):
        fp = _spec(step).frame_pass
        if fp is not None and fp.runs(validate(step, (steps or {}).get(step))):
            # the whole frames of a few integrations its statistics are found on
            # (engine/checkpoint.py)
            k = frame_block_integrations(tile_ints, ngroups, ny, nx)
            per_step[f"{step} frame pass"] = int(FRAME_PASS_FACTOR * 4 * k * ngroups * ny * nx)
    plan = MemoryPlan(budget=budget, integration_chunk=integration_chunk, tile_columns=tile_columns,
                      tile_integrations=tile_ints, per_step=per_step)
    if budget is None:
        return plan
    over = [s for s, need in per_step.items() if need > budget]
    if not over:
        return plan
    # name the most demanding step of the first failing layout: a size that fits it fits all
    on_tiles = {s for s in per_step
                if _on_tiles(s) or s == CHAIN_STEP or tile >= integration_chunk * frame}
    local = [s for s in over if s not in on_tiles]
    step = max(local or over, key=per_step.get)
    need = per_step[step]
    limit_txt = (f"{_mib(budget)} per task ({USABLE_FRACTION:.0%} of the {_mib(memory_limit)} "
                 f"worker memory limit / {threads_per_worker} thread(s))")
    if step.endswith(" frame pass"):
        k = frame_block_integrations(tile_ints, ngroups, ny, nx)
        raise MemoryBudgetError(
            f"step {step}: a task on the whole frames of {k} integration(s) ({ngroups} × {ny} × {nx} "
            f"float32 each) is projected to need {_mib(need)}, above the budget of {limit_txt}; "
            f"use workers with more memory")
    f = step_factor(step)
    if step in on_tiles:
        # every step that runs on tiles must fit the suggested width
        worst = max(step_factor(s) for s in on_tiles)
        fit = int(budget // (worst * 4 * tile_ints * ngroups * ny))
        hint = (f"tile_columns={fit} would fit" if fit >= 1 else
                "even one column does not fit: use stats_scope='segment', shorter segments "
                "or workers with more memory")
        shape = f"{tile_ints} × {ngroups} × {ny} × {tile_columns}"
    else:
        fit = integrations_per_chunk(frame, budget=budget, factor=f)
        hint = (f"integration_chunk={fit} would fit" if fit >= 1 else
                "even one integration does not fit: use workers with more memory")
        shape = f"{integration_chunk} × {ngroups} × {ychunk} × {xchunk}"
    raise MemoryBudgetError(
        f"step {step}: a task on a {shape} float32 block is projected to need {_mib(need)} "
        f"(factor {f:.2f} × {_mib(need / f)}), above the budget of {limit_txt}; {hint}"
    )


def plan_tiles(ds: xr.Dataset, *, memory_limit: int | None, stats_scope: str = "segment",
               tile_columns: int | None = None, factor: float = CHAIN_FACTOR,
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
    g = int(ghost)

    def too_big():
        return MemoryError(
            f"jump/ramp_fit tile of one column (+{2 * g} ghost columns) needs "
            f"{per_column * (1 + 2 * g) / 2**20:.0f} MiB "
            f"(nint={nint}, ngroups={ds.sizes[dims.GROUP]}, ny={ds.sizes[dims.Y]}, factor {factor}) "
            f"but the worker memory limit is {memory_limit / 2**20:.0f} MiB; use "
            f"stats_scope='segment', fewer integrations per segment or larger workers")

    return columns_within(nx, per_column, memory_limit, tile_columns=tile_columns, ghost=g, too_big=too_big)


def columns_within(nx: int, per_column: float, budget: int | None, *, tile_columns: int | None = None,
                   ghost: int = 0, too_big=None) -> int:
    """Columns of a band of ``per_column`` bytes a column (plus ``ghost`` columns on each
    side) that fit ``budget`` (all ``nx`` without one; ``tile_columns`` when given).  A
    power of two dividing ``nx`` is preferred, so tiles line up with store chunks, unless
    it is less than half the width that fits.  ``too_big()`` makes the error raised when
    one column does not fit."""
    if tile_columns is not None:
        cols = int(tile_columns)
    elif budget is None:
        cols = nx
    else:
        cols = int(sizing_budget(budget) // per_column) - 2 * int(ghost)
        if cols < 1 and budget // per_column - 2 * int(ghost) >= 1:
            cols = 1  # one column fits the worker, if not the full-speed size
        if cols < 1:
            raise (too_big() if too_big is not None else MemoryError(
                f"one column of {per_column / 2**20:.0f} MiB does not fit {budget / 2**20:.0f} MiB"))
    cols = max(1, min(cols, nx))
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
               row_align: int = 1, tile_rows: int | None = None,
               whole: str | None = None) -> tuple[int, int]:
    """Rows and columns of a tile of the fused layout (:mod:`daskramp.engine.fused`).

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
    kept as given).  ``whole``: ``"y"`` or ``"x"``, a dim every tile spans (a step needs
    whole fast-read lines); the same number of pixels is then laid out along the other one.
    Returns ``(rows, columns)``.
    """
    columns = max(1, min(int(columns), nx))
    if whole == "y":
        return ny, columns
    if whole == "x" and tile_rows is None:
        fit = max(1, ny * columns // nx)
        divisors = [h for h in _pow2_divisors(ny, max(1, int(row_align))) if h <= fit]
        return (max(divisors) if divisors else min(ny, max(1, int(row_align)))), nx
    if tile_rows is not None:
        rows = int(tile_rows)
        if not 1 <= rows <= ny:
            raise ConfigError(f"tile_rows must be between 1 and the {ny} rows of the subarray, got {tile_rows}")
        return rows, (nx if whole == "x" else columns)
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


def tile_chunks(ds: xr.Dataset, cols: int, stats_scope: str = "segment") -> dict:
    """Dask chunks of the pixel-tile layout, to open an exposure directly in it."""
    if stats_scope == "exposure":
        ints = (ds.sizes[dims.INTEGRATION],)
    else:
        ints = tuple(b - a for a, b in dims.segment_bounds(ds))
    return {dims.INTEGRATION: ints, dims.GROUP: -1, dims.Y: -1, dims.X: cols}


def plan_chunking(ds, *, memory_limit: int | None, threads_per_worker: int = 1, steps=None,
                  stats_scope: str = "segment", tile_columns: int | None = None,
                  integration_chunk: int | None = None, ghost: int = 0, fused_chain: bool = True):
    """Chunk ``ds`` for the run and check one task of every step fits the worker memory.

    ``ghost``: columns read on each side of a tile (the fused layout's margin, counted in the
    tile width's memory); ``fused_chain``: the run uses the fused layout (False: step by step).

    Without explicit sizes the integration chunks are shrunk (and the tile width chosen) so
    every task fits; explicit ``tile_columns`` / ``integration_chunk`` that cannot fit are
    refused.  Returns ``(ds, tile_columns, plan)``; raises
    :class:`daskramp.engine.plan.MemoryBudgetError`.
    """
    budget = task_budget(memory_limit, threads_per_worker=threads_per_worker)
    data = ds[dims.DATA]
    if integration_chunk is not None:
        ds = dims.chunk(ds, {dims.INTEGRATION: int(integration_chunk)})
    elif budget is not None and data.chunks is not None:
        frame = ds.sizes[dims.GROUP] * max(data.chunks[2]) * max(data.chunks[3])
        # the steps that run on integration blocks: those before the first that pools
        # integrations (the rest run on pixel tiles, sized below)
        per_block = registry.ramp_step_names()
        per_block = per_block[: per_block.index(registry.pooling_step())]
        local = [s for s in active_steps(steps) if s in per_block]
        worst = max([step_factor(s) for s in local] or [1.0])
        fit = integrations_per_chunk(frame, budget=sizing_budget(budget), factor=worst)
        if fit is not None and 1 <= fit < max(data.chunks[0]):
            ds = dims.chunk(ds, {dims.INTEGRATION: fit})
    try:
        # the tile width must fit the most demanding step that may run on tiles
        factor = max([tile_factor(steps, fused_chain=fused_chain), *(step_factor(s) for s in active_steps(steps))])
        cols = plan_tiles(ds, memory_limit=budget, stats_scope=stats_scope, tile_columns=tile_columns,
                          factor=factor, ghost=ghost)
    except MemoryBudgetError:
        raise
    except MemoryError as err:
        raise MemoryBudgetError(f"step jump/ramp_fit: {err}") from None
    plan = check_memory(ds, memory_limit=memory_limit, threads_per_worker=threads_per_worker,
                        steps=steps, stats_scope=stats_scope, tile_columns=cols, fused_chain=fused_chain)
    return ds, cols, plan


#: bytes per pixel and group of the ramp a step holds between layouts (float32 data, uint8 DQ)
HELD_BYTES_PER_VALUE = 5


def check_held(ds, params, *, memory_limit: int | None, workers: int) -> None:
    """Refuse a step-by-step run whose steps hold a segment's ramp in the workers' memory
    (their spec's ``holds_segment``) when the longest segment's ramp does not fit in
    :data:`USABLE_FRACTION` of the cluster's memory (``workers`` × ``memory_limit``)."""
    if memory_limit is None:
        return
    holding = [s.name for s in registry.active()
               if s.holds_segment is not None and s.holds_segment(params[s.name])]
    if not holding:
        return
    longest = max(b - a for a, b in dims.segment_bounds(ds))
    need = HELD_BYTES_PER_VALUE * longest * ds.sizes[dims.GROUP] * ds.sizes[dims.Y] * ds.sizes[dims.X]
    have = USABLE_FRACTION * workers * memory_limit
    if need > have:
        raise MemoryBudgetError(
            f"step {holding[0]}: with these parameters it runs step by step and holds a segment's "
            f"ramp ({_mib(need)}, {longest} integrations) in the workers' memory, more than "
            f"{USABLE_FRACTION:.0%} of the {workers} × {_mib(memory_limit)} the cluster has; "
            f"give the workers more memory (--memory-limit)")


#: bytes of float32 ramp a window task runs through the per-integration steps (before jump)
#: at a time: the window's ramp is one array the pixel-local steps write over, and the
#: arrays the others make (flags, temporaries) are one block's, not the whole window's.
#: Each block costs the steps' per-call overhead (a few ms each), hence blocks of tens of MB
#: rather than small cache-sized ones.
BLOCK_BYTES = 40 * 2**20

#: bytes of float32 ramp (whole frames × all groups) per task of a checkpoint's frame pass
#: (:mod:`daskramp.engine.checkpoint`)
FRAME_BLOCK_BYTES = 64 * 2**20
#: peak bytes of a frame-pass task per byte of float32 ramp it reads: the block as read
#: (data and group DQ, 1.25) and one difference's float64 statistics — an estimate
FRAME_PASS_FACTOR = 2.0


def frame_block_integrations(nint: int, ngroup: int, ny: int, nx: int) -> int:
    """Integrations per task of a checkpoint's frame pass: :data:`FRAME_BLOCK_BYTES` of
    float32 ramp, at least one."""
    per_int = 4 * ngroup * ny * nx
    return int(max(1, min(nint, FRAME_BLOCK_BYTES // max(per_int, 1))))


def bounds(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def in_rounds(n: int, step: int, slots: int) -> int:
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


def int_bounds(ds: xr.Dataset, stats_scope: str) -> list[tuple[int, int]]:
    if stats_scope == "exposure":
        return [(0, ds.sizes[INTEGRATION])]
    return dims.segment_bounds(ds)


#: rows × columns of the probe window at the centre of the frame (a short, wide window: the
#: uncal file is read row by row, see :func:`daskramp.engine.plan.tile_shape`)
PROBE_SHAPE = (32, 64)


def probe_window(ny: int, nx: int) -> tuple[slice, slice]:
    """The ``(y, x)`` slices of the probe window of a ``ny × nx`` frame."""
    h, w = min(ny, PROBE_SHAPE[0]), min(nx, PROBE_SHAPE[1])
    y0, x0 = max(0, ny // 2 - h // 2), max(0, nx // 2 - w // 2)
    return slice(y0, y0 + h), slice(x0, x0 + w)


#: integrations per block when planes the probe cannot settle are evaluated over whole bands
SETTLE_INT_BLOCK = 16


def stats_int_block(boxes, halo: int, ngroup: int, ny: int, nx: int) -> int:
    """Integrations per statistics window: blocks of about :data:`BLOCK_BYTES` of float32 in
    the largest window (a border strip or the probe, ghost margin included), so each task's
    fixed cost (≈ 40 ms) is small beside its work (blocks of 16 integrations would make 50
    tasks of a SOSS segment's border windows).  A refpix task (:func:`refpix_block`) keeps every
    reference rectangle of its block: 0.5× the largest window for SOSS, 1.6× for a full
    frame (ghost margin 3)."""
    h = int(halo)
    boxes = list(boxes)
    ys, xs = probe_window(ny, nx)
    boxes.append((ys.start, ys.stop, xs.start, xs.stop))
    largest = max((min(ny, b - a + 2 * h) * min(nx, d - c + 2 * h) for a, b, c, d in boxes), default=1)
    return max(1, BLOCK_BYTES // (4 * ngroup * max(1, largest)))


#: peak reduction-task bytes per float32 byte of the concatenated tile (data + groupdq input,
#: the concatenation copy of both, the numba kernel's outputs): measured, see docs/darks.md
DARK_TILE_FACTOR = 3.0


def plan_dark_tiles(nints_total: int, ngroups: int, ny: int, nx: int, *,
                    budget: int | None, factor: float = DARK_TILE_FACTOR,
                    tile_columns: int | None = None) -> int:
    """Columns per tile so one reduction task over every integration fits ``budget`` bytes.

    The projection is ``factor × 4 × nints_total × ngroups × ny × columns``.  A power of two
    dividing ``nx`` is preferred (store chunks line up).  Raises :class:`MemoryError` when one
    column does not fit.
    """
    per_column = factor * 4 * nints_total * ngroups * ny

    def too_big():
        return MemoryError(
            f"darks: a tile of one column over all {nints_total} integrations needs "
            f"{per_column / 2**20:.0f} MiB (ngroups={ngroups}, ny={ny}, factor {factor}) but the "
            f"task budget is {budget / 2**20:.0f} MiB; use fewer exposures per DARK or larger workers")

    return columns_within(nx, per_column, budget, tile_columns=tile_columns, too_big=too_big)
