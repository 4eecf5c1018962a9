"""Checkpoint stores (:mod:`daskramp.io.checkpoint`): tiles written, read back whole or in
windows, a missing chunk refused, the store kept when its creating task runs again."""

from __future__ import annotations

import numpy as np
import pytest

from daskramp.io import checkpoint
from daskramp.io.store import MissingChunkError

LAYOUT = {
    "data": (("integration", "group", "y", "x"), np.float32),
    "groupdq": (("integration", "group", "y", "x"), np.uint8),
    "pixeldq": (("y", "x"), np.uint32),
    "average_dark_current": (("y", "x"), np.float32),
}
SIZES = {"integration": 3, "group": 4, "y": 8, "x": 12}


def _tiles():
    rng = np.random.default_rng(0)
    full = {"data": rng.normal(size=(3, 4, 8, 12)).astype(np.float32),
            "groupdq": rng.integers(0, 4, (3, 4, 8, 12)).astype(np.uint8),
            "pixeldq": rng.integers(0, 9, (8, 12)).astype(np.uint32),
            # all zero: chunks of fill values must be written too
            "average_dark_current": np.zeros((8, 12), np.float32)}
    return full, [(slice(y, y + 4), slice(x, x + 6)) for y in (0, 4) for x in (0, 6)]


def test_tiles_written_read_back_whole_and_in_windows(tmp_path):
    path = checkpoint.create(tmp_path / "b.zarr", LAYOUT, SIZES, 4, 6, "t1")
    full, tiles = _tiles()
    for ys, xs in tiles:
        checkpoint.write(path, {k: v[..., ys, xs] for k, v in full.items()}, ys, xs)
    whole = checkpoint.read(path, 0, 3, slice(None), slice(None))
    for k, v in full.items():
        np.testing.assert_array_equal(whole[k], v)
        assert whole[k].dtype == v.dtype
    # the chunk files are read and written directly: zarr reads the same values
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    for k, v in full.items():
        np.testing.assert_array_equal(group[k][...], v)
    win = checkpoint.read(path, 1, 3, slice(2, 7), slice(5, 9), ["data", "pixeldq"])
    np.testing.assert_array_equal(win["data"], full["data"][1:3, :, 2:7, 5:9])
    np.testing.assert_array_equal(win["pixeldq"], full["pixeldq"][2:7, 5:9])
    assert sorted(win) == ["data", "pixeldq"]


def test_edge_tiles_and_a_region_that_cuts_a_chunk(tmp_path):
    """Tiles narrower at the frame's edge fill their (full-size) chunks in part; a write that
    does not cover whole chunks is refused."""
    sizes = {"integration": 2, "group": 3, "y": 7, "x": 10}
    layout = {"data": LAYOUT["data"]}
    path = checkpoint.create(tmp_path / "e.zarr", layout, sizes, 4, 4, "t")
    full = np.arange(2 * 3 * 7 * 10, dtype=np.float32).reshape(2, 3, 7, 10)
    for y0 in (0, 4):
        for x0 in (0, 4, 8):
            ys, xs = slice(y0, min(7, y0 + 4)), slice(x0, min(10, x0 + 4))
            checkpoint.write(path, {"data": full[..., ys, xs]}, ys, xs)
    np.testing.assert_array_equal(checkpoint.read(path, 0, 2, slice(None), slice(None))["data"], full)
    with pytest.raises(ValueError, match="cuts chunk"):
        checkpoint.write(path, {"data": full[..., 1:3, 0:4]}, slice(1, 3), slice(0, 4))


def test_a_tile_never_written_is_an_error_not_fill_values(tmp_path):
    path = checkpoint.create(tmp_path / "b.zarr", LAYOUT, SIZES, 4, 6, "t1")
    full, tiles = _tiles()
    for ys, xs in tiles[:-1]:
        checkpoint.write(path, {k: v[..., ys, xs] for k, v in full.items()}, ys, xs)
    with pytest.raises(MissingChunkError, match="missing"):
        checkpoint.read(path, 0, 3, slice(None), slice(None))


def test_created_again_by_the_same_run_keeps_what_was_written(tmp_path):
    path = checkpoint.create(tmp_path / "b.zarr", LAYOUT, SIZES, 4, 6, "t1")
    full, tiles = _tiles()
    for ys, xs in tiles:
        checkpoint.write(path, {k: v[..., ys, xs] for k, v in full.items()}, ys, xs)
    checkpoint.create(path, LAYOUT, SIZES, 4, 6, "t1")  # the task run again
    np.testing.assert_array_equal(checkpoint.read(path, 0, 3, slice(None), slice(None))["data"], full["data"])
    checkpoint.create(path, LAYOUT, SIZES, 4, 6, "t2")  # another run: a new, empty store
    with pytest.raises(MissingChunkError):
        checkpoint.read(path, 0, 3, slice(None), slice(None))
    checkpoint.remove(path)
    assert not path.exists()
