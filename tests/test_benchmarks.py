"""Smoke tests: every benchmark script runs at toy size and prints its figures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("simulate.py", ["--nints", "2", "--nx", "256"], "throughput"),
        ("ingest.py", ["--nints", "2"], "speed"),
        ("detector1.py", ["--nints", "3", "--no-jwst", "--no-double"], "daskramp  nints=   3"),
    ],
)
def test_benchmark_runs_at_toy_size(tmp_path, script, args, expect):
    env = {**os.environ, "DASKRAMP_BENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert expect in r.stdout, r.stdout[-2000:]


@pytest.mark.slow
def test_lightcurve_prints_the_ratio_of_each_variant(tmp_path):
    """benchmarks/lightcurve.py at toy size (8 integrations × 64 columns, one worker), variants
    (a) and (b): one table row each, with the scatter ratio, the depth and the wall time."""
    env = {**os.environ, "DASKRAMP_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    args = ["--nints", "8", "--nx", "64", "--amplitudes", "2", "--variants", "a,b", "--workers", "1",
            "--memory-limit", "2GB"]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lightcurve.py"), *args], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "# command: python benchmarks/lightcurve.py --nints 8" in r.stdout
    assert "# date: " in r.stdout
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| (") and len(cells) == 9:
            rows[cells[0]] = cells
    assert set(rows) == {"(a) default", "(b) clean_flicker_noise"}, r.stdout[-2000:]
    for cells in rows.values():
        assert cells[1] == "2"
        ratio = float(cells[3].strip("*"))
        assert 0 < ratio < 100
        assert 0 <= float(cells[7].rstrip(" %")) <= 100  # JUMP_DET
        assert float(cells[8]) > 0  # wall s


def test_lightcurve_table_marks_a_failed_variant_and_helpers():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import lightcurve as lc
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import numpy as np

    assert lc.parse_variants("a,clean_flicker_noise,c,d") == ["default", "clean_flicker_noise", "group_1overf", "jwst"]
    with pytest.raises(Exception, match="unknown variant"):
        lc.parse_variants("fft")
    assert lc.ranges(np.array([1, 1, 0, 0, 1], bool)) == "0:2,4:5"
    assert lc._yaml({"group_1overf": {"skip": False}}) == "steps:\n  group_1overf:\n    skip: false\n"
    rows = [{"variant": "default", "amplitude": 1.0, "rms_read": 3.2, "ratio": 1.5, "scatter_ppm": 150,
             "expected_ppm": 100, "diff_ppm": -5.0, "err_ppm": 10.0, "pull": -0.5, "jump_pct": 0.25,
             "wall": 9.0},
            {"variant": "group_1overf", "amplitude": 1.0, "rms_read": 3.2, "error": "unknown step"}]
    text = lc.table(rows, ["default", "group_1overf"], [1.0])
    assert "| (a) default | 1 | 3.2 | **1.50** | 150, 100 | -5 ± 10 | -0.5 | 0.25 % | 9.0 |" in text
    assert "| (c) group_1overf | 1 | 3.2 | error: unknown step |" in text


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_high_water_mark_is_at_least_the_largest_rss_seen():
    import numpy as np
    import psutil

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from out_of_core import high_water_marks
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    me = os.getpid()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB touched, then freed
    seen = psutil.Process(me).memory_info().rss
    del block
    hwm = high_water_marks({"me": me, "gone": 2**22 + 12345})
    assert hwm["gone"] is None
    # the kernel's RSS counters lag by up to 64 pages per thread (split RSS counting)
    assert hwm["me"] >= seen - 2**20
    assert seen > 64 * 2**20


@pytest.mark.parametrize("sizes, reps, expected", [
    ([1, 4, 16], {1: 3, 4: 3, 16: 1}, [(1, 0), (4, 0), (1, 1), (4, 1), (16, 0), (1, 2), (4, 2)]),
    ([1, 4], {1: 3, 4: 1}, [(1, 0), (1, 1), (4, 0), (1, 2)]),
    ([1, 16], {1: 1, 16: 1}, [(1, 0), (16, 0)]),
    ([4], {4: 1}, [(4, 0)]),
])
def test_out_of_core_spreads_the_small_sizes_around_the_largest(sizes, reps, expected):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from out_of_core import run_order
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    order = run_order(sizes, reps)
    assert order == expected
    assert sorted(order) == sorted((k, r) for k in sizes for r in range(reps[k]))


def test_process_sampler_keeps_the_most_tasks_the_scheduler_held():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from out_of_core import ProcessSampler
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    class Scheduler:
        tasks: dict = {}

    sched = Scheduler()
    sampler = ProcessSampler({}, scheduler=sched, interval=3600)
    for n in (3, 7, 2):
        sched.tasks = dict.fromkeys(range(n))
        sampler.sample()
    assert sampler.peak_tasks == 7
    assert ProcessSampler({}).peak_tasks == 0
