"""jump with expand_large_events: the whole-plane snowball stage of the wrapper."""

import json
import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import snowball as sb
from daskramp.steps import jump as jump_step
from daskramp.steps.jump import SPEC, Params, jump
from daskramp.testing.ramps import forbid_compute

from .test_jump import chunked, exposure, kernel_whole, refs

JUMP, SAT, DNU = dq.JUMP_DET, dq.SATURATED, dq.DO_NOT_USE
TGROUP = 10.0  # make_attrs' TGROUP


def snowball_ramps(seed=0, nint=4, ngroup=6, ny=48, nx=56, n=3):
    """Flat ramps with snowballs: a saturating core and a +400 DN halo in one group."""
    rng = np.random.default_rng(seed)
    data = (1000 + 20 * np.arange(ngroup)[None, :, None, None]
            + rng.normal(0, 5, (nint, ngroup, ny, nx))).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for i in range(nint):
        for _ in range(n):
            g = int(rng.integers(1, ngroup - 1))
            d = np.hypot(yy - rng.uniform(8, ny - 8), xx - rng.uniform(8, nx - 8))
            rc, rh = rng.uniform(2.6, 4), rng.uniform(7, 11)
            data[i, g:, d < rh] += 400
            gdq[i, g:, d < rc] |= SAT
    return data, gdq


def expected(data, gdq, gain, rn, bounds, **kw):
    """Kernel by hand: two-point pass per segment, snowballs, next-integration masking."""
    base = np.concatenate([kernel_whole(data[a:b], gdq[a:b], gain, rn) for a, b in bounds])
    out, cores, _ = sb.snowballs(base, **kw)
    prev = np.concatenate([np.zeros_like(cores[:1]), cores[:-1]])
    prev[[a for a, _ in bounds]] = 0
    return sb.mask_next_integration(out, prev, sb.n_next_groups(4000, TGROUP))


def test_numpy_matches_the_kernels_and_flags_snowballs():
    data, gdq = snowball_ramps()
    gain, rn = refs(*data.shape[2:])
    out = jump(exposure(data, gdq), gain=gain, readnoise=rn, expand_large_events=True)
    want = expected(data, gdq, gain, rn, [(0, data.shape[0])])
    np.testing.assert_array_equal(out.groupdq.values, want)
    base = jump(exposure(data, gdq), gain=gain, readnoise=rn).groupdq.values
    # halos add JUMP_DET, cores grow, and integration 1 … get the previous cores in group 1
    assert np.count_nonzero(want & JUMP) > np.count_nonzero(base & JUMP)
    assert np.count_nonzero(want & SAT) > np.count_nonzero(base & SAT)
    assert (want[1:, 1] & JUMP).sum() > (base[1:, 1] & JUMP).sum()


def test_lazy_and_tile_independent():
    data, gdq = snowball_ramps(1)
    gain, rn = refs(*data.shape[2:])
    ds = chunked(exposure(data, gdq), integration=1, y=7, x=9)
    with forbid_compute():
        out = jump(ds, gain=gain, readnoise=rn, expand_large_events=True)
    assert isinstance(out.groupdq.data, da.Array)
    assert out.groupdq.data.chunks[2:] == ((7,) * 6 + (6,), (9,) * 6 + (2,))
    np.testing.assert_array_equal(out.groupdq.values, expected(data, gdq, gain, rn, [(0, 4)]))


@settings(max_examples=4, deadline=None)
@given(ty=st.integers(3, 48), tx=st.integers(3, 56), per_block=st.integers(1, 4), seed=st.integers(0, 99))
def test_flags_do_not_depend_on_tiles_or_integration_blocks(ty, tx, per_block, seed, monkeypatch_module):
    data, gdq = snowball_ramps(seed, ngroup=5, ny=48, nx=56)
    gain, rn = refs(48, 56)
    monkeypatch_module.setattr(jump_step, "_SNOWBALL_BLOCK_BYTES", per_block * 5 * 48 * 56)
    out = jump(chunked(exposure(data, gdq), y=ty, x=tx), gain=gain, readnoise=rn,
               expand_large_events=True)
    np.testing.assert_array_equal(out.groupdq.values, expected(data, gdq, gain, rn, [(0, 4)]))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_next_integration_masking_across_blocks_not_segments(monkeypatch):
    # one snowball core in integration 1 (last of segment 1's first block), one in 2
    data, gdq = snowball_ramps(2, nint=4, n=0)
    ny, nx = data.shape[2:]
    yy, xx = np.mgrid[:ny, :nx]
    d = np.hypot(yy - 24, xx - 28)
    for i in (0, 1):
        data[i, 2:, d < 10] += 400
        gdq[i, 2:, d < 3.5] |= SAT
    seg = np.array([1, 1, 2, 2])
    gain, rn = refs(ny, nx)
    monkeypatch.setattr(jump_step, "_SNOWBALL_BLOCK_BYTES", 1)   # one integration per block
    for ds in (exposure(data, gdq, segment=seg), chunked(exposure(data, gdq, segment=seg), y=16)):
        out = jump(ds, gain=gain, readnoise=rn, expand_large_events=True).groupdq.values
        core = d < 2.5
        # integration 1 gets integration 0's cores in groups 1 … (int(4000 // 10) capped)
        assert (out[1, 1:2, core] & JUMP).all()
        # integration 2 starts segment 2: integration 1's cores do not reach it
        assert not (out[2, 1:, core] & JUMP).any()
        np.testing.assert_array_equal(out, expected(data, gdq, gain, rn, [(0, 2), (2, 4)]))
        # the whole exposure pooled: the masking crosses the segment boundary too
        pooled = jump(ds, gain=gain, readnoise=rn, expand_large_events=True, stats_scope="exposure")
        assert (pooled.groupdq.values[2, 1, core] & JUMP).all()


