"""Checkpoint stores: the ramp of one integration block as a step receives it, in Zarr.

A step that needs statistics of whole frames of the ramp it receives (clean_flicker_noise)
cannot run in the fused tiles, which hold a band of pixels of every integration.  The fused
engine then saves the ramp the tiles have made up to that step in a checkpoint store (each
tile writes its own chunks), finds the statistics on whole frames read back from it, and
runs the rest of the chain on tiles read from it (:mod:`daskramp.engine.checkpoint`).

The store holds every variable of the ramp at that point (``data`` float32, ``groupdq``,
``pixeldq``, ``zeroframe``, ``average_dark_current``, …) uncompressed (float noise does not
compress), in chunks of one integration × all groups × one tile, so that a tile's writes
never share a chunk with another tile's and a block of whole frames reads whole chunks.
Every chunk is written, even one of fill values: reads go through
:class:`~daskramp.io.store.VerifiedArray`, which raises for a missing chunk instead of
returning the fill value.  Integrations are numbered from the block's first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..dims import IMAGE_DIMS, INTEGRATION
from .store import VerifiedArray

#: zarr array attribute naming the dims of a variable
DIMS_ATTR = "_ARRAY_DIMENSIONS"


def create(path, layout: dict, sizes: dict, rows: int, columns: int) -> Path:
    """An empty checkpoint store at ``path`` (replacing one there).

    ``layout``: variable → (dims, dtype); ``sizes``: dim → length (``integration`` the
    block's); chunks: 1 integration, every group, ``rows`` × ``columns`` pixels.
    """
    import zarr

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunk_of = {INTEGRATION: 1, "y": rows, "x": columns}
    for name, (dims, dtype) in layout.items():
        shape = tuple(int(sizes[d]) for d in dims)
        chunks = tuple(max(1, min(int(chunk_of.get(d, sizes[d])), n)) for d, n in zip(dims, shape))
        arr = group.create_array(name, shape=shape, chunks=chunks, dtype=np.dtype(dtype),
                                 compressors=None, fill_value=0)
        arr.attrs[DIMS_ATTR] = list(dims)
    return path


def write(path, arrays: dict, ys: slice, xs: slice) -> None:
    """Write a tile's arrays (variable → numpy array, all integrations of the block) at its
    pixels ``ys``/``xs``; arrays whose name the store does not hold are an error."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for name, arr in arrays.items():
        # a chunk of fill values is written too: the setting is not kept in the store, and
        # zarr's global one is shared by the threads of a worker
        target = group[name].with_config({"write_empty_chunks": True})
        dims = tuple(target.attrs[DIMS_ATTR])
        if tuple(dims[-2:]) != IMAGE_DIMS:
            raise ValueError(f"{path}: {name} has dims {dims}, not ending in (y, x)")
        target[(*(slice(None),) * (len(dims) - 2), ys, xs)] = np.asarray(arr, target.dtype)


def names(path) -> list[str]:
    """The variables a checkpoint holds."""
    import zarr

    return sorted(zarr.open_group(str(path), mode="r", zarr_format=3).array_keys())


def read(path, i0: int, i1: int, ys: slice, xs: slice, variables=None) -> dict[str, np.ndarray]:
    """Integrations ``i0:i1`` of the block and pixels ``ys``/``xs`` of every variable (or of
    ``variables``); (y, x) images are read at ``ys``/``xs`` only.  A missing chunk raises
    (:class:`~daskramp.io.store.VerifiedArray`)."""
    out = {}
    for name in variables or names(path):
        arr = VerifiedArray(path, name)
        dims = tuple(arr._array().attrs[DIMS_ATTR])
        key = tuple(slice(i0, i1) if d == INTEGRATION else ys if d == "y" else xs if d == "x"
                    else slice(None) for d in dims)
        out[name] = np.asarray(arr[key])
    return out


def remove(path) -> None:
    """Delete a checkpoint store (no error when it is gone)."""
    shutil.rmtree(path, ignore_errors=True)
