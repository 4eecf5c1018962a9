"""ramp_fit kernel: optimally weighted least-squares slopes (the official ``OLS_C`` algorithm).

Spec 08 §1–7.  One call fits every pixel of a block holding **all integrations of one
segment** (the per-pixel median rate R̃ that sets the Poisson variance is averaged over the
integrations of the block) and may cover any spatial tile.

The kernel returns per-integration results stacked along a leading ``field`` axis in one
float64 array of shape ``(NFIELDS, nint, ny, nx)`` (names in :data:`FIELDS`):

* the rateints planes (``slope``, ``err``, ``var_poisson``, ``var_rnoise``, ``dq``) and the
  optional ``intercept``;
* per-integration inverse-variance sums and a ``flags`` plane: the :data:`RATE_TERMS` taken
  from them and summed over integrations are all that the exposure ``rate`` needs.
  :func:`rate_partials` is the chunk step, adding partials the combine step and
  :func:`combine_rate` the finalize step, so the rate of many segments (or integration
  chunks) is combined exactly.

Arithmetic is float64 wherever the official implementation works in double; inputs are read
as float32 (data, gain, read noise, dark current) and TGROUP/TFRAME are rounded to float32
first, as the official code receives them; the float32 products agree bit for bit with
jwst 3.0 / stcal OLS_C on the parity cases.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import dq as _dq

#: names of the planes stacked along the leading axis of the kernel output
FIELDS: tuple[str, ...] = (
    "slope",  # rateints slope (DN/s); NaN for unusable integrations
    "err",  # rateints ERR = sqrt(1 / Σ_s 1/(var_p,s + var_r,s)) (DN/s)
    "var_poisson",  # rateints Poisson variance ((DN/s)^2)
    "var_rnoise",  # rateints read-noise variance ((DN/s)^2), CHARGELOSS-recomputed
    "dq",  # rateints DQ (uint32 values, exact in float64)
    "intercept",  # DN at the time of group 0 from the first segment's fit (NaN if none)
    "invvar_r",  # Σ_s 1/var_r,s
    "slope_num",  # Σ_s slope_s/var_r,s
    "invvar_p",  # Σ_s 1/var_p,s over positive var_p,s
    "invvar_r_cl",  # this integration's term of the CHARGELOSS-recomputed 1/var_rnoise
    "flags",  # FLAG_* bits below (exact in float64)
)
NFIELDS = len(FIELDS)
F = {name: i for i, name in enumerate(FIELDS)}

#: ``flags`` bits: SATURATED at the NaN decision (group 0 saturated, or from pixeldq)
FLAG_SAT = 1
#: ``flags`` bits: some group of the integration is SATURATED
FLAG_ANYSAT = 2
#: ``flags`` bits: some group of the integration has CHARGELOSS
FLAG_CHARGELOSS = 4

#: per-integration terms whose sums over integrations are the input of :func:`combine_rate`:
#: ``(name, field, mask)`` — the field's value when ``mask`` is None, else the indicator
#: ``(int(field) & mask) != 0`` (the reduction declared once, for numpy and for xarray)
RATE_TERMS: tuple[tuple[str, str, int | None], ...] = (
    ("invvar_r", "invvar_r", None),
    ("slope_num", "slope_num", None),
    ("invvar_p", "invvar_p", None),
    ("invvar_r_cl", "invvar_r_cl", None),
    ("n_dnu", "dq", _dq.DO_NOT_USE),  # integrations flagged DO_NOT_USE
    ("n_sat", "flags", FLAG_SAT),  # integrations SATURATED at the NaN decision
    ("n_anysat", "flags", FLAG_ANYSAT),  # integrations with a SATURATED group
    ("n_jump", "dq", _dq.JUMP_DET),  # integrations with JUMP_DET
    ("n_pers", "dq", _dq.PERSISTENCE),  # integrations with PERSISTENCE
    ("n_chargeloss", "flags", FLAG_CHARGELOSS),  # integrations with CHARGELOSS
)
RATE_PARTIALS: tuple[str, ...] = tuple(t[0] for t in RATE_TERMS)
#: names of the planes returned by :func:`combine_rate`
RATE_FIELDS: tuple[str, ...] = ("slope", "err", "var_poisson", "var_rnoise", "dq")

#: :data:`RATE_TERMS` as arrays for the compiled fill: field index, and bit mask (0: the value)
_TERM_FIELD = np.array([F[field] for _, field, _ in RATE_TERMS], np.int64)
_TERM_MASK = np.array([0 if mask is None else int(mask) for _, _, mask in RATE_TERMS], np.int64)
_F_SLOPE, _F_ERR, _F_VP, _F_VR, _F_DQ, _F_ICPT = (
    F["slope"], F["err"], F["var_poisson"], F["var_rnoise"], F["dq"], F["intercept"])

#: variances at or above this are reported as 0 (official LARGE_VARIANCE_THRESHOLD)
LARGE_VARIANCE_THRESHOLD = 1.0e6

_DNU = np.uint32(_dq.DO_NOT_USE)
_SAT = np.uint32(_dq.SATURATED)
_JUMP = np.uint32(_dq.JUMP_DET)
_PERS = np.uint32(_dq.PERSISTENCE)
_CL = np.uint32(_dq.CHARGELOSS)
_NGV = np.uint32(_dq.NO_GAIN_VALUE)


def resolve_group_range(firstgroup: int | None, lastgroup: int | None, ngroups: int) -> tuple[int, int]:
    """0-based inclusive ``[first, last]`` range of groups to fit (spec 08, parameters).

    ``None`` means the ramp's start/end; out-of-range values are clipped; ``first >= last``
    falls back to the whole ramp (as the official step does, with a warning there).
    """
    first = 0 if firstgroup is None else int(firstgroup)
    last = ngroups - 1 if lastgroup is None else int(lastgroup)
    first = max(first, 0)
    last = min(last, ngroups - 1)
    if first >= last:
        first, last = 0, ngroups - 1
    return first, last


def electron_read_noise(readnoise, gain, *, nframes: int) -> np.ndarray:
    """Per-group read noise in electrons, ``READNOISE · gain / sqrt(2·NFRAMES)`` (float32, (y, x)).

    READNOISE holds the CDS noise in DN: one frame has CDS/√2 and averaging NFRAMES frames
    into a group divides by √NFRAMES.  Computed in float64 and stored as float32, which is
    what the official step hands to its fitter.
    """
    rn = np.asarray(readnoise, dtype=np.float32).astype(np.float64)
    g = np.asarray(gain, dtype=np.float32).astype(np.float64)
    return (rn * (g / np.sqrt(2.0 * nframes))).astype(np.float32)


def _batcher_pairs(n: int) -> np.ndarray:
    """Comparators ``(i, j)`` (i < j) of Batcher's odd–even merge sort of ``n`` values."""
    p2 = 1
    while p2 < n:
        p2 *= 2
    pairs = []
    p = 1
    while p < p2:
        k = p
        while k >= 1:
            for j in range(k % p, p2 - k, 2 * k):
                for i in range(min(k, p2 - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, np.int64).reshape(-1, 2)


#: sorting networks for the few differences of one ramp: ``_NETS[n, :_NNET[n]]``
_MAXNET = 32
_NETS = np.zeros((_MAXNET + 1, len(_batcher_pairs(_MAXNET)), 2), np.int64)
_NNET = np.zeros(_MAXNET + 1, np.int64)
for _n in range(2, _MAXNET + 1):
    _pairs = _batcher_pairs(_n)
    _NETS[_n, : len(_pairs)] = _pairs
    _NNET[_n] = len(_pairs)


@numba.njit(cache=True, inline="always")
def _sort8(buf):
    """Sort ``buf[:8]`` in registers (Batcher's 19-comparator network): the 8 differences
    of a 9-group ramp, the common TSO case."""
    a0, a1, a2, a3 = buf[0], buf[1], buf[2], buf[3]
    a4, a5, a6, a7 = buf[4], buf[5], buf[6], buf[7]
    a0, a1 = min(a0, a1), max(a0, a1)
    a2, a3 = min(a2, a3), max(a2, a3)
    a4, a5 = min(a4, a5), max(a4, a5)
    a6, a7 = min(a6, a7), max(a6, a7)
    a0, a2 = min(a0, a2), max(a0, a2)
    a1, a3 = min(a1, a3), max(a1, a3)
    a4, a6 = min(a4, a6), max(a4, a6)
    a5, a7 = min(a5, a7), max(a5, a7)
    a1, a2 = min(a1, a2), max(a1, a2)
    a5, a6 = min(a5, a6), max(a5, a6)
    a0, a4 = min(a0, a4), max(a0, a4)
    a1, a5 = min(a1, a5), max(a1, a5)
    a2, a6 = min(a2, a6), max(a2, a6)
    a3, a7 = min(a3, a7), max(a3, a7)
    a2, a4 = min(a2, a4), max(a2, a4)
    a3, a5 = min(a3, a5), max(a3, a5)
    a1, a2 = min(a1, a2), max(a1, a2)
    a3, a4 = min(a3, a4), max(a3, a4)
    a5, a6 = min(a5, a6), max(a5, a6)
    buf[0], buf[1], buf[2], buf[3] = a0, a1, a2, a3
    buf[4], buf[5], buf[6], buf[7] = a4, a5, a6, a7


@numba.njit(cache=True, inline="always", error_model="numpy")
def _median_sorted_finite(buf, n):
    """Median of the first ``n`` entries of ``buf`` ignoring NaN (NaN if none); reorders ``buf``."""
    m = 0
    for k in range(n):
        if not np.isnan(buf[k]):
            buf[m] = buf[k]
            m += 1
    if m == 0:
        return np.nan
    h = m >> 1
    if m <= _MAXNET:
        # a sorting network (branch-free compare-exchanges); the median of the sorted values
        # is the one ranking gives
        if m == 8:
            _sort8(buf)
        else:
            for c in range(_NNET[m]):
                i = _NETS[m, c, 0]
                j = _NETS[m, c, 1]
                a = buf[i]
                b = buf[j]
                buf[i] = min(a, b)
                buf[j] = max(a, b)
        if m & 1:
            return buf[h]
        return (buf[h] + buf[h - 1]) / 2.0
    # rank by counting (ties broken by position): branch-free
    hi = 0.0
    lo = 0.0
    for a in range(m):
        va = buf[a]
        r = 0
        for b in range(m):
            vb = buf[b]
            r += (vb < va) | ((vb == va) & (b < a))
        if r == h:
            hi = va
        elif r == h - 1:
            lo = va
    if m & 1:
        return hi
    return (hi + lo) / 2.0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _segments(q, ng, starts, lens):
    """Fit segments of one integration from its group DQ ``q``; returns their number.

    Segments are runs of clean groups (PERSISTENCE ignored); a group flagged JUMP_DET alone
    just before a run carries the post-jump level and becomes the run's first point.
    Length-1 segments are dropped when a longer one exists; if all have length 1 only the
    first is kept.
    """
    npers = ~_PERS
    nseg = 0
    maxlen = 0
    in_seg = False
    start = 0
    for idx in range(ng + 1):
        if idx < ng:
            gdq = np.uint32(q[idx]) & npers
        else:
            gdq = np.uint32(1)  # sentinel: closes a run reaching the last group
        if gdq == 0:
            if not in_seg:
                start = idx
                if idx > 0 and (np.uint32(q[idx - 1]) & npers) == _JUMP:
                    start = idx - 1
                in_seg = True
        elif in_seg:
            length = idx - start
            in_seg = False
            if length == 1 and maxlen > 1:
                continue
            starts[nseg] = start
            lens[nseg] = length
            nseg += 1
            if length > maxlen:
                maxlen = length
    if nseg < 2:
        return nseg
    if maxlen < 2:
        return 1
    k = 0
    for s in range(nseg):
        if lens[s] > 1:
            starts[k] = starts[s]
            lens[k] = lens[s]
            k += 1
    return k


@numba.njit(cache=True, inline="always", error_model="numpy")
def _rnoise_var(rn, gain, tgroup, n):
    """Read-noise variance of an n ≥ 3 segment, 12·rn²/((n³−n)·TGROUP²·gain²) ((DN/s)²)."""
    if gain <= 0.0 or np.isnan(gain):
        return 0.0
    r = rn / tgroup
    return (12.0 * r * r) / ((n * n * n - n) * gain * gain)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _rnoise_var_short(rn, gain, t):
    """Read-noise variance of a 1- or 2-group segment with time base ``t`` ((DN/s)²)."""
    r = rn / t
    return (12.0 * r * r) / (6.0 * gain * gain)


@numba.njit(cache=True, inline="always")
def _one_group_time(suppress1g, only_group0, zero_frame, t1, tframe, tgroup):
    """Time base of a 1-group segment: T1 for a lone group 0 or TFRAME for ZEROFRAME (only
    when one-group ramps are not suppressed), else TGROUP (spec 08 §4)."""
    if not suppress1g and only_group0:
        return t1
    if not suppress1g and zero_frame:
        return tframe
    return tgroup


#: exponents of the optimal weights, by signal-to-noise class (spec 08 §4)
_POWERS = np.array([0.0, 0.4, 1.0, 3.0, 6.0, 10.0], dtype=np.float32)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _snr_class(snr):
    """Index into ``_POWERS`` for a segment's signal-to-noise ratio (NaN → highest)."""
    if snr < 5.0:
        return 0
    if snr < 10.0:
        return 1
    if snr < 20.0:
        return 2
    if snr < 50.0:
        return 3
    if snr < 100.0:
        return 4
    return 5


@numba.njit(cache=True, error_model="numpy")
def _weight_table(ng):
    """Unscaled optimal weights ``|(j − mid)/mid|^P`` for every segment length and power.

    Indexed ``[power class, length, j]``.  The power is taken in single precision (as the
    official weights are), once per block rather than once per sample.
    """
    table = np.zeros((_POWERS.size, ng + 1, ng + 1), np.float64)
    for c in range(_POWERS.size):
        p = _POWERS[c]
        for n in range(3, ng + 1):
            mid = (n - 1) / 2.0
            invmid = 1.0 / mid
            for j in range(n):
                wabs = np.float32(abs((j - mid) * invmid))
                table[c, n, j] = np.float64(wabs**p)
    return table


@numba.njit(cache=True, inline="always")
def _all_zero(qx):
    """Whether every group DQ value of one pixel ``(integration, group)`` is 0."""
    acc = np.uint8(0)
    for i in range(qx.shape[0]):
        for g in range(qx.shape[1]):
            acc |= qx[i, g]
    return acc == 0


@numba.njit(cache=True, inline="always", error_model="numpy")
def _median_rate(di, qi, tgroup, buf):
    """Median of one integration's group-to-group rate differences (DN/s), skipping groups
    that are DO_NOT_USE and differences ending on a JUMP_DET group; group 0 alone (as a
    rate) when no difference is left; NaN when nothing is (spec 08 §3)."""
    ng = di.size
    prev = np.nan
    v0 = np.nan
    nfin = 0
    for g in range(ng):
        cur = np.nan if (np.uint32(qi[g]) & _DNU) else di[g] / tgroup
        if g == 0:
            v0 = cur
        else:
            if np.uint32(qi[g]) & _JUMP:
                buf[g - 1] = np.nan
            else:
                buf[g - 1] = cur - prev
            if not np.isnan(buf[g - 1]):
                nfin += 1
        prev = cur
    if nfin == 0 and not np.isnan(v0):
        buf[0] = v0
    return _median_sorted_finite(buf, ng - 1)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _poisson_var(mrate_pix, dc, den_p):
    """Poisson variance of one segment, (R̃ + dark)/den_p, R̃ left out when not positive."""
    if mrate_pix > 0.0:
        return (mrate_pix + dc) / den_p
    return dc / den_p


@numba.njit(cache=True, inline="always", error_model="numpy")
def _integration_variances(s_p, s_r):
    """An integration's Poisson and read-noise variances from its segments' inverse sums,
    each reported as 0 at or above :data:`LARGE_VARIANCE_THRESHOLD`."""
    vp_i = 1.0 / s_p if s_p > 0.0 else 0.0
    if vp_i >= LARGE_VARIANCE_THRESHOLD:
        vp_i = 0.0
    vr_i = 1.0 / s_r
    if vr_i >= LARGE_VARIANCE_THRESHOLD:
        vr_i = 0.0
    return vp_i, vr_i


@numba.njit(cache=True, error_model="numpy")
def _clean_constants(rn, gain, dc, mrate_pix, tgroup, ng, wtab, wpix, sums, cst):
    """What every unflagged integration of a pixel shares (one segment of all ``ng`` ≥ 3
    groups), computed as the general path computes it: ``wpix[c, j]`` the weights of class c,
    ``sums[c]`` their Σw, Σwx, Σwx², 1/det; ``cst`` = (vr, s_r, s_p, s_e, var_poisson,
    var_rnoise, err, 1/var_rnoise) of such an integration."""
    n = ng
    den_p = tgroup * gain * (n - 1.0)
    vr = _rnoise_var(rn, gain, tgroup, np.float64(n))
    vp = _poisson_var(mrate_pix, dc, den_p)
    s_r = 0.0 + 1.0 / vr
    s_p = 0.0
    if vp > 0.0:
        s_p += 1.0 / vp
    s_e = 0.0 + 1.0 / (vp + vr)
    vp_i, vr_i = _integration_variances(s_p, s_r)
    ve = 1.0 / s_e
    cst[0] = vr
    cst[1] = s_r
    cst[2] = s_p
    cst[3] = s_e
    cst[4] = vp_i
    cst[5] = vr_i
    cst[6] = 0.0 if ve > LARGE_VARIANCE_THRESHOLD else np.sqrt(ve)
    cst[7] = 1.0 / vr_i if vr_i > 0.0 else 0.0
    invrn2 = 1.0 / (rn * rn)
    for c in range(wtab.shape[0]):
        sw = 0.0
        sx = 0.0
        sxx = 0.0
        for j in range(n):
            w = wtab[c, n, j] * invrn2
            wpix[c, j] = w
            xv = np.float64(j)
            xw = xv * w
            sw += w
            sx += xw
            sxx += xv * xw
        sums[c, 0] = sw
        sums[c, 1] = sx
        sums[c, 2] = sxx
        sums[c, 3] = 1.0 / (sw * sxx - sx * sx)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _fit_clean_ramp(di, rn2, gain, tgroup, wpix, sums, cst, dqv, orow, x, i):
    """Fit integration ``i`` (samples ``di``, DN) of a pixel as one segment of all groups
    and write its fields into ``orow[x, :, i]`` (the general path's arithmetic, in order)."""
    n = di.size
    delta = di[n - 1] - di[0]
    den = rn2 + delta * gain
    if den <= 0.0 or gain == 0.0:
        snr = 0.0
    else:
        snr = delta * gain / np.sqrt(den)
        snr = 0.0 if snr < 0.0 else snr
    c = _snr_class(snr)
    sy = 0.0
    sxy = 0.0
    for j in range(n):
        w = wpix[c, j]
        dv = di[j]
        if np.isnan(dv):
            dv = 0.0
        xw = np.float64(j) * w
        sy += dv * w
        sxy += dv * xw
    sw = sums[c, 0]
    sx = sums[c, 1]
    sxx = sums[c, 2]
    invden = sums[c, 3]
    sl = ((sw * sxy - sx * sy) * invden) / tgroup
    s_num = 0.0 + sl / cst[0]
    orow[x, 0, i] = s_num * cst[5]
    orow[x, 1, i] = cst[6]
    orow[x, 2, i] = cst[4]
    orow[x, 3, i] = cst[5]
    orow[x, 4, i] = dqv
    orow[x, 5, i] = (sxx * sy - sx * sxy) * invden
    orow[x, 6, i] = cst[1]
    orow[x, 7, i] = s_num
    orow[x, 8, i] = cst[2]
    orow[x, 9, i] = 0.0
    orow[x, 10, i] = 0.0


@numba.njit(cache=True, error_model="numpy")
def _fit_clean_pixel(dx, qx, rn, gain, dc, pdq, tgroup, wtab, buf, d, wpix, sums, cst, orow, x):
    """:func:`_fit_block` for a pixel whose ramps carry no flag at all (same arithmetic, in
    the same order, so the results are bit-identical to the general path).

    Every integration is one segment of all ``ng`` (≥ 3) groups, so everything but the
    slope, intercept and signal-to-noise class is a constant of the pixel
    (:func:`_clean_constants`).
    """
    nint, ng = dx.shape
    # -- per-pixel median rate R̃ ---------------------------------------------------------
    acc = 0.0
    for i in range(nint):
        for g in range(ng):
            d[i, g] = np.float64(dx[i, g])
        mrate = _median_rate(d[i], qx[i], tgroup, buf)
        if np.isnan(mrate):
            mrate = 0.0
        acc += mrate
    mrate_pix = acc / nint
    _clean_constants(rn, gain, dc, mrate_pix, tgroup, ng, wtab, wpix, sums, cst)
    dqv = np.float64(pdq)
    rn2 = rn * rn
    for i in range(nint):
        _fit_clean_ramp(d[i], rn2, gain, tgroup, wpix, sums, cst, dqv, orow, x, i)
        orow[x, 9, i] = cst[7]


@numba.njit(cache=True, error_model="numpy")
def _scatter_products(orow, y, slope, err, vp, vr, dq, icpt, has_icpt, terms, tfield, tmask):
    """Row ``y`` of the products from one row of fields ``orow`` ``(x, field, integration)``.

    The rateints planes are cast as numpy casts them; ``terms`` ``(len(RATE_TERMS), y, x)``
    gets the sums over integrations of :func:`rate_partials`, accumulated in integration
    order as numpy's reduction along a leading axis does (bit-identical).
    """
    nx, _, nint = orow.shape
    nterm = tfield.size
    for x in range(nx):
        o = orow[x]
        for k in range(nterm):
            acc = 0.0
            f = tfield[k]
            m = tmask[k]
            if m == 0:
                for i in range(nint):
                    acc += o[f, i]
            else:
                for i in range(nint):
                    if np.uint32(o[f, i]) & np.uint32(m):
                        acc += 1.0
            terms[k, y, x] = acc
    for i in range(nint):
        for x in range(nx):
            slope[i, y, x] = np.float32(orow[x, _F_SLOPE, i])
            err[i, y, x] = np.float32(orow[x, _F_ERR, i])
            vp[i, y, x] = np.float32(orow[x, _F_VP, i])
            vr[i, y, x] = np.float32(orow[x, _F_VR, i])
            dq[i, y, x] = np.uint32(orow[x, _F_DQ, i])
            if has_icpt:
                icpt[i, y, x] = np.float32(orow[x, _F_ICPT, i])


@numba.njit(cache=True, error_model="numpy")
def _fit_block(
    data,
    groupdq,
    pixeldq,
    gain2d,
    rn2d,
    dark2d,
    zframe,
    has_zframe,
    tgroup,
    tframe,
    t1,
    suppress1g,
    first,
    last,
    clean_path,
    out,
    to_products,
    p_slope,
    p_err,
    p_vp,
    p_vr,
    p_dq,
    p_icpt,
    has_icpt,
    p_terms,
    tfield,
    tmask,
):
    """Fit every pixel of the block.  The results of one row are made in ``orow``
    ``(x, field, integration)`` — contiguous per pixel: written in place, the planes of
    ``out`` would put each pixel's 11 × nint values on as many pages — then scattered row by
    row into ``out`` (the :data:`FIELDS` planes) or, with ``to_products``, straight into the
    products (``p_*``, see :func:`_scatter_products`).  Returns whether a CHARGELOSS group
    was met.  ``clean_path`` False sends every pixel through the general path (for tests)."""
    nint, ng, ny, nx = data.shape
    orow = np.empty((nx, NFIELDS, nint), np.float64)
    d = np.empty((nint, ng), np.float64)
    q = np.empty((nint, ng), np.uint8)
    oq = np.empty((nint, ng), np.uint8)
    cnt_good = np.empty(nint, np.int64)
    cnt_dnu = np.empty(nint, np.int64)
    cnt_dnu_sat = np.empty(nint, np.int64)
    cnt_sat = np.empty(nint, np.int64)
    has_jump = np.empty(nint, np.bool_)
    has_pers = np.empty(nint, np.bool_)
    has_cl = np.empty(nint, np.bool_)
    is0th = np.empty(nint, np.bool_)
    iszf = np.empty(nint, np.bool_)
    idq = np.empty(nint, np.uint32)
    buf = np.empty(max(ng, 1), np.float64)
    starts = np.empty(ng + 1, np.int64)
    lens = np.empty(ng + 1, np.int64)
    npers = ~_PERS
    invalid = _DNU | _SAT
    wtab = _weight_table(ng)
    wpix = np.empty((wtab.shape[0], ng), np.float64)
    sums = np.empty((wtab.shape[0], 4), np.float64)
    cst = np.empty(8, np.float64)
    # one row of the block, pixel-major: each pixel's (integration, group) samples are
    # contiguous (in the block they lie ny·nx apart, a cache line each)
    drow = np.empty((nx, nint, ng), data.dtype)
    qrow = np.empty((nx, nint, ng), np.uint8)
    any_cl_block = False
    # every group fitted, ≥ 3 of them: a pixel with no flag anywhere is one segment per
    # integration and takes the short path (most pixels of a TSO)
    whole = clean_path and first == 0 and last == ng - 1 and ng >= 3
    for y in range(ny):
        for i in range(nint):
            for g in range(ng):
                for x in range(nx):
                    drow[x, i, g] = data[i, g, y, x]
                    qrow[x, i, g] = groupdq[i, g, y, x]
        for x in range(nx):
            gain = np.float64(gain2d[y, x])
            rn = np.float64(rn2d[y, x])
            dc = np.float64(dark2d[y, x])
            pdq = np.uint32(pixeldq[y, x])
            if gain <= 0.0 or np.isnan(gain):
                pdq |= _DNU | _NGV
            if whole and (pdq & invalid) == 0 and _all_zero(qrow[x]):
                _fit_clean_pixel(drow[x], qrow[x], rn, gain, dc, pdq, tgroup, wtab, buf, d, wpix,
                                 sums, cst, orow, x)
                continue
            any_cl = False
            # -- read the ramp: group range, one-good-group suppression, statistics --------
            for i in range(nint):
                for g in range(ng):
                    v = qrow[x, i, g]
                    if g < first or g > last:
                        v |= np.uint8(_DNU)
                    q[i, g] = v
                    oq[i, g] = v
                if suppress1g:
                    ngood = 0
                    for g in range(ng):
                        if (np.uint32(q[i, g]) & npers) == 0:
                            ngood += 1
                    if ngood == 1:
                        for g in range(ng):
                            q[i, g] |= np.uint8(_DNU)
                cnt_good[i] = 0
                cnt_dnu[i] = 0
                cnt_dnu_sat[i] = 0
                cnt_sat[i] = 0
                has_jump[i] = False
                has_pers[i] = False
                has_cl[i] = False
                is0th[i] = False
                iszf[i] = False
                idq[i] = pdq
                for g in range(ng):
                    v = np.uint32(q[i, g])
                    if v & _JUMP:
                        has_jump[i] = True
                    if v & _PERS:
                        has_pers[i] = True
                    if v & _CL:
                        has_cl[i] = True
                    if v == 0:
                        cnt_good[i] += 1
                    elif v & _DNU:
                        cnt_dnu[i] += 1
                    if v & invalid:
                        cnt_dnu_sat[i] += 1
                    if v & _SAT:
                        d[i, g] = np.nan
                        cnt_sat[i] += 1
                    else:
                        d[i, g] = np.float64(drow[x, i, g])
                if has_cl[i]:
                    any_cl = True
                if not suppress1g:
                    if cnt_good[i] == 1 and q[i, 0] == 0:
                        # only group 0 is clean: it is fitted alone with the time of
                        # its frame average since the reset, (NFRAMES + 1)·TFRAME/2
                        is0th[i] = True
                    elif cnt_good[i] == 0 and has_zframe:
                        zf = np.float64(zframe[i, y, x])
                        if zf != 0.0:
                            # the first frame read before saturation stands in for group 0
                            d[i, 0] = zf
                            q[i, 0] = 0
                            cnt_good[i] = 1
                            cnt_dnu_sat[i] -= 1
                            if cnt_sat[i] == ng:
                                cnt_sat[i] -= 1
                            if cnt_dnu[i] == ng:
                                cnt_dnu[i] -= 1
                            iszf[i] = True
                if has_jump[i]:
                    idq[i] |= _JUMP
                if has_pers[i]:
                    idq[i] |= _PERS
            # -- per-pixel median rate R̃ (sets the Poisson variance only) ------------------
            acc = 0.0
            if ng == 1:
                for i in range(nint):
                    acc += d[i, 0] / t1
            else:
                for i in range(nint):
                    if is0th[i]:
                        mrate = d[i, 0] / t1
                    elif iszf[i]:
                        mrate = d[i, 0] / tframe
                    else:
                        mrate = _median_rate(d[i], q[i], tgroup, buf)
                    if np.isnan(mrate):
                        mrate = 0.0
                    acc += mrate
            mrate_pix = acc / nint
            have_cst = False
            # -- per-integration fits ------------------------------------------------------
            for i in range(nint):
                if whole and cnt_good[i] == ng and (idq[i] & invalid) == 0:
                    # an unflagged integration: one segment of every group
                    if not have_cst:
                        _clean_constants(rn, gain, dc, mrate_pix, tgroup, ng, wtab, wpix, sums, cst)
                        have_cst = True
                    _fit_clean_ramp(d[i], rn * rn, gain, tgroup, wpix, sums, cst,
                                    np.float64(idq[i]), orow, x, i)
                    continue
                slope_i = 0.0
                vp_i = 0.0
                vr_i = 0.0
                err_i = 0.0
                icpt = np.nan
                s_r = 0.0
                s_p = 0.0
                s_num = 0.0
                nseg = 0
                if q[i, 0] & np.uint8(_SAT):
                    idq[i] |= _DNU | _SAT
                    slope_i = np.nan
                elif cnt_dnu_sat[i] == ng:
                    idq[i] |= _DNU
                    if cnt_sat[i] == ng:
                        idq[i] |= _SAT
                else:
                    nseg = _segments(q[i], ng, starts, lens)
                if nseg > 0:
                    s_e = 0.0
                    for s in range(nseg):
                        st = starts[s]
                        n = lens[s]
                        if n == 1:
                            t = _one_group_time(suppress1g, is0th[i], iszf[i], t1, tframe, tgroup)
                            sl = d[i, st] / t
                            den_p = t * gain
                            vr = _rnoise_var_short(rn, gain, t)
                        elif n == 2:
                            d0 = d[i, st]
                            d1 = d[i, st + 1]
                            sl = (d1 - d0) / tgroup
                            den_p = tgroup * gain
                            vr = _rnoise_var_short(rn, gain, tgroup)
                            if s == 0:
                                xs = st + 1.0
                                icpt = d1 * (1.0 - xs) + d0 * xs
                        else:
                            delta = d[i, st + n - 1] - d[i, st]
                            den = rn * rn + delta * gain
                            if den <= 0.0 or gain == 0.0:
                                snr = 0.0
                            else:
                                snr = delta * gain / np.sqrt(den)
                                snr = 0.0 if snr < 0.0 else snr
                            wrow = wtab[_snr_class(snr), n]
                            invrn2 = 1.0 / (rn * rn)
                            sw = 0.0
                            sx = 0.0
                            sxx = 0.0
                            sy = 0.0
                            sxy = 0.0
                            for j in range(n):
                                w = wrow[j] * invrn2
                                xv = np.float64(j + st)
                                dv = d[i, st + j]
                                if np.isnan(dv):
                                    dv = 0.0
                                xw = xv * w
                                sw += w
                                sx += xw
                                sxx += xv * xw
                                sy += dv * w
                                sxy += dv * xw
                            invden = 1.0 / (sw * sxx - sx * sx)
                            sl = ((sw * sxy - sx * sy) * invden) / tgroup
                            if s == 0:
                                icpt = (sxx * sy - sx * sxy) * invden
                            den_p = tgroup * gain * (n - 1.0)
                            vr = _rnoise_var(rn, gain, tgroup, np.float64(n))
                        vp = _poisson_var(mrate_pix, dc, den_p)
                        s_r += 1.0 / vr
                        if vp > 0.0:
                            s_p += 1.0 / vp
                        s_e += 1.0 / (vp + vr)
                        s_num += sl / vr
                    vp_i, vr_i = _integration_variances(s_p, s_r)
                    if idq[i] & invalid:
                        slope_i = np.nan
                        vp_i = 0.0
                        vr_i = 0.0
                        err_i = 0.0
                    else:
                        slope_i = s_num * vr_i
                        ve = 1.0 / s_e
                        err_i = 0.0 if ve > LARGE_VARIANCE_THRESHOLD else np.sqrt(ve)
                is_dnu = (idq[i] & _DNU) != 0
                is_sat = (idq[i] & _SAT) != 0
                if is_dnu or is_sat:
                    slope_i = np.nan
                    icpt = np.nan
                # partial saturation is flagged after the NaN decision: the clean start of
                # a ramp saturating later keeps its slope
                if cnt_sat[i] > 0:
                    idq[i] |= _SAT
                orow[x, 0, i] = slope_i
                orow[x, 1, i] = err_i
                orow[x, 2, i] = vp_i
                orow[x, 3, i] = vr_i
                orow[x, 4, i] = np.float64(idq[i])
                orow[x, 5, i] = icpt
                orow[x, 6, i] = s_r
                orow[x, 7, i] = s_num
                orow[x, 8, i] = s_p
                fl = 0.0
                if is_sat:
                    fl += FLAG_SAT
                if cnt_sat[i] > 0:
                    fl += FLAG_ANYSAT
                if has_cl[i]:
                    fl += FLAG_CHARGELOSS
                orow[x, 9, i] = 0.0
                orow[x, 10, i] = fl
            if not any_cl:
                for i in range(nint):
                    if orow[x, 3, i] > 0.0:
                        orow[x, 9, i] = 1.0 / orow[x, 3, i]
                continue
            any_cl_block = True
            # -- CHARGELOSS: read noise of the ramp as if those groups had been clean --------
            for i in range(nint):
                if not has_cl[i]:
                    if orow[x, 3, i] > 0.0:
                        orow[x, 9, i] = 1.0 / orow[x, 3, i]
                    continue
                for g in range(ng):
                    if np.uint32(oq[i, g]) & _CL:
                        # the official code toggles both bits (they are set together)
                        oq[i, g] ^= np.uint8(_DNU | _CL)
                nseg = _segments(oq[i], ng, starts, lens)
                s_r = 0.0
                for s in range(nseg):
                    n = lens[s]
                    if n == 1:
                        t = _one_group_time(suppress1g, is0th[i], iszf[i], t1, tframe, tgroup)
                        vr = _rnoise_var_short(rn, gain, t)
                    elif n == 2:
                        vr = _rnoise_var_short(rn, gain, tgroup)
                    else:
                        vr = _rnoise_var(rn, gain, tgroup, np.float64(n))
                    if vr > 0.0:
                        s_r += 1.0 / vr
                vr_i = 1.0 / s_r if s_r != 0.0 else np.inf
                orow[x, 3, i] = 0.0 if vr_i >= LARGE_VARIANCE_THRESHOLD else vr_i
                orow[x, 9, i] = s_r
        if to_products:
            _scatter_products(orow, y, p_slope, p_err, p_vp, p_vr, p_dq, p_icpt, has_icpt,
                              p_terms, tfield, tmask)
        else:
            for f in range(NFIELDS):
                for i in range(nint):
                    for x in range(nx):
                        out[f, i, y, x] = orow[x, f, i]
    return any_cl_block


def _block_args(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe, *,
                nframes, tframe, tgroup, suppress_one_group=True, firstgroup=None,
                lastgroup=None) -> tuple:
    """The inputs of :func:`ramp_fit` checked and converted to the leading arguments of
    :func:`_fit_block` (see :func:`ramp_fit` for their meaning)."""
    data = np.asarray(data, dtype=np.float32)
    nint, ng, ny, nx = data.shape
    groupdq = np.asarray(groupdq, dtype=np.uint8)
    if groupdq.shape != data.shape:
        raise ValueError(f"groupdq shape {groupdq.shape} differs from data shape {data.shape}")
    pixeldq = np.asarray(pixeldq, dtype=np.uint32)
    gain32 = np.asarray(gain, dtype=np.float32)
    for name, arr in (("pixeldq", pixeldq), ("gain", gain32)):
        if arr.shape != (ny, nx):
            raise ValueError(f"{name} shape {arr.shape} differs from the image shape {(ny, nx)}")
    rn = electron_read_noise(readnoise, gain32, nframes=nframes)
    dark = np.ascontiguousarray(
        np.broadcast_to(np.asarray(average_dark_current, dtype=np.float32), (ny, nx))
    )
    if zeroframe is None:
        zf = np.zeros((1, 1, 1), np.float32)
        has_zf = False
    else:
        zf = np.asarray(zeroframe, dtype=np.float32)
        if zf.shape != (nint, ny, nx):
            raise ValueError(f"zeroframe shape {zf.shape} differs from {(nint, ny, nx)}")
        has_zf = True
    # the official fitter receives the times as single precision
    tg = float(np.float32(tgroup))
    tf = float(np.float32(tframe))
    t1 = (float(nframes) + 1.0) * tf / 2.0
    suppress = bool(suppress_one_group) and ng > 1
    if firstgroup is None and lastgroup is None:
        first, last = 0, ng - 1
    else:
        first, last = resolve_group_range(firstgroup, lastgroup, ng)
    return data, groupdq, pixeldq, gain32, rn, dark, zf, has_zf, tg, tf, t1, suppress, first, last


#: stand-ins for the arguments of :func:`_fit_block` that a call does not use
_NO_FIELDS = np.empty((NFIELDS, 0, 0, 0), np.float64)
_NO_PRODUCTS = (*(np.empty((0, 0, 0), np.float32),) * 4, np.empty((0, 0, 0), np.uint32),
                np.empty((0, 0, 0), np.float32), False, np.empty((0, 0, 0), np.float64),
                np.zeros(0, np.int64), np.zeros(0, np.int64))


def ramp_fit(
    data: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    gain: np.ndarray,
    readnoise: np.ndarray,
    average_dark_current: np.ndarray,
    zeroframe: np.ndarray | None = None,
    *,
    nframes: int,
    tframe: float,
    tgroup: float,
    suppress_one_group: bool = True,
    firstgroup: int | None = None,
    lastgroup: int | None = None,
) -> np.ndarray:
    """Fit the ramps of one block: every integration of one segment, any spatial tile.

    Parameters
    ----------
    data : ndarray, (integration, group, y, x), float32
        Calibrated ramps (DN).
    groupdq : ndarray, (integration, group, y, x), uint8
        Group DQ (:mod:`daskramp.dq`).
    pixeldq : ndarray, (y, x), uint32
        Pixel DQ; it is the starting DQ of every output plane.
    gain : ndarray, (y, x), float32
        Gain (e⁻/DN); ≤ 0 or NaN makes the pixel DO_NOT_USE | NO_GAIN_VALUE.
    readnoise : ndarray, (y, x), float32
        READNOISE reference values: CDS read noise (DN).
    average_dark_current : ndarray, (y, x), float32
        Added to R̃ in the Poisson variance (as the official step does, unit mismatch kept).
    zeroframe : ndarray, (integration, y, x), optional
        Frame-0 values (DN); used only when ``suppress_one_group`` is False, for integrations
        without any clean group.
    nframes : int
        NFRAMES.
    tframe, tgroup : float
        TFRAME and TGROUP (s).
    suppress_one_group : bool
        Treat ramps with exactly one clean group as unusable (forced off when NGROUPS = 1).
    firstgroup, lastgroup : int or None
        0-based range of groups to fit; groups outside are DO_NOT_USE.

    Returns
    -------
    ndarray, (NFIELDS, integration, y, x), float64
        Planes named by :data:`FIELDS` (rateints values, rate partial sums and counts).
    """
    args = _block_args(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe,
                       nframes=nframes, tframe=tframe, tgroup=tgroup,
                       suppress_one_group=suppress_one_group, firstgroup=firstgroup,
                       lastgroup=lastgroup)
    nint, _, ny, nx = args[0].shape
    out = np.empty((NFIELDS, nint, ny, nx), np.float64)
    if nint == 0 or ny == 0 or nx == 0:
        return out
    _fit_block(*args, True, out, False, *_NO_PRODUCTS)
    return out


#: rateints variables read from the fields: (variable, field, dtype)
RATEINTS: tuple[tuple[str, str, type], ...] = (
    ("data", "slope", np.float32),
    ("err", "err", np.float32),
    ("var_poisson", "var_poisson", np.float32),
    ("var_rnoise", "var_rnoise", np.float32),
    ("dq", "dq", np.uint32),
)


def _empty_products(nint: int, ny: int, nx: int, save_intercepts: bool) -> dict[str, np.ndarray]:
    out = {var: np.empty((nint, ny, nx), dtype) for var, _, dtype in RATEINTS}
    if save_intercepts:
        out["intercept"] = np.empty((nint, ny, nx), np.float32)
    out["rate_terms"] = np.empty((1, len(RATE_TERMS), ny, nx), np.float64)
    return out




@numba.njit(cache=True, error_model="numpy")
def _store_fields(fields, y0, slope, err, vp, vr, dq, icpt, has_icpt, terms, tfield, tmask):
    """Rows ``y0 …`` of the products from ``fields`` ``(NFIELDS, nint, rows, nx)`` in one pass.

    The rateints planes are cast as numpy casts them; ``terms`` ``(len(RATE_TERMS), y, x)``
    gets the sums over integrations of :func:`rate_partials`, accumulated in integration
    order as numpy's reduction along a leading axis does (bit-identical).
    """
    nint, rows, nx = fields.shape[1], fields.shape[2], fields.shape[3]
    nterm = tfield.size
    for k in range(nterm):
        for r in range(rows):
            for x in range(nx):
                terms[k, y0 + r, x] = 0.0
    for i in range(nint):
        for r in range(rows):
            y = y0 + r
            for x in range(nx):
                slope[i, y, x] = np.float32(fields[_F_SLOPE, i, r, x])
                err[i, y, x] = np.float32(fields[_F_ERR, i, r, x])
                vp[i, y, x] = np.float32(fields[_F_VP, i, r, x])
                vr[i, y, x] = np.float32(fields[_F_VR, i, r, x])
                dq[i, y, x] = np.uint32(fields[_F_DQ, i, r, x])
                if has_icpt:
                    icpt[i, y, x] = np.float32(fields[_F_ICPT, i, r, x])
                for k in range(nterm):
                    v = fields[tfield[k], i, r, x]
                    if tmask[k] == 0:
                        terms[k, y, x] += v
                    elif np.uint32(v) & np.uint32(tmask[k]):
                        terms[k, y, x] += 1.0


def _fill_products(out: dict, fields: np.ndarray, ys: slice) -> None:
    """Write the products of ``fields`` (``(NFIELDS, nint, rows, nx)``) into rows ``ys``."""
    has_icpt = "intercept" in out
    icpt = out["intercept"] if has_icpt else np.empty((0, 0, 0), np.float32)
    _store_fields(fields, ys.start or 0, out["data"], out["err"], out["var_poisson"],
                  out["var_rnoise"], out["dq"], icpt, has_icpt, out["rate_terms"][0],
                  _TERM_FIELD, _TERM_MASK)


def products_of_fields(fields: np.ndarray, *, save_intercepts: bool = False) -> dict[str, np.ndarray]:
    """The products of per-integration fields ``(NFIELDS, integration, y, x)``.

    Returns the rateints variables of :data:`RATEINTS` (``(integration, y, x)``: float32, dq
    uint32), ``intercept`` (float32) with ``save_intercepts``, and ``rate_terms``
    ``(1, term, y, x)`` float64, the block's sums over integrations of the :data:`RATE_TERMS`
    (the chunk step of the rate, see :func:`rate_partials`).
    """
    fields = np.asarray(fields)
    out = _empty_products(fields.shape[1], fields.shape[2], fields.shape[3], save_intercepts)
    _fill_products(out, fields, slice(None))
    return out


#: bytes of float64 fields held at a time by :func:`fit_products`
PRODUCT_SLAB_BYTES = 8 * 2**20


def fit_products(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe=None, *,
                 save_intercepts: bool = False, **params) -> dict[str, np.ndarray]:
    """:func:`ramp_fit` of one block straight to its products (:func:`products_of_fields`).

    Same inputs and keyword parameters as :func:`ramp_fit`.  The 88-byte-per-sample fields
    exist for one row of the block at a time; the result equals
    ``products_of_fields(ramp_fit(...))`` bit for bit.
    """
    shape = np.shape(data)[2:]
    gain, readnoise, average_dark_current = (np.broadcast_to(np.asarray(a), shape)
                                             for a in (gain, readnoise, average_dark_current))
    args = _block_args(data, groupdq, pixeldq, gain, readnoise, average_dark_current, zeroframe,
                       **params)
    nint, _, ny, nx = args[0].shape
    out = _empty_products(nint, ny, nx, save_intercepts)
    if nint == 0 or ny == 0 or nx == 0:
        out["rate_terms"][...] = 0.0
        return out
    has_icpt = "intercept" in out
    icpt = out["intercept"] if has_icpt else _NO_PRODUCTS[5]
    _fit_block(*args, True, _NO_FIELDS, True, out["data"], out["err"], out["var_poisson"],
               out["var_rnoise"], out["dq"], icpt, has_icpt, out["rate_terms"][0], _TERM_FIELD,
               _TERM_MASK)
    return out


def rate_partials(fields: np.ndarray) -> np.ndarray:
    """Chunk step of the rate: the :data:`RATE_TERMS` summed over ``integration``.

    ``fields`` is ``(NFIELDS, integration, y, x)``; returns ``(len(RATE_PARTIALS), y, x)``
    float64.  Partials of several blocks (segments, integration chunks) combine by addition.
    """
    fields = np.asarray(fields)
    out = np.empty((len(RATE_TERMS), *fields.shape[2:]), np.float64)
    for k, (_, field, mask) in enumerate(RATE_TERMS):
        v = fields[F[field]]
        out[k] = v.sum(axis=0) if mask is None else ((v.astype(np.uint32) & mask) != 0).sum(axis=0)
    return out


def add_block_terms(acc: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """Running sum of the :data:`RATE_TERMS` over integration blocks: ``acc`` plus ``block``
    (``(1, term, y, x)``, float64), a NaN term counting as 0; ``acc=None`` starts the sum.

    The blocks of an exposure are added one after another, in integration order, so that a
    pixel's rate never depends on how the blocks were grouped into tasks or submissions.
    """
    block = np.asarray(block, np.float64)
    block = np.where(np.isnan(block), 0.0, block)
    return block if acc is None else acc + block


def combine_rate(partials: np.ndarray, pixeldq: np.ndarray, gain: np.ndarray, *, nints: int) -> np.ndarray:
    """Finalize the exposure rate from partials summed over all integrations (spec 08 §6–7).

    Parameters
    ----------
    partials : ndarray, (len(RATE_PARTIALS), y, x), float64
        Sums over every integration of the :data:`RATE_TERMS`, in :data:`RATE_PARTIALS` order.
    pixeldq : ndarray, (y, x), uint32
    gain : ndarray, (y, x)
        Gain (e⁻/DN): bad values flag the rate DO_NOT_USE | NO_GAIN_VALUE.
    nints : int
        Number of integrations summed (an integration counts even when unusable).

    Returns
    -------
    ndarray, (5, y, x), float64
        Planes :data:`RATE_FIELDS`: slope (DN/s), err (DN/s) = sqrt(var_poisson +
        var_rnoise), var_poisson, var_rnoise ((DN/s)²), dq (uint32 values).
    """
    p = {name: partials[k] for k, name in enumerate(RATE_PARTIALS)}
    g = np.asarray(gain, dtype=np.float32)
    dq = np.asarray(pixeldq, dtype=np.uint32).copy()
    dq |= np.where((g <= 0) | np.isnan(g), _DNU | _NGV, np.uint32(0)).astype(np.uint32)
    dq |= np.where(p["n_jump"] > 0, _JUMP, np.uint32(0)).astype(np.uint32)
    dq |= np.where(p["n_pers"] > 0, _PERS, np.uint32(0)).astype(np.uint32)
    dq |= np.where(p["n_dnu"] == nints, _DNU, np.uint32(0)).astype(np.uint32)
    dq |= np.where(p["n_sat"] == nints, _SAT, np.uint32(0)).astype(np.uint32)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_p = p["invvar_p"]
        vp = np.where(s_p > 0, 1.0 / np.where(s_p > 0, s_p, 1.0), s_p)
        vp = np.where((vp >= LARGE_VARIANCE_THRESHOLD) | (vp < 0), 0.0, vp)
        s_r = p["invvar_r"]
        vr = np.where(s_r > 0, 1.0 / np.where(s_r > 0, s_r, 1.0), s_r)
        vr = np.where(vr >= LARGE_VARIANCE_THRESHOLD, 0.0, vr)
        err = np.sqrt(vp + vr)
        bad = (dq & (_DNU | _SAT)) != 0
        slope = np.where(bad, np.nan, p["slope_num"])
        vp = np.where(bad, 0.0, vp)
        vr = np.where(bad, 0.0, vr)
        err = np.where(bad, 0.0, err)
        slope = slope * vr
        # CHARGELOSS pixels: only the read-noise variance is recomputed
        s_cl = p["invvar_r_cl"]
        cl = (p["n_chargeloss"] > 0) & (s_cl > 0)
        vr_cl = 1.0 / np.where(cl, s_cl, 1.0)
        vr = np.where(cl, np.where(vr_cl >= LARGE_VARIANCE_THRESHOLD, 0.0, vr_cl), vr)
    dq |= np.where(p["n_anysat"] > 0, _SAT, np.uint32(0)).astype(np.uint32)
    return np.stack([slope, err, vp, vr, dq.astype(np.float64)])
