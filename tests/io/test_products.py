"""Stage-1 products: atomic Zarr stores, streamed FITS files, provenance and statuses.

Products are built inline with values that reveal their position:
``data[i, y, x] = 100·i + 10·y + x + 0.5`` (exact in float32), so any misplaced slab shows.
"""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.dims import INT_TIMES_COLUMNS
from daskramp.io.products import (
    LAYOUTS,
    ProductError,
    _slab_chunks,
    is_complete,
    product_attrs,
    slabs,
    to_fits,
    write_products,
    write_zarr_atomic,
    zarr_chunks,
)
from daskramp.io.store import partial_path
from daskramp.testing.ramps import make_attrs

NINT, NY, NX = 3, 4, 5
#: DQ of a reference pixel whose gain is 0 (spec 00 §3): REFERENCE_PIXEL | NO_GAIN_VALUE | DO_NOT_USE
REFPIX_DQ = 2148007937
assert REFPIX_DQ == dq.PIXEL["REFERENCE_PIXEL"] | dq.NO_GAIN_VALUE | dq.DO_NOT_USE

# a SOSS SUBSTRIP256-like strip (the shared test keywords, placed and sized for these products)
ATTRS = make_attrs(SUBSTRT2=1793, SUBSIZE1=NX, SUBSIZE2=NY, NINTS=20, NGROUPS=3, TFRAME=5.494,
                   TGROUP=5.494, **{"DATE-OBS": "2023-06-01", "TIME-OBS": "12:00:00.000",
                                    "S_RAMP": "COMPLETE"})

PROVENANCE = {
    "pipeline": "calwebb_detector1",
    "steps": {
        "dq_init": {"status": "COMPLETE", "parameters": {"skip": False}},
        "jump": {"status": "COMPLETE", "parameters": {"rejection_threshold": 4.0}},
        "persistence": {"status": "SKIPPED", "parameters": {"skip": True}},
    },
    "reference_files": {
        "gain": {"file": "jwst_niriss_gain_0005.fits", "sha256": "ab" * 32},
        "dark": {"file": "N/A", "sha256": None},
    },
    "versions": {"numpy": np.__version__},
    "inputs": ["jw01_nis_uncal.fits"],
}


def cube_values(nint=NINT, ny=NY, nx=NX):
    i, y, x = np.meshgrid(np.arange(nint), np.arange(ny), np.arange(nx), indexing="ij")
    return (100 * i + 10 * y + x + 0.5).astype(np.float32)


def make_rateints(nint=NINT, ny=NY, nx=NX, chunks=None, first=10):
    data = cube_values(nint, ny, nx)
    dqv = np.zeros(data.shape, np.uint32)
    dqv[0, 0, 0] = REFPIX_DQ
    dqv[1, 2, 3] = dq.JUMP_DET
    dqv[-1, -1, -1] = 2**32 - 1  # every bit: tests the BZERO round trip at the top end
    integ = np.arange(first, first + nint)
    coords = {
        "integration": integ,
        "integration_number": ("integration", integ + 1),
        "y": np.arange(1792, 1792 + ny, dtype=np.int32),
        "x": np.arange(nx, dtype=np.int32),
    }
    for k, c in enumerate(INT_TIMES_COLUMNS):
        coords[c] = ("integration", 60000.0 + k + 0.001 * integ)
    dims = ("integration", "y", "x")
    ds = xr.Dataset(
        {
            "data": (dims, data),
            "err": (dims, data / 10),
            "dq": (dims, dqv),
            "var_poisson": (dims, data / 100),
            "var_rnoise": (dims, np.full(data.shape, 0.25, np.float32)),
        },
        coords=coords,
        attrs=dict(ATTRS),
    )
    return ds.chunk(chunks) if chunks else ds


def make_rate(ds_ints):
    ds = ds_ints.isel(integration=0, drop=True)
    return ds.drop_vars([c for c in ds.coords if c not in ("y", "x")])


