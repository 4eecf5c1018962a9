"""``daskramp.run``: clear failures (read-only output, disappearing input, full disk) and resume.

The runs use a small simulated NIRISS SOSS exposure (2 segments × 6 integrations × 5 groups ×
256 × 128, ~4 MB of uncal) on an in-process dask cluster.  The simulation is cached between
test sessions under ``$DASKRAMP_TEST_CACHE`` (default: the system temp directory).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from daskramp.io.products import is_complete
from daskramp.run import InputError, OutputError, run

SMALL = {"preset": "niriss-soss", "nints": 6, "segments": 2, "ngroups": 5, "nx": 128, "seed": 3}


def simulated_small(params=SMALL):
    """The small exposure of these tests, simulated once and cached (uncal files, refs dir)."""
    from daskramp.simulate import simulate, source_digest

    root = Path(os.environ.get("DASKRAMP_TEST_CACHE", tempfile.gettempdir())) / "daskramp-test-data"
    key = "-".join(f"{k}{v}" for k, v in sorted(params.items())) + f"-sim{source_digest()}"
    out = root / key
    done = out / ".done"
    if not done.exists():
        # made aside and renamed into place: test processes running side by side (xdist)
        # never see, or delete, one another's half-made cache
        tmp = root / f".{key}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        res = simulate(tmp, **params)
        (tmp / ".done").write_text(json.dumps({"uncal": [p.relative_to(tmp).as_posix() for p in res.uncal_files],
                                               "refs": res.refs_dir.relative_to(tmp).as_posix()}))
        if out.exists() and not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # left half made by an older version of this
        try:
            os.rename(tmp, out)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads(done.read_text())
    return [out / p for p in info["uncal"]], out / info["refs"]


@pytest.fixture(scope="module")
def data():
    return simulated_small()


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def _mount_tmpfs(path: Path, *options: str):
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not permitted'})")


def _umount(path: Path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _products(outdir: Path) -> dict[str, Path]:
    return {p.name: p for p in outdir.iterdir() if not p.name.startswith(".")} if outdir.exists() else {}


def _assert_nothing_marked_complete_early(outdir: Path):
    """Every path without ``.partial`` is complete; partial ones are not marked complete."""
    for name, p in _products(outdir).items():
        if name.endswith(".partial"):
            assert not is_complete(p), f"{name} is marked complete"
            zj = p / "zarr.json"
            if zj.exists():
                assert not json.loads(zj.read_text()).get("attributes", {}).get("daskramp_complete")
        else:
            assert is_complete(p), f"{name} looks final but is not complete"


def test_read_only_output_is_a_clear_error(tmp_path, data, client):
    files, refs = data
    out = tmp_path / "ro"
    _mount_tmpfs(out, "ro", "size=1m")
    try:
        with pytest.raises(OutputError, match=r"output location .*ro.* is not writable: Read-only file system"):
            run(files, out / "products", refs=refs, client=client, quiet=True)
    finally:
        _umount(out)


def test_missing_input_is_named_before_running(tmp_path, data, client):
    files, refs = data
    gone = tmp_path / "jw_gone_uncal.fits"
    with pytest.raises(InputError, match="jw_gone_uncal.fits: input not found"):
        run([*files, gone], tmp_path / "out", refs=refs, client=client, quiet=True)


def test_input_disappearing_mid_run(tmp_path, data, client, monkeypatch):
    files, refs = data
    local = []
    for f in files:  # a private copy: this test deletes one
        shutil.copy(f, tmp_path / f.name)
        local.append(tmp_path / f.name)
    out = tmp_path / "out"
    first = run(local, out, refs=refs, client=client, quiet=True, fits=False)
    finished = {k: Path(v) for k, v in first["outputs"].items()}
    stamps = {k: (p / "zarr.json").stat().st_mtime_ns for k, p in finished.items()}

    import daskramp.pipeline as pipeline

    real = pipeline.detector1

    def build_then_delete(*a, **k):
        # the exposure is open and the graph built (headers read); its frames are read only when
        # the graph runs, and by then the second segment is gone
        res = real(*a, **k)
        local[1].unlink()
        return res

    monkeypatch.setattr(pipeline, "detector1", build_then_delete)
    with pytest.raises(InputError) as info:
        # read the FITS files directly (no conversion), so the vanished file is met mid-graph
        run(local, out, refs=refs, client=client, quiet=True, fits=False, save_steps=["jump"],
            config={"convert_fits": False})
    assert isinstance(info.value, FileNotFoundError)
    assert f"input file disappeared during the run: {local[1]}" in str(info.value)
    # the products finished before are untouched; the new one is not marked complete
    for k, p in finished.items():
        assert is_complete(p) and (p / "zarr.json").stat().st_mtime_ns == stamps[k]
    assert not (out / (finished["rate_zarr"].name.replace("_rate", "_jump_ramp"))).exists()
    _assert_nothing_marked_complete_early(out)


def test_disk_full_is_clear_and_rerun_resumes(tmp_path, data, client):
    files, refs = data
    mnt = tmp_path / "small-disk"
    # 2 MiB: the rateints cube alone (12 × 256 × 128 × 5 variables × 4 B = 7.9 MB uncompressed)
    # cannot fit
    _mount_tmpfs(mnt, "size=2m")
    try:
        out = mnt / "products"
        with pytest.raises(OutputError) as info:
            run(files, out, refs=refs, client=client, quiet=True)
        assert info.value.errno == errno.ENOSPC
        assert f"output disk full while writing products in {out}" in str(info.value)
        assert "rerun the same command once space is available" in str(info.value)
        _assert_nothing_marked_complete_early(out)
        # more space: the same call completes
        r = subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        summary = run(files, out, refs=refs, client=client, quiet=True)
        _assert_nothing_marked_complete_early(out)
        # the products, plus the uncal store the FITS inputs were converted to
        assert sorted(n for n in _products(out) if not n.endswith("_uncal.zarr")) == sorted(
            Path(p).name for p in summary["outputs"].values())
        rate = xr.open_zarr(summary["outputs"]["rate_zarr"], consolidated=False)
        assert rate["data"].shape == (256, 128)
        assert np.isfinite(rate["data"].values).mean() > 0.5
    finally:
        _umount(mnt)


def test_report_and_summary_figures(tmp_path, data, client):
    files, refs = data
    report = tmp_path / "report.html"
    s = run(files, tmp_path / "out", refs=refs, client=client, quiet=True, fits=False, report=report)
    assert report.stat().st_size > 10_000 and b"<html" in report.read_bytes()[:2000].lower()
    # 2 segments × 6 integrations × 5 groups × 256 × 128 pixels = 1966080 pixel-groups, 2 B each
    assert s["pixel_groups"] == 1_966_080
    assert s["uncal_MB"] == pytest.approx(3.93216)
    assert s["throughput_MB_s"] == pytest.approx(s["uncal_MB"] / s["wall_s"])
    assert s["tasks"] > 0
    assert s["peak_memory_per_worker"] and all(v > 10 * 2**20 for v in s["peak_memory_per_worker"].values())


def test_summary_blocks_do_not_grow_with_the_exposure(tmp_path, monkeypatch):
    """The summary reads whole stored chunks, a bounded number of integrations per block."""
    import daskramp.run as R

    ds = xr.Dataset({"dq": (("integration", "y", "x"), np.zeros((40, 8, 16), np.uint32))})
    ds.to_zarr(tmp_path / "p.zarr", zarr_format=3, consolidated=False,
               encoding={"dq": {"chunks": (4, 8, 16)}})
    monkeypatch.setattr(R, "SUMMARY_TASK_BYTES", 8 * 16 * 4 * 10)  # 10 frames
    opened = R._open_for_summary(tmp_path / "p.zarr")
    # 10 frames rounded down to whole stored chunks of 4 integrations; all rows and columns
    assert opened["dq"].chunks == ((8,) * 5, (8,), (16,))


def test_worker_slots_count_the_cluster_threads(client):
    """The statistics blocks are cut in rounds of the cluster's worker threads (2 here), and
    of one when the active scheduler is not the cluster."""
    import dask

    from daskramp import cluster

    assert cluster.worker_slots() == sum(client.nthreads().values()) == 2
    with dask.config.set(scheduler="sync"):
        assert cluster.worker_slots() == 1


def test_likely_on_several_segments_runs_as_one_graph(tmp_path, data, client):
    """LIKELY combines the rate from every integration at once, so a multi-segment run does
    not submit segment by segment (whose rate is continued from per-segment sums): it runs
    as one graph and gives the rate of the in-process pipeline."""
    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1

    files, refs = data
    steps = {"ramp_fit": {"algorithm": "LIKELY"}}
    run(files, tmp_path / "out", refs=refs, client=client, quiet=True, config={"steps": steps})
    stores = {p.name.rsplit("_", 1)[-1]: p for p in (tmp_path / "out").glob("*.zarr")}
    assert set(stores) == {"rate.zarr", "rateints.zarr"} and all(is_complete(p) for p in stores.values())
    with xr.open_zarr(stores["rate.zarr"]) as got:
        ours = detector1(open_exposure(files), refs, steps=steps).rate["data"].compute()
        np.testing.assert_array_equal(got["data"].values, ours.values)


def test_clean_flicker_noise_runs_segment_by_segment_through_checkpoints(tmp_path, data, client,
                                                                         monkeypatch):
    """With clean_flicker_noise on, a 2-segment run is submitted segment by segment through
    checkpoint stores beside the products, each removed once its segment is written; the
    products are those of the in-process pipeline and no checkpoint is left."""
    from daskramp.engine import submit
    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1

    files, refs = data
    released = []
    orig = submit.write_by_segment

    def spy(result, *a, **k):
        seen = result.segments.release

        def release(b):
            store = Path(result.segments.checkpoint.path(b))
            released.append((b, store.is_dir()))
            seen(b)
            assert not store.exists()

        object.__setattr__(result.segments, "release", release)
        return orig(result, *a, **k)

    monkeypatch.setattr(submit, "write_by_segment", spy)
    steps = {"clean_flicker_noise": {"skip": False}}
    out = tmp_path / "out"
    run(files, out, refs=refs, client=client, quiet=True, fits=False, config={"steps": steps})
    assert released == [(0, True), (1, True)]
    assert not list(out.glob(".*checkpoints*")), sorted(p.name for p in out.iterdir())
    stores = {p.name.rsplit("_", 1)[-1]: p for p in out.glob("*.zarr") if not p.name.endswith("_uncal.zarr")}
    with xr.open_zarr(stores["rateints.zarr"]) as got:
        assert got.attrs["S_CLNFNS"] == "COMPLETE"
        ours = detector1(open_exposure(files), refs, steps=steps).rateints["data"].compute()
        np.testing.assert_array_equal(got["data"].values, ours.values)
