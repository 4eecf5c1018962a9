"""Reading uncal FITS segments: lossless values, stitching, metadata, laziness, bad input."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp.dims import INT_TIMES_COLUMNS, ExposureError
from daskramp.io import (
    SegmentMismatchError,
    UncalFileError,
    UncalFormatError,
    open_exposure,
    open_uncal,
    read_uncal_header,
)
from daskramp.io.uncal import read_frames


def _no_compute(*args, **kwargs):
    raise AssertionError("something was computed while building the Dataset")


def test_values_are_bit_exact_including_the_int16_wraparound(tmp_path, uncal):
    # 0 and 65535 are stored as -32768 and 32767; 32767/32768 straddle the sign flip
    data = uncal.ramp()
    assert list(data.flat[:4]) == [0, 32767, 32768, 65535]
    path = uncal.write_uncal(tmp_path / "one_uncal.fits", data)
    raw = fits.getdata(path, "SCI", do_not_scale_image_data=True)
    assert raw.dtype == np.dtype(">i2") and raw.flat[0] == -32768 and raw.flat[3] == 32767
    ds = open_uncal(path)
    assert ds["data"].dtype == np.uint16
    np.testing.assert_array_equal(ds["data"].values, data)


def test_read_frames_reads_only_the_requested_integrations(tmp_path, uncal):
    data = uncal.ramp()
    path = uncal.write_uncal(tmp_path / "one_uncal.fits", data)
    from daskramp.io.uncal import scan_segment

    seg = scan_segment(path)
    block = read_frames(seg.path, seg.offset, seg.frame_shape, 2, 5)
    np.testing.assert_array_equal(block, data[2:5])
    assert block.dtype == np.dtype("uint16") and block.dtype.isnative


def test_segments_given_in_any_order_are_stitched_by_intstart(tmp_path, uncal):
    data = uncal.ramp()
    paths = uncal.write_segments(tmp_path, data, [3, 2, 2])
    shuffled = paths[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != paths
    ds = open_uncal(shuffled)
    np.testing.assert_array_equal(ds["data"].values, data)
    # EXSEGNUM 1 holds integrations 1-3, 2 holds 4-5, 3 holds 6-7
    assert ds["segment"].values.tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert ds["integration"].values.tolist() == list(range(7))
    assert ds["integration_number"].values.tolist() == list(range(1, 8))


def test_chunks_never_cross_a_segment_and_follow_chunks_integrations(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 2, 2])
    ds = open_uncal(paths, chunks_integrations=2)
    # segment 1 (3 integrations) → 2 + 1; segments 2 and 3 → 2 each
    assert ds["data"].data.chunks == ((2, 1, 2, 2), (3,), (4,), (6,))
    assert ds["groupdq"].data.chunks == ds["data"].data.chunks


def test_int_times_rows_are_matched_by_integration_number(tmp_path, uncal):
    # each file lists all 7 rows, but only its own rows carry real times (others are -1)
    data = uncal.ramp()
    paths = uncal.write_segments(tmp_path, data, [3, 2, 2], int_times="all")
    ds = open_uncal(paths[::-1])
    want = uncal.expected_int_times(np.arange(1, 8))
    for col in INT_TIMES_COLUMNS:
        np.testing.assert_array_equal(ds[col].values, want[col])
        assert ds[col].dims == ("integration",)


def test_metadata_carries_scalar_keywords_but_not_per_segment_ones(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 4])
    ds = open_uncal(paths)
    a = ds.attrs
    assert a["NINTS"] == 7 and a["NGROUPS"] == 3 and a["SUBSTRT2"] == 1803
    assert a["TARGNAME"] == "WASP-TEST" and a["EXSEGTOT"] == 2
    assert a["TFRAME"] == 2.2 and a["ZEROFRAM"] is False
    assert type(a["NINTS"]) is int and type(a["ZEROFRAM"]) is bool
    for key in ("EXSEGNUM", "INTSTART", "INTEND", "SIMPLE", "BITPIX", "NAXIS", "EXTEND"):
        assert key not in a
    # detector coordinates: SUBSTRT2 = 1803 → first row 1802 (0-based)
    assert ds["y"].values.tolist() == [1802, 1803, 1804, 1805]


def test_read_uncal_header_fills_single_segment_defaults(tmp_path, uncal):
    path = uncal.write_uncal(tmp_path / "single_uncal.fits", uncal.ramp())
    h = read_uncal_header(path)
    assert (h["INTSTART"], h["INTEND"], h["EXSEGNUM"], h["EXSEGTOT"]) == (1, 7, 1, 1)
    assert h["INSTRUME"] == "NIRISS" and h["NINTS"] == 7


def test_zeroframe_is_read_when_present(tmp_path, uncal):
    data = uncal.ramp()
    zf = data[:, 0] // 2
    path = uncal.write_uncal(tmp_path / "zf_uncal.fits", data, zeroframe=zf, ZEROFRAM=True)
    ds = open_uncal(path, chunks_integrations=3)
    assert ds["zeroframe"].dims == ("integration", "y", "x")
    np.testing.assert_array_equal(ds["zeroframe"].values, zf)


def test_open_uncal_and_open_exposure_compute_nothing(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 2, 2])
    with dask.config.set(scheduler=_no_compute):
        ds = open_uncal(paths)
        ds2 = open_exposure([str(p) for p in paths], chunks={"integration": 2, "x": 3})
    assert isinstance(ds["data"].data, da.Array) and isinstance(ds["groupdq"].data, da.Array)
    assert ds2["data"].data.chunks == ((2, 1, 2, 2), (3,), (4,), (3, 3))


@settings(
    max_examples=12,
    deadline=None,
    # the fixture only hands out stateless writer functions
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    cuts=st.lists(st.integers(1, 6), min_size=0, max_size=3, unique=True),
    per_chunk=st.integers(1, 8),
)
def test_any_segmentation_and_chunking_gives_the_same_array(uncal, cuts, per_chunk):
    data = uncal.ramp(seed=len(cuts) + per_chunk)
    edges = [0, *sorted(cuts), 7]
    sizes = [b - a for a, b in zip(edges, edges[1:])]
    with tempfile.TemporaryDirectory() as tmp:
        paths = uncal.write_segments(Path(tmp), data, sizes)
        ds = open_uncal(paths, chunks_integrations=per_chunk)
        np.testing.assert_array_equal(ds["data"].values, data)
        assert (
            ds["segment"].values.tolist() == np.repeat(np.arange(1, len(sizes) + 1), sizes).tolist()
        )


# ---- bad input: each names the file and what is wrong -------------------------------------


def test_missing_file(tmp_path):
    p = tmp_path / "nothere_uncal.fits"
    with pytest.raises(UncalFileError, match=r"nothere_uncal\.fits: file not found"):
        open_uncal(p)


def test_not_fits(tmp_path):
    p = tmp_path / "text_uncal.fits"
    p.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(UncalFileError, match=r"text_uncal\.fits: not a readable FITS file"):
        read_uncal_header(p)


def test_truncated_file(tmp_path, uncal):
    p = uncal.write_uncal(tmp_path / "cut_uncal.fits", uncal.ramp(), int_times=None)
    raw = p.read_bytes()
    # primary header 2880 + SCI header 2880 + 1008 data bytes; keep only 500 data bytes
    p.write_bytes(raw[: 2 * 2880 + 500])
    with pytest.raises(UncalFileError, match=r"cut_uncal\.fits: truncated: SCI needs 1008 bytes"):
        open_uncal(p)


def test_segments_of_different_exposures(tmp_path, uncal):
    data = uncal.ramp()
    a = uncal.write_segments(tmp_path, data, [3, 4])
    (tmp_path / "other").mkdir()
    b = uncal.write_segments(tmp_path / "other", data, [3, 4], root="jw09999001001_02101_00001")
    with pytest.raises(
        SegmentMismatchError, match=r"not segments of one exposure \(different root"
    ):
        open_uncal([a[0], b[1]])
    # same root name but another program
    other = uncal.write_uncal(
        a[1],
        data[3:],
        intstart=4,
        exsegnum=2,
        exsegtot=2,
        PROGRAM="05555",
    )
    with pytest.raises(SegmentMismatchError, match=r"PROGRAM='05555' vs '01234'") as err:
        open_uncal([a[0], other])
    assert a[1].name in str(err.value)


def test_segments_with_different_geometry(tmp_path, uncal):
    data = uncal.ramp()
    a = uncal.write_segments(tmp_path, data, [3, 4])
    uncal.write_uncal(a[1], data[3:], intstart=4, exsegnum=2, exsegtot=2, SUBSTRT1=5)
    with pytest.raises(SegmentMismatchError, match="SUBSTRT1=5 vs 1"):
        open_uncal(a)


def test_missing_middle_segment_is_a_gap(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 2, 2])
    with pytest.raises(SegmentMismatchError, match=r"seg003.*integrations 4–5 are missing"):
        open_uncal([paths[0], paths[2]])


def test_missing_last_segment(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 2, 2])
    with pytest.raises(SegmentMismatchError, match=r"seg002.*integrations 6–7 are missing"):
        open_uncal(paths[:2])


def test_missing_first_segment(tmp_path, uncal):
    paths = uncal.write_segments(tmp_path, uncal.ramp(), [3, 2, 2])
    with pytest.raises(SegmentMismatchError, match=r"seg002.*integrations 1–3 are missing"):
        open_uncal(paths[1:])


def test_overlapping_segments(tmp_path, uncal):
    data = uncal.ramp()
    paths = uncal.write_segments(tmp_path, data, [3, 4])
    # segment 2 claims integrations 3-7: integration 3 is also in segment 1
    uncal.write_uncal(paths[1], data[2:], intstart=3, exsegnum=2, exsegtot=2)
    with pytest.raises(SegmentMismatchError, match=r"seg002.*integrations 3–7 overlap .*seg001"):
        open_uncal(paths)


@pytest.mark.parametrize(
    ("sci", "what"),
    [
        (np.zeros((7, 3, 4, 6), np.float32), "SCI is float32"),
        (np.zeros((7, 3, 4, 6), np.int16), "SCI is int16 with BZERO=0, BSCALE=1"),
        (np.zeros((7, 3, 4, 6), np.int32), "SCI is int32"),
    ],
)
def test_sci_not_unsigned_16_bit(tmp_path, uncal, sci, what):
    p = uncal.write_uncal(tmp_path / "dtype_uncal.fits", uncal.ramp(), sci_data=sci)
    with pytest.raises(
        UncalFormatError, match=rf"dtype_uncal\.fits: {what}, expected unsigned 16-bit"
    ):
        open_uncal(p)


def test_sci_not_4d(tmp_path, uncal):
    p = uncal.write_uncal(
        tmp_path / "cube_uncal.fits", uncal.ramp(), sci_data=np.zeros((3, 4, 6), np.uint16)
    )
    with pytest.raises(UncalFormatError, match=r"cube_uncal\.fits: SCI has 3 dimensions"):
        open_uncal(p)


def test_shape_disagrees_with_ngroups(tmp_path, uncal):
    p = uncal.write_uncal(tmp_path / "ng_uncal.fits", uncal.ramp(), NGROUPS=5)
    with pytest.raises(UncalFormatError, match=r"ng_uncal\.fits: SCI has 3 groups but NGROUPS=5"):
        open_uncal(p)


def test_shape_disagrees_with_subsize(tmp_path, uncal):
    p = uncal.write_uncal(tmp_path / "ss_uncal.fits", uncal.ramp(), SUBSIZE1=2048)
    with pytest.raises(UncalFormatError, match=r"ss_uncal\.fits: SCI frames are 4×6 but .* 4×2048"):
        open_uncal(p)


def test_intend_disagrees_with_the_data(tmp_path, uncal):
    p = uncal.write_uncal(
        tmp_path / "ie_uncal.fits", uncal.ramp()[:3], intstart=1, exsegnum=1, exsegtot=1
    )
    with fits.open(p, mode="update") as h:
        h[0].header["INTEND"] = 4
    with pytest.raises(UncalFormatError, match=r"ie_uncal\.fits: SCI holds 3 integrations but"):
        open_uncal(p)


@pytest.mark.parametrize("key", ["TGROUP", "NINTS", "SUBSTRT1", "INSTRUME"])
def test_missing_required_keyword(tmp_path, uncal, key):
    p = uncal.write_uncal(tmp_path / "kw_uncal.fits", uncal.ramp(), **{key: None})
    with pytest.raises(ExposureError, match=rf"kw_uncal\.fits: required keyword {key} is missing"):
        read_uncal_header(p)


def test_no_sci_extension(tmp_path, uncal):
    p = tmp_path / "nosci_uncal.fits"
    fits.HDUList([fits.PrimaryHDU(header=uncal.primary_header())]).writeto(p)
    with pytest.raises(UncalFormatError, match=r"nosci_uncal\.fits: no SCI extension"):
        open_uncal(p)


@pytest.mark.parametrize("kw", [{"INSTRUME": "NIRSPEC", "READPATT": "NRSIRS2RAPID"},
                                {"INSTRUME": "NIRSPEC", "READPATT": "NRSIRS2"}])
def test_nirspec_irs2_readout_is_refused_when_opened(tmp_path, uncal, kw):
    """IRS2 (full-frame science readout, reference columns interleaved) is not implemented:
    refused on opening, naming the keyword, not met later as a missing reference."""
    p = uncal.write_uncal(tmp_path / "irs2_uncal.fits", uncal.ramp(), **kw)
    with pytest.raises(ExposureError, match=r"irs2_uncal\.fits: NIRSpec IRS2 readout .*is not supported"):
        read_uncal_header(p)
