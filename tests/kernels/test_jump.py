"""jump kernel: hand-worked cases (spec 09 §4), the method choice, post-processing, parity.

Unless stated: gain 1 e⁻/DN, READNOISE 10 DN, NFRAMES 1, TGROUP 10 s, flat ramps, so the σ of
one difference is sqrt(0 + 10²) = 10 e⁻ and a step of J DN has ratio J/10.
"""

import numpy as np
import pytest

from daskramp import dq
from daskramp.kernels import jump as J

JUMP, DNU, SAT = dq.JUMP_DET, dq.DO_NOT_USE, dq.SATURATED


def run(data, groupdq=None, gain=1.0, readnoise=10.0, plane_dnu=None, **kw):
    nint, ngroup, ny, nx = data.shape
    if groupdq is None:
        groupdq = np.zeros(data.shape, np.uint8)
    if plane_dnu is None:
        plane_dnu = np.all(groupdq & DNU, axis=(2, 3))
    gain = np.broadcast_to(np.float32(gain), (ny, nx)).copy()
    readnoise = np.broadcast_to(np.float32(readnoise), (ny, nx)).copy()
    kw.setdefault("nframes", 1)
    kw.setdefault("tgroup", 10.0)
    kw.setdefault("gain_median", float(np.nanmedian(gain)))
    return J.jump(data.astype(np.float32), groupdq, gain, readnoise, plane_dnu, **kw)


def flagged(out):
    """Sorted (integration, group, y, x) tuples with JUMP_DET."""
    return sorted(map(tuple, np.argwhere(out & JUMP).tolist()))


def flat(nint, ngroup, ny=5, nx=5, level=1000.0):
    return np.full((nint, ngroup, ny, nx), level, np.float32)


# ---------------------------------------------------------------------------- spec 09 §4


@pytest.mark.parametrize(
    "step, expected",
    [
        # ratio 3.5 < 4: nothing
        (35, []),
        # ratio 4.1 > 4 but < min_jump_to_flag_neighbors = 10: the pixel only
        (41, [(0, 6, 2, 2)]),
        # ratio 12 > 10: the pixel and its 4 edge neighbours, not the diagonals
        (120, [(0, 6, 1, 2), (0, 6, 2, 1), (0, 6, 2, 2), (0, 6, 2, 3), (0, 6, 3, 2)]),
    ],
)
def test_step_at_group_6_of_10(step, expected):
    data = flat(1, 10)
    data[0, 6:, 2, 2] += step
    assert flagged(run(data)) == expected


@pytest.mark.parametrize(
    "ngroup, nint, threshold",
    [(3, 1, 6.0), (4, 1, 5.0), (5, 1, 4.0), (3, 2, 4.0)],  # (3, 2): 4 pooled differences
)
@pytest.mark.parametrize("step", [42, 52, 62])
def test_threshold_by_pooled_usable_differences(ngroup, nint, threshold, step):
    # step in the last group of integration 0; the clipped median of |Δ| is 0 in every case
    # (2 usable → the smaller, 3 → the median, ≥ 4 → drop the max), so the ratio is step/10
    data = flat(nint, ngroup, 1, 1)
    data[0, -1] += step
    out = run(data, flag_4_neighbors=False)
    expected = [(0, ngroup - 1, 0, 0)] if step / 10 > threshold else []
    assert flagged(out) == expected


def test_threshold_table_rows():
    # the table of spec 09 §4 written out: J = 42, 52, 62 → detected?
    table = {(3, 1): (False, False, True), (4, 1): (False, True, True),
             (5, 1): (True, True, True), (3, 2): (True, True, True)}
    for (ngroup, nint), row in table.items():
        got = []
        for step in (42, 52, 62):
            data = flat(nint, ngroup, 1, 1)
            data[0, -1] += step
            got.append(bool(flagged(run(data, flag_4_neighbors=False))))
        assert tuple(got) == row, (ngroup, nint)


