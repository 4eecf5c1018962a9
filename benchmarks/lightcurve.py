"""White-light noise and transit depth under 1/f noise: Detector1 variants on one simulated SOSS exposure.

For each 1/f amplitude, one NIRISS SOSS exposure with a 2 % transit is simulated (cached, see
``_common.simulated``) and reduced by each variant:

  (a) default              ``daskramp run`` with the default step parameters (the official ones)
  (b) clean_flicker_noise  ``daskramp run`` with ``steps: {clean_flicker_noise: {skip: false}}``
  (c) group_1overf         ``daskramp run`` with ``steps: {group_1overf: {skip: false}}`` (the
                           group-level 1/f step between dark_current and jump)
  (d) jwst                 the official Detector1Pipeline with its defaults (``parity`` extra;
                           in a process of its own, ``DASKRAMP_JWST_PYTHON``)

Each ``daskramp run`` is the command a user types, in a process of its own that starts its own
local cluster (``--workers``, 1 thread each, ``--memory-limit``).  The amplitude is the
simulator's ``one_over_f_amplitude`` a (DN; one-sided PSD a²/f per output, sampled per
detector line); the table also gives the rms of the 1/f term in one read of one pixel,
a·sqrt(Σ_{k≤n} 1/k) over the n line samples of an integration (≈ 3.2·a for SOSS).

Every variant's ``rateints`` (and ``rate``) FITS products go through the same analysis, made of
:mod:`daskramp.analysis` with the conventions of ``daskramp report``: order 1 traced on the
rate image (``find_orders``, ``trace_orders``), one aperture (``report.default_radius``:
±15 px for SOSS) along that trace for every integration, the white light of the columns finite
in every integration (``white_light``, ``filter_size=1``); out of transit = the integrations
the simulator left at relative flux 1 (printed as ``--oot`` ranges: ``daskramp report
--oot …`` on a daskramp variant's products, kept with ``--keep``, prints the same ratio).
Printed per variant and amplitude:

* scatter / ERR-predicted: :func:`daskramp.analysis.lightcurve.scatter_ratio` of the white
  light out of transit (standard deviation over the median error propagated from ERR, which
  holds photon and read noise only);
* depth − truth: ``fit_transit`` with the simulated mid-time, duration and ingress (depth and
  baseline free), minus the depth the same aperture, columns and fit measure on the
  simulator's noiseless rate cube (truth ``rate``: the injected depth diluted by the
  background and the other orders in the aperture), in ppm and in units of its 1σ error (the
  fit's error × √(χ²/dof) when that exceeds 1, like the report's fit);
* JUMP_DET: the fraction of rateints pixel-integrations that jump flagged (1/f noise that
  reaches jump makes false jumps);
* wall time: the ``daskramp run`` command from start to finish (process start, local cluster,
  every step, Zarr and FITS products), or the jwst process.

With ``--integration-scale`` the daskramp variants run jump with ``integration_scale`` (each
integration's relative flux from the uncal ramps): the official jump compares every group
difference with statistics pooled over the segment's integrations, so a transit's bright pixels
look low and their in-transit fluctuations are flagged more often, which makes the depth
≈ 0.2 % shallow whatever the 1/f correction; ``--set STEP.PARAM=VALUE`` gives a parameter to
every variant (jwst too).

No target is asserted; the exit status is non-zero only when a variant fails (e.g. a step that
does not exist yet).  Usage::

    python benchmarks/lightcurve.py                                  # 60 × 9 × 256 × 256, a = 1, 3, 6
    python benchmarks/lightcurve.py --amplitudes 3 --nints 158 --nx 2048   # one full SOSS segment
    python benchmarks/lightcurve.py --variants default,clean_flicker_noise --keep products/
    python benchmarks/lightcurve.py --set jump.only_use_ints=false   # every variant, jwst too
    python benchmarks/lightcurve.py --integration-scale    # daskramp: jump against each integration's level
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_official, simulated, step_settings, warm  # noqa: E402

PRESET = "niriss-soss"
#: variant → (label, step parameters of ``daskramp run``; None = the official pipeline)
VARIANTS = {
    "default": ("(a) default", {}),
    "clean_flicker_noise": ("(b) clean_flicker_noise", {"clean_flicker_noise": {"skip": False}}),
    "group_1overf": ("(c) group_1overf", {"group_1overf": {"skip": False}}),
    "jwst": ("(d) jwst default", None),
}
LETTERS = dict(zip("abcd", VARIANTS))


def parse_variants(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        name = LETTERS.get(part.strip(), part.strip())
        if name not in VARIANTS:
            raise argparse.ArgumentTypeError(f"unknown variant {part!r}; known: {', '.join(VARIANTS)} (or a–d)")
        out.append(name)
    return out


def parse_amplitudes(text: str) -> list[float]:
    return [float(a) for a in text.split(",") if a.strip()]


# ---------------------------------------------------------------- the runs


def _yaml(steps: dict) -> str:
    lines = ["steps:"]
    for step, params in steps.items():
        lines.append(f"  {step}:")
        lines += [f"    {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]
    return "\n".join(lines) + "\n"


def run_daskramp(sim, steps: dict, out: Path, *, workers: int, memory_limit: str) -> tuple[float, Path]:
    """``daskramp run`` in a process of its own; (wall s, products directory)."""
    cmd = [sys.executable, "-m", "daskramp.cli", "run", *map(str, sim.uncal_files), "--out", str(out / "products"),
           "--refs", str(sim.refs_dir), "--workers", str(workers), "--threads-per-worker", "1",
           "--memory-limit", memory_limit, "--quiet"]
    if steps:
        out.mkdir(parents=True, exist_ok=True)
        (out / "steps.yaml").write_text(_yaml(steps))
        cmd += ["--config", str(out / "steps.yaml")]
    warm(sim.uncal_files)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
        raise RuntimeError(f"daskramp run exited {r.returncode}: {lines[-1] if lines else '(no message)'}")
    return wall, out / "products"


def run_jwst(sim, out: Path, *, maximum_cores: str, steps: dict | None = None) -> tuple[float, Path]:
    if "DASKRAMP_JWST_PYTHON" not in os.environ and importlib.util.find_spec("jwst") is None:
        raise RuntimeError("jwst is not installed (pip install -e '.[parity]', or set DASKRAMP_JWST_PYTHON)")
    (uncal,) = sim.uncal_files
    rep = run_official(uncal, sim.refs_dir, out / "products", maximum_cores, steps=steps or None)
    return rep["process_wall_s"], out / "products"


# ---------------------------------------------------------------- the analysis


def rms_per_read(amplitude: float, truth) -> float:
    """rms (DN) of the simulated 1/f term in one read: a·sqrt(H_n), n line samples per integration."""
    n = int(round(float(truth["group_time"].values[-1]) / float(truth.attrs["line_period_s"])))
    return float(amplitude * np.sqrt(np.sum(1.0 / np.arange(1, n + 1))))


def out_of_transit(truth) -> np.ndarray:
    return np.asarray(truth["relative_flux"].values) == 1.0


def ranges(mask: np.ndarray) -> str:
    """``"0:17,43:60"`` for a boolean mask (``daskramp report --oot``)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return ",".join(f"{a}:{b}" for a, b in zip(edges[::2], edges[1::2]))


