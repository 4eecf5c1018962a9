"""jump: cosmic-ray detection by the two-point difference method (spec 07).

Pure kernels on numpy blocks ``(integration, group, y, x)``.  A block must hold **every
integration** of its pixels (one segment or the whole exposure): the median difference, the
count of usable differences and the sigma clipping across integrations are pooled over them.
The block may be a spatial tile; neighbour flagging then needs a halo of one pixel, and the
exposure-wide method choice arrives precomputed in ``plane_dnu``.

Three detection methods, chosen for the whole block exactly as the official step chooses them
for a file (``nflag_max`` = largest number, over integrations, of groups in which every pixel
of the frame has DO_NOT_USE):

* sigma clipping across integrations, when ``only_use_ints`` and the block has at least
  ``minimum_sigclip_groups`` integrations (or, without ``only_use_ints``, when the number of
  groups not fully DO_NOT_USE reaches it);
* otherwise nothing when ``ngroups - nflag_max < minimum_groups``;
* a single non-iterative pass when ``ngroups - nflag_max - 1 >= min_diffs_single_pass``;
* the iterative two-point method otherwise.

All arithmetic is in electrons; float32/float64 steps follow the official step so that ratios
at a threshold compare the same way (differences of float32 electrons, statistics in float64).

Known difference on spatial tiles: in sigma-clip mode the official step resets groups that are
exactly JUMP_DET in any (integration, group) plane in which *every pixel of the frame* has
JUMP_DET or DO_NOT_USE.  That test needs the whole frame after detection, so it is applied only
when ``sigclip_plane_reset=True`` (the wrapper passes True when the block spans the whole
frame, where it is exact, and False on tiles, where the rule is not applied).  It can only
matter when every usable pixel of a frame has a jump in the same group.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .. import dq

_DNU = np.uint8(dq.DO_NOT_USE)
_SAT = np.uint8(dq.SATURATED)
_JUMP = np.uint8(dq.JUMP_DET)
_BAD = np.uint8(dq.DO_NOT_USE | dq.SATURATED)

#: method codes of the detection pass
NONE, ITERATIVE, SINGLE_PASS, SIGMA_CLIP = 0, 1, 2, 3
METHOD_NAMES = {NONE: "none", ITERATIVE: "iterative", SINGLE_PASS: "single_pass",
                SIGMA_CLIP: "sigma_clip"}

#: astropy ``sigma_clip`` default number of iterations, used by the official step
_SIGCLIP_MAXITERS = 5


# --------------------------------------------------------------------------------------------
# small numba helpers


@numba.njit(cache=True)
def _kth_smallest(a, n, k):
    """k-th smallest of ``a[:n]`` by Wirth's selection (reorders ``a[:n]`` in place)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        x = a[k]
        i = lo
        j = hi
        while True:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]


