"""Memory per task, projected before anything runs and checked against the worker limit.

Every step has a *working-memory factor*: the peak bytes a task of that step holds (inputs,
scratch and outputs together) per byte of the float32 ramp block it processes, from the
scratch figure its spec declares (:attr:`daskramp.steps.StepSpec.scratch`).
With the block shape fixed by the chunking — integration chunks for the pixel-local steps,
pixel tiles (every integration of a segment, all groups, all rows, a band of columns) for
jump and ramp_fit — the projection ``factor × 4 bytes × block elements`` is compared with
the budget of one task on the smallest worker before the graph is submitted.  A chunking
that cannot fit is refused with :class:`MemoryBudgetError` naming the step, the projection,
the limit and a chunk size that would fit.

How the factors are measured (``python -m daskramp.memory --measure``): each step's
wrapper runs on numpy-backed blocks (the kernel path of ``map_ramp_blocks``, no dask) of a
simulated NIRISS SOSS exposure — an 8 × 9 × 256 × 2048 integration chunk for the
pixel-local steps and a 158 × 9 × 256 × 64 tile for jump and ramp_fit — in a fresh
process after one warm-up call (numba compiled, caches loaded).  The peak is the larger of
the ``tracemalloc`` peak (numpy allocations) and the peak RSS above the pre-call RSS,
sampled every 2 ms in a thread (numba allocations are not seen by ``tracemalloc``).  The
input ramp is *not* included in the peak but is counted by adding 1 (data) + 0.25 (uint8
groupdq) to the scratch ratio, since a task holds its input while it runs.

The pipeline runs every step on pixel tiles and dask fuses a tile's steps into one task, so
the task that matters is the whole chain on one tile: its factor (:data:`CHAIN_FACTOR`) is
measured by computing one tile alone through Detector1 from a Zarr store and is larger than
any single step's.  The worker budget per task is :data:`USABLE_FRACTION` of the limit,
divided among its threads; the rest covers the interpreter, finished blocks waiting to be
stored, and allocator slack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import steps as registry
from .params import validate

#: scratch + output bytes per float32 ramp byte of each step, as its spec declares it
#: (:attr:`daskramp.steps.StepSpec.scratch`).  Measured with ``python -m daskramp.memory
#: --measure`` on the cached 158-int NIRISS SOSS segment of ``benchmarks/_common.simulated``:
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

__all__ = [
    "CHAIN_FACTOR",
    "MEASURED_SCRATCH",
    "TILE_STEPS",
    "USABLE_FRACTION",
    "MemoryBudgetError",
    "MemoryPlan",
    "active_steps",
    "check_memory",
    "integrations_per_chunk",
    "step_factor",
    "tile_factor",
    "task_budget",
]


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
        Columns per jump/ramp_fit tile (from :func:`daskramp.pipeline.plan_tiles`).
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
    from . import dims

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
    f = step_factor(step)
    limit_txt = (f"{_mib(budget)} per task ({USABLE_FRACTION:.0%} of the {_mib(memory_limit)} "
                 f"worker memory limit / {threads_per_worker} thread(s))")
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


# ------------------------------------------------------------------ measurement


def _measure_call(fn) -> int:
    """Peak bytes allocated while ``fn()`` runs (tracemalloc and sampled RSS, the larger)."""
    import gc
    import threading
    import time
    import tracemalloc

    import psutil

    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    t.start()
    try:
        out = fn()
        peak[0] = max(peak[0], proc.memory_info().rss)
    finally:
        stop.set()
        t.join()
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    del out
    return max(traced, peak[0] - base)


def _cut(ds, i0, i1, x0, nx):
    """Integrations ``i0:i1`` and columns ``x0:x0+nx`` as a valid exposure (subarray keywords follow)."""
    out = ds.isel(integration=slice(i0, i1), x=slice(x0, x0 + nx))
    out.attrs = {**ds.attrs, "SUBSIZE1": out.sizes["x"], "SUBSTRT1": ds.attrs["SUBSTRT1"] + x0}
    return out


def measure(uncal, refs_dir, *, nint: int, x0: int, nx: int, steps: Iterable[str]) -> dict[str, float]:
    """Scratch bytes per float32 ramp byte of ``steps`` on a numpy block of an uncal file.

    The block is integrations ``0:nint`` and columns ``x0:x0+nx``; the earlier steps are run
    first (unmeasured) so each step sees realistic input.  Each step is called once on a
    small slice to warm up, then measured on the block.
    """
    import numpy as np

    from .io import open_exposure
    from .io.refs import RefSet
    from .pipeline import _as_float, _call_step, step_params

    src = open_exposure(uncal)
    steps = set(steps)
    ds = _as_float(_cut(src, 0, nint, x0, nx).load())
    # darks are not cut out to subarrays: a column band runs without one (not measured there)
    cut = ds.sizes["x"] != src.sizes["x"]
    refs = RefSet.from_dir(refs_dir, ds.attrs, required=(), overrides={"dark": "N/A"} if cut else None)
    ramp_bytes = ds["data"].size * 4
    out: dict[str, float] = {}
    for name in registry.step_order():
        if registry.spec(name).on_rate:
            break
        p = step_params(name, {"skip": False} if name in steps else None)
        if p.skip:
            continue
        if name in steps:
            small = _cut(ds, 0, min(2, nint), 0, nx)
            _call_step(name, small, refs, p, stats_scope="segment")  # warm-up
            peak = _measure_call(lambda name=name, ds=ds, p=p: _call_step(name, ds, refs, p,
                                                                          stats_scope="segment"))
            out[name] = peak / ramp_bytes
        res = _call_step(name, ds, refs, p, stats_scope="segment")
        if res is None:
            continue
        if name == registry.FIT_STEP:
            break
        ds = res
        np.asarray(ds["data"].values)
    return out


def _main(argv=None) -> int:  # pragma: no cover - measurement tool
    import argparse
    import json

    ap = argparse.ArgumentParser(description="measure the working-memory factor of each step")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--uncal", required=True)
    ap.add_argument("--refs", required=True)
    ap.add_argument("--nint", type=int, default=8)
    ap.add_argument("--x0", type=int, default=0)
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--steps", default="")
    a = ap.parse_args(argv)
    steps = [s for s in a.steps.split(",") if s]
    res = measure(a.uncal, a.refs, nint=a.nint, x0=a.x0, nx=a.nx, steps=steps)
    print(json.dumps({k: round(v, 3) for k, v in res.items()}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
