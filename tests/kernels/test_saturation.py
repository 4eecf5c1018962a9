"""saturation: spec 03 and the numbers of spec 09 §3."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import saturation as K
from daskramp.steps import saturation as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp

SAT, DNU, ADF = dq.SATURATED, dq.DO_NOT_USE, dq.AD_FLOOR


def _ramp(values_by_pixel, *, ngroup=4, shape=(5, 6), background=100.0, nint=1):
    data = np.full((nint, ngroup, *shape), background, np.float32)
    for (y, x), vals in values_by_pixel.items():
        data[:, :, y, x] = vals
    return data, np.zeros(data.shape, np.uint8)


def _box(shape, y, x, n=1):
    m = np.zeros(shape, bool)
    m[max(0, y - n) : y + n + 1, max(0, x - n) : x + n + 1] = True
    return m


def test_dilution_factors_nframes4():
    # group g averages frames 4g+1 … 4g+4: f = mean/last = (4g+2.5)/(4g+4)
    rp = K.read_pattern(4, 4)
    assert rp[1] == [5, 6, 7, 8]
    f = [np.mean(r) / r[-1] for r in rp]
    np.testing.assert_allclose(f, [0.625, 0.8125, 0.875, 0.90625])


def test_spec09_partial_saturation_and_ad_floor():
    # spec 09 §3: NFRAMES 4, threshold 1000, n_pix_grow_sat 1, no bias.
    # (2,2) = [300, 900, 1050, 1100]: 900 >= 1000·0.8125 in group 1 and group 2 saturated →
    # DO_NOT_USE on the 3×3 box in group 1; SATURATED on the box in groups 2–3; group 0 clean.
    # (0,4) = 0 DN in group 1 → 65 in that group only, not grown.
    data, gdq = _ramp({(2, 2): [300, 900, 1050, 1100], (0, 4): [100, 0, 100, 100]})
    thr = np.full((5, 6), 1000.0, np.float32)
    out = K.flag_saturated_pixels(data, gdq, thr, n_pix_grow_sat=1, read_pattern=K.read_pattern(4, 4))
    box = _box((5, 6), 2, 2)
    expect = np.zeros((4, 5, 6), np.uint8)
    expect[1][box] = DNU
    expect[2][box] = SAT
    expect[3][box] = SAT
    expect[1, 0, 4] = ADF | DNU
    assert ADF | DNU == 65
    np.testing.assert_array_equal(out[0], expect)


def test_without_read_pattern_only_pass1():
    # use_readpatt=False: the diluted group 1 (900 < 1000) is not flagged
    data, gdq = _ramp({(2, 2): [300, 900, 1050, 1100]})
    out = K.flag_saturated_pixels(data, gdq, np.full((5, 6), 1000.0, np.float32), read_pattern=None)
    assert not out[0, :2].any()
    assert (out[0, 2][_box((5, 6), 2, 2)] == SAT).all()


def test_equal_to_threshold_saturates_and_stays_saturated():
    # D == T counts (>=); once saturated, later groups stay flagged although the value drops
    data, gdq = _ramp({(1, 1): [500, 1000, 400, 10]})
    out = K.flag_saturated_pixels(data, gdq, np.full((5, 6), 1000.0, np.float32), n_pix_grow_sat=0)
    np.testing.assert_array_equal(out[0, :, 1, 1], [0, SAT, SAT, SAT])
    assert np.count_nonzero(out) == 3


def test_negative_and_zero_are_ad_floor_this_group_only():
    data, gdq = _ramp({(1, 1): [-5, 200, 0, 300]})
    out = K.flag_saturated_pixels(data, gdq, np.full((5, 6), 1000.0, np.float32), n_pix_grow_sat=2)
    np.testing.assert_array_equal(out[0, :, 1, 1], [65, 0, 65, 0])
    assert np.count_nonzero(out) == 2  # no growth of A/D floor flags


def test_growth_clipped_at_edges():
    # a saturated corner pixel flags only the 2×2 (n=1) or 3×3 (n=2) part inside the array;
    # nothing wraps to the opposite edges
    data, gdq = _ramp({(0, 0): [2000] * 4}, shape=(6, 7))
    for n in (1, 2):
        out = K.flag_saturated_pixels(data, gdq, np.full((6, 7), 1000.0, np.float32), n_pix_grow_sat=n)
        expect = np.zeros((6, 7), bool)
        expect[: n + 1, : n + 1] = True
        for g in range(4):
            np.testing.assert_array_equal(out[0, g] == SAT, expect)


def test_nan_threshold_and_no_sat_check_never_saturate():
    data, gdq = _ramp({(1, 1): [60000] * 4, (3, 3): [60000] * 4})
    thr = np.full((5, 6), 1000.0, np.float32)
    thr[1, 1] = np.nan
    sdq = np.zeros((5, 6), np.uint32)
    sdq[3, 3] = dq.NO_SAT_CHECK
    out = K.flag_saturated_pixels(data, gdq, thr, sdq, n_pix_grow_sat=0, read_pattern=K.read_pattern(4, 4))
    assert not out.any()
    pdq = K.saturation_pixeldq(np.zeros((5, 6), np.uint32), sdq, thr)
    assert pdq[1, 1] == 2097152 and pdq[3, 3] == 2097152
    assert np.count_nonzero(pdq) == 2


def test_second_group_test():
    # NFRAMES 4, T 1000, no bias. (2,2) = [100, 500, 1200, 1300]:
    # group 0 predicts 100/2.5·12 = 480 < 1000 by the end of group 2; the jump 400 exceeds
    # (1000−100)/4 = 225; group 2 saturated, group 1 not; 500 < 1000·0.8125 so the backward
    # pass does not catch it → DO_NOT_USE on group 1 of that pixel only (no growth).
    data, gdq = _ramp({(2, 2): [100, 500, 1200, 1300]})
    out = K.flag_saturated_pixels(
        data, gdq, np.full((5, 6), 1000.0, np.float32), n_pix_grow_sat=1, read_pattern=K.read_pattern(4, 4)
    )
    assert out[0, 1, 2, 2] == DNU
    assert np.count_nonzero(out[0, 1]) == 1
    assert (out[0, 2][_box((5, 6), 2, 2)] == SAT).all()
    # with a bias of 60 the prediction becomes (100−60)/2.5·12 + 60 = 252: still quiet → flagged;
    # a bias of NaN makes the comparison false → not flagged
    out_nan = K.flag_saturated_pixels(
        data, gdq, np.full((5, 6), 1000.0, np.float32), None, np.full((5, 6), np.nan, np.float32),
        n_pix_grow_sat=1, read_pattern=K.read_pattern(4, 4),
    )
    assert out_nan[0, 1, 2, 2] == 0


def test_existing_saturated_flag_is_grown():
    data, gdq = _ramp({})
    gdq[0, 2, 2, 2] = SAT
    out = K.flag_saturated_pixels(data, gdq, np.full((5, 6), 1000.0, np.float32))
    assert (out[0, 2][_box((5, 6), 2, 2)] == SAT).all()
    assert not out[0, 3].any()


def test_zeroframe():
    # Z >= T → 0 with growth; Z <= 0 stays 0 (A/D floor, not grown); the rest untouched
    z = np.full((1, 5, 6), 50.0, np.float32)
    z[0, 2, 2] = 1500.0
    z[0, 0, 5] = -1.0
    out = K.saturation_zeroframe(z, np.full((5, 6), 1000.0, np.float32), n_pix_grow_sat=1)
    expect = np.full((5, 6), 50.0, np.float32)
    expect[_box((5, 6), 2, 2)] = 0
    expect[0, 5] = 0
    np.testing.assert_array_equal(out[0], expect)


def test_kernel_does_not_mutate_inputs():
    rng = np.random.default_rng(0)
    data = rng.uniform(-10, 1500, (2, 5, 6, 7)).astype(np.float32)
    gdq = rng.integers(0, 3, data.shape).astype(np.uint8)
    thr = np.full((6, 7), 1000.0, np.float32)
    thr[0, 0] = np.nan
    sdq = np.zeros((6, 7), np.uint32)
    copies = [a.copy() for a in (data, gdq, thr, sdq)]
    K.flag_saturated_pixels(data, gdq, thr, sdq, thr * 0.1, read_pattern=K.read_pattern(5, 2))
    z = data[:, 0].copy()
    K.saturation_zeroframe(z, thr, sdq)
    for a, b in zip((data, gdq, thr, sdq), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(z, data[:, 0])


# ---- wrapper -------------------------------------------------------------------------


def _exposure(seed, nint=3, ngroup=5, ny=9, nx=11, nframes=2):
    rng = np.random.default_rng(seed)
    ds = make_ramp(nint, ngroup, ny, nx, rate=0.0, NFRAMES=nframes, zeroframe=True)
    data = rng.uniform(-20, 1300, ds.data.shape).astype(np.float32)
    data = np.sort(data, axis=1)  # rising ramps, so saturation happens part way
    zf = rng.uniform(-20, 1300, ds.zeroframe.shape).astype(np.float32)
    thr = rng.uniform(900, 1100, (ny, nx)).astype(np.float32)
    thr[rng.random((ny, nx)) < 0.05] = np.nan
    sdq = np.where(rng.random((ny, nx)) < 0.05, dq.NO_SAT_CHECK | dq.DO_NOT_USE, 0).astype(np.uint32)
    bias = rng.uniform(0, 50, (ny, nx)).astype(np.float32)
    return ds.assign(data=ds.data.copy(data=data), zeroframe=ds.zeroframe.copy(data=zf)), thr, sdq, bias


def test_wrapper_matches_kernel_and_sets_status():
    ds, thr, sdq, bias = _exposure(1)
    out = S.saturation(ds, threshold=thr, threshold_dq=sdq, superbias=bias)
    expect = K.flag_saturated_pixels(
        ds.data.values, ds.groupdq.values, thr, sdq, bias, n_pix_grow_sat=1, read_pattern=K.read_pattern(5, 2)
    )
    np.testing.assert_array_equal(out.groupdq.values, expect)
    np.testing.assert_array_equal(out.pixeldq.values, K.saturation_pixeldq(ds.pixeldq.values, sdq, thr))
    np.testing.assert_array_equal(out.zeroframe.values, K.saturation_zeroframe(ds.zeroframe.values, thr, sdq))
    np.testing.assert_array_equal(out.data.values, ds.data.values)
    assert out.attrs["S_SATURA"] == "COMPLETE" and "S_SATURA" not in ds.attrs


def test_wrapper_skipped_without_threshold():
    ds, *_ = _exposure(2)
    out = S.saturation(ds)
    assert out.attrs["S_SATURA"] == "SKIPPED"
    assert out.groupdq is not None and not out.groupdq.values.any()
    assert S.saturation(ds, threshold=np.ones((9, 11)), skip=True).attrs["S_SATURA"] == "SKIPPED"


def test_saturation_scale_and_user_threshold():
    # a 600 DN group is below the 1000 DN reference threshold, but above 50 % of it
    data = np.full((1, 3, 4, 4), 100.0, np.float32)
    data[0, 1:, 2, 2] = 600.0
    ds = make_ramp(1, 3, 4, 4).assign(data=(("integration", "group", "y", "x"), data))
    thr = np.full((4, 4), 1000.0, np.float32)
    base = S.saturation(ds, threshold=thr, n_pix_grow_sat=0, use_readpatt=False)
    assert not base.groupdq.values.any()
    half = S.saturation(ds, threshold=thr, n_pix_grow_sat=0, use_readpatt=False, saturation_scale=0.5)
    np.testing.assert_array_equal(half.groupdq.values[0, :, 2, 2], [0, SAT, SAT])
    user = S.saturation(ds, threshold=thr, user_threshold=np.full((4, 4), 550.0), n_pix_grow_sat=0, use_readpatt=False)
    np.testing.assert_array_equal(user.groupdq.values, half.groupdq.values)
    assert S.Params().saturation_scale == 1.0 and S.Params().n_pix_grow_sat == 1


def test_reference_shape_mismatch_is_clear():
    ds, *_ = _exposure(3)
    with pytest.raises(ValueError, match=r"threshold: shape \(3, 3\)"):
        S.saturation(ds, threshold=np.ones((3, 3)))


def test_wrapper_is_lazy():
    ds, thr, sdq, bias = _exposure(4)
    lazy = ds.chunk({"integration": 1, "y": 4, "x": 5})
    with forbid_compute():
        out = S.saturation(lazy, threshold=thr, threshold_dq=sdq, superbias=bias, n_pix_grow_sat=2)
    assert isinstance(out.groupdq.data, dask.array.Array)
    assert isinstance(out.zeroframe.data, dask.array.Array)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n=st.integers(0, 2), data=st.data())
def test_chunked_equals_whole(seed, n, data):
    ds, thr, sdq, bias = _exposure(seed, ny=8, nx=9)
    chunks = data.draw(chunkings(ds, spatial=True))
    whole = S.saturation(ds, threshold=thr, threshold_dq=sdq, superbias=bias, n_pix_grow_sat=n)
    with dask.config.set(scheduler="synchronous"):
        part = S.saturation(
            ds.chunk(chunks), threshold=xr.DataArray(thr, dims=("y", "x")), threshold_dq=sdq,
            superbias=bias, n_pix_grow_sat=n,
        ).compute()
    for v in ("groupdq", "pixeldq", "zeroframe"):
        np.testing.assert_array_equal(part[v].values, whole[v].values)


@pytest.mark.parametrize(
    "module",
    ["group_scale", "dq_init", "saturation", "superbias", "linearity", "dark_current", "charge_migration", "gain_scale"],
)
def test_kernel_modules_import_numpy_only(module):
    import ast
    import importlib

    src = importlib.import_module(f"daskramp.kernels.{module}").__file__
    tree = ast.parse(open(src).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"dask", "xarray", "zarr"}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(0, 2), raw=st.booleans())
def test_numba_engine_matches_numpy_reference(seed, n, raw):
    ds, thr, sdq, bias = _exposure(seed, ny=6, nx=7)
    data = ds.data.values.astype(np.uint16) if raw else ds.data.values
    gdq = np.random.default_rng(seed).integers(0, 4, data.shape).astype(np.uint8)
    kw = {"n_pix_grow_sat": n, "read_pattern": K.read_pattern(5, 2)}
    np.testing.assert_array_equal(
        K.flag_saturated_pixels(data, gdq, thr, sdq, bias, engine="numba", **kw),
        K.flag_saturated_pixels(data, gdq, thr, sdq, bias, engine="numpy", **kw),
    )
