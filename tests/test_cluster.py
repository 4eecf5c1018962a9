"""Cluster profiles, the docker-compose topology, and a real scheduler with worker processes."""

from pathlib import Path

import dask
import pytest
import yaml

from daskramp.cli import build_parser
from daskramp.cluster import ENV_SCHEDULER, ClusterProfile, connect

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_parse():
    local = ClusterProfile.from_yaml(ROOT / "workflows/clusters/local.yaml")
    assert local.processes and local.workers == 2 and local.threads_per_worker == 1
    compose = ClusterProfile.from_yaml(ROOT / "workflows/clusters/compose.yaml")
    assert compose.scheduler == "tcp://localhost:8786"


def test_profile_rejects_unknown_keys(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("workers: 2\ncores: 4\n")
    with pytest.raises(ValueError, match="unknown cluster settings \\['cores'\\]"):
        ClusterProfile.from_yaml(f)


def test_compose_file_matches_cli():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    sched, worker = compose["services"]["scheduler"], compose["services"]["worker"]
    # the scheduler listens where the compose profile and README tell daskramp to submit
    assert "8786:8786" in sched["ports"] and "8787:8787" in sched["ports"]
    assert sched["command"][:2] == ["dask", "scheduler"] and "8786" in sched["command"]
    profile = ClusterProfile.from_yaml(ROOT / "workflows/clusters/compose.yaml")
    assert profile.scheduler.endswith(":8786")
    # workers reach the scheduler by its service name and share one volume at the same path
    assert worker["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    # the client service submits there
    assert compose["services"]["client"]["environment"][ENV_SCHEDULER] == "tcp://scheduler:8786"
    # the workers' statistical profiler is off there as in the local clusters (the variable
    # is one dask reads: DASK_ + the config path)
    env = {k: v for k, v in worker["environment"].items() if k.startswith("DASK_")}
    assert dask.config.collect_env(env)["distributed"]["worker"]["profile"]["enabled"] is False
    # and its scheduler hands out one root task per worker thread, as theirs does
    env = {k: v for k, v in sched["environment"].items() if k.startswith("DASK_")}
    sched_env = dask.config.collect_env(env)["distributed"]["scheduler"]
    saturation = sched_env.get("worker-saturation", sched_env.get("worker_saturation"))
    assert saturation == ClusterProfile().worker_saturation == 1.0
    # zarr's decoding pool is capped at the worker's threads (ZARR_ + the config path)
    nthreads = worker["command"][worker["command"].index("--nthreads") + 1]
    assert worker["environment"]["ZARR_THREADING__MAX_WORKERS"] == nthreads
    assert worker["environment"]["MALLOC_ARENA_MAX"] == "1"
    # one host folder at /data in both (the folder may be given as ${DASKRAMP_DATA:-./data})
    mounts = {v.rsplit(":", 1)[1] for v in sched["volumes"]} | {v.rsplit(":", 1)[1] for v in worker["volumes"]}
    assert mounts == {"/data"}
    # the image is built from the project's Dockerfile with the package installed
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "COPY daskramp" in dockerfile
    # the CLI accepts the scheduler address the README shows
    args = build_parser().parse_args(["run", "/data/exposure.zarr", "--out", "/data/products",
                                      "--scheduler", "tcp://localhost:8786"])
    assert args.scheduler == "tcp://localhost:8786"


@pytest.mark.distributed
def test_connect_to_real_scheduler(real_cluster, monkeypatch):
    import dask.array as da

    monkeypatch.setenv(ENV_SCHEDULER, real_cluster.address)
    with connect(quiet=True) as client:
        assert client.scheduler.address == real_cluster.address
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        # work runs in the worker processes, not in this one
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        assert len(pids) == 2 and __import__("os").getpid() not in pids
        assert float(da.ones((100, 100), chunks=10).sum().compute()) == 10000.0


@pytest.mark.distributed
@pytest.mark.parametrize("profiling", [False, True])
def test_local_cluster_worker_profiler_setting(profiling):
    """The workers of a local cluster run dask's statistical profiler only when asked: its
    call trees, one per second of run, are worker memory that grows with the run's length."""
    import time

    def busy():
        time.sleep(1.6)  # longer than one profiler cycle (1 s)
        return 1

    def history(dask_worker):
        return dask.config.get("distributed.worker.profile.enabled"), len(dask_worker.profile_history)

    prof = ClusterProfile(workers=1, memory_limit="1GB", dashboard_address=None,
                          worker_profiling=profiling)
    with connect(prof, quiet=True) as client:
        assert client.submit(busy, pure=False).result() == 1
        (enabled, cycles), = client.run(history).values()
    assert enabled is profiling
    assert (cycles > 0) is profiling


@pytest.mark.distributed
@pytest.mark.parametrize("saturation, held", [(1.0, 1), (1.1, 2)])
def test_local_cluster_worker_saturation(saturation, held):
    """How many root tasks a one-thread worker holds at once: the default 1.0 hands it the
    next tile only when one finishes (so a tile's products are stored before the next tile
    runs); dask's own 1.1 queues one more on the worker."""

    def held_now(i):
        import time

        from distributed import get_worker

        time.sleep(0.3)  # the scheduler has filled the worker's slots by now
        state = get_worker().state
        return sum(ts.state in ("ready", "executing", "constrained") for ts in state.tasks.values())

    prof = ClusterProfile(workers=1, memory_limit="1GB", dashboard_address=None,
                          worker_saturation=saturation)
    with connect(prof, quiet=True) as client:
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == saturation
        counts = client.gather(client.map(held_now, range(6), pure=False))
    assert max(counts) == held


@pytest.mark.distributed
@pytest.mark.parametrize("threads", [1, 2])
def test_local_cluster_caps_zarr_threads(threads):
    """zarr decodes in a thread pool of its own, sized to the machine: in the workers of a
    local cluster it gets as many threads as the worker, so workers do not contend for the
    cores while they read."""

    def pool_size():
        import zarr

        return zarr.config.get("threading.max_workers")

    prof = ClusterProfile(workers=1, threads_per_worker=threads, memory_limit="1GB",
                          dashboard_address=None)
    with connect(prof, quiet=True) as client:
        sizes = set(client.run(pool_size).values())
    assert sizes == {threads}


@pytest.mark.distributed
def test_local_cluster_sets_worker_environment_only(monkeypatch):
    """The workers get one malloc arena and single-threaded BLAS (dask's nanny settings); this
    process keeps its own environment, so programs it starts later do not inherit them."""
    import os

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    names = ("MALLOC_ARENA_MAX", "OMP_NUM_THREADS")
    prof = ClusterProfile(workers=1, memory_limit="1GB", dashboard_address=None)
    with connect(prof, quiet=True) as client:
        inside = {k: os.environ.get(k) for k in names}
        (seen,) = client.run(lambda: {k: os.environ.get(k) for k in names}).values()
    assert seen == {"MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    assert inside == {"MALLOC_ARENA_MAX": None, "OMP_NUM_THREADS": None}
    assert {k: os.environ.get(k) for k in names} == inside


@pytest.mark.distributed
def test_closing_local_cluster_silences_its_workers_first():
    """The workers of a closing local cluster log nothing more (a heartbeat meeting the
    closed scheduler printed a traceback under a quiet run on a loaded machine); they logged
    warnings before, as distributed sets them up."""
    import logging

    from daskramp.cluster import _silence_worker_logs

    def level():
        return logging.getLogger("distributed").getEffectiveLevel()

    prof = ClusterProfile(workers=1, threads_per_worker=1, memory_limit="1GB", dashboard_address=None)
    with connect(prof, quiet=True) as client:
        before = set(client.run(level).values())
        _silence_worker_logs(client)
        after = set(client.run(level).values())
    assert max(before) < logging.CRITICAL and after == {logging.CRITICAL}