def test_masking_switches():
    data, gdq = snowball_ramps(3)
    gain, rn = refs(*data.shape[2:])
    ds = exposure(data, gdq)
    a = jump(ds, gain=gain, readnoise=rn, expand_large_events=True, mask_snowball_core_next_int=False)
    b = jump(ds, gain=gain, readnoise=rn, expand_large_events=True, snowball_time_masked_next_int=5)
    np.testing.assert_array_equal(a.groupdq.values, b.groupdq.values)   # 5 // 10 = 0 groups
    base, _, _ = sb.snowballs(np.concatenate([kernel_whole(data, gdq, gain, rn)]))
    np.testing.assert_array_equal(a.groupdq.values, base)


def test_frame_pass_only_when_on():
    # the fused layout flags snowballs in a pass over whole planes after the tiles' jump
    fp = SPEC.frame_pass
    assert not fp.runs(Params()) and fp.runs(Params(expand_large_events=True))
    assert not fp.runs(Params(expand_large_events=True, skip=True))
    assert fp.after and fp.lookback == 1


def test_deferred_window_leaves_the_snowballs_to_the_frame_pass():
    data, gdq = snowball_ramps(3)
    gain, rn = refs(*data.shape[2:])
    ds = exposure(data, gdq)
    kw = SPEC.stats_kwargs(ds, Params(expand_large_events=True), {"frame_pass": "deferred"}, None)
    assert kw["large_events"] is False
    deferred = jump(ds, gain=gain, readnoise=rn, expand_large_events=True, **kw)
    plain = jump(ds, gain=gain, readnoise=rn)
    np.testing.assert_array_equal(deferred.groupdq.values, plain.groupdq.values)
    whole = jump(ds, gain=gain, readnoise=rn, expand_large_events=True)
    # the frame pass on the deferred flags, block by block with one integration looked back,
    # gives the step's own flags
    params = Params(expand_large_events=True)
    g = deferred.groupdq.values
    for j0 in range(g.shape[0]):
        a = max(0, j0 - 1)
        out = jump_step.snowball_frames({"groupdq": g[a:j0 + 1]}, None, None, None, ds.attrs, params)["groupdq"]
        np.testing.assert_array_equal(out[j0 - a:], whole.groupdq.values[j0:j0 + 1])


def test_integration_chunks_split_at_segments():
    assert jump_step._integration_chunks((5,), [(0, 2), (2, 5)], 2) == (2, 2, 1)
    assert jump_step._integration_chunks((3, 3), [(0, 6)], 10) == (3, 3)


