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
