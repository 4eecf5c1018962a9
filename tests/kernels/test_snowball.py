"""Snowball kernel (spec 12 §1): hand-built DQ planes and parity with stcal's flag_large_events."""

import types

import numpy as np
import pytest

from daskramp import dq
from daskramp.kernels import snowball as sb

JUMP, SAT, DNU = dq.JUMP_DET, dq.SATURATED, dq.DO_NOT_USE


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - cy, xx - cx) <= r


def ring_case(nint=1, ng=5, ny=100, nx=100, g=2, cy=50, cx=50):
    """A new core r ≤ 3 saturating from group g, JUMP_DET out to r ≤ 8 in group g."""
    gdq = np.zeros((nint, ng, ny, nx), np.uint8)
    core, halo = disk((ny, nx), cy, cx, 3), disk((ny, nx), cy, cx, 8)
    gdq[0, g][halo & ~core] = JUMP
    gdq[0, g:, core] = SAT
    return gdq, core


def test_region_ellipses_match_the_spec_examples():
    one = np.zeros((9, 9), np.uint8)
    one[4, 4] = 1
    assert sb.regions(one, 1)[0][2] == pytest.approx(-1.0)
    plus = one.copy()
    plus[3:6, 4] = plus[4, 3:6] = 1
    cx, cy, h, w, _ = sb.regions(plus, 5)[0]
    assert (cx, cy) == (4.0, 4.0) and h == pytest.approx(1.53, abs=0.01)
    block = np.zeros((9, 9), np.uint8)
    block[2:5, 2:5] = 1
    assert sb.regions(block, 1)[0][2] == pytest.approx(2.27, abs=0.01)
    block[2:6, 2:6] = 1
    assert sb.regions(block, 1)[0][2] == pytest.approx(3.47, abs=0.01)
    # below the minimum area: no region; diagonal neighbours connect
    assert sb.regions(plus, 6) == []
    diag = np.eye(5, dtype=np.uint8)
    assert len(sb.regions(diag, 5)) == 1


def test_filled_area_counts_holes():
    ring = np.zeros((7, 7), np.uint8)
    ring[1:6, 1:6] = 1
    ring[2:5, 2:5] = 0          # 16 pixels around a 3×3 hole: filled area 25
    assert len(sb.regions(ring, 25)) == 1 and sb.regions(ring, 26) == []


def test_plus_shaped_cr_draws_a_3x3_block():
    rr, cc = sb.draw((9, 9), 4.0, 4.0, 3.06, 3.06, 45.0)
    img = np.zeros((9, 9), bool)
    img[rr, cc] = True
    assert img.sum() == 9 and img[3:6, 3:6].all()
    assert sb.draw((9, 9), 4.0, 4.0, 0.9, 5.0, 0.0)[0].size == 0   # zero semi-axis


def test_core_and_ring_spec_numbers():
    gdq, core = ring_case()
    out, cores, n = sb.snowballs(gdq)
    assert n == 1
    grown = out[0, 2] == SAT
    assert grown.sum() == 69 and (out[0, 2:] == SAT).all(axis=0).sum() == 69
    assert not (out[0, :2] & SAT).any()
    assert np.count_nonzero(out[0, 2] & JUMP) == 724 and not (out[0, 2][grown] & JUMP).any()
    # the core map is the ungrown ellipse (semi-axes 3, strict inside: 25 px of the 29-px core)
    assert np.count_nonzero(cores[0]) == 25 and (cores[0] == JUMP)[core].sum() == 25
    # halo only in group g
    assert not (out[0, 3:] & JUMP).any() and not (out[0, :2] & JUMP).any()


def test_no_core_no_snowball_but_core_still_grows():
    gdq, core = ring_case()
    gdq[0, 2:, core] = 0        # no saturation: the ring alone is not a snowball
    out, cores, n = sb.snowballs(gdq)
    assert n == 0 and np.array_equal(out, gdq) and not cores.any()
    gdq, core = ring_case()
    gdq[0, 2] &= ~np.uint8(JUMP)   # a lone core: grown and recorded, no halo
    out, cores, n = sb.snowballs(gdq)
    assert n == 0 and (out[0, 2] == SAT).sum() == 69 and cores.any()


def test_core_in_the_next_group_counts():
    gdq, core = ring_case()
    gdq[0, 2, core] = 0          # saturates only from group 3
    out, _, n = sb.snowballs(gdq)
    assert n == 1 and (out[0, 2] & JUMP).sum() > 600


def test_edge_rule_uses_rows_for_both_coordinates():
    # 40 rows × 200 columns: a core-less jump cluster at column 150 is "near the edge"
    gdq = np.zeros((1, 4, 40, 200), np.uint8)
    gdq[0, 2, 19:22, 149:152] = JUMP
    out, _, n = sb.snowballs(gdq, edge_size=10)
    assert n == 1 and (out[0, 2] & JUMP).sum() > 9
    # away from every edge (wide frame): not a snowball
    gdq = np.zeros((1, 4, 200, 200), np.uint8)
    gdq[0, 2, 99:102, 99:102] = JUMP
    assert sb.snowballs(gdq, edge_size=10)[2] == 0


