"""ramp_fit kernel: hand-checked cases (spec 09 §1–2) and properties.

Unless a test says otherwise: NFRAMES = 1, TFRAME = TGROUP = 10 s, gain 2 e⁻/DN,
READNOISE 10 DN (CDS), no dark current, suppress_one_group = True; ramp data are
``rate · 10 · (g + 1)`` DN for 0-based group g.  Then rn = 10·2/√2 e⁻ and
var_rnoise(n-group segment) = 6·RN²/(NFRAMES·(n³−n)·TGROUP²) = 6/(n³ − n).
"""

from __future__ import annotations

import ast
import inspect

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import ramp_fit as k

NAN = float("nan")


def fit(values, gdq=None, *, pixeldq=0, gain=2.0, readnoise=10.0, dark=0.0, zeroframe=None, **kw):
    """Fit one pixel; ``values`` is (group,) or (integration, group).  Returns (rateints, rate)."""
    v = np.asarray(values, np.float32)
    if v.ndim == 1:
        v = v[None]
    nint, ng = v.shape
    data = v.reshape(nint, ng, 1, 1)
    q = np.zeros(data.shape, np.uint8) if gdq is None else np.asarray(gdq, np.uint8).reshape(data.shape)
    params = dict(nframes=1, tframe=10.0, tgroup=10.0)
    params.update(kw)
    pdq = np.full((1, 1), pixeldq, np.uint32)
    g = np.full((1, 1), gain, np.float32)
    zf = None if zeroframe is None else np.asarray(zeroframe, np.float32).reshape(nint, 1, 1)
    fields = k.ramp_fit(
        data, q, pdq, g, np.full((1, 1), readnoise, np.float32), np.full((1, 1), dark, np.float32), zf, **params
    )
    rate = k.combine_rate(k.rate_partials(fields), pdq, g, nints=nint)
    ints = {name: fields[i, :, 0, 0] for i, name in enumerate(k.FIELDS)}
    return ints, dict(zip(k.RATE_FIELDS, rate[:, 0, 0]))


def ramp(rate, ng=10, tgroup=10.0):
    return rate * tgroup * (np.arange(ng) + 1.0)


def close(a, b, rel=6e-6):
    # spec 09 quotes 6 significant digits
    return a == pytest.approx(b, rel=rel, abs=1e-12, nan_ok=True)


def check(ints, rate, *, slope, vp, vr, err, dq_, ierr=None, idq=None):
    """rateints (single integration) and rate agree with the table row."""
    assert close(rate["slope"], slope)
    assert close(rate["var_poisson"], vp)
    assert close(rate["var_rnoise"], vr)
    assert close(rate["err"], err)
    assert rate["dq"] == dq_
    assert close(ints["slope"][0], slope)
    assert close(ints["var_poisson"][0], vp)
    assert close(ints["var_rnoise"][0], vr)
    assert close(ints["err"][0], err if ierr is None else ierr)
    assert ints["dq"][0] == (dq_ if idq is None else idq)


# --- spec 09 §1: single integration, 10 groups ------------------------------------------


@pytest.mark.parametrize(
    "rate, vp, err",
    [
        # var_p = R̃/(TGROUP·gain·(n−1)) = rate/180; var_r = 6/990; err = sqrt(vp + vr)
        (5.0, 0.0277778, 0.183952),
        (0.1, 0.000555556, 0.0813398),
        (100.0, 0.555556, 0.749411),
    ],
)
def test_clean_ramps_table(rate, vp, err):
    ints, r = fit(ramp(rate))
    check(ints, r, slope=rate, vp=vp, vr=0.00606061, err=err, dq_=0)


def test_jump_starts_new_segment_with_jump_group_as_first_point():
    # +500 DN from g5 with JUMP_DET on g5 → segments [0–4], [5–9] (g5 carries the new level);
    # median of clean differences is still 5 → vp = 1/(2·1/(5/(10·2·4))) = 0.03125,
    # vr = 1/(2·(120/6)) = 0.025
    v = ramp(5.0)
    v[5:] += 500
    q = np.zeros(10)
    q[5] = dq.JUMP_DET
    ints, r = fit(v, q)
    check(ints, r, slope=5, vp=0.03125, vr=0.025, err=0.237171, dq_=4)