@pytest.mark.parametrize("ngroup, method", [(10, J.ITERATIVE), (12, J.SINGLE_PASS)])
@pytest.mark.parametrize("extra, detected", [(44.0, False), (45.5, True)])
def test_signal_and_gain(ngroup, method, extra, detected):
    # 50 DN/group at gain 2 → 100 e⁻ per difference = M; rn = 10·2 = 20 e⁻;
    # σ = sqrt(100 + 400) = 22.36 e⁻ = 11.18 DN, so the 4σ threshold is 44.7 DN
    assert J.choose_method(np.zeros((1, ngroup), bool), ngroups=ngroup) == method
    data = 1000 + 50 * np.arange(ngroup, dtype=np.float32)[None, :, None, None] * np.ones((1, 1, 3, 3))
    data[0, 5:, 1, 1] += extra
    out = run(data, gain=2.0)
    assert flagged(out) == ([(0, 5, 1, 1)] if detected else [])


def test_two_jumps_iterative():
    # 200 DN at g3 then 60 DN at g6: the first pass drops 200 (median 0, ratio 20), the
    # second finds 60 (ratio 6 > 4).  Neighbour flagging uses M₀ = 0, σ₀ = 10: ratio 20 at g3
    # (> 10: neighbours flagged), 6 at g6 (< 10: pixel only)
    data = flat(1, 8)
    data[0, 3:, 2, 2] += 200
    data[0, 6:, 2, 2] += 60
    out = run(data)
    assert flagged(out) == [(0, 3, 1, 2), (0, 3, 2, 1), (0, 3, 2, 2), (0, 3, 2, 3), (0, 3, 3, 2),
                            (0, 6, 2, 2)]


# ---------------------------------------------------------------------------- method choice


def test_choose_method_rules():
    none = np.zeros
    # ≥ 100 integrations → sigma clip (only_use_ints); 99 → two-point
    assert J.choose_method(none((100, 4), bool), ngroups=4) == J.SIGMA_CLIP
    assert J.choose_method(none((99, 4), bool), ngroups=4) == J.ITERATIVE
    # only_use_ints=False counts groups not fully DO_NOT_USE: 30 × 4 = 120 ≥ 100
    assert J.choose_method(none((30, 4), bool), ngroups=4, only_use_ints=False) == J.SIGMA_CLIP
    dnu = none((30, 4), bool)
    dnu[:, 0] = True  # 120 − 30 = 90 < 100
    assert J.choose_method(dnu, ngroups=4, only_use_ints=False) == J.ITERATIVE
    # 11 groups = 10 differences ≥ min_diffs_single_pass → single pass; one fully-DNU group in
    # any integration (nflag_max = 1) → 9 differences → iterative
    assert J.choose_method(none((2, 11), bool), ngroups=11) == J.SINGLE_PASS
    dnu = none((2, 11), bool)
    dnu[1, 4] = True
    assert J.choose_method(dnu, ngroups=11) == J.ITERATIVE
    # fewer than minimum_groups usable groups → nothing
    dnu = none((2, 4), bool)
    dnu[0, :2] = True
    assert J.choose_method(dnu, ngroups=4) == J.NONE


def test_too_few_usable_groups_flags_nothing():
    # 4 groups, groups 0-1 of integration 0 DO_NOT_USE everywhere → 2 usable < 3: no detection
    # even for a 1000 DN step in integration 1
    data = flat(2, 4)
    data[1, 2:, 2, 2] += 1000
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, :2] = DNU
    out = run(data, gdq)
    assert flagged(out) == []
    np.testing.assert_array_equal(out, gdq)


def test_plane_dnu_is_exposure_wide():
    # the block itself is all DO_NOT_USE in group 0, but plane_dnu says the frame is not: the
    # method stays single pass (11 groups).  Alternating ±30 e⁻ differences (5 negative,
    # 4 positive) have signed median −30, σ = sqrt(30 + 100) = 11.40, so +30 gives ratio 5.26
    # and is flagged; the iterative method (|Δ| all equal → median NaN) would flag nothing
    data = np.empty((1, 11, 1, 1), np.float32)
    data[0, :, 0, 0] = [0, 100, 70, 100, 70, 100, 70, 100, 70, 100, 70]
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 0] = DNU
    frame = np.zeros((1, 11), bool)
    assert flagged(run(data, gdq, plane_dnu=frame)) == [(0, 3, 0, 0), (0, 5, 0, 0), (0, 7, 0, 0),
                                                         (0, 9, 0, 0)]
    block_only = np.all(gdq & DNU, axis=(2, 3))
    assert flagged(run(data, gdq, plane_dnu=block_only)) == []


