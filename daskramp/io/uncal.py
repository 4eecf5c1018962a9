"""Lazy reading of level-1b ("uncal") FITS segments.

An exposure may be split by the archive into segments (``…-seg001_…_uncal.fits``), each holding
integrations ``INTSTART … INTEND`` (1-based, inclusive) of the ``NINTS`` of the exposure.  The
SCI extension stores unsigned 16-bit counts as big-endian signed int16 with ``BZERO = 32768``
(spec 01 §1).

:func:`open_uncal` never reads pixel data while building the Dataset.  Each dask task opens the
file itself, maps only the bytes of its integrations and converts them in one pass into a fresh
native ``uint16`` array: ``XOR 0x8000`` on the big-endian values.  Adding 32768 modulo 2¹⁶ to a
two's-complement int16 flips its top bit only, so the XOR is the exact conversion.  Measured on
the project's 2-core machine, 8 blocks of 6 SOSS integrations (453 MB) from the page cache
(``python benchmarks/ingest.py --read-methods``):

============================================  ==========
method                                        MB/s
============================================  ==========
mmap of the block + ``bitwise_xor(out=…)``    ~2450
``readinto`` + in-place byteswap and XOR      ~1700
``readinto`` + ``bitwise_xor(out=…)``         ~1850
astropy ``memmap=True`` section + convert     ~2300
============================================  ==========

The mapping covers one block and is closed before the task returns, so a worker holds at most
one block of file pages besides its output.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ..dims import (
    INT_TIMES_COLUMNS,
    RAW_DTYPE,
    ExposureError,
    check_keywords,
    make_exposure,
    validate,
)
from ..taskgraph import Tasks

__all__ = [
    "UncalFileError",
    "UncalFormatError",
    "SegmentMismatchError",
    "read_uncal_header",
    "open_uncal",
    "scan_segments",
    "read_frames",
]

#: keywords that differ from one segment to the next; they become coordinates instead of attrs
PER_SEGMENT_KEYWORDS = ("EXSEGNUM", "INTSTART", "INTEND", "FILENAME", "CHECKSUM", "DATASUM")

#: FITS structure keywords, never carried as metadata
_STRUCTURAL = re.compile(
    r"^(SIMPLE|EXTEND|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|BZERO|BSCALE|EXTNAME|EXTVER|"
    r"TFIELDS|TTYPE\d+|TFORM\d+|TUNIT\d+|TDIM\d+|THEAP|COMMENT|HISTORY|)$"
)

#: keywords that must agree between segments of one exposure (when present)
_SAME_EXPOSURE = (
    "NINTS", "NGROUPS", "NFRAMES", "GROUPGAP", "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2",
    "INSTRUME", "DETECTOR", "EXP_TYPE", "READPATT", "SUBARRAY", "EXSEGTOT", "PROGRAM",
    "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE", "EXPSTART",
)  # fmt: skip

_SEG_SUFFIX = re.compile(r"-seg\d+", re.IGNORECASE)

DEFAULT_CHUNK_BYTES = 64 * 2**20


class UncalFileError(ExposureError):
    """An uncal file is missing, unreadable, not FITS, or truncated."""


class UncalFormatError(ExposureError):
    """An uncal file is FITS but its SCI array or keywords do not follow spec 01 §1."""


class SegmentMismatchError(ExposureError):
    """Files given as segments of one exposure do not fit together."""


@dataclass(frozen=True)
class Segment:
    """What one uncal file holds and where its pixels are (no pixel data)."""

    path: str
    header: dict
    shape: tuple[int, int, int, int]  # (nints in this file, ngroups, ny, nx)
    offset: int  # byte offset of the SCI data in the file
    intstart: int
    intend: int
    exsegnum: int
    int_times: dict | None  # column name -> 1-D array, including "integration_number"
    zeroframe: tuple[int, tuple[int, int, int]] | None  # (byte offset, (nints, ny, nx))
    size: int  # file size in bytes
    mtime_ns: int

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.shape[1:]


def _scalar(value):
    """A header value as a plain JSON-able Python scalar, or None if it is not one."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None  # undefined values, complex numbers


def _keywords(header) -> dict:
    out = {}
    for card in header.cards:
        key = card.keyword
        if _STRUCTURAL.match(key):
            continue
        v = _scalar(card.value)
        if v is not None and key not in out:
            out[key] = v
    return out


