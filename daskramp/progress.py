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

The log: what a command does (its phases and their times, the references chosen, the status
of every step) goes to the ``daskramp`` loggers, one line per event in the style of the
official pipeline's log (``2026-12-07 04:31:12 - daskramp.run - INFO - dark_current: COMPLETE
(jwst_niriss_dark_0001.fits)``).  :func:`log_to` sends it to stderr and/or a file (``daskramp
… --log FILE``); without it nothing is printed (a library stays silent).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Mapping

__all__ = ["LOG_DATEFMT", "LOG_FORMAT", "RunMonitor", "format_bytes", "format_summary", "log_to",
           "scheduler_task_prefixes"]

#: one line per event, as the official pipeline's log: time - logger - level - message
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"

#: a progress line redrawn in place on a terminal is open (no newline yet)
_open_line = threading.Event()


class _StderrHandler(logging.StreamHandler):
    """Log lines on stderr that do not land at the end of an open progress line."""

    def emit(self, record):
        if _open_line.is_set():
            _open_line.clear()
            try:
                self.stream.write("\n")
            except (OSError, ValueError):  # pragma: no cover - a closed stream
                pass
        super().emit(record)


@contextlib.contextmanager
def log_to(*, stderr: bool = True, file=None, level: int = logging.INFO):
    """Send the ``daskramp`` log to stderr and/or ``file`` (appended) while active.

    Handlers installed by an earlier ``log_to`` still active are kept; those installed here
    are removed (and the file closed) on exit.
    """
    logger = logging.getLogger("daskramp")
    handlers: list[logging.Handler] = []
    fmt = logging.Formatter(LOG_FORMAT, datefmt=LOG_DATEFMT)
    if stderr:
        handlers.append(_StderrHandler(sys.stderr))
    if file is not None:
        handlers.append(logging.FileHandler(file, mode="a", encoding="utf-8"))
    saved = (logger.level, logger.propagate)
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    if handlers:
        logger.setLevel(level)
        # printed here once, not again by a handler the application put on the root logger
        logger.propagate = False
    try:
        yield logger
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        if handlers:
            logger.setLevel(saved[0])
            logger.propagate = saved[1]


def logging_configured() -> bool:
    """True when the ``daskramp`` log goes somewhere (a handler on it or on the root)."""
    logger = logging.getLogger("daskramp")
    return bool(logger.handlers) or (logger.propagate and bool(logging.getLogger().handlers))

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
    label : str, optional
        What the work is, shown before the bar (e.g. ``"ingest"``).

    Work submitted in blocks (the segments of ``daskramp run``): :meth:`block_submitted`
    names the blocks in flight before the bar (``segments 1–2/16``) and the bar's fraction is
    of the whole run, the tasks of the blocks not yet submitted estimated from those
    submitted (``412/~1650 tasks``).
    """

    def __init__(self, client, *, stream=sys.stderr, interval: float = 0.5, log_every: float = 10.0,
                 label: str | None = None):
        self.client = client
        self.label = label
        self.stream = stream
        self.interval = interval
        self.log_every = log_every
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.peak_memory: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.errors = 0
        #: where the run stands, shown before the bar (e.g. "segment 3/16"); None: nothing
        self.stage: str | None = None
        #: (blocks submitted, blocks in all) of work submitted in blocks, see block_submitted
        self.blocks: tuple[int, int] | None = None
        self._since = None
        self._t0 = None
        self._last_log = 0.0
        self._drawn = 0
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

    def block_submitted(self, a: int, n: int, *, in_flight: int | None = None) -> None:
        """Block ``a`` (0-based) of ``n`` was submitted; ``in_flight``: at most that many
        blocks are unfinished at once (the older ones are then known to be written)."""
        self.blocks = (a + 1, n)
        first = 1 if in_flight is None else max(1, a + 2 - int(in_flight))
        noun = "segment" if first == a + 1 else "segments"
        span = f"{a + 1}" if first == a + 1 else f"{first}–{a + 1}"
        self.stage = f"{noun} {span}/{n}"

    @property
    def expected_total(self) -> int:
        """Tasks of the whole run: those submitted, plus the blocks still to come estimated
        from the blocks submitted (work not in blocks is counted once)."""
        total = self.total
        if self.blocks is None:
            return total
        submitted, n = self.blocks
        if submitted >= n or submitted <= 0:
            return total
        return max(total, int(round(total * n / submitted)))

    def line(self) -> str:
        done, total, el = self.done, self.total, self.elapsed
        expected = self.expected_total
        rate = done / el if el > 0 else 0.0
        frac = min(1.0, done / expected) if expected else 0.0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        err = f", {self.counts.get('erred', 0)} erred" if self.counts.get("erred") else ""
        stage = " ".join(t for t in (self.label, self.stage) if t)
        stage = f"{stage} " if stage else ""
        of = f"~{expected}" if expected > total else f"{total}"
        return (f"{stage}[{bar}] {frac:4.0%} {done}/{of} tasks{err} | {_fmt_time(el)} elapsed | "
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
            text = self.line()
            # a shorter line than the last one: blanks over the rest
            pad = " " * max(0, self._drawn - len(text)) if _open_line.is_set() else ""
            self._drawn = len(text)
            self.stream.write("\r" + text + pad + ("\n" if final else ""))
            self.stream.flush()
            if final:
                _open_line.clear()
            else:
                _open_line.set()
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
