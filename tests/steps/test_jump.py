"""jump wrapper: tiles and segments give the whole-array kernel answer, laziness, DQ, status."""

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.dims import make_exposure
from daskramp.kernels import jump as kernel
from daskramp.steps.jump import Params, jump
from daskramp.testing.ramps import forbid_compute, make_attrs

JUMP, DNU, SAT = dq.JUMP_DET, dq.DO_NOT_USE, dq.SATURATED


def exposure(data, groupdq=None, segment=None, pixeldq=None):
    nint, ngroup, ny, nx = data.shape
    attrs = make_attrs(NINTS=nint, NGROUPS=ngroup, SUBSIZE1=nx, SUBSIZE2=ny)
    return make_exposure(data.astype(np.float32), attrs, groupdq=groupdq, segment=segment,
                         pixeldq=pixeldq)


def chunked(ds, **chunks):
    """Dask-backed data variables, numpy coordinates (as read from a store).

    ``Dataset.chunk`` would also turn the per-integration ``segment`` coordinate into a dask
    array, which the segment bookkeeping reads eagerly.
    """
    out = ds.copy()
    for name, var in ds.data_vars.items():
        out[name] = var.chunk({d: c for d, c in chunks.items() if d in var.dims})
    return out


def refs(ny, nx, gain=1.0, rn=10.0):
    return np.full((ny, nx), gain, np.float32), np.full((ny, nx), rn, np.float32)


def kernel_whole(data, gdq, gain, rn, **kw):
    plane = np.all(gdq & DNU, axis=(2, 3))
    return kernel.jump(data, gdq, gain, rn, plane, nframes=1, tgroup=10.0,
                       gain_median=float(np.nanmedian(gain)), **kw)


def random_ramps(seed, nint, ngroup, ny, nx):
    rng = np.random.default_rng(seed)
    data = (1000 + 20 * np.arange(ngroup)[None, :, None, None]
            + rng.normal(0, 7, (nint, ngroup, ny, nx))).astype(np.float32)
    gdq = np.zeros(data.shape, np.uint8)
    m = rng.random(data.shape) < 0.05
    data += np.cumsum(m * rng.uniform(30, 400, data.shape), axis=1).astype(np.float32)
    gdq[rng.random(data.shape) < 0.03] |= DNU
    sat = rng.random((nint, 1, ny, nx)) < 0.05
    gdq[:, -1:][sat] |= SAT
    # a column of DO_NOT_USE groups: the method choice must see the whole frame, not a tile
    gdq[:, 0, :, 0] |= DNU
    gain = rng.uniform(1, 3, (ny, nx)).astype(np.float32)
    gain[0, -1] = 0
    rn = rng.uniform(5, 15, (ny, nx)).astype(np.float32)
    return data, gdq, gain, rn


# ---------------------------------------------------------------------------- basic behaviour


def test_numpy_input_matches_kernel_and_sets_dq():
    data = np.full((1, 10, 5, 5), 1000, np.float32)
    data[0, 6:, 2, 2] += 120  # spec 09 §4: pixel + 4 neighbours at g6
    gain, rn = refs(5, 5)
    gain[0, 0] = 0.0
    gain[4, 4] = np.nan
    ds = exposure(data)
    out = jump(ds, gain=gain, readnoise=rn)
    expected = kernel_whole(data, np.zeros(data.shape, np.uint8), gain, rn)
    np.testing.assert_array_equal(out.groupdq.values, expected)
    assert sorted(map(tuple, np.argwhere(out.groupdq.values & JUMP).tolist())) == [
        (0, 6, 1, 2), (0, 6, 2, 1), (0, 6, 2, 2), (0, 6, 2, 3), (0, 6, 3, 2)]
    bad = dq.NO_GAIN_VALUE | dq.DO_NOT_USE
    assert out.pixeldq.values[0, 0] == bad and out.pixeldq.values[4, 4] == bad
    assert np.count_nonzero(out.pixeldq.values) == 2 and out.pixeldq.dtype == np.uint32
    assert out.groupdq.dtype == np.uint8
    assert out.attrs["S_JUMP"] == "COMPLETE"
    np.testing.assert_array_equal(out.data.values, data)  # data are not modified
    assert not (ds.groupdq.values & JUMP).any() and not ds.pixeldq.values.any()  # input intact


