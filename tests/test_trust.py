"""A run that exits 0 produced exactly what was asked, or it stops before any cluster starts.

Products know what made them (a fingerprint of the inputs' content, the parameters, the
references, the workflow file and the versions); one run at a time holds an output
directory; the command line reports every refusal in one line.  The runs use the small
simulated SOSS exposure of ``tests/test_run.py`` on an in-process dask cluster.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import xarray as xr

from daskramp.io.outdir import (
    LOCK_NAME,
    Fingerprint,
    OutputLockError,
    StaleProductsError,
    content_digest,
    lock_output,
    record_path,
)


def _load_test_run():
    path = Path(__file__).with_name("test_run.py")
    spec = importlib.util.spec_from_file_location("_daskramp_test_run_trust", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_helpers = _load_test_run()


@pytest.fixture(scope="module")
def data():
    return _helpers.simulated_small()


@pytest.fixture(scope="module")
def other_data():
    """Another exposure of the same shape (another seed)."""
    return _helpers.simulated_small({**_helpers.SMALL, "seed": 4})


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if a run starts a cluster (everything here must be refused before)."""
    import daskramp.run as run_mod

    def refuse(*a, **k):
        raise AssertionError("a cluster was started before the run was refused")

    monkeypatch.setattr(run_mod, "connect", refuse)


def _run(files, out, refs, client, **kw):
    from daskramp.run import run

    return run(files, out, refs=refs, client=client, quiet=True, **kw)


def _provenance(path) -> dict:
    with xr.open_zarr(path, consolidated=False) as ds:
        return json.loads(ds.attrs["daskramp_provenance"])


# ---------------------------------------------------------------------------- fingerprints


def test_content_digest_is_content_not_name(tmp_path):
    a = tmp_path / "a.fits"
    a.write_bytes(b"x" * 10_000)
    b = tmp_path / "renamed.fits"
    shutil.copy(a, b)
    da_, db = content_digest(a), content_digest(b)
    assert (da_["size"], da_["crc32c"]) == (db["size"], db["crc32c"])
    raw = bytearray(a.read_bytes())
    raw[5000] ^= 1  # one flipped bit
    b.write_bytes(bytes(raw))
    assert content_digest(b)["crc32c"] != da_["crc32c"]


def test_content_digest_of_a_store_counts_names_and_bytes(tmp_path):
    s = tmp_path / "s.zarr"
    (s / "data").mkdir(parents=True)
    (s / "data" / "c0").write_bytes(b"abc")
    first = content_digest(s)
    (s / "data" / "c0").rename(s / "data" / "c1")  # same bytes, another chunk
    assert content_digest(s)["crc32c"] != first["crc32c"]


def _fp(**kw):
    base = dict(inputs=[], steps={"jump": {"rejection_threshold": 4.0}},
                references={"dark": {"file": "d1.fits", "sha256": "aa"}},
                settings={"stats_scope": "segment"}, versions={"daskramp": "1"})
    return Fingerprint.make(**{**base, **kw})


def test_fingerprint_differences_name_what_changed():
    a = _fp()
    b = _fp(steps={"jump": {"rejection_threshold": 10}},
            references={"dark": {"file": "d2.fits", "sha256": "bb"}}, versions={"daskramp": "2"})
    assert a.digest != b.digest
    diff = b.differences(a)
    assert "steps.jump.rejection_threshold: 4.0 → 10" in diff
    assert "reference DARK: d1.fits → d2.fits" in diff
    assert "daskramp version: 1 → 2" in diff
    # a round trip through JSON keeps the digest and equality
    again = Fingerprint.from_dict(json.loads(json.dumps(b.to_dict())))
    assert again.digest == b.digest and again.differences(b) == []


def test_fingerprint_ignores_names_but_not_content(tmp_path):
    a = tmp_path / "one.fits"
    a.write_bytes(b"1" * 100)
    b = tmp_path / "two.fits"
    b.write_bytes(b"1" * 100)
    assert _fp(inputs=[a]).digest == _fp(inputs=[b]).digest
    b.write_bytes(b"2" * 100)
    assert _fp(inputs=[a]).digest != _fp(inputs=[b]).digest


# ---------------------------------------------------------------------------- stale products


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data, client):
    """One complete run (FITS too) into a directory the tests copy."""
    files, refs = data
    out = tmp_path_factory.mktemp("first") / "out"
    summary = _run(files, out, refs, client)
    return out, summary