def test_saturated_tail_is_excluded():
    # g7–g9 SATURATED → segment [0–6]: vp = 5/(10·2·6), vr = 6/336; dq SATURATED (partial)
    q = np.zeros(10)
    q[7:] = dq.SATURATED
    ints, r = fit(ramp(5.0), q)
    check(ints, r, slope=5, vp=0.0416667, vr=0.0178571, err=0.243975, dq_=2)


def test_all_groups_saturated_is_nan_with_zero_variances():
    ints, r = fit(ramp(5.0), np.full(10, dq.SATURATED))
    check(ints, r, slope=NAN, vp=0, vr=0, err=0, dq_=3)
    assert np.isnan(ints["intercept"][0])


def test_only_group0_clean_is_suppressed():
    # one clean group → every group DO_NOT_USE; the saturated groups still add SATURATED
    q = np.full(10, dq.SATURATED)
    q[0] = 0
    ints, r = fit(ramp(5.0), q)
    check(ints, r, slope=NAN, vp=0, vr=0, err=0, dq_=3)


def test_only_group0_clean_without_suppression_uses_t1():
    # T1 = (NFRAMES + 1)·TFRAME/2 = 10 s: slope 50/10, vp = 5/(10·2), vr = 2·rn²/(T1²·gain²) = 1
    q = np.full(10, dq.SATURATED)
    q[0] = 0
    ints, r = fit(ramp(5.0), q, suppress_one_group=False)
    check(ints, r, slope=5, vp=0.25, vr=1.0, err=1.118034, dq_=2)


def test_pixeldq_do_not_use_gives_nan():
    ints, r = fit(ramp(5.0), pixeldq=dq.DO_NOT_USE)
    check(ints, r, slope=NAN, vp=0, vr=0, err=0, dq_=1)


def test_one_bad_group_rate_and_rateints_err_differ():
    # DO_NOT_USE on g3 → segments [0–2] and [4–9]; rate ERR = sqrt(vp + vr) but rateints
    # ERR = sqrt(1/Σ 1/(vp_s + vr_s)) = sqrt(1/(1/(0.125+0.25) + 1/(0.05+0.0285714)))
    q = np.zeros(10)
    q[3] = dq.DO_NOT_USE
    ints, r = fit(ramp(5.0), q)
    check(ints, r, slope=5, vp=0.0357143, vr=0.025641, err=0.247700, ierr=0.254874, dq_=0)


# --- spec 09 §2 ---------------------------------------------------------------------------


def test_two_integrations_pixel_a():
    # int 0 rate 5 clean, int 1 rate 10 saturated from g3: medians 5 and 10 → R̃ = 7.5
    v = np.stack([ramp(5.0, 6), ramp(10.0, 6)])
    q = np.zeros((2, 6))
    q[1, 3:] = dq.SATURATED
    ints, r = fit(v, q)
    np.testing.assert_allclose(ints["slope"], [5, 10], rtol=1e-6)
    np.testing.assert_allclose(ints["var_poisson"], [0.075, 0.1875], rtol=1e-6)
    np.testing.assert_allclose(ints["var_rnoise"], [0.0285714, 0.25], rtol=6e-6)
    np.testing.assert_allclose(ints["err"], [0.321825, 0.661438], rtol=6e-6)
    np.testing.assert_array_equal(ints["dq"], [0, 2])
    # read-noise weighted: (5/0.0285714 + 10/0.25)/(35 + 4)
    assert close(r["slope"], 5.512821)
    assert close(r["var_poisson"], 0.0535714)
    assert close(r["var_rnoise"], 0.025641)
    assert close(r["err"], 0.281447)
    assert r["dq"] == 2


