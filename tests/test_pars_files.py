"""Official parameter reference files (ASDF) in ``--config``: :mod:`daskramp.parsfile`.

* Files written by jwst's own ``Detector1Pipeline.export_config`` / ``JumpStep.export_config``
  (in a subprocess, offline; skipped without jwst) and hand-written trees in the layouts of
  spec 11 §4 (a CRDS-like pipeline file with ``meta``, single-step files, stpipe's older
  layout) are read, and daskramp takes from each the values stpipe's own reader
  (``config_parser.load_config_file``) takes.
* Precedence: code defaults < single-step files < pipeline files < workflow YAML <
  environment < command line, whatever order the files are given in.
* Refusals: one line naming the file, the step and the parameter.
* A small simulated exposure run with a parameter file gives exactly the products of the
  same values given in YAML, and (``parity``) what the official pipeline makes with the
  same file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from daskramp import config, parsfile
from daskramp.config import ConfigError
from daskramp.params import NotImplementedParameter
from daskramp.steps import validate_steps

asdf = pytest.importorskip("asdf")

ROOT = Path(__file__).resolve().parents[1]
HAVE_JWST = importlib.util.find_spec("jwst") is not None
needs_jwst = pytest.mark.skipif(not HAVE_JWST, reason="needs the official jwst pipeline (parity extra)")

PIPELINE = "jwst.pipeline.Detector1Pipeline"
#: the changes the end-to-end runs make: both change the products of the small exposure
CHANGED = {"jump": {"rejection_threshold": 6.0}, "ramp_fit": {"suppress_one_group": False}}
#: a small SOSS strip whose brightest pixels saturate in the second group (so that
#: suppress_one_group matters) and with cosmic rays near the rejection threshold
SMALL = {"preset": "niriss-soss", "nints": 4, "segments": 1, "ngroups": 5, "nx": 64, "seed": 3,
         "peak_rate": 5000.0}


def write_asdf(path: Path, tree: dict) -> Path:
    asdf.AsdfFile(tree).write_to(path)
    return path


def _class(step: str) -> str:
    """The official class path of a step (``jwst.jump.JumpStep``)."""
    module = {"ramp_fit": "ramp_fitting"}.get(step, step)
    return f"jwst.{module}.{parsfile.STEP_CLASSES.get(step, 'Step')}"


def pipeline_tree(steps: dict, parameters: dict | None = None, **extra) -> dict:
    """A pipeline file as CRDS serves them: only the values that change."""
    return {"class": PIPELINE, "name": "Detector1Pipeline", "parameters": parameters or {},
            "steps": [{"class": _class(name), "name": name, "parameters": params}
                      for name, params in steps.items()], **extra}


def step_tree(step: str, parameters: dict, **extra) -> dict:
    return {"class": _class(step), "name": parsfile.STEP_CLASSES[step], "parameters": parameters, **extra}


CRDS_META = {"author": "daskramp tests", "date": "2024-01-01T00:00:00",
             "description": "test parameters", "instrument": {"name": "NIRISS"},
             "origin": "daskramp", "pedigree": "GROUND", "reftype": "pars-detector1pipeline",
             "telescope": "JWST", "useafter": "2022-01-01T00:00:00"}


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> dict[str, Path]:
    """Hand-written parameter files in each layout."""
    d = tmp_path_factory.mktemp("hand")
    return {
        # CRDS pars-detector1pipeline: only changed values, meta, history
        "crds_pipeline": write_asdf(d / "pars-detector1pipeline.asdf", pipeline_tree(
            {"jump": {"rejection_threshold": 5.5, "flag_4_neighbors": False},
             "dark_current": {"skip": True}, "ipc": {"skip": True}, "picture_frame": {"skip": True}},
            meta=CRDS_META, history={"entries": [{"description": "delivered"}]})),
        "crds_rampfit": write_asdf(d / "pars-rampfitstep.asdf", step_tree(
            "ramp_fit", {"suppress_one_group": False},
            meta={**CRDS_META, "reftype": "pars-rampfitstep"})),
        "jump_5": write_asdf(d / "jump5.asdf", step_tree("jump", {"rejection_threshold": 5.0})),
        "jump_8": write_asdf(d / "jump8.asdf", step_tree("jump", {"rejection_threshold": 8.0})),
        "pipeline_7": write_asdf(d / "det1_7.asdf", pipeline_tree({"jump": {"rejection_threshold": 7.0}})),
        # stpipe's older layout: class, name and the sub-steps by name under parameters
        "legacy": write_asdf(d / "legacy.asdf", {"parameters": {
            "class": PIPELINE, "name": "Detector1Pipeline",
            "steps": {"jump": {"rejection_threshold": 6.5}, "saturation": {"n_pix_grow_sat": 0}}}}),
        "changed": write_asdf(d / "changed.asdf", pipeline_tree(CHANGED)),
    }


@pytest.fixture(scope="module")
def official(tmp_path_factory, hand) -> tuple[dict[str, Path], dict]:
    """Files written by jwst's export_config, and every file as stpipe's own reader reads it
    (``{file name: ConfigObj as a dict}``); one interpreter, offline."""
    if not HAVE_JWST:
        pytest.skip("needs the official jwst pipeline (parity extra)")
    d = tmp_path_factory.mktemp("official")
    code = """
