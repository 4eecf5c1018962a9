"""Zarr exposure stores: opening them, and the write discipline every store writer follows.

A store is built under ``<store>.partial`` and only renamed to ``<store>`` when every chunk is
written, so a path without the suffix is always complete.  Inside the partial store each task
that finishes its whole chunks drops a marker file in ``_daskramp_progress/``; a rerun reads the
markers and writes only what is missing.  Finalising removes the markers, checks that every
chunk file the arrays must hold is there, writes the chunk manifest (root attribute
``daskramp_chunks``: array → number of chunk or shard files), sets the root attribute
``daskramp_complete = True`` (written last) and renames.  Readers refuse a store without that
attribute.

Verified chunks: every array ends its codec chain with zarr's ``crc32c`` codec (a sharded
array's inner chunks too; its shard index has its own), and every chunk is written, including
chunks of the fill value only, so a chunk file that is absent was lost.  :func:`open_exposure`
lists the chunk files against the manifest before anything is read (:func:`verify_store`), and
the readers (:class:`VerifiedArray`, :func:`decode_chunk`) raise :class:`MissingChunkError` or
:class:`CorruptChunkError` naming the array and chunk instead of returning the fill value or
zarr's bare checksum error.  Stores written before checksums (no manifest) are refused
(:class:`UnverifiedStoreError`).

The helpers here (:class:`Progress`, :func:`prepare_partial`, :func:`finalize_store`,
:func:`is_complete`) are meant to be reused by other store writers (e.g. calibrated products).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..dims import (
    DATA,
    GROUP,
    INT_TIMES_COLUMNS,
    INTEGRATION,
    RAMP_DIMS,
    SEGMENT,
    ZEROFRAME,
    ExposureError,
    X,
    Y,
    make_exposure,
    validate,
)
from .uncal import open_uncal

COMPLETE_ATTR = "daskramp_complete"
#: root attribute written when a store is finalised: array → number of chunk (shard) files
CHUNKS_ATTR = "daskramp_chunks"
PARTIAL_SUFFIX = ".partial"
PROGRESS_DIR = "_daskramp_progress"
PLAN_FILE = "plan.json"

__all__ = [
    "COMPLETE_ATTR",
    "CHUNKS_ATTR",
    "StoreError",
    "IncompleteStoreError",
    "CorruptChunkError",
    "MissingChunkError",
    "UnverifiedStoreError",
    "VerifiedArray",
    "chunk_manifest",
    "verify_store",
    "with_checksum",
    "Progress",
    "partial_path",
    "prepare_partial",
    "finalize_store",
    "is_complete",
    "open_store",
    "open_exposure",
]


class StoreError(ExposureError):
    """A Zarr store is missing, unreadable or does not hold an exposure."""


class IncompleteStoreError(StoreError):
    """A store was not marked complete: its writing was interrupted or is still running."""


class CorruptChunkError(StoreError):
    """A chunk's bytes do not match their crc32c (names the store, array and chunk key)."""


class MissingChunkError(StoreError):
    """A chunk file a store must hold is absent (names the store, array and chunk key)."""


class UnverifiedStoreError(StoreError):
    """A store written by an older daskramp, without chunk checksums and manifest."""


def partial_path(store) -> Path:
    """Where a store is built before it is complete: ``<store>.partial``."""
    store = Path(store)
    return store.with_name(store.name + PARTIAL_SUFFIX)


