"""ramp_fit kernel: likelihood fit of the group differences (the official ``LIKELY``
algorithm, Brandt 2024; spec 12 §2).

Each integration of each pixel is fitted on its own: the group differences
``d_k = (R_{k+1} − R_k)/Δt_k`` (DN/s) have a tridiagonal covariance (photon noise from a rate
guess, read noise); the rate is their generalised least-squares mean.  Before the final fit a
likelihood jump search drops the differences whose omission improves χ² by more than 4.5²
(one difference) or 23.8 (two adjacent ones sharing a multi-read resultant) and flags
JUMP_DET on the group that ends each dropped difference.

The tridiagonal algebra works with LU pivots (forward and backward), so the diagonal and
first off-diagonal of the inverse covariance, and ``C⁻¹1``, ``C⁻¹d``, come in O(n) without
determinants (no overflow for long ramps).  Unusable differences are decoupled from their
neighbours, which makes the usable block the sub-matrix of the full covariance.

The per-integration output uses the field layout of :mod:`daskramp.kernels.ramp_fit`
(``slope``, ``err``, ``var_poisson``, ``var_rnoise``, ``dq``; the OLS_C-only fields are 0,
``intercept`` NaN) so the step's plumbing is shared; the exposure rate is
:func:`combine_integrations` of the rateints planes (a median and variance reweighting,
which no sum over integrations gives).
"""

from __future__ import annotations

import numba
import numpy as np

from .. import dq as _dq
from .ramp_fit import NFIELDS, F, products_of_fields, resolve_group_range
from .selection import lower_of_selected, select

#: fewer groups than this and the official step fits with OLS_C instead
LIKELY_MIN_NGROUPS = 4
#: Δχ² above which dropping one difference is accepted (4.5σ)
THRESHOLD_ONE_OMIT = 20.25
#: Δχ² above which dropping two adjacent differences is accepted
THRESHOLD_TWO_OMIT = 23.8

_F_SLOPE, _F_ERR, _F_VP, _F_VR, _F_DQ, _F_ICPT = (
    F["slope"], F["err"], F["var_poisson"], F["var_rnoise"], F["dq"], F["intercept"])
_DNU = np.uint32(_dq.DO_NOT_USE)
_SAT = np.uint32(_dq.SATURATED)
_JUMP = np.uint32(_dq.JUMP_DET)
_JUMP8 = np.uint8(_dq.JUMP_DET)


def read_pattern(ngroups: int, *, nframes: int, groupgap: int, tframe: float,
                 zeroframe: bool = False):
    """Resultant timing of an evenly sampled ramp.

    Group k (0-based) averages reads at ``(j + k·(nframes+groupgap))·tframe`` s, j = 1…nframes.
    With ``zeroframe`` (needs nframes ≥ 2) the first read becomes a one-read resultant of its
    own ahead of group 0, which keeps the other ``nframes − 1`` reads.

    Returns
    -------
    mean_t, tau : float64 (nres,), s
        Mean read time and the variance-weighted time ``Σ_j (2N+1−2j) t_j / N²``.
    nreads : float64 (nres,)
        Reads per resultant.
    """
    reads = [(np.arange(1, nframes + 1) + k * (nframes + groupgap)) * float(tframe)
             for k in range(ngroups)]
    if zeroframe:
        reads = [reads[0][:1], reads[0][1:], *reads[1:]]
    mean_t = np.array([r.mean() for r in reads])
    tau = np.array([np.sum((2 * len(r) + 1 - 2 * np.arange(1, len(r) + 1)) * r) / len(r) ** 2
                    for r in reads])
    nreads = np.array([len(r) for r in reads], np.float64)
    return mean_t, tau, nreads


def covariance_terms(mean_t, tau, nreads):
    """Per-unit coefficients of the tridiagonal covariance of the differences (DN/s)².

    ``α = αp·c + αr·σ²`` on the diagonal (n), ``β = βp·c + βr·σ²`` next to it (n−1), with
    ``c = rate/gain`` (DN/s per e⁻/DN) and ``σ`` the one-read noise (DN); ``αp``, ``βp`` in
    s/s², ``αr``, ``βr`` in 1/s².  Returns ``(delta_t, alpha_p, alpha_r, beta_p, beta_r)``.
    """
    dt = mean_t[1:] - mean_t[:-1]
    alpha_p = (tau[:-1] + tau[1:] - 2 * mean_t[:-1]) / dt**2
    alpha_r = (1 / nreads[:-1] + 1 / nreads[1:]) / dt**2
    beta_p = (mean_t[1:-1] - tau[1:-1]) / (dt[1:] * dt[:-1])
    beta_r = -1 / (nreads[1:-1] * dt[1:] * dt[:-1])
    return dt, alpha_p, alpha_r, beta_p, beta_r


