"""linearity: spec 05 and spec 09 §5."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import linearity as K
from daskramp.kernels.saturation import read_pattern
from daskramp.steps import linearity as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp

NLC = dq.NO_LIN_CORR


def _coeffs(shape, c=(0.0, 1.0, 1e-6)):
    return np.stack([np.full(shape, v, np.float32) for v in c])


def test_spec09_quadratic_and_saturated_group_kept():
    # F_c = F + 1e-6 F²: 10000 → 10000 + 100 = 10100; 20000 → 20000 + 400 = 20400;
    # the SATURATED group keeps 30000; a DO_NOT_USE group is still corrected
    data = np.array([10000, 20000, 30000, 10000], np.float32).reshape(1, 4, 1, 1)
    gdq = np.array([0, 0, dq.SATURATED, dq.DO_NOT_USE], np.uint8).reshape(1, 4, 1, 1)
    out = K.linearity_correction(data, gdq, K.prepare_coefficients(_coeffs((1, 1))))
    np.testing.assert_allclose(out.ravel(), [10100, 20400, 30000, 10100], rtol=1e-7)
    assert out.dtype == np.float32


def test_nan_zero_and_flagged_coefficients_give_identity():
    c = _coeffs((1, 4))
    c[2, 0, 0] = np.nan  # any NaN coefficient
    c[1, 0, 1] = 0.0  # linear term 0
    lin_dq = np.array([[0, 0, NLC, 0]], np.uint32)  # flagged in the LINEARITY DQ
    data = np.full((1, 2, 1, 4), 20000.0, np.float32)
    out = K.linearity_correction(data, np.zeros(data.shape, np.uint8), K.prepare_coefficients(c, lin_dq))
    np.testing.assert_allclose(out[0, :, 0], [[20000, 20000, 20000, 20400]] * 2, rtol=1e-7)
    pdq = K.linearity_pixeldq(np.zeros((1, 4), np.uint32), c, lin_dq)
    np.testing.assert_array_equal(pdq, [[1048576, 1048576, 1048576, 0]])


def test_horner_cubic():
    # c = [5, 2, 0.5, 0.25] at F = 2: 5 + 4 + 2 + 2 = 13
    c = np.array([5, 2, 0.5, 0.25], np.float32).reshape(4, 1, 1)
    np.testing.assert_allclose(K.apply_polynomial(np.array([[[2.0]]], np.float32), c), 13)


def test_zeroframe_zero_stays_zero():
    z = np.array([[[0.0, 10000.0]]], np.float32)
    out = K.linearity_zeroframe(z, _coeffs((1, 2)))
    np.testing.assert_allclose(out, [[[0.0, 10100.0]]], rtol=1e-7)


def _averaged_nonlinear_ramp(a, rate, nframes, ngroup, offset=500.0):
    # true (linear) frames s_k = offset + rate·k, measured frames x = s − a s² (non-linear),
    # groups = mean of NFRAMES measured frames
    k = np.arange(1, nframes * ngroup + 1, dtype=np.float64)
    s = offset + rate * k
    x = s - a * s**2
    groups = x.reshape(ngroup, nframes).mean(axis=1)
    truth = s.reshape(ngroup, nframes).mean(axis=1)
    return groups.astype(np.float32).reshape(1, ngroup, 1, 1), truth


def test_read_level_correction_recovers_frame_averages():
    # P is the series inverse of x = s − a s², Q = s − a s² itself. Classic correction of an
    # average is biased by ≈ a·var(frames in a group) = 1e-6 · 1.25e6 ≈ 1.25 DN; the read-level
    # correction rebuilds the reads and recovers the true averages to well below that.
    a = 1e-6
    data, truth = _averaged_nonlinear_ramp(a, 1000.0, 4, 5)
    P = np.array([0, 1, a, 2 * a**2, 5 * a**3], np.float32).reshape(5, 1, 1)
    Q = np.array([0, 1, -a], np.float32).reshape(3, 1, 1)
    gdq = np.zeros(data.shape, np.uint8)
    classic = K.linearity_correction(data, gdq, P)[0, :, 0, 0]
    rl = K.linearity_correction(data, gdq, P, inv_coeffs=Q, read_pattern=read_pattern(5, 4))[0, :, 0, 0]
    assert np.abs(classic - truth).max() > 1.0
    assert np.abs(rl - truth).max() < 0.1


def test_read_level_identity_leaves_data():
    data = np.random.default_rng(0).uniform(0, 30000, (2, 4, 3, 3)).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 3] = dq.SATURATED
    ident = _coeffs((3, 3), (0.0, 1.0))
    out = K.linearity_correction(data, gdq, ident, inv_coeffs=ident, read_pattern=read_pattern(4, 3))
    np.testing.assert_allclose(out, data, rtol=1e-6)


def test_kernel_does_not_mutate_inputs():
    data = np.full((1, 3, 2, 2), 1000.0, np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    c = _coeffs((2, 2))
    c[2, 0, 0] = np.nan
    c0 = c.copy()
    K.prepare_coefficients(c, np.zeros((2, 2), np.uint32))
    K.linearity_correction(data, gdq, K.prepare_coefficients(c), inv_coeffs=_coeffs((2, 2)), read_pattern=read_pattern(3, 2))
    np.testing.assert_array_equal(c, c0)
    assert (data == 1000).all() and not gdq.any()


# ---- wrapper -------------------------------------------------------------------------


def _case(seed, nframes=1, ny=6, nx=7):
    rng = np.random.default_rng(seed)
    ds = make_ramp(3, 4, ny, nx, rate=rng.uniform(0, 400, (ny, nx)), NFRAMES=nframes, zeroframe=True)
    gdq = np.where(rng.random(ds.groupdq.shape) < 0.1, dq.SATURATED, 0).astype(np.uint8)
    ds = ds.assign(groupdq=ds.groupdq.copy(data=gdq))
    c = _coeffs((ny, nx), (1.0, 1.0, 2e-6, 1e-11))
    c[2][rng.random((ny, nx)) < 0.1] = np.nan
    lin_dq = np.where(rng.random((ny, nx)) < 0.1, NLC, 0).astype(np.uint32)
    inv = _coeffs((ny, nx), (0.0, 1.0, -2e-6))
    return ds, c, lin_dq, inv


def test_wrapper_matches_kernel():
    ds, c, lin_dq, inv = _case(0)
    out = S.linearity(ds, coeffs=c, lin_dq=lin_dq, inv_coeffs=inv)  # NFRAMES 1 → classic
    prepared = K.prepare_coefficients(c, lin_dq)
    np.testing.assert_array_equal(out.data.values, K.linearity_correction(ds.data.values, ds.groupdq.values, prepared))
    np.testing.assert_array_equal(out.pixeldq.values, K.linearity_pixeldq(ds.pixeldq.values, c, lin_dq))
    np.testing.assert_array_equal(out.zeroframe.values, K.linearity_zeroframe(ds.zeroframe.values, prepared))
    assert out.attrs["S_LINEAR"] == "COMPLETE"
    assert S.linearity(ds).attrs["S_LINEAR"] == "SKIPPED"


def test_wrapper_uses_read_level_only_with_nframes_above_1():
    ds, c, lin_dq, inv = _case(1, nframes=4)
    out = S.linearity(ds, coeffs=c, lin_dq=lin_dq, inv_coeffs=inv)
    expect = K.linearity_correction(
        ds.data.values, ds.groupdq.values, K.prepare_coefficients(c, lin_dq),
        inv_coeffs=K.prepare_coefficients(inv, lin_dq), read_pattern=read_pattern(4, 4),
    )
    np.testing.assert_array_equal(out.data.values, expect)
    classic = S.linearity(ds, coeffs=c, lin_dq=lin_dq)
    assert not np.array_equal(classic.data.values, out.data.values)


def test_wrapper_is_lazy_and_rejects_bad_shapes():
    ds, c, lin_dq, inv = _case(2, nframes=2)
    with forbid_compute():
        out = S.linearity(ds.chunk({"integration": 1, "x": 3}), coeffs=c, lin_dq=lin_dq, inv_coeffs=inv)
    assert isinstance(out.data.data, dask.array.Array)
    with pytest.raises(ValueError, match=r"coeffs: image shape \(5, 7\)"):
        S.linearity(ds, coeffs=c[:, :5])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), nframes=st.sampled_from([1, 3]), data=st.data())
def test_chunked_equals_whole(seed, nframes, data):
    ds, c, lin_dq, inv = _case(seed, nframes=nframes)
    chunks = data.draw(chunkings(ds, spatial=True))
    whole = S.linearity(ds, coeffs=c, lin_dq=lin_dq, inv_coeffs=inv)
    with dask.config.set(scheduler="synchronous"):
        part = S.linearity(ds.chunk(chunks), coeffs=c, lin_dq=lin_dq, inv_coeffs=inv).compute()
    for v in ("data", "pixeldq", "zeroframe"):
        np.testing.assert_array_equal(part[v].values, whole[v].values)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), nframes=st.integers(1, 4))
def test_numba_engine_matches_numpy_reference(seed, nframes):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-100, 40000, (2, 5, 3, 4)).astype(np.float32)
    gdq = np.where(rng.random(data.shape) < 0.2, dq.SATURATED, 0).astype(np.uint8)
    c = K.prepare_coefficients(_coeffs((3, 4), (3.0, 1.0, 2e-6, 1e-11)))
    inv = K.prepare_coefficients(_coeffs((3, 4), (0.0, 1.0, -2e-6)))
    np.testing.assert_array_equal(
        K.linearity_correction(data, gdq, c, engine="numba"), K.linearity_correction(data, gdq, c, engine="numpy")
    )
    kw = {"inv_coeffs": inv, "read_pattern": read_pattern(5, nframes)}
    np.testing.assert_allclose(
        K.linearity_correction(data, gdq, c, engine="numba", **kw),
        K.linearity_correction(data, gdq, c, engine="numpy", **kw),
        rtol=2e-7, atol=1e-3,
    )
