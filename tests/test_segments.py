"""``daskramp.engine.submit``: an exposure submitted one segment after another.

The products must be those of the whole exposure as one graph, bit for bit, whatever the
number of segments in flight. The scheduler must never hold more than that number of
segments' windows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits as afits
from distributed.diagnostics.plugin import SchedulerPlugin

from daskramp.progress import RunMonitor
from daskramp.run import run


def _load_test_run():
    path = Path(__file__).resolve().parent / "test_run.py"
    spec = importlib.util.spec_from_file_location("_daskramp_test_run_segments", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_helpers = _load_test_run()
THREE = {**_helpers.SMALL, "segments": 3}  # nints per segment
FIGURES = ("rate_median_DN_s", "finite_fraction", "jump_flagged_fraction", "saturated_fraction",
           "jump_fraction_per_integration")


class _WindowWatch(SchedulerPlugin):
    """Scheduler plugin: the most product windows (``window-ramp_fit-*`` keys) the scheduler
    knew at once."""

    name = "daskramp-test-window-watch"

    def __init__(self):
        self.live: set = set()
        self.peak = 0
        self.names: set = set()

    def transition(self, key, start, finish, *args, **kwargs):
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith("window-ramp_fit-"):
            return
        if finish == "forgotten":
            self.live.discard(key)
        else:
            self.live.add(key)
            self.names.add(name)
        self.peak = max(self.peak, len(self.live))


@pytest.fixture(scope="module")
def three():
    return _helpers.simulated_small(THREE)


@pytest.fixture(scope="module")
def runs(three, tmp_path_factory):
    """The exposure run as one graph (0) and one, two and three segments at a time, in tiles
    of 32 columns (four per segment)."""
    from distributed import Client

    files, refs = three
    out = tmp_path_factory.mktemp("segments")
    results = {}
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        scheduler = c.cluster.scheduler
        for k in (0, 1, 2, 3):
            watch = _WindowWatch()
            scheduler.add_plugin(watch, name=watch.name)
            try:
                summary = run(files, out / f"in_flight_{k}", refs=refs, client=c, quiet=True, fits=True,
                              config={"segments_in_flight": k, "tile_columns": 32})
            finally:
                scheduler.remove_plugin(name=watch.name)
            results[k] = (summary, watch)
    return results


@pytest.mark.parametrize("k", [1, 2, 3])
def test_products_equal_the_one_graph_products(runs, k):
    whole, _ = runs[0]
    got, _ = runs[k]
    assert set(got["outputs"]) == set(whole["outputs"]) == {"rate_zarr", "rateints_zarr", "rate_fits",
                                                            "rateints_fits"}
    for name in ("rate", "rateints"):
        with xr.open_zarr(whole["outputs"][f"{name}_zarr"], consolidated=False) as a, \
                xr.open_zarr(got["outputs"][f"{name}_zarr"], consolidated=False) as b:
            assert a.sizes == b.sizes
            xr.testing.assert_identical(a.load(), b.load())
        with afits.open(whole["outputs"][f"{name}_fits"]) as a, afits.open(got["outputs"][f"{name}_fits"]) as b:
            assert [h.name for h in a] == [h.name for h in b]
            for ha, hb in zip(a, b):
                if ha.data is None:
                    continue
                if ha.data.dtype.names is None:
                    np.testing.assert_array_equal(ha.data, hb.data, err_msg=f"{name} {ha.name}")
                else:
                    assert ha.data.tobytes() == hb.data.tobytes(), f"{name} {ha.name}"
    for key in FIGURES:
        assert got[key] == whole[key], key
    assert len(got["jump_fraction_per_integration"]) == THREE["segments"] * THREE["nints"]


def test_products_are_not_empty(runs):
    """The comparison above compares real slopes: finite rates where the simulation has flux."""
    summary, _ = runs[0]
    assert summary["finite_fraction"] > 0.9
    assert summary["rate_median_DN_s"] > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_scheduler_holds_at_most_the_segments_in_flight(runs, k):
    _, whole = runs[0]
    _, watch = runs[k]
    # one graph: one layer of windows for every segment; here one layer per segment
    assert len(whole.names) == 1 and len(watch.names) == THREE["segments"]
    per_segment, rest = divmod(whole.peak, THREE["segments"])
    assert rest == 0 and per_segment > 1
    assert watch.peak <= k * per_segment
    if k == 1:
        assert watch.peak == per_segment


def test_progress_line_names_the_segment():
    monitor = RunMonitor(None, stream=None)
    monitor.counts = {"memory": 3, "processing": 1}
    assert monitor.line().startswith("[")
    monitor.stage = "segment 2/16"
    line = monitor.line()
    assert line.startswith("segment 2/16 [") and "3/4 tasks" in line


class _Interrupted(Exception):
    pass


def _settled(scheduler, timeout=30.0):
    """Wait until the interrupted run's tasks left on the cluster have finished or gone."""
    import time

    end = time.monotonic() + timeout
    busy = ("processing", "waiting", "queued", "no-worker")
    while any(ts.state in busy for ts in list(scheduler.tasks.values())):
        assert time.monotonic() < end, "the cluster did not settle"
        time.sleep(0.05)


