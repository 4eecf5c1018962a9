"""Working-memory factors of the steps: the figures the memory plan uses
(:mod:`daskramp.engine.plan`, each step's ``StepSpec.scratch``).

Each step's wrapper runs on numpy blocks (the kernel path of ``map_ramp_blocks``, no dask)
of a simulated NIRISS SOSS exposure — an 8 × 9 × 256 × 2048 integration chunk for the
pixel-local steps and a 158 × 9 × 256 × 64 tile for jump and ramp_fit — in a fresh process
after one warm-up call (numba compiled, caches loaded).  The peak is the larger of the
``tracemalloc`` peak (numpy allocations) and the peak RSS above the pre-call RSS, sampled
every 2 ms in a thread (numba allocations are not seen by ``tracemalloc``).  The input ramp
is not in the peak; the plan adds it (1 for data + 0.25 for the uint8 groupdq).

    python benchmarks/memory_factors.py --uncal U.fits --refs DIR --steps jump,ramp_fit --nint 158 --nx 64
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from daskramp import steps as registry
from daskramp.engine.stages import as_float, call_step


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
    from daskramp.io import open_exposure
    from daskramp.io.refs import RefSet
    from daskramp.pipeline import step_params

    src = open_exposure(uncal)
    steps = set(steps)
    ds = as_float(_cut(src, 0, nint, x0, nx).load())
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
            call_step(name, small, refs, p, stats_scope="segment")  # warm-up
            peak = _measure_call(lambda name=name, ds=ds, p=p: call_step(name, ds, refs, p,
                                                                          stats_scope="segment"))
            out[name] = peak / ramp_bytes
        res = call_step(name, ds, refs, p, stats_scope="segment")
        if res is None:
            continue
        if name == registry.FIT_STEP:
            break
        ds = res
        np.asarray(ds["data"].values)
    return out


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="measure the working-memory factor of each step")
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


if __name__ == "__main__":
    raise SystemExit(main())