def _copy(first_run, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    return out


def test_rerun_with_same_fingerprint_is_already_complete(first_run, tmp_path, data, client):
    files, refs = data
    out = _copy(first_run, tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_NAME}
    again = _run(files, out, refs, client)
    assert again["run"] == "already complete"
    assert again["fingerprint"] == first_run[1]["fingerprint"]
    assert again["rate_median_DN_s"] == first_run[1]["rate_median_DN_s"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != LOCK_NAME} == stamps


def test_changed_parameter_is_refused_naming_it(first_run, tmp_path, data, client, no_cluster):
    files, refs = data
    out = _copy(first_run, tmp_path)
    with pytest.raises(StaleProductsError,
                       match=r"made by another run \(steps\.jump\.rejection_threshold: 4\.0 → 10\.0\).*--overwrite"):
        _run(files, out, refs, None, config={"steps": {"jump": {"rejection_threshold": 10}}})


def test_other_exposure_with_the_same_names_is_refused(first_run, tmp_path, data, other_data, client,
                                                       no_cluster):
    files, refs = data
    other, _ = other_data
    out = _copy(first_run, tmp_path)
    same_names = []
    for src, like in zip(other, files):
        dst = tmp_path / "inputs" / like.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(src, dst)
        same_names.append(dst)
    with pytest.raises(StaleProductsError, match=r"input 1 \(.*uncal\.fits\): content differs"):
        _run(same_names, out, refs, None)


def test_products_without_a_record_are_refused(first_run, tmp_path, data, no_cluster):
    files, refs = data
    out = _copy(first_run, tmp_path)
    root = first_run[1]["outputs"]["rate_zarr"]
    record = next(out.glob(".*.run.json"))
    record.unlink()
    with pytest.raises(StaleProductsError, match=r"no record of what made them"):
        _run(files, out, refs, None)
    assert Path(root).name in {p.name for p in out.iterdir()}  # nothing was removed


def test_products_copied_in_from_another_run_are_refused(first_run, tmp_path, data, client):
    files, refs = data
    out = _copy(first_run, tmp_path)
    rate = Path(first_run[1]["outputs"]["rate_zarr"]).name
    # the run record matches this run, but the rate store says another run made it
    zj = out / rate / "zarr.json"
    meta = json.loads(zj.read_text())
    prov = json.loads(meta["attributes"]["daskramp_provenance"])
    prov["fingerprint"]["digest"] = "0" * 64
    meta["attributes"]["daskramp_provenance"] = json.dumps(prov)
    zj.write_text(json.dumps(meta))
    with pytest.raises(StaleProductsError, match=r"was not made by the run recorded"):
        _run(files, out, refs, client)


def test_overwrite_leaves_nothing_old(first_run, tmp_path, data, client):
    files, refs = data
    out = _copy(first_run, tmp_path)
    (out / f"{Path(first_run[1]['outputs']['rate_zarr']).name}.partial").mkdir()  # a leftover
    res = _run(files, out, refs, client, fits=False, overwrite=True,
               config={"steps": {"jump": {"rejection_threshold": 10}}})
    assert res["run"] == "fresh"
    assert not list(out.glob("*.fits")), "FITS files of the earlier run survived --overwrite"
    assert not list(out.glob("*.partial"))
    prov = _provenance(res["outputs"]["rate_zarr"])
    assert prov["steps"]["jump"]["parameters"]["rejection_threshold"] == 10.0
    assert prov["fingerprint"]["digest"] == json.loads(next(out.glob(".*.run.json")).read_text())[
        "fingerprint"]["digest"]


def test_changed_reference_file_is_refused(first_run, tmp_path, data, no_cluster):
    files, refs = data
    out = _copy(first_run, tmp_path)
    refs2 = tmp_path / "refs"
    shutil.copytree(refs, refs2)
    from astropy.io import fits

    gain = next(p for p in refs2.glob("*.fits") if fits.getval(p, "REFTYPE") == "GAIN")
    with fits.open(gain, mode="update") as h:
        h["SCI"].data = h["SCI"].data * 1.01
    with pytest.raises(StaleProductsError, match=r"reference GAIN: .* changed \(sha256 differs\)"):
        _run(files, out, refs2, None)


def test_changed_workflow_file_is_refused(first_run, tmp_path, data, no_cluster):
    files, refs = data
    out = _copy(first_run, tmp_path)
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps: {}\n")
    with pytest.raises(StaleProductsError, match=r"workflow file: none → wf\.yaml"):
        _run(files, out, refs, None, workflow=wf)


def test_unreadable_run_record_is_refused(first_run, tmp_path, data, no_cluster):
    files, refs = data
    out = _copy(first_run, tmp_path)
    next(out.glob(".*.run.json")).write_text("{not json")
    with pytest.raises(StaleProductsError, match=r"run record unreadable"):
        _run(files, out, refs, None)


# ---------------------------------------------------------------------------- the lock


def test_second_run_refused_while_the_first_holds_the_directory(tmp_path, data, no_cluster):
    files, refs = data
    out = tmp_path / "out"
    out.mkdir()
    with lock_output(out):
        with pytest.raises(OutputLockError, match=rf"{out} is in use by another daskramp run "
                                                  rf"\(pid {os.getpid()} on .*alive"):
            _run(files, out, refs, None)
    assert not record_path(out, "x").exists()


def test_lock_is_released_on_error_and_reusable(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError):
        with lock_output(out):
            raise RuntimeError("boom")
    with lock_output(out):  # taken again at once
        pass
    assert (out / LOCK_NAME).read_text() == ""


def test_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # a holder killed before it could release: the kernel dropped its flock, the file remains
    code = ("import sys, os; from pathlib import Path; from daskramp.io.outdir import lock_output\n"
            "cm = lock_output(Path(sys.argv[1])); cm.__enter__(); os._exit(9)\n")
    p = subprocess.run([sys.executable, "-c", code, str(out)])
    assert p.returncode == 9
    held = json.loads((out / LOCK_NAME).read_text())
    said = []
    with lock_output(out, log=said.append):
        pass
    assert len(said) == 1
    assert f"pid {held['pid']}" in said[0] and "no longer running" in said[0]


def test_two_runs_at_once_one_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    inside = threading.Event()
    release = threading.Event()

    def first():
        with lock_output(out):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(10)
        with pytest.raises(OutputLockError):
            with lock_output(out):
                pass
    finally:
        release.set()
        t.join()


# ---------------------------------------------------------------------------- the demo


def test_demo_directory_is_cleared_and_foreign_ones_refused(tmp_path):
    from daskramp.demo import MARKER, _fresh

    d = tmp_path / "demo"
    _fresh(d)
    (d / "products").mkdir()
    (d / "products" / "old_rate.fits").write_bytes(b"x")
    _fresh(d)
    assert not (d / "products").exists() and (d / MARKER).exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match="not written by daskramp demo"):
        _fresh(foreign)
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_demo_twice_with_other_sizes(tmp_path):
    from daskramp.cluster import ClusterProfile
    from daskramp.demo import demo

    prof = ClusterProfile(workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    a = demo(tmp_path / "d", nints=4, segments=1, cluster=prof)
    b = demo(tmp_path / "d", nints=6, segments=1, cluster=prof)
    assert a["run"] == "fresh" and b["run"] == "fresh"
    with xr.open_zarr(b["outputs"]["rateints_zarr"], consolidated=False) as ri:
        assert ri.sizes["integration"] == 6


# ---------------------------------------------------------------------------- the command line


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DASKRAMP_SCHEDULER": "tcp://127.0.0.1:1"}  # a cluster would hang/fail
    return subprocess.run([sys.executable, "-m", "daskramp.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_cli_stale_products_one_line(first_run, tmp_path, data):
    files, refs = data
    out = _copy(first_run, tmp_path)
    line = _one_line_error(_cli("run", *files, "--out", out, "--refs", refs,
                                "--steps.jump.rejection_threshold=10"))
    assert line.startswith("daskramp run: error: ") and "steps.jump.rejection_threshold" in line


def test_cli_lock_held_one_line(tmp_path, data):
    files, refs = data
    out = tmp_path / "out"
    out.mkdir()
    with lock_output(out):
        line = _one_line_error(_cli("run", *files, "--out", out, "--refs", refs))
    assert "in use by another daskramp run" in line


def test_cli_debug_shows_the_traceback(tmp_path, data):
    files, refs = data
    out = tmp_path / "out"
    out.mkdir()
    with lock_output(out):
        p = _cli("--debug", "run", *files, "--out", out, "--refs", refs)
    assert p.returncode != 0 and "Traceback" in p.stderr and "OutputLockError" in p.stderr


@pytest.mark.parametrize("args, said", [
    (["--steps.ramp_fit.save_opt=true"], "steps.ramp_fit.save_opt: True is an official value "
                                         "that daskramp does not implement"),
    (["--steps.jump.rejection_threshold=-5"], "steps.jump.rejection_threshold: -5"),
    (["--steps.jump.rejection_threshold=nan"], "steps.jump.rejection_threshold: "),
    (["--steps.jump.rejection_threshold=abc"], "steps.jump.rejection_threshold: 'abc'"),
    (["--steps.jump.skip=maybe"], "steps.jump.skip: 'maybe'"),
    (["--steps.jump.find_showers=true"], "steps.jump.find_showers: True is an official "
                                                "value that daskramp does not implement"),
    (["--steps.no_such_step.x=1"], "no_such_step"),
    (["--stats-scope", "exposure", "--steps.jump.nonsense=1"], "steps.jump"),
])
def test_cli_bad_parameters_one_line_before_any_cluster(tmp_path, data, args, said):
    files, refs = data
    line = _one_line_error(_cli("run", *files, "--out", tmp_path / "out", "--refs", refs, *args))
    assert said in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.zarr*"))


def test_cli_workflow_step_not_a_mapping(tmp_path, data):
    files, refs = data
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps:\n  jump: 5\n")
    line = _one_line_error(_cli("run", *files, "--out", tmp_path / "out", "--refs", refs, "--config", wf))
    assert "steps.jump: expected a mapping of parameters, got 5" in line


def test_cli_quoted_false_does_not_skip(tmp_path, data, client):
    """``skip: "false"`` (quoted) in a workflow runs the step."""
    from daskramp.config import layered
    from daskramp.run import prepare

    files, refs = data
    wf = tmp_path / "wf.yaml"
    wf.write_text('steps:\n  dark_current:\n    skip: "false"\n')
    prep = prepare(files, tmp_path / "out", refs=refs, config=layered(workflow=wf, environ={}),
                   workflow=wf, client=client)
    assert prep.params["dark_current"].skip is False
    assert prep.refs.get("dark") is not None


@pytest.fixture
def refs_without_dark(tmp_path, data):
    """A copy of the reference directory with its DARK file removed."""
    from astropy.io import fits

    partial = tmp_path / "refs"
    shutil.copytree(data[1], partial)
    for p in partial.glob("*.fits"):
        if fits.getval(p, "REFTYPE") == "DARK":
            p.unlink()
    return partial


def test_cli_missing_reference_is_named_with_the_rejected_files(tmp_path, data, refs_without_dark):
    files, _ = data
    line = _one_line_error(_cli("run", *files, "--out", tmp_path / "out", "--refs", refs_without_dark))
    assert "DARK reference: no file in" in line and "--steps.dark_current.skip=true" in line


def test_run_without_references_is_refused(tmp_path, data, no_cluster):
    from daskramp.config import ConfigError

    files, _ = data
    with pytest.raises(ConfigError, match=r"no reference files given: steps .*dark_current.* need .*DARK"):
        _run(files, tmp_path / "out", None, None)


def test_skipped_dark_runs_without_a_dark_file(tmp_path, data, client, refs_without_dark):
    """A step the user skips needs no reference; its status says SKIPPED."""
    files, _ = data
    res = _run(files, tmp_path / "out", refs_without_dark, client, fits=False,
               config={"steps": {"dark_current": {"skip": True}}})
    assert res["steps"]["dark_current"] == "SKIPPED"


def test_memory_plan_refused_before_a_local_cluster(tmp_path, data, no_cluster):
    """A local cluster's worker memory is known before it starts: a chunking that cannot fit
    is refused without spawning a process."""
    from daskramp.cluster import ClusterProfile
    from daskramp.engine.plan import MemoryBudgetError
    from daskramp.run import run

    files, refs = data
    prof = ClusterProfile(workers=1, memory_limit="40MB")
    with pytest.raises(MemoryBudgetError):
        run(files, tmp_path / "out", refs=refs, cluster=prof, quiet=True,
            config={"tile_columns": 128})
    assert not list((tmp_path / "out").glob("*.zarr*"))
