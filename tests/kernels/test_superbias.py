"""superbias: spec 02."""

from __future__ import annotations

import dask
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import superbias as K
from daskramp.steps import superbias as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp


def _bias():
    b = np.array([[10000.0, 12000.0, np.nan]], np.float32)
    bdq = np.array([[0, dq.UNRELIABLE_BIAS, 0]], np.uint32)
    return b, bdq


def test_kernels():
    b, _ = _bias()
    data = np.full((1, 2, 1, 3), 15000, np.uint16)  # raw input is accepted
    out = K.subtract_superbias(data, b)
    # 15000 − 10000, 15000 − 12000, NaN bias → 0 subtracted
    np.testing.assert_array_equal(out[0, :, 0], [[5000, 3000, 15000]] * 2)
    assert out.dtype == np.float32 and np.isnan(b[0, 2])
    z = np.array([[[0.0, 13000.0, 500.0]]], np.float32)
    np.testing.assert_array_equal(K.superbias_zeroframe(z, b), [[[0.0, 1000.0, 500.0]]])


def test_wrapper():
    b, bdq = _bias()
    ds = make_ramp(2, 3, 1, 3, rate=1.0, bias=20000.0, zeroframe=True)
    out = S.superbias(ds, superbias=b, superbias_dq=bdq)
    assert out.attrs["S_SUPERB"] == "COMPLETE"
    np.testing.assert_array_equal(out.data.values[:, :, 0, 0], ds.data.values[:, :, 0, 0] - 10000)
    np.testing.assert_array_equal(out.pixeldq.values, bdq)
    np.testing.assert_array_equal(out.zeroframe.values[:, 0, 1], ds.zeroframe.values[:, 0, 1] - 12000)
    assert S.superbias(ds).attrs["S_SUPERB"] == "SKIPPED"


def test_wrapper_is_lazy():
    b, bdq = _bias()
    ds = make_ramp(2, 3, 1, 3, zeroframe=True, chunks={"integration": 1})
    with forbid_compute():
        out = S.superbias(ds, superbias=b, superbias_dq=bdq)
    assert isinstance(out.data.data, dask.array.Array) and isinstance(out.zeroframe.data, dask.array.Array)


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_chunked_equals_whole(data):
    b, bdq = _bias()
    ds = make_ramp(3, 2, 1, 3, rate=2.0, bias=11000.0, zeroframe=True)
    whole = S.superbias(ds, superbias=b, superbias_dq=bdq)
    with dask.config.set(scheduler="synchronous"):
        part = S.superbias(ds.chunk(data.draw(chunkings(ds))), superbias=b, superbias_dq=bdq).compute()
    for v in ("data", "pixeldq", "zeroframe"):
        np.testing.assert_array_equal(part[v].values, whole[v].values)