@numba.njit(cache=True, error_model="numpy")
def _gls(d, use, a, b, u, w, x, y, diag, off):
    """GLS fit of the usable differences ``d`` (n) with covariance diagonal ``a`` (n) and
    off-diagonal ``b`` (n−1); entries touching an unusable difference are decoupled.

    Fills the forward/backward LU pivots ``u``/``w``, ``x = C⁻¹1``, ``y = C⁻¹d``, the
    diagonal ``diag`` and first off-diagonal ``off`` of ``C⁻¹`` (usable entries only) and
    returns ``(A, B, C) = (dᵀC⁻¹d, 1ᵀC⁻¹d, 1ᵀC⁻¹1)``.
    """
    n = d.shape[0]
    # forward elimination (Thomas): pivots and the two right-hand sides together
    for k in range(n):
        if not use[k]:
            u[k] = 1.0
            x[k] = 0.0
            y[k] = 0.0
            continue
        uk = a[k]
        xk = 1.0
        yk = d[k]
        if k > 0 and use[k - 1]:
            f = b[k - 1] / u[k - 1]
            uk -= f * b[k - 1]
            xk -= f * x[k - 1]
            yk -= f * y[k - 1]
        u[k] = uk
        x[k] = xk
        y[k] = yk
    for k in range(n - 1, -1, -1):
        if not use[k]:
            w[k] = 1.0
            continue
        wk = a[k]
        if k < n - 1 and use[k + 1]:
            wk -= b[k] * b[k] / w[k + 1]
            x[k] = (x[k] - b[k] * x[k + 1]) / u[k]
            y[k] = (y[k] - b[k] * y[k + 1]) / u[k]
        else:
            x[k] = x[k] / u[k]
            y[k] = y[k] / u[k]
        w[k] = wk
    A = 0.0
    B = 0.0
    C = 0.0
    for k in range(n):
        if use[k]:
            # (C⁻¹)_kk = 1/(u_k + w_k − a_k): the forward and backward Schur complements
            diag[k] = 1.0 / (u[k] + w[k] - a[k])
            A += d[k] * y[k]
            B += d[k] * x[k]
            C += x[k]
        else:
            diag[k] = 0.0
    for k in range(n - 1):
        if use[k] and use[k + 1]:
            off[k] = -b[k] * diag[k + 1] / u[k]
        else:
            off[k] = 0.0
    return A, B, C


@numba.njit(cache=True, error_model="numpy")
def _fill_cov(c, s2, ap, ar, bp, br, a, b):
    """Covariance of the differences for photon term ``c`` (DN/s per gain) and read variance ``s2``."""
    n = ap.shape[0]
    for k in range(n):
        a[k] = c * ap[k] + s2 * ar[k]
    for k in range(n - 1):
        b[k] = c * bp[k] + s2 * br[k]


@numba.njit(cache=True, error_model="numpy")
def _without_one(B, C, dg, xk, yk):
    """χ²-part ``q`` and rate of the fit with a free offset on one difference (its diagonal
    ``dg`` of C⁻¹, ``xk`` of C⁻¹1, ``yk`` of C⁻¹d): the fit without it.  Its χ² is
    ``A − q``; the improvement over the full fit is ``q − B²/C``."""
    det = C * dg - xk * xk
    return (dg * B * B - 2.0 * xk * B * yk + C * yk * yk) / det, (dg * B - xk * yk) / det


@numba.njit(cache=True, error_model="numpy")
def _without_two(B, C, x0, x1, d0, d1, o01, y0, y1):
    """As :func:`_without_one` for free offsets on two adjacent differences (3×3 normal
    equations by Cramer's rule)."""
    m00 = C
    m01 = x0
    m02 = x1
    m11 = d0
    m12 = o01
    m22 = d1
    r0 = B
    r1_ = y0
    r2_ = y1
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    s0 = c00 * r0 + c01 * r1_ + c02 * r2_
    s1 = c01 * r0 + c11 * r1_ + c12 * r2_
    s2 = c02 * r0 + c12 * r1_ + c22 * r2_
    return (r0 * s0 + r1_ * s1 + r2_ * s2) / det, s0 / det


@numba.njit(cache=True, error_model="numpy", inline="always")
def _write_dq(gdq, pdq, marks, iy, ix, zf_shift, gdq_out, out):
    """A pixel's output group DQ (its input flags with ``marks`` (nres) OR-ed in: the jumps
    found) and rateints DQ: SAT/JUMP if in any group; DNU if every group is SAT or DNU.
    (Inlined: called once per pixel, a call costs the row pass 9 %.)"""
    q = np.uint32(pdq[iy, ix])
    allbad = True
    for k in range(gdq.shape[0]):
        gq = np.uint8(gdq[k, iy, ix] | marks[k])
        if k >= zf_shift:
            gdq_out[k - zf_shift, iy, ix] = gq
        if (np.uint32(gq) & _SAT) != 0:
            q |= _SAT
        if (np.uint32(gq) & _JUMP) != 0:
            q |= _JUMP
        if (np.uint32(gq) & (_SAT | _DNU)) == 0:
            allbad = False
    if allbad:
        q |= _DNU
    out[_F_DQ, iy, ix] = np.float64(q)