def assert_same_product(a: xr.Dataset, b: xr.Dataset):
    assert set(a.data_vars) == set(b.data_vars)
    for v in a.data_vars:
        assert a[v].dtype == b[v].dtype, v
        assert a[v].dims == b[v].dims, v
        np.testing.assert_array_equal(a[v].values, b[v].values)
    for c in a.coords:
        np.testing.assert_array_equal(a[c].values, b[c].values)


# ---------------------------------------------------------------------------- Zarr


def test_zarr_round_trip(tmp_path):
    ds = make_rateints(chunks={"integration": 2, "x": 3})
    path = write_zarr_atomic(ds, tmp_path / "p_rateints.zarr")
    assert is_complete(path) and not partial_path(path).exists()
    with xr.open_zarr(path, consolidated=False) as back:
        assert_same_product(ds, back)
        assert back["dq"].values[0, 0, 0] == REFPIX_DQ
        for k, v in ATTRS.items():
            assert back.attrs[k] == v, k
        assert back["integration_number"].values.tolist() == [11, 12, 13]


def test_product_variables_use_the_fast_compressor_or_none(tmp_path):
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    path = write_zarr_atomic(make_rateints(chunks={"integration": 2}), tmp_path / "p_rateints.zarr")
    group = zarr.open_group(path, mode="r")
    for name in ("err", "var_poisson", "var_rnoise", "dq"):
        codecs = group[name].metadata.codecs
        assert [type(c) for c in codecs[1:]] == [ZstdCodec, Crc32cCodec], name
        assert codecs[1].level == 1, name
    # the rates barely compress: stored as plain bytes (with their checksum)
    assert [type(c) for c in group["data"].metadata.codecs[1:]] == [Crc32cCodec]
    # every array ends with crc32c, the coordinates too
    for name, arr in group.arrays():
        assert isinstance(arr.metadata.codecs[-1], Crc32cCodec), name


def test_zarr_chunks_follow_dask_chunks():
    """Dask chunks (2, 2, 1) along integration: boundaries 2, 4 → Zarr chunk gcd = 2;
    x chunks (3, 2): boundary 3 → 3.  A numpy variable gets one chunk."""
    ds = make_rateints(nint=5, chunks={"integration": 2, "x": 3})
    assert zarr_chunks(ds["data"]) == (2, NY, 3)
    assert zarr_chunks(make_rateints(nint=5)["data"]) == (5, NY, NX)
    # a 16-byte budget splits the leading axis to the largest divisor of 5 that fits: 1
    assert zarr_chunks(make_rateints(nint=5)["data"], target_bytes=16) == (1, NY, NX)


def _failing(block, block_info=None):
    if block_info[0]["chunk-location"][0] == 1:
        raise RuntimeError("worker lost")
    return block


def test_interrupted_zarr_is_not_complete_and_rerun_redoes(tmp_path):
    """The second integration block fails mid-compute: nothing at the final path, only
    `.partial`; a rerun removes it and writes a complete store."""
    good = make_rateints(chunks={"integration": 1})
    bad = good.copy()
    bad["data"] = bad["data"].copy(data=good["data"].data.map_blocks(_failing, dtype=np.float32))
    path = tmp_path / "p_rateints.zarr"
    with pytest.raises(RuntimeError, match="worker lost"), dask.config.set(scheduler="sync"):
        write_zarr_atomic(bad, path)
    assert not path.exists() and partial_path(path).exists()
    assert not is_complete(path) and not is_complete(partial_path(path))
    write_zarr_atomic(good, path)
    assert is_complete(path) and not partial_path(path).exists()
    with xr.open_zarr(path, consolidated=False) as back:
        assert_same_product(good, back)


def _no_compute(*args, **kwargs):
    raise AssertionError("something was computed")


def test_rerun_over_complete_store_is_noop_unless_overwrite(tmp_path):
    path = write_zarr_atomic(make_rateints(chunks={"integration": 1}), tmp_path / "p.zarr")
    other = make_rateints(chunks={"integration": 1})
    other["data"] = other["data"] * 2
    with dask.config.set(scheduler=_no_compute):
        assert write_zarr_atomic(other, path) == path
    with xr.open_zarr(path, consolidated=False) as back:
        np.testing.assert_array_equal(back["data"].values, cube_values())
    write_zarr_atomic(other, path, overwrite=True)
    with xr.open_zarr(path, consolidated=False) as back:
        np.testing.assert_array_equal(back["data"].values, 2 * cube_values())