@pytest.mark.parametrize("after", [1, 2, 3])
def test_interrupted_run_resumes_after_the_finished_segments(three, runs, tmp_path, monkeypatch, after):
    """A run stopped once ``after`` segments are written and summed: the same call again
    computes only the other segments, and the products equal the one-graph products."""
    from distributed import Client

    from daskramp.engine import submit as segments

    files, refs = three
    out = tmp_path / "out"
    record = segments._State.record

    def record_then_stop(self, done, fractions):
        record(self, done, fractions)
        if done == after:
            raise _Interrupted

    config = {"tile_columns": 32}
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        with monkeypatch.context() as m:
            m.setattr(segments._State, "record", record_then_stop)
            with pytest.raises(_Interrupted):
                run(files, out, refs=refs, client=c, quiet=True, fits=True, config=config)
        _helpers._assert_nothing_marked_complete_early(out)
        assert not any(p.name.endswith((".zarr", ".fits")) for p in out.iterdir())
        _settled(c.cluster.scheduler)
        watch = _WindowWatch()
        c.cluster.scheduler.add_plugin(watch, name=watch.name)
        try:
            summary = run(files, out, refs=refs, client=c, quiet=True, fits=True, config=config)
        finally:
            c.cluster.scheduler.remove_plugin(name=watch.name)
    # only the segments left were computed
    assert len(watch.names) == THREE["segments"] - after
    whole, _ = runs[0]
    for name in ("rate", "rateints"):
        with xr.open_zarr(whole["outputs"][f"{name}_zarr"], consolidated=False) as a, \
                xr.open_zarr(summary["outputs"][f"{name}_zarr"], consolidated=False) as b:
            xr.testing.assert_identical(a.load(), b.load())
    # the rateints FITS file is exported block by block: the blocks of the interrupted run
    # are exported again into the resumed run's file
    with afits.open(whole["outputs"]["rateints_fits"]) as a, afits.open(summary["outputs"]["rateints_fits"]) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ha, hb in zip(a, b):
            if ha.data is not None:
                assert ha.data.tobytes() == hb.data.tobytes(), ha.name
    for key in FIGURES:
        assert summary[key] == whole[key], key
    # nothing hidden is left but the lock file and the run record
    root = Path(summary["outputs"]["rate_zarr"]).name[: -len("_rate.zarr")]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted(
        [f".{root}.run.json", ".daskramp.lock"])


def test_a_changed_setting_starts_the_segments_again(three, tmp_path, monkeypatch):
    """The segments of an interrupted run are reused only by the same command: another step
    parameter is refused, and with ``overwrite`` every segment is computed again."""
    from distributed import Client

    from daskramp.engine import submit as segments
    from daskramp.io.outdir import StaleProductsError

    files, refs = three
    out = tmp_path / "out"
    record = segments._State.record

    def record_then_stop(self, done, fractions):
        record(self, done, fractions)
        raise _Interrupted

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        with monkeypatch.context() as m:
            m.setattr(segments._State, "record", record_then_stop)
            with pytest.raises(_Interrupted):
                run(files, out, refs=refs, client=c, quiet=True, fits=False, config={"tile_columns": 32})
        _settled(c.cluster.scheduler)
        changed = {"tile_columns": 32, "steps": {"jump": {"rejection_threshold": 5.0}}}
        with pytest.raises(StaleProductsError, match=r"steps\.jump\.rejection_threshold: 4\.0 → 5\.0"):
            run(files, out, refs=refs, client=c, quiet=True, fits=False, config=changed)
        watch = _WindowWatch()
        c.cluster.scheduler.add_plugin(watch, name=watch.name)
        try:
            run(files, out, refs=refs, client=c, quiet=True, fits=False, config=changed,
                overwrite=True)
        finally:
            c.cluster.scheduler.remove_plugin(name=watch.name)
    assert len(watch.names) == THREE["segments"]


@pytest.mark.parametrize("slots, tiles, expected", [
    (2, 32, 2), (2, 1, 3), (1, 1, 2), (64, 32, 3), (64, 64, 2), (65, 32, 4), (0, 0, 2),
])
def test_blocks_in_flight_queue_a_round_of_tiles(slots, tiles, expected):
    from daskramp.engine.submit import blocks_in_flight

    got = blocks_in_flight(slots, tiles)
    assert got == expected
    # the blocks behind the running one hold at least a tile per worker thread
    assert (got - 1) * max(tiles, 1) >= slots and got >= 2


def test_a_full_disk_while_saving_a_sum_is_an_enospc_error(tmp_path):
    """The sum files are the run's outputs too: a full disk must be reported as one (errno
    ENOSPC, which ``daskramp.run`` turns into its clear message), and leave no file."""
    import errno

    from daskramp.engine.submit import save_tile

    mnt = tmp_path / "tiny"
    _helpers._mount_tmpfs(mnt, "size=64k")
    try:
        path = mnt / "0" / "0_0.npy"
        with pytest.raises(OSError) as info:
            save_tile(np.ones((1, 10, 128, 128)), str(path))
        assert info.value.errno == errno.ENOSPC
        assert not path.exists() and not list(path.parent.iterdir())
        save_tile(np.ones((2, 3)), str(path))  # a small one fits
        np.testing.assert_array_equal(np.load(path), np.ones((2, 3)))
    finally:
        _helpers._umount(mnt)
