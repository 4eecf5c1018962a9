"""Memory projection before a run: measured factors, the budget check, refusals, feedback."""

from __future__ import annotations

import io

import dask
import dask.array as da
import numpy as np
import pytest

from daskramp import dims
from daskramp.engine.plan import (
    CHAIN_FACTOR,
    INPUT_FACTOR,
    MEASURED_SCRATCH,
    TILE_ASSEMBLY_FACTOR,
    TILE_STEPS,
    MemoryBudgetError,
    check_memory,
    plan_chunking,
    step_factor,
    task_budget,
)
from daskramp.progress import RunMonitor, format_bytes, format_summary
from daskramp.steps import STEP_ORDER

MiB = 2**20
GiB = 2**30


def _exposure(nint=100, ngroups=10, ny=256, nx=2048, ichunk=10):
    """A lazy exposure of zeros (nothing is ever computed from it here)."""
    data = da.zeros((nint, ngroups, ny, nx), dtype=np.uint16, chunks=(ichunk, ngroups, ny, nx))
    attrs = {"NINTS": nint, "NGROUPS": ngroups, "NFRAMES": 1, "GROUPGAP": 0, "SUBSIZE1": nx,
             "SUBSIZE2": ny, "SUBSTRT1": 1, "SUBSTRT2": 1, "INSTRUME": "NIRISS", "DETECTOR": "NIS",
             "SUBARRAY": "SUBSTRIP256", "READPATT": "NISRAPID", "TGROUP": 5.49, "TFRAME": 5.49,
             "FRMDIVSR": 1, "GROUPDQ": 0, "EXP_TYPE": "NIS_SOSS", "NSAMPLES": 1}
    try:
        return dims.make_exposure(data, attrs)
    except dims.ExposureError as err:  # pragma: no cover - keyword set drifted
        pytest.skip(f"cannot build a synthetic exposure: {err}")


def _raising_scheduler(*a, **k):
    raise AssertionError("the memory check computed something")


def test_every_step_declares_a_factor():
    # each step has a measured scratch figure; the task also holds its input (data float32 +
    # groupdq uint8 = 1.25 bytes per float32 byte), and tiles are assembled from pieces
    assert set(MEASURED_SCRATCH) == set(STEP_ORDER)
    for s in STEP_ORDER:
        assert step_factor(s) >= INPUT_FACTOR
    for s in TILE_STEPS:
        assert step_factor(s) >= TILE_ASSEMBLY_FACTOR
    assert step_factor("ramp_fit") == pytest.approx(1.25 + 3.24)
    # the pipeline sizes tiles with at least the measured factor of the fused chain
    assert CHAIN_FACTOR >= max(step_factor(s) for s in TILE_STEPS)
    with pytest.raises(ValueError, match="no memory factor"):
        step_factor("picture_frame")


def test_task_budget_hand_numbers():
    # 60 % of a 2 GiB worker, one thread: 1288490188 bytes; two threads share it
    assert task_budget(2 * GiB) == int(2 * GiB * 0.6)
    assert task_budget(2 * GiB, threads_per_worker=2) == int(2 * GiB * 0.6 / 2)
    assert task_budget(None) is None


def test_tile_refusal_names_step_projection_limit_and_fit():
    ds = _exposure()
    # tile 100 ints × 10 groups × 256 rows × 256 cols × 4 B = 250 MiB of float32; ramp_fit
    # holds 4.49× that = 1122.5 MiB > 614.4 MiB (60 % of 1 GiB): refused.  The widest tile that
    # fits: floor(644245094 / (4.49 × 4 × 100 × 10 × 256)) = floor(140.12) = 140 columns
    with dask.config.set(scheduler=_raising_scheduler):
        with pytest.raises(MemoryBudgetError) as info:
            check_memory(ds, memory_limit=GiB, tile_columns=256, fused_chain=False)
    msg = str(info.value)
    assert isinstance(info.value, MemoryError)
    # jump (2.5 × 250 = 625 MiB) is over too; the most demanding step is named, so the
    # suggested width fits both
    assert msg.startswith("step ramp_fit:")
    assert "1,122 MiB" in msg or "1,123 MiB" in msg
    assert "614 MiB per task" in msg and "1,024 MiB worker memory limit" in msg
    assert "tile_columns=140 would fit" in msg
    # and 140 columns does fit
    plan = check_memory(ds, memory_limit=GiB, tile_columns=140, fused_chain=False)
    assert plan.peak <= plan.budget and plan.worst_step == "ramp_fit"