# ---------------------------------------------------------------------------- sigma clipping


def _sigclip_ramps(nint=120, ngroup=4, ny=3, nx=3, seed=1):
    # bounded noise: differences within ±10 DN, std ≈ 4 → bounds ≈ ±16: never clipped
    rng = np.random.default_rng(seed)
    return (1000 + rng.uniform(-5, 5, (nint, ngroup, ny, nx))).astype(np.float32)


def test_sigma_clip_one_outlier_integration():
    data = _sigclip_ramps()
    data[7, 2:, 1, 1] += 500  # one cosmic ray in integration 7, group 2
    out = run(data)
    # ratio vs M₀ ≈ 0, σ₀ ≈ 10 is ≈ 50: the neighbours are flagged too
    assert flagged(out) == [(7, 2, 0, 1), (7, 2, 1, 0), (7, 2, 1, 1), (7, 2, 1, 2), (7, 2, 2, 1)]
    out = run(data, flag_4_neighbors=False)
    assert flagged(out) == [(7, 2, 1, 1)]


def test_sigma_clip_across_all_groups():
    # only_use_ints=False: 30 integrations × 4 groups = 120 ≥ 100 → clip over (int, diff)
    data = _sigclip_ramps(nint=30)
    data[3, 1:, 0, 2] -= 400
    out = run(data, only_use_ints=False, flag_4_neighbors=False)
    assert flagged(out) == [(3, 1, 0, 2)]


def test_sigma_clip_plane_reset():
    # pixel 0 is DO_NOT_USE in (int 5, group 2), pixel 1 gets a jump there: every pixel of that
    # plane is JUMP_DET or DO_NOT_USE, so the JUMP_DET-only group is reset (official rule)
    data = _sigclip_ramps(ny=1, nx=2)
    data[5, 2:, 0, 1] += 500
    gdq = np.zeros(data.shape, np.uint8)
    gdq[5, 2, 0, 0] = DNU
    assert flagged(run(data, gdq, flag_4_neighbors=False)) == []
    assert flagged(run(data, gdq, flag_4_neighbors=False, sigclip_plane_reset=False)) == [(5, 2, 0, 1)]


# ---------------------------------------------------------------------------- post-processing


def test_zero_or_nan_gain_never_flags():
    data = flat(1, 10)
    data[0, 6:, 2, 2] += 5000
    data[0, 4:, 0, 0] += 5000
    gain = np.ones((5, 5), np.float32)
    gain[2, 2] = 0.0  # σ = 0 → NaN
    gain[0, 0] = np.nan  # every difference NaN
    out = J.jump(data, np.zeros(data.shape, np.uint8), gain, np.full((5, 5), 10, np.float32),
                 np.zeros((1, 10), bool), nframes=1, tgroup=10.0)
    assert flagged(out) == []


def test_clean_up_and_neighbours_skip_saturated():
    data = flat(1, 10)
    data[0, 6:, 2, 2] += 300  # ratio 30: neighbours flagged …
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 6:, 1, 2] = SAT  # … but not the saturated one above
    gdq[0, 6, 3, 2] = DNU  # … nor the DO_NOT_USE one below
    gdq[0, 2, 4, 4] = JUMP | DNU  # input flags: redundant JUMP_DET removed
    gdq[0, 9, 4, 4] = JUMP | SAT
    gdq[0, 8, 0, 0] = JUMP  # a lone input JUMP_DET is kept (and its neighbours are not
    # flagged: ratio 0)
    out = run(data, gdq)
    assert flagged(out) == [(0, 6, 2, 1), (0, 6, 2, 2), (0, 6, 2, 3), (0, 8, 0, 0)]
    assert out[0, 2, 4, 4] == DNU and out[0, 9, 4, 4] == SAT
    assert out[0, 6, 1, 2] == SAT and out[0, 6, 3, 2] == DNU


