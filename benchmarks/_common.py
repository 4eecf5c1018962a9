"""Shared pieces of the benchmark scripts: cached simulated inputs, timing, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("DASKRAMP_BENCH_CACHE", Path.home() / ".cache" / "daskramp-bench"))


def simulated(preset: str, nints: int, segments: int = 1, ngroups: int | None = None, seed: int = 1, **kw):
    """A simulated exposure, generated once and cached (keyed by its parameters and the
    simulator's source, so that a cache made by another version is not used)."""
    from daskramp.simulate import simulate, source_digest

    key = (f"{preset}-n{nints}-s{segments}-g{ngroups}-seed{seed}" + "".join(f"-{k}{v}" for k, v in sorted(kw.items()))
           + f"-sim{source_digest()}")
    out = CACHE / key
    done = out / ".done"
    if done.exists():
        info = json.loads(done.read_text())
        from types import SimpleNamespace

        return SimpleNamespace(uncal_files=[Path(p) for p in info["uncal_files"]],
                               refs_dir=Path(info["refs_dir"]), truth_path=Path(info["truth_path"]))
    t0 = time.perf_counter()
    res = simulate(out, preset=preset, nints=nints, segments=segments, ngroups=ngroups, seed=seed, **kw)
    print(f"# simulated {key} in {time.perf_counter() - t0:.1f} s", flush=True)
    done.write_text(json.dumps({"uncal_files": [str(p) for p in res.uncal_files],
                                "refs_dir": str(res.refs_dir), "truth_path": str(res.truth_path)}))
    return res


def warm(files) -> None:
    """Read ``files`` once, untimed, so every timed run starts with its input in the page
    cache (runs side by side then differ by their work, not by what an earlier run evicted)."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(16 * 2**20):
                pass


def run_official(uncal, refs_dir, outdir, maximum_cores="1", python=None, *,
                 allow_failure: bool = False, steps: dict | None = None, local_crds: bool = False) -> dict:
    """The official pipeline in its own process; returns its JSON report plus peak tree RSS.

    With ``allow_failure`` a failed run (e.g. killed for lack of memory) is reported as
    ``{"failed": returncode, ...}`` instead of raising.  ``steps``: extra step parameters
    (``{step: {param: value}}``); ``local_crds``: a local CRDS cache serves the references
    to lookups no override reaches (``daskramp.testing.official --local-crds``)."""
    from daskramp.testing.memory import TreeMemorySampler

    python = python or os.environ.get("DASKRAMP_JWST_PYTHON", sys.executable)
    cmd = [python, "-m", "daskramp.testing.official", str(uncal), "--refs", str(refs_dir),
           "--out", str(outdir), "--maximum-cores", str(maximum_cores)]
    if steps:
        cmd += ["--steps-json", json.dumps(steps)]
    if local_crds:
        cmd.append("--local-crds")
    warm([uncal])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with TreeMemorySampler(proc.pid, interval=0.25) as mem:
        stdout, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode and allow_failure:
        return {"failed": proc.returncode, "process_wall_s": wall, "peak_rss_bytes": mem.peak}
    if proc.returncode:
        raise RuntimeError(f"official pipeline failed ({proc.returncode}): {' '.join(cmd)}")
    report = json.loads(stdout.strip().splitlines()[-1])
    report.update(process_wall_s=wall, peak_rss_bytes=mem.peak)
    return report


def run_daskramp(files, refs, workers, memory_limit, out, config=None):
    """``daskramp.run.run`` on a fresh local cluster (``config``: a workflow mapping, default
    none); (wall s, peak all processes, largest process, summary)."""
    from daskramp.cluster import ClusterProfile
    from daskramp.run import run
    from daskramp.testing.memory import TreeMemorySampler

    # None: daskramp's own default (as `daskramp run` without the option)
    given = {k: v for k, v in (("workers", workers), ("memory_limit", memory_limit)) if v is not None}
    prof = ClusterProfile(threads_per_worker=1, dashboard_address=None, **given)
    warm(files)
    with TreeMemorySampler(interval=0.1) as mem:
        t0 = time.perf_counter()
        summary = run(files, out, refs=refs, cluster=prof, quiet=True, config=config)
        wall = time.perf_counter() - t0
    return wall, mem.peak, mem.peak_per_process, summary


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def step_settings(parser, items) -> dict:
    """``{step: {param: value}}`` from ``--set STEP.PARAM=VALUE`` items (values read as YAML);
    a malformed item is the parser's error."""
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        step, _, param = key.partition(".")
        if not (step and param and value):
            parser.error(f"--set {item!r}: expected STEP.PARAM=VALUE")
        out.setdefault(step, {})[param] = yaml.safe_load(value)
    return out
