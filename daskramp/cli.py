"""Command line: ``daskramp {simulate,ingest,run,demo,darks,report}``."""

from __future__ import annotations

import argparse
import sys

REFTYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", help="address of a running dask scheduler (or $DASKRAMP_SCHEDULER)")
    g.add_argument("--cluster", help="cluster profile YAML (workflows/clusters/*.yaml)")
    g.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    g.add_argument("--threads-per-worker", type=int, help="threads per local worker (default 1)")
    g.add_argument("--memory-limit", help="memory per local worker, e.g. 2GB (default: RAM / workers)")


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daskramp", description=__doc__)
    # --debug is accepted before or after the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error instead of its one-line message")
    p.add_argument("--debug", action="store_true", default=False,
                   help="show the full traceback of an error instead of its one-line message")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser

    s = sub.add_parser("simulate", help="write a synthetic exposure (uncal FITS + reference files + truth)")
    s.add_argument("outdir")
    s.add_argument("--preset", default="niriss-soss", choices=["niriss-soss", "nircam-full", "nircam-dark"])
    s.add_argument("--nints", type=int, help="integrations per segment")
    s.add_argument("--ngroups", type=int)
    s.add_argument("--segments", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)

    i = sub.add_parser("ingest", help="convert one exposure's uncal segments to a Zarr store")
    i.add_argument("uncal", nargs="+")
    i.add_argument("--out", required=True, help="output store (STORE.zarr)")
    i.add_argument("--chunk-mb", type=float, default=64.0, help="uncompressed MB per integration chunk")
    i.add_argument("--overwrite", action="store_true")
    _add_cluster_args(i)

    r = sub.add_parser("run", help="run calwebb_detector1 on uncal segments or a Zarr store")
    r.add_argument("inputs", nargs="+", help="uncal FITS segments of one exposure, or a Zarr store")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--refs", help="directory of CRDS-format reference files")
    r.add_argument("--config", help="workflow YAML (workflows/*.yaml)")
    r.add_argument("--save-steps", default="", help="comma-separated steps whose ramps are saved")
    r.add_argument("--stats-scope", choices=["segment", "exposure"])
    r.add_argument("--no-fits", action="store_true", help="write Zarr products only")
    r.add_argument("--overwrite", action="store_true",
                   help="replace products of this exposure in --out made by another run (other inputs, "
                        "parameters or references); without it such a run is refused")
    r.add_argument("--report", metavar="HTML", help="save dask's performance report of the run (HTML)")
    r.add_argument("--no-progress", action="store_true", help="no progress line (it goes to stderr)")
    r.add_argument("--tile-columns", type=int, help="columns per jump/ramp_fit tile (default: from worker memory)")
    r.add_argument("--tile-rows", type=int,
                   help="rows per tile (default: the tile of --tile-columns × all rows reshaped to read fewer rows)")
    r.add_argument("--integration-chunk", type=int,
                   help="integrations per block of the pixel-local steps (default: from worker memory)")
    for rt in REFTYPES:
        r.add_argument(f"--override-{rt}", metavar="FILE", help=f"use FILE as the {rt.upper()} reference ('N/A' to skip)")
    _add_cluster_args(r)

    d = sub.add_parser("demo", help="simulate a small exposure, convert it, run Detector1, summarise")
    d.add_argument("--out", default="daskramp-demo", help="working directory (default ./daskramp-demo)")
    d.add_argument("--nints", type=int, default=12, help="integrations per segment")
    d.add_argument("--segments", type=int, default=2)
    _add_cluster_args(d)
    dk = sub.add_parser("darks", help="build a DARK reference file from dark exposures")
    from .darks import add_arguments as _darks_args

    _darks_args(dk)
    _add_cluster_args(dk)
    from .report import add_report_arguments

    add_report_arguments(sub.add_parser("report", help="PNG figures and index.html of a products directory"))
    return p


def _print_summary(summary: dict) -> None:
    for k, v in summary.items():
        if isinstance(v, dict):
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
    from .config import ConfigError, layered

    try:
        if extra and args.command != "run":
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        if args.command == "simulate":
            from .simulate import simulate

            res = simulate(args.outdir, preset=args.preset, nints=args.nints, ngroups=args.ngroups,
                           segments=args.segments, seed=args.seed)
            for f in res.uncal_files:
                print(f)
            print(f"reference files: {res.refs_dir}")
            print(f"truth: {res.truth_path}")
            return 0
        if args.command == "ingest":
            from .cluster import connect
            from .io import ingest
            from .progress import RunMonitor

            with connect(_cluster_profile(args)) as client, RunMonitor(client):
                out = ingest(args.uncal, args.out, chunk_mb=args.chunk_mb, overwrite=args.overwrite)
            print(out)
            return 0
        if args.command == "run":
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
            overrides = {rt: getattr(args, f"override_{rt}") for rt in REFTYPES if getattr(args, f"override_{rt}")}
            save = [s for s in args.save_steps.split(",") if s]
            summary = run(args.inputs, args.out, refs=args.refs, config=cfg, overrides=overrides,
                          save_steps=save, cluster=_cluster_profile(args), fits=not args.no_fits,
                          progress=not args.no_progress, report=args.report,
                          overwrite=args.overwrite, workflow=args.config)
            _print_run_summary(summary)
            return 0
        if args.command == "darks":
            from .darks import main as darks_main

            return darks_main(args, cluster=_cluster_profile(args))
        if args.command == "report":
            from .report import run_from_args

            print(run_from_args(args))
            return 0
        if args.command == "demo":
            from .demo import demo

            summary = demo(args.out, nints=args.nints, segments=args.segments, cluster=_cluster_profile(args))
            _print_summary(summary)
            return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"daskramp {args.command}: interrupted; nothing unfinished was marked complete, "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    except (ConfigError, OSError, ValueError, MemoryError) as err:
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
    return 1


def one_line(err: BaseException) -> str:
    """An error's message on one line (continuation lines joined, whitespace collapsed)."""
    import re

    text = re.sub(r"^\[Errno \d+\] ", "", str(err))
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
