"""uncal → Zarr: lossless, chunked as designed, resumable and bit-identical, lazy to open."""

from __future__ import annotations

import importlib
import json
import random

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

from daskramp.dims import INT_TIMES_COLUMNS
from daskramp.io import (
    CODECS,
    IncompleteStoreError,
    StoreError,
    ingest,
    is_complete,
    open_exposure,
)
from daskramp.io.ingest import plan_layout
from daskramp.io.store import COMPLETE_ATTR, partial_path

ingest_module = importlib.import_module("daskramp.io.ingest")

# tiny exposures: 7 integrations × 3 groups × 4 × 6 = 144 bytes per integration
FRAME_BYTES = 3 * 4 * 6 * 2
THREE_INTEGRATIONS_MB = 3 * FRAME_BYTES / 2**20


def _no_compute(*args, **kwargs):
    raise AssertionError("something was computed while opening the store")


def _tree(path):
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def exposure(tmp_path, uncal):
    data = uncal.ramp()
    paths = uncal.write_segments(tmp_path, data, [3, 2, 2], int_times="all")
    random.Random(1).shuffle(paths)
    return data, paths


def test_plan_layout_for_a_soss_exposure():
    # one integration = 9 × 256 × 2048 × 2 B = 9 437 184 B; 64 MiB / that = 7.1 → 7 per shard;
    # a column of a shard = 7 × 9 × 256 × 2 B = 32 256 B; 4 MiB / 32 256 = 130 → 128 columns
    lay = plan_layout((158, 9, 256, 2048), chunk_mb=64)
    assert lay == {"shard": (7, 9, 256, 2048), "chunk": (7, 9, 256, 128)}
    # an integration bigger than chunk_mb still gets one integration per shard
    assert plan_layout((5, 65, 2048, 2048), chunk_mb=64)["shard"][0] == 1
    # x_inner not dividing nx: the shard is rounded up to whole inner chunks
    assert plan_layout((7, 3, 4, 6), chunk_mb=1, x_inner=4) == {
        "shard": (7, 3, 4, 8),
        "chunk": (7, 3, 4, 4),
    }


def test_round_trip_is_bit_exact_and_carries_coords_and_metadata(tmp_path, exposure, uncal):
    data, paths = exposure
    store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=THREE_INTEGRATIONS_MB)
    assert store == tmp_path / "exp.zarr" and is_complete(store)
    assert not partial_path(store).exists()
    ds = open_exposure(store)
    assert ds["data"].dtype == np.uint16
    np.testing.assert_array_equal(ds["data"].values, data)  # includes 0, 32767, 32768, 65535
    assert ds["segment"].values.tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert ds["integration_number"].values.tolist() == [1, 2, 3, 4, 5, 6, 7]
    want = uncal.expected_int_times(np.arange(1, 8))
    for col in INT_TIMES_COLUMNS:
        np.testing.assert_array_equal(ds[col].values, want[col])
    assert ds["y"].values.tolist() == [1802, 1803, 1804, 1805]
    a = ds.attrs
    assert (a["NINTS"], a["TGROUP"], a["ZEROFRAM"], a["TARGNAME"]) == (7, 2.2, False, "WASP-TEST")
    assert type(a["NINTS"]) is int and type(a["ZEROFRAM"]) is bool
    assert not {"EXSEGNUM", "INTSTART", "INTEND", COMPLETE_ATTR} & set(a)
    # groupdq and pixeldq are zeros, as for an exposure straight from FITS
    assert ds["groupdq"].dtype == np.uint8 and not ds["groupdq"].values.any()
    assert ds["pixeldq"].dtype == np.uint32 and not ds["pixeldq"].values.any()