def test_pixel_local_refusal_comes_first():
    ds = dims.chunk(_exposure(), {dims.INTEGRATION: 20})
    # both the 20-integration blocks (dark_current 2.42 × 400 MiB = 968 MiB) and the 256-column
    # tiles (ramp_fit 1122.5 MiB) are over: the earlier layout is reported first, by its worst
    # step (dark_current), with floor(644245094 / (2.42 × 4 × 5242880)) = 12 integrations
    with pytest.raises(MemoryBudgetError, match="step dark_current: .*integration_chunk=12 would fit"):
        check_memory(ds, memory_limit=GiB, tile_columns=256, fused_chain=False)


def test_integration_chunk_refusal_and_fit():
    ds = dims.chunk(_exposure(), {dims.INTEGRATION: 20})
    # 20 ints × 10 × 256 × 2048 × 4 B = 400 MiB; dq_init (1.53×) = 612 MiB fits the
    # 614.4 MiB budget; saturation 2.36×, linearity 2.36×, dark_current (1.25 + 1.17 = 2.42×)
    # = 968 MiB do not.  The worst is named, with floor(644245094 / (2.42 × 4 × 5242880))
    # = floor(12.69) = 12 integrations
    with pytest.raises(MemoryBudgetError) as info:
        check_memory(ds, memory_limit=GiB, tile_columns=16, fused_chain=False)
    msg = str(info.value)
    assert msg.startswith("step dark_current:") and "968 MiB" in msg
    assert "integration_chunk=12 would fit" in msg
    ok = check_memory(dims.chunk(ds, {dims.INTEGRATION: 12}), memory_limit=GiB, tile_columns=16,
                      fused_chain=False)
    assert ok.peak <= ok.budget


def test_skipped_steps_are_not_checked():
    ds = dims.chunk(_exposure(), {dims.INTEGRATION: 20})
    steps = {s: {"skip": True} for s in ("saturation", "superbias", "refpix", "linearity",
                                         "dark_current")}
    # only dq_init (612 MiB) remains among the pixel-local steps: it fits
    plan = check_memory(ds, memory_limit=GiB, tile_columns=16, steps=steps, fused_chain=False)
    assert "saturation" not in plan.per_step and plan.per_step["dq_init"] <= plan.budget


def test_fused_chain_projection():
    ds = _exposure()
    # the whole chain fused on one 64-column tile: 7.8 × 100 × 10 × 256 × 64 × 4 B = 487.5 MiB
    # fits 614.4 MiB; 128 columns (975 MiB) do not.  Widest: floor(644245094 / (7.8 × 4 × 100 ×
    # 10 × 256)) = floor(80.66) = 80 columns
    plan = check_memory(ds, memory_limit=GiB, tile_columns=64, steps={})
    assert plan.worst_step == "fused tile chain" and plan.peak == int(7.8 * 4 * 100 * 10 * 256 * 64)
    with pytest.raises(MemoryBudgetError, match=r"step fused tile chain: .* 975 MiB .*tile_columns=80 would fit"):
        check_memory(ds, memory_limit=GiB, tile_columns=128)


def test_frame_pass_projection_and_refusal():
    """A step that needs whole frames (clean_flicker_noise) adds its frame pass: whole frames
    of FRAME_BLOCK_BYTES // (4 × 10 × 256 × 2048 = 20 MiB) = 3 integrations, × 2.0."""
    ds = _exposure()
    steps = {"clean_flicker_noise": {"skip": False}}
    plan = check_memory(ds, memory_limit=4 * GiB, tile_columns=64, steps=steps)
    assert plan.per_step["clean_flicker_noise frame pass"] == int(2.0 * 4 * 3 * 10 * 256 * 2048)
    assert "clean_flicker_noise frame pass" not in check_memory(ds, memory_limit=4 * GiB, tile_columns=64,
                                                                 steps={}).per_step
    # fused tile chain of 1 column: 7.8 MiB, frame pass 120 MiB > 0.6 × 150 MiB
    with pytest.raises(MemoryBudgetError, match=r"clean_flicker_noise frame pass: .*3 integration.* 120 MiB"):
        check_memory(ds, memory_limit=150 * MiB, tile_columns=1, steps=steps, integration_chunk=1)


