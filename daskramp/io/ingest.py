"""Convert the uncal FITS segments of one exposure into one Zarr v3 store.

Layout
------
``data`` uint16 ``(integration, group, y, x)`` in DN, plus ``zeroframe`` when the files carry
one, the coordinates of :mod:`daskramp.dims` (``segment``, ``integration_number``, INT_TIMES
columns, detector ``y``/``x``) and the exposure keywords as root attributes.

* **Shards** ``(k, all groups, all y, all x)``: ``k`` integrations, ``k`` = ``chunk_mb`` MiB
  divided by the bytes of one integration (at least 1), counted from integration 0, so the
  boundaries depend only on the shape and ``chunk_mb``.  One dask task reads the ``k``
  integrations (from one or two segment files) and writes the whole shard; no two tasks touch
  the same shard, so any scheduler may run them in parallel.
* **Inner chunks** ``(k, all groups, all y, x_inner)`` inside each shard: a pixel tile holding
  every integration (what jump and ramp_fit need, see ``docs/design.md``) is read straight from
  the store without decoding whole frames.  ``x_inner`` defaults to the power of two that makes
  an inner chunk about ``chunk_mb / 16`` (4 MiB by default), at least 16 columns.
* **Codec** (``codec="auto"``): blosc zstd level 1, byte shuffle, 1 MiB blocks, then zarr's
  ``crc32c`` codec, which every array of the store ends with (the inner chunks of the shards
  too; the shard index has its own): a flipped byte is a :class:`~daskramp.io.store.
  CorruptChunkError` naming the chunk, not wrong data.  Every chunk is written, including
  chunks of the fill value only, so a missing file is a loss (see :mod:`daskramp.io.store`).
* Sharding versus plain chunks of the inner shape (``--sharding``, full SOSS segment, one
  process): writing 5.8 s vs 6.3 s, 49 vs 394 files, reading one 128-column tile of all 158
  integrations 0.27 s vs 0.87 s.  Shards are the default.

Codec measurements (``python benchmarks/ingest.py --codecs``): one 7-integration shard
(7 × 9 × 256 × 2048, 66 MB) of synthetic SOSS ramps (bias ≈ 12 000 DN with 300 DN
pixel-to-pixel spread, 10 DN read noise per read, 2–60 DN/group signal), one thread on the
project's 2-core machine while it was busy (speeds ± 30 %, ratios exact):

=========================  =====  ===========  ===========
codec                      ratio  encode MB/s  decode MB/s
=========================  =====  ===========  ===========
none                       1.00   300–850      1350–3000
blosc-lz4-shuffle          1.27   165–370      670–1240
blosc-lz4-bitshuffle       1.38   240–340      600–730
blosc-zstd1-shuffle        1.81   190–220      450–530
blosc-zstd1-bitshuffle     1.66   145–175      380–470
blosc-zstd3-bitshuffle     1.69   125–140      400–780
zstd1                      1.31   160–340      300–670
zstd3                      1.31   130–340      430–680
=========================  =====  ===========  ===========

blosc's own block size matters more than the level: with its automatic choice (small blocks at
low levels) zstd-bitshuffle gave only 1.23, hence the fixed block sizes.  blosc-zstd1-shuffle
and blosc-lz4-bitshuffle tie on ratio × encode speed (≈ 400 in a side-by-side run); zstd
keeps 24 % less on disk and still encodes faster than the 150 MB/s-per-core target, so it is
the default.

Writing: each task encodes its shard's inner chunks with the array's own codecs and writes
the shard file whole (:func:`_shard_writer`; byte-identical to what zarr writes, checked in
``tests/io/test_ingest.py``), because zarr's general write path (an event loop and a thread
pool per call) costs more than the compression itself inside a busy worker.

Resumability: the store is built in ``<store>.partial`` with one completion marker per shard
(:mod:`daskramp.io.store`); a rerun with the same inputs and options writes only shards without
a marker, and the finished store is byte-for-byte the same as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..dims import DATA, ZEROFRAME, ExposureError, make_exposure
from . import uncal
from .store import (
    Progress,
    encode_chunk,
    finalize_store,
    plain_codecs,
    prepare_partial,
    with_checksum,
)

__all__ = ["CODECS", "DEFAULT_CODEC", "ingest", "plan_layout"]

log = logging.getLogger(__name__)

DEFAULT_CODEC = "blosc-zstd1-shuffle"


def _blosc(cname, clevel, shuffle, blocksize):
    from zarr.codecs import BloscCodec

    # a fixed blocksize keeps the bytes identical whatever blosc's automatic choice would be
    return [
        BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, typesize=2, blocksize=blocksize)
    ]


def _zstd(level):
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=level)]


#: codec name → function returning the zarr v3 compressors (crc32c is appended to each when
#: the store is created)
CODECS = {
    "none": lambda: [],
    "blosc-lz4-shuffle": lambda: _blosc("lz4", 5, "shuffle", 2**18),
    "blosc-lz4-bitshuffle": lambda: _blosc("lz4", 5, "bitshuffle", 2**18),
    "blosc-zstd1-shuffle": lambda: _blosc("zstd", 1, "shuffle", 2**20),
    "blosc-zstd1-bitshuffle": lambda: _blosc("zstd", 1, "bitshuffle", 2**20),
    "blosc-zstd3-bitshuffle": lambda: _blosc("zstd", 3, "bitshuffle", 2**20),
    "zstd1": lambda: _zstd(1),
    "zstd3": lambda: _zstd(3),
}


def _codec_name(codec) -> str:
    name = DEFAULT_CODEC if codec in (None, "auto") else codec
    if name not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose 'auto' or one of {sorted(CODECS)}")
    return name


def plan_layout(shape, *, chunk_mb: float = 64, x_inner: int | None = None) -> dict:
    """Shard and inner-chunk shapes for a raw exposure of ``shape`` (nints, ngroups, ny, nx).

    Returns ``{"shard": (k, G, ny, nx_shard), "chunk": (k, G, ny, x_inner)}`` where
    ``nx_shard`` is ``nx`` rounded up to a multiple of ``x_inner`` (zarr needs whole inner
    chunks in a shard; the part past the array edge is never stored).
    """
    nint, ngroup, ny, nx = (int(n) for n in shape)
    if chunk_mb <= 0:
        raise ValueError(f"chunk_mb must be positive, got {chunk_mb}")
    frame_bytes = 2 * ngroup * ny * nx
    k = min(nint, uncal.default_chunk_integrations(frame_bytes, int(chunk_mb * 2**20)))
    if x_inner is None:
        column_bytes = 2 * k * ngroup * ny
        target = max(1, int(chunk_mb * 2**20 / 16) // column_bytes)
        x_inner = max(16, 1 << (target.bit_length() - 1))
    x_inner = int(min(max(1, x_inner), nx))
    nx_shard = math.ceil(nx / x_inner) * x_inner
    return {"shard": (k, ngroup, ny, nx_shard), "chunk": (k, ngroup, ny, x_inner)}


def _parts(segs, i0, i1):
    """(path, offset, frame_shape, file_i0, file_i1, out_i0) pieces of global integrations i0:i1."""
    out = []
    for s in segs:
        a, b = s.intstart - 1, s.intend  # global [a, b)
        lo, hi = max(a, i0), min(b, i1)
        if lo < hi:
            out.append((s.path, s.offset, s.frame_shape, lo - a, hi - a, lo - i0))
    return out


def _zf_parts(segs, i0, i1):
    out = []
    for s in segs:
        a, b = s.intstart - 1, s.intend
        lo, hi = max(a, i0), min(b, i1)
        if lo < hi:
            out.append((s.path, s.zeroframe[0], s.zeroframe[1][1:], lo - a, hi - a, lo - i0))
    return out


def _read_parts(parts, n, frame_shape):
    block = np.empty((n, *frame_shape), np.uint16)
    for path, offset, frame, f0, f1, o0 in parts:
        uncal.read_frames(path, offset, frame, f0, f1, out=block[o0 : o0 + f1 - f0])
    return block


def _shard_writer(arr):
    """A function ``block -> bytes`` that encodes one whole shard of ``arr`` exactly as zarr
    does, or None when the layout is not the one :func:`ingest` makes.

    zarr's own write path costs more than the compression itself in a busy worker (its event
    loop and thread pool per call); the shard file is simple (inner chunks, then their
    offsets and lengths and a crc32c), so the task builds it
    (:func:`daskramp.io.store.encode_chunk` per inner chunk).
    Only shards whose inner chunks split the last axis alone, with the codecs :data:`CODECS`
    make (and crc32c), are built here.  Every inner chunk is stored, those of the fill value
    only and those past the array edge included, as zarr does with ``write_empty_chunks``;
    the bytes equal zarr's then (``tests/io/test_ingest.py``, ``tests/io/test_integrity.py``).
    """
    import google_crc32c
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    meta = arr.metadata
    codecs = getattr(meta, "codecs", ())
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    shard = tuple(meta.chunk_grid.chunk_shape)
    inner = tuple(sc.chunk_shape)
    if (
        inner[:-1] != shard[:-1]
        or len(shard) != 4
        or shard[1:-1] != tuple(arr.shape[1:-1])
        or shard[-1] < arr.shape[-1]
        or shard[-1] % inner[-1]
        or arr.dtype != np.uint16
        or sc.index_location != ShardingCodecIndexLocation.end
        or not plain_codecs(sc.codecs)
        or len(sc.index_codecs) != 2
        or not isinstance(sc.index_codecs[0], BytesCodec)
        or getattr(sc.index_codecs[0].endian, "value", sc.index_codecs[0].endian) != "little"
        or not isinstance(sc.index_codecs[1], Crc32cCodec)
    ):
        return None
    per = shard[-1] // inner[-1]

    def encode(block: np.ndarray) -> bytes:
        pieces, table = [], np.full((per, 2), 2**64 - 1, np.uint64)
        offset = 0
        for j in range(per):
            x0 = j * inner[-1]
            # past the array edge the chunk is the fill value only: stored too, as zarr does
            raw = encode_chunk(block[..., x0: x0 + inner[-1]], inner, meta.fill_value, sc.codecs)
            table[j] = (offset, len(raw))
            pieces.append(raw)
            offset += len(raw)
        index_bytes = table.astype("<u8").tobytes()
        crc = np.array([google_crc32c.value(index_bytes)], "<u4").tobytes()
        return b"".join(pieces) + index_bytes + crc

    return encode


#: zarr array config of every write: chunks of the fill value only are stored too
_WRITE = {"write_empty_chunks": True}


def _write_shard(partial: str, key: str, i0: int, i1: int, parts, zf_parts) -> str:
    """Read integrations i0:i1 from the segment files and write them as whole shards."""
    import zarr

    # every chunk is written, those of the fill value only too (an absent one is a loss)
    arr = zarr.open_array(store=partial, path=DATA, mode="r+", zarr_format=3).with_config(_WRITE)
    block = _read_parts(parts, i1 - i0, arr.shape[1:])
    k = arr.metadata.chunk_grid.chunk_shape[0]
    encode = _shard_writer(arr) if i0 % k == 0 and (i1 - i0 == k or i1 == arr.shape[0]) else None
    if encode is None:
        arr[i0:i1] = block
    else:
        if i1 - i0 < k:
            # the last shard: its chunks are stored whole, padded with the fill value
            whole = np.full((k, *block.shape[1:]), np.uint16(int(arr.metadata.fill_value)), np.uint16)
            whole[: i1 - i0] = block
            block = whole
        data = encode(block)
        path = Path(partial) / DATA / arr.metadata.encode_chunk_key((i0 // k, 0, 0, 0))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    del block
    if zf_parts:
        zarr_zf = zarr.open_array(store=partial, path=ZEROFRAME, mode="r+",
                                  zarr_format=3).with_config(_WRITE)
        zarr_zf[i0:i1] = _read_parts(zf_parts, i1 - i0, zarr_zf.shape[1:])
    Progress(Path(partial)).mark_done(key)
    return key


def _coord_compressors() -> tuple:
    from zarr.codecs import ZstdCodec

    return with_checksum([ZstdCodec(level=1)])


def _template(segs, layout, codec_name, plan, sharded: bool):
    """The store's Dataset with a lazy placeholder for the pixel arrays (never computed)."""
    import dask.array as da

    nint = segs[0].header["NINTS"]
    shape = (nint, *segs[0].frame_shape)
    data = da.zeros(shape, dtype=np.uint16, chunks=(layout["chunk"][0], -1, -1, -1))
    zeroframe = None
    has_zf = all(s.zeroframe is not None for s in segs)
    if has_zf:
        zeroframe = da.zeros((nint, shape[2], shape[3]), dtype=np.uint16)
    segment = np.concatenate([np.full(s.shape[0], s.exsegnum, np.int32) for s in segs])
    attrs = uncal.exposure_attrs(segs)
    ds = make_exposure(
        data, attrs, segment=segment, int_times=uncal.exposure_int_times(segs), zeroframe=zeroframe
    )
    ds = ds.drop_vars(["groupdq", "pixeldq"])
    ds.attrs["daskramp_ingest"] = {k: plan[k] for k in ("sources", "codec", "chunk", "shard")}
    compressors = with_checksum(CODECS[codec_name]())
    # every array ends with crc32c, the coordinates too
    enc = {name: {"compressors": _coord_compressors()} for name in ds.variables}
    enc[DATA] = {"chunks": layout["chunk"], "compressors": compressors, "fill_value": 0}
    if sharded:
        enc[DATA]["shards"] = layout["shard"]
    else:
        enc[DATA]["chunks"] = layout["chunk"]
    if has_zf:
        k = layout["chunk"][0]
        enc[ZEROFRAME] = {
            "chunks": (k, shape[2], shape[3]),
            "compressors": with_checksum(CODECS[codec_name]()),
            "fill_value": 0,
        }
    return ds, enc, has_zf