def test_two_integrations_pixel_b_dead_integration_counts_in_median():
    # int 0 saturated everywhere (median 0, still counted), int 1 rate 5 → R̃ = 2.5
    v = np.stack([ramp(5.0, 6), ramp(5.0, 6)])
    q = np.zeros((2, 6))
    q[0] = dq.SATURATED
    ints, r = fit(v, q)
    assert np.isnan(ints["slope"][0]) and close(ints["slope"][1], 5)
    np.testing.assert_array_equal(ints["dq"], [3, 0])
    assert close(r["slope"], 5)
    assert close(r["var_poisson"], 0.025)  # 2.5/(10·2·5)
    assert close(r["var_rnoise"], 0.0285714)
    assert r["dq"] == 2


def test_falling_ramp_has_no_poisson_variance():
    # rate −1 in both integrations: R̃ < 0 → var_p = D/(…) = 0; vr per int 6/210, rate half of it
    v = np.stack([ramp(-1.0, 6) + 1000, ramp(-1.0, 6) + 1000])
    ints, r = fit(v)
    np.testing.assert_allclose(ints["slope"], [-1, -1], rtol=1e-6)
    np.testing.assert_array_equal(ints["var_poisson"], [0, 0])
    np.testing.assert_allclose(ints["err"], np.sqrt(ints["var_rnoise"]), rtol=1e-12)
    assert close(r["slope"], -1)
    assert r["var_poisson"] == 0
    assert close(r["var_rnoise"], 0.0285714 / 2)
    assert close(r["err"], np.sqrt(r["var_rnoise"]))


def test_average_dark_current_adds_to_median_rate():
    # (5 + 0.5)/(10·2·5)
    ints, r = fit(ramp(5.0, 6), dark=0.5)
    assert close(r["var_poisson"], 0.055)
    assert close(ints["var_poisson"][0], 0.055)


def test_nframes4_one_group():
    # NGROUPS = 1: T1 = (4+1)·10/2 = 25 s → slope 8, vp 8/(25·2), vr = 2·50/(625·4)
    ints, r = fit([200.0], nframes=4, tframe=10.0, tgroup=40.0)
    check(ints, r, slope=8, vp=0.16, vr=0.04, err=np.sqrt(0.2), dq_=0)


def test_nframes4_two_groups():
    # slope 400/40, vp 10/(40·2·1), vr = 2·rn²/(TGROUP²·gain²) = 100/(4·1600)
    ints, r = fit([200.0, 600.0], nframes=4, tframe=10.0, tgroup=40.0)
    check(ints, r, slope=10, vp=0.125, vr=0.015625, err=np.sqrt(0.140625), dq_=0)


@pytest.mark.parametrize("suppress, expect", [(True, (NAN, 0, 0, 3)), (False, (30, 1.5, 0.25, 2))])
def test_zeroframe(suppress, expect):
    # 3 groups all SATURATED, frame 0 = 300 DN: used (T = TFRAME = 10 s) only without suppression;
    # vp = 30/(10·2), vr = 2·50/(100·4)
    slope, vp, vr, dq_ = expect
    kw = dict(nframes=4, tframe=10.0, tgroup=40.0, zeroframe=[300.0], suppress_one_group=suppress)
    ints, r = fit([1e5, 1e5, 1e5], np.full(3, dq.SATURATED), **kw)
    check(ints, r, slope=slope, vp=vp, vr=vr, err=np.sqrt(vp + vr), dq_=dq_)


@pytest.mark.parametrize(
    "values, slope, vp",
    [
        # S = 40·1/sqrt(50 + 40) = 4.22 → P = 0 (plain OLS): slope 10.1; median diff 9.5 → vp 9.5/4
        ([0, 12, 19, 33, 40], 10.1, 2.375),
        # S = 62.8 → P = 6: weights ∝ [1, 1/64, 0, 1/64, 1]
        ([0, 1010, 1990, 3020, 4000], 1000.0195, None),
        # P = 3
        ([0, 310, 590, 910, 1200], 300.0, None),
    ],
)
def test_optimal_weighting(values, slope, vp):
    ints, r = fit(values, gain=1.0, tframe=1.0, tgroup=1.0)
    assert r["slope"] == pytest.approx(slope, rel=1e-7)
    assert close(r["var_rnoise"], 5.0)  # 6·100/(1·120·1)
    if vp is not None:
        assert close(r["var_poisson"], vp)


