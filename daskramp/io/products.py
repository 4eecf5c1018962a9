"""Stage-1 products: atomic Zarr stores and JWST-format FITS files (rate, rateints, ramps).

Product Datasets (produced by ramp_fit/gain_scale, spec 01 §5):

============ ======================= =========================================
kind         dims of every variable  variables (dtype)
============ ======================= =========================================
``rateints`` (integration, y, x)     data, err, var_poisson, var_rnoise (float32, DN/s
                                     and (DN/s)²), dq (uint32); INT_TIMES columns
                                     and ``integration_number`` as coordinates
``rate``     (y, x)                  the same variables, 2-D
``ramp``     (integration, group,    data (float32 DN), groupdq (uint8), pixeldq
             y, x)                   (uint32, (y, x)), optional zeroframe
============ ======================= =========================================

``attrs`` hold the exposure's FITS keywords, the step statuses ``S_xxxxxx``, the reference
files ``R_xxxxxx`` and the full provenance record as a JSON string under
``attrs["daskramp_provenance"]``.

Zarr stores are atomic: they are written under ``<name>.zarr.partial`` and renamed only after
the whole graph finished and the root attribute ``daskramp_complete`` was set (the discipline
of :mod:`daskramp.io.store`).  A path without the suffix is therefore always complete; an
interrupted run leaves only the ``.partial`` directory, which the next run removes and
rewrites (products are cheap compared with the graph that feeds them, so no per-chunk
resume).  A complete product is left alone unless ``overwrite``.

Every array of a product store ends its codec chain with zarr's ``crc32c`` codec
(:func:`product_compressors`), every chunk is written (NaN-only ones too), and a store is
marked complete only once each of its chunk files was found on disk
(:func:`daskramp.io.store.finalize_store` writes the chunk manifest).  A product store that
has lost a chunk, or was written without checksums by an older daskramp, is not complete
(:func:`is_complete`): a rerun writes it again.

FITS files are written as ``<name>.fits.partial`` and renamed when complete.  They are
exported from the Zarr store by the active scheduler's tasks: every header first (final
NAXIS values, data areas reserved), then one task per slab of whole frames reads the slab
from the store and writes its bytes in place as one contiguous run (:class:`FitsImageTarget`).
:func:`write_products` submits these tasks with the graph that writes the store, each slab
waiting for the count of the store's blocks (so the export starts as the last block is
stored, with no round trip to the client); the file is renamed only after every store has
been checked complete and marked so.  The tasks that compute the products hold pixel tiles,
which in a row-major FITS image are one short run per (integration, row): writing those cost
several times the export (measured in ``benchmarks/README.md``).  :func:`export_fits` makes a
FITS file missing beside a complete store (e.g. a run killed between the two renames).  :func:`to_fits` writes the same bytes from any
Dataset in one process, streamed slab by slab, so memory is bounded by one slab whatever the
cube size.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits as afits

from ..dims import (
    CUBE_DIMS,
    IMAGE_DIMS,
    INT_TIMES_COLUMNS,
    INTEGRATION,
    INTEGRATION_NUMBER,
    RAMP_DIMS,
)
from ..steps import REGISTRY
from ..taskgraph import Tasks
from ._pwrite import write_region
from .store import (
    CHUNKS_ATTR,
    COMPLETE_ATTR,
    StoreError,
    corrupt_chunk_error,
    decode_chunk,
    encode_chunk,
    finalize_store,
    missing_chunk_error,
    partial_path,
    plain_codecs,
    verify_store,
    with_checksum,
)
from .store import is_complete as _store_is_complete

FITS_BLOCK = 2880
PROVENANCE_ATTR = "daskramp_provenance"
#: FITS primary keyword holding the provenance JSON (long-string CONTINUE cards)
PROVENANCE_KEYWORD = "DRPROV"
#: bytes of one FITS slab.  The export holds about 4–5 slabs per worker at once (the slab,
#: its dask assembly and its big-endian copy); a slab must take several times the
#: scheduling round trip between two tasks of a worker, and a product must still make
#: enough slabs to spread evenly over the workers (a 1.66 GB rateints: ≈ 50 tasks)
DEFAULT_SLAB_BYTES = 32 * 2**20

#: block counts added up this many at a time (a tree of small sums: each count is released
#: once added, and few enough sum tasks that scheduling them costs little)
COUNT_SPLIT_EVERY = 8
#: target size of one Zarr chunk of a product (the integration axis is split to reach it)
ZARR_CHUNK_BYTES = 16 * 2**20

#: step name → status keyword (spec 01 §5; stdatamodels core schema): the registered steps'
#: (:data:`daskramp.steps.REGISTRY`) and those of the official steps daskramp does not run
STATUS_KEYWORDS = {
    **{s.name: s.status for s in REGISTRY},
    "ipc": "S_IPC",
    "picture_frame": "S_PCTFRM",
    "persistence": "S_PERSIS",
}
STATUS_VALUES = ("COMPLETE", "SKIPPED", "FAILED")

#: reftype → reference file keyword in the products
REFERENCE_KEYWORDS = {
    "mask": "R_MASK",
    "saturation": "R_SATURA",
    "superbias": "R_SUPERB",
    "linearity": "R_LINEAR",
    "dark": "R_DARK",
    "gain": "R_GAIN",
    "readnoise": "R_READNO",
    "flat": "R_FLAT",
}

#: per kind: variable → (EXTNAME, dtype, dims, BUNIT or None), in HDU order
LAYOUTS: dict[str, dict[str, tuple]] = {
    "rateints": {
        "data": ("SCI", np.dtype("float32"), CUBE_DIMS, "DN/s"),
        "err": ("ERR", np.dtype("float32"), CUBE_DIMS, "DN/s"),
        "dq": ("DQ", np.dtype("uint32"), CUBE_DIMS, None),
        "var_poisson": ("VAR_POISSON", np.dtype("float32"), CUBE_DIMS, None),
        "var_rnoise": ("VAR_RNOISE", np.dtype("float32"), CUBE_DIMS, None),
    },
    "rate": {
        "data": ("SCI", np.dtype("float32"), IMAGE_DIMS, "DN/s"),
        "err": ("ERR", np.dtype("float32"), IMAGE_DIMS, "DN/s"),
        "dq": ("DQ", np.dtype("uint32"), IMAGE_DIMS, None),
        "var_poisson": ("VAR_POISSON", np.dtype("float32"), IMAGE_DIMS, None),
        "var_rnoise": ("VAR_RNOISE", np.dtype("float32"), IMAGE_DIMS, None),
    },
    "ramp": {
        "data": ("SCI", np.dtype("float32"), RAMP_DIMS, "DN"),
        "pixeldq": ("PIXELDQ", np.dtype("uint32"), IMAGE_DIMS, None),
        "groupdq": ("GROUPDQ", np.dtype("uint8"), RAMP_DIMS, None),
        "zeroframe": ("ZEROFRAME", np.dtype("float32"), CUBE_DIMS, "DN"),
    },
}
OPTIONAL_VARIABLES = {"zeroframe"}
DATAMODELS = {"rateints": "CubeModel", "rate": "ImageModel", "ramp": "RampModel"}
VARIABLE_UNITS = {
    "data": "DN/s",
    "err": "DN/s",
    "var_poisson": "(DN/s)^2",
    "var_rnoise": "(DN/s)^2",
}

_FITS_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER",
    "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "TFIELDS", "END", "COMMENT", "HISTORY",
}  # fmt: skip


class ProductError(ValueError):
    """A product Dataset does not have the layout its kind requires."""


# ---------------------------------------------------------------------------- helpers


def product_kind(ds: xr.Dataset, key: str | None = None) -> str:
    """``"rate"``, ``"rateints"`` or ``"ramp"`` from the dims of ``ds['data']`` (or ``key``)."""
    if key in ("rate", "rateints"):
        return key
    if "data" not in ds:
        raise ProductError(f"product {key!r}: no 'data' variable")
    dims = ds["data"].dims
    for kind, layout in LAYOUTS.items():
        if layout["data"][2] == dims:
            return kind
    raise ProductError(f"product {key!r}: data dims {dims} match no product kind")


def json_default(obj):
    """JSON's view of the numpy values, paths and sets in provenance records."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def _attr_value(v):
    """A JSON-safe attribute value (Zarr attributes are JSON)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_attr_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _attr_value(x) for k, x in v.items()}
    return json.loads(json.dumps(v, default=json_default))


def product_attrs(attrs: Mapping, provenance: Mapping, *, kind: str) -> dict:
    """Exposure keywords + statuses + reference keywords + provenance JSON for a product.

    Statuses already in ``attrs`` (set by the step wrappers) win over those derived from
    ``provenance["steps"][name]["status"]``; ``R_xxxxxx`` keywords come from
    ``provenance["reference_files"]`` (as returned by ``RefSet.provenance()``), ``CRDS_CTX``
    and ``CRDS_VER`` from ``provenance["crds"]`` (references chosen by CRDS).
    """
    out = {
        str(k): _attr_value(v)
        for k, v in attrs.items()
        if k not in (COMPLETE_ATTR, CHUNKS_ATTR, PROVENANCE_ATTR)
    }
    for name, rec in (provenance.get("steps") or {}).items():
        key = STATUS_KEYWORDS.get(name)
        status = rec.get("status") if isinstance(rec, Mapping) else rec
        if key and status is not None:
            out.setdefault(key, str(status))
    for key in [k for k in out if k.startswith("S_")]:
        if key in STATUS_KEYWORDS.values() and out[key] not in STATUS_VALUES:
            raise ProductError(f"status {key}={out[key]!r} should be one of {STATUS_VALUES}")
    for rt, rec in (provenance.get("reference_files") or {}).items():
        key = REFERENCE_KEYWORDS.get(rt)
        if key and isinstance(rec, Mapping) and rec.get("file"):
            # a file CRDS chose is named by its URI (crds://…), as the official products name it
            out[key] = str(rec.get("uri") or rec["file"])
    crds = provenance.get("crds")
    if isinstance(crds, Mapping) and crds.get("context"):
        out["CRDS_CTX"] = str(crds["context"])
        out["CRDS_VER"] = str(crds.get("version", ""))
    # the model of the product, as its FITS file says (not the uncal's Level1bModel)
    out["DATAMODL"] = DATAMODELS[kind]
    out["BUNIT"] = "DN" if kind == "ramp" else "DN/s"
    out[PROVENANCE_ATTR] = json.dumps(provenance, default=json_default, sort_keys=True)
    return out


# ---------------------------------------------------------------------------- Zarr


def _divisor_at_most(n: int, limit: int) -> int:
    """Largest divisor of ``n`` that is ≤ ``limit`` (at least 1)."""
    best = 1
    for d in range(1, int(math.isqrt(n)) + 1):
        if n % d == 0:
            for c in (d, n // d):
                if best < c <= limit:
                    best = c
    return best


def zarr_chunks(var: xr.DataArray, *, target_bytes: int = ZARR_CHUNK_BYTES) -> tuple[int, ...]:
    """Zarr chunk shape for a product variable that lines up with its dask chunks.

    Every dask chunk boundary must fall on a Zarr chunk boundary (so parallel writes never
    share a chunk): along each dim the Zarr chunk divides the gcd of the boundaries.  The
    leading dim is split further until a chunk is at most ``target_bytes``, so the FITS
    export can read a few integrations (or rows) without decompressing whole tiles.
    """
    shape = var.shape
    if not shape:
        return ()
    free = True  # no dask boundary inside the leading dim: any chunk length fits it
    if var.chunks is not None:
        sizes = []
        for n, ch in zip(shape, var.chunks):
            bounds = np.cumsum(ch)[:-1]
            sizes.append(int(np.gcd.reduce(bounds)) if len(bounds) else max(n, 1))
        free = len(var.chunks[0]) == 1
    else:
        sizes = [max(n, 1) for n in shape]
    rest = var.dtype.itemsize * math.prod(sizes[1:])
    # the FITS export reads whole frames, a slab at a time: a chunk spanning more leading
    # entries than a slab holds would be decompressed once per slab
    frame = var.dtype.itemsize * math.prod(shape[1:])
    limit = max(1, min(target_bytes // max(rest, 1), DEFAULT_SLAB_BYTES // max(frame, 1)))
    if sizes[0] > limit:
        sizes[0] = limit if free else _divisor_at_most(sizes[0], limit)
    return tuple(sizes)


#: product variables stored uncompressed: noisy float32 rates compress by only ≈ 1.1 (zstd
#: level 1 on a SOSS segment), for ≈ 0.7 s of encoding in the tile tasks and ≈ 0.6 s of
#: decoding in the FITS export per 330 MB
UNCOMPRESSED = ("data", "intercept")


def product_compressors(name: str | None = None) -> tuple:
    """Compressors of the product variable ``name``: zstd at level 1, none for
    :data:`UNCOMPRESSED` (the rates); then crc32c for every variable (coordinates too).

    zarr's default (zstd at its default level) encodes noisy float32 rates at ≈ 100–370 MB/s
    here, level 1 at ≈ 350–740 MB/s with the same ratio (1.1–1.2 on rates, > 7 on the
    variances and > 200 on DQ of a SOSS segment): the encoding runs inside the tile tasks,
    so it is on the critical path of every run.
    """
    from zarr.codecs import ZstdCodec

    if name in UNCOMPRESSED:
        return with_checksum(())
    return with_checksum((ZstdCodec(level=1),))


def _prepare_for_zarr(ds: xr.Dataset) -> tuple[xr.Dataset, dict]:
    ds = ds.copy()
    encoding = {}
    for name, var in ds.variables.items():
        var.encoding = {}
        # every array, coordinates too, ends with crc32c
        encoding[name] = {"compressors": product_compressors(name)}
        if name in ds.data_vars:
            encoding[name]["chunks"] = zarr_chunks(ds[name])
    ds.attrs = {str(k): _attr_value(v) for k, v in ds.attrs.items()}
    for var in ds.variables.values():
        var.attrs = {str(k): _attr_value(v) for k, v in var.attrs.items()}
    return ds, encoding


#: per-process cache of the Zarr arrays :class:`ZarrChunkTarget` writes into and
#: :class:`ZarrChunkSource` reads from
_OPEN_ARRAYS: dict = {}


def _open_array(path: str, mode: str):
    # keyed by the metadata file's identity too: a rerun recreates the same path afresh
    st = os.stat(Path(path) / "zarr.json")
    ident = (path, mode, st.st_ino, st.st_mtime_ns)
    arr = _OPEN_ARRAYS.get(ident)
    if arr is None:
        import zarr

        if len(_OPEN_ARRAYS) > 64:
            _OPEN_ARRAYS.clear()
        arr = zarr.open_array(path, mode=mode, zarr_format=3)
        if mode != "r":
            arr = arr.with_config(_WRITE)
        _OPEN_ARRAYS[ident] = arr
    return arr


#: zarr array config of every write: chunks of the fill value only are stored too (an absent
#: chunk file is then a lost one)
_WRITE = {"write_empty_chunks": True}


class ZarrChunkSource:
    """A Zarr v3 array of plain chunks (see :class:`ZarrChunkTarget`) as a source for
    ``dask.array.from_array`` that reads and decodes its chunk files itself.

    zarr's read path runs an event loop and a thread pool per call; in a worker that already
    keeps its cores busy that costs more than the decoding.  ``source[key]`` (one slice of
    step 1 per axis) returns a new numpy array.  Every chunk is in the store (daskramp writes
    them all): an absent one raises :class:`~daskramp.io.store.MissingChunkError`, one whose
    crc32c does not match :class:`~daskramp.io.store.CorruptChunkError`, both naming the
    chunk.  Picklable: only the path travels.
    """

    def __init__(self, path):
        self.path = str(path)
        arr = _open_array(self.path, "r")
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), arr.ndim

    @staticmethod
    def supported(arr) -> bool:
        return ZarrChunkTarget.supported(arr)

    def __getitem__(self, key) -> np.ndarray:
        arr = _open_array(self.path, "r")
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        bounds = [k.indices(n) for k, n in zip(key, self.shape)]
        root = Path(self.path)
        store, name = str(root.parent), root.name
        if any(st != 1 for _, _, st in bounds):
            try:
                return arr[key]
            except ValueError as err:
                if "checksum" not in str(err).lower():
                    raise
                raise corrupt_chunk_error(store, name, f"in region {key}") from None
        meta = arr.metadata
        chunks = tuple(meta.chunk_grid.chunk_shape)
        out = np.empty(tuple(max(0, b - a) for a, b, _ in bounds), self.dtype)
        if out.size == 0:
            return out
        ranges = [range(a // c, -(-b // c)) for (a, b, _), c in zip(bounds, chunks)]
        for cidx in itertools.product(*ranges):
            # the chunk's part inside the region, in chunk and in output coordinates
            lo = [max(a, ci * c) for ci, c, (a, _, _) in zip(cidx, chunks, bounds)]
            hi = [min(b, (ci + 1) * c) for ci, c, (_, b, _) in zip(cidx, chunks, bounds)]
            dst = tuple(slice(lo_ - a, hi_ - a) for lo_, hi_, (a, _, _) in zip(lo, hi, bounds))
            ckey = meta.encode_chunk_key(cidx)
            try:
                data = (root / ckey).read_bytes()
            except FileNotFoundError:
                raise missing_chunk_error(store, name, ckey) from None
            chunk = decode_chunk(data, chunks, self.dtype, meta.codecs, where=(store, name, ckey))
            out[dst] = chunk[tuple(slice(lo_ - ci * c, hi_ - ci * c)
                                   for lo_, hi_, ci, c in zip(lo, hi, cidx, chunks))]
        return out


class ZarrChunkTarget:
    """A Zarr v3 array of plain chunks as a ``dask.array.store`` target that encodes and writes
    its chunk files itself.

    zarr's general write path (event loop and thread pool per call) costs several times the
    encoding inside a busy worker, as it did for ingest (``daskramp.io.ingest._shard_writer``).
    Blocks are split into whole chunks (zarr pads edge chunks with the fill value: so does
    this; chunks of the fill value only are written, as zarr does with
    ``write_empty_chunks``), encoded with the array's own codecs (crc32c last); the files are
    byte for byte zarr's (``tests/io/test_products.py``).  A region not on chunk
    boundaries, or codecs other than bytes + zstd/blosc, go through zarr.  Picklable: only
    the array's path travels.
    """

    def __init__(self, path):
        self.path = str(path)
        arr = self._array()
        self.shape, self.dtype, self.ndim = tuple(arr.shape), np.dtype(arr.dtype), arr.ndim

    def _array(self):
        return _open_array(self.path, "r+")

    @staticmethod
    def supported(arr) -> bool:
        return (arr.shards is None and plain_codecs(getattr(arr.metadata, "codecs", ()))
                and np.dtype(arr.dtype).kind in "fiu")

    def __setitem__(self, key, block) -> None:
        arr = self._array()
        key = key if isinstance(key, tuple) else (key,)
        block = np.asarray(block)
        bounds = [k.indices(n) for k, n in zip(key, self.shape)]
        meta = arr.metadata
        chunks = tuple(meta.chunk_grid.chunk_shape)
        aligned = all(st == 1 and a % c == 0 and (b % c == 0 or b == n)
                      for (a, b, st), c, n in zip(bounds, chunks, self.shape))
        if not aligned or block.shape != tuple(b - a for a, b, _ in bounds):
            arr[key] = block
            return
        ranges = [range(a // c, -(-b // c)) for (a, b, _), c in zip(bounds, chunks)]
        root = Path(self.path)
        for idx in np.ndindex(*(len(r) for r in ranges)):
            cidx = tuple(r[i] for r, i in zip(ranges, idx))
            sel = tuple(slice(ci * c - a, min((ci + 1) * c, b) - a)
                        for ci, c, (a, b, _) in zip(cidx, chunks, bounds))
            data = encode_chunk(block[sel].astype(self.dtype, copy=False), chunks, meta.fill_value, meta.codecs)
            target = root / meta.encode_chunk_key(cidx)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _start_zarr(ds: xr.Dataset, path: Path) -> list[tuple]:
    """Create ``<path>.partial`` afresh; return its pending writes as (dask array, zarr array).

    xarray writes the metadata and the numpy-backed variables (coordinates) at once; the dask
    variables are returned so that every product of an exposure is stored by **one**
    ``dask.array.store`` call: separate ``to_zarr`` graphs are optimised one by one, which
    renames the shared upstream tasks and would run the pipeline once per product.
    """
    import zarr

    partial = partial_path(path)
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run: start again
    path.parent.mkdir(parents=True, exist_ok=True)
    prepared, encoding = _prepare_for_zarr(ds)
    prepared.to_zarr(
        str(partial), mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding,
        write_empty_chunks=True,
    )
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    pending = []
    for name, var in prepared.variables.items():
        if var.chunks is None:
            continue
        target = group[name].with_config(_WRITE)
        if target.dtype != var.dtype or target.shape != var.shape:
            raise ProductError(
                f"{path.name}: variable {name!r} would be stored as {target.dtype}{target.shape}, "
                f"not {var.dtype}{var.shape}; remove its encoding"
            )
        if ZarrChunkTarget.supported(target):
            target = ZarrChunkTarget(partial / name)
        pending.append((var.data, target))
    return pending


def store_block(block: np.ndarray, target, block_info=None) -> np.ndarray:
    """Write one block into ``target`` at its place; a one-element count (int64) to sum."""
    loc = block_info[0]["array-location"]
    target[tuple(slice(a, b) for a, b in loc)] = block
    return np.ones((1,) * block.ndim, np.int64)


def _stored_counts(source: da.Array, target) -> da.Array:
    """Lazy count of the blocks of ``source`` written into ``target``.

    One ``store_block`` task per block, added up two at a time along each axis as they
    finish: each result is released as soon as it is counted.  (``dask.array.store`` gathers
    every block's result in one final task, so a worker keeps the state of every store task
    it ran until the end, ≈ 5.7 KB each: tens of MB per worker on a run of many segments.)
    """
    flags = source.map_blocks(store_block, target, dtype=np.int64, token="store",
                              chunks=tuple((1,) * len(c) for c in source.chunks))
    return flags.sum(split_every=COUNT_SPLIT_EVERY) if flags.ndim else flags


def counted_writes(pending: list[tuple]) -> tuple[da.Array, int]:
    """The lazy number of blocks stored by the writes ``pending`` ((dask array, target)
    pairs), and the number expected."""
    import functools
    import operator

    counts = [_stored_counts(src, tgt) for src, tgt in pending]
    expected = sum(math.prod(src.numblocks) for src, _ in pending)
    return functools.reduce(operator.add, counts, 0), expected


def _check_stored(stored, expected: int, what: str = "") -> None:
    if int(stored) != expected:
        raise ProductError(f"{what}{int(stored)} of {expected} blocks were stored")


def _store_all(pending: list[tuple], also=None):
    """Compute and store every pending write in one graph with the active scheduler.

    ``also`` (dask collections, or None) is computed in the same graph, so the tasks it
    shares with the stored arrays run once; its computed value is returned.  Every block is
    counted as written, or :class:`ProductError` is raised.
    """
    total, expected = counted_writes(pending)
    # arrays only on both sides: optimised as one graph, the shared keys keep their names
    stored, value = dask.compute(total, also)
    _check_stored(stored, expected)
    return value


def write_zarr_atomic(ds: xr.Dataset, path, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to a Zarr v3 store that appears at ``path`` only once complete.

    The graph is computed with the active dask scheduler (threads, processes or a
    distributed client; the path must be visible to the workers).  A complete store at
    ``path`` is returned untouched (nothing computed) unless ``overwrite``; an incomplete one
    (or a leftover ``.partial``) is rewritten.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if is_complete(path) and not overwrite:
        return path
    _store_all(_start_zarr(ds, path))
    return finalize_store(partial_path(path), path, overwrite=True)


def is_complete(path) -> bool:
    """True for a finished product: a Zarr store marked complete that holds every chunk of
    its manifest (a listing, no chunk read; a store from a daskramp older than chunk
    checksums is not complete), or a FITS file in place.

    FITS files are renamed into place only after their last byte, so existence suffices;
    the size is also checked to be a whole number of FITS blocks.
    """
    path = Path(path)
    if path.name.endswith(".partial"):
        return False
    if path.is_dir():
        if not _store_is_complete(path):
            return False
        try:
            verify_store(path)
        except StoreError:
            return False
        return True
    if path.is_file() and path.suffix.lower() in (".fits", ".fit"):
        size = path.stat().st_size
        return size > 0 and size % FITS_BLOCK == 0
    return False


# ---------------------------------------------------------------------------- FITS


def _fits_value(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        return v if v.isascii() and v.isprintable() else None
    return None


def primary_header(attrs: Mapping, *, kind: str, filename: str) -> afits.Header:
    """PRIMARY header: the exposure keywords, statuses, references, BUNIT and provenance."""
    hdu = afits.PrimaryHDU()
    hdr = hdu.header
    hdr["EXTEND"] = True
    for key, value in attrs.items():
        if not _FITS_KEY.match(str(key)) or key in _STRUCTURAL:
            continue
        v = _fits_value(value)
        if v is not None:
            hdr[key] = v
    hdr["DATAMODL"] = DATAMODELS[kind]
    hdr["FILENAME"] = filename
    hdr["BUNIT"] = "DN" if kind == "ramp" else "DN/s"
    prov = attrs.get(PROVENANCE_ATTR)
    if isinstance(prov, str) and prov.isascii():
        hdr[PROVENANCE_KEYWORD] = (prov, "daskramp provenance (JSON)")
    return hdr


_BITPIX = {
    "float32": -32,
    "float64": -64,
    "uint32": 32,
    "int32": 32,
    "uint16": 16,
    "int16": 16,
    "uint8": 8,
}


def image_header(
    extname: str, shape: tuple[int, ...], dtype: np.dtype, *, bunit: str | None = None
) -> afits.Header:
    """Extension header of an IMAGE HDU; unsigned 32/16-bit ints use the BZERO convention."""
    dtype = np.dtype(dtype)
    hdr = afits.Header()
    hdr["XTENSION"] = "IMAGE"
    hdr["BITPIX"] = _BITPIX[dtype.name]
    hdr["NAXIS"] = len(shape)
    for i, n in enumerate(reversed(shape)):
        hdr[f"NAXIS{i + 1}"] = int(n)
    hdr["PCOUNT"] = 0
    hdr["GCOUNT"] = 1
    if dtype == np.uint32:
        hdr["BZERO"] = 2147483648
        hdr["BSCALE"] = 1
    elif dtype == np.uint16:
        hdr["BZERO"] = 32768
        hdr["BSCALE"] = 1
    hdr["EXTNAME"] = extname
    if bunit:
        hdr["BUNIT"] = bunit
    return hdr


def _to_fits_bytes(block: np.ndarray, dtype: np.dtype, *, inplace: bool = False) -> np.ndarray:
    """A block in the stored FITS representation (big-endian; BZERO offset for unsigned).

    With ``inplace`` a native block of ``dtype`` that the caller owns is converted in its
    own memory (no second array of the slab's size to allocate and fill)."""
    a = np.asarray(block)
    if dtype.kind == "u" and a.dtype.kind == "f":
        raise ProductError(f"cannot store float data as {dtype}")
    if (inplace and a.dtype == dtype and a.dtype.isnative and a.flags.writeable
            and a.flags.c_contiguous and dtype.kind in "uif"):
        if dtype.kind == "u" and dtype.itemsize > 1:
            # stored = value − 2^(bits−1): the top bit flipped
            a ^= dtype.type(1 << (8 * dtype.itemsize - 1))
            a = a.view(np.dtype(f"i{dtype.itemsize}"))
        return a.byteswap(inplace=True).view(a.dtype.newbyteorder(">"))
    a = a.astype(dtype, copy=False)
    if dtype == np.uint32:
        # stored = value − 2³¹, the same bit pattern as flipping the top bit
        return (a ^ np.uint32(0x80000000)).view(np.int32).astype(">i4")
    if dtype == np.uint16:
        return (a ^ np.uint16(0x8000)).view(np.int16).astype(">i2")
    return a.astype(dtype.newbyteorder(">"), copy=False)


def slabs(
    shape: tuple[int, ...], itemsize: int, slab_bytes: int, leading_chunks=None
) -> Iterator[tuple]:
    """C-order contiguous pieces of an array, each at most ``slab_bytes`` (or one row).

    Yields index tuples.  The deepest axis that must be split is cut into runs; when that is
    the leading axis and ``leading_chunks`` (dask chunk sizes along it) is given, runs group
    whole chunks so each chunk is read once (a chunk larger than a slab is split).
    """
    if not shape or math.prod(shape) == 0:
        yield tuple(slice(0, n) for n in shape)
        return
    k = 0
    while k < len(shape) - 1 and math.prod(shape[k + 1 :]) * itemsize > slab_bytes:
        k += 1
    row = math.prod(shape[k + 1 :]) * itemsize
    m = max(1, slab_bytes // row)
    if k == 0 and leading_chunks is not None:
        runs, start, acc = [], 0, 0
        for c in leading_chunks:
            if acc and acc + c > m:
                runs.append((start, start + acc))
                start, acc = start + acc, 0
            if c > m:
                for a in range(start, start + c, m):
                    runs.append((a, min(a + m, start + c)))
                start += c
            else:
                acc += c
        if acc:
            runs.append((start, start + acc))
    else:
        runs = [(a, min(a + m, shape[k])) for a in range(0, shape[k], m)]
    tail = tuple(slice(0, n) for n in shape[k + 1 :])
    for outer in np.ndindex(*shape[:k]):
        for a, b in runs:
            yield tuple(outer) + (slice(a, b),) + tail


def _load(x) -> np.ndarray:
    if hasattr(x, "compute"):
        (x,) = dask.compute(x)
    return np.asarray(x)


def _write_image(
    f, var: xr.DataArray, extname: str, dtype: np.dtype, bunit, slab_bytes: int
) -> None:
    shape = tuple(var.shape)
    f.write(image_header(extname, shape, dtype, bunit=bunit).tostring().encode("ascii"))
    lead = var.chunks[0] if var.chunks is not None and var.ndim else None
    written = 0
    data = var.data
    for key in slabs(shape, dtype.itemsize, slab_bytes, lead):
        block = np.ascontiguousarray(_to_fits_bytes(_load(data[key]), dtype))
        f.write(memoryview(block).cast("B"))
        written += block.nbytes
    f.write(b"\0" * ((-written) % FITS_BLOCK))


def int_times_table(ds: xr.Dataset) -> afits.BinTableHDU | None:
    """INT_TIMES BINTABLE from the coordinates on ``integration`` (None without time columns)."""
    present = [c for c in INT_TIMES_COLUMNS if c in ds.coords]
    if not present or INTEGRATION not in ds.dims:
        return None
    n = ds.sizes[INTEGRATION]
    if INTEGRATION_NUMBER in ds.coords:
        num = np.asarray(ds[INTEGRATION_NUMBER].values, np.int32)
    else:
        num = np.asarray(ds[INTEGRATION].values, np.int32) + 1
    cols = [afits.Column(name=INTEGRATION_NUMBER, format="J", array=num)]
    for c in INT_TIMES_COLUMNS:
        vals = np.asarray(ds[c].values, np.float64) if c in ds.coords else np.full(n, np.nan)
        cols.append(afits.Column(name=c, format="D", array=vals))
    return afits.BinTableHDU.from_columns(cols, name="INT_TIMES")


def _check_layout(ds: xr.Dataset, kind: str) -> None:
    for name, (extname, dtype, dims, _) in LAYOUTS[kind].items():
        if name not in ds:
            if name in OPTIONAL_VARIABLES:
                continue
            raise ProductError(f"{kind} product: variable {name!r} ({extname}) is missing")
        if ds[name].dims != dims:
            raise ProductError(
                f"{kind} product: {name!r} has dims {ds[name].dims}, expected {dims}"
            )
        if dtype.kind in "ui" and ds[name].dtype.kind not in "ui":
            raise ProductError(
                f"{kind} product: {name!r} has dtype {ds[name].dtype}, expected {dtype}"
            )


class FitsImageTarget:
    """One IMAGE HDU's data area of a FITS file being written, as a ``dask.array.store`` target.

    ``target[region] = block`` converts the block to the stored representation and writes it
    in place (:func:`daskramp.io._pwrite.write_region`: one ``pwrite`` per contiguous run;
    a memory map would hold a whole page of every run in the process's resident memory), so
    any process that sees ``path`` writes its own slab.  Picklable: only the path and the
    layout travel.
    """

    def __init__(self, path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset = str(path), int(offset)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __setitem__(self, key, block) -> None:
        self.write(key, block)

    def write(self, key, block, *, owned: bool = False) -> None:
        """``self[key] = block``; ``owned``: nobody else uses ``block``, so it is converted to
        the file's bytes in its own memory."""
        key = key if isinstance(key, tuple) else (key,)
        # no fsync per block: the pages are in the shared page cache, so the file is complete
        # for every reader once the last block is in
        write_region(self.path, self.offset, self.shape, key,
                     _to_fits_bytes(np.asarray(block), self.dtype, inplace=owned))


def _slab_chunks(var: xr.DataArray, zchunks: tuple[int, ...], slab_bytes: int) -> tuple[int, ...]:
    """Dask chunks for exporting ``var``: whole trailing axes (one contiguous FITS run per
    task) and as many Zarr chunks along the leading axis as fit in ``slab_bytes``."""
    shape = tuple(var.shape)
    if not shape:
        return ()
    row = var.dtype.itemsize * math.prod(shape[1:])
    lead = max(1, zchunks[0])
    n = max(1, slab_bytes // max(row * lead, 1)) * lead
    return (min(n, shape[0]), *shape[1:])


def copy_slab(source, target, lo, hi, *after) -> np.ndarray:
    """Copy ``source[lo:hi]`` to ``target[lo:hi]`` (per axis); a one-element count (int64) to
    sum.  ``after``: values that had to be computed first (the stores ``source`` reads)."""
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    block = source[region]  # a fresh array: converted to the file's bytes in place
    if isinstance(target, FitsImageTarget):
        target.write(region, block, owned=True)
    else:
        target[region] = block
    return np.ones((1,) * len(region), np.int64)


def _slab_counts(store: Path, var: xr.DataArray, chunks: tuple[int, ...], target,
                 gate: da.Array | None = None) -> tuple[da.Array, int] | None:
    """The writes of ``var`` of ``store`` into the FITS ``target``, one task per slab of
    ``chunks`` that reads the slab (:class:`ZarrChunkSource`) and writes it: its lazy count of
    slabs written and the number expected.  With ``gate`` (a lazy value: the count of the
    store's own blocks) each slab is read only after it, so the export can be submitted with
    the graph that writes the store.  Codecs :class:`ZarrChunkSource` does not read are
    exported through xarray's reader, never gated (None then).
    """
    from dask.array.core import normalize_chunks
    from dask.base import tokenize
    from dask.core import flatten

    path = store / var.name
    if not ZarrChunkSource.supported(_open_array(str(path), "r")):
        if gate is not None:
            return None
        return counted_writes([(var.chunk(dict(zip(var.dims, chunks))).data, target)])
    source = ZarrChunkSource(path)
    chunks = normalize_chunks(chunks, source.shape)
    st = os.stat(path / "zarr.json")
    after = [] if gate is None else list(flatten(gate.__dask_keys__()))
    name = "fits-slab-" + tokenize(str(path), st.st_ino, st.st_mtime_ns, chunks, target.path,
                                   target.offset, after)
    edges = [np.cumsum((0, *c)).tolist() for c in chunks]
    tasks = Tasks(gate)
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        lo = [e[i] for e, i in zip(edges, idx)]
        hi = [e[i + 1] for e, i in zip(edges, idx)]
        tasks.call((name, *idx), copy_slab, source, target, lo, hi, *after)
    flags = tasks.array(name, tuple((1,) * len(c) for c in chunks), np.int64)
    return flags.sum(split_every=COUNT_SPLIT_EVERY), math.prod(len(c) for c in chunks)


def export_fits(store, path, *, kind: str, slab_bytes: int = DEFAULT_SLAB_BYTES) -> Path:
    """Export a complete product store as its FITS file with the active dask scheduler.

    Every header is written first (final NAXIS values, data areas reserved, so a full disk
    fails here); then one task per slab of whole frames (a few integrations or rows, at most
    ``slab_bytes``, aligned with the Zarr chunks) reads the slab from the store and writes it
    into place as one contiguous run (:class:`FitsImageTarget`).  The file is
    ``<path>.partial`` until the last table is appended and appears at ``path`` complete; the
    bytes are those of :func:`to_fits`.  Each worker must see ``store`` and ``path``.

    Row-major FITS images make this cheaper than writing them from the tasks that compute
    the products: those hold pixel tiles, i.e. one short run per (integration, row).
    """
    export_all([(store, path, kind)], slab_bytes=slab_bytes)
    return Path(path)


class _Export:
    """A FITS export being prepared: its partial file (headers written, data reserved), the
    lazy count of its slab writes and the store it reads (kept open until it is done)."""

    def __init__(self, store: Path, path: Path, kind: str, slab_bytes: int, gate=None,
                 final_store: Path | None = None, coords_written: bool = True):
        self.store, self.path, self.kind = Path(store), Path(path), kind
        # with a gate the store is still being written (its coordinates may be too) and is
        # found at ``final_store`` once complete
        self.final_store = Path(final_store) if final_store is not None else self.store
        if not dask.is_dask_collection(gate):
            gate = None  # nothing left to write: the store was written whole when created
        # the INT_TIMES table is built from the coordinates once they are in the store
        self.table_later = gate is not None and not coords_written
        self.partial = self.path.with_name(self.path.name + ".partial")
        if final_store is None:
            verify_store(self.store)  # a complete store: every chunk there, with checksums
        # opened unchunked: the slabs read the chunk files, and the coordinates (stored
        # whole) are read whole
        self.src = xr.open_zarr(self.store, consolidated=False, chunks=None)
        self.counts = None
        try:
            _check_layout(self.src, kind)
            # the product's variables share dims and chunking: one slab size for all
            first = next(self.src[n] for n in LAYOUTS[kind] if n in self.src)
            zchunks = tuple(first.encoding.get("chunks") or first.shape)
            chunks = dict(zip(first.dims, _slab_chunks(first, zchunks, slab_bytes)))
            # the coordinates (INT_TIMES) are read here, at once: as dask arrays each would
            # be a round trip to the cluster
            ds = self.src.assign_coords({k: v.load() for k, v in self.src.coords.items()})
            self.table = int_times_table(ds) if kind != "rate" and not self.table_later else None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            counts = []
            for var, target in _allocate_fits(ds, self.partial, self.path.name, kind):
                c = _slab_counts(self.store, var, tuple(chunks[d] for d in var.dims), target, gate)
                if c is None:
                    return  # read through xarray: exported after the store is complete
                counts.append(c)
            self.counts = counts
        except BaseException:
            self.abandon()
            raise

    @property
    def ready(self) -> bool:
        return self.counts is not None

    def finish(self, stored: list) -> None:
        """Check every slab was written, append the INT_TIMES table and rename into place."""
        for n, (_, expected) in zip(stored, self.counts):
            _check_stored(n, expected, f"{self.path.name}: ")
        table = self.table
        if self.table_later and self.kind != "rate":
            # the INT_TIMES columns as stored, now that the store is complete
            with xr.open_zarr(self.final_store, consolidated=False, chunks=None) as done:
                table = int_times_table(done.assign_coords({k: v.load() for k, v in done.coords.items()}))
        _append_and_rename(self.partial, self.path, table)

    def close(self) -> None:
        self.src.close()

    def abandon(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


class BlockExport:
    """The FITS file of a product whose store is written one block of integrations after
    another (:mod:`daskramp.engine.submit`): each block's slabs are exported as soon as the
    block is stored, while the next blocks compute, instead of all of them after the last.

    ``store`` is the partial store (:func:`start_blockwise`: its metadata and coordinates
    written), ``ds`` the product as written there (coordinates in memory).  The FITS file is
    allocated here as ``<path>.partial``; :meth:`slabs` gives the lazy writes of a block's
    integrations; :meth:`finish`, once the store is complete, checks that every block was
    exported and renames the file into place.  ``ready`` is False for codecs the slabs cannot
    read (export the complete store then, with :func:`export_all`).
    """

    def __init__(self, store: Path, path: Path, ds: xr.Dataset, kind: str,
                 slab_bytes: int = DEFAULT_SLAB_BYTES):
        self.store, self.path, self.kind = Path(store), Path(path), kind
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.targets: list = []
        self.exported: set = set()
        _check_layout(ds, kind)
        names = [n for n in LAYOUTS[kind] if n in ds]
        if not all(ZarrChunkSource.supported(_open_array(str(self.store / n), "r")) for n in names):
            return
        first = ds[names[0]]
        zchunks = zarr_chunks(first)
        self.lead = _slab_chunks(first, zchunks, slab_bytes)[0]
        self.table = int_times_table(ds) if kind != "rate" else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.targets = [(var.name, target) for var, target in
                        _allocate_fits(ds, self.partial, self.path.name, kind)]

    @property
    def ready(self) -> bool:
        return bool(self.targets)

    def slabs(self, i0: int, i1: int) -> tuple[da.Array, int]:
        """The lazy count of the slab writes of integrations ``i0:i1`` (a block whose store
        chunks are all written), and the number expected."""
        from dask.base import tokenize

        cuts = list(range(i0, i1, self.lead)) + [i1]
        name = "fits-block-slab-" + tokenize(str(self.store), str(self.partial), i0, i1, self.lead)
        tasks = Tasks()
        n = 0
        for var, target in self.targets:
            source = ZarrChunkSource(self.store / var)
            rest = target.shape[1:]
            for a, b in zip(cuts, cuts[1:]):
                # each slab's count is a (1, …, 1) block, as copy_slab returns it
                tasks.call((name, n, *(0 for _ in rest)), copy_slab, source, target,
                           [a, *(0 for _ in rest)], [b, *rest])
                n += 1
        flags = tasks.array(name, ((1,) * n, *((1,) for _ in rest)), np.int64)
        self.exported.add((i0, i1))
        return flags.sum(), n

    def finish(self, blocks, stored: int, expected: int) -> None:
        """Check that every block of ``blocks`` was exported and every slab written, append
        the INT_TIMES table and rename the file into place."""
        missing = [b for b in blocks if tuple(b) not in self.exported]
        if missing or stored != expected:
            raise ProductError(f"{self.path.name}: {stored} of {expected} slabs written"
                               + (f"; blocks {missing} not exported" if missing else ""))
        _append_and_rename(self.partial, self.path, self.table)

    def abandon(self) -> None:
        self.partial.unlink(missing_ok=True)


@contextmanager
def _exporting(exports: list[_Export]):
    """Close ``exports`` (appended to inside the block) when the block succeeds; remove their
    partial files when it fails, so no FITS file appears."""
    try:
        yield exports
    except BaseException:
        for e in exports:
            e.abandon()
        raise
    for e in exports:
        e.close()


def export_all(jobs, *, slab_bytes: int = DEFAULT_SLAB_BYTES) -> list[Path]:
    """:func:`export_fits` of several ``(store, path, kind)`` in one computation.

    One graph for every file saves a round trip to the cluster per file; the INT_TIMES
    tables are built before it runs.  On failure no file appears and the partial files are
    removed.
    """
    with _exporting([]) as exports:
        for store, path, kind in jobs:
            exports.append(_Export(store, path, kind, slab_bytes))
        (stored,) = dask.compute([[c for c, _ in e.counts] for e in exports])
        for e, n in zip(exports, stored):
            e.finish(n)
    return [e.path for e in exports]


def _append_and_rename(partial: Path, path: Path, table) -> None:
    """Append the INT_TIMES ``table`` (None for ``rate``) and rename the finished file into place."""
    if table is not None:
        with afits.open(partial, mode="append") as hdul:
            hdul.append(table)
    os.replace(partial, path)


def _allocate_fits(ds: xr.Dataset, partial: Path, filename: str, kind: str) -> list[tuple]:
    """Write the headers of ``partial`` and reserve its data areas; ``(variable, target)`` of
    each image to write."""
    pending = []
    with open(partial, "wb") as f:
        f.write(primary_header(ds.attrs, kind=kind, filename=filename).tostring().encode("ascii"))
        for name, (extname, dtype, _, bunit) in LAYOUTS[kind].items():
            if name not in ds:
                continue
            shape = tuple(ds[name].shape)
            f.write(image_header(extname, shape, dtype, bunit=bunit).tostring().encode("ascii"))
            nbytes = dtype.itemsize * math.prod(shape)
            pending.append((ds[name], FitsImageTarget(partial, f.tell(), shape, dtype)))
            f.seek(nbytes + (-nbytes) % FITS_BLOCK, os.SEEK_CUR)
        size = f.tell()
        f.truncate(size)
        f.flush()
        # reserve every block now: a full disk is then an OSError here, before any task ran
        os.posix_fallocate(f.fileno(), 0, size)
    return pending


def to_fits(ds: xr.Dataset, path, *, kind: str, slab_bytes: int = DEFAULT_SLAB_BYTES) -> Path:
    """Write a product Dataset as a JWST FITS file readable by ``jwst.datamodels.open``.

    Layout: header-only PRIMARY (exposure keywords, S_/R_ keywords, BUNIT, DATAMODL),
    then SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE images (float32, DQ uint32) and, for
    ``rateints``, the INT_TIMES table (integration_number int32 + six float64 times).
    ``ramp``: SCI float32, PIXELDQ uint32, GROUPDQ uint8, ZEROFRAME (if present), INT_TIMES.

    Data are written slab by slab, so memory is a few ``slab_bytes`` whatever the cube size
    (measured: a 500 MB rateints from Zarr with 8 MiB slabs raised peak RSS by 65 MiB); each slab is computed
    separately, so ``ds`` should be cheap to read (Zarr- or numpy-backed), not a deep graph.
    The file appears at ``path`` only when complete.

    Parameters
    ----------
    ds : xarray.Dataset
        A product (see the module docstring).
    path : path
        Output file, e.g. ``<root>_rateints.fits``.
    kind : {"rate", "rateints", "ramp"}
    slab_bytes : int
        Upper bound of one slab (at least one image row is written at a time).
    """
    if kind not in LAYOUTS:
        raise ProductError(f"unknown product kind {kind!r}; choose from {sorted(LAYOUTS)}")
    _check_layout(ds, kind)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "wb") as f:
            f.write(
                primary_header(ds.attrs, kind=kind, filename=path.name).tostring().encode("ascii")
            )
            for name, (extname, dtype, _, bunit) in LAYOUTS[kind].items():
                if name in ds:
                    _write_image(f, ds[name], extname, dtype, bunit, slab_bytes)
        _append_and_rename(partial, path, int_times_table(ds) if kind != "rate" else None)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------- products


def product_dataset(ds: xr.Dataset, provenance: Mapping, *, kind: str) -> xr.Dataset:
    """``ds`` as written: the product's attributes and the variables' units (a copy: the
    caller's attributes are not changed)."""
    ds = ds.copy()  # new variables: the attrs below must not leak into the caller's
    ds.attrs = product_attrs(ds.attrs, provenance, kind=kind)
    for v, unit in VARIABLE_UNITS.items():
        if kind != "ramp" and v in ds.variables:
            ds.variables[v].attrs.setdefault("units", unit)
    return ds


def start_blockwise(ds: xr.Dataset, path, *, resume: bool = False) -> dict:
    """Create ``<path>.partial`` for ``ds`` (its metadata and in-memory coordinates written,
    as :func:`write_products` does) and return a write target for each lazy variable, by
    name, for data computed in several submissions (:mod:`daskramp.engine.submit`).

    With ``resume``, an existing ``<path>.partial`` is reopened as it is (the caller knows
    it was started for the same ``ds``); its variables must have ``ds``'s shapes and dtypes.
    Writes of blocks of ``ds``'s dask chunks never share a Zarr chunk
    (:func:`zarr_chunks`); complete the store with :func:`daskramp.io.store.finalize_store`.
    """
    names = [name for name, var in ds.variables.items() if var.chunks is not None]
    partial = partial_path(path)
    if resume and partial.exists():
        import zarr

        group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
        targets = {}
        for name in names:
            if name not in group:
                raise ProductError(f"{partial.name}: no variable {name!r} to resume")
            arr = group[name]
            if arr.dtype != ds[name].dtype or arr.shape != ds[name].shape:
                raise ProductError(f"{partial.name}: variable {name!r} is {arr.dtype}{arr.shape}, "
                                   f"not {ds[name].dtype}{ds[name].shape}")
            targets[name] = (ZarrChunkTarget(partial / name) if ZarrChunkTarget.supported(arr)
                             else arr.with_config(_WRITE))
        return targets
    pending = _start_zarr(ds, Path(path))
    if len(pending) != len(names):
        raise ProductError(f"{Path(path).name}: {len(pending)} lazy variables to write, expected {len(names)}")
    return {name: target for name, (_, target) in zip(names, pending)}


def write_products(
    products: Mapping[str, xr.Dataset],
    outdir,
    *,
    root: str,
    provenance: Mapping,
    fits: bool = True,
    zarr: bool = True,
    overwrite: bool = False,
    slab_bytes: int = DEFAULT_SLAB_BYTES,
    also=None,
):
    """Write the products of one exposure; compute their graph once.

    Parameters
    ----------
    products : mapping name → Dataset
        ``"rate"``, ``"rateints"`` and ramp intermediates (e.g. ``"jump_ramp"``), lazy or not.
    outdir : path
        Output directory (created).
    root : str
        File root: ``<root>_<name>.zarr`` and ``<root>_<name>.fits``.
    provenance : mapping
        JSON-serialisable record (steps and their status/parameters, reference files with
        sha256, package versions, inputs); stored as ``attrs["daskramp_provenance"]`` and
        the ``DRPROV`` FITS keyword, plus ``S_xxxxxx`` / ``R_xxxxxx`` keywords.
    fits, zarr : bool
        Which formats to write.  With ``fits`` only, the products are staged in hidden
        Zarr stores in ``outdir`` (removed afterwards) so the graph is still computed once.
    overwrite : bool
        Rewrite complete products; otherwise they are kept (a rerun is a no-op).
    also : dask collections, optional
        Figures of the lazy products (e.g. :func:`daskramp.pipeline.summarize` with
        ``compute=False``), computed in the same graph as the stores: they cost no second
        pass over the data.  They are computed only when every product is being written;
        when some were found complete, computing them would run the pipeline again, so
        their value is None (read them from the stores instead).

    Returns
    -------
    dict
        ``"<name>_zarr"`` / ``"<name>_fits"`` → path of each product written or found complete;
        with ``also``, the tuple ``(paths, computed also or None)``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    plans = []
    for name, ds in products.items():
        kind = product_kind(ds, name)
        _check_layout(ds, kind)
        zpath = outdir / f"{root}_{name}.zarr"
        if not zarr:
            zpath = outdir / f".{root}_{name}.staging.zarr"
        fpath = outdir / f"{root}_{name}.fits"
        if zarr:
            want_zarr = overwrite or not is_complete(zpath)
            # a rewritten store makes an older FITS file stale
            want_fits = fits and (want_zarr or not is_complete(fpath))
        else:
            want_fits = fits and (overwrite or not is_complete(fpath))
            want_zarr = want_fits
        plans.append((name, kind, ds, zpath, fpath, want_zarr, want_fits))

    writes, later = [], []
    with _exporting([]) as exports:
        for _name, kind, ds, zpath, fpath, want_zarr, want_fits in plans:
            if not want_zarr:
                if want_fits:
                    later.append((zpath, fpath, kind))
                continue
            ds = product_dataset(ds, provenance, kind=kind)
            pending = _start_zarr(ds, zpath)
            total, expected = counted_writes(pending)
            writes.append((zpath, total, expected))
            if fits and want_fits:
                # the FITS file is exported by the same graph: its slabs read the store
                # being written once every block of it is (its count computed)
                export = _Export(partial_path(zpath), fpath, kind, slab_bytes, gate=total,
                                 final_store=zpath,
                                 coords_written=not any(dask.is_dask_collection(c.variable)
                                                        for c in ds.coords.values()))
                if export.ready:
                    exports.append(export)
                else:
                    export.abandon()
                    later.append((zpath, fpath, kind))
        with_also = also is not None and all(plan[5] for plan in plans)
        # arrays only on both sides: optimised as one graph, the shared keys keep their names
        stored, exported, value = dask.compute([t for _, t, _ in writes],
                                               [[c for c, _ in e.counts] for e in exports],
                                               also if with_also else None)
        for (zpath, _, expected), n in zip(writes, stored):
            _check_stored(n, expected, f"{zpath.name}: ")
        # every store is complete before any is marked so, and before any FITS file appears
        for zpath, _, _ in writes:
            finalize_store(partial_path(zpath), zpath, overwrite=True)
        for e, n in zip(exports, exported):
            e.finish(n)
    if later:
        export_all(later, slab_bytes=slab_bytes)
    for name, _, _, zpath, fpath, _, _ in plans:
        if zarr:
            out[f"{name}_zarr"] = zpath
        if fits:
            out[f"{name}_fits"] = fpath
        if not zarr and zpath.exists():
            shutil.rmtree(zpath)
    return out if also is None else (out, value)


__all__ = [
    "LAYOUTS",
    "BlockExport",
    "STATUS_KEYWORDS",
    "REFERENCE_KEYWORDS",
    "ProductError",
    "export_all",
    "export_fits",
    "int_times_table",
    "is_complete",
    "product_attrs",
    "product_dataset",
    "product_kind",
    "start_blockwise",
    "to_fits",
    "write_products",
    "write_zarr_atomic",
    "zarr_chunks",
]
