"""DARK reference files from dark exposures (daskramp.darks): hand cases, engines, chunking,
recovery of the simulated dark current, re-use as the DARK of a new exposure, file layout."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.config import ConfigError
from daskramp.darks import (
    dark_statistics,
    figures,
    group_inputs,
    jump_counts,
    make_dark,
    strip_mask_do_not_use,
)
from daskramp.engine.plan import DARK_TILE_FACTOR, plan_dark_tiles
from daskramp.io import open_exposure
from daskramp.io.refs import RefSet, load_reffile
from daskramp.pipeline import detector1
from daskramp.simulate import load_truth, simulate
from daskramp.steps._apply import map_ramp_blocks

NINTS, NSEG, NGROUPS, NPIX = 4, 7, 8, 64
TFRAME = 10.737  # nircam-dark preset (RAPID: TGROUP = TFRAME)


# --------------------------------------------------------------------------- hand cases


def test_cosmic_ray_excludes_its_group_and_every_later_one():
    # one pixel, 3 integrations, 5 groups, dark signal 2 DN per group on top of an
    # integration-specific level (10, 15, 7 DN) that the differences to group 0 cancel
    g = np.arange(5, dtype=np.float32)
    data = np.stack([10 + 2 * g, 15 + 2 * g, 7 + 2 * g])[:, :, None, None].astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    # integration 1: a 500 DN hit in group 3, flagged by jump there only
    data[1, 3:] += 500
    gdq[1, 3] = dq.JUMP_DET
    out = dark_statistics(data, gdq)
    mean, std, n, njump = out[:, :, 0, 0]
    # differences 0, 2, 4, 6, 8 DN; integration 1 only counts in groups 0–2
    np.testing.assert_allclose(mean, [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(n, [3, 3, 3, 2, 2])
    np.testing.assert_array_equal(njump, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(std, [0, 0, 0, 0, 0])
    # without the flag, 3 samples [6, 506, 6] cannot be clipped at 3σ (σ = 235.7 about the
    # median 6): the mean would be 172.67 DN — the exclusion is what removes the hit
    out_noflag = dark_statistics(data, np.zeros_like(gdq))
    assert out_noflag[0, 3, 0, 0] == pytest.approx((6 + 506 + 6) / 3, rel=1e-6)


def test_do_not_use_and_saturated_groups():
    g = np.arange(5, dtype=np.float32)
    data = np.stack([100 + 3 * g] * 4)[:, :, None, None].astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 0] = dq.DO_NOT_USE  # no reference read: integration 0 drops out entirely
    gdq[1, 2] = dq.SATURATED  # that group only
    gdq[2, 4] = dq.DO_NOT_USE  # that group only
    mean, std, n, njump = dark_statistics(data, gdq)[:, :, 0, 0]
    np.testing.assert_array_equal(n, [3, 3, 2, 3, 2])
    np.testing.assert_allclose(mean, [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(njump, 0)


def test_sigma_clipping_by_hand():
    # d = [-1, 1, -1, 1, -1, 1, -1, 1, -1, 100]: median 0, σ (ddof 0) = 30.05, 3σ = 90.2, so
    # 100 goes; then median -1, σ = 0.994, every |d + 1| ≤ 2 < 2.98 stays: converged.
    # mean = -1/9, std (ddof 1) = √(10/9) = 1.0541, 9 samples
    d = np.array([-1, 1, -1, 1, -1, 1, -1, 1, -1, 100], np.float32)
    data = np.stack([np.full(10, 100, np.float32), 100 + d], axis=1)[:, :, None, None]
    gdq = np.zeros(data.shape, np.uint8)
    for engine in ("numba", "numpy"):
        mean, std, n, _ = dark_statistics(data, gdq, engine=engine)[:, 1, 0, 0]
        assert n == 9
        assert mean == pytest.approx(-1 / 9, rel=1e-6)
        assert std == pytest.approx(np.sqrt(10 / 9), rel=1e-6)
    # one clipping pass only stops after removing 100 as well (same answer here), and no
    # pass at all keeps it: mean 9.9
    assert dark_statistics(data, gdq, maxiters=0)[0, 1, 0, 0] == pytest.approx(9.9, rel=1e-6)


def test_jump_counts_by_hand():
    gdq = np.zeros((2, 3, 2, 2), np.uint8)
    gdq[0, 1, 0, 0] = dq.JUMP_DET
    gdq[0, 2, 0, 0] = dq.JUMP_DET  # same pixel twice: one pixel, two pixel-groups
    gdq[1, 2, 1, 1] = dq.JUMP_DET
    gdq[1, 1, 0, 1] = dq.JUMP_DET  # on a reference pixel: not counted
    pixeldq = np.zeros((2, 2), np.uint32)
    pixeldq[0, 1] = dq.REFERENCE_PIXEL
    pix, grp, act = jump_counts(gdq, pixeldq)
    np.testing.assert_array_equal(pix, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(grp, [[2, 0], [0, 1]])
    np.testing.assert_array_equal(act, [[2, 1], [2, 1]])


def _random_block(seed, nint, ng, ny, nx, p_flag):
    rng = np.random.default_rng(seed)
    data = (rng.normal(0, 7, (nint, ng, ny, nx)) + np.arange(ng)[None, :, None, None] * 0.5)
    data = data.astype(np.float32)
    data[rng.random(data.shape) < 0.02] += 300  # outliers for the clipping
    gdq = np.zeros(data.shape, np.uint8)
    for flag in (dq.JUMP_DET, dq.DO_NOT_USE, dq.SATURATED):
        gdq[rng.random(data.shape) < p_flag] |= flag
    return data, gdq


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), nint=st.integers(1, 12), ng=st.integers(1, 5),
       p_flag=st.sampled_from([0.0, 0.05, 0.3]))
def test_numba_engine_equals_numpy_reference(seed, nint, ng, p_flag):
    data, gdq = _random_block(seed, nint, ng, 3, 4, p_flag)
    a = dark_statistics(data, gdq, engine="numba")
    b = dark_statistics(data, gdq, engine="numpy")
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6, equal_nan=True)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), ints=st.sampled_from([(3, 5), (2, 2, 4), (8,)]),
       xchunk=st.sampled_from([1, 3, 8]))
def test_chunked_equals_whole(seed, ints, xchunk):
    # the reduction concatenates the integration chunks of every exposure in one task per
    # column band: any chunking gives the kernel's answer on the whole array
    data, gdq = _random_block(seed, sum(ints), 4, 5, 8, 0.05)
    whole = dark_statistics(data, gdq)
    chunks = (ints, 4, 5, xchunk)
    dims = ("integration", "group", "y", "x")
    lazy = map_ramp_blocks(
        dark_statistics,
        xr.DataArray(da.from_array(data, chunks=chunks), dims=dims),
        xr.DataArray(da.from_array(gdq, chunks=chunks), dims=dims),
        dims_out=dims[1:], dtype=np.float32, new_axis=("field", 4))
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(lazy.values, whole)


def test_plan_dark_tiles_by_hand():
    # one column over 24 integrations × 8 groups × 64 rows: 3.0 × 4 B × 24 × 8 × 64 = 147 456 B
    assert DARK_TILE_FACTOR == 3.0
    # 1 MiB / 147 456 B = 7.1 columns → the power of two 4 (divides 64, ≥ 7 // 2)
    assert plan_dark_tiles(24, 8, 64, 64, budget=2**20) == 4
    assert plan_dark_tiles(24, 8, 64, 64, budget=None) == 64
    assert plan_dark_tiles(24, 8, 64, 64, budget=10**9) == 64
    with pytest.raises(MemoryError, match="one column over all 24 integrations"):
        plan_dark_tiles(24, 8, 64, 64, budget=100_000)


def test_group_inputs_by_exposure(tmp_path):
    files = [tmp_path / n for n in ("jwA-seg002_nrca1_uncal.fits", "jwB_nrca1_uncal.fits",
                                    "jwA-seg001_nrca1_uncal.fits", "store.zarr")]
    groups = group_inputs(files)
    assert groups == [[files[2], files[0]], [files[1]], files[3]]


# --------------------------------------------------------------------------- simulated darks


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """7 × 4 integrations × 8 groups of a 64 × 64 NIRCam dark (1 output, side reference
    columns); 2 % hot pixels so the hot-pixel checks have ~70 pixels."""
    out = tmp_path_factory.mktemp("darksim")
    return simulate(out, preset="nircam-dark", nints=NINTS, segments=NSEG, ngroups=NGROUPS,
                    nx=NPIX, ny=NPIX, seed=11, hot_fraction=0.02)


def _exposures(sim):
    """The 7 segments as 7 separate exposure Datasets (same detector maps, independent noise)."""
    ds = open_exposure(sim.uncal_files)
    return [ds.isel(integration=slice(k * NINTS, (k + 1) * NINTS)) for k in range(NSEG)]


@pytest.fixture(scope="module")
def dark(sim, tmp_path_factory):
    """A DARK from exposures 1–6 (24 integrations); exposure 7 is kept for the re-use test."""
    out = tmp_path_factory.mktemp("dark") / "jwst_nircam_dark_test.fits"
    with dask.config.set(scheduler="synchronous"):
        return make_dark(_exposures(sim)[:6], out, refs=sim.refs_dir, tile_columns=16)


def test_recovered_dark_current_matches_truth(dark, sim):
    """Dark rate of the last plane vs the injected dark_rate: pulls with σ in 0.9–1.2.

    The expected error of a pixel is the standard error of the clipped mean of
    d = data[7] − data[0] over its kept integrations (ERR), divided by 7 groups × TGROUP:
    read noise, dark shot noise, 1/f and refpix residuals all enter through the measured
    scatter, which is what makes hot pixels (shot-noise dominated) and normal ones comparable.
    """
    t = load_truth(sim.truth_path)
    truth = t["dark_rate"].values
    ref = (t["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    st_ = dark.stats
    span = (NGROUPS - 1) * TFRAME
    rate = st_["sci"].values[-1] / span
    err = st_["err"].values[-1] / span
    ok = ~ref & np.isfinite(rate) & (err > 0)
    # the corner subarray has reference rows 0–3 and columns 0–3 only
    assert ok.sum() == (NPIX - 4) ** 2  # every active pixel, hot ones included
    pull = (rate[ok] - truth[ok]) / err[ok]
    print(f"dark pulls: mean {pull.mean():.3f} std {pull.std():.3f}")
    assert 0.9 < pull.std() < 1.2
    # the mean pull is not 0 ± 1/√N: after refpix, the frame mean of data[7] − data[0]
    # still scatters by 1.2–2.7 DN between integrations (1/f over the 10.7 s frames, refpix
    # residuals; measured on seeds 2–4), i.e. 0.25–0.55 DN over 24 integrations, shared by
    # every pixel, against a per-pixel error of ~1.5 DN: mean pulls of ±0.2–0.4 (seeds 2, 3,
    # 11: +0.20, −0.16, −0.40; +0.05 without 1/f).  A bias of one σ would still show.
    assert abs(pull.mean()) < 0.8
    hot = ok & (truth > 0.4)
    assert hot.sum() > 40
    np.testing.assert_allclose(rate[hot], truth[hot], rtol=0.1, atol=5 * err[hot].max())
    # plane 0 is exactly 0 (DARK convention: each plane relative to its own frame 0)
    assert (st_["sci"].values[0][ok] == 0).all()
    assert dark.stats["dark_rate"].values[ok] == pytest.approx(rate[ok])


def test_error_is_standard_error_of_the_clipped_mean(dark, sim):
    st_ = dark.stats
    n = st_["nsamples"].values.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(st_["err"].values[1:], (st_["std"].values / np.sqrt(n))[1:],
                                   rtol=1e-6)
    # the scatter of one ramp's d at group 1 is at least the CDS read noise of the READNOISE
    # reference on normal pixels (the clipping and the median of a χ distribution take ~3 %
    # off σ at 24 samples; 1/f and refpix residuals add ~2.6 DN in quadrature)
    noise = dark.noise
    cds = noise["readnoise_only"].values[1]
    assert 0.95 * cds < noise["effective_noise"].values[1] < 1.2 * cds
    assert np.all(noise["expected"].values[1:] >= cds)


def test_dq_unreliable_where_too_few_samples(dark):
    st_ = dark.stats
    low = st_["nsamples"].values[1:].min(axis=0) < 5
    np.testing.assert_array_equal((st_["dq"].values & dq.UNRELIABLE_DARK) != 0, low)


def test_jump_statistics_against_injected_cosmic_rays(dark, sim):
    t = load_truth(sim.truth_path)
    ji, jg, amp = t["jump_integration"].values, t["jump_group"].values, t["jump_amplitude"].values
    in_dark = ji < 6 * NINTS
    # a hit after group 0 well above the ~7 DN CDS noise is detected; count hit pixels
    big = in_dark & (jg >= 1) & (amp > 100)
    big_pixels = len({(i, y, x) for i, y, x in zip(ji[big], t["jump_y"].values[big], t["jump_x"].values[big])})
    detected = float(dark.stats["jump_pixels"].sum())
    assert big_pixels > 20
    assert detected >= 0.95 * big_pixels
    # neighbours of large hits are flagged too, but not much beyond 5 pixels per injected hit
    assert detected <= 5 * in_dark.sum() + 0.002 * dark.stats["active_pixels"].sum()
    j = dark.jumps
    assert j.sizes["integration"] == 6 * NINTS
    frac = dark.stats["jump_pixels"].values / dark.stats["active_pixels"].values
    np.testing.assert_allclose(j["jump_fraction"].values, frac)
    # a pixel excluded at the last group by a jump in some integration counts as "hit"
    assert j.attrs["any_jump_fraction"] == pytest.approx(
        float((dark.stats["n_jumped"].values[-1] > 0).mean()))


def test_file_layout_and_refset(dark, sim):
    with fits.open(dark.path) as h:
        names = [x.name for x in h]
        assert names == ["PRIMARY", "SCI", "ERR", "DQ", "AVDRKCUR", "DQ_DEF"]
        assert h["SCI"].data.shape == (NGROUPS, NPIX, NPIX) and h["SCI"].data.dtype == np.dtype(">f4")
        assert h["ERR"].data.shape == (NGROUPS, NPIX, NPIX)
        assert h["DQ"].data.shape == (NPIX, NPIX) and h["DQ"].data.dtype == np.uint32
        assert h["AVDRKCUR"].data.shape == (NPIX, NPIX)
        assert set(h["DQ_DEF"].columns.names) == {"BIT", "VALUE", "NAME", "DESCRIPTION"}
        hdr = h[0].header
        for key, value in {"REFTYPE": "DARK", "INSTRUME": "NIRCAM", "DETECTOR": "NRCA1",
                           "SUBARRAY": "GENERIC", "SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": NPIX,
                           "SUBSIZE2": NPIX, "FASTAXIS": -1, "SLOWAXIS": 2, "READPATT": "RAPID",
                           "NFRAMES": 1, "GROUPGAP": 0, "NGROUPS": NGROUPS,
                           "USEAFTER": "2022-11-20T00:00:00", "NEXPOS": 6, "NINTSUSE": 24}.items():
            assert hdr[key] == value, key
        for key in ("PEDIGREE", "DESCRIP", "AUTHOR", "TELESCOP"):
            assert hdr[key]
        np.testing.assert_array_equal(h["SCI"].data, np.nan_to_num(dark.stats["sci"].values, nan=np.nan))
    ref = load_reffile("dark", dark.path, sim.attrs)
    assert ref.arrays["SCI"].shape == (NGROUPS, NPIX, NPIX)
    assert ref.arrays["SCI"].dtype == np.float32 and ref.arrays["DQ"].dtype == np.uint32


def _rate(ds, refs):
    res = detector1(ds, refs)
    with dask.config.set(scheduler="synchronous"):
        return res.rate["data"].values, res.provenance


def test_dark_reused_on_a_new_exposure_removes_the_dark(dark, sim, tmp_path):
    """Exposure 7 (not used for the DARK): its dark-subtracted rate on hot pixels is ~0 with
    the new DARK (no illumination), ≈ the dark rate with a zero DARK, and as good as with
    the simulator's true DARK."""
    from daskramp.io.fitswrite import write_reference

    new = _exposures(sim)[6]
    base = RefSet.from_dir(sim.refs_dir, new.attrs)
    # the MASK's DO_NOT_USE on hot pixels would make their rate NaN: measure them anyway
    base = strip_mask_do_not_use(base)
    files = {rt: base.get(rt) for rt in ("mask", "saturation", "superbias", "linearity", "gain",
                                         "readnoise")}
    zero = tmp_path / "zero_dark.fits"
    with fits.open(dark.path) as h:
        meta = {k: h[0].header[k] for k in ("REFTYPE", "INSTRUME", "DETECTOR", "SUBARRAY",
                                              "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2",
                                              "NFRAMES", "GROUPGAP", "READPATT")}
    write_reference(zero, meta=meta, arrays={"SCI": np.zeros((NGROUPS, NPIX, NPIX), np.float32),
                                             "DQ": np.zeros((NPIX, NPIX), np.uint32)})
    rates = {}
    for name, path in (("ours", dark.path), ("zero", zero), ("truth", sim.refs["dark"])):
        refs = RefSet({**files, "dark": load_reffile("dark", path, new.attrs)})
        rates[name], prov = _rate(new, refs)
        assert prov["steps"]["dark_current"]["status"] == "COMPLETE"
    t = load_truth(sim.truth_path)
    truth = t["dark_rate"].values
    hot = (truth > 0.4) & ((t["pixeldq"].values & dq.REFERENCE_PIXEL) == 0)
    res = {k: v[hot] for k, v in rates.items()}  # no source: the rate left is residual dark
    print({k: (float(np.mean(np.abs(v))), float(np.sqrt(np.mean(v**2)))) for k, v in res.items()})
    np.testing.assert_allclose(res["zero"], truth[hot], rtol=0.1, atol=0.05)
    assert np.mean(np.abs(res["ours"])) < 0.05 * np.mean(np.abs(res["zero"]))
    # our DARK averages 24 integrations, the exposure 4: its own noise dominates the residual
    assert np.sqrt(np.mean(res["ours"] ** 2)) < 1.3 * np.sqrt(np.mean(res["truth"] ** 2))
    # on normal pixels the DARK takes ~0.01 DN/s off as well, without adding noise
    normal = (truth < 0.1) & ((t["pixeldq"].values & dq.REFERENCE_PIXEL) == 0)
    assert abs(np.nanmean(rates["ours"][normal])) < abs(np.nanmean(rates["zero"][normal]))