def test_weights_power6_by_hand():
    # w = [1, 1/64, 0, 1/64, 1] at x = 0…4: slope = (Σw·Σwxy − Σwx·Σwy)/(Σw·Σwx² − (Σwx)²)
    y = np.array([0, 1010, 1990, 3020, 4000.0])
    w = np.array([1, 1 / 64, 0, 1 / 64, 1])
    x = np.arange(5.0)
    expect = (w.sum() * (w * x * y).sum() - (w * x).sum() * (w * y).sum()) / (
        w.sum() * (w * x * x).sum() - (w * x).sum() ** 2
    )
    ints, _ = fit(y, gain=1.0, tframe=1.0, tgroup=1.0)
    assert ints["slope"][0] == pytest.approx(expect, rel=1e-12)


# --- further rules of spec 08 -------------------------------------------------------------


def test_bad_gain_flags_and_nans():
    for g in (0.0, -1.0, NAN):
        ints, r = fit(ramp(5.0), gain=g)
        flags = dq.DO_NOT_USE | dq.NO_GAIN_VALUE  # 524289
        check(ints, r, slope=NAN, vp=0, vr=0, err=0, dq_=flags)


def test_persistence_does_not_split_but_is_propagated():
    q = np.zeros(10)
    q[4] = dq.PERSISTENCE
    ints, r = fit(ramp(5.0), q)
    check(ints, r, slope=5, vp=0.0277778, vr=0.00606061, err=0.183952, dq_=32)


def test_length1_segment_dropped_when_longer_exists():
    # DO_NOT_USE on g1 → [0] and [2–9]; [0] is dropped: vr = 6/(8³−8) = 6/504
    q = np.zeros(10)
    q[1] = dq.DO_NOT_USE
    ints, r = fit(ramp(5.0), q)
    assert close(r["var_rnoise"], 6 / 504)
    assert close(r["var_poisson"], 5 / (10 * 2 * 7))


def test_only_first_of_length1_segments_kept():
    # 5 groups, DO_NOT_USE on g1 and g3 → [0], [2], [4] all length 1 → only [0]:
    # slope 50/10; no finite difference → median falls back to data_0/TGROUP = 5 → vp 5/20;
    # vr = 2·rn²/(TGROUP²·gain²) = 1
    q = np.zeros(5)
    q[[1, 3]] = dq.DO_NOT_USE
    ints, r = fit(ramp(5.0, 5), q)
    check(ints, r, slope=5, vp=0.25, vr=1.0, err=np.sqrt(1.25), dq_=0)


def test_jump_combined_with_other_flag_ends_segment_without_joining():
    # g5 = JUMP_DET|DO_NOT_USE is excluded: segments [0–4] and [6–9]
    v = ramp(5.0)
    v[5:] += 500
    q = np.zeros(10)
    q[5] = dq.JUMP_DET | dq.DO_NOT_USE
    ints, r = fit(v, q)
    assert close(r["var_rnoise"], 1 / (120 / 6 + 60 / 6))
    assert r["dq"] == dq.JUMP_DET


def test_chargeloss_recomputes_only_read_noise():
    # g6–g9 CHARGELOSS|DO_NOT_USE: fit on [0–5] (vr 6/210, vp 5/(10·2·5) = 0.05); afterwards
    # var_rnoise is recomputed as if g6–g9 were clean (6/990); slope and err are not updated
    q = np.zeros(10)
    q[6:] = dq.CHARGELOSS | dq.DO_NOT_USE
    ints, r = fit(ramp(5.0), q)
    err = np.sqrt(0.05 + 6 / 210)
    check(ints, r, slope=5, vp=0.05, vr=0.00606061, err=err, dq_=0)


