"""The fused tile layout (:mod:`daskramp.engine.fused`) against the step-by-step graph.

The fused layout runs the whole chain in one task per (segment × column band), reading each
band widened by a ghost margin straight from the uncal files or the store, with the
whole-frame statistics computed first from small windows.  These tests hold it to the
step-by-step graph bit for bit, on narrow tiles (so most pixels sit near a tile edge),
saturated pixels placed on the tile edges (so saturation growth, charge migration and jump's
neighbour flags cross them), both statistics scopes and every reader.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dims, dq
from daskramp.engine import chain, checkpoint, plan, policy, stats
from daskramp.io import ingest, open_exposure
from daskramp.io.refs import RefSet
from daskramp.io.uncal import read_frames, read_window, scan_segment
from daskramp.pipeline import detector1, step_params
from daskramp.simulate import simulate
from daskramp.steps import STEP_ORDER
from daskramp.testing.ramps import forbid_compute

TILE = 16
#: rows of the 2-D tiles tested (the 256 rows of the fixture in 8 tiles)
TILE_ROWS = 32
#: rows where the saturated blocks straddle the edge between two 2-D tiles
Y_EDGES = (64, 160)
PRODUCT_VARS = ("data", "dq", "err", "var_poisson", "var_rnoise")


@pytest.fixture(scope="module")
def soss(tmp_path_factory):
    """2 segments × 5 integrations × 6 groups × 256 × 80 (SOSS-like, reference columns 0–3)."""
    out = tmp_path_factory.mktemp("fused")
    return simulate(out, preset="niriss-soss", nints=5, segments=2, ngroups=6, nx=80, seed=11)


@pytest.fixture(scope="module")
def edge_threshold(soss):
    """A saturation threshold that saturates small blocks of pixels straddling every tile edge
    (between column bands, and between rows of :data:`TILE_ROWS`-row tiles) from the fourth
    group on (the real threshold elsewhere)."""
    ds = open_exposure(soss.uncal_files)
    refs = RefSet.from_dir(soss.refs_dir, ds.attrs, required=())
    thresh = np.array(refs.get("saturation").arrays["SCI"], np.float32)
    g3 = ds["data"].isel(integration=0, group=3).values.astype(np.float32)
    for edge in range(TILE, ds.sizes["x"], TILE):
        for y0 in (40, 150):
            block = (slice(y0, y0 + 3), slice(edge - 1, edge + 1))
            thresh[block] = g3[block] - 1
    for edge in Y_EDGES:
        block = (slice(edge - 1, edge + 1), slice(20, 23))
        thresh[block] = g3[block] - 1
    return thresh


def _compute(res):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dask.compute(res.rateints, res.rate)


def _assert_same(a: xr.Dataset, b: xr.Dataset):
    for var in PRODUCT_VARS:
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
    assert {k: v for k, v in a.attrs.items() if k.startswith("S_")} == \
        {k: v for k, v in b.attrs.items() if k.startswith("S_")}
    for c in a.coords:
        np.testing.assert_array_equal(a[c].values, b[c].values, err_msg=c)


@pytest.mark.parametrize("stats_scope", ["segment", "exposure"])
@pytest.mark.parametrize("threshold_as,tile_rows", [("array", 256), ("fits", 256), ("array", TILE_ROWS)])
def test_fused_equals_step_by_step(soss, edge_threshold, stats_scope, threshold_as, tile_rows,
                                   tmp_path, monkeypatch):
    # blocks of 2 integrations (a window is 4 B × 6 groups × 256 rows × 16 + 12 columns a
    # integration) through the steps before jump: 3 (segment) or 5 (exposure) blocks per
    # window are assembled for jump and ramp_fit
    monkeypatch.setattr(chain, "BLOCK_BYTES", 2 * 4 * 6 * 256 * (TILE + 12))
    if threshold_as == "fits":
        path = tmp_path / "thresh.fits"
        fits.PrimaryHDU(edge_threshold).writeto(path)
        user = str(path)
    else:
        user = edge_threshold
    # after-jump flagging on: its DN threshold scales with the whole subarray's median gain
    steps = {"saturation": {"n_pix_grow_sat": 2, "user_threshold": user},
             "charge_migration": {"skip": False},
             "jump": {"after_jump_flag_dn1": 30.0, "after_jump_flag_time1": 12.0,
                      # one value per exposure integration: each window picks its own
                      "integration_scale": [1.0, 1.0, 0.97, 0.95, 0.95, 1.0, 0.96, 0.95, 1.0, 1.0]}}
    ds = open_exposure(soss.uncal_files)
    res = detector1(ds, soss.refs_dir, steps=steps, stats_scope=stats_scope, tile_columns=TILE,
                    tile_rows=tile_rows)
    assert res.provenance["layout"]["fused"] and res.provenance["layout"]["ghost_columns"] == 6
    assert (res.provenance["tile_rows"], res.provenance["tile_columns"]) == (tile_rows, TILE)
    assert res.provenance["layout"]["tiles"] == (2 if stats_scope == "segment" else 1) * 5 * (256 // tile_rows)
    ref = detector1(ds, soss.refs_dir, steps=steps, stats_scope=stats_scope, fused=False)
    assert "layout" not in ref.provenance
    (ri, r), (ri0, r0) = _compute(res), _compute(ref)
    _assert_same(ri, ri0)
    _assert_same(r, r0)
    # the edges were exercised: saturated pixels on both sides of every tile edge
    sat = (ri["dq"].values & dq.SATURATED) != 0
    for edge in range(TILE, ds.sizes["x"], TILE):
        assert sat[:, 40:43, edge - 1].all() and sat[:, 40:43, edge].all()
    for edge in Y_EDGES:
        assert sat[:, edge - 1, 20:23].all() and sat[:, edge, 20:23].all()
    assert {k: v["status"] for k, v in res.provenance["steps"].items()} == \
        {k: v["status"] for k, v in ref.provenance["steps"].items()}


def test_readers_agree(soss, tmp_path):
    """Uncal FITS, a Zarr store and plain dask arrays are read to the same products."""
    fits_ds = open_exposure(soss.uncal_files)
    store = ingest(soss.uncal_files, tmp_path / "exp.zarr")
    zarr_ds = open_exposure(store)
    # a changed dask graph (here a rechunk) is read through its own arrays
    arr_ds = dims.chunk(fits_ds, {"integration": 3})
    kinds = [chain.reader_for(d).kind for d in (fits_ds, zarr_ds, arr_ds)]
    assert kinds == ["fits", "zarr", "arrays"]
    results = [detector1(d, soss.refs_dir, tile_columns=32) for d in (fits_ds, zarr_ds, arr_ds)]
    # tiles keep to the chunks of a store or dask array (all 256 rows here); the uncal file
    # is read row by row, so its tiles may be shorter
    rows = [r.provenance["tile_rows"] for r in results]
    assert rows[0] < 256 and rows[1:] == [256, 256]
    out = [_compute(r) for r in results]
    for ri, r in out[1:]:
        _assert_same(ri, out[0][0])
        _assert_same(r, out[0][1])


def test_default_is_fused_and_lazy(soss):
    ds = open_exposure(soss.uncal_files)
    with forbid_compute():
        res = detector1(ds, soss.refs_dir)
    assert res.provenance["layout"]["fused"]
    assert dask.is_dask_collection(res.frame_stats["plane_dnu"])
    # saving intermediates needs the step-by-step graph
    res2 = detector1(ds, soss.refs_dir, save_steps=["jump"])
    assert "layout" not in res2.provenance and "jump" in res2.intermediates
    # a step that needs whole frames runs fused through a checkpoint; saving its mask needs
    # the step-by-step graph
    with forbid_compute():
        res3 = detector1(ds, soss.refs_dir, steps={"clean_flicker_noise": {"skip": False}})
    assert res3.provenance["layout"]["checkpoint"]["before"] == "clean_flicker_noise"
    res4 = detector1(ds, soss.refs_dir, steps={"clean_flicker_noise": {"skip": False, "save_mask": True}})
    assert res4.provenance["fused"].startswith("not used: clean_flicker_noise saves")


def _checkpointed_equals_stepwise(ds, refs_dir, steps, stats_scope, tmp_path):
    """The fused products of ``steps`` (16-column tiles of :data:`TILE_ROWS` rows, through a
    checkpoint in ``tmp_path``) equal the step-by-step ones bit for bit; returns the fused
    rateints and where the checkpoint was taken (its provenance, the scratch path left out)."""
    fused = detector1(ds, refs_dir, steps=steps, stats_scope=stats_scope, tile_columns=TILE,
                      tile_rows=TILE_ROWS, frame_stats="compute", scratch=tmp_path / "scratch")
    assert fused.provenance["layout"]["tiles"] > 2
    stepwise = detector1(ds, refs_dir, steps=steps, stats_scope=stats_scope, fused=False)
    ri, r = _compute(fused)
    ri0, r0 = _compute(stepwise)
    _assert_same(ri, ri0)
    _assert_same(r, r0)
    checkpointed = dict(fused.provenance["layout"]["checkpoint"])
    del checkpointed["scratch"]
    return ri, checkpointed


@pytest.mark.parametrize("stats_scope,cfn", [
    ("segment", {}),
    pytest.param("exposure", {}, marks=pytest.mark.slow),
    ("segment", {"single_mask": False, "n_sigma": 1.5}),
    pytest.param("segment", {"background_method": None}, marks=pytest.mark.slow),
    # whole-image corrections: the frame pass writes the cleaned ramp into the checkpoint
    ("segment", {"background_method": "model", "single_mask": False}),
    ("segment", {"fit_method": "fft"}),
    # the FLAT: the whole frame's in the frame pass, each tile's window of it when resumed
    ("segment", {"apply_flat_field": True, "single_mask": False}),
    pytest.param("segment", {"apply_flat_field": True, "background_method": "model"}, marks=pytest.mark.slow),
])
def test_checkpointed_step_equals_step_by_step(tmp_path, stats_scope, cfn):
    """clean_flicker_noise in the fused layout (tiles up to it written to a checkpoint, its
    line values found on whole frames read back, the tiles resumed from the checkpoint)
    gives the step-by-step products bit for bit: narrow tiles of a few rows, two segments,
    strong 1/f, the official draft rate (GAIN/READNOISE given) or a per-integration mask;
    the whole-image options (model background, NSClean's fft fit on NIRSpec BOTS) too."""
    if cfn.get("fit_method") == "fft":
        sim = simulate(tmp_path / "sim", preset="nirspec-bots", nints=4, segments=2, ngroups=5, nx=256,
                       seed=3, one_over_f_amplitude=4.0)
    else:
        sim = simulate(tmp_path / "sim", preset="niriss-soss", nints=4, segments=2, ngroups=5, nx=48,
                       seed=3, one_over_f_amplitude=4.0)
    ds = open_exposure(sim.uncal_files)
    steps = {"clean_flicker_noise": {"skip": False, **cfn}}
    ri, checkpointed = _checkpointed_equals_stepwise(ds, sim.refs_dir, steps, stats_scope, tmp_path)
    assert checkpointed == {"before": "clean_flicker_noise", "frame_pass": "clean_flicker_noise"}
    assert ri.attrs["S_CLNFNS"] == "COMPLETE"
    # the step did change the data (strong 1/f): the same chain without it differs
    plain = detector1(ds, sim.refs_dir, stats_scope=stats_scope, tile_columns=16)
    assert not np.array_equal(_compute(plain)[0]["data"].values, ri["data"].values, equal_nan=True)
    if cfn.get("apply_flat_field"):
        # and the flat did: the same options without it differ
        without = {"clean_flicker_noise": {**steps["clean_flicker_noise"], "apply_flat_field": False}}
        other = detector1(ds, sim.refs_dir, steps=without, stats_scope=stats_scope, tile_columns=16)
        assert not np.array_equal(_compute(other)[0]["data"].values, ri["data"].values, equal_nan=True)


def test_submitted_statistics_feed_the_same_products(soss):
    """``frame_stats="submit"`` on a distributed client: the statistics stay on the cluster (a
    delayed value here) and the tiles take them from there; the products are those of
    ``"compute"``.  Without a distributed client it is ``"compute"``."""
    from dask.delayed import Delayed
    from distributed import Client

    ds = open_exposure(soss.uncal_files)
    computed = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats="compute")
    ri0, r0 = _compute(computed)
    with dask.config.set(scheduler="threads"):
        local = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats="submit")
    assert not any(isinstance(v, Delayed) for v in local.frame_stats.values())
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"):
        res = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats="submit")
        assert all(isinstance(v, Delayed) for v in res.frame_stats.values())
        assert res.provenance["steps"] == computed.provenance["steps"]
        ri, r, stats = dask.compute(res.rateints, res.rate, res.frame_stats)
    _assert_same(ri, ri0)
    _assert_same(r, r0)
    np.testing.assert_array_equal(stats["plane_dnu"], computed.frame_stats["plane_dnu"])
    np.testing.assert_array_equal(stats["refpix_offsets"], computed.frame_stats["refpix_offsets"])