def test_store_is_chunked_by_integration_with_inner_column_chunks(tmp_path, exposure):
    data, paths = exposure
    store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=THREE_INTEGRATIONS_MB, x_inner=4)
    arr = zarr.open_array(str(store), path="data", mode="r")
    # 3 integrations per shard (from chunk_mb), inner chunks of 4 columns, shard rounded to 8
    assert arr.shards == (3, 3, 4, 8) and arr.chunks == (3, 3, 4, 4)
    ds = open_exposure(store)
    # default dask chunks: one shard (whole frames) per chunk; integrations 7 = 3 + 3 + 1
    assert ds["data"].data.chunks == ((3, 3, 1), (3,), (4,), (6,))
    assert ds["groupdq"].data.chunks == ds["data"].data.chunks
    # pixel tiles holding every integration
    tiles = open_exposure(store, chunks={"integration": 7, "x": 4})
    assert tiles["data"].data.chunks == ((7,), (3,), (4,), (4, 2))
    np.testing.assert_array_equal(tiles["data"].values, data)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_shards_built_in_the_task_equal_zarrs_own(tmp_path, exposure, monkeypatch, codec):
    """The shard files the ingest tasks build are byte for byte what zarr writes: partial last
    shard (7 = 3 + 3 + 1 integrations), an inner chunk past the array edge (6 columns in
    chunks of 4), (the fill-value-only case is the next test)."""
    data, paths = exposure
    built = []
    real = ingest_module._shard_writer

    def spy(arr):
        enc = real(arr)
        built.append(enc is not None)
        return enc

    kw = dict(codec=codec, chunk_mb=THREE_INTEGRATIONS_MB, x_inner=4)
    monkeypatch.setattr(ingest_module, "_shard_writer", spy)
    ours = ingest(paths, tmp_path / "ours.zarr", **kw)
    assert built and all(built)
    monkeypatch.setattr(ingest_module, "_shard_writer", lambda arr: None)
    theirs = ingest(paths, tmp_path / "zarr.zarr", **kw)
    a, b = _tree(ours), _tree(theirs)
    assert a.keys() == b.keys() and any(k.startswith("data/c/2/") for k in a)
    for k in a:
        assert a[k] == b[k], k
    np.testing.assert_array_equal(open_exposure(ours)["data"].values, data)


