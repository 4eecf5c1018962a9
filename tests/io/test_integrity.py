"""Verified chunks: every array ends with crc32c, every chunk is written, a store is complete
only when every chunk of its manifest is on disk, and a lost or damaged chunk is an error
naming it, never the fill value."""

from __future__ import annotations

import json

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

import daskramp.io.products as P
from daskramp.io import ingest, open_exposure
from daskramp.io.store import (
    CHUNKS_ATTR,
    COMPLETE_ATTR,
    CorruptChunkError,
    MissingChunkError,
    StoreError,
    UnverifiedStoreError,
    VerifiedArray,
    decode_chunk,
    encode_chunk,
    finalize_store,
    is_complete,
    partial_path,
    verify_store,
)

# tiny exposures (tests/io/conftest.py): 7 integrations × 3 groups × 4 × 6
FRAME_BYTES = 3 * 4 * 6 * 2
THREE_INTEGRATIONS_MB = 3 * FRAME_BYTES / 2**20
REINGEST = "re-run daskramp ingest with --overwrite"


@pytest.fixture
def exposure(tmp_path, uncal):
    data = uncal.ramp()
    data[3:6] = 0  # the second shard holds zeros only (the fill value)
    paths = uncal.write_segments(tmp_path, data, [3, 2, 2], int_times="all")
    return data, paths


@pytest.fixture
def store(tmp_path, exposure):
    """Shards of 3 integrations (7 = 3 + 3 + 1), inner chunks of 4 columns."""
    return ingest(exposure[1], tmp_path / "exp.zarr", chunk_mb=THREE_INTEGRATIONS_MB, x_inner=4)


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def _chunk_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != "zarr.json")


def test_intact_store_round_trips_and_verifies(store, exposure):
    data, _ = exposure
    verify_store(store, checksums=True)  # every chunk, every inner chunk, every index
    ds = open_exposure(store)
    np.testing.assert_array_equal(ds["data"].values, data)
    tiles = open_exposure(store, chunks={"integration": 7, "x": 4})
    np.testing.assert_array_equal(tiles["data"].values, data)
    # every array, coordinates too, ends its chunks' codec chain with crc32c
    group = zarr.open_group(str(store), mode="r")
    for name, arr in group.arrays():
        codecs = arr.metadata.codecs
        chain = codecs[0].codecs if arr.shards else codecs
        assert isinstance(chain[-1], Crc32cCodec), name


def test_manifest_counts_every_chunk_file(store):
    attrs = zarr.open_group(str(store), mode="r").attrs
    manifest = attrs[CHUNKS_ATTR]
    assert attrs[COMPLETE_ATTR] is True
    assert manifest["data"] == 3  # three shards of 3, 3 and 1 integrations
    for name, count in manifest.items():
        assert len(_chunk_files(store / name)) == count, name
    assert set(manifest) == {n for n, _ in zarr.open_group(str(store), mode="r").arrays()}


def test_fill_value_chunks_are_written(store, tmp_path):
    # the all-zero shard is a file, and every inner chunk (the one past the array edge too)
    # is in its index
    shard = store / "data" / "c" / "1" / "0" / "0" / "0"
    assert shard.exists()
    index = np.frombuffer(shard.read_bytes()[-36:-4], "<u8").reshape(2, 2)
    assert (index != 2**64 - 1).all()
    # products: a NaN-only chunk is a file too
    ds = xr.Dataset({"err": (("integration", "y", "x"),
                             da.full((4, 2, 3), np.nan, np.float32, chunks=(2, 2, 3)))})
    path = P.write_zarr_atomic(ds, tmp_path / "p.zarr")
    assert _chunk_files(path / "err") == ["c/0/0/0", "c/1/0/0"]
    assert zarr.open_group(str(path), mode="r").attrs[CHUNKS_ATTR]["err"] == 2