@pytest.mark.parametrize(
    "first, last, n",
    [(2, 7, 6), (None, 4, 5), (3, None, 7), (7, 7, 10), (-3, 99, 10)],  # first ≥ last → all
)
def test_firstgroup_lastgroup(first, last, n):
    ints, r = fit(ramp(5.0), firstgroup=first, lastgroup=last)
    assert close(r["slope"], 5)
    assert close(r["var_rnoise"], 6 / (n**3 - n))
    assert close(r["var_poisson"], 5 / (20 * (n - 1)))


def test_unusable_integration_with_pixel_saturated_flag():
    # SATURATED in pixeldq (some MASK files set it) makes every plane NaN
    ints, r = fit(ramp(5.0), pixeldq=dq.SATURATED)
    check(ints, r, slope=NAN, vp=0, vr=0, err=0, dq_=2)


def test_intercept_is_value_at_group0_time():
    # noiseless ramp offset 1000 + 7·10·g: the first segment's line at group 0 is 1000
    v = 1000 + 7.0 * 10 * np.arange(10)
    q = np.zeros(10)
    q[6] = dq.DO_NOT_USE
    ints, _ = fit(v, q)
    assert ints["intercept"][0] == pytest.approx(1000, rel=1e-9)
    # 2-group first segment: line through (3, d3) and (4, d4)
    q = np.zeros(10)
    q[[0, 1, 2, 5]] = dq.DO_NOT_USE
    ints, _ = fit(v, q)
    assert ints["intercept"][0] == pytest.approx(1000, rel=1e-9)


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(-50, 5000),
    offset=st.floats(0, 20000),
    ng=st.integers(2, 12),
    nint=st.integers(1, 3),
    tgroup=st.floats(0.5, 50),
)
def test_noiseless_ramp_returns_its_rate(rate, offset, ng, nint, tgroup):
    # whatever the SNR weighting picks, a straight line is fitted exactly (up to float32 data)
    v = offset + rate * tgroup * (np.arange(ng) + 1.0)
    vals = np.tile(v.astype(np.float32), (nint, 1))
    ints, r = fit(vals, tframe=tgroup, tgroup=tgroup)
    scale = max((abs(offset) + abs(rate) * tgroup * ng) * 1e-6 / tgroup, 1e-9)
    np.testing.assert_allclose(ints["slope"], rate, atol=scale)
    assert abs(r["slope"] - rate) <= scale


def _random_block(seed, nint=3, ng=7, ny=4, nx=9, chargeloss=True):
    rng = np.random.default_rng(seed)
    rate = rng.uniform(-2, 300, (ny, nx))
    data = rate * 10 * (np.arange(ng)[:, None, None] + 1) + rng.normal(0, 8, (nint, ng, ny, nx))
    cl = dq.CHARGELOSS | dq.DO_NOT_USE if chargeloss else 0
    flags = np.array([0, dq.JUMP_DET, dq.SATURATED, dq.DO_NOT_USE, dq.PERSISTENCE, cl], np.uint8)
    q = flags[rng.choice(6, size=data.shape, p=[0.8, 0.06, 0.05, 0.04, 0.03, 0.02])]
    pdq = rng.choice(np.array([0, 0, 0, 1, 2, 4096], np.uint32), size=(ny, nx))
    gain = rng.uniform(1, 3, (ny, nx)).astype(np.float32)
    gain[0, 0] = 0
    rn = rng.uniform(5, 20, (ny, nx)).astype(np.float32)
    dark = rng.uniform(0, 0.5, (ny, nx)).astype(np.float32)
    zf = rng.uniform(0, 500, (nint, ny, nx)).astype(np.float32)
    return data.astype(np.float32), q, pdq, gain, rn, dark, zf


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), cut=st.integers(1, 8), suppress=st.booleans())
def test_spatial_tiles_equal_whole(seed, cut, suppress):
    data, q, pdq, gain, rn, dark, zf = _random_block(seed)
    kw = dict(nframes=1, tframe=10.0, tgroup=10.0, suppress_one_group=suppress)
    whole = k.ramp_fit(data, q, pdq, gain, rn, dark, zf, **kw)
    left = k.ramp_fit(data[..., :cut], q[..., :cut], pdq[:, :cut], gain[:, :cut], rn[:, :cut], dark[:, :cut], zf[..., :cut], **kw)
    right = k.ramp_fit(data[..., cut:], q[..., cut:], pdq[:, cut:], gain[:, cut:], rn[:, cut:], dark[:, cut:], zf[..., cut:], **kw)
    np.testing.assert_array_equal(np.concatenate([left, right], axis=-1), whole)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), intercepts=st.booleans(), use_zf=st.booleans())
