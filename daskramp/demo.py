"""``daskramp demo``: a small end-to-end run on an embedded default exposure.

Simulates a narrow NIRISS SOSS-like exposure (two uncal segments), converts it to a Zarr
store, runs Detector1 on a local process-based dask cluster, writes rate/rateints (Zarr and
FITS) and compares the recovered rates with the simulator's truth.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from .cluster import connect
from .io import ingest
from .io.store import consolidate
from .progress import RunMonitor, log_to, logging_configured
from .run import run
from .simulate import simulate, truth_rateints

#: the embedded default: a SOSS-like strip narrow enough to run in about a minute
DEMO = {"preset": "niriss-soss", "ngroups": 9, "nx": 256, "seed": 1}

logger = logging.getLogger("daskramp.demo")


def demo(outdir="daskramp-demo", *, nints: int = 12, segments: int = 2, cluster=None,
         progress: bool = True) -> dict:
    """Simulate, convert, run and compare with the truth in ``outdir``; the summary of
    :func:`daskramp.run.run` plus the files written and the comparison with the truth.

    ``progress``: the progress bars (and, when the application set up no logging, the log)
    on stderr.  Every step is logged to the ``daskramp.demo`` logger as it starts."""
    outdir = Path(outdir)
    t0 = time.perf_counter()
    with log_to(stderr=progress and not logging_configured()):
        _fresh(outdir)
        logger.info(f"1/4 simulating a NIRISS SOSS exposure of {segments} uncal segment(s) × {nints} "
                    f"integrations × {DEMO['ngroups']} groups × 256 × {DEMO['nx']} pixels, with "
                    f"reference files and the true rates, in {outdir / 'uncal'}")
        sim = simulate(outdir / "uncal", nints=nints, segments=segments, **DEMO)
        consolidate(sim.truth_path)
        logger.info(f"2/4 starting a local dask cluster (the first demo also compiles the numba "
                    f"kernels in each worker, cached for later runs) [{time.perf_counter() - t0:.0f} s]")
        with connect(cluster, quiet=not progress) as client:
            logger.info(f"3/4 converting the uncal segments to the Zarr store {outdir / 'exposure.zarr'} "
                        f"[{time.perf_counter() - t0:.0f} s]")
            with RunMonitor(client, stream=sys.stderr if progress else None, label="ingest"):
                store = ingest(sim.uncal_files, outdir / "exposure.zarr", overwrite=True)
            logger.info(f"4/4 running Detector1 on the store into {outdir / 'products'} "
                        f"[{time.perf_counter() - t0:.0f} s]")
            summary = run([store], outdir / "products", refs=sim.refs_dir, client=client,
                          progress=progress)
        logger.info("comparing the rates with the simulated truth")
        summary = {"simulated_files": [str(f) for f in sim.uncal_files], "store": str(store), **summary}
        summary.update(compare_with_truth(summary["outputs"]["rateints_zarr"], sim.truth_path))
        summary["total_wall_s"] = time.perf_counter() - t0
        logger.info(f"demo done in {summary['total_wall_s']:.0f} s")
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

    ri = xr.open_zarr(rateints_path)
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
