"""dq_init: spec 02."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import dq_init as K
from daskramp.steps import dq_init as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp


def _mask():
    m = np.zeros((2, 3), np.uint32)
    m[0, 0] = dq.HOT | dq.DO_NOT_USE  # 2049: only bit 0 reaches groupdq
    m[1, 2] = dq.HOT  # 2048: pixeldq only
    m[0, 2] = dq.REFERENCE_PIXEL | dq.DO_NOT_USE
    return m


def test_kernels():
    m = _mask()
    gdq = np.zeros((2, 3, 2, 3), np.uint8)
    gdq[0, 1, 1, 2] = dq.SATURATED
    out = K.dq_init_groupdq(gdq, m)
    assert out.dtype == np.uint8
    assert (out[:, :, 0, 0] == 1).all() and (out[:, :, 0, 2] == 1).all()
    assert out[0, 1, 1, 2] == dq.SATURATED and out[1, 1, 1, 2] == 0  # DQ is OR-ed, HOT not copied
    assert not gdq[:, :, 0, 0].any()  # input untouched
    pdq = K.dq_init_pixeldq(np.full((2, 3), dq.NONLINEAR, np.uint32), m)
    assert pdq[0, 0] == 2049 | dq.NONLINEAR and pdq[1, 2] == 2048 | dq.NONLINEAR


def test_wrapper_with_user_dq(tmp_path):
    from astropy.io import fits

    ds = make_ramp(2, 3, 2, 3)
    user = np.zeros((2, 3), np.int16)
    user[1, 0] = dq.DO_NOT_USE | dq.DEAD
    out = S.dq_init(ds, mask=_mask(), user_supplied_dq=user)
    assert out.attrs["S_DQINIT"] == "COMPLETE"
    assert out.pixeldq.values[1, 0] == 1025 and out.pixeldq.values[0, 0] == 2049
    assert (out.groupdq.values[:, :, 1, 0] == 1).all()
    path = tmp_path / "user.fits"
    fits.PrimaryHDU(user).writeto(path)
    from_file = S.dq_init(ds, mask=_mask(), user_supplied_dq=str(path))
    np.testing.assert_array_equal(from_file.pixeldq.values, out.pixeldq.values)
    with pytest.raises(ValueError, match="user_supplied_dq: shape"):
        S.dq_init(ds, mask=_mask(), user_supplied_dq=np.zeros((3, 3)))


def test_wrapper_skipped_and_missing_dq_arrays():
    ds = make_ramp(1, 2, 2, 3)
    assert S.dq_init(ds).attrs["S_DQINIT"] == "SKIPPED"
    bare = ds.drop_vars(["groupdq", "pixeldq"])
    out = S.dq_init(bare, mask=_mask())
    assert out.groupdq.dtype == np.uint8 and out.pixeldq.dtype == np.uint32
    assert out.pixeldq.values[0, 0] == 2049


def test_wrapper_is_lazy():
    ds = make_ramp(2, 3, 2, 3, chunks={"integration": 1})
    with forbid_compute():
        out = S.dq_init(ds, mask=_mask(), user_supplied_dq=np.ones((2, 3), np.uint32))
    assert isinstance(out.groupdq.data, dask.array.Array)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_chunked_equals_whole(data):
    ds = make_ramp(3, 2, 2, 3)
    with dask.config.set(scheduler="synchronous"):
        part = S.dq_init(ds.chunk(data.draw(chunkings(ds))), mask=_mask()).compute()
    whole = S.dq_init(ds, mask=_mask())
    for v in ("groupdq", "pixeldq"):
        np.testing.assert_array_equal(part[v].values, whole[v].values)
