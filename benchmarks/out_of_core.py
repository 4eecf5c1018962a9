"""Out-of-core Detector1: exposures of 1×, 4× and 16× one 158-integration SOSS segment.

Each size is run end to end on a fresh local cluster (default 2 worker processes, 1 thread,
2 GB each): uncal FITS → Zarr store (``daskramp.io.ingest``) → Detector1 → rate/rateints Zarr
products (``daskramp.run.run``).  Printed per size, all measured in this run:

* wall time of the conversion, of the Detector1 run and of both; throughput in uncal MB/s;
* peak RSS of each worker process, sampled every 0.1 s and exact (the kernel's high-water
  mark ``VmHWM``, Linux), of all processes together and of this process alone (the client
  and the scheduler; sampled);
* bytes read and written by all processes (``read_chars``/``write_chars``: through the page
  cache too) per pixel-group (one pixel of one group of one integration = 2 uncal bytes);
* the most tasks the scheduler (in this process) held at once, sampled: an exposure of
  several segments is submitted one segment after another (``--segments-in-flight``, 0 for
  the one graph of the whole exposure).

Targets: peak memory flat within 10 % across sizes; wall time linear in size within 15 %.
Before the first size, this process runs a 4-integration exposure through the same path,
untimed (:func:`warm_client`), so that every size starts from the same state: otherwise the
first size alone would pay the imports and first calls of this process (≈ 1.8 s more on a 1×
conversion that takes 4.5 s warm).  Every size but the largest is run ``--repeats`` times
(default 3), half before the largest size and half after it (:func:`run_order`), and its
median wall time compared: on the development machine a 30 s run varies by up to a third
within an hour (the tasks themselves slower, not the scheduling), and a 9-minute run averages
such spells out.  Before each run the page cache's dirty pages are flushed and written back
(:func:`settle_io`), so that no run pays for the previous one's write-back.  Inputs are
simulated once and cached (``benchmarks/_common.simulated``); free disk is checked
first and the largest sizes dropped, with a message, if they do not fit.  Usage::

    python benchmarks/out_of_core.py                    # 1× and 4×
    python benchmarks/out_of_core.py --sizes 1,4,16     # 16× ≈ 24 GB of uncal
    python benchmarks/out_of_core.py --sizes 4 --repeats 1 --segments-in-flight 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, gib, simulated, step_settings  # noqa: E402

SEGMENT_NINTS = 158
#: bytes of one 158 × 9 × 256 × 2048 uncal segment (uint16)
SEGMENT_BYTES = SEGMENT_NINTS * 9 * 256 * 2048 * 2


class ProcessSampler:
    """Peak RSS of each of some processes and of a whole process tree, sampled in a thread."""

    def __init__(self, pids: dict[str, int], root: int | None = None, interval: float = 0.1,
                 scheduler=None):
        self.pids = dict(pids)
        self.root = root or os.getpid()
        self.interval = interval
        self.peak = {k: 0 for k in self.pids}
        self.peak_total = 0
        self.peak_root = 0
        #: an in-process scheduler, whose task count is sampled too (most tasks it held)
        self.scheduler = scheduler
        self.peak_tasks = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        import psutil

        root = psutil.Process(self.root)
        return [root, *root.children(recursive=True)]

    def sample(self):
        import psutil

        total = 0
        for p in self._tree():
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            if p.pid == self.root:
                self.peak_root = max(self.peak_root, rss)
        self.peak_total = max(self.peak_total, total)
        if self.scheduler is not None:
            self.peak_tasks = max(self.peak_tasks, len(self.scheduler.tasks))
        for name, pid in self.pids.items():
            try:
                self.peak[name] = max(self.peak[name], psutil.Process(pid).memory_info().rss)
            except psutil.NoSuchProcess:
                pass

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.sample()


def io_chars(root: int | None = None) -> tuple[int, int]:
    """(read, written) bytes so far by a process tree, page cache included."""
    import psutil

    r = w = 0
    p0 = psutil.Process(root or os.getpid())
    for p in [p0, *p0.children(recursive=True)]:
        try:
            c = p.io_counters()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        r += getattr(c, "read_chars", c.read_bytes)
        w += getattr(c, "write_chars", c.write_bytes)
    return r, w


def high_water_marks(pids: dict[str, int]) -> dict[str, int | None]:
    """Each process's exact peak RSS so far (Linux ``VmHWM``; None where unavailable).

    The kernel keeps this high-water mark itself (to within its per-thread counter batching,
    well under 1 MiB), so unlike the 0.1 s samples it cannot miss a short peak: a longer run
    takes more samples and so finds a higher sampled peak for the same working set, which
    biases a sampled comparison across sizes."""
    out: dict[str, int | None] = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/status") as f:
                kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            out[name] = kib * 1024
        except (OSError, StopIteration, ValueError):
            out[name] = None
    return out


def worker_pids(client) -> dict[str, int]:
    return {str(k): v for k, v in client.run(os.getpid).items()}


def run_size(files, refs, work: Path, *, workers: int, memory_limit: str, fits: bool,
             tile_columns: int | None = None, segments_in_flight: int | None = None,
             steps_on: tuple = (), step_params: dict | None = None) -> dict:
    """Convert + run one exposure on a fresh local cluster; measured figures.
    ``step_params``: ``{step: {param: value}}`` given to the run (``--set``)."""
    from daskramp.cluster import ClusterProfile, connect
    from daskramp.io import ingest
    from daskramp.run import run

    prof = ClusterProfile(workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                          dashboard_address=None)
    store, out = work / "exposure.zarr", work / "products"
    cfg = {"tile_columns": tile_columns} if tile_columns else {}
    if segments_in_flight is not None:
        cfg["segments_in_flight"] = segments_in_flight
    steps = {s: {"skip": False} for s in steps_on}
    for step, kv in (step_params or {}).items():
        steps.setdefault(step, {}).update(kv)
    if steps:
        cfg["steps"] = steps
    with connect(prof, quiet=True) as client:
        pids = worker_pids(client)
        r0, w0 = io_chars()
        with ProcessSampler(pids, scheduler=getattr(client.cluster, "scheduler", None)) as mem:
            t0 = time.perf_counter()
            ingest(files, store, overwrite=True)
            t1 = time.perf_counter()
            summary = run([store], out, refs=refs, client=client, quiet=True, fits=fits, config=cfg)
            t2 = time.perf_counter()
        hwm = high_water_marks(pids)
        r1, w1 = io_chars()
    uncal = sum(Path(f).stat().st_size for f in files)
    return {
        "uncal_bytes": uncal,
        "pixel_groups": summary["pixel_groups"],
        "ingest_s": t1 - t0,
        "run_s": t2 - t1,
        "wall_s": t2 - t0,
        "peak_worker": mem.peak,
        "hwm_worker": hwm,
        "peak_total": mem.peak_total,
        "peak_client": mem.peak_root,
        "read_per_pg": (r1 - r0) / summary["pixel_groups"],
        "written_per_pg": (w1 - w0) / summary["pixel_groups"],
        "tile_columns": summary["tile_columns"],
        "tasks": summary["tasks"],
        "peak_scheduler_tasks": mem.peak_tasks,
    }


def run_order(sizes: list[int], reps: dict[int, int]) -> list[tuple[int, int]]:
    """(size, repetition) in the order they run: the smaller sizes in turn, their first half
    of repetitions before the largest size and the rest after it, so that a slow spell of
    the machine (a 1× run may vary by a third within an hour) is not charged to one size."""
    largest = max(sizes)
    small = [k for k in sizes if k != largest]
    rounds = max((reps[k] for k in small), default=0)
    before = [(k, r) for r in range(-(-rounds // 2)) for k in small if r < reps[k]]
    after = [(k, r) for r in range(-(-rounds // 2), rounds) for k in small if r < reps[k]]
    return before + [(largest, r) for r in range(reps[largest])] + after


def settle_io(limit_mb: int = 64, timeout: float = 120.0) -> float:
    """Flush the page cache's dirty pages (a previous size's products, its deleted store) and
    wait until write-back is under ``limit_mb``: the kernel's write-back of one size's 22 GB
    is not charged to the next.  Returns the seconds waited."""
    t0 = time.perf_counter()
    os.sync()
    while time.perf_counter() - t0 < timeout:
        try:
            with open("/proc/meminfo") as f:
                info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        except OSError:
            break
        if (info.get("Dirty", 0) + info.get("Writeback", 0)) < limit_mb * 1024:
            break
        time.sleep(0.5)
    return time.perf_counter() - t0


def warm_client(work: Path, *, workers: int, memory_limit: str) -> float:
    """Run a 4-integration SOSS exposure through conversion and Detector1 on a throwaway
    cluster, untimed; returns its wall time (s).  Only this process keeps what it loaded:
    each size still starts its own cluster."""
    sim = simulated("niriss-soss", 4)
    t0 = time.perf_counter()
    run_size(sim.uncal_files, sim.refs_dir, work / "warm", workers=workers,
             memory_limit=memory_limit, fits=False)
    shutil.rmtree(work / "warm", ignore_errors=True)
    return time.perf_counter() - t0


def fit_sizes(sizes: list[int], work: Path, fits: bool) -> list[int]:
    """Sizes whose inputs (if not cached) and outputs fit on the disks; others dropped loudly."""
    keep = []
    free_cache = shutil.disk_usage(CACHE.parent if not CACHE.exists() else CACHE).free
    free_work = shutil.disk_usage(work).free
    for k in sorted(sizes):
        need_in = 0 if _cached(k) else 1.1 * k * SEGMENT_BYTES
        # all bytes written by all processes (files and sockets) are 1.8–2.2 per pixel-group
        # of 2 uncal bytes (this script prints them), i.e. ≤ 1.1× the uncal for the store +
        # Zarr products; FITS products add 1.1× (20 B per pixel and integration vs 18 B of
        # uncal)
        need_out = k * SEGMENT_BYTES * (1.2 + (1.1 if fits else 0.0))
        same_disk = os.stat(work).st_dev == os.stat(CACHE if CACHE.exists() else CACHE.parent).st_dev
        if same_disk:
            ok = need_in + need_out < 0.9 * free_work
        else:
            ok = need_in < 0.9 * free_cache and need_out < 0.9 * free_work
        if ok:
            keep.append(k)
            if same_disk:
                free_work -= need_in
        else:
            print(f"# size {k}× dropped: needs {gib(need_in)} for inputs and {gib(need_out)} for "
                  f"outputs, {gib(free_work)} free in {work}", flush=True)
    return keep


def _cached(k: int) -> bool:
    return (CACHE / f"niriss-soss-n{SEGMENT_NINTS}-s{k}-gNone-seed1" / ".done").exists()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4", help="multiples of one 158-integration segment")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="2GB")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of every size but the largest (the median wall time is compared)")
    p.add_argument("--fits", action="store_true", help="also export FITS products")
    p.add_argument("--segments-in-flight", type=int, default=None,
                   help="segments submitted at once (default: the run's, 2; 0: one graph)")
    p.add_argument("--workdir", default=None, help="where stores and products go (default: a temp dir)")
    p.add_argument("--with-step", action="append", default=[], metavar="STEP",
                   help="run with this optional step on (e.g. group_1overf, clean_flicker_noise)")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="a step parameter of the runs, e.g. clean_flicker_noise.background_method=model")
    args = p.parse_args(argv)
    step_params = step_settings(p, args.set)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="daskramp-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = fit_sizes(sizes, work, args.fits)
    print(f"# load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.workers} workers × 1 thread, memory limit {args.memory_limit} each"
          + (f"; steps on: {', '.join(args.with_step)}" if args.with_step else "")
          + "".join(f"; {st}.{k}={v}" for st, kv in step_params.items() for k, v in kv.items()), flush=True)
    rows: dict[int, list[dict]] = {}
    try:
        took = warm_client(work, workers=args.workers, memory_limit=args.memory_limit)
        print(f"# this process warmed on a 4-integration exposure ({took:.1f} s, untimed)", flush=True)
        reps = {k: 1 if k == max(sizes) else max(1, args.repeats) for k in sizes}
        for k, rep in run_order(sizes, reps):
            sim = simulated("niriss-soss", SEGMENT_NINTS, segments=k)
            waited = settle_io()
            d = work / f"x{k}"
            res = run_size(sim.uncal_files, sim.refs_dir, d, workers=args.workers,
                           memory_limit=args.memory_limit, fits=args.fits,
                           segments_in_flight=args.segments_in_flight, steps_on=tuple(args.with_step),
                           step_params=step_params)
            shutil.rmtree(d, ignore_errors=True)
            rows.setdefault(k, []).append(res)
            peaks = ", ".join(f"{n}: {gib(b)}" for n, b in sorted(res["peak_worker"].items()))
            hwms = ", ".join(f"{n}: {'n/a' if b is None else gib(b)}"
                             for n, b in sorted(res["hwm_worker"].items()))
            print(f"{k:>3}× ({rep + 1}/{reps[k]}, write-back waited {waited:.1f} s)  "
                  f"uncal {gib(res['uncal_bytes'])}  ingest {res['ingest_s']:7.1f} s  "
                  f"run {res['run_s']:7.1f} s  total {res['wall_s']:7.1f} s  "
                  f"{res['uncal_bytes'] / 1e6 / res['wall_s']:6.1f} MB/s  "
                  f"peak per worker [{peaks}]  exact (VmHWM) [{hwms}]  all processes {gib(res['peak_total'])} "
                  f"(this process, client and scheduler: {gib(res['peak_client'])})  "
                  f"read {res['read_per_pg']:.2f} B/pg  written {res['written_per_pg']:.2f} B/pg  "
                  f"(tiles of {res['tile_columns']} columns, {res['tasks']} tasks, "
                  f"the scheduler holding at most {res['peak_scheduler_tasks']})", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if len(rows) >= 2:
        ks = sorted(rows)
        # a size's peak is the highest of its runs; its wall time the median of its runs
        worker_peaks = {k: max(max(r["peak_worker"].values()) for r in rs) for k, rs in rows.items()}
        spread = max(worker_peaks.values()) / min(worker_peaks.values()) - 1
        print(f"peak worker RSS spread across sizes, sampled: {spread:+.1%} (target within 10 %)")
        hwms = [b for rs in rows.values() for r in rs for b in r["hwm_worker"].values()]
        if None not in hwms:
            hwm_peaks = {k: max(max(r["hwm_worker"].values()) for r in rs) for k, rs in rows.items()}
            spread_h = max(hwm_peaks.values()) / min(hwm_peaks.values()) - 1
            print(f"peak worker RSS spread across sizes, exact (VmHWM): {spread_h:+.1%} "
                  f"(target within 10 %)")
        totals = {k: max(r["peak_total"] for r in rs) for k, rs in rows.items()}
        spread_t = max(totals.values()) / min(totals.values()) - 1
        print(f"peak all-process RSS spread across sizes: {spread_t:+.1%}")
        walls = {k: statistics.median(r["wall_s"] for r in rs) for k, rs in rows.items()}
        for k in ks:
            if len(rows[k]) > 1:
                print(f"wall time {k}×: median {walls[k]:.1f} s of "
                      + ", ".join(f"{r['wall_s']:.1f}" for r in rows[k]) + " s")
        for k in ks[1:]:
            ratio = (walls[k] / walls[ks[0]]) / (k / ks[0])
            print(f"wall time {k}× / {ks[0]}× per unit of size: {ratio:.3f} (target 0.85–1.15)")
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
