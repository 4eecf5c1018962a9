"""Reference files (CRDS format): selection from headers, subarray cut-outs, validation.

A :class:`RefSet` holds the reference files of one exposure, one per reftype in
:data:`REFTYPES`.  Files are chosen from a directory of CRDS-format FITS files by their
primary headers (spec 01 §2), or given explicitly per reftype (``overrides``, like the
official ``override_<reftype>`` step arguments; ``"N/A"`` means "no file: skip the step").

Selection follows the CRDS matching rules (spec 11 §1–§2), applied to the reference headers
instead of an rmap:

1. ``REFTYPE`` equals the reftype and ``INSTRUME`` the exposure's.  A reftype that does not
   apply to the instrument (a "—" cell of spec 11 §1, e.g. SUPERBIAS for MIRI, see
   :func:`not_applicable`) is never selected; its steps are skipped.
2. Only the selection keywords of the reftype and instrument (:data:`SELECTION_KEYWORDS`)
   select; other keywords of a header (e.g. READPATT on a NIRCam dark) are ignored.  For
   each selector the CRDS pattern keyword (:data:`PATTERN_KEYWORDS`, e.g. ``P_READPA``)
   wins over the plain one.  A cell is a value or an or-list ``A|B|`` (trailing bar
   allowed).  Values are compared upper case, numbers as floats (``4`` ≡ ``'4'`` ≡
   ``'4.0'``), booleans as ``T``/``F``.  A literal or or-list hit and ``ANY`` weigh 1;
   ``N/A`` and ``GENERIC`` match anything and weigh 0; any other value rejects the file.
   An exposure without the keyword matches only ``ANY``/``N/A``/``GENERIC`` cells (CRDS
   binds it to ``UNDEFINED``).
3. A reference header that does not carry a selector keyword at all does not restrict on
   it (weight 0): there is no rmap here, only the file's own header.  ``DETECTOR`` is the
   exception: a file without it is rejected (spec 01 §2 requires it, and it is checked
   again when the file is read).
4. ``SUBARRAY``: a full-frame file (``FULL``) serves every subarray, weight 0 (the step cuts
   it out); then, as for a ``GENERIC`` file, its ``SUBSTRT1/2``/``SUBSIZE1/2`` place it on
   the detector and do not select (NIRSpec SUPERBIAS).  The DARK is never cut out: for it
   ``FULL`` is a plain value, matching only full-frame exposures, and its geometry selects.
5. Files whose ``USEAFTER`` ('YYYY-MM-DD HH:MM:SS', a ``T`` read as a space, or the old
   'Mon DD YYYY HH:MM:SS') is later than the observation (``DATE-OBS`` + ``TIME-OBS``) are
   rejected.  An exposure without ``DATE-OBS`` is not restricted by USEAFTER (CRDS would
   refuse it); one without ``TIME-OBS`` is taken at 00:00:00; a file without USEAFTER
   counts as the oldest.
6. Among the remaining files the highest total weight wins; among darks of equal weight,
   the timing of the exposure is preferred: ``NFRAMES``/``GROUPGAP`` equal to the
   exposure's, then ``NFRAMES=1, GROUPGAP=0`` (averaged per group by dark_current), then
   anything else; then the latest USEAFTER.  Two files still equal are an error listing them.

Every file of a reftype that does not apply is recorded with its reason
(:meth:`RefSet.rejections`).  A required reftype with no applicable file is a
:class:`ReferenceFileError` of one line naming the reftype, the exposure's selector values,
the directory and every rejected file with its reason; a reftype that is not required is
then "N/A" and :meth:`RefSet.reason` says why.

Cut-outs follow jwst ``lib/reffile_utils`` (spec 01 §3): mask, saturation, superbias,
linearity (COEFFS/INV_COEFFS keep their leading axis), gain, readnoise and flat are cut to the
science subarray; the dark is not, and its image shape must equal the science image.

FLAT is read only for clean_flicker_noise's ``apply_flat_field`` (only when ``required``;
:data:`BASE_REFTYPES` are the others), selected by the keywords of the crds flat rmaps, and
its zeros and non-finite values are replaced as the official step replaces them
(:func:`daskramp.kernels.clean_flicker_noise.prepared_flat`).  Only the
needed part of each array is read (``ImageHDU.section``), so a full-frame reference costs
the size of the subarray.  Arrays come back native-endian: float32 for images and
coefficients, uint32 for DQ.

Extensions stage 1 never uses are not loaded: DQ_DEF, the superbias and dark ERR.
The dark SCI cube is read only up to the last frame the exposure needs (see
:func:`dark_planes_needed`); its header keeps the file's NGROUPS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "flat")

#: the reftypes the default Detector1 steps read (FLAT only with clean_flicker_noise's
#: ``apply_flat_field``)
BASE_REFTYPES = REFTYPES[:-1]

#: reftypes whose arrays are cut to the science subarray (dark_current does not cut)
CUT_REFTYPES = frozenset({"mask", "saturation", "superbias", "linearity", "gain", "readnoise", "flat"})

FULL_FRAME = 2048
NA = "N/A"
#: the reason of an option's reftype the steps that run do not read
NOT_NEEDED = "not needed by the steps that run"


@dataclass(frozen=True)
class _Ext:
    ndim: int
    kind: str  # "float" → float32, "dq" → uint32
    required: bool = True


#: extensions loaded per reftype; the first one is the primary array of the model
LAYOUT: dict[str, dict[str, _Ext]] = {
    "mask": {"DQ": _Ext(2, "dq")},
    "saturation": {"SCI": _Ext(2, "float"), "DQ": _Ext(2, "dq")},
    "superbias": {"SCI": _Ext(2, "float"), "DQ": _Ext(2, "dq")},
    "linearity": {
        "COEFFS": _Ext(3, "float"),
        "DQ": _Ext(2, "dq"),
        "INV_COEFFS": _Ext(3, "float", required=False),
    },
    "dark": {
        "SCI": _Ext(3, "float"),
        "DQ": _Ext(2, "dq"),
        "AVDRKCUR": _Ext(2, "float", required=False),
    },
    "gain": {"SCI": _Ext(2, "float")},
    "readnoise": {"SCI": _Ext(2, "float")},
    # read by clean_flicker_noise with apply_flat_field (its SCI only, as the official step)
    "flat": {"SCI": _Ext(2, "float")},
}

_D, _S, _R, _E = "DETECTOR", "SUBARRAY", "READPATT", "EXP_TYPE"
_GEOMETRY = ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")

#: selection keywords per instrument and reftype (spec 11 §1; INSTRUME and the observation
#: date are always used too); a reftype missing for an instrument does not apply to it
SELECTION_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "FGS": {
        "mask": (_D, _S, _E),
        "saturation": (_D,),
        "superbias": (_D, _R, _S),
        "linearity": (_D, _S),
        "dark": (_D, _R, _S),
        "gain": (_D, _S),
        "readnoise": (_D, _R, _S),
        "flat": (_D,),
    },
    "MIRI": {
        "mask": (_D, _S),
        "saturation": (_D,),
        "linearity": (_D, _S, "BAND", "FILTER"),
        "dark": (_D, _R, _S),
        "gain": (_D, _S),
        "readnoise": (_D, _R, _S),
        "flat": (_D, "FILTER", "BAND", _R, _S),
    },
    "NIRCAM": {
        "mask": (_D, _S),
        "saturation": (_D,),
        "superbias": (_D, _R, _S),
        "linearity": (_D, _S),
        # no READPATT: one dark serves RAPID, BRIGHT1, … (frames are averaged per group)
        "dark": (_D, _E, "NOUTPUTS", _S),
        "gain": (_D, _S),
        "readnoise": (_D, _R, _S),
        "flat": (_D, "FILTER", "PUPIL"),
    },
    "NIRISS": {
        "mask": (_D, _S),
        "saturation": (_D,),
        "superbias": (_D, _R, _S),
        "linearity": (_D, _S),
        "dark": (_D, _R, _S),
        "gain": (_D, _S),
        "readnoise": (_D, _R, _S),
        "flat": (_D, "FILTER"),
    },
    "NIRSPEC": {
        "mask": (_D, _S, _R),
        "saturation": (_D, _S),
        "superbias": (_D, _R, _S, *_GEOMETRY),
        "linearity": (_D, _S),
        "dark": (_D, _R, _S, *_GEOMETRY),
        "gain": (_D, _S),
        "readnoise": (_D, _R, _S),
    },
}

#: CRDS pattern keyword of a selector: an or-list ending in a bar (``P_READPA = 'NIS|NISRAPID|'``)
#: that wins over the plain keyword
PATTERN_KEYWORDS: dict[str, str] = {
    "READPATT": "P_READPA",
    "EXP_TYPE": "P_EXP_TY",
    "DETECTOR": "P_DETECT",
    "SUBARRAY": "P_SUBARR",
    "FILTER": "P_FILTER",
    "PUPIL": "P_PUPIL",
    "BAND": "P_BAND",
    "CHANNEL": "P_CHANNE",
    "MODULE": "P_MODULE",
    "GRATING": "P_GRATIN",
}

#: cell values matching anything with weight 0 (GENERIC is N/A by the rmap substitutions)
_DONT_CARE = frozenset({"N/A", "GENERIC", "NOT APPLICABLE", "NOT_APPLICABLE"})
#: cell values matching anything with weight 1
_ANY = frozenset({"ANY", "*"})
_FULL_NAMES = frozenset({"FULL"})
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ISO_T = re.compile(r"^(\d{4}-\d{2}-\d{2})T")

#: the step that cannot run without a reftype and can be skipped instead (hint of the
#: missing-reference error); gain and readnoise have none (jump and ramp_fit need them)
_SKIPPABLE_STEP = {
    "mask": "dq_init",
    "saturation": "saturation",
    "superbias": "superbias",
    "linearity": "linearity",
    "dark": "dark_current",
}
#: the option that makes a reftype needed, for the missing-reference hint
_OPTION = {"flat": "clean_flicker_noise.apply_flat_field=false"}


class ReferenceFileError(ValueError):
    """A reference file is missing, ambiguous or incompatible with the exposure."""


class ReferenceFileWarning(UserWarning):
    """A reference file header disagrees with its arrays; the arrays win (as in jwst)."""


@dataclass(frozen=True)
class RefFile:
    """One reference file, its primary header and its arrays cut to the science subarray.

    Attributes
    ----------
    reftype : str
        One of :data:`REFTYPES`.
    path : Path
        The FITS file.
    header : dict
        Primary header keywords (COMMENT/HISTORY dropped).
    arrays : dict of str to numpy.ndarray
        EXTNAME → array, dims ``(y, x)`` or ``(plane, y, x)``; already cut to the science
        subarray for every reftype but the dark.
    sha256 : str
        Hex digest of the file bytes.
    """

    reftype: str
    path: Path
    header: dict = field(repr=False)
    arrays: dict = field(repr=False)
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


# ---------------------------------------------------------------------------- small helpers


def _err(reftype: str, path, msg: str) -> ReferenceFileError:
    where = f" {Path(path).name}" if path is not None else ""
    return ReferenceFileError(f"{reftype.upper()} reference{where}: {msg}")


def _warn(reftype: str, path, msg: str) -> None:
    warnings.warn(
        f"{reftype.upper()} reference {Path(path).name}: {msg}", ReferenceFileWarning, stacklevel=3
    )


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _header_dict(header: fits.Header) -> dict:
    out: dict = {}
    for card in header.cards:
        key = card.keyword
        if not key or key in ("COMMENT", "HISTORY") or key in out:
            continue
        value = card.value
        if isinstance(value, fits.card.Undefined):
            value = None
        out[key] = value
    return out


def _norm(value) -> str:
    return str(value).strip().upper()


def _condition(value) -> str:
    """A header or exposure value as CRDS compares it: upper case, numbers as floats
    (``4`` ≡ ``'4'`` ≡ ``'4.0'`` → ``'4.0'``), booleans as ``'T'``/``'F'``."""
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    s = _norm(value)
    if s in ("TRUE", "FALSE"):
        return s[0]
    if _NUMBER.match(s):
        return repr(float(s))
    return s


def _cell_values(cell) -> list[str]:
    """The conditioned values of a reference cell: one value or an or-list ``A|B|``."""
    parts = cell.split("|") if isinstance(cell, str) else [cell]
    return [v for v in (_condition(p) for p in parts) if v]


def match_weight(cell, value, *, full_frame: bool = False) -> int | None:
    """CRDS match of one reference header cell against the exposure's value.

    Parameters
    ----------
    cell : str, number or None
        The reference value (None: the header does not carry the keyword).
    value : str, number or None
        The exposure's value (None: the exposure does not have the keyword; CRDS binds it
        to ``UNDEFINED``, which only ``ANY``/``N/A``/``GENERIC`` cells match).
    full_frame : bool
        ``FULL`` in the cell serves every value (a full-frame reference cut to any subarray).

    Returns
    -------
    int or None
        1 for a hit (a value, an or-list member, ``ANY``), 0 for a cell that matches
        anything without preference (absent, ``N/A``, ``GENERIC``, ``FULL`` with
        ``full_frame``), None for a mismatch.
    """
    if cell is None:
        return 0
    values = _cell_values(cell)
    if not values or all(v in _DONT_CARE for v in values):
        return 0
    if any(v in _ANY for v in values):
        return 1
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    v = _condition(value)
    if v in values:
        return 1
    if v in _DONT_CARE or any(x in _DONT_CARE for x in values):
        return 0
    if full_frame and any(x in _FULL_NAMES for x in values):
        return 0
    return None


def _ref_cell(header: Mapping, key: str) -> tuple[str, object]:
    """``(keyword, value)`` selecting on ``key`` in a reference header: the CRDS pattern
    keyword when present, else the plain one; value None when neither is there."""
    for k in (PATTERN_KEYWORDS.get(key), key):
        if k is not None and header.get(k) not in (None, ""):
            return k, header[k]
    return key, None


def _selection_keywords(reftype: str, sci: Mapping) -> tuple[str, ...]:
    inst = _norm(sci.get("INSTRUME", ""))
    table = SELECTION_KEYWORDS.get(inst)
    if table is None:
        raise ReferenceFileError(
            f"{reftype.upper()} reference: no selection rules for the exposure's "
            f"INSTRUME={sci.get('INSTRUME')!r}; known: {', '.join(SELECTION_KEYWORDS)}"
        )
    return table[reftype.lower()]


def not_applicable(reftype: str, exposure_attrs: Mapping) -> str | None:
    """Why ``reftype`` does not apply to the exposure's instrument (spec 11 §1 "—" cells,
    e.g. ``"SUPERBIAS does not apply to MIRI"``), or None when it applies (or the
    instrument is not one of :data:`SELECTION_KEYWORDS`)."""
    inst = _norm(exposure_attrs.get("INSTRUME", ""))
    table = SELECTION_KEYWORDS.get(inst)
    if table is None or reftype.lower() in table:
        return None
    return f"{reftype.upper()} does not apply to {inst}"


def parse_useafter(value) -> datetime:
    """Parse a CRDS USEAFTER value (ISO ``2022-05-01T00:00:00`` or ``Jan 01 2022 00:00:00``)."""
    s = _ISO_T.sub(r"\1 ", str(value).strip())
    for fmt in (
        "%Y-%m-%d %H:%M:%S.%f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d",
        "%b %d %Y %H:%M:%S",
        "%b %d %Y",
    ):
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    raise ValueError(f"unrecognised USEAFTER {value!r}")


def _observation_time(attrs: Mapping) -> datetime | None:
    date = attrs.get("DATE-OBS")
    if not date:
        return None
    time = attrs.get("TIME-OBS") or "00:00:00"
    try:
        return parse_useafter(f"{date} {time}")
    except ValueError:
        try:
            return parse_useafter(date)
        except ValueError:
            return None


def dark_planes_needed(attrs: Mapping, dark_header: Mapping, nplanes: int) -> int:
    """Number of leading dark SCI planes the dark_current step can use for this exposure.

    With the dark's NFRAMES/GROUPGAP equal to the science values, plane g serves group g, so
    NGROUPS planes suffice.  Otherwise planes are indexed as frames, up to
    ``NGROUPS·NFRAMES + (NGROUPS−1)·GROUPGAP`` (spec 05).  A dark shorter than that is
    returned whole (dark_current extrapolates from its last two planes).
    """
    try:
        n_g, n_f, gap = int(attrs["NGROUPS"]), int(attrs["NFRAMES"]), int(attrs["GROUPGAP"])
    except (KeyError, TypeError, ValueError):
        return nplanes
    d_f = int(dark_header.get("NFRAMES") or 1)
    d_g = int(dark_header.get("GROUPGAP") or 0)
    need = n_g if (d_f, d_g) == (n_f, gap) else n_g * n_f + (n_g - 1) * gap
    return min(nplanes, max(need, 1))


# ---------------------------------------------------------------------------- subarray rules


def subarray_window(
    reftype: str, path, ref_header: Mapping, ref_shape: tuple[int, int], sci: Mapping
):
    """Slices ``(ys, xs)`` cutting a reference to the science subarray, or None if it matches.

    Implements ``ref_matches_sci`` / ``get_subarray_model`` (spec 01 §3).  ``ref_shape`` is
    the reference image shape (ny, nx) read from the FITS header (NAXIS2, NAXIS1).

    Raises
    ------
    ReferenceFileError
        Missing science subarray keywords, reference keywords missing on a non-2048×2048
        array, a start < 1, or a science window outside the reference.
    """
    try:
        sx, sy = int(sci["SUBSTRT1"]), int(sci["SUBSTRT2"])
        nx_s, ny_s = int(sci["SUBSIZE1"]), int(sci["SUBSIZE2"])
    except (KeyError, TypeError, ValueError):
        raise _err(
            reftype, path, "the exposure lacks SUBSTRT1/2 or SUBSIZE1/2; cannot cut the reference"
        ) from None
    if sx < 1 or sy < 1:
        raise _err(reftype, path, f"exposure subarray start SUBSTRT1={sx}, SUBSTRT2={sy} is < 1")
    ny_d, nx_d = ref_shape
    keys = ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")
    vals = [ref_header.get(k) for k in keys]
    if any(v is None for v in vals):
        if (ny_d, nx_d) != (FULL_FRAME, FULL_FRAME):
            raise _err(
                reftype,
                path,
                f"SUBSTRT1/2, SUBSIZE1/2 missing and the array is {ny_d}×{nx_d}, not full frame "
                f"{FULL_FRAME}×{FULL_FRAME}; cannot place it on the detector",
            )
        _warn(
            reftype,
            path,
            "SUBSTRT/SUBSIZE keywords missing; treating the 2048×2048 array as full frame",
        )
        rx, ry, nx_r, ny_r = 1, 1, FULL_FRAME, FULL_FRAME
    else:
        rx, ry, nx_r, ny_r = (int(v) for v in vals)
    if rx < 1 or ry < 1:
        raise _err(reftype, path, f"subarray start SUBSTRT1={rx}, SUBSTRT2={ry} is < 1")
    if nx_r != nx_d:
        _warn(reftype, path, f"SUBSIZE1={nx_r} disagrees with the array width {nx_d}; using {nx_d}")
        nx_r = nx_d
    if ny_r != ny_d:
        _warn(
            reftype, path, f"SUBSIZE2={ny_r} disagrees with the array height {ny_d}; using {ny_d}"
        )
        ny_r = ny_d
    if (rx, ry, nx_r, ny_r) == (sx, sy, nx_s, ny_s):
        return None
    x0, y0 = sx - rx, sy - ry
    x1, y1 = x0 + nx_s, y0 + ny_s
    if x0 < 0 or y0 < 0 or x1 > nx_r or y1 > ny_r:
        raise _err(
            reftype,
            path,
            f"science subarray (SUBSTRT1={sx}, SUBSTRT2={sy}, SUBSIZE1={nx_s}, SUBSIZE2={ny_s}) lies "
            f"outside the reference (SUBSTRT1={rx}, SUBSTRT2={ry}, SUBSIZE1={nx_r}, SUBSIZE2={ny_r}): "
            f"slice x {x0}:{x1}, y {y0}:{y1}",
        )
    return slice(y0, y1), slice(x0, x1)


# ---------------------------------------------------------------------------- loading


def _convert(reftype, path, ext: str, spec: _Ext, arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if spec.kind == "dq":
        if kind not in "ui":
            raise _err(
                reftype,
                path,
                f"extension {ext} has dtype {arr.dtype}, expected an unsigned integer (uint32) DQ array",
            )
        if kind == "i" and arr.size and arr.min() < 0:
            raise _err(reftype, path, f"extension {ext} holds negative DQ values")
        return np.ascontiguousarray(arr, dtype=np.uint32)
    if kind != "f":
        raise _err(reftype, path, f"extension {ext} has dtype {arr.dtype}, expected float32")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_reffile(reftype: str, path, sci: Mapping) -> RefFile:
    """Read one reference file for the exposure described by ``sci`` (FITS keywords).

    Checks REFTYPE, INSTRUME and DETECTOR against the exposure, reads the stage-1
    extensions (only the science window of each), validates their dtypes and shapes, and
    cuts them to the science subarray where spec 01 §3 says so.
    """
    reftype = reftype.lower()
    if reftype not in LAYOUT:
        raise ReferenceFileError(f"unknown reftype {reftype!r}; known: {REFTYPES}")
    path = Path(path)
    if not path.is_file():
        raise _err(reftype, path, f"file not found: {path}")
    layout = LAYOUT[reftype]
    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
    except OSError as exc:
        raise _err(reftype, path, f"cannot be read as FITS ({exc})") from None
    with hdul:
        header = _header_dict(hdul[0].header)
        _check_identity(reftype, path, header, sci)
        names = {h.name.upper(): h for h in hdul}
        missing = [e for e, s in layout.items() if s.required and e not in names]
        if missing:
            raise _err(
                reftype,
                path,
                f"missing extension(s) {missing}; a {reftype.upper()} file needs {[e for e, s in layout.items() if s.required]}",
            )
        primary = next(iter(layout))
        main = names[primary]
        shape = tuple(main.shape)
        if len(shape) != layout[primary].ndim:
            raise _err(
                reftype,
                path,
                f"extension {primary} has shape {shape}, expected {layout[primary].ndim} dimensions",
            )
        yx = shape[-2:]
        if reftype in CUT_REFTYPES:
            # keywords live in the primary header; fall back to the array's own header
            kw = {
                k: header.get(k, main.header.get(k))
                for k in ("SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2")
            }
            window = subarray_window(reftype, path, kw, yx, sci)
        else:
            window = None
            want = (
                (int(sci["SUBSIZE2"]), int(sci["SUBSIZE1"]))
                if "SUBSIZE1" in sci and "SUBSIZE2" in sci
                else None
            )
            if want is not None and tuple(yx) != want:
                raise _err(
                    reftype,
                    path,
                    f"image shape {yx[0]}×{yx[1]} does not equal the science image {want[0]}×{want[1]} "
                    f"(SUBARRAY={sci.get('SUBARRAY')}); darks are not cut out: supply a dark for this subarray",
                )
        arrays: dict[str, np.ndarray] = {}
        for ext, spec in layout.items():
            if ext not in names:
                continue
            hdu = names[ext]
            eshape = tuple(hdu.shape)
            if len(eshape) != spec.ndim or eshape[-2:] != tuple(yx):
                raise _err(
                    reftype,
                    path,
                    f"extension {ext} has shape {eshape}, expected {spec.ndim} dimensions ending in {tuple(yx)} like {primary}",
                )
            lead: tuple = ()
            if spec.ndim == 3:
                n = eshape[0]
                if reftype == "dark" and ext == "SCI":
                    n = dark_planes_needed(sci, header, n)
                lead = (slice(0, n),)
            key = lead + (window if window is not None else (slice(None), slice(None)))
            arrays[ext] = _convert(reftype, path, ext, spec, hdu.section[key])
    if reftype == "flat":
        # Detector1 reads a FLAT only for clean_flicker_noise's apply_flat_field, which first
        # replaces its zeros and non-finite values by a smoothed local level (on the cut
        # image, as the official step); the provenance keeps the file's checksum
        from ..kernels.clean_flicker_noise import prepared_flat

        arrays["SCI"] = prepared_flat(arrays["SCI"])
    return RefFile(
        reftype=reftype, path=path.resolve(), header=header, arrays=arrays, sha256=file_sha256(path)
    )


def _check_identity(reftype: str, path, header: Mapping, sci: Mapping) -> None:
    rt = header.get("REFTYPE")
    if rt is None or _norm(rt) != reftype.upper():
        raise _err(reftype, path, f"REFTYPE is {rt!r}, expected {reftype.upper()!r}")
    for key in ("INSTRUME", "DETECTOR"):
        if sci.get(key) is None:
            continue
        _, value = _ref_cell(header, key) if key == "DETECTOR" else (key, header.get(key))
        if value is None:
            raise _err(reftype, path, f"{key} keyword missing; the exposure has {key}={sci[key]!r}")
        if key == "INSTRUME":
            ok = _norm(value) == _norm(sci[key])
        else:
            ok = match_weight(value, sci[key]) is not None
        if not ok:
            raise _err(
                reftype, path, f"{key}={value!r} does not match the exposure {key}={sci[key]!r}"
            )


# ---------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _Candidate:
    path: Path
    header: dict
    score: tuple
    useafter: datetime


def _scan(refs_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(refs_dir.glob("*.fits")):
        try:
            hdr = _header_dict(fits.getheader(p, 0))
        except OSError as exc:
            warnings.warn(
                f"{p.name}: skipped, not a readable FITS file ({exc})",
                ReferenceFileWarning,
                stacklevel=3,
            )
            continue
        if hdr.get("REFTYPE") is not None:
            out.append((p, hdr))
    return out


def _rank(reftype: str, hdr: Mapping, sci: Mapping) -> tuple[tuple | None, str]:
    """``((weight, timing), "")`` for an applicable file; ``(None, reason)`` otherwise."""
    if _norm(hdr.get("INSTRUME", "")) != _norm(sci.get("INSTRUME", "")):
        return None, f"INSTRUME={hdr.get('INSTRUME')!r}, exposure {sci.get('INSTRUME')!r}"
    cut = reftype in CUT_REFTYPES
    # a full-frame (or any-subarray) file of a reftype that is cut out serves every
    # subarray: its SUBSTRT/SUBSIZE place it on the detector, they do not select
    sub = _ref_cell(hdr, "SUBARRAY")[1]
    placed = cut and (
        sub is None or any(v in _FULL_NAMES or v in _DONT_CARE for v in _cell_values(sub))
    )
    weight = 0
    for key in _selection_keywords(reftype, sci):
        if key in _GEOMETRY and placed:
            continue
        kw, cell = _ref_cell(hdr, key)
        if key == "DETECTOR" and cell is None:
            return None, "no DETECTOR keyword"
        w = match_weight(cell, sci.get(key), full_frame=cut and key == "SUBARRAY")
        if w is None:
            exp = (f"exposure has no {key}" if sci.get(key) is None
                   else f"exposure {sci[key]!r}")
            why = f"{kw}={cell!r}, {exp}"
            if key == "SUBARRAY" and not cut and any(v in _FULL_NAMES for v in _cell_values(cell)):
                why += "; darks are not cut out"
            return None, why
        weight += w
    timing = 0
    if reftype == "dark" and sci.get("NFRAMES") is not None:
        d = (int(hdr.get("NFRAMES") or 1), int(hdr.get("GROUPGAP") or 0))
        s = (int(sci["NFRAMES"]), int(sci.get("GROUPGAP") or 0))
        timing = 2 if d == s else 1 if d == (1, 0) else 0
    return (weight, timing), ""


def select(reftype: str, refs_dir, sci: Mapping) -> Path | None:
    """Path of the best reference file of ``reftype`` in ``refs_dir`` for the exposure, or
    None (no file applies, or the reftype does not apply to the instrument).

    Raises
    ------
    ReferenceFileError
        Two or more equally good files with the same USEAFTER, an unreadable USEAFTER, or an
        instrument without selection rules.
    """
    if not_applicable(reftype, sci):
        return None
    return _select(reftype, Path(refs_dir), sci, _scan(Path(refs_dir)))[0]


def _select(reftype: str, refs_dir: Path, sci: Mapping, scanned) -> tuple[Path | None, list[str]]:
    """``(best path or None, ["name (reason)", …] for every file of the reftype rejected)``."""
    obs = _observation_time(sci)
    candidates: list[_Candidate] = []
    rejected: list[str] = []
    for path, hdr in scanned:
        if _norm(hdr["REFTYPE"]) != reftype.upper():
            continue
        score, why = _rank(reftype, hdr, sci)
        if score is None:
            rejected.append(f"{path.name} ({why})")
            continue
        ua = hdr.get("USEAFTER")
        if ua is None:
            useafter = datetime.min
        else:
            try:
                useafter = parse_useafter(ua)
            except ValueError:
                raise _err(reftype, path, f"USEAFTER={ua!r} is not a date") from None
        if obs is not None and useafter > obs:
            rejected.append(
                f"{path.name} (USEAFTER {useafter.isoformat(' ')} is after the observation "
                f"{obs.isoformat(' ')})"
            )
            continue
        candidates.append(_Candidate(path, hdr, score, useafter))
    if not candidates:
        return None, rejected
    best = max(c.score for c in candidates)
    top = [c for c in candidates if c.score == best]
    newest = max(c.useafter for c in top)
    top = [c for c in top if c.useafter == newest]
    if len(top) > 1:
        names = ", ".join(sorted(c.path.name for c in top))
        raise ReferenceFileError(
            f"{reftype.upper()} reference: {len(top)} files in {refs_dir} match equally well "
            f"(same selectors and USEAFTER {top[0].header.get('USEAFTER')!r}): {names}; "
            f"remove one or give override {reftype}=<file>"
        )
    return top[0].path, rejected


def _exposure_values(reftype: str, sci: Mapping) -> str:
    keys = ("INSTRUME", *_selection_keywords(reftype, sci), "DATE-OBS", "TIME-OBS")
    return ", ".join(f"{k}={sci.get(k)!r}" for k in keys if sci.get(k) is not None)


def _no_file(reftype: str, refs_dir: Path, sci: Mapping, rejected: list[str]) -> str:
    """One line: the reftype, the exposure's selector values, the directory, every rejection."""
    rt = reftype.upper()
    why = (f"rejected: {', '.join(rejected)}" if rejected
           else f"the directory holds no {rt} file")
    return (f"{rt} reference: no file in {refs_dir} applies to the exposure "
            f"({_exposure_values(reftype, sci)}); {why}")


