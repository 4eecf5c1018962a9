"""Detector1 through a real cluster (``dask scheduler`` + ``dask worker`` processes) under failures.

* a worker process SIGKILLed mid-run: dask reschedules its tasks (a replacement worker joins)
  and the products are bit-identical to an undisturbed run;
* the whole run SIGKILLed mid-graph: nothing is marked complete; the same command rerun
  completes with bit-identical products; a third run recomputes nothing, and a FITS export
  interrupted after the Zarr products were finished is redone from them without the graph;
* a chunking that cannot fit the smallest worker is refused before anything is submitted.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from daskramp.engine.plan import MemoryBudgetError
from daskramp.progress import _scheduler_counts, scheduler_task_prefixes
from daskramp.run import run

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
VARS = ("data", "err", "dq", "var_poisson", "var_rnoise")


def _load_test_run():
    spec = importlib.util.spec_from_file_location("_daskramp_test_run", ROOT / "tests" / "test_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_helpers = _load_test_run()


@pytest.fixture(scope="module")
def data():
    return _helpers.simulated_small()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Products of an undisturbed run (in-process cluster)."""
    from distributed import Client

    files, refs = data
    out = tmp_path_factory.mktemp("reference")
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        s = run(files, out, refs=refs, client=c, quiet=True, fits=False)
    return {k: Path(v) for k, v in s["outputs"].items()}


def _assert_same_products(outputs: dict, reference: dict):
    for key in ("rate_zarr", "rateints_zarr"):
        a = xr.open_zarr(outputs[key], consolidated=False)
        b = xr.open_zarr(reference[key], consolidated=False)
        for v in VARS:
            x, y = a[v].values, b[v].values
            assert x.dtype == y.dtype and x.shape == y.shape
            # bit-identical, NaNs included
            assert np.array_equal(x.view(f"u{x.dtype.itemsize}"), y.view(f"u{y.dtype.itemsize}")), (key, v)


@pytest.fixture
def cluster(real_cluster):
    """The real cluster; its worker processes are killed outright afterwards (a graceful close
    takes up to the fixture's 15 s deadline and nothing in them needs saving)."""
    yield real_cluster
    for p in real_cluster.workers:
        if p.poll() is None:
            p.kill()
    for p in real_cluster.workers:
        p.wait(timeout=10)


def _wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _cli(*args):
    return [sys.executable, "-m", "daskramp.cli", *map(str, args)]


def test_worker_killed_mid_run(cluster, data, reference, tmp_path):
    from distributed import Client

    files, refs = data
    watch = Client(cluster.address, timeout="30s")
    since = watch.run_on_scheduler(lambda: time.time())
    killed = {}

    def killer():
        def progressed():
            c = watch.run_on_scheduler(_scheduler_counts, since=since)
            done = c.get("memory", 0) + c.get("released", 0) + c.get("forgotten", 0)
            killed["counts"] = c
            return done >= 3
        try:
            _wait_for(progressed, 60, "the run to start")
        except AssertionError:
            return
        os.kill(cluster.workers[0].pid, signal.SIGKILL)
        killed["at"] = dict(killed["counts"])
        cluster.start_worker(2)  # a replacement, as a cluster manager would start

    t = threading.Thread(target=killer, daemon=True)
    try:
        with Client(cluster.address, timeout="30s") as client:
            t.start()
            s = run(files, tmp_path / "out", refs=refs, client=client, quiet=True, fits=False,
                    config={"tile_columns": 32})
        t.join(timeout=30)
        # the worker died while the graph was still running
        at = killed["at"]
        assert sum(at.values()) > at.get("memory", 0) + at.get("released", 0) + at.get("forgotten", 0)
        assert cluster.workers[0].wait(timeout=10) == -signal.SIGKILL
        _assert_same_products(s["outputs"], reference)
    finally:
        watch.close()


