"""The dask doorway: blocks, halos and contractions give the whole-array answer."""

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import maximum_filter

from daskramp.steps._apply import map_ramp_blocks

DIMS = ("integration", "group", "y", "x")


def _neighbour_max(ramp, image):
    # a kernel that needs a 1-pixel halo: 3x3 maximum of a 2-D input, broadcast over the ramp
    return ramp + maximum_filter(image, size=3, mode="constant")[None, None]


@settings(max_examples=25, deadline=None)
@given(
    ci=st.integers(1, 4), cy=st.integers(1, 9), cx=st.integers(1, 11), seed=st.integers(0, 2**16)
)
def test_chunked_equals_whole(ci, cy, cx, seed):
    rng = np.random.default_rng(seed)
    ramp = rng.normal(size=(4, 3, 9, 11)).astype("f4")
    image = rng.normal(size=(9, 11)).astype("f4")
    expected = _neighbour_max(ramp, image)
    lazy = xr.DataArray(da.from_array(ramp, chunks=(ci, 3, cy, cx)), dims=DIMS)
    img = xr.DataArray(image, dims=("y", "x"))
    out = map_ramp_blocks(_neighbour_max, lazy, img, dtype="f4", halo=1)
    np.testing.assert_array_equal(out.values, expected)


def test_numpy_inputs_run_eagerly():
    ramp = xr.DataArray(np.ones((2, 3, 4, 5), "f4"), dims=DIMS)
    out = map_ramp_blocks(lambda a: a.sum(axis=1), ramp, dims_out=("integration", "y", "x"), dtype="f4")
    assert isinstance(out.data, np.ndarray) and out.shape == (2, 4, 5) and float(out[0, 0, 0]) == 3


def test_graph_building_computes_nothing():
    def forbid(*a, **k):
        raise AssertionError("computed while building the graph")

    ramp = xr.DataArray(da.ones((4, 3, 8, 8), chunks=(1, 3, 8, 4), dtype="f4"), dims=DIMS)
    with dask.config.set(scheduler=forbid):
        out = map_ramp_blocks(lambda a: a * 2, ramp, dtype="f4", halo=1)
        stacked = map_ramp_blocks(lambda a: np.stack([a.sum(1), a.max(1)]), ramp,
                                  dims_out=("integration", "y", "x"), new_axis=("field", 2), dtype="f4")
    assert out.data.chunks == ramp.data.chunks
    assert stacked.dims == ("field", "integration", "y", "x") and stacked.shape == (2, 4, 8, 8)


def test_group_must_be_whole():
    ramp = xr.DataArray(da.ones((2, 4, 4, 4), chunks=(1, 2, 4, 4)), dims=DIMS)
    with pytest.raises(ValueError, match="group must be whole"):
        map_ramp_blocks(lambda a: a, ramp, dtype="f8")


def _add_one(a, out=None):
    return np.add(a, np.float32(1), out=out)


def test_inplace_kernels_write_over_their_input_only_in_an_owned_window():
    from daskramp.steps._apply import owned_window

    data = np.zeros((2, 3, 4, 5), "f4")
    ramp = xr.DataArray(data, dims=DIMS)
    # outside an owned window the input is never touched (the steps are pure functions)
    out = map_ramp_blocks(_add_one, ramp, dtype="f4", inplace=True)
    assert not np.shares_memory(out.values, data) and data.max() == 0 and out.values.min() == 1
    with owned_window():
        # a kernel that does not declare it, another dtype, a read-only array: a new array
        assert not np.shares_memory(map_ramp_blocks(_add_one, ramp, dtype="f4").values, data)
        assert not np.shares_memory(map_ramp_blocks(_add_one, ramp, dtype="f8", inplace=True).values, data)
        frozen = data.copy()
        frozen.flags.writeable = False
        res = map_ramp_blocks(_add_one, xr.DataArray(frozen, dims=DIMS), dtype="f4", inplace=True)
        assert not np.shares_memory(res.values, frozen)
        # dask blocks may be shared by other tasks: never written over
        lazy = xr.DataArray(da.from_array(data, chunks=(1, 3, 4, 5)), dims=DIMS)
        assert float(map_ramp_blocks(_add_one, lazy, dtype="f4", inplace=True).max()) == 1
        assert data.max() == 0
        # owned: the result is the input's own memory
        res = map_ramp_blocks(_add_one, ramp, dtype="f4", inplace=True)
        assert res.values is data or np.shares_memory(res.values, data)
    assert data.min() == 1
