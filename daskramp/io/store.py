"""Zarr exposure stores: opening them, and the write discipline every store writer follows.

A store is built under ``<store>.partial`` and only renamed to ``<store>`` when every chunk is
written, so a path without the suffix is always complete.  Inside the partial store each task
that finishes its whole chunks drops a marker file in ``_daskramp_progress/``; a rerun reads the
markers and writes only what is missing.  Finalising removes the markers, sets the root attribute
``daskramp_complete = True`` (written last) and renames.  Readers
refuse a store without that attribute.

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

COMPLETE_ATTR = "daskramp_complete"
PARTIAL_SUFFIX = ".partial"
PROGRESS_DIR = "_daskramp_progress"
PLAN_FILE = "plan.json"

__all__ = [
    "COMPLETE_ATTR",
    "StoreError",
    "IncompleteStoreError",
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
        raise StoreError(f"{final}: store exists; pass overwrite=True to replace it")
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
    """Mark ``partial`` complete and move it to ``store`` (the completion mark comes last)."""
    import zarr

    partial, final = Path(partial), Path(store)
    shutil.rmtree(partial / PROGRESS_DIR, ignore_errors=True)
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    group.attrs[COMPLETE_ATTR] = True
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

# ------------------------------------------------------------------ chunks written by tasks


def plain_codecs(codecs) -> bool:
    """True for a codec chain :func:`encode_chunk` reproduces: little-endian bytes, then
    blosc/zstd compressors."""
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

    codecs = tuple(codecs)
    return (
        len(codecs) >= 1
        and isinstance(codecs[0], BytesCodec)
        and getattr(codecs[0].endian, "value", codecs[0].endian) in (None, "little")
        and all(isinstance(c, (BloscCodec, ZstdCodec)) for c in codecs[1:])
    )


def encode_chunk(part, chunk_shape, fill, codecs) -> bytes | None:
    """One chunk as zarr stores it with ``codecs`` (:func:`plain_codecs`), or None when it holds
    only the fill value (zarr leaves such chunks out).

    ``part`` may be smaller than ``chunk_shape`` at the array edge: it is padded with ``fill``,
    as zarr pads.  Writers use this to store whole chunks from their own tasks, because zarr's
    general write path (event loop and thread pool per call) costs several times the encoding
    inside a busy worker.
    """
    from types import SimpleNamespace

    import numpy as np
    from zarr.core.buffer import default_buffer_prototype

    part = np.asarray(part)
    chunk_shape = tuple(chunk_shape)
    fill = np.array(fill, part.dtype)
    if part.shape != chunk_shape:
        padded = np.full(chunk_shape, fill, part.dtype)
        padded[tuple(slice(0, n) for n in part.shape)] = part
        part = padded
    if np.array_equal(part, np.broadcast_to(fill, part.shape), equal_nan=part.dtype.kind == "f"):
        return None
    raw = np.ascontiguousarray(part, part.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    spec = SimpleNamespace(prototype=default_buffer_prototype())
    buf = spec.prototype.buffer.from_array_like(raw)
    for c in tuple(codecs)[1:]:
        buf = c._encode_sync(buf, spec)
    return buf.to_bytes()



def decode_chunk(data: bytes, chunk_shape, dtype, codecs):
    """The inverse of :func:`encode_chunk`: one stored chunk's bytes as a numpy array of
    ``chunk_shape`` (read-only; copy it to modify)."""
    from types import SimpleNamespace

    import numpy as np
    from zarr.core.buffer import default_buffer_prototype

    spec = SimpleNamespace(prototype=default_buffer_prototype())
    buf = spec.prototype.buffer.from_bytes(data)
    for c in reversed(tuple(codecs)[1:]):
        buf = c._decode_sync(buf, spec)
    raw = buf.as_numpy_array()
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(tuple(chunk_shape))


def _read_group(path: Path):
    import zarr

    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: not a Zarr v3 store (no zarr.json)")
    try:
        return zarr.open_group(str(path), mode="r", zarr_format=3)
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


def _open_exposure_store(path: Path, chunks: Mapping | None):
    import dask.array as da

    group = open_store(path)
    if DATA not in group:
        raise StoreError(f"{path}: no {DATA!r} array")
    arr = group[DATA]
    dims = tuple(arr.metadata.dimension_names or ())
    if dims != RAMP_DIMS:
        raise StoreError(f"{path}: {DATA!r} has dims {dims}, expected {RAMP_DIMS}")
    shards = arr.shards or arr.chunks
    # default: whole frames, integrations as written (one shard per dask chunk)
    default = (shards[0], -1, -1, -1)
    data = da.from_zarr(arr, chunks=_chunks_for(RAMP_DIMS, arr.shape, default, chunks))
    zeroframe = None
    if ZEROFRAME in group:
        z = group[ZEROFRAME]
        zc = _chunks_for((INTEGRATION, Y, X), z.shape, (data.chunksize[0], -1, -1), chunks)
        zeroframe = da.from_zarr(z, chunks=zc)
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
    from .uncal import open_uncal

    chunks = dict(chunks or {})
    nint = chunks.pop(INTEGRATION, None)
    ds = open_uncal(files, chunks_integrations=None if nint in (-1, None) else nint)
    if nint == -1:
        ds = ds.chunk({INTEGRATION: -1})
    rest = {d: c for d, c in chunks.items() if d in (GROUP, Y, X)}
    if rest:
        ds = ds.chunk(rest)
    return ds