def test_killed_run_rerun_resumes(cluster, data, reference, tmp_path):
    from distributed import Client

    from daskramp.io.products import is_complete

    files, refs = data
    out = tmp_path / "out"
    cmd = _cli("run", *files, "--refs", refs, "--out", out, "--scheduler", cluster.address,
               "--tile-columns", "32")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Client(cluster.address, timeout="30s") as watch:
        since = watch.run_on_scheduler(lambda: time.time())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        try:
            def progressed():
                c = watch.run_on_scheduler(_scheduler_counts, since=since)
                return c.get("memory", 0) + c.get("released", 0) + c.get("forgotten", 0) >= 3
            _wait_for(progressed, 60, "the run to start computing")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # nothing claims to be complete: only .partial stores (not marked) may exist
    _helpers._assert_nothing_marked_complete_early(out)
    # (the uncal → Zarr conversion may have finished: it is an input store, not a product)
    assert not any(is_complete(p) for p in out.iterdir() if not p.name.endswith("_uncal.zarr"))

    # the same command again: completes, products identical to an undisturbed run
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    outputs = {p.name.split("_nis_")[1].replace(".", "_"): p for p in out.iterdir()
               if not p.name.endswith("_uncal.zarr") and not p.name.startswith(".")}
    _assert_same_products(outputs, reference)
    # non-TTY progress: whole lines on stderr, no carriage returns
    assert "tasks |" in r.stderr and "\r" not in r.stderr
    assert "peak memory per worker:" in r.stdout

    # killed during the FITS export: the Zarr products are complete, a FITS file is partial
    stamps = {p.name: (p / "zarr.json").stat().st_mtime_ns for p in out.glob("*.zarr")
              if not p.name.endswith("_uncal.zarr")}
    rate_fits = next(out.glob("*_rate.fits"))
    good = rate_fits.read_bytes()
    rate_fits.unlink()
    Path(str(rate_fits) + ".partial").write_bytes(good[: len(good) // 3])
    with Client(cluster.address, timeout="30s") as client:
        since = client.run_on_scheduler(lambda: time.time())
        run(files, out, refs=refs, client=client, quiet=True, config={"tile_columns": 32})
        ran = client.run_on_scheduler(scheduler_task_prefixes, since=since)
    # finished products were not recomputed: no uncal read and no step ran (only the FITS
    # export's slab tasks, reading the finished Zarr products, and the summary), and the Zarr
    # stores were not rewritten (their metadata stamps below)
    assert ran and not [p for p in ran if any(w in p for w in ("uncal", "window", "jump", "ramp_fit"))], ran
    assert [p for p in ran if "fits-slab" in p], ran  # the export's slab tasks ran, on the workers
    assert {p.name: (p / "zarr.json").stat().st_mtime_ns for p in out.glob("*.zarr")
            if not p.name.endswith("_uncal.zarr")} == stamps
    assert rate_fits.read_bytes() == good
    assert not Path(str(rate_fits) + ".partial").exists()


def test_chunking_that_cannot_fit_is_refused(cluster, data, tmp_path):
    from distributed import Client

    files, refs = data
    # a small worker joins: the smallest limit decides.  Budget 60 % × 20 MB = 12,000,000 B.
    # A 128-column tile (6 ints × 5 groups × 256 rows) through the fused chain: 7.8 × 4 B × 6 ×
    # 5 × 256 × 128 = 30.67 MB (29 MiB): refused; widest that fits:
    # floor(12e6 / (7.8 × 4 × 6 × 5 × 256)) = floor(50.08) = 50
    cluster.start_worker(3, memory_limit="20MB")
    cluster.wait_for_workers(3)
    with Client(cluster.address, timeout="30s") as client:
        since = client.run_on_scheduler(lambda: time.time())
        with pytest.raises(MemoryBudgetError) as info:
            run(files, tmp_path / "out", refs=refs, client=client, quiet=True,
                config={"tile_columns": 128})
        msg = str(info.value)
        assert msg.startswith("step fused tile chain:") and "6 × 5 × 256 × 128" in msg
        assert "29 MiB" in msg and "11 MiB per task" in msg and "19 MiB worker memory limit" in msg
        assert "tile_columns=50 would fit" in msg
        # refused before anything was submitted
        assert client.run_on_scheduler(_scheduler_counts, since=since) == {}
    assert not any((tmp_path / "out").glob("*.zarr*"))