def test_deleted_shard_is_refused_when_opened(store):
    (store / "data" / "c" / "1" / "0" / "0" / "0").unlink()
    with pytest.raises(MissingChunkError) as err:
        open_exposure(store)
    msg = str(err.value)
    assert msg == (f"{store}: array 'data' is missing 1 of 3 chunks (c/1/0/0/0); the store is "
                   f"damaged; {REINGEST}")
    with pytest.raises(MissingChunkError, match="c/1/0/0/0"):
        verify_store(store)


def test_deleted_chunk_of_unsharded_store_and_of_a_coordinate(tmp_path, exposure):
    store = ingest(exposure[1], tmp_path / "u.zarr", sharded=False, chunk_mb=1, x_inner=2)
    (store / "data" / "c" / "0" / "0" / "0" / "1").unlink()
    (store / "data" / "c" / "0" / "0" / "0" / "2").unlink()
    with pytest.raises(MissingChunkError, match=r"array 'data' is missing 2 of 3 chunks "
                                                r"\(c/0/0/0/1, c/0/0/0/2\)"):
        open_exposure(store)
    other = ingest(exposure[1], tmp_path / "v.zarr", chunk_mb=THREE_INTEGRATIONS_MB)
    (other / "segment" / "c" / "0").unlink()
    with pytest.raises(MissingChunkError, match="array 'segment' is missing 1 of 1 chunks"):
        open_exposure(other)


def test_chunk_lost_after_opening_is_an_error_not_the_fill_value(store):
    ds = open_exposure(store)
    (store / "data" / "c" / "2" / "0" / "0" / "0").unlink()
    with pytest.raises(MissingChunkError, match=r"array 'data' chunk c/2/0/0/0 is missing"), \
            dask.config.set(scheduler="sync"):
        ds["data"].compute()
    # the fused layout's reader reads the store through the same checks
    from daskramp.engine.chain import reader_for

    reader = reader_for(ds)
    assert reader.kind == "zarr"
    with pytest.raises(MissingChunkError, match="c/2/0/0/0"):
        reader.read(6, 7, slice(None), slice(None))
    reader.read(0, 3, slice(None), slice(0, 2))  # the other shards still read


def test_flipped_byte_in_a_chunk_raises_naming_it(store):
    shard = store / "data" / "c" / "0" / "0" / "0" / "0"
    _flip(shard, 20)  # inside the first inner chunk
    ds = open_exposure(store)  # a listing: the bytes are not read when opening
    with pytest.raises(CorruptChunkError) as err, dask.config.set(scheduler="sync"):
        ds["data"].compute()
    assert str(err.value) == (f"{store}: array 'data' chunk c/0/0/0/0 is corrupt (crc32c mismatch "
                              f"in inner chunk (0, 0, 0, 0)); {REINGEST}")
    with pytest.raises(CorruptChunkError, match=r"chunk c/0/0/0/0 is corrupt"):
        verify_store(store, checksums=True)
    # the other shards read
    np.testing.assert_array_equal(ds["data"][3:].values, open_exposure(store)["data"][3:].values)
    # a flipped byte in the shard index
    other = store / "data" / "c" / "2" / "0" / "0" / "0"
    _flip(other, len(other.read_bytes()) - 10)
    with pytest.raises(CorruptChunkError, match=r"chunk c/2/0/0/0 is corrupt \(crc32c mismatch "
                                                r"in the shard index\)"):
        open_exposure(store)["data"][6:].compute()