@pytest.mark.parity
def test_parity_with_official_jumpstep_on_a_simulated_exposure(tmp_path):
    """Detector1 with expand_large_events on a SOSS strip with snowballs: jump's group DQ and
    the rateints equal the official pipeline's (jwst's JumpStep, stcal's flag_large_events)."""
    pytest.importorskip("jwst")
    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1
    from daskramp.simulate import load_truth, simulate
    from daskramp.testing.parity import compare_arrays

    sim = simulate(tmp_path / "sim", preset="niriss-soss", nints=3, ngroups=7, nx=96, ny=256, seed=2,
                   snowball_rate=4)
    truth = load_truth(sim.truth_path)
    # snowballs the jump search can see (after group 0) in every integration
    seen = truth["snowball_group"].values >= 1
    assert set(truth["snowball_integration"].values[seen]) == {0, 1, 2}
    out = tmp_path / "official"
    argv = [str(sim.uncal_files[0]), "--refs", str(sim.refs_dir), "--out", str(out), "--steps-json",
            json.dumps({"jump": {"expand_large_events": True, "save_results": True}})]
    # own process: the official module configures CRDS through the environment before jwst loads
    proc = subprocess.run([sys.executable, "-m", "daskramp.testing.official", *argv], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with fits.open(next(out.glob("*_jump.fits"))) as h:
        o_gdq = np.asarray(h["GROUPDQ"].data)
    with fits.open(next(out.glob("*_rateints.fits"))) as h:
        o_dq, o_sci = np.asarray(h["DQ"].data), np.asarray(h["SCI"].data)

    def run(expand):
        res = detector1(open_exposure(sim.uncal_files[0]), sim.refs_dir,
                        steps={"jump": {"expand_large_events": expand}}, save_steps=["jump"])
        with dask.config.set(scheduler="synchronous"):
            gdq, ri = dask.compute(res.intermediates["jump"].groupdq, res.rateints)
        return gdq.values, ri

    gdq, rateints = run(True)
    np.testing.assert_array_equal(gdq, o_gdq)
    np.testing.assert_array_equal(rateints["dq"].values, o_dq)
    r = compare_arrays(rateints["data"].values, o_sci)
    assert r["nan_pattern_identical"] and r["fraction_close"] == 1.0, r
    # the default layout (fused: snowballs flagged on whole planes after a checkpoint), narrow tiles
    res = detector1(open_exposure(sim.uncal_files[0]), sim.refs_dir, tile_columns=16, tile_rows=64,
                    steps={"jump": {"expand_large_events": True}}, scratch=tmp_path / "scratch")
    assert res.provenance["layout"]["checkpoint"]["frame_pass"] == "jump"
    with dask.config.set(scheduler="synchronous"):
        fused = res.rateints.compute()
    np.testing.assert_array_equal(fused["dq"].values, o_dq)
    r = compare_arrays(fused["data"].values, o_sci)
    assert r["nan_pattern_identical"] and r["fraction_close"] == 1.0, r
    # the comparison covers snowballs: halos flagged, cores grown, cores masked in the next integration
    plain, _ = run(False)
    assert np.count_nonzero(o_gdq & JUMP) > 1.5 * np.count_nonzero(plain & JUMP)
    assert np.count_nonzero(o_gdq & SAT) > np.count_nonzero(plain & SAT)
    assert np.count_nonzero(o_gdq[1:, 1] & JUMP) > np.count_nonzero(plain[1:, 1] & JUMP)


@pytest.mark.parity
def test_parity_with_official_jumpstep_on_two_segments(tmp_path):
    """Two uncal segments with snowballs, each reduced by the official pipeline on its own (as
    it reduces segment files), against daskramp's default fused layout on the stitched
    exposure: the snowballs are flagged after the checkpoint a single integration per task,
    the next-integration masking crossing those tasks but not the segment boundary.  Rateints
    DQ identical, SCI all close."""
    pytest.importorskip("jwst")
    from daskramp.engine import checkpoint
    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1
    from daskramp.simulate import simulate
    from daskramp.testing.parity import compare_arrays

    sim = simulate(tmp_path / "sim", preset="niriss-soss", nints=3, segments=2, ngroups=7, nx=96, ny=256,
                   seed=2, snowball_rate=4)
    o_dq, o_sci = [], []
    for k, seg in enumerate(sim.uncal_files):
        out = tmp_path / f"official-{k}"
        argv = [str(seg), "--refs", str(sim.refs_dir), "--out", str(out), "--steps-json",
                json.dumps({"jump": {"expand_large_events": True}})]
        proc = subprocess.run([sys.executable, "-m", "daskramp.testing.official", *argv], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[2])
        assert proc.returncode == 0, proc.stderr[-3000:]
        with fits.open(next(out.glob("*_rateints.fits"))) as h:
            o_dq.append(np.asarray(h["DQ"].data))
            o_sci.append(np.asarray(h["SCI"].data))
    o_dq, o_sci = np.concatenate(o_dq), np.concatenate(o_sci)
    mp = pytest.MonkeyPatch()
    mp.setattr(checkpoint, "frame_block_integrations", lambda *a: 1)
    try:
        res = detector1(open_exposure(sim.uncal_files), sim.refs_dir, tile_columns=16, tile_rows=64,
                        steps={"jump": {"expand_large_events": True}}, scratch=tmp_path / "scratch")
        assert res.provenance["layout"]["checkpoint"]["frame_pass"] == "jump"
        with dask.config.set(scheduler="synchronous"):
            fused = res.rateints.compute()
    finally:
        mp.undo()
    np.testing.assert_array_equal(fused["dq"].values, o_dq)
    r = compare_arrays(fused["data"].values, o_sci)
    assert r["nan_pattern_identical"] and r["fraction_close"] == 1.0, r
    # the masking of the cores in the next integration is part of what is compared
    plain = detector1(open_exposure(sim.uncal_files), sim.refs_dir, tile_columns=16,
                      steps={"jump": {"expand_large_events": True, "mask_snowball_core_next_int": False}},
                      scratch=tmp_path / "scratch2")
    with dask.config.set(scheduler="synchronous"):
        unmasked = plain.rateints["dq"].values
    assert not np.array_equal(unmasked, o_dq)
