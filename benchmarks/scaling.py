"""Strong scaling on this machine: Detector1 on the same exposure with 1 and with 2 workers.

The exposure (one 158-integration NIRISS SOSS segment by default, cached by
``benchmarks/_common.simulated``) is converted to a Zarr store once (not timed); then for each
worker count a fresh local cluster (1 thread and ``--memory-limit`` per worker) runs Detector1
from the store to Zarr products, timed from submission to the products being complete.
Printed, all measured in this run:

* wall time per worker count and the parallel efficiency ``T1 / (N × TN)`` (target ≥ 80 %);
* per task kind (dask task prefix) of the 1-worker run: tasks, compute seconds, seconds per
  task and output MB per task; bytes sent between workers in the 2-worker run;
* the per-chunk figures ``docs/scaling.md`` projects from: CPU seconds and bytes moved per
  uncal GB, scheduler tasks per uncal GB, projected task memory.

The machine's load average is printed before and after: other work on the same cores
lowers the measured efficiency.  Usage::

    python benchmarks/scaling.py                 # 158 integrations
    python benchmarks/scaling.py --nints 40      # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gib, simulated  # noqa: E402


def _task_stats(dask_scheduler, since):
    """Per task prefix: tasks, compute s, transfer s, output bytes (runs on the scheduler)."""
    groups = {}
    for comp in list(dask_scheduler.computations):
        if comp.start >= since:
            groups.update((id(tg), tg) for tg in comp.groups)
    out = {}
    for tg in groups.values():
        d = out.setdefault(tg.prefix.name, {"tasks": 0, "compute_s": 0.0, "transfer_s": 0.0, "nbytes": 0})
        d["tasks"] += sum(tg.states.values())
        durs = tg.all_durations
        d["compute_s"] += float(durs.get("compute", 0.0))
        d["transfer_s"] += float(durs.get("transfer", 0.0))
        d["nbytes"] += int(tg.nbytes_total)
    return out


def _sent_bytes(dask_worker):
    return int(getattr(dask_worker, "transfer_outgoing_bytes_total", 0))


def timed_run(store, refs, out, *, workers: int, memory_limit: str):
    from daskramp.cluster import ClusterProfile, connect
    from daskramp.run import run

    prof = ClusterProfile(workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                          dashboard_address=None)
    with connect(prof, quiet=True) as client:
        # workers import daskramp and load the compiled kernels before the clock starts
        client.run(lambda: __import__("daskramp.pipeline") and None)
        since = client.run_on_scheduler(lambda: time.time())
        t0 = time.perf_counter()
        summary = run([store], out, refs=refs, client=client, quiet=True, fits=False)
        wall = time.perf_counter() - t0
        stats = client.run_on_scheduler(_task_stats, since=since)
        sent = sum(client.run(_sent_bytes).values())
    shutil.rmtree(out, ignore_errors=True)
    return wall, summary, stats, sent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nints", type=int, default=158)
    p.add_argument("--memory-limit", default="2GB")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--repeat", type=int, default=1, help="runs per worker count (the fastest is kept)")
    args = p.parse_args(argv)

    from daskramp.cluster import ClusterProfile, connect
    from daskramp.io import ingest

    sim = simulated("niriss-soss", args.nints)
    work = Path(tempfile.mkdtemp(prefix="daskramp-scaling-"))
    try:
        store = work / "exposure.zarr"
        with connect(ClusterProfile(workers=2, threads_per_worker=1, memory_limit=args.memory_limit,
                                    dashboard_address=None), quiet=True):
            ingest(sim.uncal_files, store)
        uncal = sum(f.stat().st_size for f in sim.uncal_files)
        print(f"# exposure {args.nints} × 9 × 256 × 2048 ({gib(uncal)} uncal); load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        results = {}
        for n in [int(w) for w in args.workers.split(",")]:
            best = None
            for _ in range(args.repeat):
                r = timed_run(store, sim.refs_dir, work / f"out{n}", workers=n, memory_limit=args.memory_limit)
                if best is None or r[0] < best[0]:
                    best = r
            results[n] = best
            wall, summary, stats, sent = best
            print(f"{n} worker(s): {wall:7.1f} s  {uncal / 1e6 / wall:6.1f} MB/s  "
                  f"{summary['tasks']} tasks  sent between workers {sent / 1e6:.1f} MB  "
                  f"tiles of {summary['tile_columns']} columns", flush=True)
        ns = sorted(results)
        t1 = results[ns[0]][0] * ns[0]
        for n in ns[1:]:
            eff = t1 / (n * results[n][0])
            print(f"parallel efficiency {n} workers vs {ns[0]}: {eff:.1%} (target ≥ 80 %)")

        wall, summary, stats, _ = results[ns[0]]
        ugb = uncal / 1e9
        print(f"\nper task kind ({ns[0]}-worker run):")
        print(f"{'prefix':<36}{'tasks':>7}{'compute s':>11}{'s/task':>9}{'MB out/task':>13}")
        tot_c = tot_t = 0
        for name, d in sorted(stats.items(), key=lambda kv: -kv[1]["compute_s"]):
            tot_c += d["compute_s"]
            tot_t += d["tasks"]
            if d["compute_s"] < 0.05 * max(1e-9, wall) and d["tasks"] < 50:
                continue
            print(f"{name:<36}{d['tasks']:>7}{d['compute_s']:>11.1f}{d['compute_s'] / max(d['tasks'], 1):>9.3f}"
                  f"{d['nbytes'] / max(d['tasks'], 1) / 1e6:>13.1f}")
        sent2 = results[ns[-1]][3]
        print(f"\nper uncal GB: {tot_c / ugb:.1f} CPU s of tasks, {tot_t / ugb:.0f} tasks, "
              f"{sent2 / 1e6 / ugb:.0f} MB sent between workers ({ns[-1]} workers); "
              f"wall {wall / ugb:.1f} s on {ns[0]} worker(s); memory plan: {summary['memory_plan']}")
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