def test_fit_products_equal_products_of_fields(seed, intercepts, use_zf):
    data, q, pdq, gain, rn, dark, zf = _random_block(seed, ny=6)
    kw = dict(nframes=1, tframe=10.0, tgroup=10.0, suppress_one_group=not use_zf)
    zf = zf if use_zf else None
    whole = k.products_of_fields(k.ramp_fit(data, q, pdq, gain, rn, dark, zf, **kw),
                                 save_intercepts=intercepts)
    got = k.fit_products(data, q, pdq, gain, rn, dark, zf, save_intercepts=intercepts, **kw)
    assert set(got) == set(whole) == ({"data", "err", "var_poisson", "var_rnoise", "dq", "rate_terms"}
                                      | ({"intercept"} if intercepts else set()))
    for name in whole:
        assert got[name].dtype == whole[name].dtype
        np.testing.assert_array_equal(got[name], whole[name])
    assert got["rate_terms"].shape == (1, len(k.RATE_TERMS), *data.shape[2:])
    np.testing.assert_array_equal(got["rate_terms"][0], k.rate_partials(
        k.ramp_fit(data, q, pdq, gain, rn, dark, zf, **kw)))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), flagged=st.floats(0.0, 0.05), pixbad=st.booleans(),
       ng=st.integers(3, 12), save=st.booleans())
def test_unflagged_ramp_path_equals_general_path(seed, flagged, pixbad, ng, save):
    """The short path for unflagged integrations and pixels gives, bit for bit, what the
    general path gives (each pixel mixes both when some of its integrations are flagged)."""
    rng = np.random.default_rng(seed)
    nint, ny, nx = 7, 5, 6
    rate = rng.uniform(-5, 400, (ny, nx))
    data = (rng.normal(1000, 50, (1, 1, ny, nx)) + rate * 10.0 * np.arange(ng)[None, :, None, None]
            + rng.normal(0, 12, (nint, ng, ny, nx))).astype(np.float32)
    q = np.zeros(data.shape, np.uint8)
    hit = rng.random(data.shape) < flagged
    flags = np.array([dq.JUMP_DET, dq.SATURATED, dq.DO_NOT_USE, dq.PERSISTENCE], np.uint8)
    q[hit] = rng.choice(flags, hit.sum())
    pdq = np.zeros((ny, nx), np.uint32)
    if pixbad:
        pdq[0, :2] = [dq.DO_NOT_USE, dq.HOT]
    gain = rng.uniform(1.0, 2.0, (ny, nx)).astype(np.float32)
    gain[1, 1] = 0.0
    rn = rng.uniform(5, 15, (ny, nx)).astype(np.float32)
    dark = rng.uniform(0, 0.1, (ny, nx)).astype(np.float32)
    args = k._block_args(data, q, pdq, gain, rn, dark, None, nframes=1, tframe=10.0, tgroup=10.0)
    outs = []
    for clean_path in (True, False):
        if save:
            out = np.empty((k.NFIELDS, nint, ny, nx))
            k._fit_block(*args, clean_path, out, False, *k._NO_PRODUCTS)
        else:
            out = k._empty_products(nint, ny, nx, True)
            k._fit_block(*args, clean_path, k._NO_FIELDS, True, out["data"], out["err"],
                         out["var_poisson"], out["var_rnoise"], out["dq"], out["intercept"], True,
                         out["rate_terms"][0], k._TERM_FIELD, k._TERM_MASK)
            out = np.concatenate([out[n].reshape(-1).astype(np.float64) for n in sorted(out)])
        outs.append(out)
    assert np.isfinite(outs[0]).any()
    np.testing.assert_array_equal(outs[0], outs[1])
    # identical down to the sign of zeros and the NaN pattern
    assert np.array_equal(np.signbit(outs[0]), np.signbit(outs[1]))


