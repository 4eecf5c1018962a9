"""refpix wrapper: spec 09 §6, chunking changes nothing, laziness, status and errors."""

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp.dims import make_exposure
from daskramp.dq import DO_NOT_USE, REFERENCE_PIXEL
from daskramp.kernels import refpix as kernel
from daskramp.steps.refpix import Params, refpix

N = 2048


def exposure(data, pixeldq, *, substrt1=1, substrt2=1, fastaxis=-2, slowaxis=-1, noutputs=1,
             subarray="SUBSTRIP256", instrument="NIRISS", zeroframe=None, chunks=None):
    nint, ngroup, ny, nx = data.shape
    attrs = dict(
        INSTRUME=instrument, DETECTOR="NIS", EXP_TYPE="NIS_SOSS", READPATT="NISRAPID",
        SUBARRAY=subarray, SUBSTRT1=substrt1, SUBSTRT2=substrt2, SUBSIZE1=nx, SUBSIZE2=ny,
        FASTAXIS=fastaxis, SLOWAXIS=slowaxis, NOUTPUTS=noutputs, NINTS=nint, NGROUPS=ngroup,
        NFRAMES=1, GROUPGAP=0, TFRAME=5.49, TGROUP=5.49,
    )
    if zeroframe is not None:
        attrs["ZEROFRAM"] = True
    if chunks is not None:
        data = da.from_array(data, chunks=chunks)
        if zeroframe is not None:
            zeroframe = da.from_array(zeroframe, chunks=(chunks[0], chunks[2], chunks[3]))
    return make_exposure(data, attrs, pixeldq=pixeldq, zeroframe=zeroframe)


def kernel_geometry(ds):
    a = ds.attrs
    return dict(substrt1=a["SUBSTRT1"], substrt2=a["SUBSTRT2"], fastaxis=a["FASTAXIS"],
                slowaxis=a["SLOWAXIS"], noutputs=a["NOUTPUTS"], subarray=a["SUBARRAY"])


def soss():
    """09 §6 geometry and values (2 groups): 1000 + 10·g + 5·(row odd), science +300."""
    ny, nx = 256, 2048
    dq = np.zeros((ny, nx), np.uint32)
    dq[:, :4] = dq[:, -4:] = dq[-4:] = REFERENCE_PIXEL
    g = np.arange(2)[:, None, None]
    row = np.arange(ny)[None, :, None]
    data = (1000 + 10 * g + 5 * (row % 2) + 300 * (dq == 0)).astype(np.float32)[None]
    return data, dq


@pytest.mark.parametrize("chunks", [None, (1, 2, 256, 512), (1, 2, 64, 2048)])
def test_soss_substrip256_spec_numbers(chunks):
    data, dq = soss()
    ds = exposure(data, dq, substrt2=1793, chunks=chunks)
    out = refpix(ds)
    assert out.attrs["S_REFPIX"] == "COMPLETE"
    assert out.data.dtype == np.float32
    science = dq == 0
    values = out.data.values
    np.testing.assert_array_equal(values[..., science], 300.0)
    np.testing.assert_array_equal(values[..., ~science], 0.0)
    # without odd/even columns: 297.5 / 302.5 on even / odd rows, reference ±2.5
    flat = refpix(ds, odd_even_columns=False).data.values
    odd = (np.arange(256) % 2 == 1)[:, None]
    np.testing.assert_array_equal(flat[..., science & ~odd], 297.5)
    np.testing.assert_array_equal(flat[..., science & odd], 302.5)
    np.testing.assert_array_equal(flat[..., ~science & odd], 2.5)
    # DQ and metadata untouched
    assert out.pixeldq is ds.pixeldq or np.array_equal(out.pixeldq.values, dq)
    np.testing.assert_array_equal(out.groupdq.values, 0)
    assert out.attrs["SUBSTRT2"] == 1793 and "S_REFPIX" not in ds.attrs


def corner_exposure(rng, *, corner, noutputs, fastaxis, slowaxis, nint=3, ngroup=2, ny=40, nx=48):
    y0, x0 = (0, 0) if corner == "bottom-left" else (N - ny, N - nx)
    data = rng.normal(1000, 5, (nint, ngroup, ny, nx)).astype(np.float32)
    dq = np.zeros((N, N), np.uint32)
    dq[:4] = dq[-4:] = dq[:, :4] = dq[:, -4:] = REFERENCE_PIXEL
    dq = dq[y0 : y0 + ny, x0 : x0 + nx].copy()
    dq[rng.integers(0, ny, 4), rng.integers(0, nx, 4)] |= DO_NOT_USE
    return data, dq, dict(substrt1=x0 + 1, substrt2=y0 + 1, fastaxis=fastaxis, slowaxis=slowaxis,
                          noutputs=noutputs, subarray="SUBX")


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    corner=st.sampled_from(["bottom-left", "top-right"]),
    noutputs=st.sampled_from([1, 4]),
    axes=st.sampled_from([(-1, 2), (1, -2), (2, 1), (-2, -1), (2, -1)]),
    ci=st.integers(1, 3),
    cy=st.integers(3, 40),
    cx=st.integers(3, 48),
)
def test_chunked_equals_whole_frame_kernel(seed, corner, noutputs, axes, ci, cy, cx):
    rng = np.random.default_rng(seed)
    data, dq, geo = corner_exposure(rng, corner=corner, noutputs=noutputs, fastaxis=axes[0],
                                    slowaxis=axes[1])
    ds = exposure(data, dq, chunks=(ci, 2, cy, cx), **geo)
    out = refpix(ds)
    np.testing.assert_array_equal(out.data.values, kernel.refpix(data, dq, **kernel_geometry(ds)))