@numba.njit(cache=True, error_model="numpy")
def _omit_search(d, use, x, y, diag, off, A, B, C, two_ok, d1, r1, d2, r2):
    """Δχ² and rate of the fit without each usable difference (``d1``, ``r1``, n) and without
    each adjacent pair (``d2``, ``r2``, n−1); omitting unusable ones changes nothing.
    ``A, B, C`` are :func:`_gls`'s sums of the current fit (its χ² is ``A − B²/C``)."""
    n = d.shape[0]
    full_rate = B / C
    base = B * B / C
    nuse = 0
    for k in range(n):
        nuse += use[k]
    for k in range(n):
        if use[k] and nuse == 1:
            # nothing left to fit: undefined, which stops the search for this ramp
            d1[k] = np.nan
            r1[k] = np.nan
        elif use[k]:
            # GLS with a free offset on difference k equals the fit without it
            q, r = _without_one(B, C, diag[k], x[k], y[k])
            d1[k] = q - base
            r1[k] = r
        else:
            d1[k] = 0.0
            r1[k] = full_rate
    for k in range(n - 1):
        if not use[k]:
            d2[k] = d1[k + 1]
            r2[k] = r1[k + 1]
        elif not use[k + 1]:
            d2[k] = d1[k]
            r2[k] = r1[k]
        elif nuse == 2:
            # the pair is all that is usable: nothing is left to fit, whose χ² is 0, so the
            # improvement is the whole χ² (a number, so the search still compares the
            # single omissions, as the official search does); its rate is undefined
            d2[k] = A - base
            r2[k] = np.nan
        else:
            # free offsets on k and k+1
            q, r = _without_two(B, C, x[k], x[k + 1], diag[k], diag[k + 1], off[k], y[k], y[k + 1])
            d2[k] = q - base
            r2[k] = r


@numba.njit(cache=True, error_model="numpy")
def _variances(x, use, C, ap, bp, ar, br):
    """Photon and read-noise variances of the GLS rate, ``vᵀC_p v`` and ``vᵀC_r v`` with
    ``v = C⁻¹1/(1ᵀC⁻¹1)`` (covariance parts already scaled by c and σ²)."""
    n = x.shape[0]
    vp = 0.0
    vr = 0.0
    for k in range(n):
        if use[k]:
            v = x[k] / C
            vp += v * v * ap[k]
            vr += v * v * ar[k]
    for k in range(n - 1):
        if use[k] and use[k + 1]:
            vv = 2.0 * (x[k] / C) * (x[k + 1] / C)
            vp += vv * bp[k]
            vr += vv * br[k]
    return vp, vr