def _read(path: Path, names) -> dict:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return {n: np.asarray(hdul[n].data, np.float32) for n in names}


def fits_dq(path: Path) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return np.asarray(hdul["DQ"].data)


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} files {pattern} in the products (expected one)")
    return found[0]


def measure(products: Path, truth) -> dict:
    """White-light scatter ratio and fitted depth of one variant's FITS products."""
    import xarray as xr

    from daskramp import analysis as A
    from daskramp import dq
    from daskramp.dims import INTEGRATION, X, Y
    from daskramp.report import default_radius

    ri_path, rate_path = (_one(products, pattern) for pattern in ("*_rateints.fits", "*_rate.fits"))
    x = np.asarray(truth[X].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN reference pixels
        img = _read(rate_path, ["SCI"])["SCI"].astype(np.float64)
        orders = A.find_orders(img, x)
        if not orders:
            raise RuntimeError(f"no spectral trace found in {rate_path.name}")
        traces = A.trace_orders(xr.DataArray(img, dims=(Y, X)), orders).compute()
        radius = default_radius(img, orders)
        cube = _read(ri_path, ["SCI", "ERR"])
        jumps = float(np.mean((fits_dq(ri_path) & dq.JUMP_DET) > 0))
        dims = (INTEGRATION, Y, X)
        ri = xr.Dataset({"data": (dims, cube["SCI"]), "err": (dims, cube["ERR"])}, coords={X: x})
        trace1 = traces["trace"].sel(order=1, drop=True).assign_coords({X: x})
        spec = A.extract_aperture(ri, trace1, radius=radius)
        cols = np.flatnonzero(np.isfinite(spec["flux"].values).all(axis=0))
        spec = spec.isel({X: cols})
        oot = out_of_transit(truth)
        wl = A.white_light(spec, out_of_transit=oot, filter_size=1)
        noise = A.scatter_ratio(wl["flux"], wl["flux_err"], out_of_transit=oot)
        mjd = np.asarray(truth["int_mid_MJD_UTC"].values)
        t = (mjd - mjd[0]) * 86400.0
        a = truth.attrs
        shape = dict(times=t, t0=(a["transit_mid_MJD_UTC"] - mjd[0]) * 86400.0,
                     duration=a["transit_duration_s"], ingress=a["transit_ingress_s"])
        fit = A.fit_transit(wl["flux"], wl["flux_err"], **shape)
        # the truth: the simulator's noiseless rate cube through the same aperture, columns and
        # fit (its background and the other orders dilute the injected depth in the aperture)
        true_ri = xr.Dataset({"data": (dims, np.asarray(truth["rate"].values, np.float32)),
                              "err": (dims, np.zeros(cube["ERR"].shape, np.float32))}, coords={X: x})
        true_wl = A.white_light(A.extract_aperture(true_ri, trace1, radius=radius).isel({X: cols}),
                                out_of_transit=oot, filter_size=1)
        true_fit = A.fit_transit(true_wl["flux"], wl["flux_err"], **shape)
    ok = int(np.isfinite(wl["flux"].values).sum())
    scale = max(1.0, float(fit["chi2"]) / max(1, ok - 2)) ** 0.5
    depth, err = float(fit["depth"]), float(fit["depth_err"]) * scale
    injected = float(true_fit["depth"])
    return {"ratio": float(noise["ratio"]), "scatter_ppm": float(noise["scatter"]) * 1e6,
            "expected_ppm": float(noise["expected"]) * 1e6, "depth_ppm": depth * 1e6, "err_ppm": err * 1e6,
            "truth_ppm": injected * 1e6, "diff_ppm": (depth - injected) * 1e6, "pull": (depth - injected) / err,
            "jump_pct": 100 * jumps, "columns": int(cols.size), "radius": float(radius)}


# ---------------------------------------------------------------- main


def table(rows: list[dict], variants: list[str], amplitudes: list[float]) -> str:
    lines = ["| variant | 1/f a (DN) | rms per read (DN) | scatter / ERR-predicted | scatter, predicted (ppm) | "
             "depth − truth (ppm) | depth − truth (σ) | JUMP_DET | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        for amp in amplitudes:
            r = next(r for r in rows if r["variant"] == v and r["amplitude"] == amp)
            head = f"| {VARIANTS[v][0]} | {amp:g} | {r['rms_read']:.1f} |"
            if "error" in r:
                lines.append(f"{head} error: {r['error']} | | | | | |")
                continue
            lines.append(f"{head} **{r['ratio']:.2f}** | {r['scatter_ppm']:.0f}, {r['expected_ppm']:.0f} | "
                         f"{r['diff_ppm']:+.0f} ± {r['err_ppm']:.0f} | {r['pull']:+.1f} | {r['jump_pct']:.2f} % | "
                         f"{r['wall']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from daskramp.simulate import load_truth

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amplitudes", type=parse_amplitudes, default=[1.0, 3.0, 6.0],
                   help="simulated 1/f amplitudes a in DN (PSD a²/f), comma-separated (default 1,3,6)")
    p.add_argument("--variants", type=parse_variants, default=list(VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)} (or a–d); default all")
    p.add_argument("--nints", type=int, default=60, help="integrations (default 60; the preset's segment: 158)")
    p.add_argument("--nx", type=int, default=256, help="columns of the strip (default 256; SUBSTRIP256: 2048)")
    p.add_argument("--ngroups", type=int, default=None, help="groups (default: the preset's, 9)")
    p.add_argument("--depth", type=float, default=0.02, help="injected transit depth (default 0.02)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--background", type=float, default=None,
                   help="sky background of the simulation, DN/s (default: the preset's, 2)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="4GB", help="per daskramp worker (default 4GB)")
    p.add_argument("--maximum-cores", default="1", help="jwst jump/ramp_fit maximum_cores (default 1)")
    p.add_argument("--keep", metavar="DIR", help="keep every variant's products in DIR/a<amplitude>/<variant>/products")
    p.add_argument("--integration-scale", action="store_true",
                   help="daskramp variants: jump's integration_scale from the uncal ramps "
                        "(daskramp.analysis.integration_scale, smooth=5), which removes the "
                        "transit-depth bias of the pooled comparison (not official)")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="a step parameter for every variant, daskramp and jwst both "
                        "(e.g. jump.only_use_ints=false)")
    args = p.parse_args(argv)
    common = step_settings(p, args.set)

    given = shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"# command: python benchmarks/lightcurve.py{' ' + given if given else ''}")
    print(f"# date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"# {PRESET}: {args.nints} integrations × {args.ngroups or 9} groups × 256 × {args.nx}, "
          f"transit depth {args.depth:g}, seed {args.seed}; variants {', '.join(args.variants)}"
          + (f"; every variant with {common}" if common else "")
          + ("; daskramp variants with jump.integration_scale" if args.integration_scale else ""), flush=True)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="daskramp-lightcurve-"))
    rows = []
    try:
        for amp in args.amplitudes:
            extra = {} if args.background is None else {"background": args.background}
            sim = simulated(PRESET, args.nints, ngroups=args.ngroups, seed=args.seed, nx=args.nx,
                            one_over_f_amplitude=amp, transit_depth=args.depth, **extra)
            truth = load_truth(sim.truth_path)
            oot = out_of_transit(truth)
            rms = rms_per_read(amp, truth)
            print(f"# a = {amp:g} DN ({rms:.1f} DN rms per read): {sim.uncal_files[0].parent}; "
                  f"out of transit (--oot): {ranges(oot)} ({int(oot.sum())} integrations)", flush=True)
            scale_file = None
            if args.integration_scale:
                from daskramp import analysis as A
                from daskramp.io import open_exposure

                scale_file = tmp / f"a{amp:g}" / "integration_scale.txt"
                scale_file.parent.mkdir(parents=True, exist_ok=True)
                np.savetxt(scale_file, A.integration_scale(open_exposure(sim.uncal_files), smooth=5).values)
            for v in args.variants:
                out = tmp / f"a{amp:g}" / v
                row = {"variant": v, "amplitude": amp, "rms_read": rms}
                try:
                    steps = VARIANTS[v][1]
                    if steps is None:
                        wall, products = run_jwst(sim, out, maximum_cores=args.maximum_cores, steps=common)
                    else:
                        merged = {k: dict(kv) for k, kv in steps.items()}
                        for step, kv in common.items():
                            merged.setdefault(step, {}).update(kv)
                        if scale_file is not None:
                            merged.setdefault("jump", {})["integration_scale"] = str(scale_file)
                        wall, products = run_daskramp(sim, merged, out, workers=args.workers,
                                                      memory_limit=args.memory_limit)
                    row.update(measure(products, truth), wall=wall)
                    print(f"{VARIANTS[v][0]:26s} a={amp:<4g} scatter/ERR-predicted {row['ratio']:6.2f}  "
                          f"depth {row['depth_ppm']:.0f} (truth {row['truth_ppm']:.0f}) − truth {row['diff_ppm']:+6.0f} ± {row['err_ppm']:.0f} ppm "
                          f"({row['pull']:+.1f}σ)  JUMP_DET {row['jump_pct']:5.2f} %  wall {wall:6.1f} s", flush=True)
                except Exception as err:  # noqa: BLE001 - reported in the table, exit status 1
                    row["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
                    print(f"{VARIANTS[v][0]:26s} a={amp:<4g} error: {row['error']}", flush=True)
                rows.append(row)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(table(rows, args.variants, args.amplitudes))
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} runs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
