"""The exposure data model: dims, variables, dtypes, coordinates, metadata, validation.

An exposure is an :class:`xarray.Dataset`

========== ============================== ====================================
variable   dims                           dtype
========== ============================== ====================================
data       (integration, group, y, x)     uint16 raw (DN); float32 once calibrated
groupdq    (integration, group, y, x)     uint8   (group DQ flags, :mod:`daskramp.dq`)
pixeldq    (y, x)                         uint32  (pixel DQ flags)
zeroframe  (integration, y, x)            uint16/float32, only when ZEROFRAM = T
========== ============================== ====================================

Coordinates: ``integration`` (0 … N−1, global across segments), ``group`` (0 … G−1),
``y`` and ``x`` (0-based *detector* pixel coordinates of the subarray, i.e.
``SUBSTRT2 − 1 + arange(ny)``), ``segment`` on ``integration`` (1-based EXSEGNUM),
``integration_number`` (1-based exposure numbering, as in INT_TIMES) and the INT_TIMES
time columns on ``integration``.  Exposure metadata lives in ``attrs`` under FITS keyword
names.  Only ``integration`` is chunked for ramp steps; jump and ramp_fit run on blocks
holding every integration of a segment (see :mod:`daskramp.pipeline`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr

INTEGRATION = "integration"
GROUP = "group"
Y = "y"
X = "x"
RAMP_DIMS = (INTEGRATION, GROUP, Y, X)
IMAGE_DIMS = (Y, X)
CUBE_DIMS = (INTEGRATION, Y, X)

DATA = "data"
GROUPDQ = "groupdq"
PIXELDQ = "pixeldq"
ZEROFRAME = "zeroframe"
SEGMENT = "segment"
INTEGRATION_NUMBER = "integration_number"

#: INT_TIMES table time columns, carried as coordinates on ``integration``
INT_TIMES_COLUMNS = (
    "int_start_MJD_UTC",
    "int_mid_MJD_UTC",
    "int_end_MJD_UTC",
    "int_start_BJD_TDB",
    "int_mid_BJD_TDB",
    "int_end_BJD_TDB",
)

RAW_DTYPE = np.dtype("uint16")
FLOAT_DTYPE = np.dtype("float32")
GROUPDQ_DTYPE = np.dtype("uint8")
PIXELDQ_DTYPE = np.dtype("uint32")

#: keywords without which no Stage-1 step can run (spec 01 §1)
REQUIRED_KEYWORDS: dict[str, type | tuple[type, ...]] = {
    "INSTRUME": str,
    "DETECTOR": str,
    "EXP_TYPE": str,
    "READPATT": str,
    "SUBARRAY": str,
    "SUBSTRT1": int,
    "SUBSTRT2": int,
    "SUBSIZE1": int,
    "SUBSIZE2": int,
    "FASTAXIS": int,
    "SLOWAXIS": int,
    "NOUTPUTS": int,
    "NINTS": int,
    "NGROUPS": int,
    "NFRAMES": int,
    "GROUPGAP": int,
    "TFRAME": (int, float),
    "TGROUP": (int, float),
}

#: further keywords carried when present
OPTIONAL_KEYWORDS = (
    "TELESCOP",
    "FRMDIVSR",
    "ZEROFRAM",
    "DRPFRMS1",
    "DRPFRMS3",
    "DATE-OBS",
    "TIME-OBS",
    "EXPSTART",
    "EXPMID",
    "EXPEND",
    "EFFINTTM",
    "FILTER",
    "PUPIL",
    "CHANNEL",
    "MODULE",
    "GRATING",
    "EXSEGTOT",
    "GAINFACT",
    "BUNIT",
    "TARGNAME",
    "PROGRAM",
    "OBSERVTN",
    "VISIT",
    "TSOVISIT",
    "DATAMODL",
)

UNITS = {"raw": "DN", "calibrated": "DN", "rate": "DN/s", "variance": "(DN/s)^2"}


class ExposureError(ValueError):
    """An exposure (file, store or Dataset) does not follow the data model."""


def _isint(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_keywords(attrs: dict, *, source: str = "exposure", required: Iterable[str] | None = None):
    """Raise :class:`ExposureError` naming ``source`` and the keyword for missing/mistyped metadata."""
    keys = REQUIRED_KEYWORDS if required is None else {k: REQUIRED_KEYWORDS[k] for k in required}
    for key, typ in keys.items():
        if key not in attrs or attrs[key] is None:
            raise ExposureError(f"{source}: required keyword {key} is missing")
        v = attrs[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        ok = any(_isint(v) if t is int else isinstance(v, (t, np.floating) if t is float else t) for t in types)
        if not ok:
            want = " or ".join(t.__name__ for t in types)
            raise ExposureError(f"{source}: keyword {key}={v!r} should be {want}")
    for key in ("FASTAXIS", "SLOWAXIS"):
        if key in attrs and attrs[key] not in (-2, -1, 1, 2):
            raise ExposureError(f"{source}: keyword {key}={attrs[key]!r} should be one of ±1, ±2")
    if "NOUTPUTS" in attrs and attrs["NOUTPUTS"] not in (1, 4, 5):
        raise ExposureError(f"{source}: keyword NOUTPUTS={attrs['NOUTPUTS']!r} should be 1, 4 or 5")
    readpatt = str(attrs.get("READPATT") or "").upper()
    wide = any(_isint(attrs.get(k)) and int(attrs[k]) > 2048 for k in ("SUBSIZE1", "SUBSIZE2"))
    if readpatt.startswith("NRSIRS2") or (wide and str(attrs.get("INSTRUME", "")).upper() == "NIRSPEC"):
        # IRS2 interleaves reference columns with the science ones (a 3200-column frame): its
        # refpix and reference cut-outs are another algorithm, used for full-frame science,
        # not for time series
        raise ExposureError(
            f"{source}: NIRSpec IRS2 readout (READPATT={attrs.get('READPATT')!r}, "
            f"SUBSIZE1={attrs.get('SUBSIZE1')}, SUBSIZE2={attrs.get('SUBSIZE2')}) is not supported "
            f"by daskramp; time-series modes read out with NRSRAPID, NRS or NRSRAPIDD*")


def validate(ds: xr.Dataset, *, calibrated: bool | None = None, source: str = "exposure") -> xr.Dataset:
    """Check that ``ds`` is an exposure Dataset; return it unchanged or raise :class:`ExposureError`.

    Checks dims and their order, dtypes, the shape agreement with SUBSIZE1/2 and NGROUPS,
    detector coordinates consistent with SUBSTRT1/2, and required metadata.  Never loads data.

    Parameters
    ----------
    calibrated : bool, optional
        ``True`` requires float32 ``data``; ``False`` requires uint16; ``None`` accepts both.
    """
    if not isinstance(ds, xr.Dataset):
        raise ExposureError(f"{source}: expected an xarray.Dataset, got {type(ds).__name__}")
    # the Variables, not DataArrays: each ``ds[name]`` would build its coordinates (this runs
    # once per step and block)
    v = ds.variables
    for var, dims in ((DATA, RAMP_DIMS), (GROUPDQ, RAMP_DIMS), (PIXELDQ, IMAGE_DIMS)):
        if var not in ds.data_vars:
            raise ExposureError(f"{source}: variable {var!r} is missing")
        if v[var].dims != dims:
            raise ExposureError(f"{source}: variable {var!r} has dims {v[var].dims}, expected {dims}")
    dt = v[DATA].dtype
    allowed = {None: (RAW_DTYPE, FLOAT_DTYPE), True: (FLOAT_DTYPE,), False: (RAW_DTYPE,)}[calibrated]
    if dt not in allowed:
        raise ExposureError(
            f"{source}: data has dtype {dt}, expected {' or '.join(str(a) for a in allowed)}"
        )
    if v[GROUPDQ].dtype != GROUPDQ_DTYPE:
        raise ExposureError(f"{source}: groupdq has dtype {v[GROUPDQ].dtype}, expected uint8")
    if v[PIXELDQ].dtype != PIXELDQ_DTYPE:
        raise ExposureError(f"{source}: pixeldq has dtype {v[PIXELDQ].dtype}, expected uint32")
    if ZEROFRAME in ds.data_vars and v[ZEROFRAME].dims != CUBE_DIMS:
        raise ExposureError(f"{source}: zeroframe has dims {v[ZEROFRAME].dims}, expected {CUBE_DIMS}")
    check_keywords(ds.attrs, source=source)
    a = ds.attrs
    ny, nx = ds.sizes[Y], ds.sizes[X]
    if (a["SUBSIZE2"], a["SUBSIZE1"]) != (ny, nx):
        raise ExposureError(
            f"{source}: SUBSIZE2×SUBSIZE1 = {a['SUBSIZE2']}×{a['SUBSIZE1']} but the data are {ny}×{nx}"
        )
    if a["NGROUPS"] != ds.sizes[GROUP]:
        raise ExposureError(f"{source}: NGROUPS={a['NGROUPS']} but the data have {ds.sizes[GROUP]} groups")
    for dim, key in ((Y, "SUBSTRT2"), (X, "SUBSTRT1")):
        if dim in ds.coords and ds.sizes[dim] and int(ds[dim][0]) != a[key] - 1:
            raise ExposureError(
                f"{source}: coordinate {dim} starts at {int(ds[dim][0])}, expected {key}-1 = {a[key] - 1}"
            )
    if INTEGRATION in ds.coords:
        idx = ds[INTEGRATION].values  # the coordinate is small (one value per integration)
        if idx.size and not np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
            raise ExposureError(f"{source}: integration coordinate is not contiguous")
    return ds


def detector_coords(attrs: dict, ny: int, nx: int) -> dict[str, np.ndarray]:
    """0-based detector coordinates ``y``, ``x`` of a subarray from SUBSTRT1/2."""
    return {
        Y: np.arange(attrs["SUBSTRT2"] - 1, attrs["SUBSTRT2"] - 1 + ny, dtype=np.int32),
        X: np.arange(attrs["SUBSTRT1"] - 1, attrs["SUBSTRT1"] - 1 + nx, dtype=np.int32),
    }


def make_exposure(
    data,
    attrs: dict,
    *,
    groupdq=None,
    pixeldq=None,
    zeroframe=None,
    segment=None,
    int_times: dict | None = None,
    first_integration: int = 0,
) -> xr.Dataset:
    """Build an exposure Dataset from a 4-D array (numpy or dask) and FITS-keyword metadata.

    Missing ``groupdq``/``pixeldq`` are created as zeros (lazily when ``data`` is a dask array).
    ``int_times`` maps INT_TIMES column names to 1-D arrays of length nints.
    """
    import dask.array as da

    nint, ngroup, ny, nx = data.shape
    lazy = isinstance(data, da.Array)
    if groupdq is None:
        groupdq = (
            da.zeros(data.shape, dtype=GROUPDQ_DTYPE, chunks=data.chunks)
            if lazy
            else np.zeros(data.shape, GROUPDQ_DTYPE)
        )
    if pixeldq is None:
        pixeldq = np.zeros((ny, nx), PIXELDQ_DTYPE)
    coords: dict = {
        INTEGRATION: np.arange(first_integration, first_integration + nint, dtype=np.int64),
        GROUP: np.arange(ngroup, dtype=np.int32),
        **detector_coords(attrs, ny, nx),
    }
    coords[INTEGRATION_NUMBER] = (INTEGRATION, coords[INTEGRATION] + 1)
    if segment is None:
        segment = np.full(nint, int(attrs.get("EXSEGNUM", 1)), np.int32)
    coords[SEGMENT] = (INTEGRATION, np.asarray(segment, np.int32))
    for name, col in (int_times or {}).items():
        coords[name] = (INTEGRATION, np.asarray(col, np.float64))
    variables = {
        DATA: (RAMP_DIMS, data, {"units": "DN"}),
        GROUPDQ: (RAMP_DIMS, groupdq),
        PIXELDQ: (IMAGE_DIMS, pixeldq),
    }
    if zeroframe is not None:
        variables[ZEROFRAME] = (CUBE_DIMS, zeroframe, {"units": "DN"})
    return xr.Dataset(variables, coords=coords, attrs=dict(attrs))


def chunk(ds: xr.Dataset, chunks: dict) -> xr.Dataset:
    """Chunk the data variables only; coordinates stay numpy.

    ``Dataset.chunk`` would also turn the per-integration coordinates (segment, INT_TIMES)
    into dask arrays, and reading them back (e.g. to find segment bounds) would then compute.
    """
    return ds.assign({k: v.chunk({d: c for d, c in chunks.items() if d in v.dims})
                      for k, v in ds.data_vars.items()})


def segment_bounds(ds: xr.Dataset) -> list[tuple[int, int]]:
    """Positional [start, stop) integration ranges of each segment, in order."""
    var = ds[SEGMENT].variable
    if hasattr(var.data, "dask"):
        raise ExposureError("the segment coordinate is a dask array; chunk with daskramp.dims.chunk")
    seg = np.asarray(var.data)  # one small int per integration, already in memory
    if seg.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(seg)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [seg.size]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def window(ds: xr.Dataset, *, y: slice = slice(None), x: slice = slice(None)) -> xr.Dataset:
    """A rectangular window of an exposure as an exposure of its own (a smaller subarray).

    The window keeps its detector coordinates, and SUBSTRT1/2 and SUBSIZE1/2 are updated to
    describe it, so that every pixel-local step treats it exactly as the same pixels of the
    parent.  Steps that look at whole frames (refpix's reference pixels, jump's all-DO_NOT_USE
    planes) are given their frame statistics from the parent instead (see
    :mod:`daskramp.engine.fused`).
    """
    out = ds.isel({Y: y, X: x})
    a = dict(ds.attrs)
    y0 = range(ds.sizes[Y])[y].start if ds.sizes[Y] else 0
    x0 = range(ds.sizes[X])[x].start if ds.sizes[X] else 0
    a.update(SUBSTRT2=int(a["SUBSTRT2"]) + y0, SUBSTRT1=int(a["SUBSTRT1"]) + x0,
             SUBSIZE2=out.sizes[Y], SUBSIZE1=out.sizes[X])
    out.attrs = a
    return out
