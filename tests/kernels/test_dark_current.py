"""dark_current: spec 05 and spec 09 §5."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import dark_current as K
from daskramp.steps import dark_current as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp


def _frame_index_dark(nplanes, ny=2, nx=3):
    return np.broadcast_to(np.arange(nplanes, dtype=np.float32)[:, None, None], (nplanes, ny, nx)).copy()


def test_spec09_frame_averaging_with_groupgap():
    # NFRAMES 4, GROUPGAP 1: group g uses dark frames 5g … 5g+3 → means 1.5, 6.5, 11.5
    avg = K.prepare_dark(_frame_index_dark(20), ngroups=3, nframes=4, groupgap=1)
    np.testing.assert_array_equal(avg[:, 0, 0], [1.5, 6.5, 11.5])
    assert avg.dtype == np.float32


def test_spec09_extrapolated_dark():
    # 5 planes (0…4) for 3 groups of 4 frames: 12 > 5 frames → ceil(7/1) = 7 planes appended
    # continuing the last slope (5 … 11); averages 1.5, 5.5, 9.5
    dark = _frame_index_dark(5)
    ext = K.extrapolate_dark(dark, 7)
    np.testing.assert_array_equal(ext[:, 0, 0], np.arange(12))
    avg = K.prepare_dark(dark, ngroups=3, nframes=4, groupgap=0)
    np.testing.assert_array_equal(avg[:, 0, 0], [1.5, 5.5, 9.5])


def test_matching_timing_uses_planes_directly_and_nan_is_zero():
    dark = _frame_index_dark(10)
    dark[1, 0, 0] = np.nan
    avg = K.prepare_dark(dark, ngroups=3, nframes=1, groupgap=0)
    np.testing.assert_array_equal(avg[:, 0, 0], [0, 0, 2])
    np.testing.assert_array_equal(avg[:, 1, 1], [0, 1, 2])
    assert np.isnan(dark[1, 0, 0])  # the input keeps its NaN


def test_usable():
    assert K.dark_usable(nframes=4, groupgap=1, dark_nframes=1, dark_groupgap=0)
    assert not K.dark_usable(nframes=1, groupgap=0, dark_nframes=2, dark_groupgap=0)
    assert not K.dark_usable(nframes=4, groupgap=0, dark_nframes=1, dark_groupgap=1)


def test_subtract_dark_kernel():
    data = np.full((2, 3, 2, 3), 100.0, np.float32)
    out = K.subtract_dark(data, _frame_index_dark(3))
    np.testing.assert_array_equal(out[1, :, 1, 2], [100, 99, 98])
    assert out.dtype == np.float32 and (data == 100).all()


# ---- wrapper -------------------------------------------------------------------------


def _exposure(nframes=4, groupgap=1, ngroup=3, nint=2, ny=2, nx=3):
    return make_ramp(nint, ngroup, ny, nx, rate=0.0, bias=100.0, NFRAMES=nframes, GROUPGAP=groupgap)


def test_wrapper_spec09_numbers_and_dq():
    ds = _exposure()
    ddq = np.zeros((2, 3), np.uint32)
    ddq[0, 1] = dq.HOT
    out = S.dark_current(ds, dark=_frame_index_dark(20), dark_dq=ddq)
    np.testing.assert_array_equal(out.data.values[1, :, 0, 0], [100 - 1.5, 100 - 6.5, 100 - 11.5])
    np.testing.assert_array_equal(out.pixeldq.values, ddq)
    assert out.attrs["S_DARK"] == "COMPLETE"
    assert out.average_dark_current.dims == ("y", "x") and out.average_dark_current.dtype == np.float32
    assert not out.average_dark_current.values.any()


def test_wrapper_skipped_cases():
    ds = _exposure(nframes=1, groupgap=0)
    out = S.dark_current(ds, dark=_frame_index_dark(5), dark_nframes=2, dark_avdrkcur_keyword=0.3)
    assert out.attrs["S_DARK"] == "SKIPPED"
    np.testing.assert_array_equal(out.data.values, ds.data.values)
    np.testing.assert_allclose(out.average_dark_current.values, 0.3)  # set before the timing check
    none = S.dark_current(ds)
    assert none.attrs["S_DARK"] == "SKIPPED" and "average_dark_current" not in none


def test_average_dark_current_priority():
    ds = _exposure()
    dark = _frame_index_dark(20)
    img = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    adc = lambda **kw: S.dark_current(ds, dark=dark, **kw).average_dark_current.values  # noqa: E731
    np.testing.assert_allclose(adc(average_dark_current=0.5, dark_avdrkcur=img, dark_avdrkcur_keyword=0.3), 0.5)
    np.testing.assert_allclose(adc(dark_avdrkcur=img, dark_avdrkcur_keyword=0.3), img)
    np.testing.assert_allclose(adc(dark_avdrkcur=np.zeros((2, 3)), dark_avdrkcur_keyword=0.3), 0.3)
    np.testing.assert_allclose(adc(), 0.0)
    # a 2-D array of another shape is ignored (warning in the official step): value unchanged
    np.testing.assert_allclose(adc(dark_avdrkcur=np.ones((4, 4)), dark_avdrkcur_keyword=0.3), 0.0)


def test_dark_shape_mismatch_names_shapes():
    ds = _exposure()
    with pytest.raises(ValueError, match=r"dark: image shape \(4, 4\) does not match the science image \(2, 3\)"):
        S.dark_current(ds, dark=np.zeros((20, 4, 4), np.float32))


def test_wrapper_is_lazy():
    ds = _exposure().chunk({"integration": 1})
    with forbid_compute():
        out = S.dark_current(ds, dark=_frame_index_dark(20), dark_dq=np.zeros((2, 3), np.uint32))
    assert isinstance(out.data.data, dask.array.Array)


def test_dark_output_written(tmp_path):
    from astropy.io import fits

    path = tmp_path / "avg_dark.fits"
    S.dark_current(_exposure(), dark=_frame_index_dark(20), dark_output=str(path))
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(hdul["SCI"].data[:, 0, 0], [1.5, 6.5, 11.5])
        assert hdul[0].header["NFRAMES"] == 4


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), timing=st.sampled_from([(1, 0), (2, 1), (4, 0)]), data=st.data())
def test_chunked_equals_whole(seed, timing, data):
    rng = np.random.default_rng(seed)
    ds = make_ramp(3, 4, 4, 5, rate=rng.uniform(0, 50, (4, 5)), NFRAMES=timing[0], GROUPGAP=timing[1])
    dark = rng.normal(0, 5, (6, 4, 5)).astype(np.float32)
    dark[rng.random(dark.shape) < 0.05] = np.nan
    whole = S.dark_current(ds, dark=dark)
    chunks = data.draw(chunkings(ds, spatial=True))
    with dask.config.set(scheduler="synchronous"):
        part = S.dark_current(ds.chunk(chunks), dark=dark).compute()
    np.testing.assert_array_equal(part.data.values, whole.data.values)
