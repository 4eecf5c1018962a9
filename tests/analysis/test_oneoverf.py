"""1/f noise at rateints and group level, pixel clocking and the column-background PSD."""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

import daskramp.analysis  # noqa: F401
from daskramp.analysis import extract as ex
from daskramp.analysis import oneoverf as of
from daskramp.analysis import trace as tr
from daskramp.testing.ramps import forbid_compute, make_ramp


def _trace_mask(ds, synth, halfwidth=10.0):
    x = np.arange(synth.NX)
    t = xr.DataArray(synth.trace_center(x), dims=("x",), coords={"x": x})
    return tr.trace_mask(t, ds["data"], halfwidth=halfwidth), t


def _col_scatter(data, mask):
    # scatter over (integration, column) of the median of the background pixels of each column
    v = np.where(mask, data, np.nan)
    return np.nanstd(np.nanmedian(v, axis=1))


def test_rateints_correction_removes_stripes_keeps_trace_flux(tso_striped, synth):
    ds, truth = tso_striped
    mask, t = _trace_mask(ds, synth)
    out = of.correct_rateints_1overf(ds, mask.values)
    before = _col_scatter(ds["data"].values, mask.values)
    after = _col_scatter(out["data"].values, mask.values)
    # injected σ = 3 DN/s per column; the median of ~40 background pixels of σ 2 leaves
    # ≈ 1.25·2/√40 ≈ 0.4 → a drop by more than 5×
    assert before > 2.5 and after < before / 5
    np.testing.assert_allclose(out["data"].values - ds["data"].values,
                               -np.broadcast_to(truth["stripes"], ds["data"].shape), atol=1.5)
    # aperture flux (±8 px) vs the stripe-free truth: the stripes put 16·3 = 48 DN/s of scatter
    # in it; after correction only the column-median error is left, 16 · 1.25·2/√43 ≈ 6 DN/s
    # (43 background rows), and no bias (mean of 10 240 such errors: ≈ 0.06)
    f_out = ex.extract_aperture(out, t, radius=8.0)["flux"].values
    f_in = ex.extract_aperture(ds, t, radius=8.0)["flux"].values
    clean = ds.assign(data=ds["data"] - truth["stripes"].astype(np.float32))
    f_clean = ex.extract_aperture(clean, t, radius=8.0)["flux"].values
    predicted = 16 * 1.25 * synth.ERR / np.sqrt(43)
    assert (f_in - f_clean).std() > 40
    assert (f_out - f_clean).std() < 1.3 * predicted
    assert abs((f_out - f_clean).mean()) < 0.3
    assert ds["err"] is not None and np.array_equal(out["err"].values, ds["err"].values)


def test_rateints_sigma_threshold_mask_and_clipped_mean(tso_striped, synth):
    ds, _ = tso_striped
    mask, _ = _trace_mask(ds, synth)
    for method in ("median", "mean"):
        out = of.correct_rateints_1overf(ds, method=method, n_sigma=3.0)
        assert _col_scatter(out["data"].values, mask.values) < _col_scatter(ds["data"].values, mask.values) / 4


def test_rateints_lazy_equals_eager(tso_striped, synth):
    ds, _ = tso_striped
    mask, _ = _trace_mask(ds, synth)
    eager = of.correct_rateints_1overf(ds, mask)
    with forbid_compute():
        lazy = of.correct_rateints_1overf(synth.chunked(ds, {"integration": 8, "x": 64}), mask)
    assert lazy["data"].chunks is not None
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(lazy["data"].values, eager["data"].values)


def test_amplifier_index_from_detector_coordinates():
    # NIRCam-like (fast along x), 4 outputs, a subarray starting at detector x = 1000:
    # x = 1000…1023 → amp 1, 1024…1031 → amp 2
    ds = xr.Dataset(coords={"x": np.arange(1000, 1032), "y": np.arange(4)},
                    attrs={"NOUTPUTS": 4, "SLOWAXIS": 2, "FASTAXIS": 1})
    ds["data"] = (("y", "x"), np.zeros((4, 32)))
    a = of.amplifier_index(ds, 2)
    np.testing.assert_array_equal(a, [1] * 24 + [2] * 8)
    assert of.amplifier_index(ds.assign_attrs(NOUTPUTS=1), 2).max() == 0


