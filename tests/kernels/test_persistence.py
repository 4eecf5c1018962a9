"""persistence kernel (spec 12 §4): which groups get which bit, and how windows carry on.

Times are whole seconds here (exact in float64), so every window end is hand-computable:
integration start ``T``, group ``g`` read at ``T + (g + 1)·TGROUP``, a window opened at
``now`` ends at ``now + persistence_time`` and covers the groups read up to and including it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.kernels import persistence as K
from daskramp.testing.ramps import chunk_sizes

SAT, PERS, DNU, JUMP = dq.SATURATED, dq.PERSISTENCE, dq.DO_NOT_USE, dq.JUMP_DET
TG = 10.0  # s per group


def one_pixel(sat_groups, nint=1, ngroup=6, *, starts=(1000.0,), data=None, **kw):
    """Flags of one pixel: SATURATED in ``sat_groups`` ((integration, group) pairs or groups of
    integration 0); returns the PERSISTENCE bits as 0/1 per (integration, group)."""
    gdq = np.zeros((nint, ngroup, 1, 1), np.uint8)
    for s in sat_groups:
        i, g = s if isinstance(s, tuple) else (0, s)
        gdq[i, g] |= SAT
    values = np.zeros(gdq.shape, np.float32) if data is None else np.asarray(data, np.float32).reshape(gdq.shape)
    kw.setdefault("group_time", TG)
    out, _ = K.flag_persistence(values, gdq, np.asarray(starts, float), **kw)
    assert ((out & ~np.uint8(PERS | DNU)) == gdq).all()  # other bits kept
    return ((out[:, :, 0, 0] & PERS) != 0).astype(int)


def test_saturation_opens_a_window_of_persistence_time():
    # SATURATED from group 1 (read at 1020 s): window ends at 1045 → groups 1–3 (1020–1040)
    flags = one_pixel([1, 2, 3, 4, 5], persistence_time=25)
    np.testing.assert_array_equal(flags, [[0, 1, 1, 1, 0, 0]])
    # the saturated groups after the first do not extend the window
    np.testing.assert_array_equal(one_pixel([1, 2, 3, 4, 5], persistence_time=5), [[0, 1, 0, 0, 0, 0]])


def test_window_carries_into_the_next_integration_and_its_end_is_inclusive():
    # int 0: SATURATED at group 4 (1050 s) → window to 1075; int 1 starts at 1045, its groups
    # are read at 1055, 1065, 1075 (= the end: still inside), 1085 (outside)
    flags = one_pixel([(0, 4), (0, 5)], nint=2, starts=(1000.0, 1045.0), persistence_time=25)
    np.testing.assert_array_equal(flags, [[0, 0, 0, 0, 1, 1], [1, 1, 1, 0, 0, 0]])
    # closed at the start of a segment (what the official pipeline does for each file)
    flags = one_pixel([(0, 4), (0, 5)], nint=2, starts=(1000.0, 1045.0), persistence_time=25,
                      reset=np.array([True, True]))
    np.testing.assert_array_equal(flags, [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])


def test_first_saturation_of_each_integration_reopens_the_window():
    # int 1: its own first SATURATED group (2, at 1075 s) moves the end to 1100
    flags = one_pixel([(0, 4), (0, 5), (1, 2), (1, 3), (1, 4), (1, 5)], nint=2,
                      starts=(1000.0, 1045.0), persistence_time=25)
    np.testing.assert_array_equal(flags, [[0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0]])


def test_the_count_rule_not_the_onset_rule():
    # the official test is "exactly one SATURATED group so far in the integration": a
    # SATURATED group not followed by others reopens the window at every later group
    np.testing.assert_array_equal(one_pixel([1], persistence_time=5), [[0, 1, 1, 1, 1, 1]])
    # a second one ends that: groups 1–2 reopen it, group 3 is the second SATURATED one
    np.testing.assert_array_equal(one_pixel([1, 3], persistence_time=5), [[0, 1, 1, 0, 0, 0]])


def test_dn_threshold_opens_a_window_only_where_none_is_open():
    data = [0, 0, 600, 600, 0, 600]
    # group 2 (1030) opens to 1045; group 3 is above again but a window is open (no
    # extension), group 4 (1050) is outside; group 5 (1060) opens a new one
    flags = one_pixel([], data=data, persistence_time=15, dn_threshold=500.0)
    np.testing.assert_array_equal(flags, [[0, 0, 1, 1, 0, 1]])
    # strictly above
    assert not one_pixel([], data=[500] * 6, persistence_time=15, dn_threshold=500.0).any()
    # without a threshold the data are not read
    assert not one_pixel([], data=[1e6] * 6, persistence_time=15).any()


def test_dn_threshold_is_compared_in_float32():
    # 0.1 rounds to the float32 value of the data: not above it (in float64 it would be)
    data = [np.float32(0.1)] * 6
    assert not one_pixel([], data=data, persistence_time=15, dn_threshold=0.1).any()
    assert one_pixel([], data=data, persistence_time=15, dn_threshold=0.0999999).all()
    assert not one_pixel([], data=[3e38] * 6, persistence_time=15, dn_threshold=1e40).any()


def test_persistence_dnu_adds_do_not_use():
    gdq = np.zeros((1, 4, 1, 2), np.uint8)
    gdq[0, 1:, 0, 0] = SAT
    gdq[0, 2, 0, 1] = JUMP
    data = np.zeros(gdq.shape, np.float32)
    out, _ = K.flag_persistence(data, gdq, np.array([0.5]), group_time=TG, persistence_time=15,
                                persistence_dnu=True)
    np.testing.assert_array_equal(out[0, :, 0, 0], [0, SAT | PERS | DNU, SAT | PERS | DNU, SAT])
    np.testing.assert_array_equal(out[0, :, 0, 1], [0, 0, JUMP, 0])
    assert (gdq[0, 1:, 0, 0] == SAT).all()  # input untouched


def test_a_window_ending_after_this_groups_window_is_closed():
    # a window end later than now + persistence_time cannot have been opened by an earlier
    # group ("backwards flagging"): the official step closes it
    gdq = np.zeros((1, 3, 1, 2), np.uint8)
    data = np.zeros(gdq.shape, np.float32)
    start = np.array([1000.0])
    windows = np.array([[1030.0, 1200.0]])  # pixel 0 plausible, pixel 1 not
    out, after = K.flag_persistence(data, gdq, start, group_time=TG, persistence_time=25,
                                    windows=windows)
    np.testing.assert_array_equal(out[0, :, 0, 0], [PERS, PERS, PERS])
    np.testing.assert_array_equal(out[0, :, 0, 1], [0, 0, 0])
    np.testing.assert_array_equal(after, [[1030.0, 0.0]])  # still open at the last group (1030)
    np.testing.assert_array_equal(windows, [[1030.0, 1200.0]])  # not written into


def test_group_times_accumulate_as_the_official_step():
    # the official clock adds TGROUP group by group to a Unix-epoch-sized start; here the
    # window opened at group 0 ends exactly on group 40's time (41 · 0.2 s = 0.2 s + 8 s),
    # and the rounding of the running sum puts group 40 just outside (start + 41·TGROUP,
    # rounded once, would put it inside)
    start, tg, pt, n = 1660827702.5938203, 0.2, 8, 42
    now, summed = start, []
    for _ in range(n):
        now = now + tg
        summed.append(now)
    inside = [t <= summed[0] + pt for t in summed]
    product = [start + (g + 1) * tg <= start + tg + pt for g in range(n)]
    assert inside.index(False) == 40 and product.index(False) == 41
    gdq = np.full((1, n, 1, 1), SAT, np.uint8)
    out, _ = K.flag_persistence(np.zeros(gdq.shape, np.float32), gdq, np.array([start]),
                                group_time=tg, persistence_time=pt)
    np.testing.assert_array_equal((out[0, :, 0, 0] & PERS) != 0, inside)


def test_shape_checks():
    gdq = np.zeros((2, 3, 1, 1), np.uint8)
    with pytest.raises(ValueError, match="int_start has 1 values for 2 integrations"):
        K.flag_persistence(gdq.astype(np.float32), gdq, np.array([0.0]), group_time=1, persistence_time=1)
    with pytest.raises(ValueError, match="windows has shape"):
        K.flag_persistence(gdq.astype(np.float32), gdq, np.zeros(2), group_time=1, persistence_time=1,
                           windows=np.zeros((2, 2)))


def _random_case(seed, nint, ngroup=5, ny=3, nx=4):
    rng = np.random.default_rng(seed)
    gdq = np.zeros((nint, ngroup, ny, nx), np.uint8)
    onset = rng.integers(0, ngroup + 3, (nint, ny, nx))  # ≥ ngroup: never saturates
    gdq[np.arange(ngroup)[None, :, None, None] >= onset[:, None]] |= SAT
    gdq[rng.random(gdq.shape) < 0.1] |= JUMP
    data = rng.normal(1000, 300, gdq.shape).astype(np.float32)
    starts = 1.6e9 + np.cumsum(rng.uniform(0, 2 * ngroup * TG, nint))
    return data, gdq, starts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), data=st.data())
def test_integration_chunks_carrying_the_windows_equal_the_whole(seed, data):
    nint = 7
    values, gdq, starts = _random_case(seed, nint)
    kw = dict(group_time=TG, persistence_time=int(data.draw(st.sampled_from([5, 25, 60]))),
              dn_threshold=data.draw(st.sampled_from([None, 1200.0])),
              persistence_dnu=data.draw(st.booleans()))
    whole, end = K.flag_persistence(values, gdq, starts, **kw)
    assert (whole & PERS).any()
    sizes = data.draw(chunk_sizes(nint))
    parts, windows, a = [], None, 0
    for n in sizes:
        part, windows = K.flag_persistence(values[a:a + n], gdq[a:a + n], starts[a:a + n],
                                           windows=windows, **kw)
        parts.append(part)
        a += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(windows, end)


# ------------------------------------------------------------------ the official kernel


def _official(data, gdq, starts, *, tg, pt, thr, dnu, windows=None):
    """jwst 3.0's persistence DataSet on a RampModel whose INT_TIMES give ``starts``."""
    from jwst.persistence import persistence as official
    from stdatamodels.jwst import datamodels

    m = datamodels.RampModel(data=data.copy(), groupdq=gdq.copy())
    m.meta.exposure.group_time = tg
    m.meta.exposure.start_time = float(starts[0] / 86400.0 + 40587.0)
    m.meta.exposure.integration_time = tg * gdq.shape[1]
    mjd = starts / 86400.0 + 40587.0
    cols = ("int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC", "int_start_BJD_TDB",
            "int_mid_BJD_TDB", "int_end_BJD_TDB")
    table = np.zeros(len(mjd), dtype=[("integration_number", "i4")] + [(c, "f8") for c in cols])
    table["integration_number"] = np.arange(1, len(mjd) + 1)
    for c in cols:
        table[c] = mjd
    m.int_times = table
    pa = np.zeros(gdq.shape[2:]) if windows is None else windows.copy()
    ds = official.DataSet(m, None, pt, thr, pa, dnu)
    out, _ = ds.do_all()
    # the MJD round trip is the official conversion: compare on the times it used
    used = (mjd - 40587.0) * 86400.0
    return out.groupdq, ds.persistence_array, used