def test_after_jump_flagging():
    # 200 DN at g3, excess 200 e⁻ ≥ dn1·median(gain) = 100: flag floor(25/10) = 2 later
    # groups (g4, g5) unless saturated (g5 is); 200 < dn2 = 1000, so time2 does not apply.
    # Neighbours get JUMP_DET at g3 only (their own excess is 0 < 100)
    data = flat(1, 10)
    data[0, 3:, 2, 2] += 200
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 5:, 2, 2] = SAT
    out = run(data, gdq, after_jump_flag_dn1=100, after_jump_flag_time1=25,
              after_jump_flag_dn2=1000, after_jump_flag_time2=60)
    assert flagged(out) == [(0, 3, 1, 2), (0, 3, 2, 1), (0, 3, 2, 2), (0, 3, 2, 3), (0, 3, 3, 2),
                            (0, 4, 2, 2)]
    # a second, larger pair: 200 ≥ 150 → floor(60/10) = 6 groups after g3 (g4 … g9)
    out = run(data, after_jump_flag_dn1=100, after_jump_flag_time1=25,
              after_jump_flag_dn2=150, after_jump_flag_time2=60, flag_4_neighbors=False)
    assert flagged(out) == [(0, g, 2, 2) for g in range(3, 10)]


def test_nframes_scales_read_noise():
    # NFRAMES 4: σ = sqrt(100/4) = 5 e⁻, so a 25 DN step (ratio 5 > 4) is flagged; with
    # NFRAMES 1 (σ = 10, ratio 2.5) it is not
    data = flat(1, 10, 1, 1)
    data[0, 6:] += 25
    assert flagged(run(data, nframes=4)) == [(0, 6, 0, 0)]
    assert flagged(run(data, nframes=1)) == []


def test_two_groups_unchanged_and_inputs_not_mutated():
    data = flat(1, 2)
    data[0, 1] += 1000
    gdq = np.zeros(data.shape, np.uint8)
    np.testing.assert_array_equal(run(data, gdq), gdq)

    data = flat(2, 6)
    data[0, 3:, 2, 2] += 500
    gdq = np.zeros(data.shape, np.uint8)
    gdq[1, 4:, 0, 0] = SAT
    d0, g0 = data.copy(), gdq.copy()
    gain = np.ones((5, 5), np.float32)
    rn = np.full((5, 5), 10, np.float32)
    out = J.jump(data, gdq, gain, rn, np.zeros((2, 6), bool), nframes=1, tgroup=10.0)
    assert flagged(out)
    np.testing.assert_array_equal(data, d0)
    np.testing.assert_array_equal(gdq, g0)
    assert (gain == 1).all() and (rn == 10).all()


def test_bad_gain_pixeldq():
    pdq = np.array([[0, 2], [dq.REFERENCE_PIXEL, 0]], np.uint32)
    gain = np.array([[1.5, 0.0], [0.0, np.nan]], np.float32)
    out = J.bad_gain_pixeldq(pdq, gain)
    flag = dq.NO_GAIN_VALUE | dq.DO_NOT_USE
    np.testing.assert_array_equal(out, [[0, 2 | flag], [dq.REFERENCE_PIXEL | flag, flag]])
    assert out.dtype == np.uint32
    # spec 09 §7: a reference pixel with zero gain ends with 2148007937 (ramp_fit adds nothing)
    assert int(out[1, 0]) == 2148007937


def test_kernel_module_has_no_dask_imports():
    import daskramp.kernels.jump as mod

    src = open(mod.__file__).read()
    for name in ("import dask", "import xarray", "import zarr"):
        assert name not in src


# ---------------------------------------------------------------------------- parity


