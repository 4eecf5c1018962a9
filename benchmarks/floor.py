"""The streaming floor of this machine for Detector1 on one segment, beside daskramp.

The floor is the least work any Detector1 must do on a segment: read the uncal SCI array,
convert its FITS words (big-endian int16 + 32768) to DN, take every pixel's group
differences, their median (the heart of the two-point jump test) and an ordinary
least-squares slope per integration — in one compiled pass over the file, all cores
(numba ``prange`` over the rows of each integration).  It writes nothing but the
(nint, ny, nx) float32 slopes in memory; no references, no DQ, no products.  It is a lower
bound for the work of daskramp and of jwst, not a pipeline.

Printed, in one invocation: the floor's wall time (best of ``--repeats`` after a compiling
run, input in the page cache), then ``daskramp.run.run`` with its default settings on the same
segment (a local cluster as ``daskramp run`` starts it, Zarr and FITS products), and the
ratio daskramp / floor (target ≤ 2.5).  Usage::

    python benchmarks/floor.py                 # the 158 × 9 × 256 × 2048 SOSS segment
    python benchmarks/floor.py --nints 20      # a quick look
    python benchmarks/floor.py --memory-limit 2GB   # daskramp with a tuned setting beside the default
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gib, simulated, warm  # noqa: E402


@numba.njit(parallel=True, cache=True)
def _slopes(words: np.ndarray, tgroup: float, out: np.ndarray, medians: np.ndarray) -> None:
    """``words`` (nint, ngroup, ny, nx) big-endian int16 words viewed as uint16; ``out``
    (nint, ny, nx) OLS slopes in DN/s; ``medians`` the same shape, median group difference."""
    nint, ngroup, ny, nx = words.shape
    tbar = (ngroup - 1) / 2.0
    sxx = 0.0
    for g in range(ngroup):
        sxx += (g - tbar) ** 2
    for i in range(nint):
        for y in numba.prange(ny):
            ramp = np.empty(ngroup, np.float32)
            diffs = np.empty(max(ngroup - 1, 1), np.float32)
            for x in range(nx):
                for g in range(ngroup):
                    w = words[i, g, y, x]
                    # FITS int16 (big-endian) + BZERO 32768 = the uint16 DN
                    dn = ((w >> 8) | ((w & 0xFF) << 8)) ^ 0x8000
                    ramp[g] = dn
                s = 0.0
                mean = 0.0
                for g in range(ngroup):
                    mean += ramp[g]
                mean /= ngroup
                for g in range(ngroup):
                    s += (g - tbar) * (ramp[g] - mean)
                out[i, y, x] = s / sxx / tgroup
                # median of the differences: insertion sort in place (a handful of values)
                n = ngroup - 1
                for g in range(n):
                    v = ramp[g + 1] - ramp[g]
                    k = g
                    while k > 0 and diffs[k - 1] > v:
                        diffs[k] = diffs[k - 1]
                        k -= 1
                    diffs[k] = v
                if n <= 0:
                    medians[i, y, x] = 0.0
                elif n % 2:
                    medians[i, y, x] = diffs[n // 2]
                else:
                    medians[i, y, x] = 0.5 * (diffs[n // 2 - 1] + diffs[n // 2])


def floor_pass(uncal: Path) -> tuple[float, np.ndarray]:
    """One pass over ``uncal``: (wall s, slopes)."""
    from daskramp.io.uncal import scan_segment

    seg = scan_segment(uncal)
    nint, ngroup, ny, nx = seg.shape
    tgroup = float(seg.header.get("TGROUP", 1.0))
    t0 = time.perf_counter()
    words = np.memmap(uncal, dtype=np.uint16, mode="r", offset=seg.offset, shape=(nint, ngroup, ny, nx))
    out = np.empty((nint, ny, nx), np.float32)
    med = np.empty((nint, ny, nx), np.float32)
    _slopes(words, tgroup, out, med)
    wall = time.perf_counter() - t0
    del words
    return wall, out


def run_daskramp(sim, out: Path, **cluster) -> tuple[float, int]:
    """``daskramp.run.run`` as ``daskramp run`` starts it (``cluster``: settings changed from
    the defaults); (wall s, peak RSS of all processes)."""
    from daskramp.cluster import ClusterProfile
    from daskramp.run import run
    from daskramp.testing.memory import TreeMemorySampler

    warm(sim.uncal_files)
    with TreeMemorySampler(interval=0.1) as mem:
        t0 = time.perf_counter()
        run(sim.uncal_files, out, refs=sim.refs_dir, cluster=ClusterProfile(dashboard_address=None, **cluster),
            quiet=True)
        wall = time.perf_counter() - t0
    return wall, mem.peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="niriss-soss")
    p.add_argument("--nints", type=int, default=158)
    p.add_argument("--repeats", type=int, default=3, help="timed floor passes (best is printed)")
    p.add_argument("--memory-limit", default=None,
                   help="also run daskramp with this worker memory limit, beside the default")
    args = p.parse_args(argv)

    print(f"# command: python benchmarks/floor.py{' ' + ' '.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ''}")
    print(f"# date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
          f"{os.cpu_count()} cores, numba threads {numba.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    sim = simulated(args.preset, args.nints)
    (uncal,) = sim.uncal_files
    mb = uncal.stat().st_size / 1e6
    warm([uncal])
    first, _ = floor_pass(uncal)  # compiles (or loads the cache) and maps the file once
    walls = [floor_pass(uncal)[0] for _ in range(args.repeats)]
    floor = min(walls)
    print(f"floor      {mb:7.0f} MB  wall {floor:6.2f} s (best of {', '.join(f'{w:.2f}' for w in walls)}; "
          f"first {first:.2f} s)  {mb / floor:6.0f} MB/s", flush=True)

    settings = [("default settings", {})] + (
        [(f"{args.memory_limit} per worker", {"memory_limit": args.memory_limit})] if args.memory_limit else [])
    tmp = Path(tempfile.mkdtemp(prefix="daskramp-floor-"))
    try:
        for label, kw in settings:
            wall, peak = run_daskramp(sim, tmp / "products", **kw)
            shutil.rmtree(tmp / "products", ignore_errors=True)
            print(f"daskramp   {label:22s} wall {wall:6.2f} s  peak all processes {gib(peak)}  "
                  f"daskramp / floor {wall / floor:5.2f}  (target ≤ 2.5)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
