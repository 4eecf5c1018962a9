"""The command line as a user drives it (subprocesses): help for every command, the version,
one-line refusals before any cluster starts, and what a run shows and leaves behind (its log,
its products' names and metadata).

Refusals run with ``DASKRAMP_SCHEDULER=tcp://127.0.0.1:1``: a command that contacted a
cluster would fail differently (after a 30 s connection timeout), and commands that would
start a local cluster print its "dask cluster:" banner, which none of them may print.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

COMMANDS = ("demo", "simulate", "ingest", "run", "darks", "report")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - daskramp\.[a-z.]+ - (INFO|WARNING|ERROR) - .+$")


def _load_test_run():
    path = Path(__file__).with_name("test_run.py")
    spec = importlib.util.spec_from_file_location("_daskramp_test_run_cli", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data():
    return _load_test_run().simulated_small()


def _cli(*args, cwd=None, scheduler="tcp://127.0.0.1:1", timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASKRAMP_STEPS__")}
    if scheduler is None:
        env.pop("DASKRAMP_SCHEDULER", None)
    else:
        env["DASKRAMP_SCHEDULER"] = scheduler
    return subprocess.run([sys.executable, "-m", "daskramp.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def _refused(p: subprocess.CompletedProcess, command: str) -> str:
    """The one line of a refusal, before any cluster: exit 2, no traceback, no banner."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert "dask cluster:" not in p.stdout and "Timed out" not in p.stderr, "a cluster was contacted"
    assert lines[0].startswith(f"daskramp {command}: error: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- help


def test_help_of_the_program_lists_every_command_plainly():
    p = _cli("--help")
    assert p.returncode == 0 and not p.stderr
    for c in COMMANDS:
        assert re.search(rf"^\s+{c}\s+\S", p.stdout, re.M), c
    assert "``" not in p.stdout  # no raw reStructuredText
    assert "daskramp demo" in p.stdout and "[plot]" in p.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command):
    p = _cli(command, "--help")
    assert p.returncode == 0 and not p.stderr
    assert p.stdout.startswith(f"usage: daskramp {command}")
    assert "``" not in p.stdout
    for opt in ("--debug", "--log FILE", "--no-progress"):
        assert opt in p.stdout


def test_run_help_names_the_step_parameters_and_their_layers():
    out = _cli("run", "--help").stdout
    assert "--steps.<step>.<param>=VALUE" in out
    assert "DASKRAMP_STEPS__<STEP>__<PARAM>" in out and "DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD=10" in out
    assert "jump" in out and "dark_current" in out  # the steps, by their official names


def test_every_argument_has_help():
    from daskramp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"daskramp {name}: {'/'.join(action.option_strings) or action.dest} has no help"


