"""Writing JWST-format FITS files: streamed uncal segments and CRDS-format reference files.

Uncal layout (spec 01 §1): a header-only PRIMARY HDU, a 4-D ``SCI`` image stored as
big-endian int16 with ``BZERO = 32768`` (physical uint16 DN), then BINTABLE extensions
(``INT_TIMES`` and a minimal ``ASDF`` extension, which the official pipeline needs to run
``Step.call()`` on the file; spec 10).

The ``SCI`` data are written incrementally by :class:`UncalWriter`: the header is written with
the final NAXIS values first, then each block of integrations is appended as raw bytes, so an
exposure of any size is written with memory bounded by one block.  The tables after ``SCI``
are small and are built with astropy.

Reference files (spec 01 §2) are written by :func:`write_reference`: a header-only primary HDU
carrying the CRDS keywords, the arrays as image extensions, and a ``DQ_DEF`` table built from
:func:`daskramp.dq.dq_def_table` wherever a ``DQ`` array is present.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

from daskramp.dq import dq_def_table

FITS_BLOCK = 2880

#: ASDF standard versions written in the embedded ASDF extension (core tags only)
_ASDF_HEADER = (
    b"#ASDF 1.0.0\n"
    b"#ASDF_STANDARD 1.5.0\n"
    b"%YAML 1.1\n"
    b"%TAG ! tag:stsci.edu:asdf/\n"
)


def _pad(nbytes: int) -> int:
    """Bytes of padding that complete a FITS block after ``nbytes`` bytes."""
    return (-nbytes) % FITS_BLOCK


def uint16_to_fits(a: np.ndarray) -> np.ndarray:
    """Physical uint16 DN → the stored big-endian int16 representation (``BZERO = 32768``).

    stored = physical − 32768, which for 16-bit integers is the same bit pattern as
    ``physical XOR 0x8000``.  Returns a new array of dtype ``>i2`` (same shape).
    """
    a = np.asarray(a)
    if a.dtype != np.uint16:
        raise TypeError(f"expected uint16 DN, got {a.dtype}")
    return (a ^ np.uint16(0x8000)).view(np.int16).astype(">i2")


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _yaml_block(tree: Mapping, indent: int = 0) -> list[str]:
    lines = []
    pad = " " * indent
    for key, value in tree.items():
        if isinstance(value, Mapping):
            if value:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml_block(value, indent + 2))
            else:
                lines.append(f"{pad}{key}: {{}}")
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    return lines


def minimal_asdf_bytes(tree: Mapping | None = None, *, software: str = "daskramp") -> bytes:
    """Serialize a small metadata tree (nested dicts of scalars) as an ASDF 1.0 file.

    Only core ASDF tags are used (``core/asdf-1.1.0`` for the root and ``core/software-1.0.0``
    for the writing library), so any ASDF reader can open it without extensions.  The tree is
    not a complete datamodel: it is the "minimal tree" that lets stdatamodels take the
    exposure metadata from the FITS headers (no FITS hash is stored, so headers always win).
    """
    try:
        from importlib.metadata import version

        ver = version("daskramp")
    except Exception:  # not installed, e.g. running from a checkout
        ver = "0"
    body = [
        "--- !core/asdf-1.1.0",
        f"asdf_library: !core/software-1.0.0 {{name: {software}, version: '{ver}'}}",
    ]
    body.extend(_yaml_block(dict(tree or {})))
    body.append("...")
    return _ASDF_HEADER + ("\n".join(body) + "\n").encode("utf-8")


def asdf_hdu(tree: Mapping | None = None) -> fits.BinTableHDU:
    """The ``ASDF`` BINTABLE extension: one row, one column ``ASDF_METADATA`` holding the bytes."""
    payload = np.frombuffer(minimal_asdf_bytes(tree), dtype=np.uint8)[None, :]
    col = fits.Column(name="ASDF_METADATA", format=f"{payload.shape[1]}B", array=payload)
    return fits.BinTableHDU.from_columns([col], name="ASDF")


def int_times_hdu(columns: Mapping[str, np.ndarray]) -> fits.BinTableHDU:
    """``INT_TIMES`` table (spec 01 §1): ``integration_number`` int32 and six float64 time columns."""
    names = (
        "integration_number",
        "int_start_MJD_UTC",
        "int_mid_MJD_UTC",
        "int_end_MJD_UTC",
        "int_start_BJD_TDB",
        "int_mid_BJD_TDB",
        "int_end_BJD_TDB",
    )
    cols = [
        fits.Column(name=n, format="J" if n == "integration_number" else "D", array=np.asarray(columns[n]))
        for n in names
    ]
    return fits.BinTableHDU.from_columns(cols, name="INT_TIMES")


def dq_def_hdu() -> fits.BinTableHDU:
    """``DQ_DEF`` table (BIT int32, VALUE uint32, NAME ascii[40], DESCRIPTION ascii[80])."""
    rows = dq_def_table()
    arr = np.array(rows, dtype=[("BIT", "<i4"), ("VALUE", "<u4"), ("NAME", "S40"), ("DESCRIPTION", "S80")])
    return fits.BinTableHDU(arr, name="DQ_DEF")


def _extension_bytes(hdus) -> bytes:
    """Bytes of extension HDUs as they follow other HDUs in a file (no primary)."""
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(buf)
    primary_len = len(fits.PrimaryHDU().header.tostring())
    raw = buf.getvalue()
    if not raw.startswith(b"SIMPLE") or raw[primary_len : primary_len + 8] != b"XTENSION":
        raise RuntimeError("unexpected FITS layout while serializing extensions")
    return raw[primary_len:]


def _header_from(cards: Mapping) -> fits.Header:
    hdr = fits.Header()
    for key, value in cards.items():
        hdr[key] = value  # a (value, comment) tuple sets both
    return hdr


class UncalWriter:
    """Stream a level-1b uncal FITS file: PRIMARY, SCI (written block by block), tables.

    Parameters
    ----------
    path : path-like
        Output file; written to ``path + ".part"`` and renamed on :meth:`close`.
    primary : mapping
        Primary header keywords (``KEY: value`` or ``KEY: (value, comment)``).
    shape : tuple of int
        ``(nints, ngroups, ny, nx)`` of this segment's SCI array.
    extensions : list of astropy HDUs
        Table HDUs appended after SCI (e.g. :func:`int_times_hdu`, :func:`asdf_hdu`).

    Use :meth:`write` with consecutive blocks of whole integrations, either physical uint16
    arrays ``(k, ngroups, ny, nx)`` or already-encoded ``>i2`` bytes of the same size, then
    :meth:`close` (or use the writer as a context manager).
    """

    def __init__(self, path, primary: Mapping, shape, extensions=(), sci_cards: Mapping | None = None):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self._frame_bytes = int(np.prod(self.shape[1:])) * 2
        self._written = 0
        self._extensions = list(extensions)
        self._tmp = self.path.with_name(self.path.name + ".part")
        phdr = fits.PrimaryHDU(header=_header_from(primary)).header
        phdr["EXTEND"] = True
        nints, ngroups, ny, nx = self.shape
        sci = fits.Header()
        sci["XTENSION"] = "IMAGE"
        sci["BITPIX"] = 16
        sci["NAXIS"] = 4
        sci["NAXIS1"] = nx
        sci["NAXIS2"] = ny
        sci["NAXIS3"] = ngroups
        sci["NAXIS4"] = nints
        sci["PCOUNT"] = 0
        sci["GCOUNT"] = 1
        sci["BSCALE"] = 1
        sci["BZERO"] = 32768
        sci["EXTNAME"] = ("SCI", "extension name")
        for key, value in (sci_cards or {}).items():
            sci[key] = value
        self._fh = open(self._tmp, "wb")
        self._fh.write(phdr.tostring().encode("ascii"))
        self._fh.write(sci.tostring().encode("ascii"))

    def write(self, block) -> None:
        """Append whole integrations: a uint16 DN array, an encoded ``>i2`` array, or its bytes."""
        if isinstance(block, np.ndarray):
            if block.ndim != 4 or block.shape[1:] != self.shape[1:]:
                raise ValueError(f"block shape {block.shape} does not match {self.shape}")
            if block.dtype == np.uint16:
                block = uint16_to_fits(block)
            elif block.dtype != np.dtype(">i2"):
                raise TypeError(f"expected uint16 or >i2 block, got {block.dtype}")
            data = memoryview(np.ascontiguousarray(block)).cast("B")
        else:
            data = memoryview(block).cast("B")
        if data.nbytes % self._frame_bytes:
            raise ValueError("block does not hold a whole number of integrations")
        n = data.nbytes // self._frame_bytes
        if self._written + n > self.shape[0]:
            raise ValueError(f"too many integrations: {self._written + n} > {self.shape[0]}")
        self._fh.write(data)
        self._written += n

    def close(self) -> Path:
        if self._fh.closed:
            return self.path
        if self._written != self.shape[0]:
            self._fh.close()
            os.unlink(self._tmp)
            raise ValueError(f"only {self._written} of {self.shape[0]} integrations were written")
        self._fh.write(b"\0" * _pad(self._written * self._frame_bytes))
        if self._extensions:
            self._fh.write(_extension_bytes(self._extensions))
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self._tmp.exists():
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


#: numpy dtype of each reference extension (spec 01 §2)
_REF_DTYPES = {
    "SCI": np.float32,
    "ERR": np.float32,
    "DQ": np.uint32,
    "COEFFS": np.float32,
    "INV_COEFFS": np.float32,
    "AVDRKCUR": np.float32,
}


def write_reference(path, *, meta: Mapping, arrays: Mapping[str, np.ndarray], overwrite: bool = True) -> Path:
    """Write a CRDS-format reference file.

    Parameters
    ----------
    path : path-like
        Output FITS file.
    meta : mapping
        Primary header keywords: REFTYPE, DESCRIP, AUTHOR, USEAFTER, PEDIGREE, TELESCOP,
        INSTRUME, DETECTOR, SUBARRAY, SUBSTRT1/2, SUBSIZE1/2, FASTAXIS, SLOWAXIS and any
        selectors (READPATT, EXP_TYPE, NFRAMES, GROUPGAP …).
    arrays : mapping
        Extension name → array in DMS orientation, e.g. ``{"SCI": …, "DQ": …}``; cast to the
        dtype the reference schemas use (float32 data, uint32 DQ).  A ``DQ_DEF`` table is
        added when ``DQ`` is present.
    """
    required = ("REFTYPE", "INSTRUME", "DETECTOR", "SUBARRAY", "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"reference header lacks {', '.join(missing)}")
    hdus: list = [fits.PrimaryHDU(header=_header_from(meta))]
    for name, arr in arrays.items():
        dtype = _REF_DTYPES.get(name, np.float32)
        hdus.append(fits.ImageHDU(np.ascontiguousarray(arr, dtype=dtype), name=name))
    if "DQ" in arrays:
        hdus.append(dq_def_hdu())
    path = Path(path)
    fits.HDUList(hdus).writeto(path, overwrite=overwrite)
    return path
