"""Tests of the simulator: files, headers, determinism, and that the injected statistics are
the stated ones (read noise, count rates and Poisson noise, jumps, 1/f, saturation, masks).

Geometries are tiny (a 64-column SOSS-like strip, a 64×64 NIRCam corner); each simulation
still writes full-frame reference files, so fixtures are shared per module.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from astropy.io import fits

from daskramp import dq
from daskramp.dims import check_keywords
from daskramp.io import fitswrite
from daskramp.simulate import (
    PRESETS,
    _build_state,
    _configure,
    _generate,
    _one_integration,
    load_truth,
    one_over_f_series,
    simulate,
)

SOSS = dict(preset="niriss-soss", nx=64, nints=4, ngroups=9, segments=2, seed=3)
QUIET = dict(one_over_f_amplitude=0.0, bias_int_offset_rms=0.0, refpix_offset_rms=0.0)


def sci(path) -> np.ndarray:
    with fits.open(path) as h:
        return np.asarray(h["SCI"].data)


def exposure(res) -> np.ndarray:
    return np.concatenate([sci(f) for f in res.uncal_files])


def ref(res, reftype, ext="SCI", cut=True) -> np.ndarray:
    a = res.attrs
    with fits.open(res.refs[reftype]) as h:
        arr = np.asarray(h[ext].data)
    if not cut:
        return arr
    y0, x0 = a["SUBSTRT2"] - 1, a["SUBSTRT1"] - 1
    return arr[..., y0 : y0 + a["SUBSIZE2"], x0 : x0 + a["SUBSIZE1"]]


@pytest.fixture(scope="module")
def soss(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("soss"), **SOSS)


@pytest.fixture(scope="module")
def soss_clean(tmp_path_factory):
    """Negligible read noise, no offsets, no 1/f, no cosmic rays: ramps carry Poisson noise only."""
    return simulate(tmp_path_factory.mktemp("clean"), preset="niriss-soss", nx=64, nints=4, ngroups=9,
                    seed=5, readnoise=0.5, cr_rate=0.0, **QUIET)


@pytest.fixture(scope="module")
def dark(tmp_path_factory):
    """NIRCam dark corner, white read noise only (plus dark current and cosmic rays)."""
    return simulate(tmp_path_factory.mktemp("dark"), preset="nircam-dark", nx=64, ny=64, nints=8,
                    ngroups=5, seed=7, **QUIET)


# ------------------------------------------------------------------------------ files, headers


def test_file_names_and_segments(soss):
    assert [f.name for f in soss.uncal_files] == [
        "jw01366001001_04101_00001-seg001_nis_uncal.fits",
        "jw01366001001_04101_00001-seg002_nis_uncal.fits",
    ]
    for k, f in enumerate(soss.uncal_files):
        assert re.fullmatch(r"jw\d{11}_\d{5}_\d{5}-seg\d{3}_[a-z0-9]+_uncal\.fits", f.name)
        h = fits.getheader(f)
        # NINTS is the exposure total; each segment holds INTEND − INTSTART + 1 integrations
        assert (h["NINTS"], h["EXSEGNUM"], h["EXSEGTOT"]) == (8, k + 1, 2)
        assert (h["INTSTART"], h["INTEND"]) == (4 * k + 1, 4 * k + 4)
        assert h["FILENAME"] == f.name
        with fits.open(f) as hl:
            assert [x.name for x in hl] == ["PRIMARY", "SCI", "INT_TIMES", "ASDF"]
            it = hl["INT_TIMES"].data
            assert list(it["integration_number"]) == [4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 4]
            assert np.all(it["int_start_MJD_UTC"] < it["int_mid_MJD_UTC"])
            assert np.all(it["int_mid_MJD_UTC"] < it["int_end_MJD_UTC"])
            # one integration = 9 groups of 5.494 s; one reset frame between integrations
            cycle = np.diff(it["int_start_MJD_UTC"]) * 86400
            np.testing.assert_allclose(cycle, 10 * 5.494, rtol=1e-6)
            np.testing.assert_allclose(it["int_mid_BJD_TDB"] - it["int_mid_MJD_UTC"],
                                       2400000.5 + 69.184 / 86400, rtol=0, atol=1e-9)
    assert sorted(p.name for p in soss.refs_dir.iterdir()) == sorted(
        f"jwst_niriss_nis_{t}_sim.fits"
        for t in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "flat"))


def test_primary_and_sci_headers(soss):
    a = soss.attrs
    check_keywords(a, source="simulated uncal")
    assert a["TELESCOP"] == "JWST" and a["DATAMODL"] == "Level1bModel"
    assert (a["INSTRUME"], a["DETECTOR"], a["EXP_TYPE"], a["READPATT"]) == ("NIRISS", "NIS", "NIS_SOSS", "NISRAPID")
    assert (a["FILTER"], a["PUPIL"]) == ("CLEAR", "GR700XD")
    # a 64-column SOSS-like strip: still the top 256 rows, starting at column 1 (reference columns)
    assert (a["SUBSTRT1"], a["SUBSIZE1"], a["SUBSTRT2"], a["SUBSIZE2"]) == (1, 64, 1793, 256)
    assert (a["FASTAXIS"], a["SLOWAXIS"], a["NOUTPUTS"]) == (-2, -1, 1)
    assert (a["NGROUPS"], a["NFRAMES"], a["GROUPGAP"], a["FRMDIVSR"]) == (9, 1, 0, 1)
    assert a["TFRAME"] == a["TGROUP"] == 5.494
    assert a["ZEROFRAM"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", a["DATE-OBS"]) and re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", a["TIME-OBS"])
    h = fits.getheader(soss.uncal_files[0], "SCI")
    assert (h["BITPIX"], h["BZERO"], h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"]) == (16, 32768, 64, 256, 9, 4)
    data = sci(soss.uncal_files[0])
    assert data.dtype == np.uint16 and data.shape == (4, 9, 256, 64)


def test_full_presets_geometry():
    p = _configure("niriss-soss", None, None, None, None, {})
    assert (p.ny, p.nx, p.substrt1, p.substrt2, p.nints, p.ngroups, p.tframe) == (256, 2048, 1, 1793, 158, 9, 5.494)
    p = _configure("nircam-full", None, None, None, None, {})
    assert (p.ny, p.nx, p.noutputs, p.detector, p.readpatt, p.ngroups, p.tframe) == (2048, 2048, 4, "NRCA1", "BRIGHT1", 10, 10.737)
    p = _configure("nircam-dark", None, None, 64, 64, {})
    assert (p.subarray, p.noutputs, p.substrt1, p.substrt2) == ("GENERIC", 1, 1, 1)
    with pytest.raises(ValueError, match="unknown preset"):
        _configure("miri", None, None, None, None, {})
    with pytest.raises(TypeError, match="unknown simulation parameter"):
        _configure("niriss-soss", None, None, None, None, {"readnoize": 3})
    assert set(PRESETS) == {"niriss-soss", "nircam-full", "nircam-dark", "nirspec-bots", "nircam-grism-tso",
                            "nircam-imaging-tso"}


def test_asdf_extension_is_a_minimal_asdf_file(soss):
    import yaml

    with fits.open(soss.uncal_files[1]) as h:
        raw = h["ASDF"].data.tobytes()
        assert h["ASDF"].columns.names == ["ASDF_METADATA"]
    assert raw.startswith(b"#ASDF 1.0.0\n#ASDF_STANDARD 1.5.0\n%YAML 1.1\n")

    class TagLoader(yaml.SafeLoader):
        pass

    TagLoader.add_multi_constructor("!", lambda loader, suffix, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)))
    body = raw.split(b"\n", 3)[3].decode()
    tree = yaml.load(body.replace("%TAG ! tag:stsci.edu:asdf/\n", ""), Loader=TagLoader)
    assert tree["meta"]["filename"] == soss.uncal_files[1].name
    assert tree["asdf_library"]["name"] == "daskramp"


def test_uint16_encoding_roundtrip(tmp_path):
    # stored = physical − 32768, e.g. 0 → −32768, 32768 → 0, 65535 → 32767
    a = np.array([0, 1, 32767, 32768, 65535], np.uint16)
    np.testing.assert_array_equal(fitswrite.uint16_to_fits(a), np.array([-32768, -32767, -1, 0, 32767], ">i2"))
    block = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5) * 500
    with fitswrite.UncalWriter(tmp_path / "x.fits", {"TELESCOP": "JWST"}, (2, 3, 4, 5)) as w:
        w.write(block[:1])
        w.write(fitswrite.uint16_to_fits(block[1:]).tobytes())
    np.testing.assert_array_equal(sci(tmp_path / "x.fits"), block)
    with pytest.raises(ValueError, match="only 1 of 2"):
        with fitswrite.UncalWriter(tmp_path / "y.fits", {}, (2, 3, 4, 5)) as w:
            w.write(block[:1])
    assert not (tmp_path / "y.fits").exists()


# ------------------------------------------------------------------------------ determinism


def test_streaming_split_and_segments_do_not_change_the_data(soss, tmp_path):
    one = simulate(tmp_path, **{**SOSS, "nints": 8, "segments": 1})
    np.testing.assert_array_equal(sci(one.uncal_files[0]), exposure(soss))
    t1, t2 = load_truth(one.truth_path), load_truth(soss.truth_path)
    for v in ("jump_integration", "jump_group", "jump_y", "jump_x", "jump_amplitude", "saturated_group"):
        np.testing.assert_array_equal(t1[v].values, t2[v].values)


def test_same_seed_same_bits_other_seed_differs():
    p = _configure("nircam-dark", None, 3, 32, 32, {})
    a, *_ = _build_state(p, 11, 2)
    b, *_ = _build_state(p, 11, 2)
    c, *_ = _build_state(p, 12, 2)
    oa, ob, oc = (_one_integration(s, 1)[0] for s in (a, b, c))
    np.testing.assert_array_equal(oa, ob)
    assert np.mean(oa != oc) > 0.9


def test_worker_processes_give_identical_bytes():
    p = _configure("niriss-soss", None, 3, 48, None, {})
    state, *_ = _build_state(p, 2, 3)
    serial = [r[0] for r in _generate(state, range(3), 1)]
    parallel = [r[0] for r in _generate(state, range(3), 2)]
    for a, b in zip(serial, parallel, strict=True):
        assert a.dtype == b.dtype == np.dtype(">i2")
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ statistics


def test_read_noise_matches_readnoise_reference(dark):
    """CDS differences of a dark carry READNOISE (CDS, DN): var(diff) / READNOISE² ≈ 1.

    Extra variance: rounding to whole DN (2 × 1/12 DN²) and dark shot noise
    (0.01 DN/s × 10.737 s / 2 e⁻/DN ≈ 0.05 DN²) against READNOISE² ≈ 49 DN²: +0.5 %.
    """
    t = load_truth(dark.truth_path)
    data = exposure(dark).astype(np.float64)
    diff = np.diff(data, axis=1)
    rn = ref(dark, "readnoise")
    np.testing.assert_array_equal(rn, t["readnoise"].values)
    assert abs(rn.mean() - 7.0) < 0.1
    use = (t["pixeldq"].values & (dq.HOT | dq.DEAD)) == 0
    hit = np.zeros(data.shape[:1] + data.shape[2:], bool)
    hit[t["jump_integration"].values, t["jump_y"].values, t["jump_x"].values] = True
    # consecutive differences have zero mean (dark signal 0.1 DN per group): E[d²] = CDS²
    ratio = (diff**2).mean(axis=1) / rn**2  # (integration, y, x)
    sel = ~hit & use[None]
    assert abs(ratio[sel].mean() - 1.005) < 0.02
    # reference pixels are read like any other
    refpx = (t["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    assert abs(ratio[:, refpx].mean() - 1.005) < 0.06


def test_count_rates_and_poisson_noise(soss_clean):
    """Linearised, bias- and dark-subtracted ramps have the true slope and Poisson scatter.

    For reads at t_k = kΔt (k = 1…n) of a Poisson process of λ e⁻/s the least-squares slope
    has variance λ·(6/5)(n²+1)/(n(n²−1))/Δt; n = 9 → 0.13667·λ/Δt.  In DN:
    var = 0.13667·R/(gain·Δt).
    """
    res = soss_clean
    t = load_truth(res.truth_path)
    raw = exposure(res).astype(np.float64)
    m = raw - ref(res, "superbias")
    c = ref(res, "linearity", "COEFFS").astype(np.float64)
    lin = c[0] + m * (c[1] + m * (c[2] + m * c[3]))
    lin -= ref(res, "dark", cut=False)[None]  # not cut: the DARK has the subarray shape; plane g = dark signal of frame g (NFRAMES=1, GROUPGAP=0)
    dt = 5.494
    tk = np.arange(9) * dt
    tc = tk - tk.mean()
    slope = np.einsum("igyx,g->iyx", lin, tc) / (tc**2).sum()
    truth = t["rate"].values
    gain = t["gain"].values
    sat = np.zeros(truth.shape, bool)
    sat[t["saturated_integration"].values, t["saturated_y"].values, t["saturated_x"].values] = True
    good = (t["pixeldq"].values == 0)[None] & ~sat
    bright = good & (truth > 100)
    assert bright.sum() > 500
    rel = (slope - truth)[bright] / truth[bright]
    assert abs(np.median(rel)) < 2e-3
    sel = good & (truth > 20)
    sigma = np.sqrt(0.13667 * (truth + t["dark_rate"].values)[sel] / (gain[None] * dt * np.ones_like(truth))[sel])
    pull = (slope - truth)[sel] / sigma
    assert abs(pull.mean()) < 0.05
    assert 0.93 < pull.std() < 1.07
    # reference pixels see no light
    refpx = (t["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    assert np.abs(slope[:, refpx]).max() < 0.5


def test_jump_rate_amplitudes_and_placement(dark):
    """Injected count = Poisson(cr_rate · active pixels · t_last · nints); jumps show in the data."""
    t = load_truth(dark.truth_path)
    p = dark.preset
    active = ((t["pixeldq"].values & (dq.REFERENCE_PIXEL | dq.DEAD)) == 0).sum()
    t_last = 5 * 10.737  # RAPID: group 4 is read 5 frames after the reset
    mu = 5e-5 * active * t_last * 8
    n = t.sizes["jump"]
    assert abs(n - mu) < 4 * math.sqrt(mu), (n, mu)
    assert p.cr_rate == 5e-5
    data = exposure(dark).astype(np.float64)
    diff = np.diff(data, axis=1)
    i, g, y, x, amp = (t[v].values for v in ("jump_integration", "jump_group", "jump_y", "jump_x", "jump_amplitude"))
    assert np.all(((t["pixeldq"].values & dq.REFERENCE_PIXEL) == 0)[y, x])
    big = (g > 0) & (amp > 200)
    assert big.sum() >= 3
    step = diff[i[big], g[big] - 1, y[big], x[big]]
    # non-linearity reduces a jump at low signal by < 2 %; CDS noise is 7 DN
    np.testing.assert_allclose(step, amp[big], rtol=0.02, atol=35)


def test_cosmic_ray_amplitude_law():
    """Pareto law 20 DN · U^(−1/0.9): median 20·2^(1/0.9) = 43.1 DN, P(> 1000 DN) = 0.05^0.9 = 2.96 %."""
    p = _configure("nircam-dark", None, 10, 64, 64, {"cr_rate": 1e-2})
    state, *_ = _build_state(p, 1, 3)
    amps = np.concatenate([_one_integration(state, i)[1][1] for i in range(3)])
    assert amps.size > 5000
    assert abs(np.median(amps) / 43.1 - 1) < 0.08
    assert abs(np.mean(amps > 1000) - 0.0296) < 0.008
    assert amps.max() <= 30000


def test_one_over_f_generator_psd_and_variance():
    """PSD a²/f: E[x²] = a²·Σ_{k=1}^{N} 1/k with N = n (the series is cut from 2n samples).

    n = 1024, a = 2 → 4·H_1024 = 4·7.5024 = 30.01 DN².  The periodogram slope is −1.
    """
    rng = np.random.default_rng(0)
    n, a = 1024, 2.0
    xs = np.stack([one_over_f_series(rng, n, 1e-3, a) for _ in range(400)])
    assert abs((xs**2).mean() / 30.01 - 1) < 0.06
    w = np.hanning(n)
    spec = (np.abs(np.fft.rfft((xs - xs.mean(axis=1, keepdims=True)) * w, axis=1)) ** 2).mean(axis=0)
    k = np.arange(spec.size)
    sel = (k >= 4) & (k <= n // 4)
    slope = np.polyfit(np.log(k[sel]), np.log(spec[sel]), 1)[0]
    assert abs(slope + 1) < 0.1
    assert not one_over_f_series(rng, 10, 1e-3, 0.0).any()


def test_one_over_f_in_data_follows_readout(tmp_path, soss):
    """1/f lives along detector lines: NRCA1 lines are DMS rows, NIS lines are DMS columns."""
    res = simulate(tmp_path, preset="nircam-dark", nx=64, ny=64, nints=6, ngroups=5, seed=9,
                   readnoise=0.5, cr_rate=0.0, bias_int_offset_rms=0.0, refpix_offset_rms=0.0,
                   one_over_f_amplitude=3.0)
    data = exposure(res).astype(np.float64)
    data -= ref(res, "superbias")
    data[..., (ref(res, "mask", "DQ") & dq.DO_NOT_USE) != 0] = np.nan  # hot pixels ramp up
    lines = np.nanmean(data, axis=3)  # (int, group, 64 lines) in read order (SLOWAXIS = +2)
    cols = np.nanmean(data, axis=2)
    assert lines.var(axis=2).mean() > 20 * cols.var(axis=2).mean()
    # per-frame periodogram of the line series: slope −1 below a quarter of the line rate
    x = lines - lines.mean(axis=2, keepdims=True)
    spec = (np.abs(np.fft.rfft(x * np.hanning(64), axis=2)) ** 2).mean(axis=(0, 1))
    k = np.arange(spec.size)
    sel = (k >= 2) & (k <= 10)
    slope = np.polyfit(np.log(k[sel]), np.log(spec[sel]), 1)[0]
    assert -1.35 < slope < -0.7, slope
    # NIS: fast axis along DMS −y, so the stripes run along DMS columns
    d = np.diff(exposure(soss).astype(np.float64), axis=1)
    d[..., (ref(soss, "mask", "DQ") & dq.DO_NOT_USE) != 0] = np.nan
    d = d[..., 170:250, 4:]  # background only: away from the reference pixels and the traces
    d -= d.mean(axis=0)  # the mean signal per group
    # White noise (10.8 DN per difference) gives ~1.5 DN² to column means, ~1.9 DN² to row
    # means; 1/f adds 2a²·ln(f_line / f_window) ≈ 2·ln(186 Hz / 6 Hz) ≈ 7 DN² to column means.
    # The even/odd offsets split DMS rows here (detector columns), so rows are compared
    # within one parity.
    cols = np.nanmean(d, axis=2).var(axis=2).mean()
    rows = np.nanmean(d, axis=3)
    rows = 0.5 * (rows[..., 0::2].var(axis=2).mean() + rows[..., 1::2].var(axis=2).mean())
    assert cols > 2.5 * rows


def test_saturation_matches_saturation_reference(soss):
    t = load_truth(soss.truth_path)
    data = exposure(soss).astype(np.float64)
    thr = ref(soss, "saturation")
    np.testing.assert_allclose(thr, t["superbias"].values + t["saturation_level"].values, rtol=1e-6)
    truth = np.zeros(data.shape, bool)
    for i, g, y, x in zip(*(t[v].values for v in ("saturated_integration", "saturated_group", "saturated_y", "saturated_x"))):
        truth[i, g:, y, x] = True
    assert truth.sum() > 10
    seen = data >= thr
    mismatch = seen != truth
    # only at the crossing itself can read noise and offsets put the raw value on the other side
    assert mismatch.sum() <= 0.05 * truth.sum()
    assert np.all(np.abs(data - thr)[mismatch] < 80)
    # saturated values stay at the full well, below the 16-bit limit
    assert data.max() < 65535


def test_mask_reference_pixels_hot_and_dead(soss, dark):
    t = load_truth(soss.truth_path)
    mask = ref(soss, "mask", "DQ")
    np.testing.assert_array_equal(mask, t["pixeldq"].values)
    refpx = (mask & dq.REFERENCE_PIXEL) != 0
    expected = np.zeros((256, 64), bool)
    expected[:, :4] = True  # DMS columns 0–3 (SUBSTRT1 = 1)
    expected[252:, :] = True  # DMS rows 2044–2047 of the detector
    np.testing.assert_array_equal(refpx, expected)
    assert not np.any(mask[refpx] & dq.DO_NOT_USE)
    full = ref(soss, "mask", "DQ", cut=False)
    assert full.shape == (2048, 2048)
    border = np.zeros((2048, 2048), bool)
    border[:4] = border[-4:] = True
    border[:, :4] = border[:, -4:] = True
    np.testing.assert_array_equal((full & dq.REFERENCE_PIXEL) != 0, border)
    hot = (full & dq.HOT) != 0
    dead = (full & dq.DEAD) != 0
    assert np.all(full[hot | dead] & dq.DO_NOT_USE)
    assert abs(hot.mean() - 1e-3) < 2e-4 and abs(dead.mean() - 5e-4) < 1.5e-4
    # dead pixels record nothing; hot pixels carry their dark current in the data
    assert np.all(t["source_rate"].values[(mask & dq.DEAD) != 0] == 0)
    td = load_truth(dark.truth_path)
    dmask = td["pixeldq"].values
    hot_sub = (dmask & dq.HOT) != 0
    assert hot_sub.any()
    data = exposure(dark).astype(np.float64)
    slope = (data[:, -1] - data[:, 0]) / (4 * 10.737)
    rate = td["dark_rate"].values
    assert np.all(rate[hot_sub] >= 0.5) and np.all(rate[~hot_sub & ((dmask & dq.REFERENCE_PIXEL) == 0)] < 0.1)
    hit = np.zeros(slope.shape, bool)
    hit[td["jump_integration"].values, td["jump_y"].values, td["jump_x"].values] = True
    med = np.nanmedian(np.where(hit, np.nan, slope)[:, hot_sub], axis=0)
    np.testing.assert_allclose(med, rate[hot_sub], rtol=0.15, atol=0.5)


def test_reference_files_layout(soss):
    a = soss.attrs
    expect = {"mask": ("DQ", (2048, 2048)), "saturation": ("SCI", (2048, 2048)),
              "superbias": ("SCI", (2048, 2048)), "linearity": ("COEFFS", (4, 2048, 2048)),
              "gain": ("SCI", (2048, 2048)), "readnoise": ("SCI", (2048, 2048)),
              "dark": ("SCI", (9, 256, 64))}
    for rt, (ext, shape) in expect.items():
        with fits.open(soss.refs[rt]) as h:
            ph = h[0].header
            assert ph["REFTYPE"] == rt.upper()
            for key in ("DESCRIP", "AUTHOR", "USEAFTER", "PEDIGREE", "TELESCOP"):
                assert key in ph
            assert (ph["INSTRUME"], ph["DETECTOR"], ph["FASTAXIS"], ph["SLOWAXIS"]) == ("NIRISS", "NIS", -2, -1)
            assert h[ext].data.shape == shape
            if rt == "dark":
                assert (ph["SUBSTRT1"], ph["SUBSIZE1"], ph["SUBSTRT2"], ph["SUBSIZE2"]) == (1, 64, 1793, 256)
                assert (ph["NFRAMES"], ph["GROUPGAP"], ph["NGROUPS"]) == (1, 0, 9)
                assert (ph["EXP_TYPE"], ph["READPATT"]) == (a["EXP_TYPE"], a["READPATT"])
            else:
                assert (ph["SUBARRAY"], ph["SUBSTRT1"], ph["SUBSIZE1"], ph["SUBSTRT2"], ph["SUBSIZE2"]) == ("FULL", 1, 2048, 1, 2048)
            if "DQ" in h:
                assert (h["DQ"].header["BITPIX"], h["DQ"].header["BZERO"]) == (32, 2**31)
                assert h["DQ"].data.dtype == np.uint32
                dd = h["DQ_DEF"].data
                assert len(dd) == 32 and dd["VALUE"][dd["NAME"] == "REFERENCE_PIXEL"][0] == 2**31
    t = load_truth(soss.truth_path)
    d = ref(soss, "dark", cut=False)
    assert np.all(d[0] == 0)
    np.testing.assert_allclose(d[4], 4 * 5.494 * t["dark_rate"].values, rtol=1e-5)
    np.testing.assert_array_equal(ref(soss, "gain", cut=False)[:4], 0)
    np.testing.assert_allclose(ref(soss, "gain")[10:200, 10:60].mean(), 1.6, rtol=0.01)
    c = ref(soss, "linearity", "COEFFS")
    assert np.all(c[0] == 0) and np.all(c[1] == 1)


def test_transit_and_truth_attrs(soss):
    t = load_truth(soss.truth_path)
    f = t["relative_flux"].values
    # 8 integrations, T14 = 40 % of the exposure centred on it, ingress 15 % of T14
    assert f[0] == 1 and f[-1] == 1
    np.testing.assert_allclose(f.min(), 1 - 0.015)
    np.testing.assert_allclose(f, f[::-1], atol=1e-12)
    assert t["rate"].dims == ("integration", "y", "x") and t["rate"].shape == (8, 256, 64)
    for name, var in t.data_vars.items():
        assert "units" in var.attrs and var.attrs.get("description"), name
    for key in ("transit_depth", "cr_rate_per_pixel_per_s", "one_over_f_amplitude_DN", "readnoise_cds_mean_DN", "gain_mean_e_per_DN"):
        assert key in t.attrs
    np.testing.assert_array_equal(t["y"].values, np.arange(1792, 2048))
    assert list(np.unique(t["segment"].values)) == [1, 2]


# ------------------------------------------------------------------------------ official pipeline


def _offline_crds(tmp_path):
    crds = tmp_path / "crds"
    (crds / "config" / "jwst").mkdir(parents=True)
    ctx = "jwst_1300.pmap"
    (crds / "config" / "jwst" / "server_config").write_text(repr({
        "observatory": "jwst", "operational_context": ctx, "edit_context": ctx,
        "force_remote_mode": False, "last_synced": "2025-01-01 00:00:00", "bad_files": "",
        "download_metadata": ""}))
    return {"CRDS_PATH": str(crds), "CRDS_SERVER_URL": "https://127.0.0.1:9", "CRDS_MODE": "local",
            "CRDS_CONTEXT": ctx, "STPIPE_DISABLE_CRDS_STEPPARS": "True"}


@pytest.mark.slow  # the parity tests run the official pipeline on simulated exposures too
@pytest.mark.parity
def test_official_pipeline_runs_on_simulated_exposure(tmp_path, monkeypatch):
    """Detector1Pipeline (spec 10 offline recipe) runs end to end and recovers the truth."""
    for k, v in _offline_crds(tmp_path).items():
        monkeypatch.setenv(k, v)
    pytest.importorskip("jwst")
    from astropy.utils import iers
    from jwst import datamodels
    from jwst.pipeline import Detector1Pipeline
    from stdatamodels.jwst.datamodels import (
        DarkModel,
        GainModel,
        LinearityModel,
        MaskModel,
        ReadnoiseModel,
        SaturationModel,
        SuperBiasModel,
    )

    iers.conf.auto_download = False
    res = simulate(tmp_path / "sim", preset="niriss-soss", nx=64, nints=3, ngroups=6, seed=4)
    with datamodels.RampModel(str(res.uncal_files[0])) as m:
        assert m.data.shape == (3, 6, 256, 64) and m.meta.exposure.type == "NIS_SOSS"
        assert m.meta.subarray.fastaxis == -2 and len(m.int_times) == 3
    for rt, cls in [("mask", MaskModel), ("saturation", SaturationModel), ("superbias", SuperBiasModel),
                    ("linearity", LinearityModel), ("dark", DarkModel), ("gain", GainModel),
                    ("readnoise", ReadnoiseModel)]:
        with cls(str(res.refs[rt])) as r:
            r.validate()
    f = {rt: str(p) for rt, p in res.refs.items()}
    steps = {
        "dq_init": {"override_mask": f["mask"]},
        "saturation": {"override_saturation": f["saturation"], "override_superbias": f["superbias"]},
        "superbias": {"override_superbias": f["superbias"]},
        "linearity": {"override_linearity": f["linearity"]},
        "dark_current": {"override_dark": f["dark"]},
        "jump": {"override_gain": f["gain"], "override_readnoise": f["readnoise"]},
        "ramp_fit": {"override_gain": f["gain"], "override_readnoise": f["readnoise"]},
        "gain_scale": {"override_gain": f["gain"]},
        "ipc": {"override_ipc": "N/A"},
        "refpix": {"override_refpix": "N/A", "override_sirskernel": "N/A"},
        "reset": {"override_reset": "N/A"},
        "rscd": {"override_rscd": "N/A"},
    }
    out = tmp_path / "out"
    Detector1Pipeline.call(str(res.uncal_files[0]), steps=steps, output_dir=str(out), save_results=True)
    ri = sorted(out.glob("*_rateints.fits"))
    assert ri
    with fits.open(ri[0]) as h:
        rate, err, dqa = h["SCI"].data, h["ERR"].data, h["DQ"].data
    truth = load_truth(res.truth_path)["rate"].values
    good = np.isfinite(rate) & (dqa == 0) & (err > 0)
    assert good.mean() > 0.85
    pull = ((rate - truth) / err)[good]
    assert abs(np.median(pull)) < 0.1 and 0.9 < pull.std() < 1.2
    # the reference-pixel border: GAIN 0 → NO_GAIN_VALUE|DO_NOT_USE on top of REFERENCE_PIXEL
    assert dqa[0, 0, 0] == 2148007937



def test_snowballs_truth_cores_halos_and_default_unchanged(tmp_path):
    """snowball_rate > 0: truth rows inside the subarray, saturated cores from the hit group on,
    halos stepping the ramp up; the cosmic rays are those of the default run, and rate 0 is it."""
    kw = dict(preset="nircam-dark", nx=64, ny=64, nints=3, ngroups=5, seed=4, **QUIET)
    base = simulate(tmp_path / "base", **kw)
    off = simulate(tmp_path / "off", snowball_rate=0, **kw)
    on = simulate(tmp_path / "on", snowball_rate=3, **kw)
    tb, t = load_truth(base.truth_path), load_truth(on.truth_path)
    assert not any(v.startswith("snowball") for v in tb.variables)
    assert "snowball" not in tb.dims
    np.testing.assert_array_equal(exposure(off), exposure(base))

    names = ("integration", "group", "y", "x", "core_radius", "halo_radius")
    i, g, cy, cx, rc, rh = (t[f"snowball_{n}"].values for n in names)
    n = t.sizes["snowball"]
    assert 3 <= n <= 20                    # Poisson(3) per integration × 3
    assert np.all(np.diff(i) >= 0) and set(i) <= {0, 1, 2}
    assert np.all((g >= 0) & (g < 5))
    assert np.all((cy >= 0) & (cy < 64) & (cx >= 0) & (cx < 64))
    assert np.all((rc >= 2.5) & (rc <= 4.5) & (rh >= 7) & (rh <= 14) & (rh >= rc))

    # the default run's cosmic rays are all there; the extra rows are the snowballs' pixels
    jcols = ("jump_integration", "jump_group", "jump_y", "jump_x", "jump_amplitude")
    rows_on = set(zip(*(t[c].values.tolist() for c in jcols)))
    rows_base = set(zip(*(tb[c].values.tolist() for c in jcols)))
    assert rows_base <= rows_on
    extra = rows_on - rows_base
    assert len(extra) > n * 30             # a 7 px halo alone covers > 150 pixels
    pixeldq = t["pixeldq"].values
    active = (pixeldq & (dq.REFERENCE_PIXEL | dq.DEAD)) == 0
    assert all(active[y, x] for _, _, y, x, _ in extra)

    data = exposure(on).astype(np.float64)
    sat = ref(on, "saturation")
    yy, xx = np.mgrid[:64, :64] + 0.5
    checked_core = checked_halo = 0
    for k in range(n):
        d = np.hypot(yy - cy[k], xx - cx[k])
        core = (d <= rc[k] - 0.5) & active
        halo = (d > rc[k] + 1) & (d < rh[k] - 1) & active
        # another snowball of the same integration may overlap: leave its pixels out
        for o in np.flatnonzero((i == i[k]) & (np.arange(n) != k)):
            near = np.hypot(yy - cy[o], xx - cx[o]) <= rh[o] + 1
            core &= ~near
            halo &= ~near
        if core.any():
            assert np.all(data[i[k], g[k]:][:, core] >= sat[core]), k
            if g[k] > 0:
                assert np.all(data[i[k], :g[k]][:, core] < sat[core]), k
            checked_core += 1
        if halo.any() and g[k] > 0:
            # the halo adds 400 DN × U(0.5, 1.5) in its group; CDS noise here is ~10 DN
            step = data[i[k], g[k], halo] - data[i[k], g[k] - 1, halo]
            assert np.all(step > 150), (k, step.min())
            checked_halo += 1
    assert checked_core >= n // 2 and checked_halo >= n // 2
