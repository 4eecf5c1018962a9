"""Detector1 on a simulated NIRCam full-frame exposure, daskramp and the official pipeline side by side.

A ``nircam-full`` exposure (NRCA1, 2048 × 2048, 4 outputs, BRIGHT1, 10 groups; 10
integrations by default, 840 MB of uncal data) is simulated once and cached
(``benchmarks/_common.simulated``).  Prints wall time and peak memory (all processes
together, sampled) of

  * daskramp (``daskramp.run.run``: read the uncal FITS, all steps, Zarr + FITS products
    written) on a local cluster of worker processes;
  * the official jwst Detector1Pipeline in its own process (``maximum_cores`` settings);

and the ratios, and the agreement of the two rateints.  The official pipeline needs the
``parity`` extra (``pip install -e ".[parity]"``) and runs with the interpreter named by
``DASKRAMP_JWST_PYTHON`` (default: this one).  Usage::

    python benchmarks/nircam_full.py
    python benchmarks/nircam_full.py --nints 2 --no-jwst # a quick look
    python benchmarks/nircam_full.py --segments 2        # jwst one uncal segment at a time

With ``--segments N`` the exposure is simulated as N uncal segments, as MAST delivers large
exposures: daskramp reduces the stitched exposure in one run, the official pipeline each
segment in turn (its wall times add, its peak is the largest) — the only way it fits a
24 GiB machine at 10 integrations (the whole exposure in one process is killed at 22.9 GB).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gib, run_daskramp, run_official, simulated  # noqa: E402


def agreement(ours_zarr, official_fits) -> str:
    """Rateints agreement; ``official_fits`` is one file or the files of consecutive segments."""
    import numpy as np
    import xarray as xr
    from astropy.io import fits

    from daskramp.testing.parity import compare_arrays, compare_dq

    ours = xr.open_zarr(ours_zarr, consolidated=False)
    files = [official_fits] if isinstance(official_fits, (str, Path)) else list(official_fits)
    sci, dq = [], []
    for f in files:
        with fits.open(f) as h:
            sci.append(np.array(h["SCI"].data))
            dq.append(np.array(h["DQ"].data))
    d = compare_arrays(np.asarray(ours["data"].values), np.concatenate(sci))
    q = compare_dq(np.asarray(ours["dq"].values), np.concatenate(dq))
    return (f"rateints within 1e-4: {100 * d['fraction_close']:.4f} % of {d['finite_compared']} "
            f"finite values, NaN pattern identical {d['nan_pattern_identical']}, "
            f"max |diff| {d['max_abs_diff']:.2e} DN/s; DQ identical {100 * q['fraction_identical']:.4f} %")


def _official_segments(files, refs_dir, out, cores) -> dict:
    """The official pipeline on each uncal segment in turn (walls added, peak the largest)."""
    total = {"process_wall_s": 0.0, "peak_rss_bytes": 0, "step_s": {}, "rateints": []}
    for k, f in enumerate(files):
        rep = run_official(f, refs_dir, out / f"seg{k + 1}", cores, allow_failure=True)
        total["process_wall_s"] += rep["process_wall_s"]
        total["peak_rss_bytes"] = max(total["peak_rss_bytes"], rep["peak_rss_bytes"])
        if "failed" in rep:
            total["failed"] = rep["failed"]
            return total
        for step, t in rep["step_s"].items():
            total["step_s"][step] = total["step_s"].get(step, 0.0) + t
        total["rateints"].append(rep["rateints"])
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nints", type=int, default=10, help="integrations of the exposure")
    p.add_argument("--segments", type=int, default=1,
                   help="uncal segments (jwst reduces one at a time, daskramp the exposure)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="3GB", help="per daskramp worker")
    p.add_argument("--no-jwst", action="store_true", help="skip the official pipeline")
    p.add_argument("--maximum-cores", default="1", help="comma-separated jwst settings, e.g. 1,all")
    args = p.parse_args(argv)

    import psutil

    if args.nints % args.segments:
        p.error(f"--nints {args.nints} is not a multiple of --segments {args.segments}")
    # the simulator counts integrations per segment
    sim = simulated("nircam-full", args.nints // args.segments, segments=args.segments)
    size = sum(f.stat().st_size for f in sim.uncal_files)
    print(f"# input: {args.nints} × 10 × 2048 × 2048 in {len(sim.uncal_files)} segment(s) "
          f"({size / 1e6:.0f} MB uncal); "
          f"{gib(psutil.virtual_memory().available)} available now", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="daskramp-nircam-"))
    rows = []
    try:
        wall, peak, peak1, summary = run_daskramp(sim.uncal_files, sim.refs_dir, args.workers,
                                                  args.memory_limit, tmp / "dr")
        rows.append(("daskramp", f"{args.workers} workers × {args.memory_limit}", wall, peak))
        print(f"daskramp  wall {wall:7.1f} s  {size / 1e6 / wall:6.1f} MB/s  peak all processes "
              f"{gib(peak)}  largest process {gib(peak1)}  tile columns {summary.get('tile_columns')}"
              f"\n          memory plan: {summary.get('memory_plan')}", flush=True)
        official = None
        if not args.no_jwst:
            for cores in args.maximum_cores.split(","):
                rep = _official_segments(sim.uncal_files, sim.refs_dir, tmp / f"jwst{cores}", cores)
                if "failed" in rep:
                    # -9: killed, normally by the kernel's out-of-memory killer
                    print(f"jwst      FAILED (exit {rep['failed']}) after {rep['process_wall_s']:.1f} s, "
                          f"peak {gib(rep['peak_rss_bytes'])} before it died  maximum_cores={cores}",
                          flush=True)
                    rows.append(("jwst (failed)", f"maximum_cores={cores}", rep["process_wall_s"],
                                 rep["peak_rss_bytes"]))
                    continue
                official = official or rep
                label = f"maximum_cores={cores}" + (
                    f", {len(sim.uncal_files)} segments in turn" if len(sim.uncal_files) > 1 else "")
                rows.append(("jwst", label, rep["process_wall_s"], rep["peak_rss_bytes"]))
                steps = ", ".join(f"{k} {v:.0f}s" for k, v in rep["step_s"].items()
                                  if v > 1 and k != "Detector1Pipeline")
                print(f"jwst      wall {rep['process_wall_s']:7.1f} s  peak {gib(rep['peak_rss_bytes'])}"
                      f"  maximum_cores={cores}  ({steps})", flush=True)
            zarr = summary["outputs"].get("rateints_zarr")
            if zarr and official:
                print(agreement(zarr, official["rateints"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| run | setting | wall s | MB/s | peak RSS (all processes) |")
    print("|---|---|---|---|---|")
    for who, setting, wall, peak in rows:
        print(f"| {who} | {setting} | {wall:.1f} | {size / 1e6 / wall:.0f} | {gib(peak)} |")
    ours = [r for r in rows if r[0] == "daskramp"][0]
    theirs = [r for r in rows if r[0] == "jwst"]
    failed = [r for r in rows if r[0] == "jwst (failed)"]
    if failed and not theirs:
        print(f"\njwst did not finish; peak-memory ratio jwst / daskramp ≥ {failed[0][3] / ours[3]:.2f} "
              f"(jwst's peak when it died)")
    if theirs:
        best = min(theirs, key=lambda r: r[2])
        print(f"\nwall-time ratio jwst ({best[1]}) / daskramp = {best[2] / ours[2]:.2f}")
        print(f"peak-memory ratio jwst / daskramp = {best[3] / ours[3]:.2f}")


if __name__ == "__main__":
    main()