@numba.njit(cache=True, error_model="numpy")
def _fit_block(res, gdq, pdq, gain, rn, dark, dt, ap0, ar0, bp0, br0, two_ok, zf_shift, out, gdq_out,
               todo):
    """Fit the pixels ``todo`` (bool (ny, nx)) of one integration, one after the other.

    ``res`` float32 (nres, ny, nx) resultants (zero frame prepended when used), ``gdq`` uint8
    (nres, ny, nx) their DQ; ``out`` float64 (NFIELDS, ny, nx) receives this integration's
    fields; ``gdq_out`` uint8 (ngroups, ny, nx) the group DQ with the jumps found (groups of
    the science ramp, ``zf_shift`` = 1 when a zero frame was prepended).
    """
    nres, ny, nx = res.shape
    n = nres - 1
    d = np.empty(n)
    dsort = np.empty(n)
    use = np.zeros(n, np.bool_)
    use0 = np.zeros(n, np.bool_)
    a = np.empty(n)
    b = np.empty(max(n - 1, 1))
    u = np.empty(n)
    w = np.empty(n)
    x = np.empty(n)
    y = np.empty(n)
    diag = np.empty(n)
    off = np.empty(max(n - 1, 1))
    d1 = np.empty(n)
    r1 = np.empty(n)
    d2 = np.empty(max(n - 1, 1))
    r2 = np.empty(max(n - 1, 1))
    cap = np.empty(n)
    car = np.empty(n)
    cbp = np.empty(max(n - 1, 1))
    cbr = np.empty(max(n - 1, 1))
    marks = np.zeros(nres, np.uint8)
    for iy in range(ny):
        for ix in range(nx):
            if not todo[iy, ix]:
                continue
            g = np.float64(gain[iy, ix])
            s2 = (np.float64(rn[iy, ix]) / np.sqrt(2.0)) ** 2
            anynan = False
            for k in range(n):
                # the difference in float32, as the resultants are stored
                d[k] = np.float64(np.float32(res[k + 1, iy, ix] - res[k, iy, ix])) / dt[k]
                if np.isnan(d[k]):
                    anynan = True
                ok = gdq[k, iy, ix] == 0 and gdq[k + 1, iy, ix] == 0
                use[k] = ok
                use0[k] = ok
            # rate guess for the covariance of the search: median of every difference
            if anynan:
                guess = np.nan
            else:
                # insertion sort: the few differences of one ramp sort several times faster
                # in place than through the general array sort
                for k in range(n):
                    v = d[k]
                    j = k
                    while j > 0 and dsort[j - 1] > v:
                        dsort[j] = dsort[j - 1]
                        j -= 1
                    dsort[j] = v
                h = n // 2
                guess = dsort[h] if n % 2 else 0.5 * (dsort[h - 1] + dsort[h])
                if not guess > 0:
                    guess = 0.0
            _fill_cov(guess / g, s2, ap0, ar0, bp0, br0, a, b)
            rate = np.nan
            nuse = 0
            for k in range(n):
                nuse += use[k]
            for it in range(n):
                A, B, C = _gls(d, use, a, b, u, w, x, y, diag, off)
                if it == 0:
                    rate = B / C
                _omit_search(d, use, x, y, diag, off, A, B, C, two_ok, d1, r1, d2, r2)
                best1 = -np.inf
                for k in range(n):
                    if np.isnan(d1[k]) or np.isnan(best1):
                        best1 = np.nan
                    elif d1[k] > best1:
                        best1 = d1[k]
                best2 = -np.inf
                for k in range(n - 1):
                    v = d2[k] * (1.0 if two_ok[k] else 0.0)
                    if np.isnan(v) or np.isnan(best2):
                        best2 = np.nan
                    elif v > best2:
                        best2 = v
                if n - 1 == 0:
                    best2 = 0.0
                if np.isnan(best1) or np.isnan(best2):
                    break
                one = best1 - THRESHOLD_ONE_OMIT > best2 - THRESHOLD_TWO_OMIT
                if one:
                    if not best1 > THRESHOLD_ONE_OMIT:
                        break
                    nr = 0.0
                    for k in range(n):
                        if d1[k] == best1:
                            nr += r1[k]
                            use[k] = False
                else:
                    if not best2 > THRESHOLD_TWO_OMIT:
                        break
                    nr = 0.0
                    for k in range(n - 1):
                        if d2[k] == best2:
                            nr += r2[k]
                            use[k] = False
                            use[k + 1] = False
                rate = nr
                nuse = 0
                for k in range(n):
                    nuse += use[k]
                if nuse <= 3:
                    break
            # the final fit: covariance from the search's rate plus dark current
            cr = rate if rate > 0 else (rate if np.isnan(rate) else 0.0)
            c = (cr + np.float64(dark[iy, ix])) / g
            _fill_cov(c, s2, ap0, ar0, bp0, br0, a, b)
            A, B, C = _gls(d, use, a, b, u, w, x, y, diag, off)
            for k in range(n):
                cap[k] = c * ap0[k]
                car[k] = s2 * ar0[k]
            for k in range(n - 1):
                cbp[k] = c * bp0[k]
                cbr[k] = s2 * br0[k]
            vp, vr = _variances(x, use, C, cap, cbp, car, cbr)
            err = np.sqrt(1.0 / C)
            if C == 0.0:
                # nothing usable: every product is undefined
                vp = np.nan
                vr = np.nan
                err = np.nan
            out[_F_SLOPE, iy, ix] = B / C
            out[_F_ERR, iy, ix] = err
            out[_F_VP, iy, ix] = vp
            out[_F_VR, iy, ix] = vr
            out[_F_ICPT, iy, ix] = np.nan
            # dq: jumps found end their difference
            for k in range(nres):
                marks[k] = _JUMP8 if k > 0 and use0[k - 1] and not use[k - 1] else 0
            _write_dq(gdq, pdq, marks, iy, ix, zf_shift, gdq_out, out)


@numba.njit(cache=True, error_model="numpy")
def _fill_cov_rows(c, s2, ap, ar, bp, br, a, b):
    """:func:`_fill_cov` for a row of pixels: ``c``, ``s2`` (nx), ``a`` (n, nx), ``b`` (n−1, nx)."""
    n, nx = a.shape
    for k in range(n):
        for ix in range(nx):
            a[k, ix] = c[ix] * ap[k] + s2[ix] * ar[k]
    for k in range(n - 1):
        for ix in range(nx):
            b[k, ix] = c[ix] * bp[k] + s2[ix] * br[k]