def test_flipped_byte_through_daskramps_decode_path(tmp_path, exposure):
    store = ingest(exposure[1], tmp_path / "u.zarr", sharded=False, chunk_mb=1, x_inner=2)
    arr = zarr.open_array(str(store / "data"), mode="r")
    chunk = store / "data" / "c" / "0" / "0" / "0" / "1"
    good = decode_chunk(chunk.read_bytes(), arr.chunks, arr.dtype, arr.metadata.codecs)
    np.testing.assert_array_equal(good, exposure[0][..., 2:4])
    _flip(chunk, 5)
    with pytest.raises(CorruptChunkError) as err:
        decode_chunk(chunk.read_bytes(), arr.chunks, arr.dtype, arr.metadata.codecs,
                     where=(str(store), "data", "c/0/0/0/1"))
    assert str(err.value) == (f"{store}: array 'data' chunk c/0/0/0/1 is corrupt "
                              f"(crc32c mismatch); {REINGEST}")
    with pytest.raises(CorruptChunkError, match="array 'data' chunk c/0/0/0/1 is corrupt"), \
            dask.config.set(scheduler="sync"):
        open_exposure(store).compute()
    # a product store read by the FITS export's reader
    ds = xr.Dataset({"err": (("integration", "y", "x"),
                             da.ones((4, 2, 3), np.float32, chunks=(2, 2, 3)))})
    path = P.write_zarr_atomic(ds, tmp_path / "p_rateints.zarr")
    _flip(path / "err" / "c" / "1" / "0" / "0", 3)
    with pytest.raises(CorruptChunkError, match=r"array 'err' chunk c/1/0/0 is corrupt \(crc32c "
                                                r"mismatch\)"):
        P.ZarrChunkSource(path / "err")[0:4]
    (path / "err" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(MissingChunkError, match="array 'err' chunk c/1/0/0 is missing"):
        P.ZarrChunkSource(path / "err")[0:4]


CHAINS = {
    "none": [Crc32cCodec()],
    "zstd": [ZstdCodec(level=1), Crc32cCodec()],
    "blosc": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4, blocksize=2**16),
              Crc32cCodec()],
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_daskramp_and_zarr_read_each_others_chunks_byte_exactly(tmp_path, chain, dtype):
    rng = np.random.default_rng(3)
    values = (rng.normal(size=(5, 7)) * 1000).astype(dtype)
    values[:2, :4] = 0  # a chunk of the fill value only
    kw = dict(shape=values.shape, dtype=dtype, chunks=(2, 4), fill_value=0,
              compressors=CHAINS[chain], config={"write_empty_chunks": True})
    theirs = zarr.create_array(str(tmp_path / "zarr.zarr"), **kw)
    theirs[...] = values
    ours = zarr.create_array(str(tmp_path / "ours.zarr"), **kw)
    meta = ours.metadata
    assert isinstance(meta.codecs[-1], Crc32cCodec)
    for i in range(3):
        for j in range(2):
            part = values[2 * i: 2 * i + 2, 4 * j: 4 * j + 4]  # edge chunks are smaller
            key = meta.encode_chunk_key((i, j))
            data = encode_chunk(part, (2, 4), meta.fill_value, meta.codecs)
            # byte for byte what zarr wrote
            assert data == (tmp_path / "zarr.zarr" / key).read_bytes(), key
            target = tmp_path / "ours.zarr" / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            # daskramp decodes zarr's chunk
            got = decode_chunk((tmp_path / "zarr.zarr" / key).read_bytes(), (2, 4), dtype,
                               theirs.metadata.codecs)
            np.testing.assert_array_equal(got[: part.shape[0], : part.shape[1]], part)
    # zarr reads daskramp's chunks (checking their crc32c)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours.zarr"), mode="r")[...], values)


