"""Shared fixtures: a real dask scheduler with two worker processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cli() -> list[str]:
    exe = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    return [exe] if exe else [sys.executable, "-m", "distributed.cli.dask_spec"]


class RealCluster:
    """``dask scheduler`` + ``dask worker`` processes, started and torn down by the test."""

    def __init__(self, tmp: Path, nworkers: int = 2, memory_limit: str = "2GB"):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.workers: list[subprocess.Popen] = []
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        dask = _dask_cli()
        self.scheduler = subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            stdout=open(tmp / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env,
        )
        for i in range(nworkers):
            self.start_worker(i, memory_limit, env)
        self.wait_for_workers(nworkers)

    def start_worker(self, i, memory_limit="2GB", env=None):
        p = subprocess.Popen(
            [*_dask_cli(), "worker", self.address, "--nthreads", "1", "--nworkers", "1",
             "--memory-limit", memory_limit, "--no-nanny", "--no-dashboard",
             "--local-directory", str(self.tmp / f"worker{i}"), "--name", f"w{i}"],
            stdout=open(self.tmp / f"worker{i}.log", "w"), stderr=subprocess.STDOUT,
            env=env or os.environ.copy(),
        )
        self.workers.append(p)
        return p

    def wait_for_workers(self, n, timeout=60):
        from distributed import Client

        with Client(self.address, timeout="30s") as c:
            c.wait_for_workers(n, timeout=timeout)

    def close(self):
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 3  # a dask worker asked to stop may wait out its own timeouts; nothing is kept
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def real_cluster(tmp_path):
    cluster = RealCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()