def test_skipped_for_two_groups_or_skip():
    ds = exposure(np.zeros((1, 2, 3, 3), np.float32))
    gain, rn = refs(3, 3, gain=0.0)
    out = jump(ds, gain=gain, readnoise=rn)
    assert out.attrs["S_JUMP"] == "SKIPPED" and not out.pixeldq.values.any()
    ds = exposure(np.zeros((1, 5, 3, 3), np.float32))
    out = jump(ds, gain=gain, readnoise=rn, skip=True)
    assert out.attrs["S_JUMP"] == "SKIPPED" and not out.pixeldq.values.any()


def test_parameters_checked():
    ds = exposure(np.zeros((1, 5, 3, 3), np.float32))
    gain, rn = refs(3, 3)
    with pytest.raises(NotImplementedError, match="find_showers"):
        jump(ds, gain=gain, readnoise=rn, find_showers=True)
    with pytest.raises(TypeError):
        jump(ds, gain=gain, readnoise=rn, rejection_treshold=3.0)
    with pytest.raises(ValueError, match="gain has shape"):
        jump(ds, gain=gain[:2], readnoise=rn)
    # official defaults
    p = Params()
    assert (p.rejection_threshold, p.three_group_rejection_threshold,
            p.four_group_rejection_threshold) == (4.0, 6.0, 5.0)
    assert (p.max_jump_to_flag_neighbors, p.min_jump_to_flag_neighbors) == (1000, 10)
    assert (p.minimum_groups, p.minimum_sigclip_groups, p.min_diffs_single_pass) == (3, 100, 10)
    assert p.flag_4_neighbors and p.only_use_ints and not p.expand_large_events


# ---------------------------------------------------------------------------- chunking


def test_laziness_and_tiles():
    data, gdq, gain, rn = random_ramps(3, 2, 6, 8, 10)
    ds = chunked(exposure(data, gdq), integration=1, y=3, x=4)
    gain_da = xr.DataArray(da.from_array(gain, chunks=(4, 5)), dims=("y", "x"))
    with forbid_compute():
        out = jump(ds, gain=gain_da, readnoise=rn, after_jump_flag_dn1=50.0,
                   after_jump_flag_time1=20.0)
    assert isinstance(out.groupdq.data, da.Array) and isinstance(out.pixeldq.data, da.Array)
    # integration is rechunked to whole segments, spatial tiles are kept
    assert out.groupdq.data.chunks[0] == (2,) and len(out.groupdq.data.chunks[3]) == 3
    expected = kernel_whole(data, gdq, gain, rn, after_jump_flag_dn1=50.0, after_jump_flag_time1=20.0)
    np.testing.assert_array_equal(out.groupdq.values, expected)
    assert np.count_nonzero(expected & JUMP) > 0


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), cy=st.integers(1, 7), cx=st.integers(1, 9),
       nint=st.integers(1, 3), ngroup=st.integers(3, 12))
def test_tiles_equal_whole_array(seed, cy, cx, nint, ngroup):
    data, gdq, gain, rn = random_ramps(seed, nint, ngroup, 7, 9)
    expected = kernel_whole(data, gdq, gain, rn)
    ds = chunked(exposure(data, gdq), y=cy, x=cx)
    out = jump(ds, gain=gain, readnoise=rn)
    np.testing.assert_array_equal(out.groupdq.values, expected)


def test_sigma_clip_tiles_equal_whole_array():
    rng = np.random.default_rng(5)
    data = (1000 + rng.uniform(-5, 5, (100, 4, 4, 6))).astype(np.float32)
    for i, y, x in ((3, 1, 1), (40, 2, 3), (77, 0, 5)):
        data[i, 2:, y, x] += 300
    gdq = np.zeros(data.shape, np.uint8)
    gain, rn = refs(4, 6)
    expected = kernel_whole(data, gdq, gain, rn)
    assert np.count_nonzero(expected & JUMP) == 3 * 5 - 2  # (0, 5): 2 neighbours off the edge
    out = jump(chunked(exposure(data, gdq), y=2, x=3), gain=gain, readnoise=rn)
    np.testing.assert_array_equal(out.groupdq.values, expected)


