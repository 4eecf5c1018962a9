"""clean_flicker_noise options: whole-image corrections (``fit_method='fft'``,
``background_method='model'``) and ``fit_histogram``: refusals, laziness, the pipeline layout,
and parity with the official CleanFlickerNoiseStep on simulated NIRSpec BOTS and NIRISS SOSS
ramps."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import dask
import numpy as np
import pytest

from daskramp.errors import ConfigError
from daskramp.steps.clean_flicker_noise import clean_flicker_noise, whole_image
from daskramp.testing.ramps import forbid_compute, make_ramp

_HAS_JWST = importlib.util.find_spec("jwst") is not None

#: option sets checked against the official step, per simulated mode
OPTIONS = {
    "nirspec-bots": [
        {"fit_method": "fft", "save_background": True},
        {"fit_method": "fft", "background_method": None},
        {"fit_method": "fft", "background_method": "model", "n_sigma": 1.5},
        {"fit_method": "fft", "single_mask": False},
        {"fit_method": "fft", "fit_histogram": True},
        # no FLAT for NIRSpec spectroscopy, no automatic parameters for NRS_BRIGHTOBJ: both
        # steps warn and fit as without them
        {"fit_method": "fft", "apply_flat_field": True, "autoparam": True},
    ],
    "niriss-soss": [
        {"background_method": "model", "save_background": True},
        {"background_method": "model", "background_box_size": [8, 16]},
        {"background_method": "model", "single_mask": False, "fit_by_channel": True},
        {"fit_histogram": True, "save_background": True},
        {"fit_histogram": True, "single_mask": False, "n_sigma": 1.0},
        {"autoparam": True},
        # the FLAT divides the draft rate and every difference (its zeros and NaN replaced)
        {"apply_flat_field": True, "save_background": True},
        {"apply_flat_field": True, "background_method": "model", "single_mask": False},
    ],
    "nircam-grism-tso": [
        {},
        # nothing more to mask on NRC_TSGRISM; no automatic parameters; channels are for
        # full frames only, even with four outputs
        {"mask_science_regions": True, "autoparam": True, "fit_by_channel": True, "save_background": True},
        {"apply_flat_field": True, "n_sigma": 1.5},
    ],
}
SIM = {
    "nirspec-bots": dict(nints=2, ngroups=5, nx=256, seed=5, one_over_f_amplitude=4.0),
    "niriss-soss": dict(nints=3, ngroups=6, nx=64, seed=5, one_over_f_amplitude=4.0),
    "nircam-grism-tso": dict(nints=2, ngroups=4, nx=512, seed=5, one_over_f_amplitude=4.0),
}

_OFFICIAL = r"""
import glob, json, os, sys
import numpy as np
from astropy.io import fits
from daskramp.testing.official import write_crds_cache
uncal, ramp_file, refs, crds, options, out = sys.argv[1:]
refs, options = json.loads(refs), json.loads(options)
write_crds_cache(crds, refs, dict(fits.getheader(uncal)))
from jwst.clean_flicker_noise import CleanFlickerNoiseStep
from stdatamodels.jwst import datamodels
ramp = np.load(ramp_file)
results = {}
for k, opts in enumerate(options):
    with datamodels.RampModel(uncal) as model:
        for name in ("data", "groupdq", "pixeldq", "average_dark_current"):
            setattr(model, name, ramp[name])
        model.err = np.zeros(model.data.shape, np.float32)
        saved = os.path.join(os.path.dirname(out), f"saved{k}")
        flat = refs["flat"] if opts.get("apply_flat_field") and "flat" in refs else "N/A"
        res = CleanFlickerNoiseStep.call(model, skip=False, override_flat=flat, override_pastasoss="N/A",
                                         output_dir=saved, **opts)
        results[f"data{k}"] = np.asarray(res.data)
        results[f"status{k}"] = np.array(res.meta.cal_step.clean_flicker_noise)
        for path in glob.glob(os.path.join(saved, "*flicker_bkg*")):
            results[f"background{k}"] = fits.getdata(path, "SCI")
