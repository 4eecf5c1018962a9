"""charge_migration: spec 06."""

from __future__ import annotations

import dask
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import charge_migration as K
from daskramp.steps import charge_migration as S
from daskramp.testing.ramps import chunkings, forbid_compute, make_ramp

CL = dq.CHARGELOSS | dq.DO_NOT_USE  # 129


def test_pixel_later_groups_and_edge_neighbours():
    # (2,2) exceeds 25000 DN from group 2 → groups 2…4 of the pixel and of its 4 edge
    # neighbours get 129; diagonals and groups 0–1 stay clean
    data = np.full((1, 5, 5, 5), 100.0, np.float32)
    data[0, 2:, 2, 2] = 26000.0
    out = K.charge_migration(data, np.zeros(data.shape, np.uint8))
    cross = np.zeros((5, 5), bool)
    cross[2, 1:4] = cross[1:4, 2] = True
    for g in range(5):
        np.testing.assert_array_equal(out[0, g], np.where(cross & (g >= 2), CL, 0))


def test_exact_do_not_use_byte_is_skipped_and_edges_clip():
    data = np.full((1, 3, 3, 3), 100.0, np.float32)
    data[0, :, 0, 0] = 30000.0  # corner: neighbours (0,1) and (1,0) only
    data[0, :, 2, 2] = 30000.0
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, :, 2, 2] = dq.DO_NOT_USE  # exactly 1 → not a trigger
    gdq[0, 0, 0, 0] = dq.DO_NOT_USE | dq.SATURATED  # 3 ≠ 1 → still triggers
    out = K.charge_migration(data, gdq)
    expect = np.zeros((3, 3), np.uint8)
    expect[0, 0] = expect[0, 1] = expect[1, 0] = CL
    expect[2, 2] = dq.DO_NOT_USE  # its own flag, nothing added
    np.testing.assert_array_equal(out[0, 1], expect)
    assert out[0, 0, 0, 0] == CL | dq.SATURATED
    assert out[0, 1, 2, 2] == dq.DO_NOT_USE
    assert gdq[0, 1, 0, 1] == 0  # input untouched


def test_threshold_is_strict():
    data = np.full((1, 3, 1, 1), 25000.0, np.float32)
    assert not K.charge_migration(data, np.zeros(data.shape, np.uint8)).any()
    assert K.charge_migration(data, np.zeros(data.shape, np.uint8), signal_threshold=24999.0).all()


def test_wrapper_defaults_and_skips():
    assert S.Params().skip is True and S.Params().signal_threshold == 25000.0
    ds = make_ramp(1, 2, 2, 2, rate=5000.0)
    assert S.charge_migration(ds).attrs["S_CHGMIG"] == "SKIPPED"  # NGROUPS < 3
    ds3 = make_ramp(1, 3, 2, 2, rate=1000.0)  # 10000, 20000, 30000 DN
    out = S.charge_migration(ds3)
    assert out.attrs["S_CHGMIG"] == "COMPLETE"
    np.testing.assert_array_equal(out.groupdq.values[0, :, 0, 0], [0, 0, CL])


def test_wrapper_is_lazy():
    ds = make_ramp(2, 3, 4, 4, rate=1000.0, chunks={"integration": 1, "y": 2})
    with forbid_compute():
        out = S.charge_migration(ds)
    assert isinstance(out.groupdq.data, dask.array.Array)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), data=st.data())
def test_chunked_equals_whole(seed, data):
    rng = np.random.default_rng(seed)
    ds = make_ramp(3, 4, 6, 7, rate=rng.uniform(0, 900, (6, 7)))
    gdq = np.where(rng.random(ds.groupdq.shape) < 0.2, dq.DO_NOT_USE, 0).astype(np.uint8)
    ds = ds.assign(groupdq=ds.groupdq.copy(data=gdq))
    whole = S.charge_migration(ds)
    with dask.config.set(scheduler="synchronous"):
        part = S.charge_migration(ds.chunk(data.draw(chunkings(ds, spatial=True)))).compute()
    np.testing.assert_array_equal(part.groupdq.values, whole.groupdq.values)
