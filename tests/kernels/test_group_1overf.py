"""group_1overf kernels on ramps built by hand, and properties of the line values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import group_1overf as k


def _ramp(nint=2, ngroup=4, ny=6, nx=5, rate=10.0, seed=0):
    """A ramp whose group differences are ``rate`` everywhere plus, per integration, group
    and column, a stripe ``s[i, g, x]`` (columns are the fast-read lines: SLOWAXIS = 1)."""
    rng = np.random.default_rng(seed)
    stripes = rng.normal(0, 5, (nint, ngroup, nx)).astype(np.float32)
    stripes[:, 0] = 0
    diffs = rate + np.broadcast_to(stripes[:, :, None, :], (nint, ngroup, ny, nx)).copy()
    diffs[:, 0] = 100.0  # group 0's level
    data = np.cumsum(diffs, axis=1, dtype=np.float64).astype(np.float32)
    return data, stripes


def test_line_values_are_the_stripes_plus_the_background():
    data, stripes = _ramp()
    gdq = np.zeros(data.shape, np.uint8)
    pdq = np.zeros(data.shape[2:], np.uint32)
    mask = np.ones(data.shape[2:], bool)
    vals = k.line_values(data, gdq, pdq, mask, np.zeros(data.shape[2], int), axis_to_correct=1)
    assert vals.shape == (1, 2, 4, 5)
    np.testing.assert_allclose(vals[0, :, 1:], stripes[:, 1:] + 10.0, atol=1e-4)
    assert (vals[0, :, 0] == 0).all()
    # subtracting them leaves every later group at group 0's level: background and stripes go
    out = k.subtract_lines(data, vals, np.zeros(data.shape[2], int), axis_to_correct=1)
    np.testing.assert_allclose(out, np.broadcast_to(data[:, :1], data.shape), atol=1e-3)


def test_masked_flagged_and_reference_pixels_do_not_count():
    data, stripes = _ramp()
    data = data.copy()
    # a bright trace in rows 1–2: masked; a hot pixel in a DO_NOT_USE group; a reference pixel
    data[:, 1:, 1:3, :] += np.arange(1, 4, dtype=np.float32)[None, :, None, None] * 500
    data[:, 2:, 4, 0] += 9000
    data[:, :, 5, 3] -= 7000 * np.arange(4, dtype=np.float32)[None, :]
    gdq = np.zeros(data.shape, np.uint8)
    gdq[:, 2, 4, 0] = dq.DO_NOT_USE  # in differences 2 (with group 1) and 3 (with group 3)
    gdq[:, 3, 4, 0] = dq.SATURATED
    pdq = np.zeros(data.shape[2:], np.uint32)
    pdq[5, 3] = dq.REFERENCE_PIXEL
    mask = np.ones(data.shape[2:], bool)
    mask[1:3] = False
    vals = k.line_values(data, gdq, pdq, mask, np.zeros(6, int), axis_to_correct=1, method="mean")
    np.testing.assert_allclose(vals[0, :, 1:], stripes[:, 1:] + 10.0, atol=1e-4)


def test_rows_are_the_lines_for_slowaxis_2_with_one_value_per_amplifier():
    data, stripes = _ramp(ny=5, nx=6)
    # transpose: rows are now the fast-read lines; two amplifiers along x with their own level
    data = np.ascontiguousarray(np.swapaxes(data, 2, 3))  # (i, g, y=5→x..., ...)
    chan = np.array([0, 0, 0, 1, 1])  # along x (5 columns after the swap)
    data[..., 3:] += 7.0 * np.arange(4, dtype=np.float32)[None, :, None, None]
    gdq = np.zeros(data.shape, np.uint8)
    pdq = np.zeros(data.shape[2:], np.uint32)
    vals = k.line_values(data, gdq, pdq, np.ones(data.shape[2:], bool), chan, axis_to_correct=2)
    assert vals.shape == (2, 2, 4, 6)
    np.testing.assert_allclose(vals[0, :, 1:], stripes[:, 1:] + 10.0, atol=1e-4)
    np.testing.assert_allclose(vals[1, :, 1:], stripes[:, 1:] + 17.0, atol=1e-4)


def test_median_ignores_an_outlier_the_clipped_mean_rejects():
    data, stripes = _ramp(nint=1, ngroup=2, ny=9, nx=1)
    data = data.copy()
    data[0, 1, 0, 0] += 1000.0
    args = (np.zeros(data.shape, np.uint8), np.zeros(data.shape[2:], np.uint32), np.ones(data.shape[2:], bool),
            np.zeros(9, int))
    med = k.line_values(data, *args, axis_to_correct=1, method="median")
    mean = k.line_values(data, *args, axis_to_correct=1, method="mean", sigma=2.0)
    np.testing.assert_allclose(med[0, 0, 1, 0], stripes[0, 1, 0] + 10.0, atol=1e-4)
    np.testing.assert_allclose(mean[0, 0, 1, 0], stripes[0, 1, 0] + 10.0, atol=1e-4)
    with pytest.raises(ValueError, match="method"):
        k.line_values(data, *args, axis_to_correct=1, method="mode")


def test_a_line_without_background_is_left_alone():
    data, _ = _ramp()
    mask = np.ones(data.shape[2:], bool)
    mask[:, 2] = False
    vals = k.line_values(data, np.zeros(data.shape, np.uint8), np.zeros(data.shape[2:], np.uint32), mask,
                         np.zeros(6, int), axis_to_correct=1)
    assert (vals[0, :, :, 2] == 0).all()
    out = k.subtract_lines(data, vals, np.zeros(6, int), axis_to_correct=1)
    np.testing.assert_array_equal(out[..., 2], data[..., 2])


def test_draft_slope_by_hand():
    data = np.zeros((3, 4, 1, 2), np.uint16)
    data[:, :, 0, 0] = np.array([[0, 10, 20, 30], [0, 10, 20, 90], [0, 10, 20, 33]])
    data[:, :, 0, 1] = 5
    rate = k.draft_slope(data, tgroup=2.0)
    # median of (30, 90, 33) / (3 groups × 2 s)
    np.testing.assert_allclose(rate, [[33 / 6, 0.0]])
    np.testing.assert_allclose(k.mean_of(rate, 3 * rate), 2 * rate)


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(1, 6), seed=st.integers(0, 1000))
def test_line_values_do_not_depend_on_where_lines_are_cut(cut, seed):
    """A block of whole lines gives each line the same value whatever else it holds."""
    data, _ = _ramp(nx=7, seed=seed)
    rng = np.random.default_rng(seed)
    data = data + rng.normal(0, 3, data.shape).astype(np.float32)
    gdq = np.where(rng.random(data.shape) < 0.05, dq.DO_NOT_USE, 0).astype(np.uint8)
    pdq = np.zeros(data.shape[2:], np.uint32)
    mask = rng.random(data.shape[2:]) < 0.8
    chan = np.zeros(6, int)
    whole = k.line_values(data, gdq, pdq, mask, chan, axis_to_correct=1)
    left = k.line_values(data[..., :cut], gdq[..., :cut], pdq[:, :cut], mask[:, :cut], chan, axis_to_correct=1)
    right = k.line_values(data[..., cut:], gdq[..., cut:], pdq[:, cut:], mask[:, cut:], chan, axis_to_correct=1)
    np.testing.assert_array_equal(np.concatenate([left, right], axis=-1), whole)


def test_trace_mask_grows_the_signal_by_whole_pixels():
    # a flat 1 DN/s background and a bright row 10 (x 5..14): the 3σ mask takes the row out;
    # grown by 2, rows 8..12 and columns 3..16 go too; NaN and 0 are never background (and
    # do not grow)
    rate = np.ones((24, 20), np.float32)
    rate[10, 5:15] = 500.0
    rate[0, 0], rate[0, 1] = np.nan, 0.0
    plain = k.trace_mask(rate, n_sigma=3.0)
    want = np.ones((24, 20), bool)
    want[10, 5:15] = want[0, 0] = want[0, 1] = False
    np.testing.assert_array_equal(plain, want)
    np.testing.assert_array_equal(k.trace_mask(rate, n_sigma=3.0, grow=0), plain)
    want[8:13, 3:17] = False
    np.testing.assert_array_equal(k.trace_mask(rate, n_sigma=3.0, grow=2), want)