@numba.njit(cache=True, error_model="numpy")
def _gls_rows(d, use, a, b, u, w, x, y, diag, off, A, B, C, inverse):
    """:func:`_gls` for a row of pixels at once: every array is (n or n−1, nx), the sums
    ``A``, ``B``, ``C`` are (nx).  The same operations per pixel, in the same order, with
    the branches as selections, so that the pixel loop vectorises (a pixel's forward and
    backward sweeps are chains of dependent divisions)."""
    n, nx = d.shape
    for ix in range(nx):
        us = use[0, ix]
        u[0, ix] = a[0, ix] if us else 1.0
        x[0, ix] = 1.0 if us else 0.0
        y[0, ix] = d[0, ix] if us else 0.0
    for k in range(1, n):
        for ix in range(nx):
            us = use[k, ix]
            f = b[k - 1, ix] / u[k - 1, ix]
            uk = a[k, ix]
            xk = 1.0
            yk = d[k, ix]
            if use[k - 1, ix]:
                uk -= f * b[k - 1, ix]
                xk -= f * x[k - 1, ix]
                yk -= f * y[k - 1, ix]
            u[k, ix] = uk if us else 1.0
            x[k, ix] = xk if us else 0.0
            y[k, ix] = yk if us else 0.0
    for ix in range(nx):
        us = use[n - 1, ix]
        w[n - 1, ix] = a[n - 1, ix] if us else 1.0
        if us:
            x[n - 1, ix] = x[n - 1, ix] / u[n - 1, ix]
            y[n - 1, ix] = y[n - 1, ix] / u[n - 1, ix]
    for k in range(n - 2, -1, -1):
        for ix in range(nx):
            us = use[k, ix]
            nxt = use[k + 1, ix]
            wk = a[k, ix]
            wl = wk - b[k, ix] * b[k, ix] / w[k + 1, ix]
            xl = (x[k, ix] - b[k, ix] * x[k + 1, ix]) / u[k, ix]
            yl = (y[k, ix] - b[k, ix] * y[k + 1, ix]) / u[k, ix]
            xs = x[k, ix] / u[k, ix]
            ys = y[k, ix] / u[k, ix]
            w[k, ix] = (wl if nxt else wk) if us else 1.0
            x[k, ix] = (xl if nxt else xs) if us else x[k, ix]
            y[k, ix] = (yl if nxt else ys) if us else y[k, ix]
    for ix in range(nx):
        A[ix] = 0.0
        B[ix] = 0.0
        C[ix] = 0.0
    for k in range(n):
        for ix in range(nx):
            # adding +0.0 leaves a sum that starts at +0.0 unchanged, bit for bit
            us = use[k, ix]
            A[ix] += d[k, ix] * y[k, ix] if us else 0.0
            B[ix] += d[k, ix] * x[k, ix] if us else 0.0
            C[ix] += x[k, ix] if us else 0.0
    if not inverse:
        return
    for k in range(n):
        for ix in range(nx):
            diag[k, ix] = 1.0 / (u[k, ix] + w[k, ix] - a[k, ix]) if use[k, ix] else 0.0
    for k in range(n - 1):
        for ix in range(nx):
            both = use[k, ix] and use[k + 1, ix]
            off[k, ix] = -b[k, ix] * diag[k + 1, ix] / u[k, ix] if both else 0.0


@numba.njit(cache=True, error_model="numpy")
def _omit_rows(d, use, nuse, x, y, diag, off, A, B, C, two_ok, d1, best1, best2):
    """The best Δχ² of :func:`_omit_search` over single omissions (``best1``) and adjacent
    pairs (``best2``, 0 where two-difference omissions are not allowed) for a row of pixels,
    with :func:`_fit_block`'s NaN rules (a NaN anywhere makes the best NaN); ``d1`` (n, nx)
    receives the single omissions' Δχ²."""
    n, nx = d.shape
    for ix in range(nx):
        best1[ix] = -np.inf
        best2[ix] = -np.inf if n > 1 else 0.0
    for k in range(n):
        for ix in range(nx):
            Bi = B[ix]
            Ci = C[ix]
            base = Bi * Bi / Ci
            q, _ = _without_one(Bi, Ci, diag[k, ix], x[k, ix], y[k, ix])
            v = (np.nan if nuse[ix] == 1 else q - base) if use[k, ix] else 0.0
            d1[k, ix] = v
            bb = best1[ix]
            best1[ix] = np.nan if (np.isnan(v) or np.isnan(bb)) else (v if v > bb else bb)
    for k in range(n - 1):
        for ix in range(nx):
            Bi = B[ix]
            Ci = C[ix]
            base = Bi * Bi / Ci
            q, _ = _without_two(Bi, Ci, x[k, ix], x[k + 1, ix], diag[k, ix], diag[k + 1, ix],
                                off[k, ix], y[k, ix], y[k + 1, ix])
            pair = q - base
            # an unusable neighbour leaves the other one's single omission
            if not use[k, ix]:
                v = d1[k + 1, ix]
            elif not use[k + 1, ix]:
                v = d1[k, ix]
            elif nuse[ix] == 2:
                v = A[ix] - base
            else:
                v = pair
            v = v * (1.0 if two_ok[k] else 0.0)
            bb = best2[ix]
            best2[ix] = np.nan if (np.isnan(v) or np.isnan(bb)) else (v if v > bb else bb)