def test_plan_chunking_default_fits_explicit_is_refused():
    ds = _exposure(ichunk=50)  # 50-integration chunks (1000 MiB float32): too big for 1 GiB
    with dask.config.set(scheduler=_raising_scheduler):
        out, cols, plan = plan_chunking(ds, memory_limit=GiB)
    # chosen automatically: chunks shrink to what the worst pixel-local step fits
    # (dark_current, 2.42×: floor(644245094 / (2.42 × 4 × 5242880)) = 12) and the tile width
    # to what the fused chain fits (80, rounded down to a power of two dividing 2048: 64)
    assert max(out["data"].chunks[0]) == 12
    assert cols == 64 and plan.peak <= plan.budget
    with pytest.raises(MemoryBudgetError, match="integration_chunk=12 would fit"):
        plan_chunking(ds, memory_limit=GiB, integration_chunk=50)
    # 512-column tiles: the chain (7.8 × 500 MiB) is over; the suggestion fits every step on
    # the same tile: 80 columns
    with pytest.raises(MemoryBudgetError, match="step fused tile chain: .*tile_columns=80 would fit"):
        plan_chunking(ds, memory_limit=GiB, tile_columns=512)
    # no limit, no check
    _, cols, plan = plan_chunking(ds, memory_limit=None)
    assert cols == 2048 and plan.budget is None


def test_measure_call_sees_numpy_allocations():
    # a 64 MiB scratch array inside the call is seen (tracemalloc and RSS agree to ~10 %)
    def work():
        a = np.ones(16 * MiB, dtype=np.float32)
        return float(a.sum())

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from memory_factors import _measure_call
    finally:
        sys.path.pop(0)
    peak = _measure_call(work)
    assert 60 * MiB < peak < 200 * MiB


class _FakeClient:
    def __init__(self):
        self.calls = 0

    def run_on_scheduler(self, fn, **kw):
        if "since" not in kw:
            return 0.0
        self.calls += 1
        return {"memory": 3 * self.calls, "released": 1, "processing": 2, "waiting": 10}

    def scheduler_info(self, n_workers=-1):
        return {"workers": {"tcp://a": {"name": "w0", "metrics": {"memory": 100 * MiB + self.calls}},
                            "tcp://b": {"name": "w1", "metrics": {"memory": 50 * MiB}}}}


def test_monitor_non_tty_lines_and_peaks():
    out = io.StringIO()  # not a terminal: plain lines, no carriage returns
    with RunMonitor(_FakeClient(), stream=out, interval=0.01, log_every=3600) as mon:
        pass
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    # final poll: calls = 2 → done = 6 memory + 1 released of 6 + 1 + 2 + 10 = 19 tasks
    assert text.count("\n") == 1
    assert f"{mon.done}/{mon.total} tasks" in text
    assert mon.peak_memory["w1"] == 50 * MiB and mon.peak_memory["w0"] >= 100 * MiB
    s = format_summary({"uncal_MB": 10.0, "wall_s": 2.0, "throughput_MB_s": 5.0,
                        "peak_memory_per_worker": mon.peak_memory})
    assert "throughput (MB/s)" in s and "w1" in s and "50.00 MiB" in s
    assert format_bytes(3 * GiB) == "3.00 GiB"


def test_large_workers_get_full_speed_tiles_not_the_largest():
    """Tiles are sized for FULL_SPEED_TASK_BYTES when the workers have more memory: a 12 GB
    worker gets the tiles of a ~2 GB one; explicit sizes are not capped, and a worker with
    less memory still gets tiles that fit it."""
    from daskramp.engine.plan import FULL_SPEED_TASK_BYTES, plan_tiles, sizing_budget

    ds = _exposure(nint=158, ngroups=9)
    per_column = CHAIN_FACTOR * 4 * 158 * 9 * 256  # ≈ 11.4 MB
    big, cap = 12 * GiB, FULL_SPEED_TASK_BYTES
    cols_big = plan_tiles(ds, memory_limit=task_budget(big))
    assert cols_big == plan_tiles(ds, memory_limit=cap)
    assert cols_big * per_column <= cap < 2 * 2048 * per_column
    # hand numbers: 1 GiB / 11.4 MB = 94 columns → the power of two 64
    assert int(cap // per_column) == 94 and cols_big == 64
    # a smaller worker: its own budget, below the cap
    assert plan_tiles(ds, memory_limit=task_budget(1 * GiB)) == 32
    assert sizing_budget(None) is None and sizing_budget(10) == 10
    # explicit widths stay as asked, and the memory check still uses the whole budget
    assert plan_tiles(ds, memory_limit=task_budget(big), tile_columns=512) == 512
    _, cols, plan = plan_chunking(ds, memory_limit=big, tile_columns=512)
    assert cols == 512 and plan.budget == task_budget(big)
    # the default plan on a 12 GB worker: the same 64-column tiles
    assert plan_chunking(ds, memory_limit=big)[1] == 64