def test_rate_partials_combine_by_addition():
    # chunk → combine → finalize over integration chunks equals the whole-block rate
    data, q, pdq, gain, rn, dark, _ = _random_block(7, nint=4)
    f = k.ramp_fit(data, q, pdq, gain, rn, dark, nframes=1, tframe=10.0, tgroup=10.0)
    whole = k.combine_rate(k.rate_partials(f), pdq, gain, nints=4)
    parts = k.rate_partials(f[:, :1]) + k.rate_partials(f[:, 1:3]) + k.rate_partials(f[:, 3:])
    split = k.combine_rate(parts, pdq, gain, nints=4)
    np.testing.assert_allclose(split, whole, rtol=1e-13, equal_nan=True)
    np.testing.assert_array_equal(split[4], whole[4])


def test_inputs_not_mutated():
    args = _random_block(3)
    copies = [a.copy() for a in args]
    k.ramp_fit(*args, nframes=1, tframe=10.0, tgroup=10.0, suppress_one_group=False, firstgroup=1, lastgroup=5)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


def test_unusable_pixels_are_nan_with_zero_variances():
    # (CHARGELOSS left out: its read-noise recomputation ignores usability, as the official one)
    data, q, pdq, gain, rn, dark, _ = _random_block(11, chargeloss=False)
    f = k.ramp_fit(data, q, pdq, gain, rn, dark, nframes=1, tframe=10.0, tgroup=10.0)
    F = k.F
    bad = (f[F["dq"]].astype(np.uint32) & (dq.DO_NOT_USE)) != 0
    assert bad.any()
    assert np.isnan(f[F["slope"]][bad]).all()
    for name in ("err", "var_poisson", "var_rnoise"):
        assert (f[F[name]][bad] == 0).all()
    r = k.combine_rate(k.rate_partials(f), pdq, gain, nints=data.shape[0])
    rbad = (r[4].astype(np.uint32) & (dq.DO_NOT_USE | dq.SATURATED)) != 0
    assert rbad[0, 0]  # gain 0
    assert np.isnan(r[0][rbad & ((pdq & 1) == 1)]).all()


def test_kernel_imports_no_dask_xarray_zarr():
    tree = ast.parse(inspect.getsource(k))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"dask", "xarray", "zarr"}


def test_resolve_group_range():
    assert k.resolve_group_range(None, None, 10) == (0, 9)
    assert k.resolve_group_range(2, 7, 10) == (2, 7)
    assert k.resolve_group_range(8, 3, 10) == (0, 9)
    assert k.resolve_group_range(-1, 20, 10) == (0, 9)


@numba.njit
def _median_of(values):
    buf = values.copy()
    return k._median_sorted_finite(buf, buf.size)


@pytest.mark.parametrize("n", list(range(0, 41)))
def test_median_of_ramp_differences_matches_numpy(n):
    """Sorting networks (≤ 32 values), the 8-value one and ranking all give numpy's median,
    with NaN ignored, ties and negative values."""
    rng = np.random.default_rng(n)
    for trial in range(200):
        v = rng.integers(-3, 4, n).astype(np.float64) if trial % 2 else rng.normal(0, 5, n)
        v[rng.random(n) < 0.2] = np.nan
        got = _median_of(v)
        if np.isnan(v).all():
            assert np.isnan(got)
        else:
            assert got == np.nanmedian(v)


def test_sorting_networks_sort():
    # 0-1 principle: a comparator network sorts every input iff it sorts every 0/1 input
    for n in range(2, 13):
        pairs = k._NETS[n, : k._NNET[n]]
        for bits in range(2 ** n):
            y = [(bits >> i) & 1 for i in range(n)]
            for a, b in pairs:
                y[a], y[b] = min(y[a], y[b]), max(y[a], y[b])
            assert y == sorted(y), n
