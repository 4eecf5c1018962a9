"""group_scale: spec 02 and spec 09 §5."""

from __future__ import annotations

import dask
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp.kernels import group_scale as K
from daskramp.steps import group_scale as S
from daskramp.steps._wrapper import to_float32
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp


def test_decision_table():
    assert not K.group_scale_needed(None, 8)  # NFRAMES missing
    assert not K.group_scale_needed(4, None)  # FRMDIVSR missing
    assert not K.group_scale_needed(5, None)  # missing even when NFRAMES is not a power of 2
    assert not K.group_scale_needed(4, 4)
    assert K.group_scale_needed(5, 8)


def test_spec09_nframes5_frmdivsr8():
    # NFRAMES 5 averaged on board with FRMDIVSR 8: groups are low by 5/8 → × 1.6
    data = np.array([100, 250, 1000], np.float32).reshape(1, 3, 1, 1)
    out = K.group_scale(data, nframes=5, frame_divisor=8)
    np.testing.assert_allclose(out.ravel(), [160, 400, 1600], rtol=1e-7)
    assert out.dtype == np.float32 and data[0, 0, 0, 0] == 100


def test_wrapper_status_and_raw_input():
    raw = make_ramp(2, 3, 2, 2, raw=True, rate=1.0, NFRAMES=5, FRMDIVSR=8, zeroframe=True)
    out = S.group_scale(raw)
    assert out.attrs["S_GRPSCL"] == "COMPLETE" and out.data.dtype == np.float32
    np.testing.assert_allclose(out.data.values, raw.data.values.astype(np.float32) * 1.6, rtol=1e-7)
    np.testing.assert_array_equal(out.zeroframe.values, raw.zeroframe.values)  # untouched
    same = S.group_scale(make_ramp(1, 3, 2, 2, NFRAMES=4))
    assert same.attrs["S_GRPSCL"] == "SKIPPED"
    nodiv = make_ramp(1, 3, 2, 2, NFRAMES=5)
    del nodiv.attrs["FRMDIVSR"]
    assert S.group_scale(nodiv).attrs["S_GRPSCL"] == "SKIPPED"


def test_to_float32_is_lazy():
    raw = make_ramp(2, 3, 2, 2, raw=True, zeroframe=True, chunks={"integration": 1})
    with forbid_compute():
        f = to_float32(raw)
        out = S.group_scale(f.assign_attrs(NFRAMES=5, FRMDIVSR=8))
    assert f.data.dtype == np.float32 and f.zeroframe.dtype == np.float32
    assert isinstance(out.data.data, dask.array.Array)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 100), data=st.data())
def test_chunked_equals_whole(seed, data):
    ds = make_ramp(3, 3, 3, 4, rate=float(seed), NFRAMES=3, FRMDIVSR=4)
    chunks = data.draw(chunkings(ds))
    with dask.config.set(scheduler="synchronous"):
        part = S.group_scale(ds.chunk(chunks)).compute()
    np.testing.assert_array_equal(part.data.values, S.group_scale(ds).data.values)