def test_store_without_completion_mark_is_rewritten(tmp_path):
    """A store at the final name but without the completion attribute (e.g. a copy interrupted
    by hand) is not complete, and is replaced."""
    path = tmp_path / "p.zarr"
    make_rateints().to_zarr(path, zarr_format=3, consolidated=False)
    assert not is_complete(path)
    write_zarr_atomic(make_rateints(), path)
    assert is_complete(path)


# ---------------------------------------------------------------------------- attrs / provenance


def test_product_attrs_statuses_references_provenance():
    attrs = product_attrs(
        {**ATTRS, "np_int": np.int64(3), "bad": float("nan")}, PROVENANCE, kind="rateints"
    )
    assert attrs["S_DQINIT"] == "COMPLETE" and attrs["S_JUMP"] == "COMPLETE"
    assert attrs["S_PERSIS"] == "SKIPPED"
    assert attrs["S_RAMP"] == "COMPLETE"  # already in attrs: kept
    assert attrs["R_GAIN"] == "jwst_niriss_gain_0005.fits" and attrs["R_DARK"] == "N/A"
    assert attrs["BUNIT"] == "DN/s"
    assert json.loads(attrs["daskramp_provenance"]) == json.loads(json.dumps(PROVENANCE))
    assert type(attrs["np_int"]) is int and attrs["bad"] is None
    with pytest.raises(ProductError, match="S_JUMP='DONE'"):
        product_attrs({"S_JUMP": "DONE"}, {}, kind="rate")


# ---------------------------------------------------------------------------- FITS


def test_rateints_fits_layout(tmp_path):
    ds = make_rateints()
    ds.attrs.update(product_attrs(ds.attrs, PROVENANCE, kind="rateints"))
    path = to_fits(ds, tmp_path / "p_rateints.fits", kind="rateints")
    with fits.open(path) as h:
        assert [x.name for x in h] == [
            "PRIMARY",
            "SCI",
            "ERR",
            "DQ",
            "VAR_POISSON",
            "VAR_RNOISE",
            "INT_TIMES",
        ]
        p = h[0].header
        assert h[0].data is None
        assert (
            p["DATAMODL"] == "CubeModel"
            and p["BUNIT"] == "DN/s"
            and p["FILENAME"] == "p_rateints.fits"
        )
        assert (
            p["S_RAMP"] == "COMPLETE"
            and p["S_PERSIS"] == "SKIPPED"
            and p["R_GAIN"].startswith("jwst_niriss_gain")
        )
        assert p["SUBSTRT2"] == 1793 and p["ZEROFRAM"] is False and p["TFRAME"] == 5.494
        assert json.loads(p["DRPROV"])["steps"]["jump"]["parameters"]["rejection_threshold"] == 4.0
        assert h["SCI"].header["BUNIT"] == "DN/s" and h["ERR"].header["BUNIT"] == "DN/s"
        assert h["SCI"].header["BITPIX"] == -32 and h["DQ"].header["BITPIX"] == 32
        assert h["DQ"].header["BZERO"] == 2**31
        for name, var in (
            ("SCI", "data"),
            ("ERR", "err"),
            ("DQ", "dq"),
            ("VAR_POISSON", "var_poisson"),
            ("VAR_RNOISE", "var_rnoise"),
        ):
            arr = h[name].data
            assert arr.shape == (NINT, NY, NX)
            assert arr.dtype.newbyteorder("=") == ds[var].dtype, name
            np.testing.assert_array_equal(arr, ds[var].values)
        assert h["DQ"].data[0, 0, 0] == REFPIX_DQ and h["DQ"].data[-1, -1, -1] == 2**32 - 1
        t = h["INT_TIMES"]
        assert t.columns.names == ["integration_number", *INT_TIMES_COLUMNS]
        assert t.columns.formats == ["J"] + ["D"] * 6
        assert t.data["integration_number"].tolist() == [11, 12, 13]
        np.testing.assert_array_equal(
            t.data["int_mid_MJD_UTC"], 60001.0 + 0.001 * np.arange(10, 13)
        )