def ingest(
    uncal_files,
    store,
    *,
    chunk_mb: float = 64,
    codec: str = "auto",
    overwrite: bool = False,
    x_inner: int | None = None,
    sharded: bool = True,
) -> Path:
    """Convert the uncal segments of one exposure into one Zarr v3 store (resumable).

    Parameters
    ----------
    uncal_files : path or sequence of paths
        Segment files of one exposure, in any order (checked and stitched by INTSTART).
    store : path
        Directory of the store to create.  It appears only once complete; meanwhile the work
        is in ``<store>.partial``.
    chunk_mb : float
        Target MiB of raw data per shard (integrations per shard = chunk_mb / integration size,
        at least one; one task per shard).
    codec : str
        ``"auto"`` (= ``DEFAULT_CODEC``) or a name in :data:`CODECS`.
    overwrite : bool
        Replace an existing complete store (it stays readable until the new one is complete).
    x_inner : int, optional
        Columns per inner chunk; default from ``chunk_mb`` (see the module docstring).
    sharded : bool
        Write shards holding inner chunks (default) or plain chunks of the inner shape.

    Returns
    -------
    pathlib.Path
        The complete store.

    The shard tasks run on the active dask scheduler (a ``distributed.Client`` if one is
    registered).  If some fail, the exception propagates and the partial store keeps the
    finished shards; calling ``ingest`` again with the same arguments resumes.
    """
    import dask

    final = Path(store)
    segs = uncal.scan_segments(uncal_files)
    nint = segs[0].header["NINTS"]
    shape = (nint, *segs[0].frame_shape)
    layout = plan_layout(shape, chunk_mb=chunk_mb, x_inner=x_inner)
    codec_name = _codec_name(codec)
    plan = {
        "version": 2,  # 2: crc32c in every array, every chunk written
        "sources": [
            {"name": Path(s.path).name, "size": s.size, "intstart": s.intstart, "intend": s.intend}
            for s in segs
        ],
        "mtimes": [s.mtime_ns for s in segs],
        "shape": list(shape),
        "chunk": list(layout["chunk"]),
        "shard": list(layout["shard"]) if sharded else None,
        "codec": codec_name,
    }
    partial, resume = prepare_partial(final, plan, overwrite=overwrite)
    progress = Progress(partial)
    if not resume:
        ds, enc, _ = _template(segs, layout, codec_name, plan, sharded)
        try:
            ds.to_zarr(
                str(partial),
                mode="w-",
                compute=False,
                zarr_format=3,
                encoding=enc,
                consolidated=False,
                safe_chunks=False,  # the placeholder is never written through xarray
                write_empty_chunks=True,
            )
        except (OSError, ValueError, TypeError) as err:
            raise ExposureError(f"{partial}: cannot create the store ({err})") from err
        progress.write_plan(plan)  # last: a partial store without a plan is started afresh
    done = progress.done()
    has_zf = all(s.zeroframe is not None for s in segs)
    tasks = []
    k = layout["chunk"][0]
    blocks = uncal.integration_chunks(nint, k)
    for b, (i0, i1) in enumerate(blocks):
        key = f"{DATA}-{b:06d}"
        if key in done:
            continue
        parts = _parts(segs, i0, i1)
        zf = _zf_parts(segs, i0, i1) if has_zf else None
        tasks.append(dask.delayed(_write_shard, pure=False)(str(partial), key, i0, i1, parts, zf))
    log.info(
        "%s: %d of %d shards already written, writing %d",
        final,
        len(blocks) - len(tasks),
        len(blocks),
        len(tasks),
    )
    if tasks:
        dask.compute(*tasks)
    missing = len(blocks) - len(progress.done() & {f"{DATA}-{b:06d}" for b in range(len(blocks))})
    if missing:
        raise ExposureError(f"{partial}: {missing} shards were not written; rerun to resume")
    return finalize_store(partial, final, overwrite=overwrite)