class Progress:
    """Per-chunk completion markers of a store being written.

    A marker is an empty file created only after its chunk (or shard) is fully written, so a
    task interrupted mid-write leaves no marker and is redone.  Several processes may create
    markers at once: each task owns distinct chunk ids.
    """

    def __init__(self, partial: Path):
        self.dir = Path(partial) / PROGRESS_DIR

    def _marker(self, key) -> Path:
        return self.dir / f"{key}.done"

    def is_done(self, key) -> bool:
        return self._marker(key).exists()

    def mark_done(self, key) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{key}.{os.getpid()}.tmp"
        tmp.touch()
        os.replace(tmp, self._marker(key))

    def done(self) -> set[str]:
        if not self.dir.exists():
            return set()
        return {p.name[: -len(".done")] for p in self.dir.iterdir() if p.name.endswith(".done")}

    def read_plan(self) -> dict | None:
        p = self.dir / PLAN_FILE
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def write_plan(self, plan: Mapping) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (PLAN_FILE + ".tmp")
        tmp.write_text(json.dumps(plan, sort_keys=True, indent=1))
        os.replace(tmp, self.dir / PLAN_FILE)


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj, sort_keys=True))


def prepare_partial(store, plan: Mapping, *, overwrite: bool = False) -> tuple[Path, bool]:
    """Get ``<store>.partial`` ready for writing under ``plan`` (a JSON-able description).

    Returns ``(partial_path, resume)``: ``resume`` is True when a partial store written with the
    same plan exists (its finished chunks are kept); a partial store with another plan is
    removed.  A complete store at ``store`` raises :class:`StoreError` unless ``overwrite``.
    """
    final = Path(store)
    partial = partial_path(final)
    if final.exists() and not overwrite:
        raise StoreError(f"{final}: store exists; pass overwrite=True (daskramp ingest: --overwrite) to replace it")
    if partial.exists():
        old = Progress(partial).read_plan()
        if old is not None and old == _json_roundtrip(dict(plan)):
            return partial, True
        if old is None and not (partial / "zarr.json").exists() and any(partial.iterdir()):
            raise StoreError(f"{partial}: exists and was not written by daskramp; remove it first")
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    return partial, False


def finalize_store(partial, store, *, overwrite: bool = False) -> Path:
    """Mark ``partial`` complete and move it to ``store`` (the completion mark comes last).

    First every array's chunk files are listed: when one is missing (a write was lost) the
    partial store is removed, so that the next run writes it afresh, and
    :class:`MissingChunkError` is raised; an array without crc32c raises :class:`StoreError`.
    Then the chunk manifest (:data:`CHUNKS_ATTR`) is written, and the completion mark.
    """
    import zarr

    partial, final = Path(partial), Path(store)
    shutil.rmtree(partial / PROGRESS_DIR, ignore_errors=True)
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    manifest = chunk_manifest(group)
    try:
        _verify(partial, group, manifest, checksums=False,
                remedy="a write was lost: the store was not marked complete and was removed; "
                       "run again to write it")
    except StoreError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    group.attrs[CHUNKS_ATTR] = manifest
    group.attrs[COMPLETE_ATTR] = True
    consolidate(partial)
    if final.exists():
        if not overwrite:
            raise StoreError(f"{final}: store appeared while writing; not replacing it")
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    return final


def consolidate(path) -> None:
    """Write the consolidated metadata of the store at ``path`` (every array's metadata in
    the root ``zarr.json``), so that ``xr.open_zarr(path)`` opens it with one read and
    without a warning.  Written after the last attribute; daskramp's own checks
    (:func:`verify_store`) read the arrays' metadata files themselves, not this copy."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        # zarr: "Consolidated metadata is currently not part in the Zarr format 3 specification"
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=3)


# ------------------------------------------------------------------ chunks written by tasks


def plain_codecs(codecs) -> bool:
    """True for a codec chain :func:`encode_chunk` reproduces: little-endian bytes, then
    blosc/zstd compressors and crc32c."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

    codecs = tuple(codecs)
    return (
        len(codecs) >= 1
        and isinstance(codecs[0], BytesCodec)
        and getattr(codecs[0].endian, "value", codecs[0].endian) in (None, "little")
        and all(isinstance(c, (BloscCodec, ZstdCodec, Crc32cCodec)) for c in codecs[1:])
    )


