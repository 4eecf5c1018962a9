"""linearity: polynomial correction of classic non-linearity (spec 05).

``F_c = c0 + c1·F + … + cn·Fⁿ`` per pixel, group and integration (Horner's rule); groups flagged
SATURATED keep their value.  With inverse coefficients and frame-averaged groups (NFRAMES > 1)
the correction is applied read by read on a simulated ramp, because the polynomial of an average
is not the average of the polynomial.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from ..dq import NO_LIN_CORR, SATURATED


def _identity_where(coeffs: np.ndarray, bad: np.ndarray) -> np.ndarray:
    ident = np.zeros(coeffs.shape[0], dtype=coeffs.dtype)
    ident[1] = 1
    return np.where(bad[None], ident[:, None, None], coeffs)


def _bad_coefficients(coeffs: np.ndarray) -> np.ndarray:
    return np.any(np.isnan(coeffs), axis=0) | (coeffs[1] == 0)


def prepare_coefficients(coeffs: np.ndarray, lin_dq: np.ndarray | None = None) -> np.ndarray:
    """Coefficients with the identity polynomial where no correction can be applied.

    Identity (0, 1, 0, …) replaces the coefficients of pixels flagged NO_LIN_CORR in the
    LINEARITY DQ, pixels with any NaN coefficient, and pixels whose linear term is 0.

    Parameters
    ----------
    coeffs : ndarray, (ncoeffs, y, x), float
        COEFFS (or INV_COEFFS) cut to the subarray, lowest order first.
    lin_dq : ndarray, (y, x), uint32, optional

    Returns
    -------
    ndarray, (ncoeffs, y, x), dtype of ``coeffs``
    """
    if coeffs.ndim != 3 or coeffs.shape[0] < 2:
        raise ValueError(f"linearity coefficients must be (ncoeffs >= 2, y, x), got {coeffs.shape}")
    if lin_dq is not None:
        coeffs = _identity_where(coeffs, np.bitwise_and(lin_dq, NO_LIN_CORR) != 0)
    return _identity_where(coeffs, _bad_coefficients(coeffs))


def linearity_pixeldq(
    pixeldq: np.ndarray,
    coeffs: np.ndarray,
    lin_dq: np.ndarray | None = None,
    inv_coeffs: np.ndarray | None = None,
) -> np.ndarray:
    """``pixeldq | lin_dq | NO_LIN_CORR`` where the (inverse) coefficients are unusable.

    A pixel already flagged NO_LIN_CORR in the LINEARITY DQ has its coefficients replaced
    before the NaN/zero checks, so only that flag (already in ``lin_dq``) is added for it.

    Returns
    -------
    ndarray, (y, x), uint32
    """
    out = pixeldq if lin_dq is None else np.bitwise_or(pixeldq, lin_dq)
    flagged = None if lin_dq is None else np.bitwise_and(lin_dq, NO_LIN_CORR) != 0
    for c in (coeffs, inv_coeffs):
        if c is None:
            continue
        bad = _bad_coefficients(c)
        if flagged is not None:
            bad = bad & ~flagged
        out = np.bitwise_or(out, np.where(bad, np.uint32(NO_LIN_CORR), np.uint32(0)))
    return out.astype(np.uint32)


def apply_polynomial(values: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Horner evaluation of ``Σ c_k · valuesᵏ`` (highest order first).

    Parameters
    ----------
    values : ndarray, (..., y, x)
    coeffs : ndarray, (ncoeffs, y, x)

    Returns
    -------
    ndarray, shape of ``values``, dtype of ``values · coeffs``
    """
    n = coeffs.shape[0]
    out = coeffs[n - 1] * values
    for k in range(n - 2, 0, -1):
        out += coeffs[k]
        out *= values
    out += coeffs[0]
    return out


