"""Feedback while a graph runs on a dask cluster: a progress line and per-worker peak memory.

:class:`RunMonitor` polls the scheduler from a background thread of the client process:

* task counts of the computations submitted since the monitor started (the scheduler's
  ``computations`` records, the figures the dashboard's progress page shows) → a progress
  line with tasks done/total, elapsed time and rate.  On a terminal the line is redrawn in
  place; otherwise (CI logs, pipes) a plain line is printed at most every ``log_every``
  seconds, so logs stay readable;
* the memory each worker reports in its heartbeat (``metrics["memory"]``, the process RSS)
  → the peak per worker.

The monitor never touches the data; it costs one small scheduler call per poll.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping

__all__ = ["RunMonitor", "format_bytes", "format_summary", "scheduler_task_prefixes"]

_DONE_STATES = ("memory", "released", "forgotten")


def _scheduler_counts(dask_scheduler, since: float) -> dict:
    """Summed task states of the computations started after ``since`` (runs on the scheduler)."""
    groups = {}
    for comp in list(dask_scheduler.computations):
        if getattr(comp, "start", 0) >= since:
            groups.update((id(tg), tg) for tg in comp.groups)  # a group may be shared
    counts: dict[str, int] = {}
    for tg in groups.values():
        for state, n in tg.states.items():
            counts[state] = counts.get(state, 0) + int(n)
    return counts


def scheduler_task_prefixes(dask_scheduler, since: float) -> list[str]:
    """Names of the task prefixes computed since ``since`` (runs on the scheduler: tells which
    kinds of work a run submitted, e.g. that a rerun read no input)."""
    return sorted({tg.prefix.name for comp in list(dask_scheduler.computations)
                   if getattr(comp, "start", 0) >= since for tg in comp.groups})


def format_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:d}:{s % 60:02d}"


class RunMonitor:
    """Progress and per-worker peak memory of the work a client submits while it is active.

    Parameters
    ----------
    client : distributed.Client
    stream : file, optional
        Where the progress line goes (default ``sys.stderr``); ``None`` disables the line
        (memory is still sampled).
    interval : float
        Seconds between polls.
    log_every : float
        Seconds between progress lines when ``stream`` is not a terminal.
    """

    def __init__(self, client, *, stream=sys.stderr, interval: float = 0.5, log_every: float = 10.0):
        self.client = client
        self.stream = stream
        self.interval = interval
        self.log_every = log_every
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.peak_memory: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.errors = 0
        #: where the run stands, shown before the bar (e.g. "segment 3/16"); None: nothing
        self.stage: str | None = None
        self._since = None
        self._t0 = None
        self._last_log = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="daskramp-monitor", daemon=True)

    # ------------------------------------------------------------------ figures
    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in _DONE_STATES)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def elapsed(self) -> float:
        return 0.0 if self._t0 is None else time.perf_counter() - self._t0

    def line(self) -> str:
        done, total, el = self.done, self.total, self.elapsed
        rate = done / el if el > 0 else 0.0
        frac = done / total if total else 0.0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        err = f", {self.counts.get('erred', 0)} erred" if self.counts.get("erred") else ""
        stage = f"{self.stage} " if self.stage else ""
        return (f"{stage}[{bar}] {frac:4.0%} {done}/{total} tasks{err} | {_fmt_time(el)} elapsed | "
                f"{rate:.1f} tasks/s")

    # ------------------------------------------------------------------ polling
    def poll(self) -> None:
        """One poll: task counts and worker memory (errors are counted, never raised)."""
        try:
            self.counts = self.client.run_on_scheduler(_scheduler_counts, since=self._since)
        except Exception:  # noqa: BLE001 - feedback must never break the run
            self.errors += 1
        try:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # older distributed without n_workers
            workers = self.client.scheduler_info().get("workers", {})
        except Exception:  # noqa: BLE001
            self.errors += 1
            return
        for addr, w in workers.items():
            name = str(w.get("name", addr))
            mem = (w.get("metrics") or {}).get("memory")
            if mem:
                self.peak_memory[name] = max(self.peak_memory.get(name, 0), int(mem))

    def _emit(self, final: bool = False) -> None:
        if self.stream is None or not self.total:
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self._last_log >= self.log_every:
            self._last_log = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
            self._emit()

    def __enter__(self):
        try:
            self._since = self.client.run_on_scheduler(lambda: time.time())
        except Exception:  # noqa: BLE001
            self._since = time.time()
        self._t0 = time.perf_counter()
        self._last_log = self._t0
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.poll()
        self._emit(final=True)
        return False

    def summary(self) -> dict:
        return {
            "tasks": self.done,
            "peak_memory_per_worker": dict(sorted(self.peak_memory.items())),
        }


def format_summary(summary: Mapping) -> str:
    """One screen of text from the summary dict of :func:`daskramp.run.run`."""
    lines = []
    keys = ("uncal_MB", "pixel_groups", "wall_s", "throughput_MB_s", "tasks")
    labels = {"uncal_MB": "data processed (uncal MB)", "pixel_groups": "pixel-groups",
              "wall_s": "wall time (s)", "throughput_MB_s": "throughput (MB/s)", "tasks": "tasks"}
    for k in keys:
        if k in summary:
            v = summary[k]
            lines.append(f"{labels[k]:<28} {v:.4g}" if isinstance(v, float) else f"{labels[k]:<28} {v}")
    peaks = summary.get("peak_memory_per_worker") or {}
    if peaks:
        lines.append("peak memory per worker:")
        for name, b in peaks.items():
            lines.append(f"  {name:<26} {format_bytes(b)}")
    return "\n".join(lines)