@numba.njit(cache=True, error_model="numpy")
def _fit_rows(res, gdq, pdq, gain, rn, dark, dt, ap0, ar0, bp0, br0, two_ok, zf_shift, out, gdq_out):
    """:func:`_fit_block` on every pixel of one integration, the same numbers, faster.

    Row by row, every pixel gets the search's first fit and omission test and, where that
    drops nothing (most pixels), the final fit, as vectorised loops over the row
    (:func:`_gls_rows`, :func:`_omit_rows`); a pixel whose search drops a difference is
    fitted again from the start by :func:`_fit_block`.  Returns those pixels (bool (ny, nx)).
    """
    nres, ny, nx = res.shape
    n = nres - 1
    m = max(n - 1, 1)
    d = np.empty((n, nx))
    use = np.zeros((n, nx), np.bool_)
    a = np.empty((n, nx))
    b = np.empty((m, nx))
    u = np.empty((n, nx))
    w = np.empty((n, nx))
    x = np.empty((n, nx))
    y = np.empty((n, nx))
    diag = np.empty((n, nx))
    off = np.empty((m, nx))
    A = np.empty(nx)
    B = np.empty(nx)
    C = np.empty(nx)
    g = np.empty(nx)
    s2 = np.empty(nx)
    c = np.empty(nx)
    nuse = np.zeros(nx, np.int64)
    best1 = np.empty(nx)
    best2 = np.empty(nx)
    d1 = np.empty((n, nx))
    nomarks = np.zeros(nres, np.uint8)
    dsort = np.empty(n)
    redo = np.zeros((ny, nx), np.bool_)
    for iy in range(ny):
        for ix in range(nx):
            g[ix] = np.float64(gain[iy, ix])
            s2[ix] = (np.float64(rn[iy, ix]) / np.sqrt(2.0)) ** 2
            nuse[ix] = 0
        for k in range(n):
            for ix in range(nx):
                # the difference in float32, as the resultants are stored
                d[k, ix] = np.float64(np.float32(res[k + 1, iy, ix] - res[k, iy, ix])) / dt[k]
                ok = gdq[k, iy, ix] == 0 and gdq[k + 1, iy, ix] == 0
                use[k, ix] = ok
                nuse[ix] += ok
        for ix in range(nx):
            # rate guess for the covariance of the search: median of every difference
            anynan = False
            for k in range(n):
                v = d[k, ix]
                if np.isnan(v):
                    anynan = True
                j = k
                while j > 0 and dsort[j - 1] > v:
                    dsort[j] = dsort[j - 1]
                    j -= 1
                dsort[j] = v
            if anynan:
                guess = np.nan
            else:
                h = n // 2
                guess = dsort[h] if n % 2 else 0.5 * (dsort[h - 1] + dsort[h])
                if not guess > 0:
                    guess = 0.0
            c[ix] = guess / g[ix]
        _fill_cov_rows(c, s2, ap0, ar0, bp0, br0, a, b)
        _gls_rows(d, use, a, b, u, w, x, y, diag, off, A, B, C, True)
        _omit_rows(d, use, nuse, x, y, diag, off, A, B, C, two_ok, d1, best1, best2)
        for ix in range(nx):
            b1 = best1[ix]
            b2 = best2[ix]
            drop = False
            if not (np.isnan(b1) or np.isnan(b2)):
                if b1 - THRESHOLD_ONE_OMIT > b2 - THRESHOLD_TWO_OMIT:
                    drop = b1 > THRESHOLD_ONE_OMIT
                else:
                    drop = b2 > THRESHOLD_TWO_OMIT
            redo[iy, ix] = drop
            # the final fit: covariance from the search's rate plus dark current
            rate = B[ix] / C[ix]
            cr = rate if rate > 0 else (rate if np.isnan(rate) else 0.0)
            c[ix] = (cr + np.float64(dark[iy, ix])) / g[ix]
        _fill_cov_rows(c, s2, ap0, ar0, bp0, br0, a, b)
        _gls_rows(d, use, a, b, u, w, x, y, diag, off, A, B, C, False)
        for ix in range(nx):
            Ci = C[ix]
            vp = 0.0
            vr = 0.0
            for k in range(n):
                v = x[k, ix] / Ci
                vp += v * v * (c[ix] * ap0[k]) if use[k, ix] else 0.0
                vr += v * v * (s2[ix] * ar0[k]) if use[k, ix] else 0.0
            for k in range(n - 1):
                vv = 2.0 * (x[k, ix] / Ci) * (x[k + 1, ix] / Ci)
                both = use[k, ix] and use[k + 1, ix]
                vp += vv * (c[ix] * bp0[k]) if both else 0.0
                vr += vv * (s2[ix] * br0[k]) if both else 0.0
            err = np.sqrt(1.0 / Ci)
            if Ci == 0.0:
                # nothing usable: every product is undefined
                vp = np.nan
                vr = np.nan
                err = np.nan
            out[_F_SLOPE, iy, ix] = B[ix] / Ci
            out[_F_ERR, iy, ix] = err
            out[_F_VP, iy, ix] = vp
            out[_F_VR, iy, ix] = vr
            out[_F_ICPT, iy, ix] = np.nan
            # dq (no jump found here)
            _write_dq(gdq, pdq, nomarks, iy, ix, zf_shift, gdq_out, out)
    _fit_block(res, gdq, pdq, gain, rn, dark, dt, ap0, ar0, bp0, br0, two_ok, zf_shift, out, gdq_out,
               redo)
    return redo