def test_rate_fits_layout(tmp_path):
    rate = make_rate(make_rateints())
    path = to_fits(rate, tmp_path / "p_rate.fits", kind="rate")
    with fits.open(path) as h:
        assert [x.name for x in h] == ["PRIMARY", "SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"]
        assert h[0].header["DATAMODL"] == "ImageModel"
        assert h["SCI"].data.shape == (NY, NX) and h["DQ"].data.dtype == np.uint32
        np.testing.assert_array_equal(h["SCI"].data, cube_values()[0])


def test_fits_layout_errors(tmp_path):
    ds = make_rateints()
    with pytest.raises(ProductError, match="'var_rnoise' .* is missing"):
        to_fits(ds.drop_vars("var_rnoise"), tmp_path / "x.fits", kind="rateints")
    with pytest.raises(ProductError, match="'dq' has dtype float32"):
        to_fits(ds.assign(dq=ds["dq"].astype(np.float32)), tmp_path / "x.fits", kind="rateints")
    with pytest.raises(ProductError, match="has dims"):
        to_fits(ds, tmp_path / "x.fits", kind="rate")
    assert not list(tmp_path.iterdir())  # nothing left behind


def _reference_fits(ds, path, kind):
    """The same file written at once with astropy from in-memory arrays."""
    hdus = [fits.PrimaryHDU()]
    for var, (extname, dtype, _, _) in LAYOUTS[kind].items():
        if var in ds:
            hdus.append(fits.ImageHDU(ds[var].values.astype(dtype), name=extname))
    fits.HDUList(hdus).writeto(path)
    return path


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    slab_bytes=st.integers(1, 400),  # 20 B = one row, 80 B = one integration
    ichunk=st.integers(1, 4),
    xchunk=st.integers(1, 5),
)
def test_chunked_fits_equals_one_shot(tmp_path_factory, slab_bytes, ichunk, xchunk):
    """Whatever the slab size and dask chunking, the streamed file holds the same data bytes as
    a file written at once: each HDU's data section is compared byte for byte."""
    tmp = tmp_path_factory.mktemp("fits")
    ds = make_rateints(nint=4).chunk({"integration": ichunk, "x": xchunk})
    with dask.config.set(scheduler="sync"):
        streamed = to_fits(ds, tmp / "s.fits", kind="rateints", slab_bytes=slab_bytes)
    ref = _reference_fits(ds.compute(), tmp / "r.fits", "rateints")
    with fits.open(streamed) as a, fits.open(ref) as b:
        for name in ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"):
            sa, sb = a[name], b[name]
            assert sa.header["BITPIX"] == sb.header["BITPIX"] and sa.shape == sb.shape
            assert sa.header.get("BZERO") == sb.header.get("BZERO")
            raw = []
            for f, h in ((streamed, sa), (ref, sb)):
                with open(f, "rb") as fh:
                    fh.seek(h._data_offset)
                    raw.append(fh.read(h._data_size))
            assert raw[0] == raw[1], name


def test_slabs_cover_array_in_order():
    """A (3, 4, 5) float32 array (80 B per plane row-block of 4×5): 100-byte slabs are one
    plane each (80 B) — leading chunks (2, 1) would give 160 B, so each plane is alone."""
    got = list(slabs((3, 4, 5), 4, 100, leading_chunks=(2, 1)))
    assert got == [(slice(0, 1), slice(0, 4), slice(0, 5)), (slice(1, 2), slice(0, 4), slice(0, 5)),
                   (slice(2, 3), slice(0, 4), slice(0, 5))]  # fmt: skip
    # 200 B: the first dask chunk (2 planes, 160 B) is one slab, the second another
    assert [s[0] for s in slabs((3, 4, 5), 4, 200, leading_chunks=(2, 1))] == [
        slice(0, 2),
        slice(2, 3),
    ]
    # 30 B < one plane: split rows; a row is 20 B so one row per slab, 12 slabs in C order
    got = list(slabs((3, 4, 5), 4, 30))
    assert len(got) == 12 and got[5] == (1, slice(1, 2), slice(0, 5))