import json, sys
from pathlib import Path
from daskramp.testing.official import configure_offline
out = Path(sys.argv[1])
configure_offline(out / "crds_cache")
from jwst.jump import JumpStep
from jwst.pipeline import Detector1Pipeline
from stpipe import config_parser
Detector1Pipeline().export_config(out / "det1_default.asdf", include_metadata=True)
Detector1Pipeline(steps=json.loads(sys.argv[2])).export_config(out / "det1_changed.asdf")
JumpStep(rejection_threshold=5.0).export_config(out / "jump_step.asdf")
read = {}
for f in [*sorted(out.glob("*.asdf")), *map(Path, sys.argv[3:])]:
    read[f.name] = config_parser.load_config_file(str(f)).dict()
print(json.dumps(read, default=repr))
"""
    p = subprocess.run([sys.executable, "-c", code, str(d), json.dumps(CHANGED), *map(str, hand.values())],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    files = {f.stem: f for f in d.glob("*.asdf")}
    return files, json.loads(p.stdout.splitlines()[-1])


def _as_stpipe_reads(pf: parsfile.ParameterFile, read: dict) -> None:
    """Every value daskramp takes from the file is the one stpipe's reader takes."""
    assert pf.steps, "nothing taken from the file"
    for step, values in pf.steps.items():
        theirs = read["steps"][step] if pf.kind == "pipeline" else read
        for name, value in values.items():
            assert theirs[name] == value, (pf.path.name, step, name, value, theirs[name])


# ---------------------------------------------------------------------- jwst's own files


@needs_jwst
def test_export_config_default_pipeline_is_daskramps_defaults(official):
    files, read = official
    pf = parsfile.read(files["det1_default"])
    assert pf.kind == "pipeline" and pf.class_name.endswith(".Detector1Pipeline")
    assert pf.meta["reftype"] == "<SPECIFY>"  # include_metadata=True writes the CRDS template
    _as_stpipe_reads(pf, read["det1_default.asdf"])
    # every step of the official pipeline is there: those daskramp runs give their values,
    # the others are recorded with their skip (ipc and the MIRI-only steps default to false)
    assert set(pf.steps) | set(pf.not_run) == set(parsfile.STEP_CLASSES)
    assert pf.not_run["ipc"] is False and pf.not_run["rscd"] is False and pf.not_run["emicorr"] is True
    cfg = config.layered(workflow=files["det1_default"], environ={})
    assert validate_steps(cfg["steps"]) == validate_steps(None)
    assert parsfile.changes(pf.steps) == {}


@needs_jwst
def test_export_config_changed_pipeline(official):
    files, read = official
    pf = parsfile.read(files["det1_changed"])
    _as_stpipe_reads(pf, read["det1_changed.asdf"])
    steps = validate_steps(config.layered(workflow=files["det1_changed"], environ={})["steps"])
    assert steps["jump"].rejection_threshold == 6.0
    assert steps["ramp_fit"].suppress_one_group is False
    # what the run's log shows of the file: the values away from the defaults
    assert parsfile.changes(pf.steps) == {"jump.rejection_threshold": 6.0, "ramp_fit.suppress_one_group": False}