def ramp_fit(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe=None, *,
             nframes: int, tframe: float, groupgap: int = 0, firstgroup: int | None = None,
             lastgroup: int | None = None, **_ignored) -> np.ndarray:
    """Likelihood fit of one block of ramps.

    Parameters
    ----------
    data : float32 (nint, ngroups, ny, nx), DN
    groupdq : uint8 (nint, ngroups, ny, nx); any nonzero flag makes both differences touching
        the group unusable.
    pixeldq : uint32 (ny, nx), copied into each integration's DQ.
    gain : float32 (ny, nx), e⁻/DN (0 or NaN gives NaN rates).
    readnoise : float32 (ny, nx), DN, CDS noise (one read has ``readnoise/√2``).
    average_dark_current : float32 (ny, nx), DN/s, added to the rate of the final covariance.
    zeroframe : float32 (nint, ny, nx) or None; used when ``nframes ≥ 2``.
    nframes, groupgap : frames averaged per group and dropped between groups.
    tframe : frame time, s.
    firstgroup, lastgroup : 0-based groups to fit (None: the ramp's ends); the groups outside
        are DO_NOT_USE, as the official step flags them.

    Returns
    -------
    float64 (NFIELDS, nint, ny, nx) in the layout of :data:`daskramp.kernels.ramp_fit.FIELDS`
    (``slope`` DN/s, ``err`` DN/s, ``var_poisson``/``var_rnoise`` (DN/s)², ``dq``).
    """
    return _fit(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe,
                nframes=nframes, tframe=tframe, groupgap=groupgap, firstgroup=firstgroup,
                lastgroup=lastgroup)[0]


def _fit(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe, *,
         nframes, tframe, groupgap, firstgroup=None, lastgroup=None):
    nint, ng, ny, nx = data.shape
    if ng < LIKELY_MIN_NGROUPS:
        raise ValueError(f"ramp_fit algorithm='LIKELY' needs ngroups >= {LIKELY_MIN_NGROUPS}, got {ng}")
    first, last = resolve_group_range(firstgroup, lastgroup, ng)
    outside = np.zeros(ng, np.uint8)
    outside[:first] = _DNU
    outside[last + 1:] = _DNU
    use_zf = zeroframe is not None and nframes >= 2
    mean_t, tau, nreads = read_pattern(ng, nframes=nframes, groupgap=groupgap, tframe=tframe,
                                       zeroframe=use_zf)
    dt, ap, ar, bp, br = covariance_terms(mean_t, tau, nreads)
    two_ok = nreads[1:-1] > 1
    out = np.zeros((NFIELDS, nint, ny, nx))
    gdq_out = np.empty((nint, ng, ny, nx), np.uint8)
    gain = np.asarray(gain, np.float32)
    rn = np.asarray(readnoise, np.float32)
    dark = np.asarray(average_dark_current, np.float32)
    pdq = np.asarray(pixeldq, np.uint32)
    for i in range(nint):
        res = np.asarray(data[i], np.float32)
        gdq = np.asarray(groupdq[i], np.uint8) | outside[:, None, None]
        if use_zf:
            zf = np.asarray(zeroframe[i], np.float32)
            g0 = (res[0] * np.float32(nframes) - zf) / np.float32(nframes - 1)
            res = np.concatenate([zf[None], g0[None], res[1:]])
            gdq = np.concatenate([gdq[:1], gdq])
        o = np.zeros((NFIELDS, ny, nx))
        _fit_rows(np.ascontiguousarray(res), np.ascontiguousarray(gdq), pdq, gain, rn, dark,
                   dt, ap, ar, bp, br, two_ok, 1 if use_zf else 0, o, gdq_out[i])
        out[:, i] = o
    return out, gdq_out


def fit_products(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe=None, *,
                 nframes: int, tframe: float, groupgap: int = 0, firstgroup: int | None = None,
                 lastgroup: int | None = None, save_intercepts: bool = False,
                 **_ignored) -> dict[str, np.ndarray]:
    """:func:`daskramp.kernels.ramp_fit.products_of_fields` of :func:`ramp_fit`: the rateints
    planes of one block (``intercept`` NaN: the likelihood fit has none; its ``rate_terms``
    are those of OLS_C's layout and unused)."""
    fields = ramp_fit(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe,
                      nframes=nframes, tframe=tframe, groupgap=groupgap, firstgroup=firstgroup,
                      lastgroup=lastgroup)
    return products_of_fields(fields, save_intercepts=save_intercepts)