# ---------------------------------------------------------------------------- write_products


class _Counter:
    n = 0


def _count(block):
    _Counter.n += 1
    return block


def _products(chunks):
    base = make_rateints(nint=4).chunk(chunks)
    counted = base["data"].data.map_blocks(_count, dtype=np.float32, meta=np.array((), np.float32))
    ints = base.assign(data=base["data"].copy(data=counted))
    rate = make_rate(ints).assign(data=(("y", "x"), counted.mean(axis=0)))
    return {"rateints": ints, "rate": rate}


def test_write_products_computes_the_graph_once(tmp_path):
    """rate and rateints share one upstream (4 blocks): writing both, Zarr and FITS, runs
    each upstream block exactly once (the same tasks write both formats)."""
    prods = _products({"integration": 1})
    _Counter.n = 0
    with dask.config.set(scheduler="sync"):
        paths = write_products(prods, tmp_path, root="jw01_nis", provenance=PROVENANCE)
    assert _Counter.n == 4
    assert sorted(paths) == ["rate_fits", "rate_zarr", "rateints_fits", "rateints_zarr"]
    assert paths["rateints_fits"].name == "jw01_nis_rateints.fits"
    assert all(is_complete(p) for p in paths.values())
    with xr.open_zarr(paths["rateints_zarr"], consolidated=False) as z:
        assert z.attrs["S_PERSIS"] == "SKIPPED" and z.attrs["BUNIT"] == "DN/s"
        assert json.loads(z.attrs["daskramp_provenance"])["inputs"] == ["jw01_nis_uncal.fits"]
        assert z["var_poisson"].attrs["units"] == "(DN/s)^2"
    with fits.open(paths["rate_fits"]) as h:
        np.testing.assert_allclose(h["SCI"].data, cube_values(4).mean(axis=0))
    assert "S_PERSIS" not in prods["rateints"].attrs  # the caller's Dataset is untouched
    assert "units" not in prods["rateints"]["var_poisson"].attrs

    # a rerun finds everything complete and computes nothing
    with dask.config.set(scheduler=_no_compute):
        again = write_products(
            _products({"integration": 1}), tmp_path, root="jw01_nis", provenance=PROVENANCE
        )
    assert again == paths


def test_figures_computed_with_the_stores_share_their_tasks(tmp_path):
    """``also``: figures of the lazy products come out of the graph that writes the stores,
    each upstream block still computed once; on a rerun (products complete) they are not
    computed (None) and nothing runs."""
    prods = _products({"integration": 1})
    also = {"mean": prods["rate"]["data"].data.mean(), "per_int": prods["rateints"]["data"].data.max(axis=(1, 2))}
    _Counter.n = 0
    with dask.config.set(scheduler="sync"):
        paths, values = write_products(prods, tmp_path, root="r", provenance=PROVENANCE, also=also)
    assert _Counter.n == 4
    cube = cube_values(4)
    np.testing.assert_allclose(values["mean"], cube.mean(axis=0).mean(), rtol=1e-6)
    np.testing.assert_array_equal(values["per_int"], cube.max(axis=(1, 2)))
    with dask.config.set(scheduler=_no_compute):
        prods = _products({"integration": 1})
        again, none = write_products(prods, tmp_path, root="r", provenance=PROVENANCE,
                                     also={"mean": prods["rate"]["data"].data.mean()})
    assert again == paths and none is None


def test_products_stored_and_exported_in_one_computation(tmp_path):
    """The Zarr stores of rate and rateints and both FITS files come from one computation
    (one round trip to the cluster, the FITS slabs reading each store once all of its blocks
    are counted); a FITS file lost afterwards is exported again from its finished store by
    one more, byte for byte."""
    calls = []

    def counting_get(dsk, keys, **kw):
        calls.append(keys)
        return dask.get(dsk, keys, **kw)

    with dask.config.set(scheduler=counting_get):
        paths = write_products(_products({"integration": 2}), tmp_path, root="r", provenance=PROVENANCE)
    assert len(calls) == 1
    assert all(is_complete(p) for p in paths.values()) and len(paths) == 4
    assert not list(tmp_path.glob("*.partial"))
    good = paths["rateints_fits"].read_bytes()
    paths["rateints_fits"].unlink()
    calls.clear()
    with dask.config.set(scheduler=counting_get):
        again = write_products(_products({"integration": 2}), tmp_path, root="r", provenance=PROVENANCE)
    assert again == paths and len(calls) == 1
    assert paths["rateints_fits"].read_bytes() == good