@pytest.mark.parametrize("nblock", [None, 2, 3])
def test_refpix_statistics_found_by_blocks_equal_the_whole_array_ones(soss, nblock, monkeypatch):
    """The refpix offsets found one block of integrations per task, from the reference
    rectangles read in the task, equal those of the step-by-step graph (the rectangles cut
    out of the whole ramp), the zero frame's too, whatever the block length (all 10
    integrations, 2 and 3: blocks across the segment boundary included)."""
    seen = []
    block = plan.stats_int_block
    monkeypatch.setattr(stats, "stats_int_block", lambda *a: seen.append(block(*a)) or seen[-1])
    if nblock is not None:
        # the largest statistics window is jump's probe (32 × 64) widened by the ghost
        # margin (3): 38 × 70 pixels of 6 float32 groups
        monkeypatch.setattr(plan, "BLOCK_BYTES", 4 * 6 * 38 * 70 * nblock)
        monkeypatch.setattr(chain, "BLOCK_BYTES", 4 * 6 * 38 * 70 * nblock)
    ds = open_exposure(soss.uncal_files)
    ds["zeroframe"] = (dims.CUBE_DIMS, (ds["data"].isel(group=0) + np.uint16(3)).data)
    res = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats="compute")
    ref = detector1(ds, soss.refs_dir, fused=False, frame_stats="compute")
    assert res.provenance["layout"]["fused"] and "layout" not in ref.provenance
    for key in ("refpix_offsets", "refpix_zf_offsets"):
        got, want = res.frame_stats[key], ref.frame_stats[key]
        assert got.dims == want.dims and got.shape == want.shape, key
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=key)
        assert np.isfinite(np.asarray(got)).all() and np.ptp(np.asarray(got)) > 0
    assert res.frame_stats["refpix_zf_offsets"].sizes["group"] == 1
    assert seen[0] == nblock if nblock else seen[0] >= 10


