"""Tracing, aperture extraction and light curves on a synthetic 40 × 64 × 256 SOSS-like cube."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import daskramp.analysis  # noqa: F401
from daskramp.analysis import extract as ex
from daskramp.analysis import lightcurve as lc
from daskramp.analysis import trace as tr
from daskramp.testing.ramps import forbid_compute


def _true_trace(synth, shift=None):
    x = np.arange(synth.NX)
    return xr.DataArray(synth.trace_center(x), dims=("x",), coords={"x": x})


def _oot(synth):
    oot = np.ones(synth.NINT, bool)
    oot[synth.IN_TRANSIT] = False
    return oot


# ------------------------------------------------------------------ extraction by hand


def test_fractional_aperture_weights_hand_case():
    # centre 10.3, radius 2.5 → aperture [7.8, 12.8]: row 8 covers [7.5, 8.5] → 0.7,
    # rows 9–12 whole, row 13 [12.5, 13.5] → 0.3; total 5 = 2r
    w = ex.aperture_weights([10.3], 20, 2.5)[:, 0]
    expected = np.zeros(20)
    expected[8], expected[9:13], expected[13] = 0.7, 1.0, 0.3
    np.testing.assert_allclose(w, expected, atol=1e-12)


def test_aperture_sum_and_error_propagation_hand_case():
    # data[j] = j in every column, err = 2 (row 12: err 4): flux = 0.7·8 + (9+10+11+12) + 0.3·13
    # = 51.5; var = 0.7²·4 + 3·4 + 16 + 0.3²·4 → err = sqrt(1.96 + 12 + 16 + 0.36)
    ny, nx = 20, 3
    data = np.repeat(np.arange(ny, dtype=np.float32)[:, None], nx, axis=1)[None]
    err = np.full((1, ny, nx), 2.0, np.float32)
    err[0, 12] = 4.0
    ds = xr.Dataset({"data": (("integration", "y", "x"), data), "err": (("integration", "y", "x"), err)})
    out = ex.extract_aperture(ds, xr.DataArray(np.full(nx, 10.3), dims=("x",)), radius=2.5)
    np.testing.assert_allclose(out["flux"], 51.5, rtol=1e-12)
    np.testing.assert_allclose(out["flux_err"], np.sqrt(1.96 + 12 + 16 + 0.36), rtol=1e-12)
    np.testing.assert_allclose(out["npix"], 5.0)
    # background band 2.5 < |row − 10.3| ≤ 6: rows 5–7 and 13–16 with data + 3 → median of
    # (j + 3) over those rows = 16 → flux of (data + 3 − 16) = 51.5 + 5·3 − 5·16
    ds3 = ds.assign(data=ds["data"] + 3)
    out3 = ex.extract_aperture(ds3, xr.DataArray(np.full(nx, 10.3), dims=("x",)), radius=2.5,
                               background_radius=6.0)
    np.testing.assert_allclose(out3["background"], 16.0)
    np.testing.assert_allclose(out3["flux"], 51.5 + 15 - 80, rtol=1e-12)


def test_extraction_recovers_column_flux_and_wavelength(tso, synth):
    ds, truth = tso
    wl = np.linspace(2.8, 0.9, synth.NX)
    wmap = np.broadcast_to(wl, (synth.NY, synth.NX))
    out = ex.extract_aperture(ds, _true_trace(synth), radius=10.0, wavelength=wmap)
    # ±10 px = ±4σ: 99.99 % of the flux; the 1 % transit lowers in-transit integrations
    oot = _oot(synth)
    np.testing.assert_allclose(out["flux"].values[oot].mean(), synth.FLUX, rtol=2e-3)
    # 19 whole pixels and two edge pixels sharing one: upper edge fraction f = frac(c + 10.5),
    # lower 1 − f → flux_err = σ·sqrt(19 + f² + (1 − f)²)
    f = np.modf(synth.trace_center(np.arange(synth.NX)) + 10.5)[0]
    np.testing.assert_allclose(out["flux_err"][0], synth.ERR * np.sqrt(19 + f**2 + (1 - f) ** 2), rtol=1e-6)
    np.testing.assert_allclose(out["wavelength"], wl, rtol=1e-12)


def test_extraction_lazy_equals_eager(tso, synth):
    ds, _ = tso
    eager = ex.extract_aperture(ds, _true_trace(synth), radius=8.0, background_radius=20.0)
    with forbid_compute():
        lazy = ex.extract_aperture(synth.chunked(ds, {"integration": 7}), _true_trace(synth), radius=8.0,
                                   background_radius=20.0)
    assert lazy["flux"].chunks is not None
    with dask.config.set(scheduler="synchronous"):
        xr.testing.assert_allclose(lazy.compute(), eager)


# ------------------------------------------------------------------ tracing


def test_trace_follows_the_curved_profile(tso, synth):
    ds, _ = tso
    t = tr.trace_order(ds["data"], x_start=250, x_end=5, y_start=28.0, gauss_filter_width=2.0,
                       profile_radius=8.0)
    cols = np.arange(5, 251)
    truth = synth.trace_center(cols)
    # spline through 246 centroids of 2-DN-noise columns: ≤ 0.1 px everywhere
    assert np.nanmax(np.abs(t["trace"].values[:, cols] - truth)) < 0.1
    assert np.isnan(t["trace"].values[:, :5]).all()


def test_trace_position_recovers_a_drift(synth):
    # the trace moves down by 0.3 px from integration 20 on
    shifts = np.where(np.arange(synth.NINT) >= 20, 0.3, 0.0)
    ds, _ = synth.make_tso(shifts=shifts, seed=3)
    kw = dict(x_start=250, x_end=5, gauss_filter_width=2.0, profile_radius=8.0)
    with forbid_compute():
        lazy = tr.trace_order(synth.chunked(ds, {"integration": 10})["data"], y_start=28.0, **kw)
    pos = tr.trace_position(lazy["trace"], x=128).compute()
    step = float(pos[20:].mean() - pos[:20].mean())
    assert abs(step - 0.3) < 0.02
    eager = tr.trace_order(ds["data"], y_start=28.0, **kw)
    xr.testing.assert_allclose(lazy.compute(), eager)
    # a template (rough row per column) gives the same trace
    tmpl = synth.trace_center(np.arange(synth.NX)) + 1.0
    t2 = tr.trace_order(ds["data"], template=tmpl, **kw)
    truth = synth.trace_center(np.arange(5, 251))
    assert float(np.abs(t2["trace"].isel(integration=slice(0, 20), x=slice(5, 251)) - truth).max()) < 0.1


def test_trace_mask_and_two_orders(tso, synth):
    ds, _ = tso
    orders = {1: dict(x_start=250, x_end=5, y_start=28.0, gauss_filter_width=2.0, profile_radius=8.0),
              2: dict(x_start=200, x_end=60, y_start=22.0, rows=(0, 40), gauss_filter_width=2.0,
                      profile_radius=8.0)}
    both = tr.trace_orders(ds["data"], orders)
    assert both["trace"].dims == ("order", "integration", "x")
    m = tr.trace_mask(both["trace"], ds["data"], halfwidth=6.0)
    assert m.dims == ("integration", "y", "x")
    c = int(round(synth.trace_center(128)))
    assert not m.values[0, c, 128] and m.values[0, c + 10, 128] and m.values[0, c, 2]


# ------------------------------------------------------------------ light curves


@pytest.fixture(scope="module")
def spectra(tso, synth):
    ds, _ = tso
    return ex.extract_aperture(ds, _true_trace(synth), radius=10.0)


def test_transit_depth_within_one_sigma(spectra, synth):
    oot = _oot(synth)
    w = lc.white_light(spectra, out_of_transit=oot)
    assert int(w["n_replaced"].sum()) == 0  # white noise only: no 10σ outliers
    d = lc.depth_in_out(w["flux"], w["flux_err"], ~oot)
    # expected error: per-integration white-light σ = 2·√20·√256 / 256000, means of 10 and 30
    sig = synth.ERR * np.sqrt(20 * 256) / (synth.FLUX * 256)
    np.testing.assert_allclose(float(d["depth_err"]), sig * np.sqrt(1 / 10 + 1 / 30), rtol=0.02)
    assert abs(float(d["depth"]) - synth.DEPTH) < float(d["depth_err"])
    fit = lc.fit_transit(w["flux"], w["flux_err"])
    assert abs(float(fit["depth"]) - synth.DEPTH) < float(fit["depth_err"])
    assert abs(float(fit["duration"]) - 600.0) <= 60.0 and abs(float(fit["t0"]) - 1170.0) <= 60.0
    # trapezoid with a fixed shape: same data, linear fit only
    trap = lc.fit_transit(w["flux"], w["flux_err"], t0=1170.0, duration=600.0, ingress=1e-3)
    np.testing.assert_allclose(float(trap["depth"]), float(d["depth"]), rtol=0.05)


def test_sensitivity_is_one_for_white_noise(spectra, synth):
    oot = _oot(synth)
    m = lc.normalized_lightcurves(spectra, out_of_transit=oot)
    assert m["lc"].dims == ("x", "integration")
    s = lc.sensitivity(m, out_of_transit=oot)
    # 30 out-of-transit points per column: each ratio ≈ 1 ± 0.13; the mean of 256 ± 0.01
    assert abs(float(s.mean()) - 1.0) < 0.05
    # in-transit points sit 1 % (10 000 ppm) below
    np.testing.assert_allclose(float(m["lc"].isel(integration=synth.IN_TRANSIT).mean()), -1e4, atol=300)


def test_binned_scatter_follows_inverse_sqrt_n():
    rng = np.random.default_rng(0)
    f = xr.DataArray(rng.normal(1.0, 1e-3, 4000), dims=("integration",))
    bs = lc.binned_scatter(f, [1, 2, 4, 8, 16, 32])
    # N = 32 leaves 125 bins: relative error of an rms ≈ 1/√250 ≈ 6 % → allow 15 %
    np.testing.assert_allclose(bs["rms"] / bs["expected"], 1.0, atol=0.15)
    assert float(bs["rms"].sel(bin_size=1)) == pytest.approx(float(f.std()))


def test_white_light_replaces_outliers(spectra, synth):
    sp = spectra.copy(deep=True)
    sp["flux"][5, 100] += 5000.0  # a cosmic ray in one column of one integration
    w = lc.white_light(sp, out_of_transit=_oot(synth))
    assert int(w["n_replaced"][5]) == 1 and int(w["n_replaced"].sum()) == 1
    clean = lc.white_light(spectra, out_of_transit=_oot(synth))
    assert abs(float(w["flux"][5] - clean["flux"][5])) < 3 * float(clean["flux_err"][5])


def test_light_curves_lazy_equals_eager(tso, synth):
    ds, _ = tso
    oot = _oot(synth)
    eager_spec = ex.extract_aperture(ds, _true_trace(synth), radius=10.0)
    with forbid_compute():
        spec = ex.extract_aperture(synth.chunked(ds, {"integration": 8}), _true_trace(synth), radius=10.0)
        m = lc.normalized_lightcurves(spec, out_of_transit=oot)
        s = lc.sensitivity(m, out_of_transit=oot)
        w = lc.white_light(spec, out_of_transit=oot)
        psd = lc.lightcurve_psd(w["flux"], times=np.arange(synth.NINT) * 60.0, out_of_transit=oot)
    with dask.config.set(scheduler="synchronous"):
        xr.testing.assert_allclose(s.compute(), lc.sensitivity(
            lc.normalized_lightcurves(eager_spec, out_of_transit=oot), out_of_transit=oot))
        ew = lc.white_light(eager_spec, out_of_transit=oot)
        xr.testing.assert_allclose(w["flux"].compute(), ew["flux"])
        epsd = lc.lightcurve_psd(ew["flux"], times=np.arange(synth.NINT) * 60.0, out_of_transit=oot)
        xr.testing.assert_allclose(psd.compute(), epsd)
    assert psd.dims == ("frequency",) and np.isfinite(epsd).all()


def test_accessor_extract_and_lightcurves(tso, synth):
    ds, _ = tso
    spec = ds.daskramp.extract(_true_trace(synth), radius=10.0)
    xr.testing.assert_identical(spec, ex.extract_aperture(ds, _true_trace(synth), radius=10.0))
    xr.testing.assert_identical(spec.daskramp.lightcurves(), lc.normalized_lightcurves(spec))


def test_integration_scale_hand_case():
    """Four pixels, five integrations, three groups: the fixed bright set gives the scale."""
    flux = np.array([1.0, 1.0, 0.98, 0.98, 1.0])
    # per-pixel last − first differences of 10000, 20000 DN (kept), 500 DN (below min_dn) and
    # one pixel that passes max_dn in integration 0 only (out of the set in every integration)
    per_pixel = np.array([10000.0, 20000.0, 500.0, 30000.0])
    data = np.zeros((5, 3, 1, 4))
    data[:, 0] = 1000.0
    data[:, 2] = 1000.0 + flux[:, None, None] * per_pixel
    data[:, 1] = (data[:, 0] + data[:, 2]) / 2
    data[0, 2, 0, 3] = 45000.0
    ramp = xr.DataArray(data.astype(np.float32), dims=("integration", "group", "y", "x"))
    sc = lc.integration_scale(ramp, min_dn=2000.0, max_dn=40000.0)
    np.testing.assert_allclose(sc.values, flux / np.median(flux), rtol=1e-6)
    assert sc.attrs["pixels"] == 2
    # baseline given: the out-of-transit integrations define 1; smoothing by a running median
    oot = np.array([True, True, False, False, True])
    np.testing.assert_allclose(lc.integration_scale(ramp, out_of_transit=oot).values, flux, rtol=1e-6)
    lazy = lc.integration_scale(ramp.chunk({"integration": 2}), out_of_transit=oot, smooth=3)
    np.testing.assert_allclose(lazy.values, [1.0, 1.0, 0.98, 0.98, 0.99], rtol=1e-6)
