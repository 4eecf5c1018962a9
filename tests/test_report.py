"""The TSO report: every figure renders to a non-blank PNG, the HTML shows them all, missing
inputs become notes, and the key numbers are right on a product with known truth.

Products are written directly as small Zarr stores (no pipeline run): 24 integrations of a
64 × 128 SOSS-like strip (FASTAXIS = −2), a Gaussian trace (σ = 3 px) of 2000 DN/s per column
with a 1 % box transit in integrations 8–15, white noise of known σ = 3 DN/s (the ``err``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from daskramp import dq
from daskramp.report import FIGURES, default_orders, find_products, main, make_report, parse_ranges

NINT, NGROUP, NY, NX = 24, 5, 64, 128
ERR, FLUX, SIGMA, DEPTH = 3.0, 2000.0, 3.0, 0.01
IN_TRANSIT = slice(8, 16)
Y0 = 1984  # detector row of the first subarray row


def _trace_row(x):
    return 30.0 + 4.0 * ((np.asarray(x, np.float64) - 64.0) / 64.0) ** 2


def _products(tmp, *, illuminated=True, ramp=True, rateints=True, seed=1):
    from scipy.special import erf

    rng = np.random.default_rng(seed)
    y = np.arange(NY)[:, None]
    c = _trace_row(np.arange(NX))[None, :]
    prof = 0.5 * (erf((y + 0.5 - c) / (SIGMA * np.sqrt(2))) - erf((y - 0.5 - c) / (SIGMA * np.sqrt(2))))
    depth = np.zeros(NINT)
    depth[IN_TRANSIT] = DEPTH
    model = (FLUX * prof)[None] * (1 - depth)[:, None, None] if illuminated else np.zeros((NINT, NY, NX))
    data = (model + 1.0 + rng.normal(0, ERR, (NINT, NY, NX))).astype(np.float32)
    qdq = np.zeros((NINT, NY, NX), np.uint32)
    qdq[:, :, :4] = dq.REFERENCE_PIXEL | dq.DO_NOT_USE  # reference columns, as in SOSS
    data[:, :, :4] = np.nan
    jumps = rng.random((NINT, NY, NX)) < 0.002
    qdq[jumps] |= dq.JUMP_DET
    qdq[:, 10, 100] |= dq.SATURATED
    cube = ("integration", "y", "x")
    coords = {"integration": np.arange(NINT), "y": np.arange(Y0, Y0 + NY), "x": np.arange(NX),
              "int_mid_BJD_TDB": ("integration", 2459800.0 + np.arange(NINT) * 60.0 / 86400.0)}
    attrs = {"FASTAXIS": -2, "SLOWAXIS": -1, "NOUTPUTS": 1, "INSTRUME": "NIRISS", "TGROUP": 5.0}
    ri = xr.Dataset({
        "data": (cube, data, {"units": "DN/s"}),
        "err": (cube, np.full(data.shape, ERR, np.float32)),
        "dq": (cube, qdq),
    }, coords=coords, attrs=attrs)
    with np.errstate(invalid="ignore"):
        mean = data.mean(axis=0)  # NaN stays NaN on the reference columns
    rate = xr.Dataset({
        "data": (("y", "x"), mean.astype(np.float32), {"units": "DN/s"}),
        "err": (("y", "x"), np.full((NY, NX), ERR / np.sqrt(NINT), np.float32)),
        "dq": (("y", "x"), np.bitwise_or.reduce(qdq, axis=0)),
    }, coords={k: coords[k] for k in ("y", "x")}, attrs=attrs)
    tmp.mkdir(parents=True, exist_ok=True)
    rate.to_zarr(tmp / "sim_rate.zarr", mode="w", consolidated=False)
    if rateints:
        ri.to_zarr(tmp / "sim_rateints.zarr", mode="w", consolidated=False)
    if ramp:
        t = np.arange(NGROUP, dtype=np.float32)[None, :, None, None] * 5.0
        rd = (t * np.nan_to_num(data)[:, None] + rng.normal(0, 5, (NINT, NGROUP, NY, NX))).astype(np.float32)
        gdq = np.zeros(rd.shape, np.uint8)
        gdq[:, 3:, 10, 100] = dq.SATURATED  # one pixel saturates from group 4 on
        ramp_ds = xr.Dataset({
            "data": (("integration", "group", "y", "x"), rd),
            "groupdq": (("integration", "group", "y", "x"), gdq),
            "pixeldq": (("y", "x"), qdq[0]),
        }, coords={k: coords[k] for k in ("integration", "y", "x")}, attrs=attrs)
        ramp_ds.to_zarr(tmp / "sim_dark_current_ramp.zarr", mode="w", consolidated=False)
    return tmp


def _check_png(path):
    img = imread(path)
    assert img.shape[0] >= 200 and img.shape[1] >= 300, path
    assert float(img[..., :3].std()) > 0.01, f"{path} is blank"


def _html_images(html_path):
    return re.findall(r"<img src='([^']+)'", html_path.read_text())


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    prod = _products(root / "products")
    oot = np.ones(NINT, bool)
    oot[IN_TRANSIT] = False
    html = make_report(prod, root / "out", out_of_transit=oot, radius=12.0)
    return html


def test_every_figure_renders_and_is_shown(full_report):
    out = full_report.parent
    imgs = _html_images(full_report)
    # every figure of the report, once each, and nothing else
    assert sorted(imgs) == sorted(f"{k}.png" for k in FIGURES)
    for name in imgs:
        assert (out / name).is_file()
        _check_png(out / name)


def test_key_numbers_on_known_truth(full_report):
    import json

    nums = json.loads((full_report.parent / "numbers.json").read_text())
    # every key number is a value (a number, or a text) with its unit in a field of its own
    for key, entry in nums.items():
        assert set(entry) >= {"value", "unit"}, key
        assert not (isinstance(entry["value"], str) and entry["unit"]), key
    # white noise only: scatter / expected ≈ 1 (16 baseline points: ±18 % one sigma on a std)
    assert nums["white-light scatter / expected"]["unit"] is None
    assert abs(nums["white-light scatter / expected"]["value"] - 1.0) < 0.45
    # sensitivity per column ≈ 1 for the same reason (median of ~120 columns: tight)
    assert abs(nums["sensitivity (median over columns)"]["value"] - 1.0) < 0.1
    # the box transit of 10 000 ppm: the trapezoid fit finds it (expected error: white-light
    # σ = 3·√(24·124)/(2000·124) ≈ 66 ppm per point, 8 in and 16 out → ≈ 29 ppm)
    fit = nums["transit depth (trapezoid fit)"]
    assert fit["unit"] == "ppm" and set(fit) >= {"error", "t0_h", "T14_h", "ingress_h"}
    assert abs(fit["value"] - 1e4) < 4 * max(fit["error"], 29.0)
    # flags: the 4 reference columns are DO_NOT_USE: 4/128 = 3.125 %
    assert nums["DO_NOT_USE fraction of rate pixels"] == {"value": 3.125, "unit": "%"}
    # 0.2 % of pixels get a jump per integration
    jumps = nums["jump rate (JUMP_DET per integration)"]
    assert jumps["unit"] == "% of pixels" and abs(jumps["value"] - 0.2) < 0.05
    # the HTML shows them with their units
    html = full_report.read_text()
    assert "<td>3.125 %</td>" in html and " ppm (" in html


def test_white_light_ratio_is_the_analysis_function(tmp_path, monkeypatch):
    """The report's "white-light scatter / expected" is lightcurve.scatter_ratio of its white
    light (benchmarks/lightcurve.py prints the same function's ratio)."""
    import json

    from daskramp.analysis import lightcurve as alc

    calls = []
    real = alc.scatter_ratio

    def spy(flux, flux_err, **kw):
        out = real(flux, flux_err, **kw)
        calls.append((flux, flux_err, kw, out))
        return out

    monkeypatch.setattr(alc, "scatter_ratio", spy)
    prod = _products(tmp_path / "p", ramp=False)
    oot = np.ones(NINT, bool)
    oot[IN_TRANSIT] = False
    html = make_report(prod, tmp_path / "out", out_of_transit=oot, radius=12.0, trace_integrations=False)
    nums = json.loads((html.parent / "numbers.json").read_text())
    assert len(calls) == 1
    flux, flux_err, kw, out = calls[0]
    np.testing.assert_array_equal(kw["out_of_transit"], oot)
    assert nums["white-light scatter / expected"]["value"] == pytest.approx(float(out["ratio"]), rel=1e-5)
    # the same as the plain formula on that white light
    f, e = flux.values[oot], flux_err.values[oot]
    assert float(out["ratio"]) == pytest.approx(np.std(f, ddof=1) / np.median(e), rel=1e-12)
    assert nums["white-light scatter (out of transit)"]["value"] == pytest.approx(np.std(f, ddof=1) * 1e6, rel=1e-5)
    assert nums["white-light expected scatter (from err)"]["value"] == pytest.approx(np.median(e) * 1e6, rel=1e-5)


def test_unilluminated_product_renders_dq_figures(tmp_path):
    prod = _products(tmp_path / "p", illuminated=False, ramp=False)
    html = make_report(prod, tmp_path / "out")
    imgs = _html_images(html)
    for key in ("dq_summary", "dq_maps", "flags_per_int", "rate_image", "column_psd"):
        assert f"{key}.png" in imgs
        _check_png(tmp_path / "out" / f"{key}.png")
    text = html.read_text()
    assert "no illuminated spectral trace found" in text
    assert "no saved ramp" in text
    assert "white_light.png" not in imgs


def test_rate_only_product(tmp_path):
    prod = _products(tmp_path / "p", ramp=False, rateints=False)
    html = make_report(tmp_path / "p" / "sim_rate.zarr", tmp_path / "out")
    imgs = _html_images(html)
    assert {"dq_summary.png", "dq_maps.png", "rate_image.png", "trace_overlay.png"} <= set(imgs)
    assert "no rateints product" in html.read_text()
    assert prod.exists()


def test_cli_main(tmp_path, capsys):
    prod = _products(tmp_path / "p", ramp=False)
    assert main([str(prod), "--out", str(tmp_path / "o"), "--oot", "0:8,16:24", "--no-trace-integrations"]) == 0
    assert capsys.readouterr().out.strip().endswith("index.html")
    assert (tmp_path / "o" / "white_light.png").is_file()
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2


def test_parse_ranges_and_find_products(tmp_path):
    # "0:2,5:" over 7 integrations → 0, 1, 5, 6
    np.testing.assert_array_equal(parse_ranges("0:2,5:", 7), [1, 1, 0, 0, 0, 1, 1])
    prod = _products(tmp_path / "p")
    f = find_products(prod)
    assert f.rate.name == "sim_rate.zarr" and f.rateints.name == "sim_rateints.zarr"
    assert set(f.ramps) == {"dark_current"}


def test_default_orders_finds_the_trace():
    img = np.zeros((NY, NX))
    y = np.arange(NY)[:, None]
    img += FLUX * np.exp(-0.5 * ((y - _trace_row(np.arange(NX))[None, :]) / SIGMA) ** 2)
    img += np.random.default_rng(0).normal(0, 1.0, img.shape)
    o = default_orders(img, np.arange(NX))
    # order 1 starts at the last column but one (127 − 1) at the trace row there: 30 + 4·(62/64)² ≈ 33.8
    assert o[1]["x_start"] == NX - 2 and abs(o[1]["y_start"] - 33.8) <= 1.0
    assert 2 not in o  # a single order
    assert default_orders(np.random.default_rng(1).normal(0, 1, (NY, NX)), np.arange(NX)) == {}


def test_reference_rows_raise_no_all_nan_warning():
    """Rows without a finite pixel (reference rows, flagged in every column) are skipped
    silently when the order finder takes a column's profile."""
    import warnings

    from daskramp.report import _smooth_profile

    img = np.random.default_rng(2).normal(0, 1.0, (NY, NX))
    img[:4] = np.nan  # reference rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prof = _smooth_profile(img, 64)
    assert prof.shape == (NY,) and np.isfinite(prof).all()


def test_column_psd_leaves_out_the_nyquist_bin():
    from daskramp.plots import column_psd

    f = np.linspace(500.0, 0.5 / 10e-6, 50)  # the last frequency is the Nyquist one
    p = np.full(f.size, 80.0)
    p[-1] = 25.0  # only the cosine term there
    fig = column_psd(f, p)
    (line,) = fig.axes[0].get_lines()
    assert line.get_xdata().max() < f[-1] and line.get_ydata().min() == 80.0