@numba.njit(cache=True, error_model="numpy")
def _combine(slope_t, vp_t, vr_t, dq_t, out):
    """:func:`combine_integrations` on (nint, ny, nx) planes; each row's values are first
    gathered pixel by pixel (nx, nint) so that a pixel's integrations lie together."""
    nint, ny, nx = slope_t.shape
    sl = np.empty((nx, nint), np.float32)
    vpr = np.empty((nx, nint), np.float32)
    vrr = np.empty((nx, nint), np.float32)
    dqr = np.empty((nx, nint), np.uint32)
    buf = np.empty(nint, np.float32)
    r = np.empty(nint, np.float32)
    wgt = np.empty(nint, np.float32)
    one = np.float32(1.0)
    for iy in range(ny):
        for i in range(nint):
            for ix in range(nx):
                sl[ix, i] = slope_t[i, iy, ix]
                vpr[ix, i] = vp_t[i, iy, ix]
                vrr[ix, i] = vr_t[i, iy, ix]
                dqr[ix, i] = dq_t[i, iy, ix]
        for ix in range(nx):
            slope = sl[ix]
            vp = vpr[ix]
            vr = vrr[ix]
            dq = dqr[ix]
            # start: median of the finite slopes (NaN if none)
            m = 0
            for i in range(nint):
                if not np.isnan(slope[i]):
                    buf[m] = slope[i]
                    m += 1
            if m == 0:
                s = np.float32(np.nan)
            else:
                h = m // 2
                hi = select(buf, m, h)
                if m % 2:
                    s = hi
                else:
                    s = np.float32((lower_of_selected(buf, h) + hi) / np.float32(2.0))
            for _ in range(2):
                tot = np.float32(0.0)
                for i in range(nint):
                    ri = s / slope[i]
                    if not np.isfinite(ri) or ri < 0:
                        ri = np.float32(0.0)
                    r[i] = ri
                    wi = one / (vp[i] * ri + vr[i])
                    wgt[i] = wi
                    if not np.isnan(wi):
                        tot += wi
                acc = np.float32(0.0)
                alln = True
                for i in range(nint):
                    wgt[i] = wgt[i] / tot
                    t = slope[i] * wgt[i]
                    if not np.isnan(t):
                        acc += t
                        alln = False
                s = np.float32(np.nan) if alln else acc
            sp = np.float32(0.0)
            sr = np.float32(0.0)
            np_ = True
            nr_ = True
            for i in range(nint):
                t = vp[i] * r[i] * wgt[i] * wgt[i]
                if not np.isnan(t):
                    sp += t
                    np_ = False
                t = vr[i] * wgt[i] * wgt[i]
                if not np.isnan(t):
                    sr += t
                    nr_ = False
            if np_:
                sp = np.float32(np.nan)
            if nr_:
                sr = np.float32(np.nan)
            q = np.uint32(0)
            alldnu = True
            for i in range(nint):
                q |= dq[i]
                if (dq[i] & _DNU) == 0:
                    alldnu = False
            q &= ~_DNU
            if alldnu:
                q |= _DNU
            out[0, iy, ix] = s
            out[1, iy, ix] = np.sqrt(sp + sr)
            out[2, iy, ix] = sp
            out[3, iy, ix] = sr
            out[4, iy, ix] = q


def combine_integrations(slope, err, var_poisson, var_rnoise, dq) -> np.ndarray:
    """Exposure rate of per-integration LIKELY fits (all integrations of a pixel at once).

    Start from the median of the finite slopes; twice, scale each integration's Poisson
    variance by (current rate / its slope) (0 if not finite or negative), weight by the
    inverse total variance (normalised) and take the weighted mean.  Variances are the
    weighted sums ``Σw²V``; DQ is the OR of the integrations' DQ without DO_NOT_USE, which
    is set only when every integration has it.  One integration is returned as it is.
    Arithmetic in float32, as the rateints planes are stored.

    Parameters
    ----------
    slope, err, var_poisson, var_rnoise : float32 (nint, ny, nx); dq : uint32 (nint, ny, nx)

    Returns
    -------
    float64 (5, ny, nx): slope, err, var_poisson, var_rnoise, dq.
    """
    slope = np.asarray(slope, np.float32)
    nint, ny, nx = slope.shape
    out = np.empty((5, ny, nx))
    if nint == 1:
        for k, v in enumerate((slope, err, var_poisson, var_rnoise, dq)):
            out[k] = np.asarray(v)[0]
        return out
    o32 = np.empty((5, ny, nx), np.float64)
    _combine(np.ascontiguousarray(slope), np.ascontiguousarray(var_poisson, np.float32),
             np.ascontiguousarray(var_rnoise, np.float32), np.ascontiguousarray(dq, np.uint32), o32)
    return o32
