"""Detector1 on a simulated TSO segment (NIRISS SOSS by default), daskramp and the official pipeline side by side.

Prints wall time and peak memory (all processes together) of:
  * daskramp on a local cluster of worker processes, from the uncal FITS segment (read + all
    steps + products written), and with the segment doubled in integrations — with
    daskramp's default settings unless ``--workers``/``--memory-limit`` are given;
  * the official jwst Detector1Pipeline (parity extra) with each ``maximum_cores`` setting;
and the ratios.  Usage::

    python benchmarks/detector1.py                      # 158 × 9 × 256 × 2048 (1.49 GB)
    python benchmarks/detector1.py --nints 20 --no-jwst # a quick look
    python benchmarks/detector1.py --preset nirspec-bots        # 155 × 70 × 32 × 2048 (1.42 GB)
    python benchmarks/detector1.py --preset nircam-grism-tso    # 366 × 6 × 64 × 2048 (0.58 GB)
    python benchmarks/detector1.py --preset nircam-grism-tso --noutputs 1 --readpatt RAPID
    python benchmarks/detector1.py --algorithm LIKELY --no-double       # both pipelines with LIKELY
    python benchmarks/detector1.py --set jump.expand_large_events=true  # both with snowball flagging

``--detector/--subarray/--grating/--noutputs/--readpatt`` choose the configuration of the TSO
presets (see :func:`daskramp.simulate.simulate`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gib, run_daskramp, run_official, simulated, step_settings  # noqa: E402


def main(argv=None):
    from daskramp.simulate import MODE_OPTIONS, PRESETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="niriss-soss", choices=list(PRESETS), help="daskramp.simulate preset")
    p.add_argument("--nints", type=int, default=None, help="integrations per segment (default: the preset's)")
    p.add_argument("--ngroups", type=int, default=None, help="groups (default: the preset's)")
    for opt, typ in MODE_OPTIONS.items():
        p.add_argument(f"--{opt}", type=typ, help=f"simulated {opt.upper()} (TSO presets)")
    p.add_argument("--workers", type=int, default=None, help="daskramp workers (default: daskramp's, one per core)")
    p.add_argument("--memory-limit", default=None,
                   help="per daskramp worker (default: daskramp's, the machine's memory shared by the workers)")
    p.add_argument("--no-jwst", action="store_true", help="skip the official pipeline")
    p.add_argument("--no-double", action="store_true", help="skip the 2× integrations run")
    p.add_argument("--maximum-cores", default="1,all")
    p.add_argument("--with-step", action="append", default=[], metavar="STEP",
                   help="also run daskramp with this optional step on (e.g. group_1overf, "
                        "clean_flicker_noise) and print its time and memory against the default")
    p.add_argument("--algorithm", default="OLS_C", choices=("OLS_C", "LIKELY"),
                   help="ramp_fit algorithm, for daskramp and jwst both")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="a step parameter for daskramp and jwst both, e.g. jump.expand_large_events=true")
    args = p.parse_args(argv)
    # the step parameters of both pipelines (none: their defaults)
    fit = {"ramp_fit": {"algorithm": args.algorithm}} if args.algorithm != "OLS_C" else {}
    for step, kv in step_settings(p, args.set).items():
        fit.setdefault(step, {}).update(kv)
    mode = {k: getattr(args, k) for k in MODE_OPTIONS if getattr(args, k) is not None}
    if args.nints is None:
        args.nints = PRESETS[args.preset].nints

    sims = {args.nints: simulated(args.preset, args.nints, ngroups=args.ngroups, **mode)}
    if not args.no_double:
        sims[2 * args.nints] = simulated(args.preset, 2 * args.nints, ngroups=args.ngroups, **mode)
    print(f"# preset {args.preset} {' '.join(f'{k}={v}' for k, v in mode.items())}"
          + "".join(f" {st}.{k}={v}" for st, kv in fit.items() for k, v in kv.items()), flush=True)
    setting = (f"{args.workers or 'default'} workers × {args.memory_limit or 'default memory'}"
               if args.workers or args.memory_limit else "default settings")
    tmp = Path(tempfile.mkdtemp(prefix="daskramp-bench-"))
    rows = []
    try:
        for n, sim in sims.items():
            size = sum(f.stat().st_size for f in sim.uncal_files)
            wall, peak, peak1, summary = run_daskramp(sim.uncal_files, sim.refs_dir, args.workers,
                                                      args.memory_limit, tmp / f"dr{n}",
                                                      {"steps": fit} if fit else None)
            rows.append(("daskramp", n, setting, wall, peak, peak1, size))
            print(f"daskramp  nints={n:4d}  wall {wall:7.1f} s  {size / 1e6 / wall:7.1f} MB/s  "
                  f"peak all processes {gib(peak)}  largest process {gib(peak1)}", flush=True)
            for step in args.with_step:
                # the step on, with the parameters --set gave it
                config = {"steps": {**fit, step: {**fit.get(step, {}), "skip": False}}}
                wall, peak, peak1, summary = run_daskramp(sim.uncal_files, sim.refs_dir, args.workers,
                                                          args.memory_limit, tmp / f"dr{n}-{step}", config)
                rows.append((f"daskramp +{step}", n, setting, wall, peak, peak1, size))
                print(f"daskramp +{step}  nints={n:4d}  wall {wall:7.1f} s  peak all processes {gib(peak)}  "
                      f"largest process {gib(peak1)}", flush=True)
        if not args.no_jwst:
            sim = sims[args.nints]
            size = sum(f.stat().st_size for f in sim.uncal_files)
            for cores in args.maximum_cores.split(","):
                # clean_flicker_noise's draft ramp fit asks CRDS for GAIN/READNOISE: a local cache
                rep = run_official(sim.uncal_files[0], sim.refs_dir, tmp / f"jwst{cores}", cores,
                                   steps=fit or None, local_crds="clean_flicker_noise" in fit)
                rows.append(("jwst", args.nints, f"maximum_cores={cores}", rep["process_wall_s"],
                             rep["peak_rss_bytes"], None, size))
                steps = ", ".join(f"{k} {v:.0f}s" for k, v in rep["step_s"].items() if v > 1)
                print(f"jwst      nints={args.nints:4d}  wall {rep['process_wall_s']:7.1f} s  "
                      f"peak {gib(rep['peak_rss_bytes'])}  maximum_cores={cores}  ({steps})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| run | nints | setting | wall s | MB/s | peak RSS (all processes) |")
    print("|---|---|---|---|---|---|")
    for who, n, setting, wall, peak, _, size in rows:
        print(f"| {who} | {n} | {setting} | {wall:.1f} | {size / 1e6 / wall:.0f} | {gib(peak)} |")
    ours = {n: (w, pk) for who, n, _, w, pk, _, _ in rows if who == "daskramp"}
    theirs = [(w, pk) for who, *_rest in rows if who == "jwst" for w, pk in [(_rest[2], _rest[3])]]
    if theirs:
        best = min(theirs)
        w, pk = ours[args.nints]
        print(f"\nwall-time ratio jwst(best maximum_cores) / daskramp = {best[0] / w:.1f}  (target ≥ 5)")
        print(f"peak-memory ratio jwst / daskramp = {best[1] / pk:.1f}")
    for step in args.with_step:
        for n in sims:
            w = [r for r in rows if r[0] == f"daskramp +{step}" and r[1] == n]
            if w and n in ours:
                print(f"daskramp +{step} / default, nints={n}: wall {w[0][3] / ours[n][0]:.2f}  "
                      f"(target ≤ 1.5), peak {w[0][4] / ours[n][1]:.2f}")
    if 2 * args.nints in ours:
        print(f"daskramp peak memory at 2× integrations / 1× = "
              f"{ours[2 * args.nints][1] / ours[args.nints][1]:.2f}  (target: ≈1, ≤ 2 GB each)")


if __name__ == "__main__":
    main()
