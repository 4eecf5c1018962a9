"""Benchmark of ``daskramp.simulate``: one full NIRISS SOSS segment (158 × 9 × 256 × 2048).

Prints wall time, uncal throughput (MB/s) and the peak resident memory of the whole process
tree (this process plus generator workers, sampled every 50 ms).

    python benchmarks/simulate.py                      # full 158-integration segment, 2 workers
    python benchmarks/simulate.py --nints 4 --nx 256   # smoke run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from daskramp.simulate import simulate


class TreeMemory:
    """Peak RSS (bytes) of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="niriss-soss")
    ap.add_argument("--nints", type=int, default=158)
    ap.add_argument("--nx", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="output directory (default: a temporary one, removed afterwards)")
    args = ap.parse_args(argv)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="daskramp-simbench-"))
    try:
        # compile (or load from cache) the kernel outside the timed region
        simulate(out / "warmup", preset=args.preset, nints=1, ngroups=2, nx=64, seed=args.seed)
        shutil.rmtree(out / "warmup")
        with TreeMemory() as mem:
            t0 = time.perf_counter()
            res = simulate(out / "sim", preset=args.preset, nints=args.nints, nx=args.nx,
                           seed=args.seed, workers=args.workers)
            wall = time.perf_counter() - t0
        nbytes = sum(f.stat().st_size for f in res.uncal_files)
        shape = (args.nints, res.attrs["NGROUPS"], res.attrs["SUBSIZE2"], res.attrs["SUBSIZE1"])
        print(f"preset            {args.preset}  shape {shape}  workers {args.workers}")
        print(f"uncal size        {nbytes / 1e6:.1f} MB")
        print(f"wall time         {wall:.1f} s  (includes reference files and truth)")
        print(f"throughput        {nbytes / 1e6 / wall:.1f} MB/s")
        print(f"peak RSS (tree)   {mem.peak / 2**20:.0f} MiB")
        print(f"jumps injected    {res.n_jumps}   saturated pixel-integrations {res.n_saturated}")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