@needs_jwst
def test_export_config_single_step(official):
    files, read = official
    pf = parsfile.read(files["jump_step"])
    # export_config names a lone step after its class: the class says which step it is
    assert pf.kind == "step" and read["jump_step.asdf"]["name"] == "JumpStep"
    assert set(pf.steps) == {"jump"} and pf.steps["jump"]["rejection_threshold"] == 5.0
    _as_stpipe_reads(pf, read["jump_step.asdf"])


@needs_jwst
@pytest.mark.parametrize("name", ["crds_pipeline", "crds_rampfit", "legacy", "changed"])
def test_hand_written_files_read_as_stpipe_reads_them(official, hand, name):
    _, read = official
    _as_stpipe_reads(parsfile.read(hand[name]), read[hand[name].name])


# ---------------------------------------------------------------------- layouts


def test_crds_pipeline_file(hand):
    pf = parsfile.read(hand["crds_pipeline"])
    assert pf.kind == "pipeline"
    assert pf.steps == {"jump": {"rejection_threshold": 5.5, "flag_4_neighbors": False},
                        "dark_current": {"skip": True}}
    assert pf.not_run == {"ipc": True, "picture_frame": True}
    rec = pf.record()
    assert rec["meta"]["reftype"] == "pars-detector1pipeline" and rec["file"] == hand["crds_pipeline"].name
    assert len(rec["sha256"]) == 64 and rec["values"] == pf.steps


def test_single_step_and_legacy_layouts(hand):
    pf = parsfile.read(hand["crds_rampfit"])
    assert (pf.kind, pf.steps) == ("step", {"ramp_fit": {"suppress_one_group": False}})
    legacy = parsfile.read(hand["legacy"])
    assert legacy.kind == "pipeline"
    assert legacy.steps == {"jump": {"rejection_threshold": 6.5}, "saturation": {"n_pix_grow_sat": 0}}


def test_not_run_steps_skipped_or_at_default_are_accepted(tmp_path):
    f = write_asdf(tmp_path / "p.asdf", pipeline_tree({
        "picture_frame": {"skip": True, "n_sigma": 3.0},  # skipped: its parameters change nothing
        "ipc": {"skip": False},  # the official default (CRDS answers N/A for NIR: SKIPPED)
        "rscd": {"skip": False},  # MIRI only: not run on a NIR exposure, officially either
        "emicorr": {"algorithm": "joint"},  # default skip true, default value
    }, parameters={"save_results": True, "save_calibrated_ramp": False, "input_dir": ""}))
    pf = parsfile.read(f)
    assert pf.not_run == {"picture_frame": True, "ipc": False, "rscd": False, "emicorr": True}
    assert pf.not_used == {"Detector1Pipeline.save_results": True,
                           "steps.picture_frame.n_sigma": 3.0, "steps.emicorr.algorithm": "joint"}
    parsfile.check_exposure(pf.record(), {"INSTRUME": "NIRISS"})
    with pytest.raises(ConfigError, match=r"p\.asdf: steps\.rscd\.skip: False is not accepted for a MIRI exposure"):
        parsfile.check_exposure(pf.record(), {"INSTRUME": "MIRI"})


# ---------------------------------------------------------------------- precedence


def test_pipeline_file_beats_step_file_whatever_the_order(hand):
    for files in ([hand["jump_5"], hand["pipeline_7"]], [hand["pipeline_7"], hand["jump_5"]]):
        cfg, records = config.from_files(files)
        assert cfg["steps"]["jump"]["rejection_threshold"] == 7.0
        assert [r["kind"] for r in records] == ["step", "pipeline"]  # the order applied


def test_files_of_one_kind_later_wins(hand):
    assert config.from_files([hand["jump_5"], hand["jump_8"]])[0]["steps"]["jump"]["rejection_threshold"] == 8.0
    assert config.from_files([hand["jump_8"], hand["jump_5"]])[0]["steps"]["jump"]["rejection_threshold"] == 5.0