def test_group_level_variant_hand_case_and_laziness():
    # per-row (SLOWAXIS = 2) stripes on a flat 5 DN/group background: difference 1 has row
    # offsets [+2, −2]; keep_level → line values [+2, −2] minus the frame median 5… so the
    # cleaned difference is the 5 DN background in both rows.
    ds = make_ramp(2, 3, 2, 6, rate=0.5, SLOWAXIS=2, FASTAXIS=1)
    d = ds["data"].values.copy()
    d[:, 1:, 0, :] += 2.0
    d[:, 1:, 1, :] -= 2.0
    ds["data"].values[:] = d
    out = of.subtract_group_1overf(ds, np.ones((2, 6), bool))
    np.testing.assert_allclose(np.diff(out["data"].values, axis=1), 5.0, atol=1e-5)
    np.testing.assert_allclose(out["one_over_f_stripes"].values[0, :, 1], [[2.0, -2.0]] * 2, atol=1e-6)
    noleve = of.subtract_group_1overf(ds, np.ones((2, 6), bool), keep_level=False)
    np.testing.assert_allclose(np.diff(noleve["data"].values, axis=1)[:, 0], 0.0, atol=1e-5)
    with forbid_compute():
        lazy = of.subtract_group_1overf(ds.chunk({"integration": 1, "x": 3}), np.ones((2, 6), bool))
    assert lazy["data"].chunks == ds.chunk({"integration": 1, "x": 3})["data"].chunks
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(lazy["data"].values, out["data"].values)


def test_group_level_variant_with_draft_rate_mask():
    # NIRISS-like ramp with column stripes in every difference and a bright band: the sigma
    # threshold on the draft rate masks the band; residual column-median scatter drops ≥ 3×
    rng = np.random.default_rng(2)
    ds = make_ramp(2, 4, 32, 40, rate=1.0, read_noise=2.0, SLOWAXIS=-1, FASTAXIS=-2)
    d = ds["data"].values + np.cumsum(rng.normal(0, 3.0, (2, 4, 1, 40)), axis=1)
    d[:, :, 10:14] += (np.arange(4) * 400.0)[None, :, None, None]
    ds["data"].values[:] = d
    out = of.subtract_group_1overf(ds, method="mean")
    bg = np.r_[0:8, 16:32]
    sc = lambda a: np.median(np.diff(a, axis=1)[:, :, bg], axis=2).std()  # noqa: E731
    assert sc(out["data"].values) < sc(d) / 3


def test_pixel_times_clocking():
    # NIRISS (fast along y), 4 rows: a column takes 4·10 µs + 120 µs = 160 µs;
    # pixel (y=1, x=2) is read at 2·160 + 10 = 330 µs
    t = of.pixel_times(4, 3, fastaxis=-2)
    assert t.values[1, 2] == np.float64(2 * 160e-6 + 10e-6)
    # NIRCam (fast along x), 3 columns: a row takes 30 + 120 = 150 µs; (y=2, x=1) → 310 µs
    t2 = of.pixel_times(4, 3, fastaxis=1)
    np.testing.assert_allclose(t2.values[2, 1], 2 * 150e-6 + 10e-6)


def test_column_psd_white_vs_striped():
    # white noise: the median column PSD is flat (low and high frequency bands agree within
    # 30 %); a 1/f-like random walk along each column raises the low frequencies ≥ 5×
    rng = np.random.default_rng(4)
    white = rng.normal(0, 1, (256, 64))
    walk = white + np.cumsum(rng.normal(0, 0.5, (256, 64)), axis=0)
    imgs = xr.DataArray(np.stack([white, walk]), dims=("frame", "y", "x"))
    psd = of.column_background_psd(imgs, fastaxis=-2, n_frequencies=200, n_sigma=None)
    lo = psd.isel(frequency=slice(0, 20)).mean("frequency")
    hi = psd.isel(frequency=slice(-50, None)).mean("frequency")
    assert abs(float(lo[0] / hi[0]) - 1) < 0.3
    assert float(lo[1] / hi[1]) > 5
    with forbid_compute():
        lazy = of.column_background_psd(imgs.chunk({"frame": 1}), fastaxis=-2, n_frequencies=200,
                                        n_sigma=None)
    with dask.config.set(scheduler="synchronous"):
        xr.testing.assert_allclose(lazy.compute(), psd)
    # pixel length scale on the top axis of the notebook plot
    np.testing.assert_allclose(psd["pixel_scale"] * psd["frequency"] * 10e-6, 1.0)
    # with a mask and the whole-frame clock
    frame = of.column_background_psd(imgs.isel(frame=0), np.ones((256, 64), bool), fastaxis=-2,
                                     n_frequencies=50, combine="frame")
    assert frame.dims == ("frequency",) and np.isfinite(frame).all()


def test_accessor_correct_1overf(tso_striped, synth):
    ds, _ = tso_striped
    mask, _ = _trace_mask(ds, synth)
    xr.testing.assert_identical(ds.daskramp.correct_1overf(mask), of.correct_rateints_1overf(ds, mask))