@pytest.mark.parametrize("slab_bytes", [1, 700, None])
@pytest.mark.parametrize("chunks", [{"integration": 1}, {"integration": 3, "x": 5}])
def test_fits_exported_by_tasks_equals_to_fits(tmp_path, chunks, slab_bytes):
    """The FITS files exported from the stores by slab tasks (one Zarr chunk row per task,
    several, or the default) are byte for byte what :func:`to_fits` makes in one process
    (same file name, so FILENAME agrees too)."""
    kw = {} if slab_bytes is None else {"slab_bytes": slab_bytes}
    paths = write_products(_products(chunks), tmp_path / "a", root="r", provenance=PROVENANCE, **kw)
    for kind in ("rate", "rateints"):
        with xr.open_zarr(paths[f"{kind}_zarr"], consolidated=False) as src:
            ref = to_fits(src, tmp_path / "b" / paths[f"{kind}_fits"].name, kind=kind)
        assert paths[f"{kind}_fits"].read_bytes() == ref.read_bytes(), kind


def test_slab_chunks_whole_frames_aligned_with_zarr():
    var = xr.DataArray(np.zeros((10, 4, 6), np.float32), dims=("integration", "y", "x"))
    frame = 4 * 6 * 4
    assert _slab_chunks(var, (2, 4, 3), 5 * frame) == (4, 4, 6)   # two Zarr chunks of 2
    assert _slab_chunks(var, (2, 4, 3), 1) == (2, 4, 6)           # at least one
    assert _slab_chunks(var, (3, 4, 6), 10**9) == (10, 4, 6)      # capped by the length
    img = xr.DataArray(np.zeros((8, 6), np.uint32), dims=("y", "x"))
    assert _slab_chunks(img, (8, 6), 3 * 24) == (8, 6)             # a Zarr chunk of rows
    assert _slab_chunks(img, (1, 6), 3 * 24) == (3, 6)


def test_failed_products_leave_no_fits(tmp_path):
    prods = _products({"integration": 1})
    ints = prods["rateints"]
    prods["rateints"] = ints.assign(err=ints["err"].copy(
        data=ints["err"].data.map_blocks(_failing, dtype=np.float32)))
    with pytest.raises(RuntimeError), dask.config.set(scheduler="sync"):
        write_products(prods, tmp_path, root="r", provenance={})
    # no FITS file, complete or partial (the Zarr .partial stores are rewritten by a rerun)
    assert not [p for p in tmp_path.iterdir() if ".fits" in p.name]
    assert not any(is_complete(p) for p in tmp_path.iterdir())