def test_version():
    from daskramp import __version__

    p = _cli("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"daskramp {__version__}"


# ---------------------------------------------------------------------------- refusals


def test_ingest_missing_input_is_one_line(tmp_path):
    line = _refused(_cli("ingest", tmp_path / "nothing_uncal.fits", "--out", tmp_path / "s.zarr"), "ingest")
    assert "nothing_uncal.fits: input not found" in line
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.zarr.partial").exists()


def test_ingest_existing_store_names_the_flag(tmp_path, data):
    files, _ = data
    (tmp_path / "s.zarr").mkdir()
    line = _refused(_cli("ingest", *files, "--out", tmp_path / "s.zarr"), "ingest")
    assert "store exists" in line and "rerun with --overwrite" in line and "pass overwrite=True" not in line


def test_ingest_segments_of_two_exposures_refused(tmp_path, data):
    files, _ = data
    other = tmp_path / files[1].name.replace("00001-seg002", "00002-seg002")
    shutil.copy(files[1], other)
    line = _refused(_cli("ingest", files[0], other, "--out", tmp_path / "s.zarr"), "ingest")
    assert "not segments of one exposure" in line


@pytest.fixture
def refs_without_gain(tmp_path, data):
    from astropy.io import fits

    refs = tmp_path / "refs"
    shutil.copytree(data[1], refs)
    for p in refs.glob("*.fits"):
        if fits.getval(p, "REFTYPE") == "GAIN":
            p.unlink()
    return refs


def test_darks_missing_gain_refused_before_the_cluster(tmp_path, data, refs_without_gain):
    files, _ = data
    out = tmp_path / "darks" / "jwst_niriss_dark_mine.fits"
    line = _refused(_cli("darks", *files, "--out", out, "--refs", refs_without_gain), "darks")
    assert "GAIN reference" in line and str(refs_without_gain) in line
    assert not out.exists()


def test_darks_bad_parameter_refused(tmp_path, data):
    files, refs = data
    line = _refused(_cli("darks", *files, "--out", tmp_path / "d.fits", "--refs", refs, "--sigma", "-2"),
                    "darks")
    assert "--sigma must be a positive number" in line


def test_run_missing_gain_refused_before_the_cluster(tmp_path, data, refs_without_gain):
    files, _ = data
    line = _refused(_cli("run", *files, "--out", tmp_path / "out", "--refs", refs_without_gain), "run")
    assert "GAIN reference" in line


def test_report_without_products_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    line = _refused(_cli("report", tmp_path / "empty", "--out", tmp_path / "r"), "report")
    assert "no *_rate.zarr or *_rateints.zarr product" in line


def test_demo_refuses_a_foreign_directory_before_anything(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    line = _refused(_cli("demo", "--out", tmp_path), "demo")
    assert "not written by daskramp demo" in line
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_demo_bad_size_refused(tmp_path):
    line = _refused(_cli("demo", "--out", tmp_path / "d", "--nints", "0"), "demo")
    assert "--nints must be a positive integer" in line
    assert not (tmp_path / "d").exists()


def test_log_file_in_a_missing_directory_refused(tmp_path, data):
    files, refs = data
    line = _refused(_cli("run", *files, "--out", tmp_path / "out", "--refs", refs,
                         "--log", tmp_path / "no" / "run.log"), "run")
    assert "--log" in line


# ---------------------------------------------------------------------------- a session


@pytest.fixture(scope="module")
def session(tmp_path_factory, data):
    """ingest, then run on the store, on local clusters of one worker (as a user types them)."""
    files, refs = data
    tmp = tmp_path_factory.mktemp("session")
    ingest = _cli("ingest", *files, "--out", tmp / "my_exposure.zarr", "--workers", "1",
                  scheduler=None)
    assert ingest.returncode == 0, ingest.stderr
    run = _cli("run", tmp / "my_exposure.zarr", "--out", tmp / "out", "--refs", refs, "--workers", "1",
               "--memory-limit", "2GB", "--log", tmp / "run.log", scheduler=None)
    assert run.returncode == 0, run.stderr
    return tmp, ingest, run, files, refs


def test_session_log_and_progress(session):
    tmp, ingest, run, _, _ = session
    assert "ingest [" in ingest.stderr  # the conversion's progress bar says what it is
    log = (tmp / "run.log").read_text().splitlines()
    assert log and all(LOG_LINE.match(ln) for ln in log), log
    text = "\n".join(log)
    for rt in ("MASK", "DARK", "GAIN", "READNOISE"):
        assert f"daskramp.run - INFO - reference {rt}: " in text
    assert re.search(r"daskramp\.run - INFO - dark_current: COMPLETE \(\S+dark\S*\.fits\)", text)
    assert re.search(r"daskramp\.run - INFO - products computed and written in [\d.]+ s", text)
    assert re.search(r"daskramp\.run - INFO - done in [\d.]+ s", text)
    # the log also went to stderr, the same lines
    assert sum(1 for ln in run.stderr.splitlines() if LOG_LINE.match(ln)) == len(log)
    # peak memory per worker in readable units, as everywhere
    peaks = run.stdout.split("peak memory per worker:")[1].split("---")[0]
    assert re.search(r"\d+\.\d\d (MiB|GiB)", peaks), peaks


def test_products_of_a_store_carry_the_official_names(session):
    tmp, _, run, files, _ = session
    root = files[0].name.replace("-seg001", "").replace("_uncal.fits", "")
    names = {p.name for p in (tmp / "out").iterdir() if not p.name.startswith(".")}
    assert {f"{root}_rate.fits", f"{root}_rateints.fits", f"{root}_rate.zarr", f"{root}_rateints.zarr"} <= names


def test_stores_open_silently_with_their_models(session):
    import xarray as xr
    from astropy.io import fits

    tmp, _, _, files, _ = session
    root = files[0].name.replace("-seg001", "").replace("_uncal.fits", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "consolidated metadata" RuntimeWarning
        stores = {k: xr.open_zarr(tmp / "out" / f"{root}_{k}.zarr") for k in ("rate", "rateints")}
        xr.open_zarr(tmp / "my_exposure.zarr").close()
    for kind, model in (("rate", "ImageModel"), ("rateints", "CubeModel")):
        assert stores[kind].attrs["DATAMODL"] == model
        assert fits.getval(tmp / "out" / f"{root}_{kind}.fits", "DATAMODL") == model
        stores[kind].close()


def test_quiet_rerun_prints_no_log(session):
    tmp, _, _, _, refs = session
    # the run is complete: the same command again computes nothing, and --no-progress
    # keeps stderr empty (the results still go to stdout)
    p = _cli("run", tmp / "my_exposure.zarr", "--out", tmp / "out", "--refs", refs, "--workers", "1",
             "--memory-limit", "2GB", "--no-progress", scheduler=None)
    assert p.returncode == 0, p.stderr
    assert not p.stderr.strip(), p.stderr
    assert "run: already complete" in p.stdout


# ---------------------------------------------------------------------------- in process


def test_progress_names_the_segments_in_flight_and_estimates_the_whole():
    from daskramp.progress import RunMonitor

    m = RunMonitor(client=None, stream=None)
    m.counts = {"memory": 10, "processing": 10}
    m.block_submitted(0, 4, in_flight=2)
    assert m.line().startswith("segment 1/4 [") and "10/~80 tasks" in m.line()
    m.block_submitted(1, 4, in_flight=2)
    assert m.line().startswith("segments 1–2/4 [") and "10/~40 tasks" in m.line()
    m.block_submitted(3, 4, in_flight=2)
    assert m.line().startswith("segments 3–4/4 [") and "10/20 tasks" in m.line()
    m = RunMonitor(client=None, stream=None, label="ingest")
    m.counts = {"memory": 1, "waiting": 1}
    assert m.line().startswith("ingest [") and " 50% 1/2 tasks |" in m.line()


def test_detector1_result_repr_is_short():
    import numpy as np
    import xarray as xr

    from daskramp.pipeline import Detector1Result

    rate = xr.Dataset({"data": (("y", "x"), np.zeros((256, 2048), np.float32))})
    rateints = xr.Dataset({"data": (("integration", "y", "x"), np.zeros((40, 256, 2048), np.float32))})
    r = Detector1Result(rate=rate, rateints=rateints.chunk({"integration": 4}),
                        provenance={"steps": {"jump": {"status": "COMPLETE", "parameters": {"x": 1}}}})
    text = repr(r)
    assert len(text.splitlines()) <= 6 and len(text) < 400, text
    assert "rateints: integration 40 × y 256 × x 2048 (lazy)" in text and "jump COMPLETE" in text


def test_override_options_cover_every_reftype():
    from daskramp import cli
    from daskramp.io import refs

    assert cli.REFTYPES == refs.REFTYPES