def test_statistics_per_segment_or_exposure():
    # two segments of one integration, 3 groups, 52 DN step in the last group of integration 0:
    # per segment 2 usable differences → threshold 6 (ratio 5.2: no jump); pooled over the
    # exposure 4 differences → threshold 4 (jump) — spec 09 §4 rows 3×1 and 3×2
    data = np.full((2, 3, 1, 1), 1000, np.float32)
    data[0, 2] += 52
    gain, rn = refs(1, 1)
    ds = exposure(data, segment=[1, 2])
    for lazy in (False, True):
        d = chunked(ds, integration=1) if lazy else ds
        seg = jump(d, gain=gain, readnoise=rn, flag_4_neighbors=False)
        whole = jump(d, gain=gain, readnoise=rn, stats_scope="exposure", flag_4_neighbors=False)
        assert not (seg.groupdq.values & JUMP).any()
        assert int(whole.groupdq.values[0, 2, 0, 0]) == JUMP
        assert np.count_nonzero(whole.groupdq.values) == 1


def test_segment_chunks_match_kernel_per_segment():
    data, gdq, gain, rn = random_ramps(11, 5, 6, 5, 6)
    segment = [1, 1, 2, 2, 2]
    ds = chunked(exposure(data, gdq, segment=segment), integration=2, x=3)
    out = jump(ds, gain=gain, readnoise=rn)
    assert out.groupdq.data.chunks[0] == (2, 3)
    expected = np.concatenate([kernel_whole(data[:2], gdq[:2], gain, rn),
                               kernel_whole(data[2:], gdq[2:], gain, rn)])
    np.testing.assert_array_equal(out.groupdq.values, expected)
    np.testing.assert_array_equal(jump(exposure(data, gdq, segment=segment), gain=gain,
                                       readnoise=rn).groupdq.values, expected)


def test_given_plane_dnu_is_used():
    # 11 groups, group 0 DO_NOT_USE everywhere: by default nflag_max = 1 → 9 differences →
    # iterative; alternating ±30 e⁻ differences then give |Δ| all equal (median NaN): nothing.
    # A caller-supplied plane_dnu without that plane means single pass (10 differences): the
    # +30 differences (ratio 60/11.40 = 5.26) are flagged on groups 3, 5, 7, 9
    data = np.empty((1, 11, 1, 1), np.float32)
    data[0, :, 0, 0] = [0, 100, 70, 100, 70, 100, 70, 100, 70, 100, 70]
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, 0] = DNU
    gain, rn = refs(1, 1)
    ds = exposure(data, gdq)
    assert not (jump(ds, gain=gain, readnoise=rn).groupdq.values & JUMP).any()
    for d in (ds, chunked(ds, integration=1)):
        out = jump(d, gain=gain, readnoise=rn, plane_dnu=np.zeros((1, 11), bool))
        assert list(np.flatnonzero(out.groupdq.values[0, :, 0, 0] & JUMP)) == [3, 5, 7, 9]
    with pytest.raises(ValueError, match="plane_dnu has shape"):
        jump(ds, gain=gain, readnoise=rn, plane_dnu=np.zeros((2, 11), bool))


