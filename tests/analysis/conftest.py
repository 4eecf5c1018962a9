"""Synthetic TSO products with known truth for the analysis tests.

``tso`` builds a rateints Dataset: 40 integrations × 64 rows × 256 columns (NIRISS-like,
FASTAXIS = −2, SLOWAXIS = −1), a curved Gaussian trace (σ = 2.5 px) carrying 1000 DN/s per
column, a box transit of depth 1 % in integrations 15–24, white noise of known σ = ``err``,
and optional 1/f column stripes (one offset per integration and column).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

NINT, NY, NX = 40, 64, 256
ERR = 2.0
FLUX = 1000.0
SIGMA = 2.5
DEPTH = 0.01
IN_TRANSIT = slice(15, 25)


def trace_center(x, shift=0.0):
    """Trace row at columns ``x``: 28 at the ends, 22 in the middle (a parabola) + shift."""
    x = np.asarray(x, np.float64)
    return 22.0 + 6.0 * ((x - 128.0) / 128.0) ** 2 + shift


def make_tso(*, stripes: float = 0.0, shifts=None, seed: int = 7, background: float = 0.0) -> tuple[xr.Dataset, dict]:
    rng = np.random.default_rng(seed)
    x = np.arange(NX)
    y = np.arange(NY)[:, None]
    depth = np.zeros(NINT)
    depth[IN_TRANSIT] = DEPTH
    shifts = np.zeros(NINT) if shifts is None else np.asarray(shifts, np.float64)
    from scipy.special import erf

    model = np.empty((NINT, NY, NX))
    for i in range(NINT):
        c = trace_center(x, shifts[i])[None, :]
        # pixel-integrated Gaussian: each column sums to FLUX exactly (up to the far tails)
        prof = 0.5 * (erf((y + 0.5 - c) / (SIGMA * np.sqrt(2))) - erf((y - 0.5 - c) / (SIGMA * np.sqrt(2))))
        model[i] = FLUX * (1 - depth[i]) * prof + background
    noise = rng.normal(0, ERR, model.shape)
    stripe = rng.normal(0, stripes, (NINT, 1, NX)) if stripes else np.zeros((NINT, 1, NX))
    data = (model + noise + stripe).astype(np.float32)
    t = 60000.0 + np.arange(NINT) * 60.0 / 86400.0  # one integration per minute (BJD days)
    ds = xr.Dataset(
        {
            "data": (("integration", "y", "x"), data, {"units": "DN/s"}),
            "err": (("integration", "y", "x"), np.full(data.shape, ERR, np.float32)),
            "var_poisson": (("integration", "y", "x"), np.zeros(data.shape, np.float32)),
            "var_rnoise": (("integration", "y", "x"), np.full(data.shape, ERR**2, np.float32)),
            "dq": (("integration", "y", "x"), np.zeros(data.shape, np.uint32)),
        },
        coords={
            "integration": np.arange(NINT),
            "y": np.arange(NY, dtype=np.int32),
            "x": np.arange(NX, dtype=np.int32),
            "int_mid_BJD_TDB": ("integration", t),
        },
        attrs={"FASTAXIS": -2, "SLOWAXIS": -1, "NOUTPUTS": 1, "INSTRUME": "NIRISS"},
    )
    truth = {"model": model, "stripes": stripe, "depth": depth, "shifts": shifts}
    return ds, truth


def chunked(ds: xr.Dataset, chunks: dict) -> xr.Dataset:
    """Chunk data variables only (coordinates stay numpy)."""
    return ds.assign({k: v.chunk({d: c for d, c in chunks.items() if d in v.dims}) for k, v in ds.data_vars.items()})


@pytest.fixture(scope="session")
def tso():
    return make_tso()


@pytest.fixture(scope="session")
def tso_striped():
    return make_tso(stripes=3.0, seed=11)


@pytest.fixture(scope="session")
def synth():
    """The builders and constants above, for tests that need their own variant."""
    from types import SimpleNamespace

    return SimpleNamespace(make_tso=make_tso, chunked=chunked, trace_center=trace_center, NINT=NINT,
                           NY=NY, NX=NX, ERR=ERR, FLUX=FLUX, SIGMA=SIGMA, DEPTH=DEPTH,
                           IN_TRANSIT=IN_TRANSIT)
