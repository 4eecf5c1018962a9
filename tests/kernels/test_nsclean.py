"""NSClean (clean_flicker_noise ``fit_method='fft'``) and the whole-image corrections:
hand cases, properties, and the official functions on the same inputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import clean_flicker_noise as k
from daskramp.kernels import nsclean

_HAS_JWST = importlib.util.find_spec("jwst") is not None


def _read_order_signal(shape, detector, amplitude=3.0, hz=150.0):
    """A sinusoid of ``hz`` on the pixel clock (line overheads included), in the DMS frame."""
    ny, nx = shape
    slow, fast = nx, ny  # NIRSpec subarrays: the fast axis is y
    ticks = np.arange(slow)[:, None] * (fast + nsclean.NEW_LINE_OVERHEAD) + np.arange(fast)[None, :]
    wave = amplitude * np.sin(2 * np.pi * hz * ticks * float(nsclean.PIXEL_TIME))
    return nsclean.from_detector(wave, detector).astype(np.float32)


def test_read_order_round_trip():
    a = np.arange(12.0).reshape(3, 4)
    for det in ("NRS1", "NRS2"):
        assert nsclean.to_detector(a, det).shape == (4, 3)
        np.testing.assert_array_equal(nsclean.from_detector(nsclean.to_detector(a, det), det), a)
    # NRS2 reads the columns in the opposite order
    np.testing.assert_array_equal(nsclean.to_detector(a, "NRS2")[0], a[:, -1])


def test_apodizer_corners():
    fc = nsclean.DEFAULT_FC
    f = np.array([0, 1000, (fc[0] + fc[1]) / 2, 1300, 30000, (fc[2] + fc[3]) / 2, 50000], np.float32)
    g = nsclean.apodizer(f, fc)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [1, 1, 0.5, 0, 0, 0.5, 1], atol=1e-6)
    assert nsclean.frequency_cutoffs("ALLSLITS") == nsclean.ALLSLITS_FC
    assert nsclean.frequency_cutoffs("SUB2048") == nsclean.DEFAULT_FC


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=80), st.integers(5, 120))
def test_sections_cover_the_masked_rows_and_overlap(per_row, npix_iter):
    mask = np.zeros((len(per_row), 40), bool)
    for i, n in enumerate(per_row):
        mask[i, :n] = True
    parts = nsclean.sections(mask, npix_iter)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        assert parts == []
        return
    assert parts[0][0] == rows[0]
    assert parts[-1][0] + parts[-1][1] == rows[-1] + 1
    cum = np.concatenate(([0], np.cumsum(mask.sum(axis=1))))
    for (s0, n0), (s1, _) in zip(parts, parts[1:]):
        assert s0 < s1 <= s0 + n0  # each section starts inside the one before: no gap
        # a section that is not the last holds more than npix_iter background pixels
        assert cum[s0 + n0] - cum[s0] > npix_iter


@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
def test_low_frequency_noise_is_removed(detector):
    """A 150 Hz sinusoid on the pixel clock (inside the pass band) plus white noise: the
    cleaned background keeps the white noise only; masked rows are corrected too."""
    shape = (32, 512)
    rng = np.random.default_rng(3)
    white = rng.normal(0, 1.0, shape).astype(np.float32)
    image = white + _read_order_signal(shape, detector)
    mask = np.ones(shape, bool)
    mask[12:18] = False  # a trace: not fitted, but corrected
    out = nsclean.clean_subarray(image, mask, detector)
    assert out.shape == shape and out.dtype == np.float64
    assert image[mask].std() > 2.0
    resid = out - white
    assert np.abs(resid[mask]).std() < 0.2
    assert np.abs(resid[~mask]).std() < 0.4


def test_no_background_pixel_gives_none_and_a_sparse_section_is_left_alone():
    image = np.ones((8, 64), np.float32)
    assert nsclean.clean_subarray(image, np.zeros(image.shape, bool), "NRS1") is None
    # two background pixels, at the first and last read lines: one section of all 64 lines
    # holding 0.1 % background pixels (≤ minfrac): no model, the image is returned as is
    image = np.ones((32, 64), np.float32)
    mask = np.zeros((32, 64), bool)
    mask[0, 0] = mask[0, -1] = True
    out = nsclean.clean_subarray(image + np.float32(0.5), mask, "NRS1", exclude_outliers=False)
    np.testing.assert_array_equal(out, 1.5)


def test_outliers_and_their_neighbours_leave_the_fit():
    rng = np.random.default_rng(0)
    shape = (16, 256)
    image = rng.normal(0, 1, shape).astype(np.float32)
    mask = np.ones(shape, bool)
    hot = image.copy()
    hot[8, 100] = 500.0
    # the hot pixel and its 4 neighbours are out of the fit: the model is that of the clean
    # image with those 5 pixels masked
    m5 = mask.copy()
    m5[8, 100] = m5[7, 100] = m5[9, 100] = m5[8, 99] = m5[8, 101] = False
    a = nsclean.clean_subarray(hot, mask, "NRS1")
    b = nsclean.clean_subarray(hot, m5, "NRS1", exclude_outliers=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_box_size_is_the_largest_divisor_up_to_32():
    assert k.box_size((256, 2048)) == (32, 32)
    assert k.box_size((40, 64)) == (20, 32)
    assert k.box_size((37, 31)) == (1, 31)


def test_model_background_follows_a_gradient():
    pytest.importorskip("photutils")
    ny, nx = 64, 128
    yy, xx = np.mgrid[:ny, :nx]
    plane = (5.0 + 0.05 * xx + 0.02 * yy).astype(np.float32)
    mask = np.ones((ny, nx), bool)
    # 8 × 16 boxes: the 5 × 5 median filter of a plane's box medians is the plane again
    bkg = k.model_background(plane, mask, background_box_size=(8, 8))
    assert bkg.shape == (ny, nx)
    np.testing.assert_allclose(bkg[16:-16, 16:-16], plane[16:-16, 16:-16], atol=0.15)
    # the default boxes (32 × 32, a 2 × 4 grid) keep only the large scale: the mean level
    assert abs(float(np.mean(k.model_background(plane, mask))) - float(plane.mean())) < 0.3
    # no box has enough pixels: the median of the background pixels stands in
    few = np.zeros((ny, nx), bool)
    few[0, :3] = True
    assert np.isscalar(k.model_background(plane, few)) or np.ndim(k.model_background(plane, few)) == 0


def _striped(nint=2, ngroup=4, ny=24, nx=40, seed=2):
    rng = np.random.default_rng(seed)
    data = np.cumsum(rng.normal(1.0, 1.5, (nint, ngroup, ny, nx)), axis=1)
    data += np.cumsum(rng.normal(0, 2.0, (nint, ngroup, 1, nx)), axis=1)  # column stripes
    data[:, :, 10:13] += (np.arange(ngroup) * 200.0)[None, :, None, None]
    return data.astype(np.float32)


@pytest.mark.parametrize("background_method", ["median", None])
@pytest.mark.parametrize("axis", [1, 2])
def test_clean_ramp_equals_the_line_value_path(background_method, axis):
    """The whole-image loop with ``fit_method='median'`` is the line values + rebuild of the
    default path, bit for bit."""
    data = _striped()
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 2, 4, 5] = dq.JUMP_DET
    gdq[1, 3, :, :] |= dq.DO_NOT_USE  # a difference without background: left as read
    mask = np.ones(data.shape[2:], bool)
    mask[10:13] = False
    kw = dict(axis_to_correct=axis, n_sigma=2.0, background_method=background_method)
    whole = k.clean_ramp(data, gdq, mask, **kw)
    terms = k.flicker_terms(data, gdq, mask, **kw)
    fast = data.shape[2] if axis == 1 else data.shape[3]
    chan = k.channel_index(fast, fit_by_channel=False)
    split = k.apply_clean(data, chan, terms[1, :, :, 0], terms[0], axis_to_correct=axis)
    np.testing.assert_array_equal(whole, split)
    np.testing.assert_array_equal(whole[1, 3], data[1, 3])


@pytest.mark.parity
@pytest.mark.skipif(not _HAS_JWST, reason="jwst is not installed")
@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
@pytest.mark.parametrize("shape", [(32, 2048), (16, 300)])
def test_clean_subarray_equals_the_official_function(detector, shape):
    from jwst.clean_flicker_noise.clean_flicker_noise import fft_clean_subarray

    rng = np.random.default_rng(hash(shape) % 1000)
    image = rng.normal(0, 1.0, shape).astype(np.float32) + _read_order_signal(shape, detector)
    image[3, 7] = 80.0
    mask = rng.random(shape) > 0.2
    mask[shape[0] // 3: shape[0] // 2] = False
    theirs = fft_clean_subarray(image.copy(), mask.copy(), detector)
    ours = nsclean.clean_subarray(image, mask, detector)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parity
@pytest.mark.skipif(not _HAS_JWST, reason="jwst is not installed")
def test_model_background_equals_the_official_function():
    from jwst.clean_flicker_noise.background_level import background_level

    rng = np.random.default_rng(7)
    ny, nx = 64, 96
    yy, xx = np.mgrid[:ny, :nx]
    image = (rng.normal(0, 1, (ny, nx)) + 0.03 * xx).astype(np.float32)
    mask = rng.random((ny, nx)) > 0.1
    for box in (None, (16, 24)):
        theirs = background_level(image, mask.copy(), background_method="model", background_box_size=box)
        m = k.clip_to_background(image, mask, sigma_lower=3.0, sigma_upper=3.0, lower_half_only=True)
        ours = k.model_background(image, m, background_box_size=box)
        np.testing.assert_array_equal(ours, theirs)


def test_histogram_peak_finds_the_gaussian():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(5.0, 2.0, 200_000), rng.uniform(20, 60, 5_000)])
    center, sigma = k.histogram_peak(values, float(values.mean()), float(values.std()))
    assert abs(center - 5.0) < 0.05 and abs(sigma - 2.0) < 0.05
    # no finite range: the clipped centre and sigma are kept
    c, sg = k.histogram_peak(values, 5.0, float("nan"))
    assert c == 5.0 and np.isnan(sg)


def test_fit_histogram_mask_uses_the_fitted_width():
    """A wide tail of faint sources inflates the clipped sigma; the histogram fit does not see
    it, so the mask removes more of the tail."""
    rng = np.random.default_rng(5)
    rate = rng.normal(1.0, 0.1, (128, 128))
    tail = rng.random(rate.shape) < 0.15
    rate[tail] += rng.exponential(0.3, tail.sum())
    plain = k.scene_mask(rate, n_sigma=2.0)
    fitted = k.scene_mask(rate, n_sigma=2.0, fit_histogram=True)
    assert fitted.sum() < plain.sum()
    assert (fitted & ~plain).sum() == 0