def linearity_correction(
    data: np.ndarray,
    groupdq: np.ndarray,
    coeffs: np.ndarray,
    *,
    inv_coeffs: np.ndarray | None = None,
    read_pattern: Sequence[Sequence[int]] | None = None,
    engine: str = "numba",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Linearised ramp.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32, DN (bias-subtracted)
    groupdq : ndarray, (integration, group, y, x), uint8
    coeffs : ndarray, (ncoeffs, y, x), float
        Prepared coefficients (:func:`prepare_coefficients`).
    inv_coeffs : ndarray, (ncoeffs_inv, y, x), optional
        Prepared inverse coefficients; with ``read_pattern`` selects the read-level correction.
    read_pattern : list of lists of int, optional
        1-based frame numbers of each group; used only with ``inv_coeffs``.
    engine : {"numba", "numpy"}
        Compiled per-pixel loops (default) or the vectorised numpy reference.  The classic path
        gives identical values; the read-level path agrees to float64 rounding.
    out : ndarray, float32, data's shape, optional
        Where the compiled loops write the result (``data`` itself will do: a pixel's groups
        are all read before its first is written).

    Returns
    -------
    ndarray, (integration, group, y, x), float32, DN
        SATURATED groups unchanged; DO_NOT_USE groups are corrected too.
    """
    if engine not in ("numba", "numpy"):
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    data = np.asarray(data, dtype=np.float32)
    read_level = inv_coeffs is not None and read_pattern is not None and data.shape[1] >= 2
    if engine == "numba":
        if out is None:
            out = np.empty_like(data)
        if read_level:
            rp = np.asarray([list(r) for r in read_pattern[: data.shape[1]]], dtype=np.float64)
            _read_level_numba(data, groupdq, coeffs, inv_coeffs, rp, out)
        else:
            acc = np.empty(data.shape[-1], np.result_type(data.dtype, coeffs.dtype))
            _classic_numba(data, groupdq, coeffs, out, acc)
        return out
    saturated = (groupdq & SATURATED) != 0
    if read_level:
        return _read_level(data, saturated, coeffs, inv_coeffs, read_pattern)
    out = apply_polynomial(data, coeffs).astype(np.float32, copy=False)
    return np.where(saturated, data, out)


@numba.njit(cache=True)
def _horner(v, coeffs, y, x):
    # same operation order as apply_polynomial; the value type follows v and the coefficients
    n = coeffs.shape[0]
    r = coeffs[n - 1, y, x] * v
    for k in range(n - 2, 0, -1):
        r += coeffs[k, y, x]
        r *= v
    r += coeffs[0, y, x]
    return r


@numba.njit(cache=True)
def _classic_numba(data, groupdq, coeffs, out, acc):
    # Horner row by row with the coefficient loop outside the pixel loop, so the inner loop
    # is a plain vectorisable sweep along x
    nint, ngroup, ny, nx = data.shape
    n = coeffs.shape[0]
    sat = np.uint8(SATURATED)
    for i in range(nint):
        for g in range(ngroup):
            for y in range(ny):
                row = data[i, g, y]
                for x in range(nx):
                    acc[x] = coeffs[n - 1, y, x] * row[x]
                for k in range(n - 2, 0, -1):
                    for x in range(nx):
                        acc[x] = (acc[x] + coeffs[k, y, x]) * row[x]
                for x in range(nx):
                    r = acc[x] + coeffs[0, y, x]
                    acc[x] = row[x] if groupdq[i, g, y, x] & sat else r
                # the row is written once it is all read: ``out`` may be ``data`` itself
                orow = out[i, g, y]
                for x in range(nx):
                    orow[x] = acc[x]


@numba.njit(cache=True)
def _read_level_numba(data, groupdq, coeffs, inv_coeffs, rp, out):
    nint, ngroup, ny, nx = data.shape
    nread = rp.shape[1]
    sat = np.uint8(SATURATED)
    means = np.empty(ngroup)
    for g in range(ngroup):
        means[g] = rp[g].sum() / nread
    raw = np.empty(nread)
    for i in range(nint):
        for y in range(ny):
            for x in range(nx):
                nsat = 0
                for g in range(ngroup):
                    if groupdq[i, g, y, x] & sat:
                        nsat += 1
                k = max(ngroup - nsat - 1, 2)
                last = min(k - 1, ngroup - 1)
                d0 = data[i, 0, y, x]
                first = d0 if groupdq[i, 0, y, x] & sat else _horner(d0, coeffs, y, x)
                dl = data[i, last, y, x]
                final = dl if groupdq[i, last, y, x] & sat else _horner(dl, coeffs, y, x)
                rate = (np.float64(final) - np.float64(first)) / (means[last] - means[0])
                for g in range(ngroup):
                    dg = data[i, g, y, x]
                    if groupdq[i, g, y, x] & sat:
                        out[i, g, y, x] = dg
                        continue
                    mean_raw = 0.0
                    for j in range(nread):
                        r = np.float64(first) + rate * (rp[g, j] - means[0])
                        raw[j] = _horner(r, inv_coeffs, y, x)
                        mean_raw += raw[j]
                    offset = np.float64(dg) - mean_raw / nread
                    acc = 0.0
                    for j in range(nread):
                        acc += _horner(raw[j] + offset, coeffs, y, x)
                    out[i, g, y, x] = acc / nread


def _read_level(data, saturated, coeffs, inv_coeffs, read_pattern):
    """Read-level correction of frame-averaged groups (spec 05, read-level section)."""
    nint, ngroup, ny, nx = data.shape
    means = np.array([np.mean(r) for r in read_pattern[:ngroup]], dtype=np.float64)
    # the last unsaturated group may hold a partially saturated read: use the one before it,
    # but never fewer than two groups
    k = np.maximum(ngroup - saturated.sum(axis=1) - 1, 2)
    last = np.minimum(k - 1, ngroup - 1)
    first = np.where(saturated[:, 0], data[:, 0], apply_polynomial(data[:, 0], coeffs))
    d_last = np.take_along_axis(data, last[:, None], axis=1)[:, 0]
    s_last = np.take_along_axis(saturated, last[:, None], axis=1)[:, 0]
    final = np.where(s_last, d_last, apply_polynomial(d_last, coeffs))
    rate = (final - first) / (means[last] - means[0])  # DN per frame, float64

    out = np.empty_like(data)
    for g in range(ngroup):
        since = np.asarray(read_pattern[g], dtype=np.float64) - means[0]
        reads = first[:, None] + rate[:, None] * since[None, :, None, None]
        raw = apply_polynomial(reads, inv_coeffs)
        raw += (data[:, g] - raw.mean(axis=1))[:, None]
        corrected = apply_polynomial(raw, coeffs).mean(axis=1)
        out[:, g] = np.where(saturated[:, g], data[:, g], corrected)
    return out


def linearity_zeroframe(zeroframe: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Classic correction of the zero frame; values that are exactly 0 (bad) stay 0.

    Parameters
    ----------
    zeroframe : ndarray, (integration, y, x), float32, DN
    coeffs : ndarray, (ncoeffs, y, x), prepared

    Returns
    -------
    ndarray, same shape, float32
    """
    z = np.asarray(zeroframe, dtype=np.float32)
    out = apply_polynomial(z, coeffs).astype(np.float32, copy=False)
    return np.where(z == 0, np.float32(0), out)
