"""Peak memory of a process tree, sampled in a background thread (benchmarks)."""

from __future__ import annotations

import threading
import time


class TreeMemorySampler:
    """Sample the summed RSS of a process and all its children every ``interval`` seconds.

    ``/usr/bin/time -v`` reports only the largest single process; dask workers and the
    official pipeline's multiprocessing need the whole tree.  Use as a context manager;
    ``peak`` (bytes, all processes together) and ``peak_per_process`` (bytes, largest single
    process) are available afterwards.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1):
        import os

        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak = 0
        self.peak_per_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            self.peak_per_process = max(self.peak_per_process, rss)
        self.peak = max(self.peak, total)
        return total

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False
