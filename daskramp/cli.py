"""The ``daskramp`` command (``daskramp --help``; ``daskramp COMMAND --help`` for each command).

Every command checks what it can before a dask cluster starts (inputs, parameters, reference
files, the output location) and reports a refusal in one line on stderr (``--debug`` for the
traceback).  What a command does goes to a log on stderr (``--log FILE`` also writes it to a
file; ``--no-progress`` silences stderr); results go to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: daskramp.io.refs.REFTYPES, spelled out so that ``--help`` imports neither numpy nor astropy
#: (tests/test_cli.py holds the two equal)
REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "flat")

DESCRIPTION = """\
JWST calwebb_detector1 (uncal ramps -> rate/rateints slopes) as a lazy dask/xarray/Zarr
workflow.  New here?  `daskramp demo` simulates a small exposure, runs Detector1 on a local
dask cluster and compares the rates with the simulated truth (about a minute)."""

EPILOG = """\
typical session:
  daskramp simulate sim/ --nints 20 --segments 2        # or bring your own *_uncal.fits
  daskramp run sim/*_uncal.fits --out products/ --refs sim/refs
  daskramp report products/ --out report/                # needs: pip install 'daskramp[plot]'

A refusal is one line on stderr and exit status 2 (1: an unforeseen error, 130: interrupted);
--debug shows the traceback.  Docs: README.md, docs/reliability.md."""

RUN_EPILOG = """\
step parameters (the official pipeline's step and parameter names):
  --steps.<step>.<param>=VALUE       e.g. --steps.jump.rejection_threshold=10
                                          --steps.dark_current.skip=true
  DASKRAMP_STEPS__<STEP>__<PARAM>=VALUE   environment, e.g.
                                          DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD=10
  steps: <step>: <param>: VALUE      in the workflow YAML given with --config
  --config pars-jumpstep.asdf        official parameter files (ASDF) as CRDS serves them or
                                     export_config writes them
  Precedence: step defaults < parameter files (single-step < pipeline) < workflow YAML <
  environment < command line.  Values are YAML scalars (10, 4.5, true, null); every value
  is checked against the official type and range before anything runs; an official
  parameter daskramp does not implement is refused unless at its official default.
{steps}

log: one line per event on stderr, e.g.
  2026-12-07 04:31:12 - daskramp.run - INFO - dark_current: COMPLETE (jwst_niriss_dark_0001.fits)
  (the exposure, the references chosen, each phase's time, every step's status and the
  products); --log FILE also appends it to FILE, --no-progress keeps stderr quiet.

A rerun of the same command resumes or finds the products complete; with other inputs,
parameters or references it is refused unless --overwrite.  Inputs and --out must be
reachable from every worker."""


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (default: a local cluster of one worker process per core)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running dask scheduler, e.g. tcp://HOST:8786 (or set "
                        "$DASKRAMP_SCHEDULER)")
    g.add_argument("--cluster", metavar="YAML", help="cluster profile (workflows/clusters/*.yaml)")
    g.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    g.add_argument("--threads-per-worker", type=int, metavar="N", help="threads per local worker (default 1)")
    g.add_argument("--memory-limit", metavar="SIZE",
                   help="memory per local worker, e.g. 4GB (default: RAM / workers)")


def _add_override_args(p: argparse.ArgumentParser) -> None:
    ov = p.add_argument_group("reference overrides (instead of the file --refs would select)")
    for rt in REFTYPES:
        ov.add_argument(f"--override-{rt}", metavar="FILE", help=f"use FILE as the {rt.upper()} reference ('N/A' to skip)")


def _overrides(args) -> dict:
    return {rt: getattr(args, f"override_{rt}") for rt in REFTYPES if getattr(args, f"override_{rt}", None)}


def _cluster_profile(args):
    from .cluster import ClusterProfile

    base = ClusterProfile.from_yaml(args.cluster) if getattr(args, "cluster", None) else ClusterProfile()
    upd = {
        "scheduler": args.scheduler,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "memory_limit": args.memory_limit,
    }
    return ClusterProfile(**{**base.__dict__, **{k: v for k, v in upd.items() if v is not None}})


def _version() -> str:
    from . import __version__

    try:
        import importlib.metadata as md

        return md.version("daskramp")
    except Exception:  # noqa: BLE001 - not installed: the source tree's version
        return __version__


def _step_names() -> str:
    import textwrap

    try:
        from .steps import STEP_ORDER

        names = ", ".join(STEP_ORDER)
    except Exception:  # noqa: BLE001 - help must answer whatever happens
        names = "see README.md"
    return textwrap.fill(f"Steps, in order: {names}.", width=88, initial_indent="  ",
                         subsequent_indent="  ")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="daskramp", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"daskramp {_version()}")
    # --debug, --log and --no-progress are accepted before or after the command
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("messages")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error instead of its one-line message")
    g.add_argument("--log", metavar="FILE", default=argparse.SUPPRESS,
                   help="also append the log (what the command does, one line per event) to FILE")
    g.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                   default=argparse.SUPPRESS,
                   help="no progress bar and no log on stderr (results and errors are still printed)")
    p.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    p.add_argument("--log", metavar="FILE", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", default=False,
                   help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands (`daskramp COMMAND --help` describes each)")
    _add = sub.add_parser

    def add_parser(name, **kw):
        kw.setdefault("formatter_class", fmt)
        if "help" in kw:
            kw.setdefault("description", kw["help"][0].upper() + kw["help"][1:] + ".")
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser

    d = sub.add_parser(
        "demo", help="simulate a small exposure, convert it, run Detector1 and compare with the truth",
        epilog="Writes in --out: uncal/ (simulated uncal segments and reference files), "
               "exposure.zarr,\nproducts/ (rate and rateints, Zarr and FITS).  About a minute on "
               "two cores the first\ntime (numba compiles the kernels and caches them).  A later "
               "demo clears what an\nearlier one wrote; a directory holding anything else is refused.")
    d.add_argument("--out", default="daskramp-demo", metavar="DIR", help="working directory (default ./daskramp-demo)")
    d.add_argument("--nints", type=int, default=12, metavar="N", help="integrations per segment (default 12)")
    d.add_argument("--segments", type=int, default=2, metavar="N", help="uncal segments of the exposure (default 2)")
    _add_cluster_args(d)

    s = sub.add_parser(
        "simulate", help="write a synthetic exposure: uncal FITS segments, reference files, truth",
        epilog="Writes OUTDIR/*_uncal.fits, OUTDIR/refs/ (CRDS-format reference files for --refs) "
               "and\nOUTDIR/truth.zarr (the true rates).  The same --seed gives the same files, "
               "bit for bit.")
    s.add_argument("outdir", metavar="OUTDIR", help="output directory (created)")
    s.add_argument("--preset", default="niriss-soss",
                   choices=["niriss-soss", "nirspec-bots", "nircam-grism-tso", "nircam-imaging-tso", "nircam-full",
                            "nircam-dark"],
                   help="instrument mode: niriss-soss (SOSS TSO, SUBSTRIP256 by default), nirspec-bots "
                        "(NIRSpec bright-object TSO, SUB2048), nircam-grism-tso (NIRCam LW grism TSO, "
                        "SUBGRISM64), nircam-imaging-tso (NIRCam SW weak-lens images taken with the grism "
                        "TSO, NRCA3 SUBGRISM64; or SUB64P/SUB160P/SUB400P/FULL imaging TSO), nircam-full "
                        "(full frame), nircam-dark (dark exposure, for `daskramp darks`)")
    s.add_argument("--detector", help="TSO presets: detector (NRS1/NRS2; NRCALONG/NRCBLONG; nircam-imaging-tso: "
                                      "NRCA1, NRCA3, NRCB1, NRCBLONG)")
    s.add_argument("--subarray", help="TSO presets: subarray (niriss-soss: SUBSTRIP256, SUBSTRIP96, FULL; "
                                      "nirspec-bots: SUB2048, SUB1024A, SUB1024B, SUB512, SUB512S; "
                                      "nircam-grism-tso: SUBGRISM64/128/256; nircam-imaging-tso: SUBGRISM64/128/256 "
                                      "(NRCA1/NRCA3), SUB64P/SUB160P/SUB400P (NRCA3, NRCB1, NRCBLONG), FULL)")
    s.add_argument("--grating", help="nirspec-bots: grating (sets the subarray's rows and the filter)")
    s.add_argument("--noutputs", type=int, choices=[1, 4],
                   help="readout outputs: 1 or 4 for the SUBGRISM stripes; others follow the subarray "
                        "(SOSS strips and SUBnP 1, FULL 4)")
    s.add_argument("--readpatt", help="TSO presets: readout pattern (NFRAMES and GROUPGAP follow it)")
    s.add_argument("--nints", type=int, metavar="N",
                   help="integrations per segment (default: the preset's; 158 for niriss-soss)")
    s.add_argument("--ngroups", type=int, metavar="N", help="groups per integration (default: the preset's; 9 for niriss-soss)")
    s.add_argument("--segments", type=int, default=1, metavar="N", help="uncal segments of the exposure (default 1)")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")

    i = sub.add_parser(
        "ingest", help="convert one exposure's uncal segments to one Zarr store",
        epilog="Optional: `daskramp run` reads uncal files directly.  The store is written in "
               "STORE.zarr.partial\nand renamed when complete; an interrupted conversion resumes "
               "when run again.")
    i.add_argument("uncal", nargs="+", metavar="UNCAL",
                   help="the uncal FITS segments of one exposure (*_uncal.fits), in any order")
    i.add_argument("--out", required=True, metavar="STORE", help="output store (STORE.zarr)")
    i.add_argument("--chunk-mb", type=float, default=64.0, metavar="MIB",
                   help="uncompressed MiB per shard of integrations (default 64; one task per shard)")
    i.add_argument("--overwrite", action="store_true",
                   help="replace an existing store (it stays readable until the new one is complete)")
    _add_cluster_args(i)

    r = sub.add_parser("run", help="run calwebb_detector1 on uncal segments or a Zarr store",
                       epilog=RUN_EPILOG.format(steps=_step_names()),
                       usage="%(prog)s INPUT [INPUT ...] --out DIR [--refs DIR | --crds] "
                             "[--steps.<step>.<param>=VALUE ...] [options]")
    r.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="the uncal FITS segments of one exposure, or one Zarr store from `daskramp ingest`")
    r.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: <root>_rate.zarr/.fits, <root>_rateints.zarr/.fits (root: "
                        "the official name from the uncal files)")
    r.add_argument("--refs", metavar="DIR",
                   help="directory of CRDS-format reference files (selected by the official rules)")
    r.add_argument("--crds", action="store_true",
                   help="take every reference and the parameter reference files (pars-*) from "
                        "the CRDS cache $CRDS_PATH, context $CRDS_CONTEXT, as the official "
                        "pipeline does (offline with CRDS_MODE=local); instead of --refs")
    r.add_argument("--config", metavar="FILE", action="append",
                   help="workflow YAML (step parameters and settings, workflows/*.yaml) or an "
                        "official parameter file (ASDF: pars-detector1pipeline, pars-<step>, or "
                        "written by export_config); repeat it for several files")
    r.add_argument("--save-steps", default="", metavar="STEP,...",
                   help="comma-separated steps whose output ramps are saved, e.g. linearity,jump")
    r.add_argument("--stats-scope", choices=["segment", "exposure"],
                   help="pool jump/ramp_fit statistics per uncal segment (default, as the official "
                        "pipeline) or over the whole exposure")
    r.add_argument("--no-fits", action="store_true", help="write Zarr products only")
    r.add_argument("--overwrite", action="store_true",
                   help="replace products of this exposure in --out made by another run (other inputs, "
                        "parameters or references); without it such a run is refused")
    r.add_argument("--report", metavar="HTML", help="save dask's performance report of the run (HTML; needs bokeh)")
    r.add_argument("--tile-columns", type=int, metavar="N", help="columns per jump/ramp_fit tile (default: from worker memory)")
    r.add_argument("--tile-rows", type=int, metavar="N",
                   help="rows per tile (default: the tile of --tile-columns × all rows reshaped to read fewer rows)")
    r.add_argument("--integration-chunk", type=int, metavar="N",
                   help="integrations per block of the pixel-local steps (default: from worker memory)")
    _add_override_args(r)
    _add_cluster_args(r)

    dk = sub.add_parser("darks", help="build a DARK reference file from dark exposures",
                        epilog="Detector1 up to jump runs on each exposure (dark_current, ramp_fit "
                               "and gain_scale skipped);\nthe jump step needs GAIN and READNOISE "
                               "references in --refs.  Writes the DARK FITS\nfile and "
                               "<out stem>_stats.zarr (the statistics behind it).")
    from .darks import add_arguments as _darks_args

    _darks_args(dk)
    _add_override_args(dk)
    _add_cluster_args(dk)
    from .report import add_report_arguments

    add_report_arguments(sub.add_parser(
        "report", help="PNG figures and index.html of a products directory",
        epilog="Needs the plot extra: pip install 'daskramp[plot]' (matplotlib).  Writes "
               "index.html, one PNG\nper figure and numbers.json (key numbers, each "
               '{"value": …, "unit": …}).  Runs in this\nprocess (no cluster).'))
    return p


def _print_summary(summary: dict) -> None:
    from .progress import format_bytes

    for k, v in summary.items():
        if k == "peak_memory_per_worker" and isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {format_bytes(vv)}")
        elif isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {vv}")
        elif isinstance(v, float):
            print(f"{k}: {v:.6g}")
        elif isinstance(v, list) and v and isinstance(v[0], float):
            print(f"{k}: [{', '.join(f'{x:.3g}' for x in v[:8])}{', …' if len(v) > 8 else ''}]")
        else:
            print(f"{k}: {v}")


def _print_run_summary(summary: dict) -> None:
    """The end-of-run screen: volumes, time, throughput, peak memory per worker, then the rest."""
    from .progress import format_summary

    print("-" * 60)
    print(format_summary(summary))
    print("-" * 60)
    shown = {"uncal_MB", "pixel_groups", "wall_s", "throughput_MB_s", "tasks", "peak_memory_per_worker"}
    _print_summary({k: v for k, v in summary.items() if k not in shown})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    from .config import ConfigError

    try:
        if extra and args.command != "run":
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        from .progress import log_to

        log_file = args.log
        if log_file is not None:
            _check_log_file(Path(log_file))
        with log_to(stderr=not args.no_progress, file=log_file):
            return _COMMANDS[args.command](args, extra)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"daskramp {args.command}: interrupted; nothing unfinished was marked complete, "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    except (ConfigError, OSError, ValueError, MemoryError, ImportError) as err:
        if args.debug:
            raise
        print(f"daskramp {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # an error daskramp did not foresee: still one line
        if args.debug:
            raise
        print(f"daskramp {args.command}: internal error: {type(err).__name__}: {one_line(err)} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _check_log_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"--log {path}: is a directory; give a file")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--log {path}: directory {path.parent} does not exist")


def _logger(name: str):
    import logging

    return logging.getLogger(f"daskramp.{name}")


def _need(module: str, what: str) -> None:
    """Refuse before anything runs when an optional package is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs {module}: pip install 'daskramp[plot]'")


def _positive(name: str, value, *, integer: bool = True, allow_none: bool = True) -> None:
    import math

    from .config import ConfigError

    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if not ok or (integer and int(value) != value):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


def _inputs_exist(paths) -> list[Path]:
    from .run import InputError

    out = [Path(p) for p in paths]
    for p in out:
        if not p.exists():
            raise InputError(2, f"{p}: input not found")
    return out


# ---------------------------------------------------------------------------- commands


def _cmd_simulate(args, extra) -> int:
    from .io.store import consolidate
    from .simulate import simulate

    log = _logger("simulate")
    for name in ("nints", "ngroups", "segments"):
        _positive(f"--{name}", getattr(args, name))
    t0 = time.perf_counter()
    log.info(f"simulating a {args.preset} exposure in {args.outdir} (seed {args.seed})")
    from .simulate import MODE_OPTIONS

    mode = {k: getattr(args, k) for k in MODE_OPTIONS if getattr(args, k, None) is not None}
    res = simulate(args.outdir, preset=args.preset, nints=args.nints, ngroups=args.ngroups,
                   segments=args.segments, seed=args.seed, **mode)
    consolidate(res.truth_path)
    log.info(f"simulated {len(res.uncal_files)} uncal file(s) in {time.perf_counter() - t0:.1f} s")
    for f in res.uncal_files:
        print(f)
    print(f"reference files: {res.refs_dir}")
    print(f"truth: {res.truth_path}")
    return 0


def _cmd_ingest(args, extra) -> int:
    from .cluster import connect
    from .io import ingest
    from .io.store import StoreError
    from .io.uncal import scan_segments
    from .progress import RunMonitor
    from .run import check_output_dir

    log = _logger("ingest")
    _positive("--chunk-mb", args.chunk_mb, integer=False)
    files = _inputs_exist(args.uncal)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise StoreError(f"{out}: store exists; rerun with --overwrite to replace it")
    check_output_dir(out.resolve().parent)
    segs = scan_segments(files)  # one exposure, every integration once: checked before any cluster
    h = segs[0].header
    log.info(f"{len(segs)} uncal segment(s) of one exposure: {h.get('NINTS')} integrations × "
             f"{h.get('NGROUPS')} groups; converting to {out}")
    profile = _cluster_profile(args)
    t0 = time.perf_counter()
    with connect(profile, quiet=args.no_progress) as client, \
            RunMonitor(client, stream=None if args.no_progress else sys.stderr, label="ingest"):
        store = ingest(files, out, chunk_mb=args.chunk_mb, overwrite=args.overwrite)
    log.info(f"store complete in {time.perf_counter() - t0:.1f} s: {store}")
    print(store)
    return 0


def _cmd_run(args, extra) -> int:
    from .config import layered
    from .run import run

    cfg = layered(workflow=args.config, cli=extra)
    if args.stats_scope:
        cfg["stats_scope"] = args.stats_scope
    if args.tile_columns:
        cfg["tile_columns"] = args.tile_columns
    if args.tile_rows:
        cfg["tile_rows"] = args.tile_rows
    if args.integration_chunk:
        cfg["integration_chunk"] = args.integration_chunk
    overrides = _overrides(args)
    save = [s for s in args.save_steps.split(",") if s]
    summary = run(args.inputs, args.out, refs=args.refs, config=cfg, overrides=overrides,
                  save_steps=save, cluster=_cluster_profile(args), fits=not args.no_fits,
                  progress=not args.no_progress, report=args.report,
                  overwrite=args.overwrite, workflow=args.config, crds=args.crds)
    _print_run_summary(summary)
    return 0


def _cmd_darks(args, extra) -> int:
    """``daskramp darks``: everything checked (inputs, their match, parameters, the references
    the steps need, the output) before the cluster starts; progress and log while it runs."""
    import numpy as np

    from . import dims
    from .cluster import connect
    from .config import ConfigError
    from .darks import DARK_STEPS, check_consistent, figures, group_inputs, make_dark
    from .io import open_exposure
    from .io.store import consolidate
    from .pipeline import reference_set, validate_steps
    from .progress import RunMonitor
    from .run import check_output_dir

    log = _logger("darks")
    _positive("--sigma", args.sigma, integer=False, allow_none=False)
    _positive("--maxiters", args.maxiters, allow_none=False)
    _positive("--min-samples", args.min_samples, allow_none=False)
    _positive("--tile-columns", args.tile_columns)
    if args.crds and args.refs is not None:
        raise ConfigError("--crds and --refs exclude each other: the references come from the "
                          "CRDS cache or from the directory")
    if args.figures:
        _need("matplotlib", "--figures")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give the DARK file to write, e.g. "
                          f"{out / 'jwst_nircam_dark_mine.fits'}")
    check_output_dir(out.resolve().parent)
    if args.figures:
        check_output_dir(Path(args.figures))
    _inputs_exist(args.inputs)
    t0 = time.perf_counter()
    items = group_inputs(list(args.inputs))
    exposures = [dims.validate(open_exposure(it[0] if isinstance(it, list) and len(it) == 1 else it))
                 for it in items]
    check_consistent(exposures)
    # the references of the steps a dark runs (GAIN and READNOISE for jump): one missing is
    # refused now, naming every file rejected, not once the cluster has started
    if args.crds:
        from .io import crds as crds_io

        refs = crds_io.reference_set(exposures[0].attrs, validate_steps(DARK_STEPS),
                                     overrides=_overrides(args), cache=crds_io.open_cache())
        log.info(f"CRDS context {refs.crds['context']} ({refs.crds['mode']} best references, "
                 f"cache {refs.crds['path']})")
    else:
        refs = reference_set(exposures[0], args.refs, validate_steps(DARK_STEPS), _overrides(args),
                             strict=True)
    for rt, rec in (refs.provenance() if refs is not None else {}).items():
        log.info(f"reference {rt.upper()}: {rec['file']}"
                 + ("" if rec.get("path") else f" ({rec.get('reason') or 'none'})"))
    nint = sum(ds.sizes[dims.INTEGRATION] for ds in exposures)
    log.info(f"{len(exposures)} dark exposure(s), {nint} integrations; inputs and references "
             f"checked in {time.perf_counter() - t0:.1f} s; writing {out}")
    header = {k.upper(): getattr(args, k) for k in ("useafter", "pedigree", "descrip", "author")
              if getattr(args, k, None)}
    t1 = time.perf_counter()
    with connect(_cluster_profile(args), quiet=args.no_progress) as client, \
            RunMonitor(client, stream=None if args.no_progress else sys.stderr, label="darks"):
        res = make_dark(args.inputs, out, refs=refs, sigma=args.sigma, maxiters=args.maxiters,
                        min_samples=args.min_samples, err=args.err, tile_columns=args.tile_columns,
                        header=header)
    consolidate(res.provenance["stats_store"])
    log.info(f"DARK written in {time.perf_counter() - t1:.1f} s: {res.path}")
    if args.figures:
        figures(res, args.figures)
        log.info(f"figures written to {args.figures}")
    j = res.jumps
    print(f"DARK: {res.path}")
    print(f"statistics: {res.provenance['stats_store']}")
    print(f"exposures {res.provenance['n_exposures']}, integrations {res.provenance['n_integrations']}, "
          f"tile columns {res.provenance['tile_columns']}")
    print(f"pixels with >= 1 jump per integration: {100 * float(np.mean(j['jump_fraction'])):.3f} %; "
          f"in any integration {100 * j.attrs['any_jump_fraction']:.3f} %")
    eff = res.noise["effective_noise"].values
    print("effective noise (DN) vs groups: " + ", ".join(f"{v:.2f}" for v in eff[1:]))
    return 0


def _cmd_report(args, extra) -> int:
    import json

    from .config import ConfigError
    from .report import find_products, run_from_args
    from .run import check_output_dir

    log = _logger("report")
    _need("matplotlib", "daskramp report")
    _positive("--radius", args.radius, integer=False, allow_none=True)
    src = args.products[0] if len(args.products) == 1 else args.products
    _inputs_exist(args.products)
    found = find_products(src)
    if args.orders:
        try:
            json.loads(args.orders)
        except ValueError as err:
            raise ConfigError(f"--orders: not valid JSON ({err})") from None
    check_output_dir(Path(args.out))
    t0 = time.perf_counter()
    log.info("report of " + ", ".join(p.name for p in (found.rate, found.rateints, *found.ramps.values()) if p))
    index = run_from_args(args)
    log.info(f"report written in {time.perf_counter() - t0:.1f} s: {index}")
    print(index)
    return 0


def _cmd_demo(args, extra) -> int:
    from .demo import demo

    for name in ("nints", "segments"):
        _positive(f"--{name}", getattr(args, name), allow_none=False)
    summary = demo(args.out, nints=args.nints, segments=args.segments, cluster=_cluster_profile(args),
                   progress=not args.no_progress)
    _print_run_summary(summary)
    return 0


_COMMANDS = {
    "simulate": _cmd_simulate,
    "ingest": _cmd_ingest,
    "run": _cmd_run,
    "darks": _cmd_darks,
    "report": _cmd_report,
    "demo": _cmd_demo,
}


def one_line(err: BaseException) -> str:
    """An error's message on one line (continuation lines joined, whitespace collapsed)."""
    import re

    text = re.sub(r"^\[Errno \d+\] ", "", str(err))
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