def test_files_stores_and_datasets_give_the_same_dark(sim, tmp_path):
    # the uncal segments of one exposure (grouped by name), its Zarr store (reopened in the
    # tile layout) and the same integrations as separate exposures: jump runs per segment
    # every time, so the statistics are identical whatever the tiles
    from daskramp.io import ingest

    with dask.config.set(scheduler="synchronous"):
        store = ingest(sim.uncal_files, tmp_path / "exp.zarr")
        a = make_dark(sim.uncal_files, tmp_path / "a.fits", refs=sim.refs_dir, tile_columns=32)
        b = make_dark(_exposures(sim), tmp_path / "b.fits", refs=sim.refs_dir, tile_columns=64)
        c = make_dark([store], tmp_path / "c.fits", refs=sim.refs_dir, tile_columns=16)
    assert a.provenance["n_exposures"] == 1 and b.provenance["n_exposures"] == NSEG
    assert a.provenance["tile_columns"] == 32 and b.provenance["tile_columns"] == 64
    for other in (b, c):
        np.testing.assert_array_equal(a.stats["sci"].values, other.stats["sci"].values)
        np.testing.assert_array_equal(a.stats["std"].values, other.stats["std"].values)
    np.testing.assert_array_equal(fits.getdata(a.path, "SCI"), fits.getdata(c.path, "SCI"))


