"""DQ summaries and Stage-1 diagnostics: hand counts, lazy == eager, laziness."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import daskramp.analysis  # noqa: F401  (registers the accessor)
from daskramp import dq
from daskramp.analysis import diagnostics as diag
from daskramp.analysis import dq as adq
from daskramp.testing.ramps import forbid_compute, make_ramp


def _pixeldq():
    # 4 × 5 image: row 0 reference pixels (5), (1,1) HOT|DO_NOT_USE, (2,3) DEAD|DO_NOT_USE,
    # (3,4) HOT; the other 12 pixels are GOOD.
    a = np.zeros((4, 5), np.uint32)
    a[0] = dq.REFERENCE_PIXEL
    a[1, 1] = dq.HOT | dq.DO_NOT_USE
    a[2, 3] = dq.DEAD | dq.DO_NOT_USE
    a[3, 4] = dq.HOT
    return xr.DataArray(a, dims=("y", "x"))


def test_decode_encode_round_trip():
    assert adq.decode(2147483648) == {"REFERENCE_PIXEL"}
    assert adq.encode("DO_NOT_USE, SATURATED") == 3
    assert adq.decode(adq.encode(["HOT", "JUMP_DET"])) == {"HOT", "JUMP_DET"}


def test_flag_table_hand_counts():
    # GOOD 12, REFERENCE_PIXEL 5, DO_NOT_USE 2, HOT 2, DEAD 1 of 20 pixels
    table = adq.flag_table(adq.flag_counts(_pixeldq()))
    assert table == {"GOOD": (12, 60.0), "DO_NOT_USE": (2, 10.0), "DEAD": (1, 5.0),
                     "HOT": (2, 10.0), "REFERENCE_PIXEL": (5, 25.0)}
    assert "HOT" in adq.format_table(table)


def test_flag_counts_lazy_equals_eager():
    eager = adq.flag_counts(_pixeldq())
    with forbid_compute():
        lazy = adq.flag_counts(_pixeldq().chunk({"x": 2}))
    assert lazy["count"].chunks is not None
    xr.testing.assert_equal(lazy.compute(), eager)


def test_flag_map_and_per_integration_counts():
    d = np.zeros((3, 2, 2), np.uint32)
    d[0, 0, 0] = dq.JUMP_DET
    d[1] = dq.JUMP_DET  # all 4 pixels of integration 1
    d[2, 1, 1] = dq.SATURATED | dq.DO_NOT_USE
    da = xr.DataArray(d, dims=("integration", "y", "x"))
    per = adq.flags_per_integration(da)
    np.testing.assert_array_equal(per["JUMP_DET"], [1, 4, 0])
    np.testing.assert_array_equal(per["SATURATED"], [0, 0, 1])
    np.testing.assert_allclose(per["JUMP_DET_fraction"], [0.25, 1.0, 0.0])
    with forbid_compute():
        lazy = adq.flags_per_integration(da.chunk({"integration": 1}))
    xr.testing.assert_equal(lazy.compute(), per)
    m = adq.flag_map(da, "SATURATED")
    assert m.dtype == bool and int(m.sum()) == 1
    # from groupdq: every flagged group counts, opportunities = groups × pixels
    gdq = np.zeros((2, 3, 2, 2), np.uint8)
    gdq[1, 1:, 0, 0] = dq.JUMP_DET
    g = adq.flags_per_integration(xr.DataArray(gdq, dims=("integration", "group", "y", "x")), ["JUMP_DET"])
    np.testing.assert_array_equal(g["JUMP_DET"], [0, 2])
    assert g.attrs["opportunities_per_integration"] == 12


def test_accessor_matches_functions():
    ds = xr.Dataset({"pixeldq": _pixeldq()})
    assert ds.daskramp.flag_table() == adq.flag_table(adq.flag_counts(_pixeldq()))


# ------------------------------------------------------------------ diagnostics


def _sat_ramp():
    # 2 integrations × 4 groups × 2 × 2; pixel (0,0) saturates from group 2 in integration 0
    # (partial), pixel (1,1) is saturated in every group of integration 1 (full).
    ds = make_ramp(2, 4, 2, 2, rate=1.0)
    gdq = ds["groupdq"].values.copy()
    gdq[0, 2:, 0, 0] = dq.SATURATED
    gdq[1, :, 1, 1] = dq.SATURATED
    ds["groupdq"].values[:] = gdq
    return ds


def test_saturation_summary_hand_case():
    s = diag.saturation_summary(_sat_ramp())
    np.testing.assert_array_equal(s["n_saturated"], [[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(s["first_saturated_group"][0], [[2, -1], [-1, -1]])
    np.testing.assert_array_equal(s["n_partial"], [1, 0])
    np.testing.assert_array_equal(s["n_full"], [0, 1])
    with forbid_compute():
        lazy = diag.saturation_summary(_sat_ramp().chunk({"integration": 1}))
    xr.testing.assert_equal(lazy.compute(), s)


def test_linearity_ratio_linear_and_quadratic():
    # linear ramps → ratio exactly 1.  A compressed ramp d = 100·g − 5·g² (g = group index):
    # first pair 95, last pair (groups 3, 4) 400 − 80 − (300 − 45) = 65 → ratio 65/95.
    lin = make_ramp(1, 5, 2, 2, rate=10.0)
    q = lin.copy(deep=True)
    g = np.arange(5.0)
    q["data"].values[:] = (100 * g - 5 * g**2)[None, :, None, None]
    out = diag.linearity_check(q, lin, bins=[0, 250, 1000])
    np.testing.assert_allclose(out["ratio_after"], 1.0)
    np.testing.assert_allclose(out["ratio_before"], 65 / 95, rtol=1e-6)
    # fluence at the last group: 320 (before) → bin 2; 50 (after) → bin 1
    np.testing.assert_allclose(out["count_before"], [0, 4])
    np.testing.assert_allclose(out["mean_ratio_before"][1], 65 / 95, rtol=1e-6)
    with forbid_compute():
        lazy = diag.linearity_check(q.chunk({"x": 1}), lin.chunk({"x": 1}), bins=[0, 250, 1000])
    np.testing.assert_allclose(lazy["mean_ratio_before"].values, out["mean_ratio_before"].values)


def test_dark_fraction_hand_case():
    # after = 200 DN on the last group, before = 210 → 5 %
    after = make_ramp(3, 3, 2, 2, rate=10.0)  # TGROUP 10 → last group 30 DN… set it explicitly
    after["data"].values[:, -1] = 200.0
    before = after.copy(deep=True)
    before["data"].values[:, -1] = 210.0
    np.testing.assert_allclose(diag.dark_fraction(before, after), 5.0, rtol=1e-6)


def test_pixel_ramps_fit_and_intercept():
    # rate 2 DN/s, TGROUP 10 s, bias 100 → data = 100 + 2·10·(g+1); time = g·10 → line
    # slope 2, intercept (at group 0) 120.  A jump at group 3 is left out of the fit.
    ds = make_ramp(2, 5, 3, 3, rate=2.0, bias=100.0)
    ds["data"].values[0, 3:, 1, 1] += 500.0
    ds["groupdq"].values[0, 3, 1, 1] = dq.JUMP_DET
    pr = diag.pixel_ramps(ds, [(1, 1), (2, 0)])
    np.testing.assert_allclose(pr["slope"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(pr["intercept"], 120.0, rtol=1e-6)
    assert pr["groupdq"].values[0, 0, 3] == dq.JUMP_DET
    rateints = xr.Dataset({"data": (("integration", "y", "x"), np.full((2, 3, 3), 2.0, np.float32)),
                           "intercept": (("integration", "y", "x"), np.full((2, 3, 3), 120.0, np.float32))},
                          coords={"y": ds["y"], "x": ds["x"]})
    pr2 = diag.pixel_ramps(ds, [(1, 1)], rateints=rateints)
    assert pr2.attrs["line_source"] == "rateints+intercept"
    np.testing.assert_allclose(pr2["model"].values[0, 1], 120 + 2.0 * 10 * np.arange(5))
    with forbid_compute():
        lazy = diag.pixel_ramps(ds.chunk({"integration": 1}), [(1, 1), (2, 0)])
    with dask.config.set(scheduler="synchronous"):
        xr.testing.assert_allclose(lazy.compute(), pr)


def test_unknown_flag_name_raises():
    with pytest.raises(ValueError):
        adq.flag_map(_pixeldq(), "NOT_A_FLAG")