def test_fits_only_leaves_no_store(tmp_path):
    paths = write_products(
        _products({"integration": 2}), tmp_path, root="r", provenance={}, zarr=False
    )
    assert sorted(paths) == ["rate_fits", "rateints_fits"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_rate.fits", "r_rateints.fits"]


def test_missing_fits_is_made_from_the_complete_store(tmp_path):
    paths = write_products(_products({"integration": 2}), tmp_path, root="r", provenance={})
    paths["rateints_fits"].unlink()
    with dask.config.set(scheduler="sync"):
        _Counter.n = 0
        write_products(_products({"integration": 2}), tmp_path, root="r", provenance={})
    assert _Counter.n == 0 and is_complete(paths["rateints_fits"])


def test_interrupted_fits_leaves_no_file(tmp_path):
    ds = make_rateints(chunks={"integration": 1})
    ds["err"] = ds["err"].copy(data=ds["err"].data.map_blocks(_failing, dtype=np.float32))
    with pytest.raises(RuntimeError), dask.config.set(scheduler="sync"):
        to_fits(ds, tmp_path / "p.fits", kind="rateints", slab_bytes=1)
    assert list(tmp_path.iterdir()) == []


def test_ramp_intermediate_fits(tmp_path):
    """A saved ramp (4-D) goes out as a RampModel: SCI float32, PIXELDQ uint32, GROUPDQ uint8."""
    ramp = make_ramp()
    paths = write_products({"jump_ramp": ramp}, tmp_path, root="r", provenance={})
    with fits.open(paths["jump_ramp_fits"]) as h:
        assert [x.name for x in h] == ["PRIMARY", "SCI", "PIXELDQ", "GROUPDQ", "INT_TIMES"]
        assert h[0].header["DATAMODL"] == "RampModel" and h[0].header["BUNIT"] == "DN"
        assert h["GROUPDQ"].data.dtype == np.uint8 and h["GROUPDQ"].data[1, 2, 0, 0] == dq.JUMP_DET
        np.testing.assert_array_equal(h["SCI"].data, ramp["data"].values)


def make_ramp(nint=2, ngroup=3):
    data = np.arange(nint * ngroup * NY * NX, dtype=np.float32).reshape(nint, ngroup, NY, NX)
    gdq = np.zeros(data.shape, np.uint8)
    gdq[1, 2, 0, 0] = dq.JUMP_DET
    dims4 = ("integration", "group", "y", "x")
    integ = np.arange(nint)
    coords = {"integration": integ, "integration_number": ("integration", integ + 1)}
    for k, c in enumerate(INT_TIMES_COLUMNS):
        coords[c] = ("integration", 60000.0 + k + 0.001 * integ)
    return xr.Dataset(
        {
            "data": (dims4, data),
            "groupdq": (dims4, gdq),
            "pixeldq": (("y", "x"), np.zeros((NY, NX), np.uint32)),
        },
        coords=coords,
        attrs={**ATTRS, "NINTS": nint, "NGROUPS": ngroup},
    )


# ---------------------------------------------------------------------------- parity


@pytest.mark.parity
def test_products_open_with_jwst_datamodels(tmp_path):
    """The official datamodels read our files as CubeModel / ImageModel / RampModel with the
    same arrays, statuses and INT_TIMES (needs the parity extra: pip install -e ".[parity]")."""
    pytest.importorskip("jwst")
    from stdatamodels.jwst import datamodels

    prods = {
        "rateints": make_rateints(),
        "rate": make_rate(make_rateints()),
        "jump_ramp": make_ramp(),
    }
    paths = write_products(prods, tmp_path, root="jw01_nis", provenance=PROVENANCE, zarr=False)
    with datamodels.open(paths["rateints_fits"]) as m:
        assert type(m).__name__ == "CubeModel"
        for attr, var in (
            ("data", "data"),
            ("err", "err"),
            ("dq", "dq"),
            ("var_poisson", "var_poisson"),
            ("var_rnoise", "var_rnoise"),
        ):
            np.testing.assert_array_equal(getattr(m, attr), prods["rateints"][var].values)
            assert getattr(m, attr).dtype.newbyteorder("=") == prods["rateints"][var].dtype
        assert m.int_times["integration_number"].tolist() == [11, 12, 13]
        assert m.meta.cal_step.ramp_fit == "COMPLETE" and m.meta.cal_step.persistence == "SKIPPED"
        assert m.meta.bunit_data == "DN/s" and m.meta.subarray.ystart == 1793
        assert m.meta.instrument.detector == "NIS" and m.meta.exposure.nints == 20
        assert m.meta.ref_file.gain.name == "jwst_niriss_gain_0005.fits"
    with datamodels.open(paths["rate_fits"]) as m:
        assert type(m).__name__ == "ImageModel"
        np.testing.assert_array_equal(m.data, cube_values()[0])
    with datamodels.open(paths["jump_ramp_fits"]) as m:
        assert type(m).__name__ == "RampModel"
        assert m.groupdq.dtype == np.uint8 and m.groupdq[1, 2, 0, 0] == dq.JUMP_DET


@pytest.mark.parametrize("key", [(slice(0, 3),), (slice(1, 3), slice(1, 4), slice(2, 7)),
                                 (slice(2, 3), slice(0, 4), slice(6, 7))])
def test_chunk_source_reads_what_zarr_reads(tmp_path, key):
    """ZarrChunkSource (the FITS export's reader) returns zarr's own values for regions across
    chunk edges, edge chunks and chunks of NaN only (written too), compressed or not."""
    import daskramp.io.products as P

    ds = make_rateints(chunks={"integration": 2, "x": 3})
    ds["err"] = ds["err"].where(ds["integration"] >= ds["integration"][2])  # first chunk row: NaN
    path = write_zarr_atomic(ds, tmp_path / "p_rateints.zarr")
    assert (path / "err" / "c" / "0").exists() and (path / "err" / "c" / "1").exists()
    for name in ("data", "err", "dq"):
        src = P.ZarrChunkSource(path / name)
        zarr_arr = P._open_array(str(path / name), "r")
        assert P.ZarrChunkSource.supported(zarr_arr)
        got = src[key]
        want = zarr_arr[key]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(P.ZarrChunkSource(path / "err")[0:2], np.nan)


@pytest.mark.parametrize("chunks", [{"integration": 2, "x": 3}, {"integration": 1, "y": 2, "x": 4}])
def test_chunks_written_by_the_tasks_equal_zarrs_own(tmp_path, monkeypatch, chunks):
    """ZarrChunkTarget writes the same chunk files as zarr (with write_empty_chunks): float NaN
    fill (a chunk of NaN only is written too), uint32 dq, edge chunks padded, crc32c last."""
    import daskramp.io.products as P

    ds = make_rateints(chunks=chunks)
    ds["err"] = ds["err"].copy(data=ds["err"].data.map_blocks(lambda b: b * np.nan))  # all NaN
    used = []
    real = P.ZarrChunkTarget.__setitem__

    def spy(self, key, block):
        used.append(self.path)
        return real(self, key, block)

    monkeypatch.setattr(P.ZarrChunkTarget, "__setitem__", spy)
    ours = write_zarr_atomic(ds, tmp_path / "ours_rateints.zarr")
    assert used and any(u.endswith("data") for u in used) and any(u.endswith("dq") for u in used)
    monkeypatch.setattr(P.ZarrChunkTarget, "supported", staticmethod(lambda arr: False))
    theirs = write_zarr_atomic(ds, tmp_path / "zarr_rateints.zarr")

    def tree(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "zarr.json"}

    a, b = tree(ours), tree(theirs)
    assert a.keys() == b.keys() and any(k.startswith("data/c/") for k in a)
    assert any(k.startswith("err/c/") for k in a)  # NaN-only chunks written by both
    for k in a:
        assert a[k] == b[k], k
    with xr.open_zarr(ours, consolidated=False) as back:
        assert_same_product(ds, back)


def test_store_counts_every_block_and_refuses_a_missing_one(tmp_path, monkeypatch):
    """Each block written is counted (the counts are added two at a time in the graph); a
    block whose write is not counted makes the store fail instead of being marked complete."""
    import dask.array as da

    import daskramp.io.products as P

    src = da.arange(60, dtype=np.float32, chunks=7).reshape(3, 20).rechunk((2, 6))
    out = np.zeros((3, 20), np.float32)
    assert P._store_all([(src, out)]) is None
    np.testing.assert_array_equal(out, np.arange(60, dtype=np.float32).reshape(3, 20))
    assert P._stored_counts(src, out).compute() == src.npartitions == 8

    real = P.store_block

    def loses_one(block, target, block_info=None):
        n = real(block, target, block_info)
        return n * 0 if not any(block_info[0]["chunk-location"]) else n

    monkeypatch.setattr(P, "store_block", loses_one)
    with pytest.raises(P.ProductError, match="7 of 8 blocks were stored"):
        P._store_all([(src, np.zeros((3, 20), np.float32))])
    # a failed store is never finalized
    prods = _products({"integration": 1})
    with pytest.raises(P.ProductError):
        write_products(prods, tmp_path, root="r", provenance=PROVENANCE)
    assert not any(is_complete(p) for p in tmp_path.iterdir())
    # the FITS files, exported by the same graph, were removed with the failure
    assert not list(tmp_path.glob("*.fits*"))
