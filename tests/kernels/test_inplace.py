"""Kernels that may write their result over their input (``out=``, see
:func:`daskramp.steps._apply.owned_window`) give the same numbers either way."""

import numpy as np
import pytest

from daskramp.dq import SATURATED
from daskramp.kernels import dark_current, linearity, refpix, superbias


def _ramp(rng, shape=(3, 5, 6, 7)):
    return (rng.random(shape) * 20000 + 10).astype(np.float32)


def _both(fn, data, *args, **kw):
    """``fn`` out of place and in place on a copy (a strided window of a larger array, as a
    fused tile's ramp is after a neighbour-looking step has trimmed its ghost pixels)."""
    expected = fn(data, *args, **kw)
    big = np.full((*data.shape[:2], data.shape[2] + 2, data.shape[3] + 2), np.nan, np.float32)
    view = big[:, :, 1:-1, 1:-1]
    view[...] = data
    got = fn(view, *args, out=view, **kw)
    assert got is view or np.shares_memory(got, view)
    np.testing.assert_array_equal(view, expected)
    # the ghost border is untouched
    assert np.isnan(big[:, :, 0]).all() and np.isnan(big[:, :, :, -1]).all()
    return expected


@pytest.mark.parametrize("seed", range(3))
def test_superbias_in_place(seed):
    rng = np.random.default_rng(seed)
    bias = rng.normal(10000, 50, (6, 7)).astype(np.float32)
    bias[2, 3] = np.nan
    out = _both(superbias.subtract_superbias, _ramp(rng), bias)
    assert out.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dark_in_place_rounds_once_as_out_of_place(dtype):
    rng = np.random.default_rng(4)
    dark = (rng.random((5, 6, 7)) * 3 + 1 / 3).astype(dtype)
    _both(dark_current.subtract_dark, _ramp(rng), dark)


@pytest.mark.parametrize("float64,fastaxis", [(False, 1), (True, 1), (False, -2), (True, 2)])
def test_refpix_in_place(float64, fastaxis):
    rng = np.random.default_rng(5)
    data = _ramp(rng)
    oy = rng.normal(0, 3, (3, 5, 6))
    ox = rng.normal(0, 3, (3, 5, 7))
    _both(refpix.apply_refpix, data, oy, ox, fastaxis=fastaxis, float64=float64)


@pytest.mark.parametrize("read_level", [False, True])
def test_linearity_in_place(read_level):
    rng = np.random.default_rng(6)
    data = _ramp(rng, (3, 5, 6, 7))
    gdq = np.zeros(data.shape, np.uint8)
    gdq[1, 3:, 2, 2] = SATURATED
    gdq[2, 4, :, 1] = SATURATED
    coeffs = np.stack([np.zeros((6, 7)), np.ones((6, 7)), np.full((6, 7), 2e-6),
                       np.full((6, 7), -3e-11)])
    kw = {}
    if read_level:
        inv = np.stack([np.zeros((6, 7)), np.ones((6, 7)), np.full((6, 7), -2e-6)])
        kw = {"inv_coeffs": inv, "read_pattern": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]}
    out = _both(linearity.linearity_correction, data, gdq, coeffs, **kw)
    # SATURATED groups keep their values
    assert out[1, 4, 2, 2] == data[1, 4, 2, 2]