def _open_fits(path: Path):
    from astropy.io import fits

    if not path.exists():
        raise UncalFileError(f"{path}: file not found")
    if not path.is_file():
        raise UncalFileError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True, do_not_scale_image_data=True)
            hdul[0].header  # noqa: B018  (forces the primary header to be parsed)
    except (OSError, ValueError, IndexError, TypeError) as err:
        raise UncalFileError(f"{path}: not a readable FITS file ({err})") from None
    return hdul


def _find_hdu(hdul, extname: str):
    """Index of the first HDU named ``extname``, reading headers lazily; None if absent."""
    i = 1
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hdu = hdul[i]
        except (IndexError, OSError, ValueError, TypeError):
            return None
        if str(hdu.header.get("EXTNAME", "")).strip().upper() == extname:
            return i
        i += 1


def _uint16_image(path: Path, hdul, idx: int, name: str, size: int):
    """(byte offset, numpy shape) of a BITPIX=16/BZERO=32768 image HDU, checked against the file."""
    h = hdul[idx].header
    bitpix, bzero, bscale = h.get("BITPIX"), h.get("BZERO", 0), h.get("BSCALE", 1)
    if bitpix != 16 or bzero != 32768 or bscale != 1:
        kind = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
        what = kind.get(bitpix, f"BITPIX={bitpix}")
        if bitpix == 16:
            what = f"int16 with BZERO={bzero}, BSCALE={bscale}"
        raise UncalFormatError(
            f"{path}: {name} is {what}, expected unsigned 16-bit (BITPIX=16, BZERO=32768, BSCALE=1)"
        )
    naxis = int(h.get("NAXIS", 0))
    shape = tuple(int(h[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
    info = hdul.fileinfo(idx)
    offset = int(info["datLoc"])
    nbytes = 2 * math.prod(shape) if shape else 0
    if offset + nbytes > size:
        raise UncalFileError(
            f"{path}: truncated: {name} needs {nbytes} bytes from offset {offset} but the file "
            f"has only {max(size - offset, 0)}"
        )
    return offset, shape


def _read_int_times(hdul, idx: int) -> dict:
    data = hdul[idx].data
    names = {n.lower(): n for n in data.columns.names}
    if "integration_number" not in names:
        raise UncalFormatError("INT_TIMES table has no integration_number column")
    out = {"integration_number": np.asarray(data[names["integration_number"]], np.int64)}
    for col in INT_TIMES_COLUMNS:
        src = names.get(col.lower())
        out[col] = (
            np.asarray(data[src], np.float64)
            if src
            else np.full(out["integration_number"].size, np.nan)
        )
    return out


def scan_segment(path) -> Segment:
    """Read the headers of one uncal file and check them (no pixel data is read).

    Raises
    ------
    UncalFileError
        missing, unreadable, not FITS, or shorter than its headers say.
    UncalFormatError
        no SCI extension, SCI not unsigned 16-bit or not 4-D, shape disagreeing with
        NGROUPS/SUBSIZE1/SUBSIZE2/INTSTART/INTEND, missing or mistyped required keywords.
    """
    path = Path(path)
    with warnings.catch_warnings():
        # astropy warns about truncation and odd cards; we raise our own errors instead
        warnings.simplefilter("ignore")
        return _scan_segment(path)


def _scan_segment(path: Path) -> Segment:
    hdul = _open_fits(path)
    try:
        st = os.stat(path)
        header = _keywords(hdul[0].header)
        sci = _find_hdu(hdul, "SCI")
        if sci is None:
            raise UncalFormatError(f"{path}: no SCI extension")
        offset, shape = _uint16_image(path, hdul, sci, "SCI", st.st_size)
        for k, v in _keywords(hdul[sci].header).items():
            header.setdefault(k, v)
        check_keywords(header, source=str(path))
        if len(shape) != 4:
            raise UncalFormatError(
                f"{path}: SCI has {len(shape)} dimensions {shape}, expected 4 (nints, ngroups, ny, nx)"
            )
        nint, ngroup, ny, nx = shape
        if ngroup != header["NGROUPS"]:
            raise UncalFormatError(
                f"{path}: SCI has {ngroup} groups but NGROUPS={header['NGROUPS']}"
            )
        if (ny, nx) != (header["SUBSIZE2"], header["SUBSIZE1"]):
            raise UncalFormatError(
                f"{path}: SCI frames are {ny}×{nx} but SUBSIZE2×SUBSIZE1 = "
                f"{header['SUBSIZE2']}×{header['SUBSIZE1']}"
            )
        header.setdefault("INTSTART", 1)
        header.setdefault("INTEND", header["INTSTART"] + nint - 1)
        header.setdefault("EXSEGNUM", 1)
        header.setdefault("EXSEGTOT", 1)
        for key in ("INTSTART", "INTEND", "EXSEGNUM", "EXSEGTOT"):
            if not isinstance(header[key], int) or isinstance(header[key], bool):
                raise UncalFormatError(f"{path}: keyword {key}={header[key]!r} should be int")
        i0, i1, nints = header["INTSTART"], header["INTEND"], header["NINTS"]
        if not 1 <= i0 <= i1 <= nints:
            raise UncalFormatError(
                f"{path}: INTSTART={i0}, INTEND={i1} do not satisfy 1 ≤ INTSTART ≤ INTEND ≤ NINTS={nints}"
            )
        if i1 - i0 + 1 != nint:
            raise UncalFormatError(
                f"{path}: SCI holds {nint} integrations but INTEND−INTSTART+1 = {i1 - i0 + 1}"
            )
        zeroframe = None
        zf = _find_hdu(hdul, "ZEROFRAME")
        if zf is not None:
            zoff, zshape = _uint16_image(path, hdul, zf, "ZEROFRAME", st.st_size)
            if zshape != (nint, ny, nx):
                raise UncalFormatError(
                    f"{path}: ZEROFRAME has shape {zshape}, expected {(nint, ny, nx)}"
                )
            zeroframe = (zoff, zshape)
        int_times = None
        it = _find_hdu(hdul, "INT_TIMES")
        if it is not None:
            try:
                int_times = _read_int_times(hdul, it)
            except UncalFormatError as err:
                raise UncalFormatError(f"{path}: {err}") from None
            except (OSError, ValueError, TypeError, KeyError) as err:
                raise UncalFileError(f"{path}: cannot read the INT_TIMES table ({err})") from None
    finally:
        hdul.close()
    return Segment(
        path=str(path),
        header=header,
        shape=(nint, ngroup, ny, nx),
        offset=offset,
        intstart=i0,
        intend=i1,
        exsegnum=header["EXSEGNUM"],
        int_times=int_times,
        zeroframe=zeroframe,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )


def read_uncal_header(path) -> dict:
    """Exposure metadata of one uncal file: primary keywords plus SCI keywords not in the primary.

    Values are plain Python scalars (str, int, float, bool).  INTSTART/INTEND/EXSEGNUM/EXSEGTOT
    default to a single-segment exposure when absent.  The file is checked as by
    :func:`open_uncal` (required keywords, SCI dtype and shape, truncation) and an
    :class:`~daskramp.dims.ExposureError` subclass naming the file is raised otherwise.
    """
    return dict(scan_segment(path).header)


def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ExposureError("no uncal files given")
    return out


def _root_name(path: str) -> str:
    return _SEG_SUFFIX.sub("", Path(path).name)


def scan_segments(paths: str | os.PathLike | Iterable) -> list[Segment]:
    """Scan uncal files of one exposure and return them ordered by INTSTART.

    Checks that they are segments of one exposure (same file root name apart from ``-segNNN``,
    same observation keywords, NINTS, NGROUPS and geometry) and that together they hold
    integrations 1 … NINTS exactly once.
    """
    segs = sorted((scan_segment(p) for p in _as_paths(paths)), key=lambda s: (s.intstart, s.path))
    first = segs[0]
    for s in segs[1:]:
        if _root_name(s.path) != _root_name(first.path):
            raise SegmentMismatchError(
                f"{s.path} and {first.path} are not segments of one exposure (different root names)"
            )
        for key in _SAME_EXPOSURE:
            a, b = first.header.get(key), s.header.get(key)
            if a != b:
                raise SegmentMismatchError(
                    f"{s.path} and {first.path} are not segments of one exposure: {key}={b!r} vs {a!r}"
                )
    nints = first.header["NINTS"]
    expected = 1
    prev = None
    for s in segs:
        if s.intstart > expected:
            where = f"after {prev.path}" if prev else "before the first file"
            raise SegmentMismatchError(
                f"{s.path}: starts at integration {s.intstart} but integrations {expected}–"
                f"{s.intstart - 1} are missing ({where}); a segment file is missing"
            )
        if s.intstart < expected:
            raise SegmentMismatchError(
                f"{s.path}: integrations {s.intstart}–{s.intend} overlap {prev.path} "
                f"({prev.intstart}–{prev.intend})"
            )
        expected = s.intend + 1
        prev = s
    if expected - 1 != nints:
        raise SegmentMismatchError(
            f"{prev.path}: the files end at integration {expected - 1} but NINTS={nints}; "
            f"integrations {expected}–{nints} are missing (segment files missing?)"
        )
    nums = [s.exsegnum for s in segs]
    if len(set(nums)) != len(nums):
        raise SegmentMismatchError(
            f"{', '.join(s.path for s in segs)}: EXSEGNUM values {nums} are not distinct"
        )
    return segs


def exposure_attrs(segs: Sequence[Segment]) -> dict:
    """Exposure metadata from the first segment, without the per-segment keywords."""
    return {k: v for k, v in segs[0].header.items() if k not in PER_SEGMENT_KEYWORDS}


def exposure_int_times(segs: Sequence[Segment]) -> dict | None:
    """INT_TIMES columns for integrations 1 … NINTS gathered from all segments (NaN where absent)."""
    if all(s.int_times is None for s in segs):
        return None
    nints = segs[0].header["NINTS"]
    cols = {c: np.full(nints, np.nan) for c in INT_TIMES_COLUMNS}
    for s in segs:
        if s.int_times is None:
            continue
        num = s.int_times["integration_number"]
        # a segment's table may list the whole exposure; take only the rows of this segment
        keep = (num >= s.intstart) & (num <= s.intend)
        for c in INT_TIMES_COLUMNS:
            cols[c][num[keep] - 1] = s.int_times[c][keep]
    return cols


def read_frames(path, offset: int, frame_shape, i0: int, i1: int, out=None) -> np.ndarray:
    """Integrations ``i0:i1`` (0-based, within the file) of a uint16 image stored as FITS int16.

    Returns a native ``uint16`` array ``(i1 - i0, *frame_shape)`` in DN (fills ``out`` when given).
    Only the bytes of those integrations are mapped, and unmapped before returning.
    """
    return read_window(path, offset, frame_shape, i0, i1, out=out, block_bytes=None)


#: bytes of the file mapped at a time by :func:`read_window` (bounds the mapped pages that
#: count towards a worker's resident memory while a window is read)
WINDOW_BLOCK_BYTES = 16 * 2**20


@numba.njit(cache=True, nogil=True)
def _from_fits_int16(raw, out):
    """``out = byteswap(raw) XOR 0x8000``: FITS big-endian int16 with BZERO = 32768 to uint16
    DN in one pass (numpy's strided, byte-swapping ufunc path costs several times this);
    ``out`` may be float32 (the DN converted in the same pass)."""
    n0, n1, n2, n3 = raw.shape
    for i in range(n0):
        for g in range(n1):
            for y in range(n2):
                for x in range(n3):
                    v = raw[i, g, y, x]
                    out[i, g, y, x] = (((v >> 8) | (v << 8)) & 0xFFFF) ^ 0x8000


def read_window(path, offset: int, frame_shape, i0: int, i1: int, ys: slice = slice(None),
                xs: slice = slice(None), *, groups=None, out=None,
                block_bytes: int | None = WINDOW_BLOCK_BYTES) -> np.ndarray:
    """A window ``[i0:i1, ..., ys, xs]`` of a uint16 image stored as FITS int16, in DN.

    ``frame_shape`` is the shape of one integration (``(ngroups, ny, nx)`` or ``(ny, nx)``);
    ``ys``/``xs`` slice its last two axes (steps of 1).  The file is mapped
    ``block_bytes`` at a time (whole integrations, at least one; None: all at once) and each
    block is unmapped before the next, so reading a narrow column band touches only its own
    bytes and never holds the whole file mapped.  ``groups`` (a sequence of group indices of a
    4-D image) reads only those groups: the pages of the others are never touched.  ``out``:
    where to write the window (uint16, or float32 to have the DN converted in the same pass).
    """
    frame_shape = tuple(frame_shape)
    lead, (ny, nx) = frame_shape[:-2], frame_shape[-2:]
    ys, xs = slice(*ys.indices(ny)), slice(*xs.indices(nx))
    if groups is not None:
        groups = list(groups)
        lead = (len(groups),)
    wshape = (i1 - i0, *lead, len(range(ny)[ys]), len(range(nx)[xs]))
    if out is None:
        out = np.empty(wshape, RAW_DTYPE)
    if out.size == 0:
        return out
    frame = math.prod(frame_shape)
    start = offset + i0 * 2 * frame
    stop = offset + i1 * 2 * frame
    per = (i1 - i0) if block_bytes is None else max(1, int(block_bytes) // (2 * frame))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if stop > size:
            raise UncalFileError(
                f"{path}: truncated: integrations {i0}–{i1 - 1} need bytes {start}–{stop} "
                f"but the file has {size}"
            )
        for a in range(i0, i1, per):
            b = min(a + per, i1)
            lo = offset + a * 2 * frame
            base = lo - lo % mmap.ALLOCATIONGRANULARITY
            mm = mmap.mmap(f.fileno(), offset + b * 2 * frame - base, offset=base,
                           access=mmap.ACCESS_READ)
            raw = None
            try:
                # the big-endian words viewed as native ones: the kernel swaps the bytes
                raw = np.frombuffer(mm, dtype=np.uint16, count=(b - a) * frame, offset=lo - base)
                raw = raw.reshape((b - a, -1, *frame_shape[-2:]))[..., ys, xs]
                if groups is not None:
                    raw = raw[:, groups]
                dst = out[a - i0 : b - i0]
                _from_fits_int16(raw, dst[:, None] if dst.ndim == 3 else dst)
            finally:
                del raw  # the mapping cannot close while an array still points into it
                try:
                    mm.close()
                except BufferError:
                    # numba's first compilation of the kernel in a process may hold the view
                    # until the next garbage collection; the map is then closed by it
                    pass
    return out


def integration_chunks(nints: int, per_chunk: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``per_chunk`` integrations covering 0 … nints."""
    per_chunk = max(1, int(per_chunk))
    return [(a, min(a + per_chunk, nints)) for a in range(0, nints, per_chunk)]


def default_chunk_integrations(frame_bytes: int, target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Integrations per chunk so that a chunk holds about ``target_bytes`` (at least one)."""
    return max(1, int(target_bytes) // max(1, int(frame_bytes)))


def _lazy_image(segs, kind: str, per_chunk: int):
    """One dask array for SCI (kind='sci') or ZEROFRAME (kind='zeroframe') over all segments."""
    from dask.base import tokenize

    ident = [(s.path, s.size, s.mtime_ns) for s in segs]
    name = f"uncal-{kind}-{tokenize(ident, per_chunk)}"
    tasks = Tasks()
    chunks = []
    b = 0
    for s in segs:
        if kind == "sci":
            offset, frame = s.offset, s.frame_shape
        else:
            offset, frame = s.zeroframe[0], s.zeroframe[1][1:]
        for i0, i1 in integration_chunks(s.shape[0], per_chunk):
            tasks.call((name, b) + (0,) * len(frame), read_frames, s.path, offset, frame, i0, i1)
            chunks.append(i1 - i0)
            b += 1
    full = (tuple(chunks),) + tuple((n,) for n in frame)
    return tasks.array(name, full, RAW_DTYPE)


def open_uncal(paths, *, chunks_integrations: int | None = None):
    """Open uncal FITS segments of one exposure as a lazy exposure Dataset.

    Parameters
    ----------
    paths : path or sequence of paths
        The segment files, in any order; they are stitched by INTSTART.
    chunks_integrations : int, optional
        Integrations per dask chunk (chunks never cross a segment boundary, since each task
        reads one file).  Default: about 64 MiB of raw data per chunk.

    Returns
    -------
    xarray.Dataset
        ``data`` uint16 (integration, group, y, x) in DN, lazily read; ``groupdq`` zeros and
        ``pixeldq`` zeros as in :func:`daskramp.dims.make_exposure`; ``zeroframe`` when the files
        have a ZEROFRAME extension; coords ``segment`` (EXSEGNUM), ``integration_number``, the
        INT_TIMES columns; metadata in attrs.
    """
    segs = scan_segments(paths)
    frame_bytes = 2 * math.prod(segs[0].frame_shape)
    per_chunk = chunks_integrations or default_chunk_integrations(frame_bytes)
    data = _lazy_image(segs, "sci", per_chunk)
    zeroframe = None
    if all(s.zeroframe is not None for s in segs):
        zeroframe = _lazy_image(segs, "zeroframe", per_chunk)
    segment = np.concatenate([np.full(s.shape[0], s.exsegnum, np.int32) for s in segs])
    ds = make_exposure(
        data,
        exposure_attrs(segs),
        segment=segment,
        int_times=exposure_int_times(segs),
        zeroframe=zeroframe,
    )
    ds.encoding["daskramp_source"] = {
        "kind": "fits",
        "segments": [(s.path, s.offset, tuple(s.frame_shape), s.shape[0],
                      None if s.zeroframe is None else (s.zeroframe[0], tuple(s.zeroframe[1][1:])))
                     for s in segs],
        "names": {k: v.data.name for k, v in ds.data_vars.items() if hasattr(v.data, "dask")},
    }
    return validate(ds, calibrated=False, source=segs[0].path)
