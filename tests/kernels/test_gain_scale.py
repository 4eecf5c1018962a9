"""gain_scale: spec 08 §8."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from daskramp.kernels import gain_scale as K
from daskramp.steps import gain_scale as S
from daskramp.testing.ramps import forbid_compute


def _product(lazy=False, **attrs):
    def arr(v):
        a = np.full((2, 3), v, np.float32)
        return da.from_array(a, chunks=(1, 3)) if lazy else a

    return xr.Dataset(
        {
            "data": (("y", "x"), arr(5.0)),
            "err": (("y", "x"), arr(0.5)),
            "var_poisson": (("y", "x"), arr(0.2)),
            "var_rnoise": (("y", "x"), arr(0.05)),
            "dq": (("y", "x"), np.full((2, 3), 4, np.uint32)),
        },
        attrs=attrs,
    )


def test_kernel():
    v = np.array([1.0, 2.0], np.float32)
    np.testing.assert_allclose(K.gain_scale(v, gain_factor=2.0), [2, 4])
    np.testing.assert_allclose(K.gain_scale(v, gain_factor=2.0, power=2), [4, 8])
    assert K.gain_scale(v, gain_factor=2.0).dtype == np.float32


def test_wrapper_factor_2():
    # data, err × 2; variances × 4; dq untouched
    out = S.gain_scale(_product(), gain_factor=2.0)
    assert out.attrs["S_GANSCL"] == "COMPLETE" and out.attrs["GAINFACT"] == 2.0
    np.testing.assert_allclose(out.data.values, 10.0)
    np.testing.assert_allclose(out.err.values, 1.0)
    np.testing.assert_allclose(out.var_poisson.values, 0.8)
    np.testing.assert_allclose(out.var_rnoise.values, 0.2)
    assert (out.dq.values == 4).all()


def test_product_gainfact_takes_priority_and_skipped_without():
    out = S.gain_scale(_product(GAINFACT=3.0), gain_factor=2.0)
    np.testing.assert_allclose(out.data.values, 15.0)
    skipped = S.gain_scale(_product())
    assert skipped.attrs["S_GANSCL"] == "SKIPPED"
    np.testing.assert_array_equal(skipped.data.values, 5.0)


def test_lazy():
    with forbid_compute():
        out = S.gain_scale(_product(lazy=True), gain_factor=2.0)
    assert isinstance(out.var_rnoise.data, da.Array)
    np.testing.assert_allclose(out.var_rnoise.values, 0.2)
