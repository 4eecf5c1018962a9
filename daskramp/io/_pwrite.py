"""Scattered writes into a file with ``pwrite(2)``, one call per contiguous run, from numba.

A column band of a FITS image cube is one short run per (integration, row).  Writing it
through a memory map would map (and count in the process's resident memory) a whole page
per run; ``pwrite`` copies the same bytes into the page cache without mapping anything.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import types

# libc's pwrite, bound by symbol name (resolved when the code is linked in the process), so the
# compiled kernel can be cached on disk like every other numba kernel
_pwrite = types.ExternalFunction("pwrite", types.intp(types.int32, types.voidptr, types.uintp, types.int64))


@numba.njit(cache=True)
def _scatter(fd, src, offsets, length):
    """Write bytes ``src[k·length : (k+1)·length]`` at file offset ``offsets[k]`` for every k.

    Returns the number of runs written completely (``offsets.size`` on success).
    """
    for k in range(offsets.size):
        done = 0
        while done < length:
            r = _pwrite(fd, src[k * length + done:].ctypes, length - done, offsets[k] + done)
            if r <= 0:
                return k
            done += r
    return offsets.size


def write_region(path, offset: int, shape: tuple[int, ...], key: tuple[slice, ...],
                 stored: np.ndarray) -> None:
    """Write ``stored`` (already in the file's byte representation) into the region ``key`` of
    a C-ordered array of ``shape`` that starts at byte ``offset`` of ``path``.

    ``key`` holds one slice (step 1) per axis.  Trailing axes the region spans whole are
    merged, so a region of whole rows is one run per leading index.
    """
    nd = len(shape)
    key = tuple(key) + (slice(None),) * (nd - len(key))
    bounds = [k.indices(n) for k, n in zip(key, shape)]
    if any(b[2] != 1 for b in bounds):
        raise ValueError(f"{path}: only contiguous slices can be written, got {key}")
    region = tuple(b[1] - b[0] for b in bounds)
    if tuple(stored.shape) != region:
        raise ValueError(f"{path}: block of shape {stored.shape} for region {region}")
    if 0 in region:
        return
    isz = stored.dtype.itemsize
    j = nd - 1
    while j > 0 and region[j] == shape[j]:
        j -= 1
    inner = math.prod(shape[j + 1:])
    length = region[j] * inner * isz
    # element index of every run start: leading axes 0..j-1 broadcast, axis j at its start
    start = np.zeros(region[:j], np.int64) if j else np.zeros((), np.int64)
    for d in range(j):
        idx = np.arange(bounds[d][0], bounds[d][1], dtype=np.int64) * math.prod(shape[d + 1:])
        start = start + idx.reshape((-1,) + (1,) * (j - 1 - d))
    start = start + bounds[j][0] * inner
    offsets = (offset + start.reshape(-1) * isz).astype(np.int64)
    src = np.ascontiguousarray(stored).view(np.uint8).reshape(-1)
    fd = os.open(path, os.O_WRONLY)
    try:
        done = _scatter(fd, src, offsets, length)
    finally:
        os.close(fd)
    if done != offsets.size:
        raise OSError(f"{path}: write failed after {done} of {offsets.size} runs "
                      f"(region {region} at byte {offset})")
