"""lightcurve.scatter_ratio: out-of-transit scatter against the scatter the errors predict."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from daskramp.analysis import lightcurve as lc
from daskramp.testing.ramps import forbid_compute


def _curve(values, errors):
    return (xr.DataArray(np.asarray(values, np.float64), dims=("integration",)),
            xr.DataArray(np.asarray(errors, np.float64), dims=("integration",)))


def test_hand_case_leaves_out_the_transit_and_nan_points():
    # baseline 1, 3, 5, 7 (std with ddof=1: sqrt(20/3)); the in-transit 100 and the NaN point
    # (whose error 50 must not count either) are left out; median of the errors 2, 2, 4, 2 = 2
    f, e = _curve([1, 3, 100, 5, np.nan, 7], [2, 2, 2, 4, 50, 2])
    oot = np.array([True, True, False, True, True, True])
    r = lc.scatter_ratio(f, e, out_of_transit=oot)
    assert float(r["scatter"]) == pytest.approx(np.sqrt(20 / 3), rel=1e-12)
    assert float(r["expected"]) == 2.0
    assert float(r["ratio"]) == pytest.approx(np.sqrt(20 / 3) / 2, rel=1e-12)
    assert int(r["n"]) == 4


def test_default_baseline_is_every_point():
    f, e = _curve([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert float(lc.scatter_ratio(f, e)["ratio"]) == pytest.approx(1.0)


def test_white_noise_described_by_its_errors_gives_one_and_excess_noise_more():
    rng = np.random.default_rng(3)
    n = 4000
    sigma = rng.uniform(0.8, 1.2, n) * 1e-3
    f, e = _curve(1 + rng.normal(0, 1, n) * sigma, sigma)
    # std of a scale mixture vs the median scale: within 3 % for 4000 points
    assert float(lc.scatter_ratio(f, e)["ratio"]) == pytest.approx(1.0, abs=0.03)
    # a correlated extra noise of 2σ (1/f left in the data) → sqrt(1 + 4) ≈ 2.24
    f2 = f + rng.normal(0, 2e-3, n)
    assert float(lc.scatter_ratio(f2, e)["ratio"]) == pytest.approx(np.sqrt(5), rel=0.05)


def test_lazy_per_column_equals_eager():
    rng = np.random.default_rng(5)
    flux = xr.DataArray(rng.normal(1, 0.01, (30, 4)), dims=("integration", "x"))
    err = xr.DataArray(np.full((30, 4), 0.01) * np.arange(1, 5), dims=("integration", "x"))
    oot = np.arange(30) % 3 != 0
    eager = lc.scatter_ratio(flux, err, out_of_transit=oot)
    with forbid_compute():
        lazy = lc.scatter_ratio(flux.chunk({"integration": 7}), err.chunk({"integration": 7}),
                                out_of_transit=oot)
    assert lazy["ratio"].chunks is not None
    xr.testing.assert_allclose(lazy.compute(), eager)
    assert eager["ratio"].dims == ("x",)
    np.testing.assert_allclose(eager["scatter"], flux.values[oot].std(axis=0, ddof=1))
