"""``daskramp demo``: a small end-to-end run on an embedded default exposure.

Simulates a narrow NIRISS SOSS-like exposure (two uncal segments), converts it to a Zarr
store, runs Detector1 on a local process-based dask cluster, writes rate/rateints (Zarr and
FITS) and compares the recovered rates with the simulator's truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: the embedded default: a SOSS-like strip narrow enough to run in about a minute
DEMO = {"preset": "niriss-soss", "ngroups": 9, "nx": 256, "seed": 1}


def demo(outdir="daskramp-demo", *, nints: int = 12, segments: int = 2, cluster=None) -> dict:
    from .cluster import connect
    from .io import ingest
    from .run import run
    from .simulate import simulate

    outdir = Path(outdir)
    t0 = time.perf_counter()
    _fresh(outdir)
    sim = simulate(outdir / "uncal", nints=nints, segments=segments, **DEMO)
    with connect(cluster) as client:
        store = ingest(sim.uncal_files, outdir / "exposure.zarr", overwrite=True)
        summary = run([store], outdir / "products", refs=sim.refs_dir, client=client)
    summary = {"simulated_files": [str(f) for f in sim.uncal_files], "store": str(store), **summary}
    summary.update(compare_with_truth(summary["outputs"]["rateints_zarr"], sim.truth_path))
    summary["total_wall_s"] = time.perf_counter() - t0
    return summary


#: marks a directory as the demo's own, so that a later demo may clear it
MARKER = ".daskramp-demo"
#: what a demo writes in its directory (and removes before it runs again)
DEMO_PARTS = ("uncal", "exposure.zarr", "exposure.zarr.partial", "products")


def _fresh(outdir: Path) -> None:
    """Clear what an earlier demo wrote in ``outdir``, so every demo shows a run of its own.

    A directory that holds anything but an earlier demo's files is refused, never cleared.
    """
    import shutil

    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"demo directory {outdir} is a file; choose another --out")
    if outdir.is_dir() and any(outdir.iterdir()):
        if not (outdir / MARKER).exists():
            raise ValueError(f"demo directory {outdir} is not empty and was not written by daskramp "
                             f"demo; choose another --out (nothing was removed)")
        for name in DEMO_PARTS:
            p = outdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / MARKER).write_text("written by daskramp demo; cleared by the next demo\n")


def compare_with_truth(rateints_path, truth_path) -> dict:
    """Median bias and pull width of rateints against the simulated true rates (small data)."""
    import xarray as xr

    from .simulate import truth_rateints

    ri = xr.open_zarr(rateints_path, consolidated=False)
    truth = truth_rateints(truth_path)
    d = ri["data"].values  # the demo exposure is small by construction
    e = ri["err"].values
    t = np.asarray(truth)
    good = np.isfinite(d) & (e > 0) & (ri["dq"].values == 0)
    pull = (d[good] - t[good]) / e[good]
    return {
        "truth_pixels_compared": int(good.sum()),
        "median_rate_minus_truth_DN_s": float(np.median(d[good] - t[good])),
        "pull_std": float(np.std(pull)),
    }