def test_yaml_beats_parameter_files_env_and_command_line_beat_yaml(tmp_path, hand):
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps:\n  jump:\n    rejection_threshold: 9\n  ramp_fit:\n    suppress_one_group: true\n")
    files = [wf, hand["crds_rampfit"], hand["crds_pipeline"]]  # YAML first: still on top
    cfg = config.layered(workflow=files, environ={})
    assert cfg["steps"]["jump"] == {"rejection_threshold": 9, "flag_4_neighbors": False}
    assert cfg["steps"]["ramp_fit"] == {"suppress_one_group": True}
    assert cfg["steps"]["dark_current"] == {"skip": True}
    cfg = config.layered(workflow=files, environ={"DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD": "10"},
                         cli=["--steps.jump.rejection_threshold=11", "--steps.dark_current.skip=false"])
    assert cfg["steps"]["jump"]["rejection_threshold"] == 11
    assert cfg["steps"]["dark_current"] == {"skip": False}
    cfg = config.layered(workflow=files, environ={"DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD": "10"})
    assert cfg["steps"]["jump"]["rejection_threshold"] == 10


def test_cli_takes_several_config_files_in_the_official_precedence(tmp_path, hand, monkeypatch):
    import daskramp.run
    from daskramp import cli

    seen = {}

    def fake_run(inputs, out, **kw):
        seen.update(kw)
        return {}

    monkeypatch.setattr(daskramp.run, "run", fake_run)
    monkeypatch.setattr(cli, "_print_run_summary", lambda s: None)
    for k in [k for k in os.environ if k.startswith("DASKRAMP_STEPS__")]:
        monkeypatch.delenv(k)
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps:\n  jump:\n    flag_4_neighbors: true\n")
    rc = cli.main(["--no-progress", "run", "x_uncal.fits", "--out", str(tmp_path / "o"),
                   "--config", str(wf), "--config", str(hand["crds_pipeline"]),
                   "--config", str(hand["jump_8"]), "--steps.ramp_fit.suppress_one_group=false"])
    assert rc == 0
    steps = seen["config"]["steps"]
    assert steps["jump"] == {"rejection_threshold": 5.5, "flag_4_neighbors": True}
    assert steps["ramp_fit"] == {"suppress_one_group": False}
    assert [Path(p) for p in seen["workflow"]] == [wf, hand["crds_pipeline"], hand["jump_8"]]


# ---------------------------------------------------------------------- refusals


REFUSED = [
    (pipeline_tree({"jump": {"find_showers": True}}), NotImplementedParameter,
     "steps.jump.find_showers: True is an official value that daskramp does not implement"),
    (pipeline_tree({"jump": {"rejection_threshold": "abc"}}), ConfigError,
     "steps.jump.rejection_threshold: 'abc' is not allowed"),
    (pipeline_tree({"ramp_fit": {"save_opt": True}}), NotImplementedParameter,
     "steps.ramp_fit.save_opt: True is an official value that daskramp does not implement"),
    (pipeline_tree({"emicorr": {"skip": False}}), ConfigError,
     "steps.emicorr.skip: False is not accepted: daskramp does not run the official emicorr step (MIRI only)"),
    (pipeline_tree({"picture_frame": {"skip": False}}), ConfigError,
     "steps.picture_frame.skip: False is not accepted"),
    (pipeline_tree({"jump": {"output_dir": "elsewhere"}}), ConfigError,
     "steps.jump.output_dir: 'elsewhere' is not accepted: an official bookkeeping parameter"),
    (pipeline_tree({"jump": {"save_results": True}}), ConfigError,
     "steps.jump.save_results: True is not accepted"),
    (pipeline_tree({}, parameters={"save_calibrated_ramp": True}), ConfigError,
     "Detector1Pipeline.save_calibrated_ramp: True is not accepted"),
    (pipeline_tree({}, parameters={"post_hooks": ["x"]}), ConfigError,
     "Detector1Pipeline.post_hooks: ['x'] is not accepted"),
    (pipeline_tree({"dark_current": {"override_dark": "mine.fits"}}), ConfigError,
     "steps.dark_current.override_dark: 'mine.fits' is not accepted in a parameter file: give the "
     "reference file with --override-dark"),
    (pipeline_tree({"jump": {"no_such": 1}}), ConfigError,
     "steps.jump.no_such: not a parameter of the official JumpStep"),
    (pipeline_tree({"jump": {"integration_scale": [1.0]}}), ConfigError,
     "steps.jump.integration_scale: not a parameter of the official JumpStep but daskramp's own"),
    (pipeline_tree({"group_1overf": {"skip": False}}), ConfigError,
     "steps[0].name: 'group_1overf' is not a step of Detector1Pipeline"),
    ({"class": PIPELINE, "parameters": {}, "steps": [{"class": "jwst.jump.JumpStep", "name": "ramp_fit",
                                                      "parameters": {}}]}, ConfigError,
     "steps.ramp_fit.class: 'jwst.jump.JumpStep' is not the class of the official ramp_fit step"),
    (step_tree("jump", {}) | {"class": "mypackage.JumpStep"}, ConfigError,
     "class: 'mypackage.JumpStep' is not the official Detector1Pipeline or one of its steps"),
    ({"class": "jwst.pipeline.Image2Pipeline", "parameters": {}}, ConfigError,
     "class: 'jwst.pipeline.Image2Pipeline' is not the official Detector1Pipeline"),
    ({"name": "x", "parameters": {}}, ConfigError, "class: expected the official class"),
    (step_tree("jump", {"rejection_threshold": 5.0}) | {"steps": [{"name": "ramp_fit"}]}, ConfigError,
     "steps: a single-step file (JumpStep) has no steps"),
]