def _random_case(seed, nint, ngroup, ny, nx, ncr=20):
    rng = np.random.default_rng(seed)
    gain = rng.uniform(1.5, 2.5, (ny, nx)).astype(np.float32)
    gain.flat[rng.choice(ny * nx, 2, replace=False)] = 0
    rn = rng.uniform(8, 14, (ny, nx)).astype(np.float32)
    rate = rng.uniform(0, 200, (ny, nx))
    t = np.arange(ngroup)[None, :, None, None]
    data = (1000 + rate * t + rng.normal(0, 1, (nint, ngroup, ny, nx)) * rn / np.sqrt(2)).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    for _ in range(ncr):
        i, g, y, x = rng.integers(nint), rng.integers(1, ngroup), rng.integers(ny), rng.integers(nx)
        data[i, g:, y, x] += rng.uniform(20, 3000)
    for _ in range(5):
        i, g, y, x = rng.integers(nint), rng.integers(1, ngroup), rng.integers(ny), rng.integers(nx)
        gdq[i, g:, y, x] |= SAT
        i, g, y, x = rng.integers(nint), rng.integers(0, ngroup), rng.integers(ny), rng.integers(nx)
        gdq[i, g, y, x] |= DNU
    return data, gdq, gain, rn


@pytest.mark.parity
@pytest.mark.parametrize(
    "seed, shape, params",
    [
        (1, (2, 6, 20, 20), {}),  # iterative
        (2, (1, 12, 20, 20), {}),  # single pass
        (3, (120, 5, 10, 10), {"ncr": 60}),  # sigma clip across integrations
        (4, (2, 10, 16, 16), {"ncr": 40, "after_jump_flag_dn1": 100.0, "after_jump_flag_time1": 30.0,
                              "after_jump_flag_dn2": 1000.0, "after_jump_flag_time2": 60.0}),
    ],
)
def test_parity_with_stcal(seed, shape, params):
    """Bit-identical group DQ and pixel DQ against stcal's detect_jumps_data (jwst 3.0 stack)."""
    pytest.importorskip("jwst")
    from stcal.jump.jump import detect_jumps_data
    from stcal.jump.jump_class import JumpData

    params = dict(params)
    data, gdq, gain, rn = _random_case(seed, *shape, ncr=params.pop("ncr", 20))
    tgroup = 10.0
    flags = {"GOOD": 0, "DO_NOT_USE": DNU, "SATURATED": SAT, "JUMP_DET": JUMP,
             "NO_GAIN_VALUE": dq.NO_GAIN_VALUE, "REFERENCE_PIXEL": dq.REFERENCE_PIXEL}
    jd = JumpData(gain2d=gain.copy(), rnoise2d=rn.copy(), dqflags=flags)
    jd.init_arrays_from_arrays(data.copy(), gdq.copy(), np.zeros(shape[2:], np.uint32))
    jd.nframes = 1
    jd.dt_group = np.ones(1)
    jd.n_reads_groupdiff = np.ones(1) * 2
    jd.set_detection_settings(4.0, 6.0, 5.0, 1000.0, 10.0, True)
    jd.set_after_jump(params.get("after_jump_flag_dn1", 0.0), int(params.get("after_jump_flag_time1", 0) // tgroup),
                      params.get("after_jump_flag_dn2", 0.0), int(params.get("after_jump_flag_time2", 0) // tgroup))
    jd.set_snowball_info(False, 5, 1, 2, True, 2.5, 4, 25)
    jd.set_shower_info(False, 1.2, 90, 1, 2.6, 1.1, 10, 400)
    jd.set_sigma_clipping_info(3, 100, True)
    jd.max_cores = "1"
    official_gdq, official_pdq, _, _ = detect_jumps_data(jd)

    ours = J.jump(data, gdq, gain, rn, np.all(gdq & DNU, axis=(2, 3)), nframes=1, tgroup=tgroup,
                  gain_median=float(np.nanmedian(gain)), **params)
    assert np.count_nonzero(ours & JUMP) > 0
    np.testing.assert_array_equal(ours, official_gdq)
    np.testing.assert_array_equal(J.bad_gain_pixeldq(np.zeros(shape[2:], np.uint32), gain), official_pdq)


def _first_clip_reference(v, nsig):
    """Values outside median ± nsig·σ (population σ) of one sigma-clip iteration."""
    med = np.median(v)
    std = np.sqrt(np.mean((v - v.mean()) ** 2))
    return (v < med - nsig * std) | (v > med + nsig * std)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [3, 4, 7, 100, 158, 333])
def test_nothing_clipped_shortcut_is_sound(seed, n):
    """Whenever the shortcut says the first clip iteration removes nothing, it removes nothing;
    samples with outliers, heavy tails, ties and near-constant values included."""
    from daskramp.kernels.jump import _nothing_clipped

    rng = np.random.default_rng(seed * 1000 + n)
    shown = 0
    for trial in range(300):
        kind = trial % 6
        if kind == 0:
            v = rng.normal(50.0, 7.0, n)
        elif kind == 1:
            v = rng.standard_t(2, n) * 5.0 + 1e4
        elif kind == 2:
            v = rng.normal(0.0, 1.0, n)
            v[rng.integers(0, n, 1 + trial % 3)] += rng.uniform(2.0, 8.0) * rng.choice([-1, 1])
        elif kind == 3:
            v = rng.integers(0, 3, n).astype(float)  # heavy ties
        elif kind == 4:
            v = np.full(n, 0.1) + rng.normal(0, 1e-12, n) * (trial % 2)
        else:
            v = rng.exponential(3.0, n)
        for nsig in (1.5, 3.0, 4.0):
            buf = v.astype(np.float64).copy()
            if _nothing_clipped(buf, n, nsig):
                shown += 1
                assert not _first_clip_reference(v, nsig).any(), (kind, nsig, v)
    assert shown > 0


def test_nothing_clipped_shortcut_is_taken_for_gaussian_samples():
    """The shortcut decides most outlier-free TSO pixels (it is what makes sigma clipping fast)."""
    from daskramp.kernels.jump import _nothing_clipped

    rng = np.random.default_rng(3)
    taken = sum(_nothing_clipped(rng.normal(10.0, 2.0, 158), 158, 4.0) for _ in range(500))
    assert taken > 450


def _quiet_columns(diffs, nsig):
    from daskramp.kernels.jump import _columns_quiet

    nd = diffs.shape[1]
    quiet = np.empty(nd, np.int64)
    f = [np.empty(nd) for _ in range(5)]
    _columns_quiet(diffs, nsig, f[0], f[1], quiet, f[2], f[3], f[4], np.empty(nd, np.int64),
                   np.empty(nd, np.int64))
    return quiet.astype(bool)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nint", [3, 4, 9, 100, 158])
def test_quiet_columns_are_never_clipped(seed, nint):
    """A column shown quiet (median bracketed by counting) loses nothing to the first clip
    iteration of its finite values; outliers, heavy tails, ties, skew and NaNs included."""
    rng = np.random.default_rng(seed * 1000 + nint)
    shown = 0
    for trial in range(120):
        kind = trial % 6
        shape = (nint, 8)
        if kind == 0:
            v = rng.normal(50.0, 7.0, shape)
        elif kind == 1:
            v = rng.standard_t(2, shape) * 5.0 + 1e4
        elif kind == 2:
            v = rng.normal(0.0, 1.0, shape)
            hit = rng.integers(0, nint, 1 + trial % 3), rng.integers(0, 8)
            v[hit] += rng.uniform(2, 8) * rng.choice([-1, 1])
        elif kind == 3:
            v = rng.integers(0, 3, shape).astype(float)
        elif kind == 4:
            v = rng.exponential(3.0, shape) * rng.choice([-1, 1])
        else:
            v = rng.normal(0.0, 1.0, shape)
            v[rng.random(shape) < 0.2] = np.nan
        for nsig in (1.5, 3.0, 4.0):
            quiet = _quiet_columns(np.ascontiguousarray(v), nsig)
            for k in np.flatnonzero(quiet):
                col = v[:, k][np.isfinite(v[:, k])]
                shown += 1
                assert not _first_clip_reference(col, nsig).any(), (kind, nsig, col)
    assert shown > 0


def test_quiet_columns_decide_most_gaussian_columns():
    """Nearly every outlier-free TSO column (158 integrations) is shown quiet at 4 σ: only
    those go without the exact clip (what makes the sigma-clip mode fast)."""
    rng = np.random.default_rng(5)
    quiet = np.concatenate([_quiet_columns(rng.normal(10.0, 2.0, (158, 8)), 4.0)
                            for _ in range(200)])
    assert quiet.mean() > 0.9
