"""persistence wrapper: parameters, statuses, time bookkeeping, chunkings and segments,
both pipeline layouts, and parity with jwst 3.0's PersistenceStep."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.config import ConfigError
from daskramp.dims import make_exposure
from daskramp.io import open_exposure
from daskramp.kernels import persistence as kernel
from daskramp.params import NotImplementedParameter
from daskramp.pipeline import detector1, step_params
from daskramp.simulate import simulate
from daskramp.steps import persistence as S
from daskramp.testing.ramps import chunk_sizes, forbid_compute, make_attrs

SAT, PERS, DNU = dq.SATURATED, dq.PERSISTENCE, dq.DO_NOT_USE
PRODUCT_VARS = ("data", "dq", "err", "var_poisson", "var_rnoise")
#: MJD of the exposure start used below, and its Unix time
MJD0 = 60000.25
UNIX0 = (MJD0 - 40587.0) * 86400.0


def exposure(gdq, *, segment=None, starts_mjd=None, data=None, **attrs):
    """A float32 exposure with the given groupdq; TGROUP 10 s, EFFINTTM 50 s."""
    nint, ngroup, ny, nx = gdq.shape
    kw = dict(NINTS=nint, NGROUPS=ngroup, SUBSIZE1=nx, SUBSIZE2=ny, TFRAME=10.0, EXPSTART=MJD0,
              EFFINTTM=50.0)
    kw.update(attrs)
    a = make_attrs(**{k: v for k, v in kw.items() if v is not None})
    values = np.zeros(gdq.shape, np.float32) if data is None else data
    times = None if starts_mjd is None else {"int_start_MJD_UTC": np.asarray(starts_mjd, float)}
    return make_exposure(values, a, groupdq=gdq, segment=segment, int_times=times)


def chunked(ds, **chunks):
    """Dask-backed data variables, numpy coordinates (as read from a store)."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        out[name] = var.chunk({d: c for d, c in chunks.items() if d in var.dims})
    return out


def pers(ds):
    return ((ds.groupdq.values & PERS) != 0).astype(int)


# ------------------------------------------------------------------ parameters and statuses


def test_official_parameters_and_defaults():
    p = S.Params()
    assert (p.save_persistence, p.persistence_time, p.dn_threshold, p.persistence_array_file,
            p.persistence_dnu, p.skip) == (None, None, None, None, False, True)
    assert step_params("persistence").skip is True
    assert step_params("persistence", {"persistence_time": "3600", "dn_threshold": "3e4"}).persistence_time == 3600


@pytest.mark.parametrize("name", ["persistence_array_file", "save_persistence"])
def test_options_daskramp_cannot_honour_are_refused(name):
    with pytest.raises(NotImplementedParameter) as err:
        step_params("persistence", {name: "persistence.asdf", "persistence_time": 100})
    assert str(err.value) == (f"steps.persistence.{name}: 'persistence.asdf' is an official value "
                              "that daskramp does not implement (implemented: None)")
    ds = exposure(np.zeros((1, 3, 1, 1), np.uint8))
    with pytest.raises(NotImplementedParameter, match=f"^steps.persistence.{name}: "):
        S.persistence(ds, persistence_time=100, **{name: "persistence.asdf"})
    with pytest.raises(ConfigError, match=r"^steps.persistence.persistence_time: 2.5 is not allowed"):
        step_params("persistence", {"persistence_time": 2.5})


def test_skipped_and_failed_change_nothing():
    gdq = np.zeros((2, 4, 1, 1), np.uint8)
    gdq[0, 1:] = SAT
    ds = exposure(gdq)
    assert S.persistence(ds, skip=True).attrs["S_PERSIS"] == "SKIPPED"
    # the official step reports FAILED without a persistence_time > 0, and flags nothing
    for t in (None, 0, -5):
        out = S.persistence(ds, persistence_time=t)
        assert out.attrs["S_PERSIS"] == "FAILED"
        np.testing.assert_array_equal(out.groupdq.values, gdq)
    out = S.persistence(ds, persistence_time=25)
    assert out.attrs["S_PERSIS"] == "COMPLETE"
    np.testing.assert_array_equal(out.pixeldq.values, ds.pixeldq.values)
    np.testing.assert_array_equal(out.data.values, ds.data.values)


# ------------------------------------------------------------------ times


