"""Compare daskramp products with the official pipeline's FITS products."""

from __future__ import annotations

import numpy as np

from .. import dq as dqflags


def compare_arrays(ours: np.ndarray, theirs: np.ndarray, *, rtol: float = 1e-4, atol: float = 1e-4) -> dict:
    """Agreement of two float arrays: NaN pattern and |a−b| ≤ max(rtol·|b|, atol) on shared finite values."""
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {theirs.shape}")
    nan_o, nan_t = np.isnan(ours), np.isnan(theirs)
    both = ~nan_o & ~nan_t
    diff = np.abs(ours[both] - theirs[both])
    tol = np.maximum(rtol * np.abs(theirs[both]), atol)
    close = diff <= tol
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.abs(theirs[both])
    return {
        "n": int(ours.size),
        "nan_pattern_identical": bool(np.array_equal(nan_o, nan_t)),
        "nan_only_ours": int((nan_o & ~nan_t).sum()),
        "nan_only_theirs": int((~nan_o & nan_t).sum()),
        "finite_compared": int(both.sum()),
        "fraction_close": float(close.mean()) if close.size else 1.0,
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "median_rel_diff": float(np.nanmedian(rel)) if rel.size else 0.0,
    }


def compare_dq(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Fraction of identical DQ values, and per-bit counts where they differ."""
    ours = np.asarray(ours, np.uint32)
    theirs = np.asarray(theirs, np.uint32)
    same = ours == theirs
    xor = np.bitwise_xor(ours, theirs)
    per_bit = {}
    for name, bit in dqflags.PIXEL.items():
        if bit and (xor & bit).any():
            per_bit[name] = {
                "only_ours": int(((ours & bit) & ~(theirs & bit)).astype(bool).sum()),
                "only_theirs": int(((theirs & bit) & ~(ours & bit)).astype(bool).sum()),
            }
    return {"fraction_identical": float(same.mean()), "differing_bits": per_bit}


def compare_products(ours, official_fits_path) -> dict:
    """Compare an xarray product (rate or rateints, in memory) with an official FITS product."""
    from astropy.io import fits

    out = {}
    with fits.open(official_fits_path) as hdul:
        for var, ext in (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                         ("var_rnoise", "VAR_RNOISE")):
            out[var] = compare_arrays(np.asarray(ours[var].values), hdul[ext].data)
        out["dq"] = compare_dq(np.asarray(ours["dq"].values), hdul["DQ"].data)
    return out
