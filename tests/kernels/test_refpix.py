"""refpix kernels: hand-worked cases, the frame transforms, statistics, split == whole, parity."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from daskramp.dq import DO_NOT_USE, REFERENCE_PIXEL
from daskramp.kernels import refpix as k

#: (FASTAXIS, SLOWAXIS) of every detector in spec 01 §4
ORIENTATIONS = {
    "NRCA1": (-1, 2),
    "NRCA2": (1, -2),
    "NRS1": (2, 1),
    "NRS2": (-2, -1),
    "GUIDER2": (2, -1),
}
N = 2048


def border_dq(ny=N, nx=N):
    dq = np.zeros((ny, nx), np.uint32)
    dq[:4] = dq[-4:] = REFERENCE_PIXEL
    dq[:, :4] = dq[:, -4:] = REFERENCE_PIXEL
    return dq


# --------------------------------------------------------------------------- spec 09 §6


def soss_substrip256(ngroups=3):
    """09 §6: NIRISS SOSS SUBSTRIP256, all pixels 1000 + 10·g + 5·(row odd), science +300."""
    ny, nx = 256, 2048
    g = np.arange(ngroups)[:, None, None]
    row = np.arange(ny)[None, :, None]
    dq = np.zeros((ny, nx), np.uint32)
    dq[:, :4] = dq[:, -4:] = dq[-4:] = REFERENCE_PIXEL
    science = dq == 0
    data = (1000 + 10 * g + 5 * (row % 2) + 300 * science).astype(np.float32)[None]
    geometry = dict(substrt1=1, substrt2=1793, fastaxis=-2, slowaxis=-1, noutputs=1, subarray="SUBSTRIP256")
    return data, dq, geometry


def test_soss_substrip256_odd_even_columns():
    # NIRISS detector columns are DMS rows: the row parity is the column parity, so the
    # even/odd means are 1005 + 10g and 1000 + 10g and remove the pattern exactly
    data, dq, geo = soss_substrip256()
    out = k.refpix(data, dq, **geo)
    science = dq == 0
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[..., science], 300.0)
    np.testing.assert_array_equal(out[..., ~science], 0.0)


def test_soss_substrip256_single_mean():
    # one mean 1002.5 + 10g for all reference pixels: science 297.5 / 302.5 on even / odd
    # rows, reference pixels −2.5 / +2.5
    data, dq, geo = soss_substrip256()
    out = k.refpix(data, dq, odd_even_columns=False, **geo)
    science = dq == 0
    odd = (np.arange(256) % 2 == 1)[:, None]
    np.testing.assert_array_equal(out[..., science & ~odd], 297.5)
    np.testing.assert_array_equal(out[..., science & odd], 302.5)
    np.testing.assert_array_equal(out[..., ~science & ~odd], -2.5)
    np.testing.assert_array_equal(out[..., ~science & odd], 2.5)


def test_soss_reference_pixels_are_selected_by_the_mask_bit():
    # the same values without REFERENCE_PIXEL in pixeldq: nothing is a reference pixel
    data, dq, geo = soss_substrip256(ngroups=1)
    out = k.refpix(data, np.zeros_like(dq), **geo)
    np.testing.assert_array_equal(out, data)
    # DO_NOT_USE reference pixels are ignored: spoil them and flag them
    spoiled, dq2 = data.copy(), dq.copy()
    spoiled[..., 252:, :100] = 9e4
    dq2[252:, :100] |= DO_NOT_USE
    np.testing.assert_array_equal(k.refpix(spoiled, dq2, **geo)[..., dq == 0], 300.0)


# --------------------------------------------------------------------------- frame transforms


@pytest.mark.parametrize("detector", ORIENTATIONS)
def test_frame_transform_round_trip(detector):
    fast, slow = ORIENTATIONS[detector]
    a = np.arange(2 * 5 * 7).reshape(2, 5, 7)
    det = k.dms_to_detector(a, fastaxis=fast, slowaxis=slow)
    np.testing.assert_array_equal(k.detector_to_dms(det, fastaxis=fast, slowaxis=slow), a)
    # fast axis along detector columns: a transposed image for |FASTAXIS| = 2
    assert det.shape == ((2, 5, 7) if abs(fast) == 1 else (2, 7, 5))


@pytest.mark.parametrize("detector", ORIENTATIONS)
def test_detector_coords_match_the_transform(detector):
    fast, slow = ORIENTATIONS[detector]
    y, x = np.indices((N, N))
    det = k.dms_to_detector(y * N + x, fastaxis=fast, slowaxis=slow)
    row, col = k.detector_coords(y, x, fastaxis=fast, slowaxis=slow)
    np.testing.assert_array_equal(det[row, col], y * N + x)


def test_niriss_detector_columns_are_dms_rows():
    # NIS (FASTAXIS −2, SLOWAXIS −1): DMS (y, x) → detector (2047 − x, 2047 − y)
    row, col = k.detector_coords(1800, 10, fastaxis=-2, slowaxis=-1)
    assert (int(row), int(col)) == (2037, 247)


# --------------------------------------------------------------------------- statistics


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    outliers=st.integers(0, 5),
    siglimit=st.sampled_from([2.0, 3.0, 4.5]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_clipped_mean_matches_scipy_sigmaclip(n, seed, outliers, siglimit, dtype):
    rng = np.random.default_rng(seed)
    v = rng.normal(1000, 5, n).round(1).astype(dtype)
    v[rng.integers(0, n, outliers)] += rng.choice([-1, 1], outliers) * 1e3
    got = k.clipped_mean(v, siglimit=siglimit)
    if np.std(v, dtype=np.float64) == 0:
        assert got == v.mean(dtype=np.float64)
    else:
        assert got == stats.sigmaclip(v, siglimit, siglimit)[0].mean()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 3000),
    nframes=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([np.float32, np.float64]),
    constant=st.booleans(),
)
def test_clipped_means_equal_numpy_sigma_clipping(n, nframes, seed, dtype, constant):
    # the compiled sums reproduce numpy's pairwise summation (blocks of 128, halves cut at
    # multiples of 8) and its float64 division of means, so the results are bit-identical
    rng = np.random.default_rng(seed)
    frames = rng.normal(rng.choice([0.0, 1000.0, 12000.5]), rng.choice([0.1, 5.0]), (nframes, n + 7))
    frames = frames.round(int(rng.integers(0, 3))).astype(dtype)
    frames[rng.random(frames.shape) < 0.01] += 1e4
    if constant:
        frames[:] = frames[:, :1]  # float64 copies of one value need not sum exactly
    idx = np.sort(rng.choice(n + 7, n, replace=False))
    got = k.clipped_means(frames, idx, siglimit=2.5)
    for f in range(nframes):
        v = frames[f, idx]
        if n == 0:
            assert np.isnan(got[f])
        elif np.std(v, dtype=np.float64) == 0:
            assert got[f] == v.mean(dtype=np.float64)
        else:
            assert got[f] == stats.sigmaclip(v, 2.5, 2.5)[0].mean()


def test_pairwise_sum_is_numpys():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for n in (1, 7, 8, 9, 127, 128, 129, 1000, 4099, 100_003):
            a = rng.normal(1000, 5, n).astype(dtype)
            assert k._pairwise_sum(a, 0, n) == np.add.reduce(a)


def test_clipped_mean_hand_cases():
    # 1023 values of 100 and one of 1e6: mean ≈ 1076, std ≈ 31000, the hot pixel lies
    # beyond 3σ; the second pass has zero spread, nothing more removed → exactly 100
    v = np.full(1024, 100, np.float32)
    v[7] = 1e6
    assert k.clipped_mean(v) == 100.0
    assert k.clipped_mean(np.full(5, 3.25, np.float32)) == 3.25  # zero spread: plain mean
    assert np.isnan(k.clipped_mean(np.zeros(0, np.float32)))


def test_running_median_ramp_with_reflection():
    # side pixels = row index; window of 11 rows: interior rows give their own index.
    # Row 0 sees rows 5,4,3,2,1,0,1,2,3,4,5 → median 3; row 4 sees 1,0,1,…,9 → 4.
    # Row 2047 sees 2042…2047,2046…2042 → 2044; row 2043 sees 2038…2047,2046 → 2043.
    ramp = np.repeat(np.arange(N, dtype=np.float32)[:, None], 4, axis=1)
    med = k.running_median(ramp, side_smoothing_length=11)
    np.testing.assert_array_equal(med[:6], [3, 3, 3, 3, 4, 5])
    np.testing.assert_array_equal(med[6:2043], np.arange(6, 2043))
    np.testing.assert_array_equal(med[2043:], [2043, 2044, 2044, 2044, 2044])


def test_running_median_even_length_keeps_an_l_row_window():
    # L = 4: window rows i−2 … i+1 (mirrored), as the official pipeline does.
    # Row 0: rows 2,1,0,1 → 1; row 2: 0,1,2,3 → 1.5; interior: i − 0.5; row 2047:
    # 2045, 2046, 2047, 2046 → 2046
    ramp = np.repeat(np.arange(N, dtype=np.float32)[:, None], 4, axis=1)
    med = k.running_median(ramp, side_smoothing_length=4)
    np.testing.assert_array_equal(med[:3], [1, 1, 1.5])
    np.testing.assert_array_equal(med[3:2047], np.arange(3, 2047) - 0.5)
    assert med[2047] == 2046


def test_running_median_skips_unusable_pixels():
    # rows 100–120 unusable: row 110 (window 105–115) has no usable pixel → NaN;
    # row 100 (window 95–105) keeps rows 95–99 → 97
    ramp = np.repeat(np.arange(N, dtype=np.float32)[:, None], 4, axis=1)
    ramp[100:121] = np.nan
    med = k.running_median(ramp, side_smoothing_length=11)
    assert np.isnan(med[110]) and med[100] == 97


def _running_median_numpy(values, length):
    """The whole-array numpy form of the running median (every window sorted at once)."""
    from numpy.lib.stride_tricks import sliding_window_view

    half = length // 2
    nrows, ncols = values.shape[-2:]
    idx = np.concatenate([np.arange(half, 0, -1), np.arange(nrows), np.arange(nrows - 2, nrows - 2 - half, -1)])
    windows = sliding_window_view(values[..., idx, :], length, axis=-2)[..., :nrows, :, :]
    windows = np.sort(windows.reshape(*values.shape[:-2], nrows, ncols * length), axis=-1)
    count = np.count_nonzero(~np.isnan(windows), axis=-1)
    lo = np.take_along_axis(windows, np.maximum((count - 1) // 2, 0)[..., None], axis=-1)
    hi = np.take_along_axis(windows, (count // 2)[..., None], axis=-1)
    med = ((lo + hi) / values.dtype.type(2))[..., 0]
    return np.where(count > 0, med, np.nan).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [1, 4, 11, 12])
def test_running_median_equals_the_whole_array_form(dtype, length):
    """The compiled running median (one window at a time) equals numpy's sort of every
    window, bit for bit, with unusable (NaN) pixels, ties and leading dims."""
    rng = np.random.default_rng(length)
    values = rng.normal(0, 3, (3, 2, 64, 4)).astype(dtype)
    values[..., ::7, 1] = np.round(values[..., ::7, 1])  # ties
    values[rng.random(values.shape) < 0.2] = np.nan
    values[0, 0, 20:40] = np.nan  # windows with no usable pixel
    got = k.running_median(values, side_smoothing_length=length)
    assert got.shape == (3, 2, 64) and got.dtype == np.float64
    np.testing.assert_array_equal(got, _running_median_numpy(values, length))


# --------------------------------------------------------------------------- full frame


LEVEL = np.array([10.0, 20.0, 30.0, 40.0])  # per amplifier A–D


def full_frame_case():
    """Detector-frame frame: reference rows = amplifier level + column parity (+2 on top).

    Top and bottom average to level + parity + 1, which is also added to every other pixel,
    together with a science pattern on the interior; after the top/bottom correction the
    interior is the pattern, the bottom rows −1 and the top rows +1.
    """
    col = np.arange(N)
    base = LEVEL[col // 512] + col % 2
    frame = np.tile(base + 1, (N, 1))
    frame[:4] = base
    frame[-4:] = base + 2
    pattern = np.zeros((N, N))
    pattern[4:-4, 4:-4] = np.add.outer(np.arange(N - 8) % 7, np.arange(N - 8) % 5) * 3.0
    frame += pattern
    expected = pattern.copy()
    expected[:4] = -1
    expected[-4:] = 1
    return frame.astype(np.float32), border_dq(), expected


def run_in_detector_frame(frame, dq, detector="NRCA1", **params):
    """Correct a detector-frame image given in the orientation of ``detector``."""
    fast, slow = ORIENTATIONS[detector]
    dms = k.detector_to_dms(frame, fastaxis=fast, slowaxis=slow)
    dms_dq = k.detector_to_dms(dq, fastaxis=fast, slowaxis=slow)
    out = k.refpix(dms[None, None], dms_dq, fastaxis=fast, slowaxis=slow, noutputs=4, **params)
    return k.dms_to_detector(out[0, 0], fastaxis=fast, slowaxis=slow)


@pytest.mark.parametrize("detector", ORIENTATIONS)
def test_full_frame_amplifier_parity_offsets(detector):
    frame, dq, expected = full_frame_case()
    out = run_in_detector_frame(frame, dq, detector, use_side_ref_pixels=False)
    np.testing.assert_array_equal(out, expected)


def test_full_frame_hot_reference_pixel_is_clipped():
    frame, dq, expected = full_frame_case()
    frame[1, 600] = 1e6  # amplifier B, bottom, even column
    out = run_in_detector_frame(frame, dq, use_side_ref_pixels=False)
    expected[1, 600] = 1e6 - 21  # itself corrected by the clean mean 20 + 0 + 1
    np.testing.assert_array_equal(out, expected)


def test_full_frame_amplifier_without_reference_pixels_is_left_alone():
    frame, dq, expected = full_frame_case()
    dq[:4, 1024:1536] |= DO_NOT_USE
    dq[-4:, 1024:1536] |= DO_NOT_USE
    out = run_in_detector_frame(frame, dq, use_side_ref_pixels=False)
    np.testing.assert_array_equal(out[:, 1024:1536], frame[:, 1024:1536])
    np.testing.assert_array_equal(out[:, :1024], expected[:, :1024])


def test_full_frame_top_missing_uses_bottom():
    # amplifier D odd columns: top unusable → offset from the bottom only, 40 + 1, one
    # less than the average, so those columns keep +1
    frame, dq, expected = full_frame_case()
    dq[-4:, 1537::2] |= DO_NOT_USE
    out = run_in_detector_frame(frame, dq, use_side_ref_pixels=False)
    expected[:, 1537::2] += 1
    np.testing.assert_array_equal(out, expected)


def test_full_frame_single_mean_per_amplifier():
    # odd_even_columns=False: one mean level + 0.5 + 1 per amplifier, so even columns
    # keep −0.5 and odd columns +0.5 on top of the previous answer
    frame, dq, expected = full_frame_case()
    out = run_in_detector_frame(frame, dq, odd_even_columns=False, use_side_ref_pixels=False)
    expected += np.where(np.arange(N) % 2 == 1, 0.5, -0.5)
    np.testing.assert_array_equal(out, expected)


def side_ramp_case():
    """Every pixel = its detector row index r, plus a pattern on the interior.

    Top/bottom means: (0+1+2+3)/4 = 1.5 and 2045.5 → 1023.5 subtracted everywhere; the side
    pixels then read r − 1023.5 and their running median is med(r) − 1023.5.
    """
    r = np.arange(N, dtype=np.float64)[:, None]
    pattern = np.zeros((N, N))
    pattern[4:-4, 4:-4] = (np.arange(N - 8) % 3)[None, :] * 2.0
    return (r + pattern + np.zeros((1, N))).astype(np.float32), border_dq(), r, pattern


@pytest.mark.parametrize("detector", ORIENTATIONS)
def test_side_reference_signal_running_median(detector):
    # result = pattern + r − med(r): 0 in the interior; rows 0–5 give −3,−2,−1,0,0,0 and
    # rows 2043–2047 give 0,0,1,2,3 (the reflected ends, see the running median test)
    frame, dq, r, pattern = side_ramp_case()
    out = run_in_detector_frame(frame, dq, detector)
    edge = np.zeros(N)
    edge[:4] = [-3, -2, -1, 0]
    edge[-3:] = [1, 2, 3]
    np.testing.assert_array_equal(out, pattern + edge[:, None])


def test_side_gain():
    # side_gain 0.5: r − 1023.5 − 0.5·(r − 1023.5) in the interior; row 1000 → −11.75
    frame, dq, r, pattern = side_ramp_case()
    out = run_in_detector_frame(frame, dq, side_gain=0.5)
    np.testing.assert_array_equal(out[1000], pattern[1000] - 11.75)
    np.testing.assert_array_equal(out[6:-6], pattern[6:-6] + 0.5 * (r[6:-6] - 1023.5))


def test_side_one_side_and_no_side():
    frame, dq, r, pattern = side_ramp_case()
    # left side unusable everywhere: the right side alone carries the same signal
    dq[:, :4] |= DO_NOT_USE
    # rows 500–520 unusable on both sides: row 510 has no side value (0 subtracted) →
    # 510 − 1023.5; row 500 keeps rows 495–499, median 497 → 500 − 497 = 3
    dq[500:521, -4:] |= DO_NOT_USE
    out = run_in_detector_frame(frame, dq)
    np.testing.assert_array_equal(out[510, 4:-4], pattern[510, 4:-4] + 510 - 1023.5)
    np.testing.assert_array_equal(out[500, 4:-4], pattern[500, 4:-4] + 3)
    np.testing.assert_array_equal(out[1000, 4:-4], pattern[1000, 4:-4])


# --------------------------------------------------------------------------- subarrays


def test_nirspec_edgeless_subarray_uses_outer_columns():
    # NRS1 SUB32 (FASTAXIS 2: detector columns are DMS rows): the first and last 4 DMS
    # columns stand in as reference pixels; data 100 + 7·(row odd) + pattern inside
    ny, nx = 32, 512
    yy, xx = np.indices((ny, nx))
    pattern = np.where((xx >= 4) & (xx < nx - 4), (xx % 5) * 1.5, 0.0)
    data = (100 + 7 * (yy % 2) + pattern).astype(np.float32)[None, None]
    out = k.refpix(data, np.zeros((ny, nx), np.uint32), substrt1=1025, substrt2=1000,
                   fastaxis=2, slowaxis=1, noutputs=1, subarray="SUB32")
    np.testing.assert_array_equal(out[0, 0], pattern)
    # another subarray name: no reference pixels, nothing done
    same = k.refpix(data, np.zeros((ny, nx), np.uint32), substrt1=1025, substrt2=1000,
                    fastaxis=2, slowaxis=1, noutputs=1, subarray="SUB64")
    np.testing.assert_array_equal(same, data)


def test_subarray_without_reference_pixels_is_unchanged():
    data = np.arange(2 * 2 * 10 * 12, dtype=np.uint16).reshape(2, 2, 10, 12)
    out = k.refpix(data, np.zeros((10, 12), np.uint32), substrt1=500, substrt2=600,
                   fastaxis=-1, slowaxis=2, noutputs=4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_subarray_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        k.refpix(np.zeros((1, 1, 10, 10), np.float32), np.zeros((10, 10), np.uint32),
                 substrt1=2045, substrt2=1, fastaxis=1, slowaxis=2, noutputs=1)


def test_four_output_subarray_matches_full_frame_rows():
    # a 4-output subarray holding the bottom 64 detector rows: amplifiers corrected from the
    # bottom reference rows only; the side signal exists only for its rows
    frame, dq, r, pattern = side_ramp_case()
    sub = frame[:64][None, None]
    out = k.refpix(sub, dq[:64], fastaxis=1, slowaxis=2, noutputs=4)
    # bottom mean 1.5; side pixels r − 1.5; rows 0–58 have a usable window.  Row 30:
    # 30 − 1.5 − (30 − 1.5) = 0; row 63 (window 58–68, rows 58–63 usable): median 60.5
    assert out[0, 0, 30, 10] == pattern[30, 10]
    assert out[0, 0, 63, 10] == pattern[63, 10] + 63 - 1.5 - (60.5 - 1.5)


def test_zeroframe():
    data, dq, geo = soss_substrip256(ngroups=1)
    zf = data[:, 0].copy()
    zf[0, 100, 100:110] = 0  # no frame-zero value recorded there
    out = k.refpix_zeroframe(zf, dq, **geo)
    np.testing.assert_array_equal(out[0, 100, 100:110], 0)
    np.testing.assert_array_equal(out[0, 101], k.refpix(data, dq, **geo)[0, 0, 101])


# --------------------------------------------------------------------------- split == whole


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    corner=st.sampled_from(["bottom-left", "top-right"]),
    noutputs=st.sampled_from([1, 4]),
    detector=st.sampled_from(sorted(ORIENTATIONS)),
    frame_split=st.integers(1, 5),
    ty=st.integers(1, 40),
    tx=st.integers(1, 48),
)
def test_offsets_on_frame_blocks_and_apply_on_tiles_equal_whole(
    seed, corner, noutputs, detector, frame_split, ty, tx
):
    rng = np.random.default_rng(seed)
    fast, slow = ORIENTATIONS[detector]
    ny, nx = 40, 48
    y0, x0 = (0, 0) if corner == "bottom-left" else (N - ny, N - nx)
    data = rng.normal(1000, 5, (3, 2, ny, nx)).astype(np.float32)
    dq = border_dq()[y0 : y0 + ny, x0 : x0 + nx]
    dq[rng.integers(0, ny, 5), rng.integers(0, nx, 5)] |= DO_NOT_USE
    geo = dict(fastaxis=fast, slowaxis=slow)
    whole = k.refpix(data, dq, substrt1=x0 + 1, substrt2=y0 + 1, noutputs=noutputs, **geo)

    mode = k.correction_mode(ny, nx, noutputs=noutputs)
    layout = k.reference_layout(ny, nx, substrt1=x0 + 1, substrt2=y0 + 1)
    ref = k.gather_reference_pixels(data, layout).reshape(6, -1)
    ref_dq = k.gather_reference_pixels(dq, layout)
    kw = dict(ref_y=layout.y, ref_x=layout.x, mode=mode, **geo)
    # frames in arbitrary blocks give the same description
    offsets = np.concatenate(
        [k.refpix_offsets(b, ref_dq, **kw) for b in np.array_split(ref, frame_split)]
    ).reshape(3, 2, -1)
    np.testing.assert_array_equal(offsets, k.refpix_offsets(ref.reshape(3, 2, -1), ref_dq, **kw))
    # any pixel tile corrected on its own gives the whole-frame answer
    float64 = k.working_dtype(mode, use_side_ref_pixels=True) == np.float64
    out = np.empty_like(whole)
    for ya in range(0, ny, ty):
        for xa in range(0, nx, tx):
            ys, xs = slice(ya, ya + ty), slice(xa, xa + tx)
            oy = k.offsets_along(offsets, np.arange(y0, y0 + ny)[ys], dim="y", **geo)
            ox = k.offsets_along(offsets, np.arange(x0, x0 + nx)[xs], dim="x", **geo)
            out[..., ys, xs] = k.apply_refpix(data[..., ys, xs], oy, ox, fastaxis=fast, float64=float64)
    np.testing.assert_array_equal(out, whole)


def test_inputs_are_not_mutated():
    frame, dq, r, pattern = side_ramp_case()
    data = frame[None, None]
    before, dq_before = data.copy(), dq.copy()
    k.refpix(data, dq, fastaxis=-2, slowaxis=-1, noutputs=4)
    np.testing.assert_array_equal(data, before)
    np.testing.assert_array_equal(dq, dq_before)


def test_kernel_module_imports_no_dask_xarray_or_zarr():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(k))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"dask", "xarray", "zarr"}


# --------------------------------------------------------------------------- official pipeline


def _official(data, dq, *, instrument, detector, substrt1, substrt2, noutputs, subarray, **params):
    pytest.importorskip("jwst")
    from jwst.refpix import reference_pixels
    from stdatamodels.jwst.datamodels import RampModel

    fast, slow = ORIENTATIONS.get(detector, (-2, -1))
    model = RampModel(data=data.copy(), pixeldq=dq.copy(), groupdq=np.zeros(data.shape, np.uint8))
    model.meta.instrument.name, model.meta.instrument.detector = instrument, detector
    model.meta.subarray.name = subarray
    model.meta.subarray.xstart, model.meta.subarray.ystart = substrt1, substrt2
    model.meta.subarray.ysize, model.meta.subarray.xsize = data.shape[-2:]
    model.meta.subarray.fastaxis, model.meta.subarray.slowaxis = fast, slow
    model.meta.exposure.noutputs = noutputs
    model.meta.exposure.zero_frame = False
    conv = dict(refpix_algorithm="median", sirs_kernel_model=None, sigreject=4.0, gaussmooth=1.0,
                halfwidth=30)
    p = dict(odd_even_columns=True, use_side_ref_pixels=True, side_smoothing_length=11,
             side_gain=1.0, siglimit=3.0) | params
    reference_pixels.correct_model(model, p["odd_even_columns"], p["use_side_ref_pixels"],
                                   p["side_smoothing_length"], p["side_gain"], True, conv,
                                   p["siglimit"])
    ours = k.refpix(data, dq, substrt1=substrt1, substrt2=substrt2, fastaxis=fast, slowaxis=slow,
                    noutputs=noutputs, subarray=subarray, **p)
    return np.asarray(model.data), ours


@pytest.mark.parity
@pytest.mark.parametrize("odd_even_columns", [True, False])
def test_parity_soss_random(odd_even_columns):
    pytest.importorskip("jwst")
    rng = np.random.default_rng(3)
    data = (rng.normal(1000, 5, (2, 2, 256, 2048)) + rng.normal(0, 20, (2, 2, 1, 1))).astype(np.float32)
    data[..., 253, 100] = 3e4  # a hot reference pixel
    dq = np.zeros((256, 2048), np.uint32)
    dq[:, :4] = dq[:, -4:] = dq[-4:] = REFERENCE_PIXEL
    dq[254, 50] |= DO_NOT_USE
    official, ours = _official(data, dq, instrument="NIRISS", detector="NIS", substrt1=1,
                               substrt2=1793, noutputs=1, subarray="SUBSTRIP256",
                               odd_even_columns=odd_even_columns)
    np.testing.assert_array_equal(ours, official)


@pytest.mark.parity
@pytest.mark.parametrize("detector", ["NRCA2", "NRS2"])
def test_parity_full_frame_random(detector):
    pytest.importorskip("jwst")
    rng = np.random.default_rng(4)
    data = (rng.normal(1000, 5, (1, 3, N, N)) + 3 * np.sin(np.arange(N) / 50)[:, None]).astype(np.float32)
    dq = border_dq()
    dq[100:130, 1] |= DO_NOT_USE
    dq[2045, 600] |= DO_NOT_USE
    official, ours = _official(data, dq, instrument="NIRCAM", detector=detector, substrt1=1,
                               substrt2=1, noutputs=4, subarray="FULL", side_smoothing_length=10)
    # the official pipeline does the exposure's very first frame in float32 (its frame buffer
    # turns float64 afterwards): ≤ 1 float32 ulp there, identical afterwards
    np.testing.assert_allclose(ours[0, 0], official[0, 0], rtol=0, atol=2e-4)
    np.testing.assert_array_equal(ours[:, 1:], official[:, 1:])


@pytest.mark.parity
def test_parity_four_output_subarray_and_nirspec_sub32():
    pytest.importorskip("jwst")
    rng = np.random.default_rng(5)
    data = rng.normal(1000, 5, (1, 3, 64, N)).astype(np.float32)
    official, ours = _official(data, border_dq()[:64], instrument="NIRCAM", detector="NRCA1",
                               substrt1=1, substrt2=1, noutputs=4, subarray="SUBGRISM64")
    np.testing.assert_array_equal(ours[:, 1:], official[:, 1:])
    data = rng.normal(1000, 5, (1, 2, 32, 512)).astype(np.float32)
    official, ours = _official(data, np.zeros((32, 512), np.uint32), instrument="NIRSPEC",
                               detector="NRS1", substrt1=1025, substrt2=1000, noutputs=1,
                               subarray="SUB32")
    np.testing.assert_array_equal(ours, official)


def _apply_by_frames(data, oy, ox, *, fastaxis, float64):
    """apply_refpix's arithmetic written frame by frame with numpy (the definition)."""
    col, row = (ox[..., None, :], oy[..., :, None]) if abs(fastaxis) == 1 else (oy[..., :, None], ox[..., None, :])
    out = np.empty(data.shape, np.float32)
    for i in range(data.shape[0]):
        for g in range(data.shape[1]):
            if float64:
                out[i, g] = np.subtract(data[i, g], col[i, g], dtype=np.float64) - row[i, g]
            else:
                out[i, g] = np.subtract(data[i, g], col[i, g].astype(np.float32), dtype=np.float32)
                if np.any(row[i, g]):
                    out[i, g] = out[i, g].astype(np.float64) - row[i, g]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.float64])
@pytest.mark.parametrize("fastaxis", [1, -2])
@pytest.mark.parametrize("float64", [False, True])
def test_apply_refpix_equals_its_frame_by_frame_definition(dtype, fastaxis, float64):
    rng = np.random.default_rng(4)
    full = rng.normal(2e4, 300, (3, 4, 9, 12))
    data = (full.round() if dtype == np.uint16 else full).astype(dtype)[:, :, 1:8, 2:11]  # strided
    oy = rng.normal(5, 3, (3, 4, 7)) * 1.0000001
    ox = rng.normal(-5, 3, (3, 4, 12))[..., 2:11]
    oy[1] = 0.0  # frames without a row term keep the float32 difference
    got = k.apply_refpix(data, oy, ox, fastaxis=fastaxis, float64=float64)
    want = _apply_by_frames(data, oy, ox, fastaxis=fastaxis, float64=float64)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