def test_starts_from_int_times_else_expstart_plus_effinttm_per_segment():
    gdq = np.zeros((5, 3, 1, 1), np.uint8)
    mjd = MJD0 + np.array([0.0, 1.0, 2.0, np.nan, np.nan]) / 1000.0
    ds = exposure(gdq, segment=[1, 1, 2, 2, 2], starts_mjd=mjd)
    starts, reset = S.integration_starts(ds)
    np.testing.assert_array_equal(reset, [True, False, True, False, False])
    np.testing.assert_array_equal(starts[:3], (mjd[:3] - 40587.0) * 86400.0)
    # without INT_TIMES rows: EXPSTART + k·EFFINTTM, k counted from the segment's start (the
    # official step counts from the start of the file it processes)
    np.testing.assert_array_equal(starts[3:], [UNIX0 + 1 * 50.0, UNIX0 + 2 * 50.0])
    starts, reset = S.integration_starts(ds, stats_scope="exposure")
    np.testing.assert_array_equal(reset, [True, False, False, False, False])
    np.testing.assert_array_equal(starts[3:], [UNIX0 + 3 * 50.0, UNIX0 + 4 * 50.0])
    with pytest.raises(ValueError, match="no EXPSTART"):
        S.integration_starts(exposure(gdq, EXPSTART=None))
    with pytest.raises(ValueError, match="no EFFINTTM"):
        S.integration_starts(exposure(gdq, EFFINTTM=None))
    assert S.integration_starts(exposure(gdq[:1], EFFINTTM=None))[0][0] == UNIX0


def test_windows_stop_at_a_segment_boundary_unless_the_exposure_is_pooled():
    # one pixel saturating at the last group of every integration: the window (25 s from
    # group 4, read 50 s after the start, to 75 s) reaches into the next integration
    # (EFFINTTM 50 s: its groups are read 60, 70, 80, … s after the previous start)
    gdq = np.zeros((4, 5, 1, 1), np.uint8)
    gdq[:, 4] = SAT
    ds = exposure(gdq, segment=[1, 1, 2, 2])
    seg = pers(S.persistence(ds, persistence_time=25))[:, :, 0, 0]
    np.testing.assert_array_equal(seg, [[0, 0, 0, 0, 1], [1, 1, 0, 0, 1], [0, 0, 0, 0, 1], [1, 1, 0, 0, 1]])
    expo = pers(S.persistence(ds, persistence_time=25, stats_scope="exposure"))[:, :, 0, 0]
    np.testing.assert_array_equal(expo, [[0, 0, 0, 0, 1], [1, 1, 0, 0, 1], [1, 1, 0, 0, 1], [1, 1, 0, 0, 1]])


# ------------------------------------------------------------------ laziness and chunkings


def _random_exposure(seed, nint=6, ngroup=5, ny=5, nx=6):
    rng = np.random.default_rng(seed)
    gdq = np.zeros((nint, ngroup, ny, nx), np.uint8)
    onset = rng.integers(0, ngroup + 3, (nint, ny, nx))
    gdq[np.arange(ngroup)[None, :, None, None] >= onset[:, None]] |= SAT
    data = rng.normal(1000, 300, gdq.shape).astype(np.float32)
    mjd = MJD0 + np.cumsum(rng.uniform(40, 60, nint)) / 86400.0
    return exposure(gdq, data=data, segment=[1] * (nint // 2) + [2] * (nint - nint // 2), starts_mjd=mjd)


def test_wrapper_is_lazy_and_pools_whole_segments():
    ds = chunked(_random_exposure(1), integration=1, y=2)
    with forbid_compute():
        out = S.persistence(ds, persistence_time=30, dn_threshold=1200.0)
    assert isinstance(out.groupdq.data, da.Array)
    assert out.groupdq.data.chunks[0] == (3, 3)  # one block per segment
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(out.groupdq.values,
                                      S.persistence(_random_exposure(1), persistence_time=30,
                                                    dn_threshold=1200.0).groupdq.values)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), data=st.data())
def test_any_chunking_equals_the_numpy_result(seed, data):
    ds = _random_exposure(seed)
    kw = dict(persistence_time=int(data.draw(st.sampled_from([15, 40, 120]))),
              dn_threshold=data.draw(st.sampled_from([None, 1300.0])),
              persistence_dnu=data.draw(st.booleans()),
              stats_scope=data.draw(st.sampled_from(["segment", "exposure"])))
    whole = S.persistence(ds, **kw)
    assert (whole.groupdq.values & PERS).any()
    chunks = {"integration": data.draw(chunk_sizes(ds.sizes["integration"])), "group": -1,
              "y": data.draw(chunk_sizes(ds.sizes["y"])), "x": data.draw(chunk_sizes(ds.sizes["x"]))}
    with dask.config.set(scheduler="synchronous"):
        part = S.persistence(chunked(ds, **chunks), **kw).compute()
    np.testing.assert_array_equal(part.groupdq.values, whole.groupdq.values)