@pytest.mark.parity
def test_random_ramps_equal_the_official_kernel():
    pytest.importorskip("jwst")
    rng = np.random.default_rng(5)
    flagged = 0
    for seed in range(40):
        nint = int(rng.integers(1, 5))
        values, gdq, starts = _random_case(seed, nint, ngroup=int(rng.integers(2, 7)))
        if seed % 3 == 0:  # saturation that stops: the count rule
            gdq[:, -1] &= ~np.uint8(SAT)
        tg = float(rng.choice([TG, 5.494, 0.34061]))
        kw = dict(tg=tg, pt=int(rng.choice([1, 5, 11, 25, 60])),
                  thr=None if seed % 2 else float(rng.choice([1000.0, 1200.5])), dnu=bool(seed % 4 == 1))
        theirs, their_windows, used = _official(values, gdq, starts, **kw)
        ours, windows = K.flag_persistence(values, gdq, used, group_time=tg, persistence_time=kw["pt"],
                                           dn_threshold=kw["thr"], persistence_dnu=kw["dnu"])
        np.testing.assert_array_equal(ours, theirs, err_msg=str(seed))
        np.testing.assert_array_equal(windows, their_windows, err_msg=str(seed))
        flagged += int((ours & PERS).any())
    assert flagged >= 30