@pytest.mark.parametrize("n, step, slots, expected", [
    (158, 53, 2, 40),   # 3 blocks → 4: two full rounds on two workers
    (158, 53, 1, 53),   # no cluster: unchanged
    (2528, 53, 2, 53),  # 48 blocks already make whole rounds
    (10, 10, 3, 4),     # 1 block → 3 (4, 4, 2)
    (10, 40, 2, 5),     # a step past the length counts as the whole length
    (3, 1, 4, 1),       # never fewer than one integration, never more blocks than integrations
])
def test_in_rounds_cases(n, step, slots, expected):
    assert plan.in_rounds(n, step, slots) == expected


@given(n=st.integers(1, 3000), step=st.integers(1, 400), slots=st.integers(1, 16))
@settings(max_examples=300, deadline=None)
def test_in_rounds_never_lengthens_and_fills_the_rounds(n, step, slots):
    got = plan.in_rounds(n, step, slots)
    assert 1 <= got <= min(step, n)
    before = len(plan.bounds(n, min(step, n)))
    after = len(plan.bounds(n, got))
    # the blocks a round of the slots asks for, unless there are fewer integrations
    target = min(n, -(-before // slots) * slots)
    assert before <= after <= target
    if n % target == 0:
        # whole lengths reach the round exactly; it is a multiple of the slots unless
        # there are fewer integrations than a round asks for
        assert after == target
        assert after % slots == 0 or target == n


def test_statistics_blocks_come_in_whole_rounds_of_the_workers(soss, monkeypatch):
    """The statistics of two 5-integration segments come in blocks no longer than a segment
    (one block each by size, whatever the exposure's length); with three worker threads the
    block length is the one that cuts a segment in a round (5 integrations in three blocks:
    2), and the offsets are those of the one-block-per-segment pass."""
    ds = open_exposure(soss.uncal_files)
    assert [b - a for a, b in dims.segment_bounds(ds)] == [5, 5]
    one = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats=None).frame_stats
    monkeypatch.setattr(stats, "worker_slots", lambda: 3)
    three = detector1(ds, soss.refs_dir, tile_columns=TILE, frame_stats=None).frame_stats
    assert one["refpix_offsets"].chunks[0] == (5, 5)
    assert three["refpix_offsets"].chunks[0] == (2, 2, 2, 2, 2)
    np.testing.assert_array_equal(np.asarray(three["refpix_offsets"]), np.asarray(one["refpix_offsets"]))
    np.testing.assert_array_equal(np.asarray(three["plane_dnu"]), np.asarray(one["plane_dnu"]))


def test_all_do_not_use_planes_settled_past_the_probe(soss):
    """A plane DO_NOT_USE in the probe window only is found not to be all DO_NOT_USE; a
    plane DO_NOT_USE everywhere is found to be; both as the step-by-step graph finds them."""
    ds = open_exposure(soss.uncal_files).load()
    gdq = ds["groupdq"].values.copy()
    nx = ds.sizes["x"]
    gdq[2, 3] |= dq.DO_NOT_USE  # every pixel
    ys, xs = plan.probe_window(ds.sizes["y"], nx)
    gdq[6, 2, ys, xs] |= dq.DO_NOT_USE  # the probe's pixels only
    ds["groupdq"] = (ds["groupdq"].dims, gdq)
    lazy = dims.chunk(ds, {"integration": 5})
    res = detector1(lazy, soss.refs_dir, tile_columns=TILE, frame_stats="compute")
    planes = np.asarray(res.frame_stats["plane_dnu"])
    assert planes[2, 3] and not planes[6, 2] and planes.sum() == 1
    ref = detector1(lazy, soss.refs_dir, fused=False, frame_stats="compute")
    np.testing.assert_array_equal(planes, np.asarray(ref.frame_stats["plane_dnu"]))
    (ri, r), (ri0, r0) = _compute(res), _compute(ref)
    _assert_same(ri, ri0)
    _assert_same(r, r0)


@pytest.mark.parametrize("ny,nx,columns,ghost,budget,align,expected", [
    (256, 2048, 64, 3, 27047, 1, (64, 256)),     # a SOSS band's pixels as a 64 × 256 tile
    (256, 2048, 64, 3, None, 1, (64, 128)),      # ... whose window must not exceed the band's
    (256, 2048, 64, 3, 27047, 256, (256, 64)),   # a store chunked in full-height bands
    (256, 2048, 64, 3, 27047, 32, (64, 256)),    # ... or in 32 rows
    (256, 2048, 2048, 3, None, 1, (256, 2048)),  # the whole frame fits: one tile
    (2048, 2048, 8, 3, 40000, 1, (64, 256)),     # a full frame's 8-column bands (75 % ghost)
    (256, 80, 80, 6, None, 1, (256, 80)),
])
def test_tile_shape_cases(ny, nx, columns, ghost, budget, align, expected):
    from daskramp.engine.plan import tile_shape

    assert tile_shape(ny, nx, columns=columns, ghost=ghost, pixel_budget=budget,
                      row_align=align) == expected


@given(ny=st.sampled_from([16, 80, 96, 256, 2048]), nx=st.sampled_from([16, 80, 2048]),
       columns=st.integers(1, 2048), ghost=st.integers(0, 6), extra=st.integers(0, 50000),
       align=st.sampled_from([1, 16, 32, 256]))
@settings(max_examples=200, deadline=None)
def test_tile_shape_never_holds_more_than_the_band(ny, nx, columns, ghost, extra, align):
    """The tile never has more interior pixels than the band it replaces, its window fits the
    budget (or the band's window), and its rows keep to the source's chunks."""
    from daskramp.engine.plan import tile_shape

    columns = min(columns, nx)
    band = ny * (columns + 2 * ghost)
    budget = band + extra
    h, w = tile_shape(ny, nx, columns=columns, ghost=ghost, pixel_budget=budget, row_align=align)
    assert 1 <= h <= ny and 1 <= w <= nx
    assert h * w <= ny * columns
    gy, gx = (ghost if h < ny else 0), (ghost if w < nx else 0)
    assert (h + 2 * gy) * (w + 2 * gx) <= budget
    assert h == ny or (h % align == 0 and ny % h == 0)


def test_tile_rows_given_are_kept_and_checked():
    from daskramp.config import ConfigError
    from daskramp.engine.plan import tile_shape

    assert tile_shape(256, 2048, columns=64, ghost=3, tile_rows=16) == (16, 64)
    with pytest.raises(ConfigError, match="tile_rows must be between 1 and the 256 rows"):
        tile_shape(256, 2048, columns=64, tile_rows=300)


def test_halo_width_sums_the_neighbour_steps():
    p = {n: step_params(n) for n in STEP_ORDER}
    assert policy.halo_width(p) == 2 + 1  # n_pix_grow_sat 1 → 2, jump neighbours 1
    p["charge_migration"] = step_params("charge_migration", {"skip": False})
    p["saturation"] = step_params("saturation", {"n_pix_grow_sat": 3})
    assert policy.halo_width(p) == 6 + 1 + 1
    p["jump"] = step_params("jump", {"flag_4_neighbors": False})
    p["saturation"] = step_params("saturation", {"skip": True})
    assert policy.halo_width(p) == 1


def test_probe_runs_on_stand_in_offsets_unless_a_step_flags_by_level():
    p = {n: step_params(n) for n in STEP_ORDER}
    assert not stats.probe_needs_offsets(p)  # default: charge_migration skipped
    p["charge_migration"] = step_params("charge_migration", {"skip": False})
    assert stats.probe_needs_offsets(p)


@pytest.mark.parametrize("i0,i1,ys,xs,block", [
    (0, 5, slice(None), slice(None), None),
    (1, 4, slice(10, 50), slice(3, 21), 1),
    (2, 3, slice(0, 1), slice(79, 80), 4096),
    (0, 5, slice(250, 256), slice(0, 80), 50_000),
])
def test_read_window_matches_read_frames(soss, i0, i1, ys, xs, block):
    seg = scan_segment(soss.uncal_files[0])
    whole = read_frames(seg.path, seg.offset, seg.frame_shape, 0, seg.shape[0])
    got = read_window(seg.path, seg.offset, seg.frame_shape, i0, i1, ys, xs, block_bytes=block)
    np.testing.assert_array_equal(got, whole[i0:i1, ..., ys, xs])
    assert got.dtype == np.uint16 and got.flags.c_contiguous
    # the first and last groups only (group_1overf's draft rate reads no other)
    ends = read_window(seg.path, seg.offset, seg.frame_shape, i0, i1, ys, xs, block_bytes=block,
                       groups=(0, seg.frame_shape[0] - 1))
    np.testing.assert_array_equal(ends, whole[i0:i1, [0, -1]][..., ys, xs])
    assert ends.flags.c_contiguous
    # converted to float32 in the same pass, into the caller's array
    f32 = np.full(got.shape, np.nan, np.float32)
    back = read_window(seg.path, seg.offset, seg.frame_shape, i0, i1, ys, xs, block_bytes=block, out=f32)
    assert back is f32
    np.testing.assert_array_equal(f32, got.astype(np.float32))


def test_fits_words_convert_over_the_whole_uint16_range():
    from daskramp.io.fitswrite import uint16_to_fits
    from daskramp.io.uncal import _from_fits_int16

    values = np.array([0, 1, 255, 256, 0x7FFF, 0x8000, 0x8001, 0xFF00, 0xFFFF, 12345], np.uint16)
    # the file's big-endian int16 words (BZERO 32768), seen as native uint16 as the reader maps them
    raw = np.frombuffer(uint16_to_fits(values).tobytes(), np.uint16).reshape(1, 1, 1, -1)
    for dtype in (np.uint16, np.float32):
        out = np.empty(raw.shape, dtype)
        _from_fits_int16(raw, out)
        np.testing.assert_array_equal(out.ravel(), values.astype(dtype))


def test_a_window_of_arrays_in_memory_is_read_as_a_copy():
    # the fused chain's steps write over the window they are given: a window of the caller's
    # own float32 arrays must not be their memory
    from daskramp.engine.chain import Reader

    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for arr in (data, da.from_array(data, chunks=(1, 3, 4, 5))):
        got = Reader("arrays", arrays=(("data", arr),)).read(0, 2, slice(1, 3), slice(0, 5))["data"]
        np.testing.assert_array_equal(got, data[:, :, 1:3])
        assert not np.shares_memory(got, data)
        f32 = np.empty(got.shape, np.float32)
        assert Reader("arrays", arrays=(("data", arr),)).read(0, 2, slice(1, 3), slice(0, 5), out=f32)["data"] is f32


def test_window_describes_the_subarray(soss):
    ds = open_exposure(soss.uncal_files)
    w = dims.window(ds, y=slice(10, 20), x=slice(30, 45))
    assert w.sizes["y"] == 10 and w.sizes["x"] == 15
    assert w.attrs["SUBSTRT1"] == ds.attrs["SUBSTRT1"] + 30
    assert w.attrs["SUBSTRT2"] == ds.attrs["SUBSTRT2"] + 10
    assert (w.attrs["SUBSIZE1"], w.attrs["SUBSIZE2"]) == (15, 10)
    np.testing.assert_array_equal(w["x"].values, ds["x"].values[30:45])
    assert ds.attrs["SUBSIZE1"] == 80  # the parent is unchanged
    refs = RefSet.from_dir(soss.refs_dir, ds.attrs, required=())
    shape = (ds.sizes["y"], ds.sizes["x"])
    wr = refs.window(shape, slice(10, 20), slice(30, 45))
    for rt in ("mask", "saturation", "superbias", "gain", "readnoise"):
        for k, a in refs.get(rt).arrays.items():
            if a.ndim >= 2 and a.shape[-2:] == shape:
                np.testing.assert_array_equal(wr.get(rt).arrays[k], a[..., 10:20, 30:45], err_msg=f"{rt} {k}")
    assert wr.provenance() == refs.provenance()


_FRAGMENTS = """
import os, sys, numpy as np
from daskramp.engine.chain import release_free_memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
# 1 MiB arrays below the mmap threshold come from the heap; keeping every tenth pins the
# heap's top, so freeing the others leaves free pages inside it that only a trim returns
arrays = [np.ones(2**18, np.float32) for _ in range(400)]
kept = arrays[::10]
del arrays
before = rss()
release_free_memory()
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_release_free_memory_returns_heap_fragments():
    """What every window task does at its end: the free pages between live heap blocks go
    back to the system (the workers' 32 MiB mmap threshold puts window temporaries on the
    heap, where they fragment over a long run)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(32 * 2**20))
    out = subprocess.run([sys.executable, "-c", _FRAGMENTS], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    released = int(out.stdout.split()[-1])
    assert released > 200 * 2**20  # of the 360 MiB freed


def test_blocks_written_in_place_are_assembled_without_a_copy():
    base = np.arange(6 * 2 * 5 * 6, dtype=np.float32).reshape(6, 2, 5, 6)
    where = (slice(1, 4), slice(1, 5))
    blocks = [(10, 13), (13, 16)]

    def parts(arrays):
        return [xr.Dataset({"data": (dims.RAMP_DIMS, a)}) for a in arrays]

    views = [base[0:3, :, 1:4, 1:5], base[3:6, :, 1:4, 1:5]]
    got = chain._in_place(base, parts(views), blocks, 10, where)
    assert got is not None and np.shares_memory(got, base)
    np.testing.assert_array_equal(got, base[:, :, 1:4, 1:5])
    # a block whose steps made a new array, or a view of another place: copied (None here)
    assert chain._in_place(base, parts([views[0], views[1].copy()]), blocks, 10, where) is None
    assert chain._in_place(base, parts([views[0], base[3:6, :, 0:3, 1:5]]), blocks, 10, where) is None


@pytest.mark.parametrize("stats_scope", ["segment", pytest.param("exposure", marks=pytest.mark.slow)])
def test_snowballs_flagged_after_a_checkpoint_equal_step_by_step(tmp_path, monkeypatch, stats_scope):
    """jump's snowball flagging in the fused layout (the tiles' jump without it, written to a
    checkpoint; the snowballs flagged on whole group-DQ planes read back a single integration
    at a time, the one before it looked back at for the next-integration masking; the tiles
    resumed after jump) gives the step-by-step products bit for bit: narrow tiles that cut
    through the snowballs, two segments."""
    monkeypatch.setattr(checkpoint, "frame_block_integrations", lambda *a: 1)
    sim = simulate(tmp_path / "sim", preset="niriss-soss", nints=4, segments=2, ngroups=7, nx=96, seed=2,
                   snowball_rate=4)
    ds = open_exposure(sim.uncal_files)
    steps = {"jump": {"expand_large_events": True}}
    ri, checkpointed = _checkpointed_equals_stepwise(ds, sim.refs_dir, steps, stats_scope, tmp_path)
    assert checkpointed == {"before": "clean_flicker_noise", "frame_pass": "jump"}
    # the snowballs changed the flags, and the next-integration masking is part of them
    for other in ({}, {"jump": {"expand_large_events": True, "mask_snowball_core_next_int": False}}):
        res = detector1(ds, sim.refs_dir, steps=other, stats_scope=stats_scope, tile_columns=TILE,
                        tile_rows=TILE_ROWS, frame_stats="compute", scratch=tmp_path / "scratch2")
        assert not np.array_equal(_compute(res)[0]["dq"].values, ri["dq"].values)


def test_two_whole_frame_passes_run_step_by_step(soss):
    ds = open_exposure(soss.uncal_files)
    res = detector1(ds, soss.refs_dir, steps={"jump": {"expand_large_events": True},
                                             "clean_flicker_noise": {"skip": False}})
    assert res.provenance["fused"].startswith("not used: jump and clean_flicker_noise both need whole frames")