def test_numpy_result_is_the_kernel_run_segment_by_segment():
    ds = _random_exposure(3)
    out = S.persistence(ds, persistence_time=40).groupdq.values
    starts, _ = S.integration_starts(ds)
    for a, b in ((0, 3), (3, 6)):
        expect, _ = kernel.flag_persistence(ds.data.values[a:b], ds.groupdq.values[a:b], starts[a:b],
                                            group_time=10.0, persistence_time=40)
        np.testing.assert_array_equal(out[a:b], expect)


# ------------------------------------------------------------------ through detector1


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """2 segments × 3 integrations × 5 groups × 256 × 32 (SOSS-like) with a bright trace:
    about 800 pixels saturate in every integration, from group 1 on."""
    return simulate(tmp_path_factory.mktemp("persistence"), preset="niriss-soss", nints=3, segments=2,
                    ngroups=5, nx=32, seed=3, peak_rate=4000.0)


def _products(res):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dask.compute(res.rateints, res.rate)


#: windows of 12 s (about two groups) and of 20 s from saturation or 20000 DN, DO_NOT_USE too
CASES = {"segment": {"persistence_time": 12},
         "exposure": {"persistence_time": 20, "dn_threshold": 20000.0, "persistence_dnu": True}}


@pytest.mark.parametrize("stats_scope", list(CASES))
def test_fused_and_step_by_step_give_the_same_products(sim, stats_scope):
    ds = open_exposure(sim.uncal_files)
    steps = {"persistence": {"skip": False, **CASES[stats_scope]}}
    fused = detector1(ds, sim.refs_dir, steps=steps, stats_scope=stats_scope, tile_columns=8)
    assert fused.provenance["layout"]["fused"]
    stepwise = detector1(ds, sim.refs_dir, steps=steps, stats_scope=stats_scope, fused=False)
    off = detector1(ds, sim.refs_dir, stats_scope=stats_scope, tile_columns=8)
    (ri, r), (ri0, r0), (ri_off, _) = _products(fused), _products(stepwise), _products(off)
    for a, b in ((ri, ri0), (r, r0)):
        for var in PRODUCT_VARS:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
        assert a.attrs["S_PERSIS"] == b.attrs["S_PERSIS"] == "COMPLETE"
    assert fused.provenance["steps"]["persistence"]["status"] == "COMPLETE"
    assert ri_off.attrs["S_PERSIS"] == "SKIPPED"
    # the step did something: PERSISTENCE in the products, absent when it is skipped
    flagged = (ri["dq"].values & PERS) != 0
    assert flagged.sum() > 500 and not (ri_off["dq"].values & PERS).any()
    if CASES[stats_scope].get("persistence_dnu"):
        # flagged groups are not fitted: the slopes change
        assert not np.array_equal(ri["data"].values, ri_off["data"].values, equal_nan=True)
    else:
        # ramp_fit ignores PERSISTENCE: only the DQ changes
        np.testing.assert_array_equal(ri["data"].values, ri_off["data"].values)


def test_saved_ramp_is_the_kernel_on_the_jump_ramp(sim):
    ds = open_exposure(sim.uncal_files)
    res = detector1(ds, sim.refs_dir, steps={"persistence": {"skip": False, "persistence_time": 12}},
                    save_steps=["jump", "persistence"])
    with dask.config.set(scheduler="threads", num_workers=2):
        j, p = dask.compute(res.intermediates["jump"], res.intermediates["persistence"])
    starts = S.mjd_to_unix(ds["int_start_MJD_UTC"].values)
    for a, b in ((0, 3), (3, 6)):  # each segment from closed windows
        expect, _ = kernel.flag_persistence(j.data.values[a:b], j.groupdq.values[a:b], starts[a:b],
                                            group_time=float(ds.attrs["TGROUP"]), persistence_time=12)
        np.testing.assert_array_equal(p.groupdq.values[a:b], expect)
    # the second segment starts closed although the first one ends with open windows
    assert (p.groupdq.values[2, -1] & PERS).any() and not (p.groupdq.values[3, 0] & PERS).any()


