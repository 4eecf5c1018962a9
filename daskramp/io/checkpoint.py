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
Every chunk is written, even one of fill values, and a missing one is an error, never the
fill value.  The chunk files are the values' bytes (one codec: little-endian bytes), which
this module writes and reads directly; zarr reads the same store.  Integrations are numbered
from the block's first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..dims import IMAGE_DIMS, INTEGRATION
from .store import MissingChunkError, StoreError

#: zarr array attribute naming the dims of a variable
DIMS_ATTR = "_ARRAY_DIMENSIONS"


#: group attribute: the graph token of the run that made the store
TOKEN_ATTR = "daskramp_checkpoint"


def create(path, layout: dict, sizes: dict, rows: int, columns: int, token: str = "") -> Path:
    """An empty checkpoint store at ``path``, replacing one there unless it was made with the
    same ``token`` (the task run again after its worker died: the tiles written since stay).

    ``layout``: variable → (dims, dtype); ``sizes``: dim → length (``integration`` the
    block's); chunks: 1 integration, every group, ``rows`` × ``columns`` pixels.
    """
    import zarr

    path = Path(path)
    if token and (path / "zarr.json").exists():
        try:
            if zarr.open_group(str(path), mode="r", zarr_format=3).attrs.get(TOKEN_ATTR) == token:
                return path
        except (OSError, ValueError, KeyError):
            pass
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
    # written last: a store with the token is complete
    group.attrs[TOKEN_ATTR] = token
    return path


class _Layout:
    """One array of a checkpoint as its ``zarr.json`` describes it: shape, chunk shape, dtype,
    dims.  The stores :func:`create` makes have one codec, little-endian bytes, so a chunk file
    is the chunk's values as they lie in memory (edge chunks at full size), which :func:`write`
    and :func:`read` handle directly (zarr reads the same files)."""

    def __init__(self, path, name: str):
        import json

        self.dir = Path(path) / name
        meta = json.loads((self.dir / "zarr.json").read_text())
        self.shape = tuple(meta["shape"])
        self.chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        codecs = meta.get("codecs", [])
        if [c.get("name") for c in codecs] != ["bytes"] or \
                codecs[0].get("configuration", {}).get("endian", "little") != "little":
            raise ValueError(f"{self.dir}: not a checkpoint array (codecs {codecs})")
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.dims = tuple(meta["attributes"][DIMS_ATTR])

    def chunk_file(self, idx) -> Path:
        return self.dir.joinpath("c", *map(str, idx))

    def grid(self, region) -> list:
        """The chunks a region (one slice per axis) covers, with each one's slice of the
        region and of the chunk: ``[(index, region slices, chunk slices)]``."""
        import itertools

        axes = []
        for (a, b), c in zip(region, self.chunks):
            axes.append([(k, slice(max(a, k * c) - a, min(b, (k + 1) * c) - a),
                          slice(max(a, k * c) - k * c, min(b, (k + 1) * c) - k * c))
                         for k in range(a // c, -(-b // c))] if b > a else [])
        out = []
        for combo in itertools.product(*axes):
            out.append((tuple(k for k, _, _ in combo), tuple(r for _, r, _ in combo),
                        tuple(q for _, _, q in combo)))
        return out


def _region(layout: _Layout, i0, i1, ys: slice, xs: slice) -> tuple:
    out = []
    for d, n in zip(layout.dims, layout.shape):
        s = slice(i0, i1) if d == INTEGRATION else ys if d == "y" else xs if d == "x" else slice(None)
        a, b, _ = s.indices(n)
        out.append((a, b))
    return tuple(out)


def write(path, arrays: dict, ys: slice, xs: slice, i0: int | None = None, i1: int | None = None) -> None:
    """Write a tile's arrays (variable → numpy array, all integrations of the block, or
    integrations ``i0:i1``) at its pixels ``ys``/``xs``, which must cover whole chunks (the
    tiles are the chunks, or whole frames); each chunk file is written aside and renamed, so
    a file is never seen half written."""
    import os

    for name, arr in arrays.items():
        lay = _Layout(path, name)
        if lay.dims[-2:] != IMAGE_DIMS:
            raise ValueError(f"{path}: {name} has dims {lay.dims}, not ending in (y, x)")
        region = _region(lay, i0, i1, ys, xs)
        arr = np.asarray(arr, lay.dtype)
        if arr.shape != tuple(b - a for a, b in region):
            raise ValueError(f"{path}: {name} of shape {arr.shape} written to {region}")
        for idx, r, q in lay.grid(region):
            if any(sl.start != 0 or (sl.stop != c and k * c + sl.stop != n)
                   for sl, c, k, n in zip(q, lay.chunks, idx, lay.shape)):
                raise ValueError(f"{path}: {name}: the region {region} cuts chunk {idx}")
            # an edge chunk is stored at full size, the part beyond the array left at 0
            block = np.zeros(lay.chunks, lay.dtype)
            block[q] = arr[r]
            target = lay.chunk_file(idx)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(block.tobytes())
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, target)


def names(path) -> list[str]:
    """The variables a checkpoint holds."""
    import zarr

    return sorted(zarr.open_group(str(path), mode="r", zarr_format=3).array_keys())


def read(path, i0: int, i1: int, ys: slice, xs: slice, variables=None) -> dict[str, np.ndarray]:
    """Integrations ``i0:i1`` of the block and pixels ``ys``/``xs`` of every variable (or of
    ``variables``); (y, x) images are read at ``ys``/``xs`` only.  A missing chunk raises
    :class:`~daskramp.io.store.MissingChunkError`, a short one :class:`~daskramp.io.store.StoreError`."""
    out = {}
    for name in variables or names(path):
        lay = _Layout(path, name)
        region = _region(lay, i0, i1, ys, xs)
        res = np.empty(tuple(b - a for a, b in region), lay.dtype)
        nbytes = int(np.prod(lay.chunks)) * lay.dtype.itemsize
        for idx, r, q in lay.grid(region):
            f = lay.chunk_file(idx)
            dest = res[r]
            whole = all(sl.start == 0 and sl.stop == c for sl, c in zip(q, lay.chunks))
            try:
                if whole and dest.flags.c_contiguous:
                    # straight into the result: no second array to allocate and copy
                    with open(f, "rb") as fh:
                        got = fh.readinto(memoryview(dest).cast("B"))
                        extra = fh.read(1)
                    if got != nbytes or extra:
                        raise StoreError(f"{f}: not the {nbytes} bytes of a chunk of {name!r}")
                    continue
                block = np.fromfile(f, dtype=lay.dtype)
            except FileNotFoundError:
                raise MissingChunkError(f"{path}: array {name!r} chunk {'/'.join(map(str, idx))} is "
                                        f"missing; the checkpoint was not written whole") from None
            if block.nbytes != nbytes:
                raise StoreError(f"{f}: {block.nbytes} bytes, a chunk of {name!r} has {nbytes}")
            res[r] = block.reshape(lay.chunks)[q]
        out[name] = res
    return out


def remove(path) -> None:
    """Delete a checkpoint store (no error when it is gone)."""
    shutil.rmtree(path, ignore_errors=True)