def test_shard_writer_stores_inner_chunks_of_fill_value_only(tmp_path):
    """Every inner chunk is stored (an absent one is a loss), as zarr does with
    write_empty_chunks: a chunk of zeros and the chunk past the array edge included."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    def create(name):
        return zarr.create_array(str(tmp_path / name), shape=(2, 1, 2, 10), dtype="u2",
                                 chunks=(2, 1, 2, 4), shards=(2, 1, 2, 12), fill_value=0,
                                 compressors=[BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
                                              Crc32cCodec()],
                                 config={"write_empty_chunks": True})

    arr = create("a.zarr")
    block = np.zeros((2, 1, 2, 10), np.uint16)
    block[..., 4:6] = 7  # first inner chunk all zero, second holds data, third past the edge
    encode = ingest_module._shard_writer(arr)
    (tmp_path / "a.zarr" / "c" / "0" / "0" / "0").mkdir(parents=True)
    (tmp_path / "a.zarr" / "c" / "0" / "0" / "0" / "0").write_bytes(encode(block))
    np.testing.assert_array_equal(arr[...], block)
    ref = create("b.zarr")
    ref[...] = block
    ours = (tmp_path / "a.zarr" / "c" / "0" / "0" / "0" / "0").read_bytes()
    assert (tmp_path / "b.zarr" / "c" / "0" / "0" / "0" / "0").read_bytes() == ours
    index = np.frombuffer(ours[-52:-4], "<u8").reshape(3, 2)
    assert (index != 2**64 - 1).all()  # all three inner chunks are in the shard


def test_unsharded_layout_and_other_codecs_are_lossless(tmp_path, exposure):
    data, paths = exposure
    for name in ("none", "zstd1", "blosc-lz4-bitshuffle"):
        store = ingest(
            paths, tmp_path / f"{name}.zarr", codec=name, sharded=False, chunk_mb=1, x_inner=2
        )
        arr = zarr.open_array(str(store), path="data", mode="r")
        assert arr.shards is None and arr.chunks == (7, 3, 4, 2)
        np.testing.assert_array_equal(open_exposure(store)["data"].values, data)
    assert set(CODECS) >= {"none", "zstd1", "blosc-zstd1-bitshuffle"}
    with pytest.raises(ValueError, match="unknown codec 'gzip9'"):
        ingest(paths, tmp_path / "bad.zarr", codec="gzip9")


def test_zeroframe_is_stored(tmp_path, uncal):
    data = uncal.ramp()
    zf = data[:, 0] // 3
    p = uncal.write_uncal(tmp_path / "zf_uncal.fits", data, zeroframe=zf, ZEROFRAM=True)
    ds = open_exposure(ingest([p], tmp_path / "zf.zarr", chunk_mb=THREE_INTEGRATIONS_MB))
    assert ds["zeroframe"].data.chunks == ((3, 3, 1), (4,), (6,))
    np.testing.assert_array_equal(ds["zeroframe"].values, zf)


def test_open_exposure_computes_nothing(tmp_path, exposure):
    _, paths = exposure
    store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=THREE_INTEGRATIONS_MB)
    with dask.config.set(scheduler=_no_compute):
        ds = open_exposure(store, chunks={"integration": 7, "x": 2})
    assert isinstance(ds["data"].data, da.Array) and isinstance(ds["groupdq"].data, da.Array)


def test_interrupted_ingest_is_not_complete_and_resumes_bit_identical(
    tmp_path, exposure, monkeypatch
):
    data, paths = exposure
    clean = ingest(paths, tmp_path / "clean.zarr", chunk_mb=THREE_INTEGRATIONS_MB)

    real = ingest_module._write_shard
    calls = []

    def fail_on_second(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise RuntimeError("worker lost")
        return real(*args)

    store = tmp_path / "exp.zarr"
    monkeypatch.setattr(ingest_module, "_write_shard", fail_on_second)
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="worker lost"):
        ingest(paths, store, chunk_mb=THREE_INTEGRATIONS_MB)
    # nothing at the final path; the partial store is refused by readers
    assert not store.exists()
    assert partial_path(store).exists() and not is_complete(partial_path(store))
    with pytest.raises(IncompleteStoreError, match=r"exp\.zarr: not complete"):
        open_exposure(store)
    with pytest.raises(IncompleteStoreError, match="not marked complete"):
        open_exposure(partial_path(store))
    done_before = len(list((partial_path(store) / "_daskramp_progress").glob("*.done")))
    assert done_before >= 1  # the first shard finished before the failure

    calls.clear()
    monkeypatch.setattr(ingest_module, "_write_shard", lambda *a: calls.append(a[1]) or real(*a))
    with dask.config.set(scheduler="synchronous"):
        out = ingest(paths, store, chunk_mb=THREE_INTEGRATIONS_MB)
    # 7 integrations / 3 per shard = 3 shards; the rerun writes only those not done
    assert len(calls) == 3 - done_before
    assert out == store and is_complete(store) and not partial_path(store).exists()
    np.testing.assert_array_equal(open_exposure(store)["data"].values, data)
    assert _tree(store) == _tree(clean)


def test_changed_options_restart_a_partial_store(tmp_path, exposure, monkeypatch):
    data, paths = exposure
    store = tmp_path / "exp.zarr"

    def boom(*args):
        raise RuntimeError("stop")

    monkeypatch.setattr(ingest_module, "_write_shard", boom)
    with pytest.raises(RuntimeError):
        ingest(paths, store, chunk_mb=THREE_INTEGRATIONS_MB)
    plan = json.loads((partial_path(store) / "_daskramp_progress" / "plan.json").read_text())
    assert plan["chunk"][0] == 3
    monkeypatch.undo()
    out = ingest(paths, store, chunk_mb=1)  # different layout: start afresh
    assert zarr.open_array(str(out), path="data", mode="r").shards[0] == 7
    np.testing.assert_array_equal(open_exposure(out)["data"].values, data)


def test_existing_store_needs_overwrite(tmp_path, exposure, uncal):
    data, paths = exposure
    store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=1)
    with pytest.raises(StoreError, match=r"exp\.zarr: store exists; pass overwrite=True"):
        ingest(paths, store)
    other = uncal.write_uncal(tmp_path / "other_uncal.fits", data[::-1].copy())
    ingest([other], store, overwrite=True)
    np.testing.assert_array_equal(open_exposure(store)["data"].values, data[::-1])


def test_store_without_completion_mark_is_refused(tmp_path, exposure):
    _, paths = exposure
    store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=1)
    group = zarr.open_group(str(store), mode="r+")
    del group.attrs[COMPLETE_ATTR]
    with pytest.raises(IncompleteStoreError, match=r"exp\.zarr: store is not marked complete"):
        open_exposure(store)
    with pytest.raises(StoreError, match=r"nowhere\.zarr: store not found"):
        open_exposure(tmp_path / "nowhere.zarr")


def test_bad_input_is_reported_before_anything_is_written(tmp_path, exposure):
    _, paths = exposure
    from daskramp.io import SegmentMismatchError

    with pytest.raises(SegmentMismatchError, match="integrations 4–5 are missing"):
        ingest([p for p in paths if "seg002" not in p.name], tmp_path / "exp.zarr")
    assert not (tmp_path / "exp.zarr").exists() and not partial_path(tmp_path / "exp.zarr").exists()


@pytest.mark.distributed
def test_ingest_on_worker_processes(tmp_path, exposure, real_cluster):
    from distributed import Client

    data, paths = exposure
    with Client(real_cluster.address):
        store = ingest(paths, tmp_path / "exp.zarr", chunk_mb=THREE_INTEGRATIONS_MB)
    np.testing.assert_array_equal(open_exposure(store)["data"].values, data)
