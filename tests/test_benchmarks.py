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