# ------------------------------------------------------------------ the official step


@pytest.mark.parity
@pytest.mark.parametrize("int_times", [True, False], ids=["int_times", "expstart"])
def test_parity_with_the_official_step(sim, tmp_path, int_times):
    """jwst 3.0's PersistenceStep on each uncal segment (opened as a RampModel, the ramp
    replaced by daskramp's after-jump ramp) against daskramp's persistence on the stitched
    exposure: bit-identical group DQ."""
    import importlib.util

    if importlib.util.find_spec("jwst") is None:
        pytest.skip("jwst is not installed")
    from daskramp.testing.official import configure_offline

    configure_offline(tmp_path / "crds")  # no network; the step reads no reference file
    from jwst.persistence import PersistenceStep
    from stdatamodels.jwst import datamodels

    ds = open_exposure(sim.uncal_files)
    if not int_times:
        ds = ds.drop_vars("int_start_MJD_UTC")
    for cfg in CASES.values():
        res = detector1(ds, sim.refs_dir, steps={"persistence": {"skip": False, **cfg}},
                        save_steps=["jump", "persistence"])
        with dask.config.set(scheduler="threads", num_workers=2):
            j, ours = dask.compute(res.intermediates["jump"], res.intermediates["persistence"])
        theirs = []
        for k, path in enumerate(sim.uncal_files):
            part = slice(3 * k, 3 * k + 3)
            model = datamodels.RampModel(str(Path(path)))
            model.data = j.data.values[part].copy()
            model.groupdq = j.groupdq.values[part].copy()
            model.pixeldq = j.pixeldq.values.copy()
            if not int_times:
                model.int_times = None
            out = PersistenceStep.call(model, skip=False, **cfg)
            assert out.meta.cal_step.persistence == "COMPLETE"
            theirs.append(out.groupdq)
        theirs = np.concatenate(theirs)
        assert (theirs & PERS).sum() > 1000
        np.testing.assert_array_equal(ours.groupdq.values, theirs)
        assert ours.attrs["S_PERSIS"] == "COMPLETE"


@pytest.mark.parity
@pytest.mark.slow
def test_parity_of_the_products_with_the_official_pipeline(sim, tmp_path):
    """Detector1Pipeline with persistence on (each segment in its own run, offline) against
    daskramp's fused products: rateints bit-identical, DQ included."""
    import importlib.util
    import json
    import subprocess
    import sys

    from astropy.io import fits

    if importlib.util.find_spec("jwst") is None:
        pytest.skip("jwst is not installed")
    cfg = CASES["exposure"]  # DO_NOT_USE on the flagged groups: the slopes change too
    argv = [[str(u), "--refs", str(sim.refs_dir), "--out", str(tmp_path / f"official-{k}"),
             "--steps-json", json.dumps({"persistence": {"skip": False, **cfg}})]
            for k, u in enumerate(sim.uncal_files)]
    code = ("import sys, json\nfrom daskramp.testing.official import main\n"
            "for a in json.loads(sys.argv[1]):\n    main(a)\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    theirs = {}
    for rep in reports:
        with fits.open(rep["rateints"]) as h:
            assert h[0].header["S_PERSIS"] == "COMPLETE"
            for var, ext in (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                             ("var_rnoise", "VAR_RNOISE"), ("dq", "DQ")):
                theirs.setdefault(var, []).append(np.asarray(h[ext].data))
    res = detector1(open_exposure(sim.uncal_files), sim.refs_dir,
                    steps={"persistence": {"skip": False, **cfg}}, tile_columns=8)
    ri, _ = _products(res)
    for var, parts in theirs.items():
        np.testing.assert_array_equal(ri[var].values, np.concatenate(parts).astype(ri[var].dtype), err_msg=var)
    assert (ri["dq"].values & PERS).sum() > 1000


def test_failed_without_persistence_time_in_both_layouts(sim):
    ds = open_exposure(sim.uncal_files)
    steps = {"persistence": {"skip": False}}
    for fused in (None, False):
        res = detector1(ds, sim.refs_dir, steps=steps, fused=fused, tile_columns=16)
        assert res.provenance["steps"]["persistence"]["status"] == "FAILED"
        ri, r = _products(res)
        assert ri.attrs["S_PERSIS"] == r.attrs["S_PERSIS"] == "FAILED"
        assert not (ri["dq"].values & PERS).any()