def _hint(reftype: str) -> str:
    step = _SKIPPABLE_STEP.get(reftype)
    if reftype in _OPTION:
        return (f"add one, give one with --override-{reftype} FILE, or set "
                f"--steps.{_OPTION[reftype]}")
    if step is None:
        return f"add one, or give one with --override-{reftype} FILE"
    return (f"add one, or skip the step with --steps.{step}.skip=true "
            f"or --override-{reftype} N/A")


def _clear_bits(f: RefFile | None, ext: str, bits: int) -> RefFile | None:
    """``f`` with ``bits`` cleared in its (uint32 DQ) extension ``ext``."""
    if f is None or ext not in f.arrays:
        return f
    arrays = dict(f.arrays)
    arrays[ext] = arrays[ext] & ~np.uint32(bits)
    return dataclasses.replace(f, arrays=arrays)


def _array_of(refs: RefSet, reftype: str, ext: str):
    """One array of a set (a task of :meth:`RefSet.lazy`)."""
    return refs.get(reftype).arrays[ext]


class RefSet:
    """The reference files of one exposure, one :class:`RefFile` (or None for "N/A") per reftype.

    ``reasons`` maps a reftype without a file to why (see :meth:`reason`); ``rejections``
    maps a reftype to the files of the directory that did not apply (see :meth:`rejections`).
    """

    def __init__(self, files: Mapping[str, RefFile | None], *,
                 reasons: Mapping[str, str] | None = None,
                 rejections: Mapping[str, list[str]] | None = None):
        unknown = set(files) - set(REFTYPES)
        if unknown:
            raise ReferenceFileError(f"unknown reftype(s) {sorted(unknown)}; known: {REFTYPES}")
        self._files = {rt: files.get(rt) for rt in REFTYPES}
        self._reasons = dict(reasons or {})
        self._rejections = {rt: list((rejections or {}).get(rt, ())) for rt in REFTYPES}
        #: how to read the same set again elsewhere (set by :meth:`from_dir`), see :meth:`recipe`
        self._recipe: tuple | None = None

    def recipe(self) -> tuple | None:
        """``(files, exposure_attrs)`` from which :meth:`from_recipe` reads this set again
        (in a dask worker, instead of the arrays travelling inside the task graph), or None
        for a set not read by :meth:`from_dir`.  ``files`` maps reftype → (path, sha256) or
        None.  A set made by :meth:`with_bits_cleared` has a third item, the bits to clear
        (``((reftype, ext, bits), …)``): ``RefSet.from_recipe(*refs.recipe())`` reads it."""
        return self._recipe

    @classmethod
    def from_recipe(cls, files: Mapping, exposure_attrs: Mapping, cleared=()) -> RefSet:
        """Read the files of a :meth:`recipe` again; a file changed since (another sha256) is
        a :class:`ReferenceFileError`.  ``cleared``: ``(reftype, ext, bits)`` triples, the
        DQ bits :meth:`with_bits_cleared` clears, cleared again here."""
        out = {}
        for rt, entry in files.items():
            if entry is None:
                out[rt] = None
                continue
            path, digest = entry
            f = load_reffile(rt, path, exposure_attrs)
            if f.sha256 != digest:
                raise _err(rt, path, "changed on disk since the reference files were selected "
                                     f"(sha256 {f.sha256} instead of {digest})")
            out[rt] = f
        for rt, ext, bits in cleared:
            out[rt] = _clear_bits(out.get(rt), ext, bits)
        return cls(out)

    def with_bits_cleared(self, reftype: str, ext: str, bits: int) -> RefSet:
        """The same set with ``bits`` cleared in the DQ extension ``ext`` of ``reftype`` (e.g.
        DO_NOT_USE of the MASK while building a dark); unchanged when there is no such file or
        extension.  The recipe (:meth:`recipe`) says so, so a worker reading the set again
        clears them too: the arrays still stay out of task graphs."""
        f = self.get(reftype)
        if f is None or ext not in f.arrays:
            return self
        files = dict(self._files)
        files[reftype] = _clear_bits(f, ext, bits)
        out = RefSet(files, reasons=self._reasons, rejections=self._rejections)
        if self._recipe is not None:
            cleared = (*(self._recipe[2] if len(self._recipe) > 2 else ()),
                       (reftype, ext, int(bits)))
            out._recipe = (*self._recipe[:2], cleared)
        return out

    def lazy(self) -> RefSet:
        """The same set whose arrays are dask arrays read (and cut) by a worker.

        With a :meth:`recipe`, one task ``RefSet.from_recipe(*recipe)`` reads the files
        again (its key is a token of the recipe: paths, sha256 digests and exposure keywords;
        the same key as the fused layout's, so a graph holding both reads them once) and each
        array is a one-chunk dask array taken from it: a task graph built on them carries
        no reference array.  Without a recipe the set itself is one key of the graph (each
        array once, instead of once per step that uses it).  Shapes, dtypes, headers, paths,
        checksums, reasons and the recipe are those of this set; arrays that are not numpy
        arrays (a DataArray given by hand) are kept as they are.  A lazy set is returned as
        it is.
        """
        import dask
        import dask.array as da

        if self.is_lazy():
            return self
        if self._recipe is not None:
            loaded = dask.delayed(RefSet.from_recipe, pure=True)(*self._recipe)
        else:
            import uuid

            loaded = dask.delayed(self, name=f"refset-{uuid.uuid4().hex}")
        token = loaded.key.rsplit("-", 1)[-1]
        files: dict[str, RefFile | None] = {}
        for rt, f in self._files.items():
            if f is None:
                files[rt] = None
                continue
            arrays = {}
            for ext, a in f.arrays.items():
                if not isinstance(a, np.ndarray):
                    arrays[ext] = a
                    continue
                part = dask.delayed(_array_of)(loaded, rt, ext,
                                               dask_key_name=f"refarray-{rt}-{ext}-{token}")
                arrays[ext] = da.from_delayed(part, a.shape, dtype=a.dtype,
                                              name=f"ref-{rt}-{ext}-{token}")
            files[rt] = dataclasses.replace(f, arrays=arrays)
        out = RefSet(files, reasons=self._reasons, rejections=self._rejections)
        out._recipe = self._recipe
        return out

    def is_lazy(self) -> bool:
        """Whether any array of the set is a dask array (:meth:`lazy`)."""
        return any(hasattr(a, "dask") for f in self._files.values() if f is not None
                   for a in f.arrays.values())

    @classmethod
    def from_files(cls, files: Mapping[str, str | Path | None], exposure_attrs: Mapping, *,
                   reasons: Mapping[str, str] | None = None) -> RefSet:
        """Read files chosen elsewhere (by CRDS, :mod:`daskramp.io.crds`), one per reftype.

        Each file is read and checked as an override is (REFTYPE, INSTRUME, DETECTOR, layout,
        subarray; no selector or USEAFTER check: whoever chose it selected).  A reftype given
        None, or not given, has no file: its reason is ``reasons[reftype]`` (the step is
        skipped, as for "N/A").  The set has a :meth:`recipe`, as one :meth:`from_dir` reads.
        """
        unknown = set(files) - set(REFTYPES)
        if unknown:
            raise ReferenceFileError(f"unknown reftype(s) {sorted(unknown)}; known: {REFTYPES}")
        loaded = {rt: None if files.get(rt) is None else load_reffile(rt, files[rt], exposure_attrs)
                  for rt in REFTYPES}
        out = cls(loaded, reasons=reasons)
        out._recipe = ({rt: None if f is None else (str(f.path), f.sha256) for rt, f in loaded.items()},
                       dict(exposure_attrs))
        return out

    @classmethod
    def from_dir(
        cls,
        refs_dir,
        exposure_attrs: Mapping,
        *,
        overrides: Mapping[str, str | Path] | None = None,
        required=BASE_REFTYPES,
    ) -> RefSet:
        """Select, read and cut the reference files for an exposure.

        Parameters
        ----------
        refs_dir : path or None
            Directory of CRDS-format ``*.fits`` reference files.  None: only ``overrides``
            are read, every other reftype is "N/A" ("no reference files given") whatever
            ``required`` says.
        exposure_attrs : mapping
            The exposure's FITS keywords (``Dataset.attrs``): INSTRUME, DETECTOR, EXP_TYPE,
            READPATT, SUBARRAY, NOUTPUTS, SUBSTRT1/2, SUBSIZE1/2, NGROUPS, NFRAMES, GROUPGAP,
            DATE-OBS, TIME-OBS (and BAND, FILTER for MIRI).
        overrides : mapping of reftype to path or "N/A", optional
            A file used instead of the directory search (no selector or USEAFTER checks, but
            REFTYPE, INSTRUME, DETECTOR, layout and subarray are checked); "N/A" → None
            (reason "<REFTYPE>: override N/A").  Keys may also be spelled ``override_<reftype>``.
        required : iterable of str
            Reftypes that must be found in ``refs_dir`` (default: :data:`BASE_REFTYPES`,
            every one but FLAT, which is searched only when required).  Those given in
            ``overrides`` or not applicable to the instrument (:func:`not_applicable`) are
            never searched; a reftype not required and not found is None, with the
            reason kept (:meth:`reason`).

        Raises
        ------
        ReferenceFileError
            A required reftype with no applicable file, in one line:
            ``"<REFTYPE> reference: no file in <dir> applies to the exposure (<KEY>=<value>,
            …); rejected: <file> (<reason>), …; add one, or skip the step with
            --steps.<step>.skip=true or --override-<reftype> N/A"``; or naming the reftype
            and the file for an ambiguous, unreadable or incompatible reference.
        """
        ov = {}
        for k, v in (overrides or {}).items():
            rt = k.lower().removeprefix("override_")
            if rt not in REFTYPES:
                raise ReferenceFileError(f"override {k!r}: unknown reftype; known: {REFTYPES}")
            ov[rt] = v
        required = {str(r).lower() for r in required}
        unknown = required - set(REFTYPES)
        if unknown:
            raise ReferenceFileError(f"required: unknown reftype(s) {sorted(unknown)}; known: {REFTYPES}")
        refs_dir = None if refs_dir is None else Path(refs_dir)
        if refs_dir is not None and not refs_dir.is_dir():
            raise ReferenceFileError(f"reference directory {refs_dir} does not exist")
        scanned = _scan(refs_dir) if refs_dir is not None else []
        # choose every file first, so that a missing reference is reported before any is read
        chosen: dict[str, Path | str | None] = {}
        reasons: dict[str, str] = {}
        rejections: dict[str, list[str]] = {}
        for rt in REFTYPES:
            chosen[rt] = None
            if rt in ov:
                v = ov[rt]
                if v is None or (isinstance(v, str) and v.strip().upper() == NA):
                    reasons[rt] = f"{rt.upper()}: override N/A"
                else:
                    chosen[rt] = v
                continue
            why = not_applicable(rt, exposure_attrs)
            if why is not None:
                reasons[rt] = why
                continue
            if rt not in BASE_REFTYPES and rt not in required:
                # an option's reference (FLAT) is read only when that option is on
                reasons[rt] = f"{rt.upper()}: {NOT_NEEDED}"
                continue
            if refs_dir is None:
                reasons[rt] = f"{rt.upper()}: no reference files given"
                continue
            path, rejected = _select(rt, refs_dir, exposure_attrs, scanned)
            rejections[rt] = rejected
            if path is None:
                msg = _no_file(rt, refs_dir, exposure_attrs, rejected)
                if rt in required:
                    raise ReferenceFileError(f"{msg}; {_hint(rt)}".replace("\n", " "))
                reasons[rt] = msg
                continue
            chosen[rt] = path
        files = {rt: None if p is None else load_reffile(rt, p, exposure_attrs)
                 for rt, p in chosen.items()}
        out = cls(files, reasons=reasons, rejections=rejections)
        out._recipe = ({rt: None if f is None else (str(f.path), f.sha256) for rt, f in files.items()},
                       dict(exposure_attrs))
        return out

    def reason(self, reftype: str) -> str | None:
        """Why ``reftype`` has no file (e.g. ``"DARK: override N/A"``, ``"SUPERBIAS does not
        apply to MIRI"``, ``"DARK reference: no file in … applies …"``), or None if it has one."""
        if self.get(reftype) is not None:
            return None
        return self._reasons.get(reftype, f"{reftype.upper()}: not in the reference set given")

    def rejections(self) -> dict[str, list[str]]:
        """``reftype → ["<file> (<reason>)", …]``: the files of the directory of that REFTYPE
        that do not apply to the exposure (empty lists when not searched)."""
        return {rt: list(v) for rt, v in self._rejections.items()}

    def get(self, reftype: str) -> RefFile | None:
        """The reference file of ``reftype``, or None when it is "N/A" (the step is skipped)."""
        if reftype not in self._files:
            raise ReferenceFileError(f"unknown reftype {reftype!r}; known: {REFTYPES}")
        return self._files[reftype]

    def window(self, frame_shape: tuple[int, int], y: slice, x: slice) -> RefSet:
        """The same files with every image of the science subarray cut to a window of it.

        ``frame_shape`` is the science subarray ``(ny, nx)``; arrays whose trailing two axes
        have that shape are sliced ``[..., y, x]`` (views, no copy), others are kept as they
        are.  Headers, paths and checksums (provenance) are unchanged.
        """
        shape = tuple(frame_shape)
        files = {}
        for rt, f in self._files.items():
            if f is None:
                files[rt] = None
                continue
            arrays = {k: (a[..., y, x] if getattr(a, "ndim", 0) >= 2 and a.shape[-2:] == shape else a)
                      for k, a in f.arrays.items()}
            files[rt] = dataclasses.replace(f, arrays=arrays)
        return RefSet(files, reasons=self._reasons, rejections=self._rejections)

    def provenance(self) -> dict:
        """``reftype → {"file": name, "path": str, "sha256": hex}``; "N/A" entries have
        path and sha256 None and a ``reason`` (:meth:`reason`).  An option's reftype (FLAT)
        that no step read is left out, as the official products leave out its keyword."""
        out = {}
        for rt, f in self._files.items():
            if f is None and rt not in BASE_REFTYPES and self._reasons.get(rt, NOT_NEEDED).endswith(NOT_NEEDED):
                continue
            if f is None:
                out[rt] = {"file": NA, "path": None, "sha256": None, "reason": self.reason(rt)}
            else:
                out[rt] = {"file": f.name, "path": str(f.path), "sha256": f.sha256}
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{rt}={f.name if f else NA}" for rt, f in self._files.items())
        return f"RefSet({inner})"


__all__ = [
    "PATTERN_KEYWORDS",
    "BASE_REFTYPES",
    "REFTYPES",
    "SELECTION_KEYWORDS",
    "RefFile",
    "RefSet",
    "ReferenceFileError",
    "ReferenceFileWarning",
    "dark_planes_needed",
    "file_sha256",
    "load_reffile",
    "match_weight",
    "not_applicable",
    "parse_useafter",
    "select",
    "subarray_window",
]