@numba.njit(cache=True)
def _median(a, n):
    """Median of ``a[:n]`` (mean of the two middle values for even n); NaN when n == 0."""
    if n == 0:
        return np.nan
    if n % 2 == 0:
        hi = _kth_smallest(a, n, n // 2)
        # selection leaves a[:n//2] holding the smaller half: its maximum is the other middle
        lo = a[0]
        for j in range(1, n // 2):
            if a[j] > lo:
                lo = a[j]
        return 0.5 * (hi + lo)
    return _kth_smallest(a, n, (n - 1) // 2)


@numba.njit(cache=True)
def _sigma(m, rn_var):
    """Expected σ (e⁻) of one difference; 0 → NaN so zero-gain pixels never get jumps."""
    s = math.sqrt(abs(m) + rn_var)
    if s == 0.0:
        return np.nan
    return s


@numba.njit(cache=True)
def _mean_std(buf, n):
    """Mean and population standard deviation of ``buf[:n]`` (two passes, in order)."""
    mean = 0.0
    for j in range(n):
        mean += buf[j]
    mean /= n
    var = 0.0
    for j in range(n):
        var += (buf[j] - mean) * (buf[j] - mean)
    return mean, math.sqrt(var / n)


@numba.njit(cache=True)
def _nothing_clipped(buf, n, nsig):
    """True when the first sigma-clip iteration over ``buf[:n]`` provably clips nothing.

    Decided without the median: for any sample the median lies within one (population)
    standard deviation σ of the mean, so a value within (nsig − 1)·σ of the mean is within
    nsig·σ of the median.  A value further out ("candidate") is shown to be inside by
    counting: v ≤ median + nsig·σ holds when fewer than half the values lie below
    v − nsig·σ (and symmetrically below the mean).  Margins of 1e-7 relative keep the
    proof valid through rounding.  False means "not shown" and the caller clips exactly.
    The point is speed: most pixels of a TSO have no outlier, and the median selection
    is the costly part of a clip.
    """
    if nsig <= 1.0 or n < 3:
        return False
    mean, std = _mean_std(buf, n)
    scale = abs(mean) + std
    if not std > 1e-6 * scale:
        return False
    eps = 1e-7 * scale
    safe = (nsig - 1.0) * std - eps
    half = (n - 1) // 2
    ncand = 0
    for j in range(n):
        v = buf[j]
        if abs(v - mean) <= safe:
            continue
        ncand += 1
        if ncand > 8:
            return False
        cnt = 0
        if v > mean:
            t = v - nsig * std + 2.0 * eps + 1e-7 * abs(v)
            for m in range(n):
                if buf[m] < t:
                    cnt += 1
        else:
            t = v + nsig * std - 2.0 * eps - 1e-7 * abs(v)
            for m in range(n):
                if buf[m] > t:
                    cnt += 1
        if cnt > half:
            return False
    return True


#: half-width, in standard deviations, of the interval around the mean in which
#: :func:`_columns_quiet` shows the median to lie (by counting the values on either side)
_MEDIAN_BOX = 0.25


@numba.njit(cache=True)
def _columns_quiet(diffs, nsig, s1, s2, quiet, lo, hi, dev, below, above):
    """``quiet[k]``: a sigma clip of column k of ``diffs`` (its finite values, in order)
    provably clips nothing, so it flags nothing.

    The mean and standard deviation σ are the same sums in the same order as
    :func:`_mean_std` on the gathered column (a NaN adds 0.0, which leaves a sum unchanged:
    it starts at +0.0 and never becomes −0.0), so σ is the clip's own.  The median is
    bracketed without selecting it: when at most ⌊(n−1)/2⌋ values lie below
    mean − b·σ, both middle values (hence the median) lie at or above it, and symmetrically
    above (b = :data:`_MEDIAN_BOX`).  Every value within nsig·σ − b·σ of the mean (less a
    relative rounding margin) is then inside the clip's closed bounds around the median.
    Columns not shown quiet (an outlier, too few values, no spread) take the exact path.
    """
    nint, nd = diffs.shape
    for k in range(nd):
        s1[k] = 0.0
        s2[k] = 0.0
        quiet[k] = 0
    for i in range(nint):
        for k in range(nd):
            v = diffs[i, k]
            fin = not math.isnan(v)
            s1[k] += v if fin else 0.0
            quiet[k] += fin
    for k in range(nd):
        if quiet[k] > 0:
            s1[k] = s1[k] / quiet[k]
    for i in range(nint):
        for k in range(nd):
            v = diffs[i, k]
            d = v - s1[k]
            s2[k] += d * d if not math.isnan(v) else 0.0
    for k in range(nd):
        n = quiet[k]
        mean = s1[k]
        std = math.sqrt(s2[k] / n) if n > 0 else 0.0
        s2[k] = std
        lo[k] = mean - _MEDIAN_BOX * std
        hi[k] = mean + _MEDIAN_BOX * std
        dev[k] = 0.0
        below[k] = 0
        above[k] = 0
    for i in range(nint):
        for k in range(nd):
            v = diffs[i, k]
            # NaN compares False everywhere: it counts nowhere and deviates nothing
            below[k] += v < lo[k]
            above[k] += v > hi[k]
            a = abs(v - s1[k])
            if a > dev[k]:
                dev[k] = a
    for k in range(nd):
        n = quiet[k]
        quiet[k] = 0
        std = s2[k]
        if nsig <= 1.0 or n < 3:
            continue
        scale = abs(s1[k]) + std
        if not std > 1e-6 * scale:
            continue
        half = (n - 1) // 2
        if below[k] > half or above[k] > half:
            continue
        if dev[k] <= (nsig - _MEDIAN_BOX) * std - 4e-7 * scale:
            quiet[k] = 1


@numba.njit(cache=True)
def _sigclip_lohi(buf, n, nsig):
    """Final bounds of an iterated sigma clip of ``buf[:n]`` (reorders ``buf``).

    Median centre, population standard deviation, values kept while inside the closed bounds;
    stop when nothing more is clipped, everything is clipped, or after the iteration limit —
    astropy's ``sigma_clip`` defaults, which the official step uses.  NaN bounds when n == 0;
    (−inf, inf) when :func:`_nothing_clipped` shows that nothing would be clipped (the
    values outside the bounds, none, are the same).
    """
    lo = np.nan
    hi = np.nan
    if n == 0:
        return lo, hi
    if _nothing_clipped(buf, n, nsig):
        return -np.inf, np.inf
    it = 0
    while True:
        med = _median(buf, n)
        _, std = _mean_std(buf, n)
        lo = med - nsig * std
        hi = med + nsig * std
        m = 0
        for j in range(n):
            if buf[j] >= lo and buf[j] <= hi:
                buf[m] = buf[j]
                m += 1
        if m == n or m == 0:
            return lo, hi
        n = m
        it += 1
        if it >= _SIGCLIP_MAXITERS:
            return lo, hi


@numba.njit(cache=True, inline="always")
def _electrons(data, i, g, y, x, g_, isc, scaled):
    """Sample (i, g) of pixel (y, x) in e⁻ (float32), divided by the integration's scale."""
    if scaled:
        return (data[i, g, y, x] / isc[i]) * g_
    return data[i, g, y, x] * g_


@numba.njit(cache=True)
def _load_row(data, gdq, gain, y, row, had_jump, isc, scaled):
    """Electrons ``row[x, i, g]`` of row ``y``; NaN where SATURATED or DO_NOT_USE.
    ``had_jump[x]``: some group of pixel x already carries JUMP_DET."""
    nint, ngroup, _, nx = data.shape
    for x in range(nx):
        had_jump[x] = False
    for i in range(nint):
        for g in range(ngroup):
            for x in range(nx):
                q = gdq[i, g, y, x]
                if q & _JUMP:
                    had_jump[x] = True
                if q & _BAD:
                    row[x, i, g] = np.float32(np.nan)
                else:
                    row[x, i, g] = _electrons(data, i, g, y, x, gain[y, x], isc, scaled)


@numba.njit(cache=True)
def _pixel_diffs(row, x, diffs):
    """First differences ``diffs[i, k]`` (e⁻, float32 subtraction as in the official step)."""
    nint, ngroup = row.shape[1], row.shape[2]
    for i in range(nint):
        for k in range(ngroup - 1):
            diffs[i, k] = np.float64(row[x, i, k + 1] - row[x, i, k])


@numba.njit(cache=True)
def _signed_median(diffs, buf):
    n = 0
    for i in range(diffs.shape[0]):
        for k in range(diffs.shape[1]):
            v = diffs[i, k]
            if not math.isnan(v):
                buf[n] = v
                n += 1
    return _median(buf, n)


# --------------------------------------------------------------------------------------------
# detection


@numba.njit(cache=True)
def _iterative_pixel(diffs, absd, buf, rn_var, thr, thr4, thr3, out, y, x):
    """Iterative clipped-median two-point search of one pixel, flags written into ``out``;
    True when it flagged something."""
    nint, ndiff = diffs.shape
    ntot = nint * ndiff
    for i in range(nint):
        for k in range(ndiff):
            absd[i, k] = abs(diffs[i, k])
    flagged = False
    for it in range(ntot):
        # clipped median of |Δ| pooled over every integration
        u = 0
        mx = -np.inf
        for i in range(nint):
            for k in range(ndiff):
                v = absd[i, k]
                if not math.isnan(v):
                    u += 1
                    if v > mx:
                        mx = v
        n = 0
        if u >= 4:
            for i in range(nint):
                for k in range(ndiff):
                    v = absd[i, k]
                    if not math.isnan(v) and v != mx:
                        buf[n] = v
                        n += 1
            m = _median(buf, n)
        elif u == 3:
            for i in range(nint):
                for k in range(ndiff):
                    v = absd[i, k]
                    if not math.isnan(v):
                        buf[n] = v
                        n += 1
            m = _median(buf, n)
        elif u == 2:
            m = np.inf
            for i in range(nint):
                for k in range(ndiff):
                    v = absd[i, k]
                    if not math.isnan(v) and v < m:
                        m = v
        else:
            return flagged
        if u >= 4:
            t = thr
        elif u == 3:
            t = thr4
        else:
            t = thr3
        if it > 0:
            # the official step keeps the re-computed medians in float32
            m = np.float64(np.float32(m))
        s = _sigma(m, rn_var)
        rmax = -np.inf
        for i in range(nint):
            for k in range(ndiff):
                v = absd[i, k]
                if not math.isnan(v):
                    r = abs(np.float64(np.float32(v - m))) / s
                    if r > rmax:
                        rmax = r
        if not rmax > t:
            return flagged
        # flag every difference at the maximum (ties are flagged together), then drop them
        for i in range(nint):
            for k in range(ndiff):
                v = absd[i, k]
                if not math.isnan(v):
                    r = abs(np.float64(np.float32(v - m))) / s
                    if r == rmax:
                        out[i, k + 1, y, x] |= _JUMP
                        absd[i, k] = np.nan
                        flagged = True
    return flagged


@numba.njit(cache=True)
def _detect(data, gdq, gain, rn_var, method, only_use_ints, thr, thr4, thr3, out, m0, have_m0,
            need_m0, isc, scaled):
    """Detection pass over every pixel of the block (JUMP_DET OR-ed into ``out``).

    With ``need_m0`` (the post-processing will look at the jumps), M₀ of every pixel that
    carries a jump is computed here from the differences already in hand: :func:`_pixel_m0`
    would gather them again, one cache line per sample.
    """
    nint, ngroup, ny, nx = data.shape
    ndiff = ngroup - 1
    row = np.empty((nx, nint, ngroup), np.float32)
    had_jump = np.empty(nx, np.bool_)
    diffs = np.empty((nint, ndiff), np.float64)
    absd = np.empty((nint, ndiff), np.float64)
    buf = np.empty(nint * ndiff, np.float64)
    s1 = np.empty(ndiff, np.float64)
    s2 = np.empty(ndiff, np.float64)
    quiet = np.empty(ndiff, np.int64)
    qlo = np.empty(ndiff, np.float64)
    qhi = np.empty(ndiff, np.float64)
    qdev = np.empty(ndiff, np.float64)
    qbelow = np.empty(ndiff, np.int64)
    qabove = np.empty(ndiff, np.int64)
    for y in range(ny):
        _load_row(data, gdq, gain, y, row, had_jump, isc, scaled)
        for x in range(nx):
            _pixel_diffs(row, x, diffs)
            rv = rn_var[y, x]
            flagged = False
            if method == SINGLE_PASS:
                m = _signed_median(diffs, buf)
                m0[y, x] = m
                have_m0[y, x] = True
                s = _sigma(m, rv)
                for i in range(nint):
                    for k in range(ndiff):
                        v = diffs[i, k]
                        if not math.isnan(v) and abs(v - m) / s > thr:
                            out[i, k + 1, y, x] |= _JUMP
            elif method == ITERATIVE:
                flagged = _iterative_pixel(diffs, absd, buf, rv, thr, thr4, thr3, out, y, x)
            elif method == SIGMA_CLIP:
                if only_use_ints:
                    # most columns of a TSO pixel hold no outlier: shown for all at once
                    _columns_quiet(diffs, thr, s1, s2, quiet, qlo, qhi, qdev, qbelow, qabove)
                    for k in range(ndiff):
                        if quiet[k]:
                            continue
                        n = 0
                        for i in range(nint):
                            v = diffs[i, k]
                            if not math.isnan(v):
                                buf[n] = v
                                n += 1
                        lo, hi = _sigclip_lohi(buf, n, thr)
                        for i in range(nint):
                            v = diffs[i, k]
                            if (not math.isnan(v) and (v < lo or v > hi)
                                    and not gdq[i, k + 1, y, x] & _BAD):
                                out[i, k + 1, y, x] |= _JUMP
                                flagged = True
                else:
                    n = 0
                    for i in range(nint):
                        for k in range(ndiff):
                            v = diffs[i, k]
                            if not math.isnan(v):
                                buf[n] = v
                                n += 1
                    lo, hi = _sigclip_lohi(buf, n, thr)
                    for i in range(nint):
                        for k in range(ndiff):
                            v = diffs[i, k]
                            if (not math.isnan(v) and (v < lo or v > hi)
                                    and not gdq[i, k + 1, y, x] & _BAD):
                                out[i, k + 1, y, x] |= _JUMP
                                flagged = True
            if need_m0 and (flagged or had_jump[x]) and not have_m0[y, x]:
                m0[y, x] = _signed_median(diffs, buf)
                have_m0[y, x] = True


@numba.njit(cache=True)
def _reset_full_planes(out):
    """Sigma-clip mode: in a plane where every pixel has JUMP_DET or DO_NOT_USE, reset pixels
    flagged exactly JUMP_DET (official behaviour, see module notes)."""
    nint, ngroup, ny, nx = out.shape
    for i in range(nint):
        for g in range(ngroup):
            full = True
            for y in range(ny):
                for x in range(nx):
                    if not out[i, g, y, x] & (_JUMP | _DNU):
                        full = False
                        break
                if not full:
                    break
            if full:
                for y in range(ny):
                    for x in range(nx):
                        if out[i, g, y, x] == _JUMP:
                            out[i, g, y, x] = 0


# --------------------------------------------------------------------------------------------
# post-processing


@numba.njit(cache=True)
def _pixel_m0(data, gdq, gain, y, x, m0, have_m0, diffs, buf, isc, scaled):
    """M₀ = nanmedian of the signed differences of pixel (y, x), computed once on demand."""
    if have_m0[y, x]:
        return m0[y, x]
    nint, ngroup = data.shape[0], data.shape[1]
    g_ = gain[y, x]
    for i in range(nint):
        prev = np.float32(np.nan)
        for g in range(ngroup):
            if gdq[i, g, y, x] & _BAD:
                cur = np.float32(np.nan)
            else:
                cur = _electrons(data, i, g, y, x, g_, isc, scaled)
            if g > 0:
                diffs[i, g - 1] = np.float64(cur - prev)
            prev = cur
    m = _signed_median(diffs, buf)
    m0[y, x] = m
    have_m0[y, x] = True
    return m


@numba.njit(cache=True)
def _diff_at(data, gdq, gain, i, k, y, x, isc, scaled):
    """Signed difference Δ[i, k] of pixel (y, x) in e⁻ (NaN when either group is unusable)."""
    if (gdq[i, k, y, x] | gdq[i, k + 1, y, x]) & _BAD:
        return np.nan
    g_ = gain[y, x]
    return np.float64(_electrons(data, i, k + 1, y, x, g_, isc, scaled)
                      - _electrons(data, i, k, y, x, g_, isc, scaled))


@numba.njit(cache=True)
def _post(data, gdq, gain, rn_var, out, m0, have_m0, flag_4_neighbors, rmin, rmax,
          n1, e1, n2, e2, isc, scaled):
    nint, ngroup, ny, nx = data.shape
    ndiff = ngroup - 1
    diffs = np.empty((nint, ndiff), np.float64)
    buf = np.empty(nint * ndiff, np.float64)
    if flag_4_neighbors:
        src = np.zeros((ny, nx), np.bool_)
        for i in range(nint):
            for k in range(ndiff):
                g = k + 1
                anysrc = False
                for y in range(ny):
                    for x in range(nx):
                        src[y, x] = False
                        if out[i, g, y, x] & _JUMP:
                            m = _pixel_m0(data, gdq, gain, y, x, m0, have_m0, diffs, buf, isc, scaled)
                            r = abs(_diff_at(data, gdq, gain, i, k, y, x, isc, scaled) - m) / _sigma(
                                m, rn_var[y, x])
                            if r < rmax and r > rmin:
                                src[y, x] = True
                                anysrc = True
                if not anysrc:
                    continue
                for y in range(ny):
                    for x in range(nx):
                        if not src[y, x]:
                            continue
                        for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
                            yy = y + dy
                            xx = x + dx
                            if 0 <= yy < ny and 0 <= xx < nx and not out[i, g, yy, xx] & _BAD:
                                out[i, g, yy, xx] |= _JUMP
    if n1 > 0 or n2 > 0:
        big = np.zeros(ngroup, np.int64)
        for i in range(nint):
            for y in range(ny):
                for x in range(nx):
                    any_jump = False
                    for g in range(1, ngroup):
                        if out[i, g, y, x] & _JUMP:
                            any_jump = True
                            break
                    if not any_jump:
                        continue
                    m = _pixel_m0(data, gdq, gain, y, x, m0, have_m0, diffs, buf, isc, scaled)
                    # how many later groups each jump flags (snapshot before propagation)
                    for g in range(ngroup):
                        big[g] = 0
                    for g in range(1, ngroup):
                        if out[i, g, y, x] & _JUMP:
                            ej = _diff_at(data, gdq, gain, i, g - 1, y, x, isc, scaled) - m
                            if ej >= e1 and n1 > big[g]:
                                big[g] = n1
                            if ej >= e2 and n2 > big[g]:
                                big[g] = n2
                    for g in range(1, ngroup):
                        if big[g] > 0:
                            for h in range(g + 1, min(g + big[g], ngroup - 1) + 1):
                                if not out[i, h, y, x] & _BAD:
                                    out[i, h, y, x] |= _JUMP


@numba.njit(cache=True)
def _clean_up(out):
    """JUMP_DET is redundant where the group is already DO_NOT_USE or SATURATED."""
    flat = out.reshape(-1)
    for j in range(flat.size):
        v = flat[j]
        if v & _JUMP and v & _BAD:
            flat[j] = v & ~_JUMP


# --------------------------------------------------------------------------------------------
# public API


def choose_method(plane_dnu, *, ngroups, minimum_groups=3, minimum_sigclip_groups=100,
                  only_use_ints=True, min_diffs_single_pass=10):
    """Detection method for a block, decided for the whole frame as the official step does.

    Parameters
    ----------
    plane_dnu : ndarray of bool, shape (nint, ngroup)
        True where every pixel of the **whole frame** has DO_NOT_USE in that group.

    Returns
    -------
    int
        One of ``NONE``, ``ITERATIVE``, ``SINGLE_PASS``, ``SIGMA_CLIP``.
    """
    plane_dnu = np.asarray(plane_dnu, bool)
    nint = plane_dnu.shape[0]
    flagged = plane_dnu.sum(axis=1)
    nflag_max = int(flagged.max()) if nint else 0
    total_groups = nint * ngroups - int(flagged.sum())
    min_usable_groups = ngroups - nflag_max
    if (only_use_ints and nint >= minimum_sigclip_groups) or (
        not only_use_ints and total_groups >= minimum_sigclip_groups
    ):
        return SIGMA_CLIP
    if min_usable_groups < minimum_groups:
        return NONE
    if min_usable_groups - 1 >= min_diffs_single_pass:
        return SINGLE_PASS
    return ITERATIVE


def jump(
    data,
    groupdq,
    gain,
    readnoise,
    plane_dnu,
    *,
    nframes,
    tgroup,
    gain_median=np.nan,
    rejection_threshold=4.0,
    three_group_rejection_threshold=6.0,
    four_group_rejection_threshold=5.0,
    flag_4_neighbors=True,
    max_jump_to_flag_neighbors=1000.0,
    min_jump_to_flag_neighbors=10.0,
    after_jump_flag_dn1=0.0,
    after_jump_flag_time1=0.0,
    after_jump_flag_dn2=0.0,
    after_jump_flag_time2=0.0,
    minimum_groups=3,
    minimum_sigclip_groups=100,
    only_use_ints=True,
    min_diffs_single_pass=10,
    sigclip_plane_reset=True,
    integration_scale=None,
):
    """Flag cosmic-ray jumps (JUMP_DET) in the group DQ of one block.

    Parameters
    ----------
    data : ndarray, float32, shape (nint, ngroup, ny, nx)
        Calibrated ramps in DN; every integration of the pixels (one segment or exposure).
    groupdq : ndarray, uint8, shape (nint, ngroup, ny, nx)
        Group DQ; SATURATED or DO_NOT_USE groups are not used.
    gain : ndarray, float32, shape (ny, nx)
        Gain in e⁻/DN, cut to the block.  Gain 0 gives σ = 0 → such pixels never get jumps;
        NaN gain makes every difference unusable.
    readnoise : ndarray, float32, shape (ny, nx)
        CDS read noise in DN.
    plane_dnu : ndarray of bool, shape (nint, ngroup)
        True where every pixel of the whole frame (not only this block) has DO_NOT_USE in that
        group; it drives the method choice (:func:`choose_method`).
    nframes : int
        NFRAMES (frames averaged per group): read-noise variance of one difference is
        ``(READNOISE·gain)² / NFRAMES``.
    tgroup : float
        TGROUP in s, converts the after-jump times to groups.
    gain_median : float
        nanmedian of the whole (cut) gain image, converts the after-jump DN thresholds to e⁻.
        Only used when after-jump flagging is on.
    rejection_threshold, three_group_rejection_threshold, four_group_rejection_threshold : float
        σ thresholds for ≥ 4, 2 and 3 usable (pooled) differences.
    flag_4_neighbors : bool
        Also flag the up/down/left/right neighbours of a jump whose ratio lies strictly between
        ``min_jump_to_flag_neighbors`` and ``max_jump_to_flag_neighbors``.
    after_jump_flag_dn1, after_jump_flag_time1, after_jump_flag_dn2, after_jump_flag_time2 : float
        Flag the groups within time (s) after a jump of at least dn (DN) above the median.
    minimum_groups, minimum_sigclip_groups, only_use_ints, min_diffs_single_pass
        Method choice, see :func:`choose_method`.  (The official single-process step forces
        ``minimum_groups`` to 3 internally; here the given value is used.)
    sigclip_plane_reset : bool
        Apply the sigma-clip "whole plane is JUMP_DET or DO_NOT_USE" reset over this block;
        only exact when the block is the whole frame (see module notes).
    integration_scale : ndarray, float, shape (nint,), optional
        Relative flux level of each integration (e.g. a normalised, smoothed white-light
        curve; positive, ≈ 1).  Each integration's samples are divided by its scale before
        the differences are compared with the statistics pooled over integrations, so a
        transit or eclipse (a few % less flux in some integrations) does not make their
        differences look low.  None (default) is the official behaviour.  Not an official
        parameter.

    Returns
    -------
    ndarray, uint8, shape (nint, ngroup, ny, nx)
        New group DQ: input flags OR JUMP_DET, with JUMP_DET removed where the group is also
        DO_NOT_USE or SATURATED.  Unchanged copy when ngroup ≤ 2.
    """
    data = np.asarray(data)
    groupdq = np.asarray(groupdq)
    if data.ndim != 4 or groupdq.shape != data.shape:
        raise ValueError(f"data {data.shape} and groupdq {groupdq.shape} must be the same 4-D shape")
    nint, ngroup, ny, nx = data.shape
    out = groupdq.astype(np.uint8, copy=True)
    if ngroup <= 2 or out.size == 0:
        return out
    # a window of a larger array is read where it lies: the kernels take any strides
    data = data if data.dtype == np.float32 else data.astype(np.float32)
    gdq = np.ascontiguousarray(groupdq, dtype=np.uint8)
    gain = np.ascontiguousarray(np.broadcast_to(gain, (ny, nx)), dtype=np.float32)
    readnoise = np.ascontiguousarray(np.broadcast_to(readnoise, (ny, nx)), dtype=np.float32)
    plane_dnu = np.asarray(plane_dnu, bool)
    if plane_dnu.shape != (nint, ngroup):
        raise ValueError(f"plane_dnu has shape {plane_dnu.shape}, expected {(nint, ngroup)}")
    scaled = integration_scale is not None
    isc = np.ones(nint, np.float32)
    if scaled:
        isc = np.asarray(integration_scale, np.float32).reshape(-1)
        if isc.shape != (nint,):
            raise ValueError(f"integration_scale has {isc.size} values for {nint} integrations")
        if not (np.isfinite(isc).all() and (isc > 0).all()):
            raise ValueError("integration_scale must be finite and positive")

    method = choose_method(plane_dnu, ngroups=ngroup, minimum_groups=minimum_groups,
                           minimum_sigclip_groups=minimum_sigclip_groups,
                           only_use_ints=only_use_ints,
                           min_diffs_single_pass=min_diffs_single_pass)
    if method != NONE:
        # CDS read noise in e⁻, squared in float32 as the official step does, per NFRAMES
        rn = readnoise * gain
        rn_var = (rn * rn).astype(np.float64) / float(nframes)
        m0 = np.full((ny, nx), np.nan)
        have_m0 = np.zeros((ny, nx), bool)
        n1 = int(after_jump_flag_time1 // tgroup) if after_jump_flag_time1 else 0
        n2 = int(after_jump_flag_time2 // tgroup) if after_jump_flag_time2 else 0
        need_post = bool(flag_4_neighbors) or n1 > 0 or n2 > 0
        _detect(data, gdq, gain, rn_var, method, bool(only_use_ints),
                float(rejection_threshold), float(four_group_rejection_threshold),
                float(three_group_rejection_threshold), out, m0, have_m0, need_post, isc, scaled)
        if method == SIGMA_CLIP and sigclip_plane_reset:
            _reset_full_planes(out)
        # DN → e⁻ with the float32 median gain, in float32 as the official step computes it
        e1 = float(np.float32(after_jump_flag_dn1) * np.float32(gain_median))
        e2 = float(np.float32(after_jump_flag_dn2) * np.float32(gain_median))
        if need_post:
            _post(data, gdq, gain, rn_var, out, m0, have_m0, bool(flag_4_neighbors),
                  float(min_jump_to_flag_neighbors), float(max_jump_to_flag_neighbors),
                  n1, e1, n2, e2, isc, scaled)
    _clean_up(out)
    return out


def bad_gain_pixeldq(pixeldq, gain):
    """pixeldq with NO_GAIN_VALUE | DO_NOT_USE where the gain is ≤ 0 or NaN.

    Parameters
    ----------
    pixeldq : ndarray, uint32, shape (ny, nx)
    gain : ndarray, float, shape (ny, nx), e⁻/DN

    Returns
    -------
    ndarray, uint32, shape (ny, nx)
    """
    # written with array operators only, so dask-backed images stay lazy
    bad = ~(gain > 0)  # NaN compares False, so it is caught too
    flags = np.where(bad, np.uint32(dq.NO_GAIN_VALUE | dq.DO_NOT_USE), np.uint32(0))
    return pixeldq.astype(np.uint32) | flags