np.savez(out, **results)
"""


def _jump_ramp(tmp_path, preset):
    from daskramp.io import open_exposure
    from daskramp.io.refs import RefSet
    from daskramp.pipeline import detector1
    from daskramp.simulate import simulate

    sim = simulate(tmp_path / "sim", preset=preset, **SIM[preset])
    res = detector1(open_exposure(sim.uncal_files[0]), sim.refs_dir, save_steps=["jump"])
    with dask.config.set(scheduler="synchronous"):
        ramp = res.intermediates["jump"].compute()
    from daskramp.io.refs import REFTYPES

    refs = RefSet.from_dir(sim.refs_dir, ramp.attrs, required=REFTYPES)
    gain, rn = (np.asarray(refs.get(rt).arrays["SCI"]) for rt in ("gain", "readnoise"))
    # the FLAT as the pipeline gives it to the step (cut, its bad values replaced); none for NIRSpec
    flat = None if refs.get("flat") is None else refs.get("flat").arrays["SCI"]
    return sim, ramp, gain, rn, flat


@pytest.fixture(scope="module", params=sorted(OPTIONS))
def official(request, tmp_path_factory):
    """daskramp's jump output of a small simulated exposure, and the official step's result
    for every option set of :data:`OPTIONS` on it (one subprocess: its own CRDS cache)."""
    if not _HAS_JWST:
        pytest.skip("jwst is not installed")
    preset = request.param
    tmp = tmp_path_factory.mktemp(preset)
    sim, ramp, gain, rn, flat = _jump_ramp(tmp, preset)
    np.savez(tmp / "ramp.npz", **{v: ramp[v].values for v in ("data", "groupdq", "pixeldq", "average_dark_current")})
    refs = {rt: str(f) for rt, f in sim.refs.items()}
    proc = subprocess.run([sys.executable, "-c", _OFFICIAL, str(sim.uncal_files[0]), str(tmp / "ramp.npz"),
                           json.dumps(refs), str(tmp / "crds"), json.dumps(OPTIONS[preset]), str(tmp / "out.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return preset, ramp, gain, rn, flat, dict(np.load(tmp / "out.npz"))


@pytest.mark.parity
def test_parity_with_the_official_step(official):
    """Each option set: the cleaned ramp is the official one bit for bit (NaN included)."""
    preset, ramp, gain, rn, flat, theirs = official
    before = ramp["data"].values
    for k, opts in enumerate(OPTIONS[preset]):
        assert str(theirs[f"status{k}"]) == "COMPLETE", opts
        out = clean_flicker_noise(ramp, gain=gain, readnoise=rn, flat=flat, **opts)
        ours, ref = out["data"].values, theirs[f"data{k}"]
        if opts.get("save_background"):
            bkg, their_bkg = out["flicker_background"].values, theirs[f"background{k}"]
            assert np.abs(their_bkg).max() > 0.1, opts
            assert np.array_equal(bkg, their_bkg, equal_nan=True), (opts, np.nanmax(np.abs(bkg - their_bkg)))
        # the comparison is not vacuous: the 1/f noise moved the ramp by ~DN
        assert np.nanmedian(np.abs(ref - before)) > 0.5, opts
        same = (ours == ref) | (np.isnan(ours) & np.isnan(ref))
        assert same.all(), (opts, same.mean(), np.nanmax(np.abs(ours.astype(np.float64) - ref)))
        if opts.get("apply_flat_field") and flat is not None:
            # the flat changed the result (the same options without it differ)
            plain = clean_flicker_noise(ramp, gain=gain, readnoise=rn, **{**opts, "apply_flat_field": False})
            assert not np.array_equal(plain["data"].values, ours, equal_nan=True), opts


def _nirspec(nint=2, ngroup=4, ny=16, nx=96, seed=3, **attrs):
    ds = make_ramp(nint, ngroup, ny, nx, rate=1.0, read_noise=2.0, seed=seed, SLOWAXIS=1, FASTAXIS=2,
                   INSTRUME="NIRSPEC", DETECTOR="NRS1", EXP_TYPE="NRS_BRIGHTOBJ", SUBARRAY="SUB2048")
    rng = np.random.default_rng(seed)
    # per-difference noise varying slowly in read order (along y, then x)
    ticks = np.arange(nx)[None, :] * (ny + 12) + np.arange(ny)[:, None]
    wave = np.sin(2 * np.pi * 200.0 * 1e-5 * ticks)
    ds["data"].values[:] += np.cumsum(rng.normal(0, 3.0, (nint, ngroup, 1, 1)) * wave, axis=1).astype(np.float32)
    return ds.assign_attrs(**attrs)


def test_fft_removes_read_order_noise():
    ds = _nirspec()
    white = make_ramp(2, 4, 16, 96, rate=1.0, read_noise=2.0, seed=3)["data"].values  # without it
    out = clean_flicker_noise(ds, fit_method="fft")["data"].values
    injected = np.diff(ds["data"].values - white, axis=1).std()
    left = np.diff(out - white, axis=1).std()
    assert injected > 2.0
    assert left < 0.3 * injected
    np.testing.assert_array_equal(out[:, 0], ds["data"].values[:, 0])  # group 0 is unchanged


@pytest.mark.parametrize("opts", [{"fit_method": "fft"}, {"background_method": "model"},
                                  {"fit_method": "fft", "background_method": "model", "single_mask": False}])
def test_lazy_equals_eager_and_builds_nothing(opts):
    ds = _nirspec(nint=3, ny=32, nx=64)
    eager = clean_flicker_noise(ds, save_noise=True, save_background=True, **opts)
    for chunks in ({"integration": 1}, {"integration": 2, "x": 16}):
        with forbid_compute():
            lazy = clean_flicker_noise(ds.chunk(chunks), save_noise=True, save_background=True,
                                       frame_integrations=2, **opts)
        assert lazy["data"].chunks[2:] == ((32,), (64,))  # whole frames
        with dask.config.set(scheduler="synchronous"):
            for v in ("data", "flicker_noise", "flicker_background"):
                np.testing.assert_array_equal(lazy[v].values, eager[v].values)
    assert eager["flicker_background"].dims == ("integration", "group", "y", "x")
    assert np.all(eager["flicker_background"].values[:, 0] == 0)
    noise = eager["flicker_noise"].values
    np.testing.assert_allclose(noise, eager["data"].values - ds["data"].values)
    assert np.abs(noise).max() > 0.1


def test_fft_is_refused_where_the_official_step_skips_itself():
    ds = _nirspec(EXP_TYPE="NIS_SOSS")
    with pytest.raises(ConfigError, match=r"fit_method='fft' applies to EXP_TYPE .*NRS_BRIGHTOBJ; this "
                                          r"exposure is NIS_SOSS"):
        clean_flicker_noise(ds, fit_method="fft")
    full = make_ramp(1, 2, 2048, 2048, rate=1.0, EXP_TYPE="NRS_FIXEDSLIT", DETECTOR="NRS1", SLOWAXIS=1,
                     FASTAXIS=2)
    with pytest.raises(ConfigError, match="full-frame"):
        clean_flicker_noise(full, fit_method="fft")


def _exposure(instrument, exp_type, **attrs):
    slow = 2 if instrument == "NIRCAM" else 1
    return make_ramp(2, 4, 16, 64, rate=1.0, read_noise=2.0, seed=3, INSTRUME=instrument, EXP_TYPE=exp_type,
                     SLOWAXIS=slow, FASTAXIS=3 - slow, **attrs)


@pytest.mark.parametrize("instrument, exp_type, opts", [
    ("NIRCAM", "NRC_TSGRISM", {"autoparam": True}),
    ("NIRCAM", "NRC_TSIMAGE", {"mask_science_regions": True}),
    ("NIRISS", "NIS_SOSS", {"autoparam": True}),
    ("NIRSPEC", "NRS_BRIGHTOBJ", {"apply_flat_field": True}),
    ("NIRSPEC", "NRS_BRIGHTOBJ", {"apply_flat_field": True, "autoparam": True}),
])
def test_options_without_effect_on_the_exposure_warn_and_change_nothing(instrument, exp_type, opts):
    from daskramp.steps.clean_flicker_noise import OfficialNoEffectWarning

    ds = _exposure(instrument, exp_type)
    plain = clean_flicker_noise(ds)
    with pytest.warns(OfficialNoEffectWarning, match=f"EXP_TYPE {exp_type}") as got:
        out = clean_flicker_noise(ds, **opts)
    assert len(got) == len(opts)
    np.testing.assert_array_equal(out["data"].values, plain["data"].values)
    # not vacuous: the step changed the ramp
    assert not np.array_equal(plain["data"].values, ds["data"].values)


@pytest.mark.parametrize("instrument, exp_type, opts, message", [
    ("NIRISS", "NIS_IMAGE", {"autoparam": True}, "autoparam=True on NIS_IMAGE .* not implemented"),
    ("NIRCAM", "NRC_IMAGE", {"autoparam": True}, "autoparam=True on NRC_IMAGE"),
    ("NIRISS", "NIS_SOSS", {"mask_science_regions": True}, "masks the SOSS traces of the PASTASOSS"),
    ("NIRSPEC", "NRS_BRIGHTOBJ", {"mask_science_regions": True}, "masks the slits of the NIRSpec WCS"),
    ("MIRI", "MIR_IMAGE", {"mask_science_regions": True}, "MIRI FLAT's DQ"),
])
def test_options_that_would_act_on_the_exposure_are_refused(instrument, exp_type, opts, message):
    from daskramp.engine.stages import check_exposures, validate_steps

    ds = _exposure(instrument, exp_type)
    with pytest.raises(ConfigError, match=message):
        clean_flicker_noise(ds, **opts)
    # the pipeline's check, before any graph is built
    params = validate_steps({"clean_flicker_noise": {"skip": False, **opts}})
    with pytest.raises(ConfigError, match=message):
        check_exposures(params, ds)


def test_whole_image_options_run_fused_unless_they_save_cubes():
    # the whole-image corrections go through the fused layout's checkpoint (their frame pass
    # rewrites the ramp); the saved mask, noise and background cubes still run step by step
    from daskramp import steps as registry
    from daskramp.engine import checkpoint, policy
    from daskramp.engine.stages import step_params

    ds = _nirspec().chunk({"integration": 1})
    for opts, fused, rewrite in (({}, True, False), ({"fit_method": "fft"}, True, True),
                                 ({"background_method": "model"}, True, True),
                                 ({"fit_method": "fft", "save_background": True}, False, True)):
        params = {s.name: step_params(s.name) for s in registry.active()}
        params["clean_flicker_noise"] = step_params("clean_flicker_noise", {"skip": False, **opts})
        assert whole_image(params["clean_flicker_noise"]) is rewrite
        assert checkpoint.rewrites("clean_flicker_noise", params) is rewrite
        why = policy.unsupported(ds, params)
        assert (why is None) is fused, why


def test_a_cluster_too_small_for_the_held_segment_is_refused():
    """Step by step, a whole-image correction's output of a segment is held until ramp_fit's
    tiles (every integration) can start: a cluster whose memory cannot hold it is refused
    before it starts, naming the step and the size."""
    from daskramp import steps as registry
    from daskramp.engine.plan import MemoryBudgetError, check_held
    from daskramp.engine.stages import step_params

    ds = _nirspec(nint=3, ny=32, nx=64)  # held: 5 B × 3 × 4 × 32 × 64 = 122,880 B
    params = {s.name: step_params(s.name) for s in registry.active()}
    params["clean_flicker_noise"] = step_params("clean_flicker_noise", {"skip": False, "fit_method": "fft"})
    with pytest.raises(MemoryBudgetError, match=r"^step clean_flicker_noise: .*holds a segment's ramp "
                                                r"\(.*, 3 integrations\).*--memory-limit"):
        check_held(ds, params, memory_limit=100_000, workers=2)  # 60 % of 200 kB < 122,880 B
    check_held(ds, params, memory_limit=110_000, workers=2)  # 132 kB: fits
    # the default fit runs fused and holds nothing
    params["clean_flicker_noise"] = step_params("clean_flicker_noise", {"skip": False})
    check_held(ds, params, memory_limit=1, workers=1)


def test_daskramp_run_with_fft_end_to_end(tmp_path):
    """``daskramp run`` on a small simulated BOTS segment with the fft fit: the products (Zarr
    and FITS) are those of the in-process step-by-step pipeline, the status COMPLETE and the
    parameter in the provenance; the same run on a SOSS exposure is refused before any
    product is written."""
    import xarray as xr
    from astropy.io import fits
    from distributed import Client

    from daskramp.io import open_exposure
    from daskramp.io.products import PROVENANCE_ATTR
    from daskramp.pipeline import detector1
    from daskramp.run import run
    from daskramp.simulate import simulate

    sim = simulate(tmp_path / "sim", preset="nirspec-bots", nints=3, ngroups=5, nx=256, seed=2,
                   one_over_f_amplitude=4.0)
    steps = {"clean_flicker_noise": {"skip": False, "fit_method": "fft"}}
    out = tmp_path / "out"
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        run(sim.uncal_files, out, refs=sim.refs_dir, client=client, quiet=True, config={"steps": steps})
    (store,) = out.glob("*_rateints.zarr")
    with xr.open_zarr(store) as got:
        assert got.attrs["S_CLNFNS"] == "COMPLETE"
        prov = json.loads(got.attrs[PROVENANCE_ATTR])
        record = prov["steps"]["clean_flicker_noise"]
        assert record["parameters"]["fit_method"] == "fft"
        # fused: the frame pass wrote the cleaned ramp into a checkpoint, since removed
        assert prov["layout"]["checkpoint"]["before"] == "clean_flicker_noise"
        assert not list(out.glob(".*checkpoints*"))
        with dask.config.set(scheduler="synchronous"):
            ours = detector1(open_exposure(sim.uncal_files), sim.refs_dir, steps=steps).rateints.compute()
            plain = detector1(open_exposure(sim.uncal_files), sim.refs_dir).rateints.compute()
        np.testing.assert_array_equal(got["data"].values, ours["data"].values)
        assert not np.array_equal(ours["data"].values, plain["data"].values, equal_nan=True)
    (exported,) = out.glob("*_rateints.fits")
    with fits.open(exported) as h:
        assert h[0].header["S_CLNFNS"] == "COMPLETE"
        np.testing.assert_array_equal(h["SCI"].data, ours["data"].values)
    soss = simulate(tmp_path / "soss", preset="niriss-soss", nints=2, ngroups=4, nx=64, seed=1)
    with pytest.raises(ConfigError, match="fit_method='fft' applies to EXP_TYPE"):
        run(soss.uncal_files, tmp_path / "refused", refs=soss.refs_dir, quiet=True, config={"steps": steps})
    # the in-process pipeline refuses it while building the graph (either layout)
    for fused in (True, False):
        with pytest.raises(ConfigError, match="fit_method='fft' applies to EXP_TYPE"):
            detector1(open_exposure(soss.uncal_files), soss.refs_dir, steps=steps, fused=fused)
    assert not list((tmp_path / "refused").glob("*"))