def test_store_input_is_read_in_tiles(sim, tmp_path):
    # each task of the reduction reads its own column band of the store: the input chunks
    # of a 16-column plan are 16 columns wide
    from daskramp.darks import _reopen_tiled
    from daskramp.io import ingest

    with dask.config.set(scheduler="synchronous"):
        store = ingest(sim.uncal_files, tmp_path / "exp.zarr")
    ds = _reopen_tiled(store, open_exposure(store), 16)
    assert ds["data"].chunks[3] == (16,) * (NPIX // 16)
    assert ds["data"].chunks[0] == (NINTS,) * NSEG


def test_mismatched_inputs_and_dark_current_refused(sim, tmp_path):
    exps = _exposures(sim)[:2]
    other = exps[1].copy()
    other.attrs = {**other.attrs, "READPATT": "BRIGHT2"}
    with pytest.raises(ConfigError, match="READPATT 'RAPID' vs 'BRIGHT2'"):
        make_dark([exps[0], other], tmp_path / "x.fits", refs=sim.refs_dir)
    with pytest.raises(ConfigError, match="dark_current"):
        make_dark(exps, tmp_path / "x.fits", refs=sim.refs_dir,
                  steps={"dark_current": {"skip": False}})
    with pytest.raises(ConfigError, match="group_1overf cannot run when building a DARK"):
        make_dark(exps, tmp_path / "x.fits", refs=sim.refs_dir, steps={"group_1overf": {"skip": False}})
    assert not (tmp_path / "x.fits").exists()


def test_figures_written(dark, tmp_path):
    import matplotlib.image as mpimg

    paths = figures(dark, tmp_path / "figs")
    assert set(paths) == {"dark_rate", "jumps", "noise"}
    for p in paths.values():
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300


@pytest.mark.parity
def test_official_dark_model_reads_the_file(dark):
    pytest.importorskip("jwst")
    from stdatamodels.jwst.datamodels import DarkModel

    with DarkModel(str(dark.path)) as m:
        m.validate()
        # FITS big-endian float32 as stored
        assert m.data.shape == (NGROUPS, NPIX, NPIX) and m.data.dtype.newbyteorder("=") == np.float32
        assert m.err.shape == (NGROUPS, NPIX, NPIX)
        assert m.dq.shape == (NPIX, NPIX) and m.dq.dtype.newbyteorder("=") == np.uint32
        assert m.meta.reftype.upper() == "DARK"
        assert (m.meta.exposure.nframes, m.meta.exposure.groupgap, m.meta.exposure.ngroups) == (1, 0, NGROUPS)
        assert (m.meta.subarray.xstart, m.meta.subarray.xsize) == (1, NPIX)
        np.testing.assert_array_equal(m.data, fits.getdata(dark.path, "SCI"))
        assert m.average_dark_current.shape == (NPIX, NPIX)


def test_command_entry_point(sim, tmp_path, capsys):
    """``daskramp darks`` through the command line's entry point (an in-process cluster from a
    cluster profile)."""
    from daskramp.cli import main

    out = tmp_path / "jwst_nircam_dark_cli.fits"
    profile = tmp_path / "inprocess.yaml"
    profile.write_text("workers: 1\nprocesses: false\ndashboard_address: null\n")
    argv = ["darks", *map(str, sim.uncal_files), "--out", str(out), "--refs", str(sim.refs_dir),
            "--sigma", "4", "--err", "std", "--tile-columns", "32",
            "--figures", str(tmp_path / "figs"), "--pedigree", "GROUND",
            "--useafter", "2023-01-01T00:00:00", "--cluster", str(profile)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"DARK: {out}" in text and "effective noise (DN) vs groups" in text
    hdr = fits.getheader(out)
    assert (hdr["PEDIGREE"], hdr["USEAFTER"], hdr["CLIPSIG"]) == ("GROUND", "2023-01-01T00:00:00", 4.0)
    assert (tmp_path / "figs" / "effective_noise.png").exists()
    # --err std: ERR is the scatter of one ramp, not the standard error
    with fits.open(out) as h:
        assert np.nanmedian(h["ERR"].data[-1]) > 5.0  # ~7 DN CDS, vs ~1.5 DN for std/√28


@pytest.mark.parametrize("exp_type", ["NRC_IMAGE", "NRC_TSIMAGE", "NRC_TSGRISM", "NRC_DARK"])
def test_a_nircam_dark_from_dark_exposures_serves_science_exposure_types(exp_type):
    """NIRCam darks are selected by EXP_TYPE: a dark made from NRC_DARK exposures must still be
    chosen for the science exposures it is meant for."""
    from daskramp.darks import dark_header
    from daskramp.io.refs import match_weight

    kw = dark_header({"INSTRUME": "NIRCAM", "DETECTOR": "NRCALONG", "EXP_TYPE": "NRC_DARK"})
    assert kw["EXP_TYPE"] == "NRC_DARK"
    assert match_weight(kw["P_EXP_TY"], exp_type) == 1
    assert match_weight(kw["P_EXP_TY"], "MIR_IMAGE") is None