def test_product_store_with_a_lost_chunk_is_never_marked_complete(tmp_path):
    ds = xr.Dataset({"data": (("integration", "y", "x"),
                              da.arange(24, dtype=np.float32, chunks=6).reshape(4, 2, 3)
                              .rechunk((2, 2, 3)))})
    path = tmp_path / "r_rateints.zarr"
    targets = P.start_blockwise(ds, path)
    da.store(ds["data"].data, targets["data"], lock=False)
    partial = partial_path(path)
    (partial / "data" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(MissingChunkError, match=r"array 'data' is missing 1 of 2 chunks "
                                                r"\(c/1/0/0\)"):
        finalize_store(partial, path, overwrite=True)
    assert not path.exists() and not is_complete(path) and not P.is_complete(path)
    # a rerun starts afresh
    assert not partial.exists()

    # through write_products: a write that is counted but lost never makes a complete product
    real = P.ZarrChunkTarget.__setitem__

    def loses_a_chunk(self, key, block):
        real(self, key, block)
        if self.path.endswith("/err") and key[0].start == 0:
            from pathlib import Path

            (Path(self.path) / "c" / "0" / "0" / "0").unlink()

    rate = xr.Dataset({v: (("integration", "y", "x"),
                           da.ones((4, 2, 3), np.float32, chunks=(2, 2, 3)))
                       for v in ("data", "err", "dq", "var_poisson", "var_rnoise")})
    rate["dq"] = rate["dq"].astype(np.uint32)
    import unittest.mock as mock

    with mock.patch.object(P.ZarrChunkTarget, "__setitem__", loses_a_chunk):
        # the store alone: found when it is finalised
        with pytest.raises(MissingChunkError, match="array 'err' is missing 1 of 2 chunks"):
            P.write_products({"rateints": rate}, tmp_path / "out", root="r", provenance={},
                             fits=False)
        assert not list((tmp_path / "out").iterdir())
        # with the FITS file exported by the same graph: its reader finds it first
        with pytest.raises(MissingChunkError, match="array 'err' chunk c/0/0/0 is missing"):
            P.write_products({"rateints": rate}, tmp_path / "out", root="r", provenance={})
        assert not any(P.is_complete(p) for p in (tmp_path / "out").iterdir())
        assert not list((tmp_path / "out").glob("*.fits"))
    # the rerun writes it whole
    paths = P.write_products({"rateints": rate}, tmp_path / "out", root="r", provenance={})
    assert P.is_complete(paths["rateints_zarr"]) and P.is_complete(paths["rateints_fits"])


def test_damaged_or_old_product_store_is_not_complete(tmp_path):
    ds = xr.Dataset({"err": (("integration", "y", "x"),
                             da.ones((4, 2, 3), np.float32, chunks=(2, 2, 3)))})
    path = P.write_zarr_atomic(ds, tmp_path / "p.zarr")
    assert P.is_complete(path)
    (path / "err" / "c" / "0" / "0" / "0").unlink()
    assert is_complete(path) and not P.is_complete(path)  # marked, but damaged
    P.write_zarr_atomic(ds, path)  # so a rerun rewrites it
    assert P.is_complete(path)
    with pytest.raises(MissingChunkError):  # and exporting a damaged store refuses
        (path / "err" / "c" / "1" / "0" / "0").unlink()
        P.export_fits(path, tmp_path / "p.fits", kind="rateints")


def _strip_manifest(store):
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"][CHUNKS_ATTR]
    (store / "zarr.json").write_text(json.dumps(meta))


def test_store_from_an_older_daskramp_is_refused(store):
    _strip_manifest(store)
    with pytest.raises(UnverifiedStoreError) as err:
        open_exposure(store)
    assert str(err.value) == (f"{store}: was written without chunk checksums by an older "
                              f"daskramp; {REINGEST}")
    assert isinstance(err.value, StoreError)


def test_store_changed_after_writing_is_refused(store):
    zarr.create_array(str(store / "extra"), shape=(2,), dtype="u1", fill_value=0)
    with pytest.raises(StoreError, match="array 'extra' is not in the chunk manifest"):
        open_exposure(store)


def test_verified_array_pickles_and_tokenizes_by_path(store):
    import pickle

    from dask.base import tokenize

    a = VerifiedArray(store, "data")
    b = pickle.loads(pickle.dumps(a))
    assert b.shape == a.shape and tokenize(a) == tokenize(b)
    np.testing.assert_array_equal(a[0:3, :, :, 1:5], b[0:3, :, :, 1:5])