@pytest.mark.parametrize("chunks", [(1, 2, N, 512), (1, 2, 700, N)])
def test_full_frame_tiles_equal_whole_frame_kernel(chunks):
    rng = np.random.default_rng(7)
    data = rng.normal(1000, 5, (1, 2, N, N)).astype(np.float32)
    dq = np.zeros((N, N), np.uint32)
    dq[:4] = dq[-4:] = dq[:, :4] = dq[:, -4:] = REFERENCE_PIXEL
    dq[300:320, 2046] |= DO_NOT_USE
    ds = exposure(data, dq, fastaxis=1, slowaxis=-2, noutputs=4, subarray="FULL", chunks=chunks)
    out = refpix(ds, side_gain=0.8)
    expected = kernel.refpix(data, dq, fastaxis=1, slowaxis=-2, noutputs=4, side_gain=0.8)
    np.testing.assert_array_equal(out.data.values, expected)


def _forbid(*args, **kwargs):
    raise AssertionError("refpix computed something while building the graph")


def test_graph_building_computes_nothing():
    rng = np.random.default_rng(1)
    data, dq, geo = corner_exposure(rng, corner="bottom-left", noutputs=4, fastaxis=-1, slowaxis=2)
    zf = data[:, 0].copy()
    zf[0, 10, 10] = 0
    ds = exposure(data, dq, zeroframe=zf, chunks=(1, 2, 20, 16), **geo)
    ds["pixeldq"] = ds.pixeldq.chunk({"y": 20, "x": 16})
    with dask.config.set(scheduler=_forbid):
        out = refpix(ds)
    assert isinstance(out.data.data, da.Array) and isinstance(out.zeroframe.data, da.Array)
    assert out.data.data.chunks == ds.data.data.chunks
    expected = kernel.refpix(data, dq, **kernel_geometry(ds))
    np.testing.assert_array_equal(out.data.values, expected)
    zexp = kernel.refpix_zeroframe(zf, dq, **kernel_geometry(ds))
    np.testing.assert_array_equal(out.zeroframe.values, zexp)
    assert out.zeroframe.values[0, 10, 10] == 0 and out.zeroframe.dtype == np.float32


def test_inputs_not_mutated_and_uint16_accepted():
    data, dq = soss()
    raw = data.astype(np.uint16)
    ds = exposure(raw, dq, substrt2=1793)
    before = raw.copy()
    out = refpix(ds)
    np.testing.assert_array_equal(raw, before)
    np.testing.assert_array_equal(ds.data.values, before)
    assert out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data.values[..., dq == 0], 300.0)


def test_no_reference_pixels_is_complete_and_unchanged():
    data = np.full((1, 2, 8, 8), 7, np.float32)
    ds = exposure(data, np.zeros((8, 8), np.uint32), substrt1=500, substrt2=500)
    out = refpix(ds)
    assert out.attrs["S_REFPIX"] == "COMPLETE"
    np.testing.assert_array_equal(out.data.values, data)


def test_skipped_cases():
    data, dq = soss()
    ds = exposure(data, dq, substrt2=1793)
    assert refpix(ds, skip=True).attrs["S_REFPIX"] == "SKIPPED"
    # a 256-row subarray starting at row 1800 would end beyond row 2048
    off = exposure(data, dq, substrt2=1793).assign_coords(y=np.arange(1800, 2056))
    off.attrs["SUBSTRT2"] = 1801
    out = refpix(off)
    assert out.attrs["S_REFPIX"] == "SKIPPED"
    np.testing.assert_array_equal(out.data.values, data)
    miri = exposure(data, dq, substrt2=1793, instrument="MIRI")
    assert refpix(miri).attrs["S_REFPIX"] == "SKIPPED"


def test_errors():
    data, dq = soss()
    ds = exposure(data, dq, substrt2=1793)
    with pytest.raises(NotImplementedError, match="sirs"):
        refpix(ds, refpix_algorithm="sirs")
    with pytest.raises(TypeError):
        refpix(ds, no_such_parameter=1)
    irs2 = exposure(np.zeros((1, 1, 2048, 3200), np.float32), np.zeros((2048, 3200), np.uint32),
                    fastaxis=2, slowaxis=1, noutputs=4, subarray="FULL")
    with pytest.raises(NotImplementedError, match="IRS2"):
        refpix(irs2)


def test_params_defaults_are_the_official_ones():
    p = Params()
    assert (p.odd_even_columns, p.use_side_ref_pixels, p.side_smoothing_length, p.side_gain,
            p.odd_even_rows, p.siglimit, p.refpix_algorithm, p.skip) == (
        True, True, 11, 1.0, True, 3.0, "median", False)
