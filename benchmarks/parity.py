"""Parity of daskramp's Detector1 with the official jwst Detector1Pipeline on simulated segments.

Simulates a NIRISS SOSS segment (default the real size: 158 integrations × 9 groups ×
256 × 2048; or another :mod:`daskramp.simulate` preset, e.g. the NIRSpec BOTS or NIRCam grism
TSO ones with their ``--detector/--subarray/--grating/--noutputs/--readpatt`` configuration),
runs daskramp and the official pipeline (spec 10, offline) on the same uncal file
and reference files, and prints, for ``rateints`` and ``rate``:

* data / err / var_poisson / var_rnoise: fraction of pixels finite in both that agree within
  1e-4 relative or 1e-4 (DN/s or its square) absolute, max |diff|, NaN pattern identical?;
* DQ: fraction of identical values and, per differing bit, how many pixels have it only in
  one product;

and the official per-step wall times.  Targets: rateints agree on ≥ 99.9 % of the finite
pixels, NaN pattern identical, DQ identical on ≥ 99.9 %.  Needs the ``parity`` extra
(``pip install -e ".[parity]"``); the official pipeline runs in a process of its own, with the
interpreter named by ``DASKRAMP_JWST_PYTHON`` (default: this one)::

    python benchmarks/parity.py                          # 158 × 9 × 256 × 2048
    python benchmarks/parity.py --nints 20 --nx 256      # two-point jump method (< 100 ints)
    python benchmarks/parity.py --nints 120 --nx 256     # sigma-clip jump method (≥ 100 ints)
    python benchmarks/parity.py --preset nircam-full     # full frame, 4 outputs, 2 integrations
    python benchmarks/parity.py --preset nirspec-bots --nints 20 --detector NRS2 --subarray SUB512
    python benchmarks/parity.py --preset nircam-grism-tso --nints 20 --noutputs 1 --readpatt BRIGHT1
    python benchmarks/parity.py --uncal F_uncal.fits --refs REFS_DIR   # given files
    python benchmarks/parity.py --nints 20 --nx 256 --segments 2 --with-step clean_flicker_noise

``--with-step STEP`` turns an optional step on (``skip=False``, its other parameters at their
defaults) in both pipelines; the official run then also gets a local CRDS cache serving the
same reference files (``daskramp.testing.official --local-crds``), because clean_flicker_noise's
draft ramp fit looks GAIN and READNOISE up in CRDS whatever the overrides say.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gib, run_official, simulated  # noqa: E402

#: targets of the parity issue (rateints)
TARGET_CLOSE = 0.999
TARGET_DQ = 0.999
FLOAT_VARS = ("data", "err", "var_poisson", "var_rnoise")


def run_daskramp(uncal, refs_dir, *, memory_limit: int, tile_columns: int | None = None,
                 stats_scope: str = "segment", workers: int = 2,
                 steps: dict | None = None) -> tuple[dict, float, str]:
    """daskramp Detector1 in this process (threads); returns numpy rate/rateints, wall time
    and the layout the run used (fused, through a checkpoint, or step by step).

    ``uncal`` is one segment or a list of the segments of one exposure (stitched); ``steps``
    step parameters (``{step: {param: value}}``).
    """
    import dask

    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1

    t0 = time.perf_counter()
    files = uncal if isinstance(uncal, (list, tuple)) and len(uncal) > 1 else (
        uncal[0] if isinstance(uncal, (list, tuple)) else uncal)
    res = detector1(open_exposure(files), refs_dir, memory_limit=memory_limit, tile_columns=tile_columns,
                    stats_scope=stats_scope, steps=steps)
    with dask.config.set(scheduler="threads", num_workers=workers):
        rate, rateints = dask.compute(res.rate, res.rateints)
    wall = time.perf_counter() - t0
    out = {name: {v: np.asarray(prod[v].values) for v in (*FLOAT_VARS, "dq")}
           for name, prod in (("rate", rate), ("rateints", rateints))}
    layout = res.provenance.get("layout")
    if not layout:
        used = f"step by step ({res.provenance.get('fused', '')})"
    elif layout.get("checkpoint"):
        used = f"fused, through a checkpoint before {layout['checkpoint']['before']}"
    else:
        used = "fused"
    return out, wall, used


def read_official(path) -> dict:
    from astropy.io import fits

    with fits.open(path) as hdul:
        return {v: np.asarray(hdul[ext].data) for v, ext in
                (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                 ("var_rnoise", "VAR_RNOISE"), ("dq", "DQ"))}


def compare(ours: dict, theirs: dict) -> dict:
    """Per variable: :func:`compare_arrays` / :func:`compare_dq` of one product."""
    from daskramp.testing.parity import compare_arrays, compare_dq

    out = {}
    for v in FLOAT_VARS:
        a, b = ours[v], np.asarray(theirs[v], np.float32)
        out[v] = compare_arrays(a, b)
        out[v]["not_bit_identical"] = int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())
    out["dq"] = compare_dq(ours["dq"], theirs["dq"])
    out["dq"]["differing"] = int((ours["dq"] != theirs["dq"]).sum())
    return out


def table(results: dict) -> str:
    lines = ["| product | var | finite compared | agree (1e-4) | max abs diff | not bit-identical | "
             "NaN pattern identical | NaN only ours / only official |",
             "|---|---|---|---|---|---|---|---|"]
    for prod, res in results.items():
        for v in FLOAT_VARS:
            r = res[v]
            lines.append(f"| {prod} | {v} | {r['finite_compared']} | {100 * r['fraction_close']:.4f} % | "
                         f"{r['max_abs_diff']:.3g} | {r['not_bit_identical']} | {'yes' if r['nan_pattern_identical'] else 'NO'} | "
                         f"{r['nan_only_ours']} / {r['nan_only_theirs']} |")
    lines += ["", "| product | DQ identical | pixels differing | differing bits (only ours / only official) |",
              "|---|---|---|---|"]
    for prod, res in results.items():
        d = res["dq"]
        bits = ", ".join(f"{k} {b['only_ours']}/{b['only_theirs']}" for k, b in d["differing_bits"].items())
        lines.append(f"| {prod} | {100 * d['fraction_identical']:.4f} % | {d['differing']} | {bits or '—'} |")
    return "\n".join(lines)


def verdict(results: dict) -> list[str]:
    ri = results["rateints"]
    fails = []
    for v in FLOAT_VARS:
        if ri[v]["fraction_close"] < TARGET_CLOSE:
            fails.append(f"rateints {v}: {ri[v]['fraction_close']:.6f} < {TARGET_CLOSE}")
        if not ri[v]["nan_pattern_identical"]:
            fails.append(f"rateints {v}: NaN pattern differs")
    if ri["dq"]["fraction_identical"] < TARGET_DQ:
        fails.append(f"rateints dq: {ri['dq']['fraction_identical']:.6f} < {TARGET_DQ}")
    return fails


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from daskramp.simulate import MODE_OPTIONS, PRESETS

    p.add_argument("--preset", default="niriss-soss", choices=list(PRESETS), help="daskramp.simulate preset")
    p.add_argument("--nints", type=int, default=None, help="integrations (default: the preset's)")
    p.add_argument("--ngroups", type=int, default=None, help="groups (default: the preset's)")
    for opt, typ in MODE_OPTIONS.items():
        p.add_argument(f"--{opt}", type=typ, help=f"simulated {opt.upper()} (TSO presets)")
    p.add_argument("--nx", type=int, default=None, help="subarray width (default: the preset's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--one-over-f", type=float, default=None, metavar="DN",
                   help="simulated 1/f amplitude, DN (default: the preset's)")
    p.add_argument("--segments", type=int, default=1,
                   help="uncal segments: the official pipeline runs each, daskramp the stitched exposure; "
                        "rateints is compared segment by segment, rate only with one segment")
    p.add_argument("--stats-scope", default="segment", choices=("segment", "exposure"),
                   help="daskramp jump/ramp_fit statistics scope (the official scope is 'segment')")
    p.add_argument("--uncal", nargs="+", help="use these uncal segments instead of simulating")
    p.add_argument("--refs", help="reference directory for --uncal")
    p.add_argument("--out", help="keep the official products here (default: a temporary folder)")
    p.add_argument("--maximum-cores", default="1", help="official jump/ramp_fit maximum_cores")
    p.add_argument("--memory-limit", type=float, default=1.0, help="daskramp tile budget, GB")
    p.add_argument("--tile-columns", type=int, help="daskramp jump/ramp_fit tile width (default: planned)")
    p.add_argument("--with-step", action="append", default=[], metavar="STEP",
                   help="turn this optional step on in both pipelines (repeatable), e.g. clean_flicker_noise")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="a step parameter for both pipelines (repeatable; a YAML value), e.g. "
                        "clean_flicker_noise.fit_method=fft with --with-step clean_flicker_noise")
    p.add_argument("--json", help="write the comparison as JSON here")
    args = p.parse_args(argv)
    from daskramp.steps import REGISTRY

    unknown = sorted(set(args.with_step) - {s.name for s in REGISTRY})
    if unknown:
        p.error(f"--with-step: unknown step(s) {', '.join(unknown)}")
    steps = {name: {"skip": False} for name in args.with_step}
    for item in args.set:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not (sep and dot and param):
            p.error(f"--set {item!r}: expected STEP.PARAM=VALUE")
        if name not in {s.name for s in REGISTRY}:
            p.error(f"--set: unknown step {name!r}")
        steps.setdefault(name, {})[param] = yaml.safe_load(value)

    if args.uncal:
        if not args.refs:
            p.error("--uncal needs --refs")
        uncals, refs_dir = [Path(u) for u in args.uncal], Path(args.refs)
    else:
        geometry = {} if args.nx is None else {"nx": args.nx}
        geometry |= {k: getattr(args, k) for k in MODE_OPTIONS if getattr(args, k) is not None}
        if args.one_over_f is not None:
            geometry["one_over_f_amplitude"] = args.one_over_f
        nints = args.nints or PRESETS[args.preset].nints
        sim = simulated(args.preset, nints, seed=args.seed, segments=args.segments, ngroups=args.ngroups,
                        **geometry)
        uncals, refs_dir = list(sim.uncal_files), sim.refs_dir
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="daskramp-parity-"))
    for u in uncals:
        print(f"# uncal {u} ({os.path.getsize(u) / 1e6:.0f} MB)", flush=True)
    print(f"# refs {refs_dir}", flush=True)

    # the official pipeline first, alone on the machine (it is the memory-hungry one); it
    # processes each segment on its own
    os.environ.setdefault("DASKRAMP_JWST_PYTHON", sys.executable)
    reps = []
    for k, u in enumerate(uncals):
        rep = run_official(u, refs_dir, out / f"official{k + 1:03d}", args.maximum_cores, steps=steps,
                           local_crds=bool(steps))
        reps.append(rep)
        print(f"# official segment {k + 1}: wall {rep['process_wall_s']:.1f} s, "
              f"peak RSS {gib(rep['peak_rss_bytes'])}", flush=True)
        print("# official per-step wall time: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in rep["step_s"].items()), flush=True)

    ours, wall, used = run_daskramp(uncals, refs_dir, memory_limit=int(args.memory_limit * 1e9),
                                    tile_columns=args.tile_columns, stats_scope=args.stats_scope, steps=steps)
    print(f"# daskramp: wall {wall:.1f} s (in process, 2 threads, graph build + compute, "
          f"stats_scope={args.stats_scope}; layout: {used})", flush=True)
    if steps:
        print(f"# steps turned on in both pipelines: {', '.join(steps)}", flush=True)

    theirs = [read_official(r["rateints"]) for r in reps]
    results = {"rateints": compare(ours["rateints"],
                                   {v: np.concatenate([t[v] for t in theirs]) for v in theirs[0]})}
    if len(reps) == 1:
        results["rate"] = compare(ours["rate"], read_official(reps[0]["rate"]))
    else:
        # the official rate is per segment; daskramp's combines the exposure (no counterpart)
        starts = np.cumsum([0] + [t["data"].shape[0] for t in theirs])
        for k, t in enumerate(theirs):
            part = {v: a[starts[k]:starts[k + 1]] for v, a in ours["rateints"].items()}
            results[f"rateints seg {k + 1}"] = compare(part, t)
    print()
    print(table(results))
    fails = verdict(results)
    print()
    print("targets met (rateints ≥ 99.9 % within 1e-4, NaN pattern identical, DQ ≥ 99.9 %)" if not fails
          else "targets NOT met: " + "; ".join(fails))
    if args.json:
        Path(args.json).write_text(json.dumps({"uncal": [str(u) for u in uncals], "official": reps, "with_steps": list(steps),
                                               "daskramp_wall_s": wall, "stats_scope": args.stats_scope,
                                               "results": results}, indent=1))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
