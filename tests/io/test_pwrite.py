"""Scattered region writes into a file (the FITS data of products written by their tasks)."""

import numpy as np
import pytest

from daskramp.io._pwrite import write_region


@pytest.mark.parametrize("key", [
    (slice(0, 7), slice(0, 5), slice(3, 9)),   # a column band: one run per (i, y)
    (slice(2, 4), slice(1, 3), slice(0, 11)),  # whole rows: runs merge along x
    (slice(1, 5), slice(0, 5), slice(0, 11)),  # whole frames: one run
    (slice(0, 7), slice(4, 5), slice(10, 11)),  # single pixels
    (slice(3, 3), slice(0, 5), slice(0, 11)),   # empty
])
@pytest.mark.parametrize("offset", [0, 2880])
def test_write_region_matches_numpy_assignment(tmp_path, key, offset):
    shape = (7, 5, 11)
    path = tmp_path / "f.bin"
    rng = np.random.default_rng(0)
    before = rng.normal(size=shape).astype(">f4")
    head = rng.integers(0, 255, offset, dtype=np.uint8).tobytes()
    path.write_bytes(head + before.tobytes() + b"tail")
    block = rng.normal(size=before[key].shape).astype(">f4")
    write_region(path, offset, shape, key, block)
    raw = path.read_bytes()
    assert raw[:offset] == head and raw[-4:] == b"tail"
    got = np.frombuffer(raw[offset:-4], ">f4").reshape(shape)
    want = before.copy()
    want[key] = block
    np.testing.assert_array_equal(got, want)


def test_write_region_rejects_a_block_of_the_wrong_shape(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(4 * 10))
    with pytest.raises(ValueError, match="f.bin.*shape"):
        write_region(path, 0, (2, 5), (slice(0, 2), slice(0, 3)), np.zeros((2, 2), ">f4"))


def test_write_region_to_an_unwritable_path_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        write_region(tmp_path, 0, (2, 5), (slice(0, 2), slice(0, 5)), np.zeros((2, 5), ">f4"))