def encode_chunk(part, chunk_shape, fill, codecs) -> bytes:
    """One chunk as zarr stores it with ``codecs`` (:func:`plain_codecs`).

    ``part`` may be smaller than ``chunk_shape`` at the array edge: it is padded with ``fill``,
    as zarr pads.  A chunk of the fill value only is encoded too (daskramp writes every chunk,
    as zarr does with ``write_empty_chunks``, so an absent chunk file means a lost one).
    Writers use this to store whole chunks from their own tasks, because zarr's general
    write path (event loop and thread pool per call) costs several times the encoding inside
    a busy worker.  crc32c (zarr's ``Crc32cCodec``: 4 bytes, little-endian, appended) is
    computed here on the encoded bytes without zarr's extra copy.
    """
    from types import SimpleNamespace

    import google_crc32c
    import numpy as np
    from zarr.codecs import Crc32cCodec
    from zarr.core.buffer import default_buffer_prototype

    part = np.asarray(part)
    chunk_shape = tuple(chunk_shape)
    fill = np.array(fill, part.dtype)
    if part.shape != chunk_shape:
        padded = np.full(chunk_shape, fill, part.dtype)
        padded[tuple(slice(0, n) for n in part.shape)] = part
        part = padded
    raw = np.ascontiguousarray(part, part.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    spec = SimpleNamespace(prototype=default_buffer_prototype())
    buf = spec.prototype.buffer.from_array_like(raw)
    rest = tuple(codecs)[1:]
    crc = bool(rest) and isinstance(rest[-1], Crc32cCodec)
    for c in rest[:-1] if crc else rest:
        buf = c._encode_sync(buf, spec)
    if not crc:
        return buf.to_bytes()
    body = np.ascontiguousarray(buf.as_numpy_array()).reshape(-1).view(np.uint8)
    checksum = np.array([google_crc32c.value(body)], "<u4")
    return b"".join((memoryview(body), memoryview(checksum).cast("B")))


def decode_chunk(data: bytes, chunk_shape, dtype, codecs, *, where: tuple | None = None):
    """The inverse of :func:`encode_chunk`: one stored chunk's bytes as a numpy array of
    ``chunk_shape`` (read-only; copy it to modify).

    A crc32c that does not match (or bytes that do not decode to the chunk's size) raise
    :class:`CorruptChunkError`, naming ``where`` = ``(store, array name, chunk key)``.
    """
    from types import SimpleNamespace

    import numpy as np
    from zarr.codecs import Crc32cCodec
    from zarr.core.buffer import default_buffer_prototype

    def corrupt(detail):
        store, name, key = where if where is not None else ("<store>", "<array>", "<chunk>")
        return corrupt_chunk_error(store, name, key, detail,
                                   remedy=None if where is not None else "write it again")

    spec = SimpleNamespace(prototype=default_buffer_prototype())
    buf = spec.prototype.buffer.from_bytes(data)
    for c in reversed(tuple(codecs)[1:]):
        if isinstance(c, Crc32cCodec):
            raw = np.asarray(buf.as_numpy_array()).reshape(-1).view(np.uint8)
            if not _crc_ok(raw):
                raise corrupt("crc32c mismatch")
            buf = spec.prototype.buffer.from_array_like(raw[:-4])
        else:
            buf = c._decode_sync(buf, spec)
    raw = buf.as_numpy_array()
    dtype = np.dtype(dtype).newbyteorder("<")
    if raw.nbytes != dtype.itemsize * int(np.prod(chunk_shape)):
        raise corrupt(f"decodes to {raw.nbytes} bytes, not {dtype.itemsize * int(np.prod(chunk_shape))}")
    return np.frombuffer(raw, dtype).reshape(tuple(chunk_shape))


# ------------------------------------------------------------------ verified chunks
#
# Every array daskramp writes ends its bytes→bytes codec chain with zarr's ``crc32c`` codec (for
# sharded arrays: the inner chunks' chain; the shard index carries its own crc32c), every chunk
# is written (fill-value-only ones too: a chunk file absent means it was lost), and a store is
# finalised with a manifest (root attribute ``daskramp_chunks``: array → number of chunk or
# shard files) once every one of them was found on disk.


def checksum_codec():
    """zarr's crc32c codec: the last bytes→bytes codec of every array daskramp writes."""
    from zarr.codecs import Crc32cCodec

    return Crc32cCodec()


def with_checksum(compressors) -> tuple:
    """``compressors`` (zarr v3 bytes→bytes codecs; None for none) followed by crc32c."""
    from zarr.codecs import Crc32cCodec

    out = tuple(compressors or ())
    if out and isinstance(out[-1], Crc32cCodec):
        return out
    return (*out, checksum_codec())


def _chunk_codecs(meta) -> tuple:
    """The codec chain of one stored chunk (of a shard's inner chunks for a sharded array)."""
    from zarr.codecs import ShardingCodec

    codecs = tuple(getattr(meta, "codecs", ()))
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return tuple(codecs[0].codecs)
    return codecs


def _sharding(meta):
    from zarr.codecs import ShardingCodec

    codecs = tuple(getattr(meta, "codecs", ()))
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return codecs[0]
    return None


def has_checksums(meta) -> bool:
    """True when every stored byte of the array ``meta`` describes is covered by a crc32c:
    its chunks' codec chain ends with crc32c (a sharded array's inner chunks, and its shard
    index)."""
    from zarr.codecs import Crc32cCodec

    chain = _chunk_codecs(meta)
    if not chain or not isinstance(chain[-1], Crc32cCodec):
        return False
    sc = _sharding(meta)
    return sc is None or any(isinstance(c, Crc32cCodec) for c in sc.index_codecs)


def chunk_keys(meta) -> list[str]:
    """Keys (relative to the array's directory, e.g. ``c/3/0/0/0``) of every chunk file the
    array ``meta`` describes must hold: one per chunk (per shard when sharded), C order."""
    import itertools
    import math

    grid = tuple(meta.chunk_grid.chunk_shape)
    counts = [math.ceil(n / c) if c else 0 for n, c in zip(meta.shape, grid)]
    return [meta.encode_chunk_key(idx) for idx in itertools.product(*(range(n) for n in counts))]


def _listed(array_dir: Path) -> set[str]:
    """Every file under ``array_dir`` except its metadata, as '/'-separated relative keys."""
    out = set()
    root = str(array_dir)
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in files:
            out.add(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    out.discard("zarr.json")
    return out


def _remedy(store) -> str:
    """What to do about a damaged store: how it was made (read from its root attributes)."""
    try:
        attrs = json.loads((Path(store) / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        attrs = {}
    if "daskramp_ingest" in attrs:
        return "re-run daskramp ingest with --overwrite"
    if "daskramp_provenance" in attrs:
        return "re-run daskramp run with --overwrite"
    return "write the store again"


def _missing_error(store, name: str, missing: list[str], total: int, remedy: str | None):
    shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
    remedy = _remedy(store) if remedy is None else remedy
    return MissingChunkError(
        f"{store}: array {name!r} is missing {len(missing)} of {total} chunks ({shown}); "
        f"the store is damaged; {remedy}"
    )


def corrupt_chunk_error(store, name: str, key: str, detail: str = "crc32c mismatch",
                        remedy: str | None = None) -> CorruptChunkError:
    """The :class:`CorruptChunkError` for chunk ``key`` of array ``name`` of ``store``."""
    remedy = _remedy(store) if remedy is None else remedy
    return CorruptChunkError(f"{store}: array {name!r} chunk {key} is corrupt ({detail}); {remedy}")


def missing_chunk_error(store, name: str, key: str, remedy: str | None = None):
    """The :class:`MissingChunkError` for one chunk file found absent while reading."""
    remedy = _remedy(store) if remedy is None else remedy
    return MissingChunkError(f"{store}: array {name!r} chunk {key} is missing; the store is "
                             f"damaged; {remedy}")


def _crc_ok(raw) -> bool:
    """True when the last 4 bytes of ``raw`` (uint8 array) are the crc32c of the rest, as
    zarr's crc32c codec appends it."""
    import google_crc32c

    if raw.size < 4:
        return False
    return google_crc32c.value(raw[:-4]) == int(raw[-4:].view("<u4")[0])


def _plain_index(sc) -> bool:
    """True for a shard index daskramp reads itself: at the end, little-endian, crc32c."""
    from zarr.codecs import BytesCodec, Crc32cCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    ic = tuple(sc.index_codecs)
    return (sc.index_location == ShardingCodecIndexLocation.end and len(ic) == 2
            and isinstance(ic[0], BytesCodec)
            and getattr(ic[0].endian, "value", ic[0].endian) in (None, "little")
            and isinstance(ic[1], Crc32cCodec))


def _shard_index(meta, raw):
    """The (offset, length) table of the shard whose bytes end with ``raw`` (uint8 array; the
    whole shard, or at least its index), or None when its crc32c does not match."""
    import math

    sc = _sharding(meta)
    per = tuple(s // c for s, c in zip(meta.chunk_grid.chunk_shape, sc.chunk_shape))
    size = 16 * math.prod(per) + 4
    if raw.size < size:
        return None
    tail = raw[raw.size - size:]
    if not _crc_ok(tail):
        return None
    return tail[:-4].view("<u8").reshape(*per, 2), per


def _check_chunk_file(store, name: str, meta, key: str, data: bytes | None = None,
                      *, index_only: bool = False, remedy: str | None = None) -> None:
    """Check one stored chunk (or shard) file against its crc32c; raise the store errors.

    For a shard: its index (crc32c, and an entry for every inner chunk: daskramp writes
    them all) and, unless ``index_only``, every inner chunk's crc32c.
    """
    import itertools

    import numpy as np

    path = Path(store) / name / key
    sc = _sharding(meta)
    if sc is not None and not _plain_index(sc):
        sc = None  # an index daskramp does not write: its inner chunks are left to zarr
        index_only = True
    try:
        if data is None and index_only and sc is None:
            path.stat()
            return
        if data is None:
            if sc is not None and index_only:
                with open(path, "rb") as f:
                    end = f.seek(0, os.SEEK_END)
                    # the index at the end: 16 bytes per inner chunk, + 4 of crc32c
                    per = [s // c for s, c in zip(meta.chunk_grid.chunk_shape, sc.chunk_shape)]
                    size = 16 * int(np.prod(per)) + 4
                    f.seek(max(0, end - size))
                    data = f.read()
            else:
                data = path.read_bytes()
    except FileNotFoundError:
        raise missing_chunk_error(store, name, key, remedy) from None
    raw = np.frombuffer(data, np.uint8)
    if sc is None:
        if not index_only and not _crc_ok(raw):
            raise corrupt_chunk_error(store, name, key, remedy=remedy)
        return
    found = _shard_index(meta, raw)
    if found is None:
        raise corrupt_chunk_error(store, name, key, "crc32c mismatch in the shard index", remedy)
    table, per = found
    absent = np.all(table == np.uint64(2**64 - 1), axis=-1)
    if absent.any():
        inner = tuple(int(i) for i in np.argwhere(absent)[0])
        raise corrupt_chunk_error(store, name, key, f"inner chunk {inner} is absent from the "
                                  "shard", remedy)
    if index_only:
        return
    body = raw.size - 16 * table[..., 0].size - 4
    for inner in itertools.product(*(range(p) for p in per)):
        off, length = (int(v) for v in table[inner])
        if off + length > body or not _crc_ok(raw[off: off + length]):
            raise corrupt_chunk_error(store, name, key, f"crc32c mismatch in inner chunk {inner}",
                                      remedy)


def chunk_manifest(group) -> dict[str, int]:
    """``{array: number of chunk (or shard) files it must hold}`` for every array of
    ``group`` (a zarr group); :class:`StoreError` for an array without crc32c."""
    out = {}
    for name, arr in sorted(group.arrays()):
        if not has_checksums(arr.metadata):
            raise StoreError(f"{group.store_path}: array {name!r} is stored without a crc32c "
                             "codec; daskramp writes every array with one")
        out[name] = len(chunk_keys(arr.metadata))
    return out


def _verify(path: Path, group, manifest: Mapping, *, checksums: bool, remedy: str | None) -> None:
    arrays = dict(group.arrays())
    extra = sorted(set(arrays) - set(manifest))
    if extra:
        raise StoreError(f"{path}: array {extra[0]!r} is not in the chunk manifest "
                         f"({CHUNKS_ATTR}); the store was changed after it was written")
    for name in sorted(manifest):
        if name not in arrays:
            raise StoreError(f"{path}: array {name!r} is missing; the store is damaged; "
                             f"{_remedy(path) if remedy is None else remedy}")
        meta = arrays[name].metadata
        keys = chunk_keys(meta)
        if len(keys) != int(manifest[name]):
            raise StoreError(f"{path}: array {name!r} should hold {manifest[name]} chunks but "
                             f"its metadata describe {len(keys)}; the store is damaged")
        if not has_checksums(meta):
            raise StoreError(f"{path}: array {name!r} has no crc32c codec; the store is damaged")
        present = _listed(path / name)
        missing = [k for k in keys if k not in present]
        if missing:
            raise _missing_error(path, name, missing, len(keys), remedy)
        if checksums:
            for key in keys:
                _check_chunk_file(path, name, meta, key, remedy=remedy)


def verify_store(path, *, checksums: bool = False) -> None:
    """Check that the store at ``path`` holds every chunk its manifest says it must.

    Lists the chunk files of every array (no chunk is read) and compares them with the
    chunk grid of its metadata and the root attribute ``daskramp_chunks`` written when the
    store was finalised.  With ``checksums``, every chunk file is also read and its crc32c
    checked (for shards: the index and every inner chunk).

    Raises
    ------
    UnverifiedStoreError
        The store has no manifest: written by a daskramp older than chunk checksums.
    MissingChunkError
        A chunk file is missing (names the array and the first missing keys).
    CorruptChunkError
        (``checksums``) a chunk's bytes do not match their crc32c.
    StoreError
        The store is unreadable, or its arrays do not match the manifest.
    """
    path = Path(path)
    group = _read_group(path)
    manifest = group.attrs.get(CHUNKS_ATTR)
    if not isinstance(manifest, Mapping):
        raise UnverifiedStoreError(
            f"{path}: was written without chunk checksums by an older daskramp; "
            f"{_remedy(path)}"
        )
    _verify(path, group, manifest, checksums=checksums, remedy=None)


class VerifiedArray:
    """A zarr array of a daskramp store as an array-like for ``dask.array.from_array`` (or to
    slice directly) whose reads never return the fill value for a lost chunk.

    Before zarr reads a region, the chunk (shard) files it covers are checked present (for a
    shard: its index read and every inner chunk found in it); a crc32c mismatch zarr reports
    while decoding is raised as :class:`CorruptChunkError` naming the chunk.  Picklable:
    only the store path and array name travel.
    """

    def __init__(self, store, name: str):
        self.store, self.name = str(store), str(name)
        arr = self._array()
        self.shape, self.dtype, self.ndim = tuple(arr.shape), arr.dtype, arr.ndim
        self.chunks = tuple(arr.chunks)

    def __getstate__(self):
        return {"store": self.store, "name": self.name}

    def __setstate__(self, state):
        self.__init__(state["store"], state["name"])

    def __dask_tokenize__(self):
        st = os.stat(Path(self.store) / self.name / "zarr.json")
        return ("daskramp-verified-array", self.store, self.name, st.st_ino, st.st_mtime_ns)

    def _array(self):
        st = os.stat(Path(self.store) / self.name / "zarr.json")
        ident = (self.store, self.name, st.st_ino, st.st_mtime_ns)
        arr = _READ_ARRAYS.get(ident)
        if arr is None:
            import zarr

            if len(_READ_ARRAYS) > 64:
                _READ_ARRAYS.clear()
            arr = _READ_ARRAYS[ident] = zarr.open_array(
                str(Path(self.store) / self.name), mode="r", zarr_format=3)
        return arr

    def _keys(self, meta, key) -> list[str]:
        """Keys of the chunk (shard) files region ``key`` covers."""
        import itertools

        grid = tuple(meta.chunk_grid.chunk_shape)
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        for k, n, c in zip(key, self.shape, grid):
            if isinstance(k, slice) and k.step in (None, 1):
                a, b, _ = k.indices(n)
                ranges.append(range(a // c, -(-b // c)) if b > a else range(0))
            elif hasattr(k, "__index__"):  # an int
                i = int(k) % n if n else 0
                ranges.append(range(i // c, i // c + 1))
            else:  # anything else: every chunk along the axis
                ranges.append(range(-(-n // c)))
        return [meta.encode_chunk_key(idx) for idx in itertools.product(*ranges)]

    def __getitem__(self, key):
        arr = self._array()
        meta = arr.metadata
        keys = self._keys(meta, key)
        for k in keys:
            _check_chunk_file(self.store, self.name, meta, k, index_only=True)
        try:
            return arr[key]
        except ValueError as err:
            if "checksum" not in str(err).lower():
                raise
            for k in keys:  # which chunk: read through daskramp's own checks
                _check_chunk_file(self.store, self.name, meta, k)
            raise CorruptChunkError(f"{self.store}: array {self.name!r} is corrupt in the region "
                                    f"{key} ({err}); {_remedy(self.store)}") from None


#: per-process cache of the zarr arrays :class:`VerifiedArray` reads
_READ_ARRAYS: dict = {}


def _read_group(path: Path):
    import zarr

    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: not a Zarr v3 store (no zarr.json)")
    try:
        # the arrays' own metadata files, not the consolidated copy in the root
        return zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False)
    except Exception as err:  # zarr raises several types for unreadable metadata
        raise StoreError(f"{path}: cannot open the Zarr store ({err})") from None


def is_complete(store) -> bool:
    """True when ``store`` is a Zarr store marked complete by its writer."""
    path = Path(store)
    try:
        return bool(_read_group(path).attrs.get(COMPLETE_ATTR, False))
    except StoreError:
        return False


def open_store(store):
    """Open a complete store as a read-only ``zarr.Group`` (raises if not complete)."""
    path = Path(store)
    if not path.exists():
        partial = partial_path(path)
        if partial.exists():
            raise IncompleteStoreError(
                f"{path}: not complete: its writing was interrupted ({partial} holds the finished "
                "part; rerun the same ingest to resume)"
            )
        raise StoreError(f"{path}: store not found")
    group = _read_group(path)
    if group.attrs.get(COMPLETE_ATTR) is not True:
        raise IncompleteStoreError(
            f"{path}: store is not marked complete ({COMPLETE_ATTR} missing): its writing was "
            "interrupted or is still running"
        )
    return group


def _chunks_for(dims, shape, default, chunks: Mapping | None):
    out = []
    for dim, n, d in zip(dims, shape, default):
        c = (chunks or {}).get(dim, d)
        out.append(n if c in (-1, None) else c)
    return tuple(out)


def _from_store(path: Path, name: str, chunks):
    """A lazy array of ``name`` read through :class:`VerifiedArray` (as ``da.from_zarr``)."""
    import dask.array as da
    from dask.base import tokenize

    src = VerifiedArray(path, name)
    return da.from_array(src, chunks=chunks, name="from-zarr-" + tokenize(src, chunks))


def _open_exposure_store(path: Path, chunks: Mapping | None):
    group = open_store(path)
    verify_store(path)  # every chunk file there (a listing: nothing is read)
    if DATA not in group:
        raise StoreError(f"{path}: no {DATA!r} array")
    arr = group[DATA]
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != RAMP_DIMS:
        raise StoreError(f"{path}: {DATA!r} has dims {dims}, expected {RAMP_DIMS}")
    shards = arr.shards or arr.chunks
    # default: whole frames, integrations as written (one shard per dask chunk)
    default = (shards[0], -1, -1, -1)
    data = _from_store(path, DATA, _chunks_for(RAMP_DIMS, arr.shape, default, chunks))
    zeroframe = None
    if ZEROFRAME in group:
        z = group[ZEROFRAME]
        zc = _chunks_for((INTEGRATION, Y, X), z.shape, (data.chunksize[0], -1, -1), chunks)
        zeroframe = _from_store(path, ZEROFRAME, zc)
    attrs = {k: v for k, v in group.attrs.items() if not k.startswith("daskramp_")}
    # per-integration coordinates are tiny: read them now, not through dask
    segment = group[SEGMENT][...] if SEGMENT in group else None
    int_times = {c: group[c][...] for c in INT_TIMES_COLUMNS if c in group}
    ds = make_exposure(
        data, attrs, segment=segment, int_times=int_times or None, zeroframe=zeroframe
    )
    ds.encoding["daskramp_source"] = {
        "kind": "zarr",
        "path": str(path),
        "names": {k: v.data.name for k, v in ds.data_vars.items() if hasattr(v.data, "dask")},
    }
    return validate(ds, calibrated=False, source=str(path))


def open_exposure(path_or_files, *, chunks: Mapping | None = None):
    """Open an exposure lazily, from a Zarr store written by :func:`daskramp.io.ingest` or
    from uncal FITS segment files.

    Parameters
    ----------
    path_or_files : path or sequence of paths
        A store directory, one uncal file, or the uncal segment files of one exposure.
    chunks : mapping dim → size, optional
        Dask chunk sizes overriding the default (store: the written integration blocks and whole
        frames; FITS: about 64 MiB of integrations per chunk, never across segments), e.g.
        ``{"integration": 158, "x": 128}`` for pixel tiles of all integrations.  ``-1``
        means the whole dim.

    Returns
    -------
    xarray.Dataset
        An exposure (:mod:`daskramp.dims`): ``data`` uint16 DN, ``groupdq`` zeros (lazy),
        ``pixeldq`` zeros, coords and metadata.  Nothing is computed.

    Raises
    ------
    IncompleteStoreError
        The store is not marked complete.
    UnverifiedStoreError
        The store was written by an older daskramp, without chunk checksums.
    MissingChunkError
        A chunk file of the store is missing (checked by listing, before anything is read;
        also raised when a chunk disappears later, as it is read).
    CorruptChunkError
        Raised when a chunk is computed whose bytes do not match their crc32c.
    daskramp.dims.ExposureError
        Any other problem with the store or files, naming the path.
    """
    if not isinstance(path_or_files, (str, os.PathLike)):
        files = list(path_or_files)
        return _open_fits(files, chunks)
    path = Path(path_or_files)
    if path.is_file() or (not path.exists() and path.suffix.lower() in (".fits", ".fit")):
        return _open_fits([path], chunks)
    return _open_exposure_store(path, chunks)


def _open_fits(files: Iterable, chunks: Mapping | None):
    chunks = dict(chunks or {})
    nint = chunks.pop(INTEGRATION, None)
    ds = open_uncal(files, chunks_integrations=None if nint in (-1, None) else nint)
    if nint == -1:
        ds = ds.chunk({INTEGRATION: -1})
    rest = {d: c for d, c in chunks.items() if d in (GROUP, Y, X)}
    if rest:
        ds = ds.chunk(rest)
    return ds
