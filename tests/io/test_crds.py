"""``daskramp run --crds``: references and parameter files from a local CRDS cache
(:mod:`daskramp.io.crds`).

Every test writes its own cache (:mod:`daskramp.testing.crds_cache`: pmap, imap and rmaps
pointing at the reference files ``daskramp.simulate`` wrote for a small NIRISS SOSS
exposure) and runs crds in local mode against a server address that refuses at once: no
network anywhere.  Each rmap holds rows that must lose (another READPATT or SUBARRAY, an
older and a future USEAFTER), whose files are not in the cache: choosing one is an error.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

crds = pytest.importorskip("crds")
asdf = pytest.importorskip("asdf")

from daskramp import steps  # noqa: E402
from daskramp.config import ConfigError  # noqa: E402
from daskramp.io import crds as crds_io  # noqa: E402
from daskramp.io.crds import CrdsError  # noqa: E402
from daskramp.io.refs import REFTYPES, RefSet  # noqa: E402
from daskramp.testing.crds_cache import USEAFTER, Rmap, cache_name, simulated_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HAVE_JWST = importlib.util.find_spec("jwst") is not None

#: the exposure of tests/test_pars_files.py (cached between sessions): one segment of a SOSS
#: strip with cosmic rays near the jump threshold, so that rejection_threshold matters
SMALL = {"preset": "niriss-soss", "nints": 4, "segments": 1, "ngroups": 5, "nx": 64, "seed": 3,
         "peak_rate": 5000.0}
#: crds settings that would point it elsewhere than the test's cache (crds sets its other
#: settings in the environment itself when imported, and reads them back from there)
CRDS_VARS = ("CRDS_PATH", "CRDS_CONTEXT", "CRDS_SERVER_URL", "CRDS_MAPPATH", "CRDS_REFPATH",
             "CRDS_CFGPATH", "CRDS_READONLY_CACHE")
#: a context number per cache, so no test can see another's rules
_numbers = itertools.count(9100, 10)


def _load_test_run():
    spec = importlib.util.spec_from_file_location("_daskramp_test_run_crds", ROOT / "tests" / "test_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small():
    return _load_test_run().simulated_small(SMALL)


@pytest.fixture(scope="module")
def attrs(small) -> dict:
    return dict(fits.getheader(small[0][0], 0))


@pytest.fixture(scope="module")
def sim_refs(small, attrs) -> dict[str, Path]:
    rs = RefSet.from_dir(small[1], attrs, required=REFTYPES)
    return {rt: rs.get(rt).path for rt in REFTYPES}


@pytest.fixture
def no_crds_env(monkeypatch):
    for k in CRDS_VARS:
        monkeypatch.delenv(k, raising=False)
    # left set by a test that ran the official pipeline offline in this process
    # (daskramp.testing.official.configure_offline): parameter files are on unless a test says
    monkeypatch.delenv("STPIPE_DISABLE_CRDS_STEPPARS", raising=False)
    # the cache's mappings carry their checksums: crds checks them
    monkeypatch.setenv("CRDS_IGNORE_MAPPING_CHECKSUM", "false")
    monkeypatch.setenv("CRDS_MODE", "local")
    return monkeypatch


@pytest.fixture
def cache(tmp_path, no_crds_env, attrs, sim_refs):
    """``make(refs=…, pars=…, na=…, rmaps=…) -> (root, context, number)``: a cache written in
    ``tmp_path/crds`` and crds pointed at it (local mode, refusing server)."""

    def make(refs=None, **kw):
        number = next(_numbers)
        context = f"jwst_{number}.pmap"
        root = tmp_path / "crds"
        env = simulated_cache(root, sim_refs if refs is None else refs, attrs, context=context, **kw)
        for k, v in env.items():
            no_crds_env.setenv(k, v)
        return root, context, number

    return make


def pars_file(path: Path, step_class: str, parameters: dict, *, steps=None, reftype: str) -> Path:
    """A parameter reference file as CRDS serves them (class, parameters, meta)."""
    tree = {"class": step_class, "name": step_class.rsplit(".", 1)[-1], "parameters": parameters,
            "meta": {"author": "daskramp tests", "date": "2024-01-01T00:00:00",
                     "description": "test parameters", "instrument": {"name": "NIRISS"},
                     "pedigree": "GROUND", "reftype": reftype.upper(), "telescope": "JWST",
                     "useafter": "2022-01-01T00:00:00"}}
    if steps is not None:
        tree["steps"] = steps
    asdf.AsdfFile(tree).write_to(path)
    return path


def jump_pars(path: Path, threshold: float) -> Path:
    return pars_file(path, "jwst.jump.jump_step.JumpStep", {"rejection_threshold": threshold},
                     reftype="pars-jumpstep")


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------- selection


def test_exposure_keywords_become_the_datamodel_parameters_crds_matches(attrs):
    p = crds_io.crds_parameters(attrs)
    assert p["META.INSTRUMENT.NAME"] == "NIRISS" and p["META.INSTRUMENT.DETECTOR"] == "NIS"
    assert p["META.EXPOSURE.READPATT"] == attrs["READPATT"]
    assert p["META.SUBARRAY.NAME"] == attrs["SUBARRAY"]
    assert p["META.VISIT.TSOVISIT"] is True
    assert p["META.OBSERVATION.DATE"] == attrs["DATE-OBS"]
    assert p["META.OBSERVATION.TIME"] == attrs["TIME-OBS"]


def test_fallback_keywords_are_the_datamodels_schema_ones():
    schema = pytest.importorskip("crds.jwst.schema")
    try:
        schema.fits_to_dm("INSTRUME")
    except Exception:  # noqa: BLE001
        pytest.skip("no datamodels schema (stdatamodels) to compare with")
    wrong = {k: (v, schema.fits_to_dm(k)) for k, v in crds_io.DATAMODEL_KEYWORDS.items()
             if schema.fits_to_dm(k) != v}
    assert not wrong


def test_every_reftype_of_the_exposure_comes_from_the_cache(cache, attrs, sim_refs):
    root, context, n = cache()
    c = crds_io.open_cache()
    assert (c.context, c.mode, c.path) == (context, "local", root.absolute())
    names = {rt: cache_name("NIRISS", rt, n + 1, "fits") for rt in REFTYPES}
    assert crds_io.recommendations(c, attrs, REFTYPES) == {rt: ("file", names[rt]) for rt in REFTYPES}
    # clean_flicker_noise's apply_flat_field asks for the FLAT too
    rs = crds_io.reference_set(attrs, {"clean_flicker_noise": {"skip": False, "apply_flat_field": True}}, cache=c)
    without = crds_io.reference_set(attrs, cache=c)
    assert without.reason("flat") == "FLAT: not needed by the steps that run"
    assert "flat" not in without.provenance() and "superbias" in without.provenance()
    prov = rs.provenance()
    for rt in REFTYPES:
        f = rs.get(rt)
        assert f.path == (root / "references" / "jwst" / "niriss" / names[rt]).resolve()
        # the same bytes as the file --refs selects from the simulation's directory
        assert f.sha256 == RefSet.from_dir(sim_refs[rt].parent, attrs, required=REFTYPES).get(rt).sha256
        assert prov[rt]["uri"] == f"crds://{names[rt]}"
    assert rs.crds == {"context": context, "version": crds.__version__, "mode": "local",
                       "path": str(root.absolute())}


@pytest.mark.parametrize("change, chosen", [
    # the latest USEAFTER not after the observation wins
    ({"DATE-OBS": "2021-06-01"}, {rt: 2 for rt in REFTYPES}),
    ({"DATE-OBS": "2022-01-01", "TIME-OBS": "00:00:00"}, {rt: 1 for rt in REFTYPES}),
    # READPATT selects only the reftypes whose rules name it (spec 11 §1: NIRISS superbias,
    # dark, readnoise), SUBARRAY those of mask, superbias, linearity, dark, gain, readnoise
    # (not saturation, nor the FLAT: DETECTOR, FILTER, PUPIL)
    ({"READPATT": "OTHER"}, {**{rt: 1 for rt in REFTYPES}, "superbias": 4, "dark": 4, "readnoise": 4}),
    ({"SUBARRAY": "OTHER"}, {**{rt: 4 for rt in REFTYPES}, "saturation": 1, "flat": 1}),
])
def test_selection_follows_the_exposure_keywords(cache, attrs, change, chosen):
    _, _, n = cache()
    got = crds_io.recommendations(crds_io.open_cache(), {**attrs, **change}, REFTYPES)
    assert got == {rt: ("file", cache_name("NIRISS", rt, n + k, "fits")) for rt, k in chosen.items()}


# ---------------------------------------------------------------------- N/A


@pytest.mark.parametrize("where", ["imap", "rmap"])
def test_na_skips_the_step_with_the_reason(cache, small, attrs, sim_refs, where):
    from daskramp.pipeline import detector1

    refs = {rt: p for rt, p in sim_refs.items() if rt not in ("superbias", "dark")}
    if where == "imap":
        _, context, _ = cache(refs, na=("superbias", "dark"))
    else:  # the rules answer N/A for this exposure (a row's value, or a row's file)
        rmaps = {"superbias": Rmap(("DETECTOR",), {("NIS",): "N/A"}),
                 "dark": Rmap(("DETECTOR", "READPATT"), {("NIS", "ANY"): {USEAFTER: "N/A"}})}
        _, context, _ = cache(refs, rmaps=rmaps)
    rs = crds_io.reference_set(attrs)
    assert rs.get("superbias") is None and rs.get("dark") is None
    assert rs.reason("dark") == f"DARK: N/A in CRDS context {context}"
    steps = detector1(small[0][0], rs).provenance["steps"]
    assert steps["superbias"] == {"parameters": {"skip": False}, "status": "SKIPPED",
                                  "reason": f"SUPERBIAS: N/A in CRDS context {context}"}
    assert steps["dark_current"]["status"] == "SKIPPED"
    assert steps["dark_current"]["reason"] == f"DARK: N/A in CRDS context {context}"
    # saturation runs on without the bias, as officially
    assert steps["saturation"]["status"] == "COMPLETE"


def test_skipped_steps_references_are_not_asked_and_overrides_beat_crds(cache, attrs, sim_refs):
    _, context, _ = cache({rt: p for rt, p in sim_refs.items() if rt != "dark"})
    # no DARK rules at all: asking for it would be an error; a skipped step is not asked
    rs = crds_io.reference_set(attrs, {"dark_current": {"skip": True}})
    assert rs.get("dark") is None and "not asked of CRDS" in rs.reason("dark")
    rs = crds_io.reference_set(attrs, overrides={"dark": sim_refs["dark"], "gain": "N/A"},
                               steps={"gain_scale": {"skip": True}, "jump": {"skip": True},
                                      "ramp_fit": {"skip": True}})
    assert rs.get("dark").path == sim_refs["dark"]
    assert "uri" not in rs.provenance()["dark"] and rs.reason("gain") == "GAIN: override N/A"


def test_na_for_a_reference_jump_cannot_do_without_is_refused(cache, attrs, sim_refs):
    _, context, _ = cache({rt: p for rt, p in sim_refs.items() if rt != "gain"}, na=("gain",))
    with pytest.raises(CrdsError) as err:
        crds_io.reference_set(attrs)
    assert one_line(err) == (f"jump cannot run without GAIN (GAIN: N/A in CRDS context {context}); "
                             f"give one with --override-gain FILE")


# ---------------------------------------------------------------------- parameter files


def _prepare(files, out, **kw):
    from daskramp.run import prepare

    return prepare(files, out, crds=True, **kw)


def test_crds_parameter_files_under_the_users_configuration(cache, small, attrs, tmp_path):
    from daskramp.config import layered

    files = small[0]
    step = jump_pars(tmp_path / "served-jump.asdf", 6.0)
    _, context, n = cache(pars={"pars-jumpstep": step})
    prep = _prepare(files, tmp_path / "a")
    assert prep.params["jump"].rejection_threshold == 6.0
    (rec,) = prep.config_files
    assert rec["crds"] == f"crds://{cache_name('NIRISS', 'pars-jumpstep', n + 1, 'asdf')}"
    assert rec["kind"] == "step" and rec["values"] == {"jump": {"rejection_threshold": 6.0}}
    assert prep.fingerprint.settings["crds_context"] == context
    # the user's parameter file beats the served one; the command line beats both
    mine = jump_pars(tmp_path / "mine.asdf", 7.0)
    prep = _prepare(files, tmp_path / "b", config=layered(workflow=[mine]), workflow=[mine])
    assert prep.params["jump"].rejection_threshold == 7.0
    assert [r.get("crds") is not None for r in prep.config_files] == [True, False]
    cfg = layered(workflow=[mine], cli=["--steps.jump.rejection_threshold=8"])
    assert _prepare(files, tmp_path / "c", config=cfg).params["jump"].rejection_threshold == 8.0


def test_pipeline_file_chosen_by_tsovisit_beats_the_step_file(cache, attrs, tmp_path):
    step = jump_pars(tmp_path / "step.asdf", 6.0)
    pipe = pars_file(tmp_path / "pipe.asdf", "jwst.pipeline.Detector1Pipeline", {},
                     steps=[{"class": "jwst.jump.jump_step.JumpStep", "name": "jump",
                             "parameters": {"rejection_threshold": 5.0}}],
                     reftype="pars-detector1pipeline")
    _, _, n = cache(pars={"pars-jumpstep": step, "pars-detector1pipeline": pipe})
    cfg, records = crds_io.parameters(attrs)
    assert cfg["steps"]["jump"]["rejection_threshold"] == 5.0
    assert [r["kind"] for r in records] == ["step", "pipeline"]
    # the rules serve the pipeline file to TSO exposures only (TSOVISIT selects it)
    assert set(crds_io.parameter_files({**attrs, "TSOVISIT": False})) == {"pars-jumpstep"}
    assert set(crds_io.parameter_files(attrs)) == {"pars-jumpstep", "pars-detector1pipeline"}


def test_served_value_daskramp_lacks_is_refused_unless_the_user_gives_it(cache, small, tmp_path,
                                                                         no_crds_env):
    from daskramp.config import layered

    files = small[0]
    snow = pars_file(tmp_path / "snow.asdf", "jwst.jump.jump_step.JumpStep",
                     {"rejection_threshold": 6.0, "find_showers": True}, reftype="pars-jumpstep")
    _, _, n = cache(pars={"pars-jumpstep": snow})
    served = cache_name("NIRISS", "pars-jumpstep", n + 1, "asdf")
    with pytest.raises(ConfigError) as err:
        _prepare(files, tmp_path / "a")
    text = one_line(err)
    assert text.startswith(f"{tmp_path / 'crds' / 'references' / 'jwst' / 'niriss' / served}: "
                           f"steps.jump.find_showers: True is an official value")
    assert text.endswith("(a parameter file CRDS chose: give the value yourself, e.g. "
                         "--steps.<step>.<parameter>=…, or set STPIPE_DISABLE_CRDS_STEPPARS=true "
                         "to use none)")
    # the user's value wins, so the file's is never used: the file's other values still apply
    cfg = layered(cli=["--steps.jump.find_showers=false"])
    prep = _prepare(files, tmp_path / "b", config=cfg)
    assert prep.params["jump"].rejection_threshold == 6.0
    assert prep.config_files[0]["values"] == {"jump": {"rejection_threshold": 6.0}}
    # so is a skipped step's
    cfg = layered(cli=["--steps.jump.skip=true"])
    assert _prepare(files, tmp_path / "c", config=cfg).params["jump"].skip
    # switched off as stpipe switches them off ("TRUE" does not, spec 11 §4)
    no_crds_env.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "TRUE")
    with pytest.raises(ConfigError, match="find_showers"):
        _prepare(files, tmp_path / "d")
    no_crds_env.setenv("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    prep = _prepare(files, tmp_path / "e")
    assert prep.params["jump"].rejection_threshold == 4.0 and prep.config_files == []


# ---------------------------------------------------------------------- refusals


def test_missing_or_bad_crds_path_and_context(no_crds_env, tmp_path, cache):
    with pytest.raises(CrdsError) as err:
        crds_io.open_cache()
    assert one_line(err).startswith("--crds needs a CRDS cache: CRDS_PATH is not set")
    no_crds_env.setenv("CRDS_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(CrdsError) as err:
        crds_io.open_cache()
    assert one_line(err) == (f"CRDS_PATH={tmp_path / 'nowhere'}: no such directory (expected the "
                             f"CRDS cache that crds sync fills)")
    # a directory never synced: crds has no configuration and no server to ask
    (tmp_path / "empty").mkdir()
    no_crds_env.setenv("CRDS_PATH", str(tmp_path / "empty"))
    no_crds_env.setenv("CRDS_SERVER_URL", "https://127.0.0.1:9")
    with pytest.raises(CrdsError) as err:
        crds_io.open_cache()
    assert one_line(err).startswith(
        f"CRDS_PATH={tmp_path / 'empty'} is not a synced CRDS cache: "
        f"{tmp_path / 'empty' / 'config' / 'jwst' / 'server_config'} is missing")
    root, _, _ = cache()
    no_crds_env.setenv("CRDS_CONTEXT", "jwst_0001.pmap")
    with pytest.raises(CrdsError) as err:
        crds_io.open_cache()
    assert one_line(err).startswith(
        f"CRDS context jwst_0001.pmap is not in the cache: {root.absolute() / 'mappings' / 'jwst' / 'jwst_0001.pmap'} "
        f"not found")
    no_crds_env.setenv("CRDS_CONTEXT", "tomorrow")
    with pytest.raises(CrdsError, match=r"^CRDS_CONTEXT='tomorrow' is not a CRDS context"):
        crds_io.open_cache()


def test_incomplete_cache_names_what_is_missing(cache, attrs):
    root, context, n = cache()
    ref = root / "references" / "jwst" / "niriss" / cache_name("NIRISS", "dark", n + 1, "fits")
    ref.unlink()
    with pytest.raises(CrdsError) as err:
        crds_io.reference_set(attrs)
    assert one_line(err) == (
        f"CRDS context {context} chooses files that are not in the cache {root.absolute()}: "
        f"{ref.name} (DARK), expected in {ref.parent.absolute()}; fetch them with: crds sync --files {ref.name}")
    imap = root / "mappings" / "jwst" / f"jwst_niriss_{n}.imap"
    imap.unlink()
    with pytest.raises(CrdsError) as err:
        crds_io.reference_set(attrs)
    assert one_line(err).startswith(f"CRDS context {context} is not complete in the cache "
                                    f"{root.absolute()}: ")
    assert str(err.value).split(": ")[1].endswith(f"{imap.name} not found (fetch it with")


def test_no_rule_or_no_match_is_refused_as_officially(cache, attrs, sim_refs):
    _, context, _ = cache({rt: p for rt, p in sim_refs.items() if rt != "dark"})
    with pytest.raises(CrdsError) as err:
        crds_io.reference_set(attrs)
    assert one_line(err) == (
        f"CRDS context {context} selects no DARK reference for the exposure (INSTRUME='NIRISS', "
        f"DETECTOR='NIS', READPATT={attrs['READPATT']!r}, SUBARRAY={attrs['SUBARRAY']!r}, "
        f"DATE-OBS={attrs['DATE-OBS']!r}, TIME-OBS={attrs['TIME-OBS']!r}): Unknown reference type 'dark'")
    with pytest.raises(CrdsError, match=r"selects no MASK reference for the exposure \(INSTRUME='NIRISS', "
                                        r"DETECTOR='NIS', SUBARRAY=.*DATE-OBS='2020-01-01'.*\): No match found"):
        crds_io.reference_set({**attrs, "DATE-OBS": "2020-01-01"}, {"dark_current": {"skip": True}})
    with pytest.raises(CrdsError) as err:
        crds_io.reference_set({**attrs, "INSTRUME": "NIRCAM"})
    assert one_line(err).startswith(f"CRDS context {context} has no rules for the exposure: ")
    assert "nircam" in str(err.value).lower()


def test_crds_and_refs_exclude_each_other(small, tmp_path):
    from daskramp.run import prepare

    with pytest.raises(ConfigError) as err:
        prepare(small[0], tmp_path, refs=small[1], crds=True)
    assert one_line(err) == ("--crds and --refs exclude each other: the references come from the "
                             "CRDS cache or from a directory; give one")


def test_cli_refuses_in_one_line_before_any_cluster(small, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CRDS_VARS}
    # a scheduler that refuses: reaching the cluster would be another error
    env["DASKRAMP_SCHEDULER"] = "tcp://127.0.0.1:1"
    for extra, said in (([], "--crds needs a CRDS cache: CRDS_PATH is not set"),
                        (["--refs", str(small[1])], "--crds and --refs exclude each other")):
        p = subprocess.run([sys.executable, "-m", "daskramp.cli", "run", *map(str, small[0]),
                            "--out", str(tmp_path / "out"), "--crds", *extra],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert p.returncode == 2, p.stderr
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith(f"daskramp run: error: {said}")


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def _products(outdir: Path) -> dict[str, xr.Dataset]:
    (rate,) = outdir.glob("*_rate.zarr")
    (ints,) = outdir.glob("*_rateints.zarr")
    return {k: xr.open_zarr(p, consolidated=False).load() for k, p in (("rate", rate), ("rateints", ints))}


def test_run_crds_gives_the_products_of_run_refs(cache, small, client, tmp_path):
    """``daskramp run --crds`` (the command, on the test's cluster) with a cache serving the
    simulation's files and a pars-jumpstep equals ``daskramp run --refs`` with the same files
    and that parameter file; its FITS products name the context and the files."""
    from daskramp import cli
    from daskramp.io.products import PROVENANCE_ATTR
    from daskramp.run import run

    files, refs_dir = small
    step = jump_pars(tmp_path / "served-jump.asdf", 6.0)
    root, context, n = cache(pars={"pars-jumpstep": step})
    address = client.scheduler.address
    assert cli.main(["run", *map(str, files), "--out", str(tmp_path / "crds"), "--crds",
                     "--scheduler", address, "--no-progress"]) == 0
    run(files, tmp_path / "refs", refs=refs_dir, config=step, client=client, quiet=True)
    ours, theirs = _products(tmp_path / "crds"), _products(tmp_path / "refs")
    for kind in ("rate", "rateints"):
        for var in theirs[kind].data_vars:
            np.testing.assert_array_equal(ours[kind][var].values, theirs[kind][var].values,
                                          err_msg=f"{kind}.{var}")
    prov = json.loads(ours["rate"].attrs[PROVENANCE_ATTR])
    assert prov["crds"]["context"] == context
    assert prov["config_files"][0]["crds"].startswith("crds://jwst_niriss_pars-jumpstep_")
    assert prov["fingerprint"]["steps"]["jump"]["rejection_threshold"] == 6.0
    for kind in ("rate", "rateints"):
        (path,) = (tmp_path / "crds").glob(f"*_{kind}.fits")
        h = fits.getheader(path, 0)
        assert (h["CRDS_CTX"], h["CRDS_VER"]) == (context, crds.__version__)
        for rt, key in (("mask", "R_MASK"), ("saturation", "R_SATURA"), ("superbias", "R_SUPERB"),
                        ("linearity", "R_LINEAR"), ("dark", "R_DARK"), ("gain", "R_GAIN"),
                        ("readnoise", "R_READNO")):
            assert h[key] == f"crds://{cache_name('NIRISS', rt, n + 1, 'fits')}", key
        (other,) = (tmp_path / "refs").glob(f"*_{kind}.fits")
        assert "CRDS_CTX" not in fits.getheader(other, 0)


# ---------------------------------------------------------------------- official parity


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_JWST, reason="needs the official jwst pipeline (parity extra)")
def test_parity_official_pipeline_with_the_same_cache(cache, small, client, tmp_path):
    """jwst's Detector1Pipeline, with no override and CRDS parameter files on, run against the
    same cache (its references and its pars-jumpstep) gives the products of ``--crds``."""
    from daskramp.run import run
    from daskramp.testing.parity import compare_arrays, compare_dq

    files, _ = small
    step = jump_pars(tmp_path / "served-jump.asdf", 6.0)
    cache(pars={"pars-jumpstep": step})
    code = """
import sys
from astropy.utils import iers
iers.conf.auto_download = False
from jwst.pipeline import Detector1Pipeline
Detector1Pipeline.call(sys.argv[1], output_dir=sys.argv[2], save_results=True)
"""
    off = tmp_path / "official"
    off.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "STPIPE_DISABLE_CRDS_STEPPARS"}
    p = subprocess.run([sys.executable, "-c", code, str(files[0]), str(off)], capture_output=True,
                       text=True, cwd=ROOT, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "PARS-JUMPSTEP parameters found" in p.stderr + p.stdout
    run(files, tmp_path / "ours", crds=True, client=client, quiet=True)
    ours = _products(tmp_path / "ours")
    root = files[0].name.replace("_uncal.fits", "")
    for kind in ("rateints", "rate"):
        with fits.open(off / f"{root}_{kind}.fits") as h:
            theirs = {v: np.asarray(h[e].data) for v, e in (
                ("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                ("var_rnoise", "VAR_RNOISE"), ("dq", "DQ"))}
            head = h[0].header
            (mine,) = (tmp_path / "ours").glob(f"*_{kind}.fits")
            ours_head = fits.getheader(mine, 0)
            # the same context and the same files, named as the official products name them
            for key in ("CRDS_CTX", "CRDS_VER", "R_MASK", "R_SATURA", "R_SUPERB", "R_LINEAR",
                        "R_DARK", "R_GAIN", "R_READNO"):
                assert ours_head[key] == head[key], key
        for var in ("data", "err", "var_poisson", "var_rnoise"):
            r = compare_arrays(ours[kind][var].values, theirs[var])
            assert r["nan_pattern_identical"], (kind, var, r)
            assert r["fraction_close"] >= 0.999, (kind, var, r)
        d = compare_dq(ours[kind]["dq"].values, theirs["dq"])
        assert d["fraction_identical"] >= 0.999, (kind, d)


# ---------------------------------------------------------------------- darks


def test_darks_crds_gives_the_dark_of_darks_refs(no_crds_env, client, tmp_path, capsys):
    """``daskramp darks --crds`` takes the references of dq_init … jump from the cache and
    makes the DARK that ``--refs`` makes from the same files; with both options it is refused
    in one line, before any cluster."""
    from daskramp import cli
    from daskramp.darks import DARK_STEPS
    from daskramp.pipeline import validate_steps
    from daskramp.simulate import simulate

    sim = simulate(tmp_path / "sim", preset="nircam-dark", nints=4, segments=3, ngroups=5,
                   nx=32, ny=32, seed=3)
    attrs = dict(fits.getheader(sim.uncal_files[0], 0))
    rs = RefSet.from_dir(sim.refs_dir, attrs)
    wanted = {rt for s in steps.active() if not validate_steps(DARK_STEPS)[s.name].skip for rt in s.reftypes}
    served = {rt: rs.get(rt).path for rt in sorted(wanted) if rs.get(rt) is not None}
    assert {"gain", "readnoise"} <= set(served)
    context = f"jwst_{next(_numbers)}.pmap"
    for k, v in simulated_cache(tmp_path / "crds", served, attrs, context=context).items():
        no_crds_env.setenv(k, v)
    files = [str(p) for p in sim.uncal_files]
    common = ["--scheduler", client.scheduler.address, "--no-progress", "--tile-columns", "16"]
    assert cli.main(["darks", *files, "--out", str(tmp_path / "crds_dark.fits"), "--crds", *common]) == 0
    assert cli.main(["darks", *files, "--out", str(tmp_path / "refs_dark.fits"), "--refs",
                     str(sim.refs_dir), *common]) == 0
    with fits.open(tmp_path / "crds_dark.fits") as a, fits.open(tmp_path / "refs_dark.fits") as b:
        for ext in ("SCI", "ERR", "DQ"):
            np.testing.assert_array_equal(a[ext].data, b[ext].data, err_msg=ext)
    capsys.readouterr()
    assert cli.main(["darks", *files, "--out", str(tmp_path / "both.fits"), "--crds", "--refs",
                     str(sim.refs_dir), *common]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["daskramp darks: error: --crds and --refs exclude each other: the references come "
                   "from the CRDS cache or from the directory"]
    assert not (tmp_path / "both.fits").exists()