def test_window_uses_the_frames_gain_median_and_no_plane_reset():
    """A window of a larger subarray (fused tasks) takes the after-jump gain median of the
    whole subarray, and does not apply the sigma-clip whole-plane reset to itself."""
    # flat ramps, gain 1, one jump of 150 DN at group 3 of pixel (1, 1)
    data = np.zeros((1, 10, 3, 3), np.float32) + 1000
    data[0, 3:, 1, 1] += 150
    ds = exposure(data)
    gain, rn = refs(3, 3)
    kw = dict(gain=gain, readnoise=rn, after_jump_flag_dn1=100.0, after_jump_flag_time1=25.0,
              flag_4_neighbors=False)
    # own median 1 → threshold 100 e⁻ < 150: groups 4, 5 flagged after the jump
    own = jump(ds, **kw).groupdq.values[0, :, 1, 1]
    assert list(np.flatnonzero(own & JUMP)) == [3, 4, 5]
    # the whole subarray's median gain 2 → threshold 200 e⁻ > 150: nothing after the jump
    frame = jump(ds, gain_median=2.0, **kw).groupdq.values[0, :, 1, 1]
    assert list(np.flatnonzero(frame & JUMP)) == [3]

    # sigma clip (≥ 100 integrations) with every pixel jumping in the same group: the reset
    # un-flags that plane on a whole frame, and leaves it on a window
    rng = np.random.default_rng(0)
    many = (1000 + 10 * np.arange(4)[None, :, None, None]
            + rng.normal(0, 3, (120, 4, 2, 2))).astype(np.float32)
    many[7, 2:] += 500
    ds = exposure(many)
    g2, rn2 = refs(2, 2, rn=3.0)
    whole = jump(ds, gain=g2, readnoise=rn2, flag_4_neighbors=False).groupdq.values
    window = jump(ds, gain=g2, readnoise=rn2, flag_4_neighbors=False, whole_frame=False).groupdq.values
    assert not (whole[7, 2] & JUMP).any()
    assert (window[7, 2] & JUMP).all()


# ------------------------------------------------------------------------- integration_scale


def test_integration_scale_ones_is_the_official_result():
    data, gdq, gain, rn = random_ramps(5, 6, 7, 4, 5)
    ds = exposure(data, gdq)
    ref = jump(ds, gain=gain, readnoise=rn).groupdq.values
    for d in (ds, chunked(ds, integration=3, x=2)):
        got = jump(d, gain=gain, readnoise=rn, integration_scale=np.ones(6)).groupdq.values
        np.testing.assert_array_equal(got, ref)


def test_integration_scale_divides_each_integration():
    """The scaled run equals the official run on ramps divided by the scale (by hand)."""
    data, gdq, gain, rn = random_ramps(6, 6, 7, 4, 5)
    scale = np.array([1.0, 0.9, 1.1, 0.8, 1.0, 1.2])
    by_hand = jump(exposure(data / scale[:, None, None, None].astype(np.float32), gdq),
                   gain=gain, readnoise=rn).groupdq.values
    for d in (exposure(data, gdq), chunked(exposure(data, gdq), integration=2, y=2)):
        got = jump(d, gain=gain, readnoise=rn, integration_scale=scale).groupdq.values
        np.testing.assert_array_equal(got, by_hand)


def test_integration_scale_per_exposure_selects_the_segment(tmp_path):
    data, gdq, gain, rn = random_ramps(7, 6, 7, 4, 5)
    scale = np.array([1.0, 0.9, 1.1, 0.8, 1.0, 1.2])
    ds = exposure(data, gdq, segment=[1, 1, 1, 2, 2, 2])
    whole = jump(ds, gain=gain, readnoise=rn, integration_scale=scale).groupdq.values
    seg2 = ds.isel(integration=slice(3, 6))
    for scale_given in (scale, scale[3:], xr.DataArray(scale, dims="integration")):
        got = jump(seg2, gain=gain, readnoise=rn, integration_scale=scale_given).groupdq.values
        np.testing.assert_array_equal(got, whole[3:])
    # from a file, as on the command line
    np.savetxt(tmp_path / "scale.txt", scale)
    np.save(tmp_path / "scale.npy", scale)
    for path in ("scale.txt", "scale.npy"):
        got = jump(ds, gain=gain, readnoise=rn, integration_scale=str(tmp_path / path)).groupdq.values
        np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize("bad,match", [
    (np.ones(4), "integration_scale has 4 values"),
    (np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), "finite and positive"),
    (np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0]), "finite and positive"),
    ("/nonexistent/scale.txt", "integration_scale file"),
])
def test_integration_scale_checked(bad, match):
    data, gdq, gain, rn = random_ramps(8, 6, 4, 2, 2)
    with pytest.raises(ValueError, match=match):
        jump(exposure(data, gdq), gain=gain, readnoise=rn, integration_scale=bad)
