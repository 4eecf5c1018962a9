"""Where the graph runs: a local process-based cluster, or an existing scheduler.

* default: a :class:`distributed.LocalCluster` of worker *processes* sized to the machine;
* ``scheduler="tcp://host:8786"`` or the ``DASKRAMP_SCHEDULER`` environment variable: connect
  to a running scheduler (a docker-compose cluster, an HPC allocation, …) and submit there;
* profiles in ``workflows/clusters/*.yaml`` hold these settings apart from the science.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

from .config import load_yaml

ENV_SCHEDULER = "DASKRAMP_SCHEDULER"


@dataclass(frozen=True)
class ClusterProfile:
    """Settings of a dask cluster (no science here)."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str | int = "auto"
    processes: bool = True
    dashboard_address: str | None = ":0"
    #: dask's statistical profiler in each worker (the dashboard's "Profile" page).  Off by
    #: default: it keeps a call tree per second of run for up to 1000 s (tens of MB per worker
    #: over a SOSS run of several minutes), memory that grows with the run's length, not
    #: with its chunks; and it samples every 10 ms.
    worker_profiling: bool = False
    #: root tasks the scheduler hands a worker per thread (dask's
    #: ``distributed.scheduler.worker-saturation``) in clusters daskramp starts.  dask's 1.1
    #: gives a one-thread worker its next tile task while one runs: a tile that finishes
    #: starts the next at once, and its products wait in memory for their store tasks until
    #: that next tile is done.  At 1.0 the stores run first (≈ 50 MB less per worker for a
    #: SOSS tile, and the peak grows less with the run's length: benchmarks/out_of_core.py).
    worker_saturation: float = 1.0

    @classmethod
    def from_yaml(cls, path) -> ClusterProfile:
        data = load_yaml(path)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown cluster settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def parse_memory(limit, workers: int) -> int:
    """Bytes per worker for a ``memory_limit`` setting ("auto", "2GB", "2 GiB", int bytes)."""
    from dask.utils import parse_bytes

    if limit in (None, "auto", 0):
        import psutil

        return int(psutil.virtual_memory().total / max(workers, 1))
    if isinstance(limit, (int, float)):
        return int(limit)
    return int(parse_bytes(str(limit)))


@contextmanager
def connect(profile: ClusterProfile | None = None, *, quiet: bool = False, **overrides):
    """Yield a :class:`distributed.Client` for ``profile`` (a new local cluster or a scheduler).

    The local cluster and client are closed on exit; a remote scheduler is left running.
    """
    from distributed import Client, LocalCluster

    profile = profile or ClusterProfile()
    if overrides:
        profile = ClusterProfile(**{**profile.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    address = profile.scheduler or os.environ.get(ENV_SCHEDULER)
    if address:
        client = Client(address, timeout="30s")
        cluster = None
    else:
        import dask

        workers = profile.workers or default_workers()
        # dask's nanny sets MALLOC_TRIM_THRESHOLD_ low, which makes every multi-MB
        # (de)compression buffer a fresh mmap; a 32 MiB mmap threshold makes the conversion
        # in workers ≈ 1.5× faster for ~100 MiB more RSS per worker (benchmarks/README.md,
        # ingest)
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
        environ.setdefault("MALLOC_MMAP_THRESHOLD_", 32 * 2**20)
        # one malloc arena per worker: with one per thread (glibc's default) the tile task's
        # temporaries and the other threads' buffers land in separate arenas, whose free
        # space the next tile cannot reuse, and the per-worker peak creeps up over a long
        # run; with one arena it stays flat and lower, at the same speed
        environ.setdefault("MALLOC_ARENA_MAX", 1)
        # the nanny puts these in this process's environment before it spawns a worker; they
        # are meant for the workers, so this process gets its own back (a program started
        # from here later must not inherit single-threaded BLAS and the workers' malloc)
        saved = {k: os.environ.get(k) for k in environ}
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                         "distributed.worker.profile.enabled": bool(profile.worker_profiling),
                         "distributed.scheduler.worker-saturation": float(profile.worker_saturation)})
        extra = {}
        if profile.processes:
            # zarr decodes the inner chunks of a read in a thread pool of its own, as many
            # threads as the machine has cores: a one-thread worker would use every core while
            # it reads, and the workers would contend for them.  Set in the worker process
            # (not in this one's environment, which the next cluster would inherit).
            extra["env"] = {"ZARR_THREADING__MAX_WORKERS": str(profile.threads_per_worker or 1)}
        try:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=profile.threads_per_worker,
                memory_limit=profile.memory_limit,
                processes=profile.processes,
                dashboard_address=profile.dashboard_address,
                **extra,
            )
        finally:
            _restore_environ(saved)
        client = Client(cluster)
    try:
        if not quiet:
            info = client.scheduler_info()
            n = len(info.get("workers", {}))
            print(f"dask cluster: {client.scheduler.address} ({n} workers)")
            if client.dashboard_link:
                print(f"dashboard:    {client.dashboard_link}")
        yield client
    finally:
        if cluster is not None:
            _silence_worker_logs(client)
        client.close()
        if cluster is not None:
            cluster.close()
            _restore_environ(saved)


def _set_worker_log_level(level: int) -> None:
    import logging

    logging.getLogger("distributed").setLevel(level)


def _silence_worker_logs(client) -> None:
    """Before the local cluster closes: its workers log nothing more.  A worker whose
    heartbeat meets the closing scheduler logs a traceback to the terminal (seen on a loaded
    machine); the run's results are in by then, and its errors were reported through the
    client."""
    import logging

    try:
        client.run(_set_worker_log_level, logging.CRITICAL)
    except Exception:  # noqa: BLE001 - a worker already gone has nothing to say either
        pass


def _restore_environ(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def worker_memory_limit(client) -> int | None:
    """Smallest memory limit among the client's workers, in bytes (None when unlimited)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    limits = [m for m in limits if m]
    return min(limits) if limits else None


def distributed_client():
    """The dask.distributed client that is the active scheduler, or None."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    from dask.base import get_scheduler

    return client if get_scheduler() == client.get else None


def worker_slots() -> int:
    """Worker threads of the dask.distributed cluster that is the active scheduler (1 when
    there is none: the local schedulers gain nothing from rounds)."""
    client = distributed_client()
    if client is None:
        return 1
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a scheduler that does not answer is no reason to fail the run
        return 1
