"""Order statistics of small work buffers, for the kernels' per-pixel and per-line medians."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def select(v, m, k):
    """The k-th smallest (0-based) of ``v[:m]`` (no NaN), reordering ``v[:m]`` in place so
    that the values before position k are not larger and those after not smaller.

    A quickselect (Hoare partitions around a median-of-three pivot): O(m) on average, no
    allocation, where a sort or ``np.partition`` (which copies) costs more on the few to few
    hundred values of one ramp or line.
    """
    lo = 0
    hi = m - 1
    while hi > lo:
        mid = (lo + hi) // 2
        if v[mid] < v[lo]:
            v[mid], v[lo] = v[lo], v[mid]
        if v[hi] < v[lo]:
            v[hi], v[lo] = v[lo], v[hi]
        if v[hi] < v[mid]:
            v[hi], v[mid] = v[mid], v[hi]
        v[lo], v[mid] = v[mid], v[lo]
        p = v[lo]
        i = lo + 1
        j = hi
        while True:
            while i <= j and v[i] < p:
                i += 1
            while i <= j and v[j] > p:
                j -= 1
            if i >= j:
                break
            v[i], v[j] = v[j], v[i]
            i += 1
            j -= 1
        v[lo], v[j] = v[j], v[lo]
        if j == k:
            return v[j]
        if j < k:
            lo = j + 1
        else:
            hi = j - 1
    return v[k]


@numba.njit(cache=True, nogil=True)
def lower_of_selected(v, k):
    """The largest of ``v[:k]`` after :func:`select` put the k-th value at ``v[k]``: the
    (k−1)-th smallest, for the mean of the two middle values of an even count."""
    lower = v[0]
    for i in range(1, k):
        if v[i] > lower:
            lower = v[i]
    return lower