def test_without_sat_required_every_jump_cluster_expands():
    gdq = np.zeros((1, 4, 60, 60), np.uint8)
    gdq[0, 2, 29:32, 29:32] = JUMP
    out, cores, n = sb.snowballs(gdq, sat_required_snowball=False)
    assert n == 1 and (out[0, 2] & JUMP).sum() > 9 and not cores.any()


def test_halo_skips_saturated_pixels_and_caps_the_axes():
    gdq, core = ring_case()
    gdq[0, 2, 50, 55] = SAT     # saturated before the pass (JUMP removed, as after clean-up)
    out, _, _ = sb.snowballs(gdq)
    assert out[0, 2, 50, 55] & JUMP == 0
    # a 6-px cap on the full axes: the halo stays inside the (saturated) core, nothing added
    gdq = ring_case()[0]
    out, _, n = sb.snowballs(gdq, max_extended_radius=3)
    assert n == 1 and np.count_nonzero(out[0, 2] & JUMP) == np.count_nonzero(gdq[0, 2] & JUMP)


def test_mask_next_integration():
    gdq = np.zeros((2, 5, 4, 4), np.uint8)
    gdq[1, 2, 0, 0] = SAT
    prev = np.zeros((2, 4, 4), np.uint8)
    prev[1, 0, 0] = JUMP
    out = sb.mask_next_integration(gdq, prev, 3)
    assert list(out[1, :, 0, 0]) == [0, JUMP, SAT | JUMP, 0, 0]
    assert not out[0].any()
    assert np.array_equal(sb.mask_next_integration(gdq, prev, 0), gdq)
    assert sb.n_next_groups(4000, 10.737) == 372


def test_kernel_module_has_no_dask_imports():
    import inspect
    src = inspect.getsource(sb)
    assert "import dask" not in src and "import xarray" not in src and "cv2" not in src


def random_cube(rng, nint, ng, ny, nx):
    """Snowball-like DQ: cores saturating from a group with JUMP rings, random CRs and DNU."""
    g = np.zeros((nint, ng, ny, nx), np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for i in range(nint):
        for _ in range(rng.integers(1, 4)):
            gg = rng.integers(1, ng)
            d = np.hypot(yy - rng.uniform(0, ny), xx - rng.uniform(0, nx))
            rc = rng.uniform(1, 5)
            g[i, gg][d < rc + rng.uniform(2, 10)] |= JUMP
            g[i, gg:][:, d < rc] = SAT
        g[i][rng.random((ng, ny, nx)) < 0.01] |= JUMP
        g[i][rng.random((ng, ny, nx)) < 0.002] |= DNU
    g[(g & (JUMP | DNU)) == (JUMP | DNU)] ^= JUMP
    g[(g & (JUMP | SAT)) == (JUMP | SAT)] ^= JUMP
    return g


VARIANTS = [
    {},
    {"sat_required_snowball": False},
    {"min_jump_area": 2.0, "min_sat_area": 3.0, "expand_factor": 1.5, "edge_size": 5},
    {"max_extended_radius": 5, "sat_expand": 0, "min_sat_radius_extend": 1.0},
]


@pytest.mark.parity
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_parity_with_stcal_flag_large_events(variant):
    """Bit-identical group DQ and count against stcal 1.20's flag_large_events (jwst 3.0)."""
    pytest.importorskip("jwst")
    from stcal.jump.jump import flag_large_events

    kw = VARIANTS[variant]
    full = dict(min_jump_area=5.0, min_sat_area=1.0, expand_factor=2.0, sat_required_snowball=True,
                min_sat_radius_extend=2.5, sat_expand=2, edge_size=25, max_extended_radius=200)
    full.update(kw)
    rng = np.random.default_rng(variant)
    total = 0
    for _ in range(5):
        gdq = random_cube(rng, 3, 5, 48, 64)
        # the settings JumpStep passes: sat_expand and max_extended_radius doubled
        jd = types.SimpleNamespace(
            fl_sat=SAT, fl_jump=JUMP, fl_dnu=DNU, min_jump_area=full["min_jump_area"],
            min_sat_area=full["min_sat_area"], expand_factor=full["expand_factor"],
            sat_required_snowball=full["sat_required_snowball"],
            min_sat_radius_extend=full["min_sat_radius_extend"], sat_expand=2 * full["sat_expand"],
            edge_size=full["edge_size"], max_extended_width=2 * full["max_extended_radius"],
            mask_persist_grps_next_int=True, persist_grps_flagged=3)
        official, count = flag_large_events(gdq.copy(), JUMP, SAT, jd)
        out, cores, n = sb.snowballs(gdq, **full)
        prev = np.concatenate([np.zeros_like(cores[:1]), cores[:-1]])
        out = sb.mask_next_integration(out, prev, 3)
        np.testing.assert_array_equal(out, official)
        assert n == count
        total += n
    assert total > 0