@pytest.mark.parametrize("tree, error, said", REFUSED, ids=[r[2][:40] for r in REFUSED])
def test_refusals_name_the_file_step_and_parameter(tmp_path, tree, error, said):
    f = write_asdf(tmp_path / "pars-bad.asdf", tree)
    with pytest.raises(error) as info:
        config.layered(workflow=f, environ={})
    msg = str(info.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg, msg
    assert said in msg, msg


def test_unreadable_and_plain_yaml_trees_are_refused(tmp_path):
    bad = tmp_path / "broken.asdf"
    bad.write_bytes(b"#ASDF 1.0.0\n%YAML 1.1\n--- !core/asdf-1.1.0\n[unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.asdf: not a readable ASDF file"):
        config.layered(workflow=bad, environ={})
    plain = tmp_path / "pars.yaml"
    plain.write_text("class: jwst.jump.JumpStep\nparameters:\n  rejection_threshold: 5\n")
    with pytest.raises(ConfigError, match=r"pars\.yaml: an official parameter tree .* in plain YAML"):
        config.layered(workflow=plain, environ={})


def test_cli_refusal_is_one_line_before_any_cluster(tmp_path):
    f = write_asdf(tmp_path / "pars-jumpstep.asdf", step_tree("jump", {"find_showers": True}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASKRAMP_STEPS__")}
    env["DASKRAMP_SCHEDULER"] = "tcp://127.0.0.1:1"
    p = subprocess.run([sys.executable, "-m", "daskramp.cli", "run", str(tmp_path / "x_uncal.fits"),
                        "--out", str(tmp_path / "out"), "--config", str(f)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"daskramp run: error: {f}: steps.jump.find_showers: True is an official value "
        f"that daskramp does not implement (implemented: False)"]


# ---------------------------------------------------------------------- end to end


def _load_test_run():
    spec = importlib.util.spec_from_file_location("_daskramp_test_run_pars", Path(__file__).with_name("test_run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small():
    return _load_test_run().simulated_small(SMALL)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def _products(summary: dict) -> dict[str, xr.Dataset]:
    return {k: xr.open_zarr(summary["outputs"][f"{k}_zarr"], consolidated=False).load()
            for k in ("rate", "rateints")}


@pytest.fixture(scope="module")
def pars_run(small, hand, client, tmp_path_factory):
    """The small exposure run by ``daskramp.run.run`` with the parameter file of CHANGED."""
    from daskramp.run import run

    files, refs = small
    out = tmp_path_factory.mktemp("pars-run")
    summary = run(files, out, refs=refs, config=hand["changed"], client=client, quiet=True)
    return summary, _products(summary)


def test_parameter_file_run_equals_yaml_run(small, hand, client, pars_run, tmp_path):
    from daskramp.io.products import PROVENANCE_ATTR
    from daskramp.pipeline import detector1

    files, refs = small
    wf = tmp_path / "same.yaml"
    wf.write_text("steps:\n  jump:\n    rejection_threshold: 6.0\n  ramp_fit:\n    suppress_one_group: false\n")
    from daskramp.run import run

    yaml_run = _products(run(files, tmp_path / "yaml", refs=refs, config=wf, client=client, quiet=True))
    summary, ours = pars_run
    for kind in ("rate", "rateints"):
        for var in ours[kind].data_vars:
            np.testing.assert_array_equal(ours[kind][var].values, yaml_run[kind][var].values,
                                          err_msg=f"{kind}.{var}")
    # the file's values took effect: the default run differs in DQ (jumps) and in the
    # one-good-group pixels (NaN with suppress_one_group)
    import dask

    default = detector1(files[0], refs)
    with dask.config.set(scheduler="synchronous"):
        d_ints = default.rateints.compute()
    assert not np.array_equal(d_ints["dq"].values, ours["rateints"]["dq"].values)
    assert np.isnan(d_ints["data"].values).sum() > np.isnan(ours["rateints"]["data"].values).sum()
    # the file and its values are in the products' provenance
    prov = json.loads(ours["rate"].attrs[PROVENANCE_ATTR])
    (rec,) = prov["config_files"]
    assert rec["file"] == hand["changed"].name and rec["kind"] == "pipeline" and rec["format"] == "asdf"
    assert rec["values"] == CHANGED
    assert prov["fingerprint"]["steps"]["jump"]["rejection_threshold"] == 6.0


# ---------------------------------------------------------------------- official parity


def _read_fits(path) -> dict:
    from astropy.io import fits

    with fits.open(path) as h:
        return {v: np.asarray(h[e].data) for v, e in (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                                                      ("var_rnoise", "VAR_RNOISE"), ("dq", "DQ"))}


@pytest.mark.parity
@pytest.mark.slow
def test_parity_official_pipeline_with_the_same_parameter_file(small, official, client, tmp_path):
    """jwst's Detector1Pipeline run with the file its export_config wrote (as a user's
    ``config_file``, every reference overridden, offline) agrees with daskramp run with it."""
    from astropy.io import fits

    from daskramp.io.refs import REFTYPES, RefSet
    from daskramp.run import run
    from daskramp.testing.parity import compare_arrays, compare_dq

    files, refs_dir = small
    pars = official[0]["det1_changed"]
    rs = RefSet.from_dir(refs_dir, dict(fits.getheader(files[0], 0)))
    refs = {rt: str(rs.get(rt).path) for rt in REFTYPES if rs.get(rt)}
    code = """
import json, sys
from pathlib import Path
from daskramp.testing.official import configure_offline, step_config
uncal, refs, out, pars = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
configure_offline(out / "crds_cache")
from astropy.utils import iers
iers.conf.auto_download = False
from jwst.pipeline import Detector1Pipeline
Detector1Pipeline.call(uncal, config_file=pars, steps=step_config(refs), output_dir=str(out), save_results=True)
"""
    off = tmp_path / "official"
    off.mkdir()
    p = subprocess.run([sys.executable, "-c", code, str(files[0]), json.dumps(refs), str(off), str(pars)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    root = files[0].name.replace("_uncal.fits", "")
    ours = _products(run(files, tmp_path / "ours", refs=refs_dir, config=pars, client=client, quiet=True))
    for kind in ("rateints", "rate"):
        theirs = _read_fits(off / f"{root}_{kind}.fits")
        for var in ("data", "err", "var_poisson", "var_rnoise"):
            r = compare_arrays(ours[kind][var].values, theirs[var])
            assert r["nan_pattern_identical"], (kind, var, r)
            assert r["fraction_close"] >= 0.999, (kind, var, r)
        d = compare_dq(ours[kind]["dq"].values, theirs["dq"])
        assert d["fraction_identical"] >= 0.999, (kind, d)
