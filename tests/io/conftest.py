"""Tiny uncal FITS files written with astropy, laid out as spec 01 §1 describes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from daskramp.dims import INT_TIMES_COLUMNS

NINTS, NGROUPS, NY, NX = 7, 3, 4, 6


def primary_header(**over) -> fits.Header:
    h = fits.Header()
    cards = {
        "TELESCOP": "JWST",
        "INSTRUME": "NIRISS",
        "DETECTOR": "NIS",
        "EXP_TYPE": "NIS_SOSS",
        "READPATT": "NISRAPID",
        "SUBARRAY": "SUBSTRIP96",
        "SUBSTRT1": 1,
        "SUBSTRT2": 1803,
        "SUBSIZE1": NX,
        "SUBSIZE2": NY,
        "FASTAXIS": -2,
        "SLOWAXIS": -1,
        "NOUTPUTS": 1,
        "NINTS": NINTS,
        "NGROUPS": NGROUPS,
        "NFRAMES": 1,
        "GROUPGAP": 0,
        "FRMDIVSR": 1,
        "TFRAME": 2.2,
        "TGROUP": 2.2,
        "ZEROFRAM": False,
        "DRPFRMS1": 0,
        "DRPFRMS3": 0,
        "DATE-OBS": "2024-01-02",
        "TIME-OBS": "03:04:05.600",
        "PROGRAM": "01234",
        "OBSERVTN": "001",
        "EXPSTART": 60311.128,
        "TARGNAME": "WASP-TEST",
    }
    cards.update(over)
    for k, v in cards.items():
        if v is not None:
            h[k] = v
    return h


def ramp(nints=NINTS, ngroups=NGROUPS, ny=NY, nx=NX, seed=0) -> np.ndarray:
    """uint16 ramps spanning the whole range, including 0, 32767, 32768 and 65535."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 65536, size=(nints, ngroups, ny, nx), dtype=np.uint16)
    a.flat[:4] = [0, 32767, 32768, 65535]
    return a


def int_times_table(numbers, own=None) -> fits.BinTableHDU:
    """INT_TIMES rows for integration ``numbers``; rows outside ``own`` (a set) hold -1."""
    numbers = np.asarray(numbers, np.int32)
    cols = [fits.Column(name="integration_number", format="J", array=numbers)]
    foreign = np.array([own is not None and n not in own for n in numbers])
    for j, name in enumerate(INT_TIMES_COLUMNS):
        values = np.where(foreign, -1.0, 60000.0 + j + numbers * 1e-3)
        cols.append(fits.Column(name=name, format="D", array=values))
    return fits.BinTableHDU.from_columns(cols, name="INT_TIMES")


def expected_int_times(numbers) -> dict:
    numbers = np.asarray(numbers)
    return {name: 60000.0 + j + numbers * 1e-3 for j, name in enumerate(INT_TIMES_COLUMNS)}


def write_uncal(
    path,
    data: np.ndarray,
    *,
    intstart=1,
    exsegnum=None,
    exsegtot=None,
    int_times="segment",
    zeroframe=None,
    sci_data=None,
    **keywords,
):
    """Write an uncal file; ``data`` uint16 (nints_in_file, ngroups, ny, nx).

    ``int_times``: "segment" (rows of this file only), "all" (rows of the whole exposure, the
    rows of other segments holding -1 so that a reader taking the wrong rows is caught) or None.
    """
    n = data.shape[0]
    hdr = primary_header(**keywords)
    if exsegnum is not None:
        hdr["EXSEGNUM"] = exsegnum
        hdr["EXSEGTOT"] = exsegtot
        hdr["INTSTART"] = intstart
        hdr["INTEND"] = intstart + n - 1
    hdus = [fits.PrimaryHDU(header=hdr)]
    sci = fits.ImageHDU(data=data if sci_data is None else sci_data, name="SCI")
    hdus.append(sci)
    if zeroframe is not None:
        hdus.append(fits.ImageHDU(data=zeroframe, name="ZEROFRAME"))
    if int_times == "segment":
        hdus.append(int_times_table(np.arange(intstart, intstart + n)))
    elif int_times == "all":
        own = set(range(intstart, intstart + n))
        hdus.append(int_times_table(np.arange(1, hdr["NINTS"] + 1), own=own))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_segments(tmp_path, data, bounds, *, root="jw01234001001_04101_00001", **kw):
    """Split ``data`` at ``bounds`` (list of integration counts) into segment files."""
    paths = []
    start = 0
    for k, n in enumerate(bounds, start=1):
        p = tmp_path / f"{root}-seg{k:03d}_nis_uncal.fits"
        write_uncal(
            p,
            data[start : start + n],
            intstart=start + 1,
            exsegnum=k,
            exsegtot=len(bounds),
            **kw,
        )
        paths.append(p)
        start += n
    return paths


@pytest.fixture
def exposure_data():
    return ramp()


@pytest.fixture
def segments(tmp_path, exposure_data):
    """Three segments of 3, 2 and 2 integrations with per-segment INT_TIMES rows."""
    return write_segments(tmp_path, exposure_data, [3, 2, 2])


@pytest.fixture
def uncal():
    """The writers above, for tests (conftest modules are not imported by name)."""
    import types

    return types.SimpleNamespace(
        NINTS=NINTS,
        NGROUPS=NGROUPS,
        NY=NY,
        NX=NX,
        ramp=ramp,
        write_uncal=write_uncal,
        write_segments=write_segments,
        expected_int_times=expected_int_times,
        primary_header=primary_header,
    )
