"""Run Detector1 on a cluster and write the products: what ``daskramp run`` does.

Before anything is submitted the run projects the memory of one task of every step for the
chosen chunking and compares it with the smallest worker's limit (:mod:`daskramp.engine.plan`):
by default the integration chunks and tile widths are chosen to fit; a chunking given
explicitly that cannot fit is refused with :class:`daskramp.engine.plan.MemoryBudgetError`.
While the graph runs a progress line and per-worker peak memory are collected
(:class:`daskramp.progress.RunMonitor`); ``report=`` saves dask's performance report.

Everything that can be checked without computing is checked by :func:`prepare` before a
cluster starts (settings, output location, inputs, parameters, references, a local
cluster's memory), then the output directory is locked and its products claimed
(:mod:`daskramp.io.outdir`: a rerun with the same fingerprint resumes or finds them
complete; another is refused unless ``overwrite``).  Failures of the running graph are
reported plainly: a full disk (:class:`OutputError`) and an input file that disappears
during the run (:class:`InputError`, naming the file).  Products are atomic (see
:mod:`daskramp.io.products`): nothing is marked complete before it is.  The classes of bad
input and what the user sees: ``docs/reliability.md``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from . import dims, pipeline
from . import steps as registry
from .cluster import ClusterProfile, connect, default_workers, parse_memory, worker_memory_limit
from .config import ConfigError, as_paths, from_files
from .engine import submit
from .engine.plan import check_held, plan_chunking, tile_chunks
from .engine.policy import by_segment, fused_ghost
from .engine.stages import check_exposures
from .io import crds as crds_io
from .io import ingest, open_exposure
from .io.outdir import Fingerprint, StaleProductsError, claim, lock_output
from .io.products import PROVENANCE_ATTR, is_complete, write_products
from .io.store import is_complete as store_is_complete
from .parsfile import changes, check_exposure
from .progress import RunMonitor, format_bytes, log_to, logging_configured

#: what a run does, one line per event (``daskramp run --log FILE``; :mod:`daskramp.progress`)
logger = logging.getLogger("daskramp.run")

#: ``frame_stats``: "compute" (default) evaluates the whole-frame statistics (refpix offsets,
#: jump's DO_NOT_USE planes) in a first streaming pass so the tiles then run independently;
#: "lazy" keeps them inside the one graph (see ``daskramp.pipeline.detector1``).
#: ``segments_in_flight``: an exposure of several segments is submitted one segment after
#: another, at most this many at once (default: two, or enough for a round of tiles on every
#: worker thread, ``daskramp.engine.submit.blocks_in_flight``; 0: the whole exposure as one graph)
WORKFLOW_SETTINGS = {"convert_fits", "steps", "stats_scope", "save_steps", "tile_columns", "tile_rows",
                     "integration_chunk", "frame_stats", "segments_in_flight"}


class OutputError(OSError):
    """The output location cannot be written (read-only, missing permission, disk full)."""


class InputError(FileNotFoundError):
    """An input file could not be read during the run (e.g. it disappeared)."""


def product_root(inputs: Sequence[Path | str]) -> str:
    """Product file root, as the official pipeline names it, from the first input:
    ``jw…_00001-seg001_nis_uncal.fits`` → ``jw…_00001_nis``.

    A Zarr store written by ``daskramp ingest`` is named after the uncal files it was
    converted from (recorded in the store), whatever the store is called; any other store
    after its own name (``exposure.zarr`` → ``exposure``).
    """
    first = Path(inputs[0])
    name = (_ingested_from(first) if first.is_dir() else None) or first.name
    for suffix in (".zarr", ".fits"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith("_uncal"):
        name = name[: -len("_uncal")]
    import re

    return re.sub(r"-seg\d{3}", "", name)


def _ingested_from(store: Path) -> str | None:
    """Name of the first uncal file a store was converted from (``daskramp_ingest`` in its
    root attributes), or None."""
    import json

    try:
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes") or {}
        name = attrs["daskramp_ingest"]["sources"][0]["name"]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return Path(str(name)).name or None


def check_output_dir(outdir: Path) -> None:
    """Create ``outdir`` and prove it writable with a probe file, or raise :class:`OutputError`."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / f".daskramp-write-probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x")
        probe.unlink()
    except OSError as err:
        why = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise OutputError(err.errno, f"output location {outdir} is not writable: {why}") from None


def _worker_threads(client) -> int:
    ws = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    return max([int(w.get("nthreads") or 1) for w in ws] or [1])


def _is_input(path: Path, inputs: Sequence[Path]) -> bool:
    """``path`` is one of the inputs or inside one (a Zarr store)."""
    path = path.resolve()
    for p in inputs:
        p = p.resolve()
        if path == p or p in path.parents:
            return True
    return False


def _translate(err: BaseException, inputs: Sequence[Path], outdir: Path) -> BaseException | None:
    """A clear error for a failure of the running graph, or None to re-raise it as is."""
    if not isinstance(err, OSError):
        return None
    fname = getattr(err, "filename", None)
    if err.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(outdir).free
        except OSError:
            free = -1
        return OutputError(
            errno.ENOSPC,
            f"output disk full while writing products in {outdir} ({free / 2**20:.1f} MiB free); "
            f"incomplete products were left as .partial and are not marked complete; rerun the same "
            f"command once space is available")
    if err.errno == errno.EROFS or err.errno == errno.EACCES and fname and str(outdir) in str(fname):
        return OutputError(err.errno, f"output location {outdir} is not writable: {err.strerror}")
    if isinstance(err, FileNotFoundError) or err.errno == errno.ENOENT:
        if fname and _is_input(Path(fname), inputs):
            return InputError(errno.ENOENT, f"input file disappeared during the run: {fname}; "
                              f"products not yet complete were not marked complete", fname)
    return None


def _zarr_complete(outdir: Path, root: str, names: Sequence[str]) -> bool:
    """Every Zarr product of a run is complete in ``outdir``: the graph has nothing to compute
    (missing FITS files are exported from the stores)."""
    return all(is_complete(outdir / f"{root}_{n}.zarr") for n in names)


#: bytes of one variable a summary task reads (whatever the exposure's size)
SUMMARY_TASK_BYTES = 32 * 2**20


def _open_for_summary(path) -> xr.Dataset:
    """A product store in blocks of whole stored chunks: column bands of ≥ 256 columns and as
    many integrations as keep a block near :data:`SUMMARY_TASK_BYTES` (a block of every
    integration would grow with the exposure: 663 MB per block of 16 segments)."""

    ds = xr.open_zarr(path, consolidated=False, chunks=None)
    var = ds["dq"] if "dq" in ds else next(iter(ds.data_vars.values()))
    stored = tuple(var.encoding.get("chunks") or var.shape)
    width = max(1, -(-256 // stored[-1])) * stored[-1]
    chunks = {dims.Y: -1, dims.X: width}
    if dims.INTEGRATION in var.dims:
        frame = var.dtype.itemsize * ds.sizes[dims.Y] * min(width, ds.sizes[dims.X])
        n = max(1, SUMMARY_TASK_BYTES // (frame * stored[0])) * stored[0]
        chunks[dims.INTEGRATION] = n
    return ds.chunk({d: c for d, c in chunks.items() if d in ds.dims})


def run(
    inputs: Sequence[str | Path],
    outdir: str | Path,
    *,
    refs: str | Path | None = None,
    config: Mapping | str | Path | Sequence[str | Path] | None = None,
    overrides: Mapping[str, str] | None = None,
    save_steps: Sequence[str] = (),
    cluster: ClusterProfile | None = None,
    fits: bool = True,
    quiet: bool = False,
    client=None,
    progress: bool | None = None,
    report: str | Path | None = None,
    overwrite: bool = False,
    workflow: str | Path | Sequence[str | Path] | None = None,
    crds: bool = False,
) -> dict:
    """Open the exposure, check memory, execute the graph on a dask cluster, write the products.

    Parameters
    ----------
    inputs : sequence of path
        The uncal FITS segments of one exposure, or one Zarr store.
    outdir : path
        Output directory (created; must be writable).
    refs, overrides, save_steps, config
        Reference files directory, per-reftype overrides, ramps to save, workflow settings
        (``steps``, ``stats_scope``, ``save_steps``, ``tile_columns``, ``tile_rows``,
        ``integration_chunk``).  ``config`` may also be a configuration file or a sequence
        of them: workflow YAML and official parameter files (ASDF, ``pars-*`` or written by
        ``export_config``), layered as :func:`daskramp.config.from_files` does.
    cluster : ClusterProfile, optional
        Where to run when no ``client`` is given.
    fits : bool
        Also write the FITS products.
    quiet : bool
        No cluster banner and no progress line.
    client : distributed.Client, optional
        Run on this client (left open).
    progress : bool, optional
        Show the progress line on stderr (default: ``not quiet``).
    report : path, optional
        Save dask's HTML performance report of the run there.
    overwrite : bool
        Replace products of this exposure made by another run (other inputs, parameters,
        references, …) instead of refusing; nothing of theirs survives.
    workflow : path or sequence of paths, optional
        The configuration file(s) ``config`` was read from (default: those given as
        ``config``).  Each is recorded in the provenance (``config_files``: name, sha256 and,
        for a parameter file, the values taken from it); one file's sha256 goes into the
        fingerprint (``workflow``), several files' into its settings.
    crds : bool
        Take every reference, and the parameter reference files, from the user's CRDS cache
        (``CRDS_PATH``, ``CRDS_CONTEXT``; :mod:`daskramp.io.crds`) instead of ``refs``: the
        parameter files go under ``config``, as the official pipeline puts them under the
        user's; ``overrides`` still beat CRDS's choice.  Exclusive with ``refs``.

    Returns
    -------
    dict
        ``outputs`` (paths), ``steps`` (statuses), ``wall_s``, ``uncal_MB``, ``pixel_groups``,
        ``throughput_MB_s``, ``tasks``, ``peak_memory_per_worker`` (bytes by worker name),
        ``memory_plan`` (text), ``tile_columns`` and ``tile_rows`` (the tiles the products were
        computed in), ``integration_chunk`` and figures from the products.

    Raises
    ------
    daskramp.engine.plan.MemoryBudgetError
        A task is projected not to fit the worker memory (nothing was submitted).
    OutputError
        The output location is not writable or the disk filled up.
    InputError
        An input file disappeared (or could not be opened) while the graph ran.
    daskramp.io.outdir.OutputLockError
        Another run holds the output directory.
    daskramp.io.outdir.StaleProductsError
        The output directory holds products of this exposure made by another run.
    ConfigError, ReferenceFileError, daskramp.dims.ExposureError
        A setting, parameter, reference or input that cannot give the products asked for.

    Everything that can be checked without computing (inputs, parameters, references, the
    output directory, its lock and what it already holds, and the memory of a local cluster)
    is checked before a cluster is started.
    """
    if config is not None and not isinstance(config, Mapping):
        files = as_paths(config)
        config, _ = from_files(files)
        if workflow is None:
            workflow = files
    config = dict(config or {})
    show = (not quiet) if progress is None else progress
    # the log goes where the application sends it (the command line: stderr, --log FILE);
    # a caller who set up no logging and asked for progress sees it on stderr
    with log_to(stderr=show and not logging_configured()):
        return _run(inputs, outdir, refs=refs, config=config, overrides=overrides,
                    save_steps=save_steps, cluster=cluster, fits=fits, quiet=quiet, client=client,
                    show=show, report=report, overwrite=overwrite, workflow=workflow, crds=crds)


def _run(inputs, outdir, *, refs, config, overrides, save_steps, cluster, fits, quiet, client, show,
         report, overwrite, workflow, crds=False) -> dict:
    log = logger.info
    t_start = time.perf_counter()
    prep = prepare(inputs, outdir, refs=refs, config=config, overrides=overrides,
                   save_steps=save_steps, report=report, workflow=workflow, cluster=cluster,
                   client=client, crds=crds)
    t0 = time.perf_counter()
    with lock_output(prep.outdir, log=log):
        state = claim(prep.outdir, prep.root, prep.fingerprint, overwrite=overwrite, log=log)
        if state == "resume":
            _check_products_fingerprint(prep)
        # logged once nothing can refuse the run any more: a refusal stays one line
        _log_prepared(prep, time.perf_counter() - t_start)
        if client is not None:
            paths, summary, figures, provenance = _execute(prep, client, fits=fits, show=show,
                                                           report=report, log=log)
        else:
            t_c = time.perf_counter()
            with connect(cluster, quiet=quiet) as c:
                _log_cluster(c, time.perf_counter() - t_c)
                paths, summary, figures, provenance = _execute(prep, c, fits=fits, show=show,
                                                               report=report, log=log)
    wall = time.perf_counter() - t0
    _log_finished(prep, provenance, paths, wall, figures.get("uncal_bytes", 0))
    nbytes = figures.pop("uncal_bytes")
    out = {
        "outputs": {k: str(v) for k, v in paths.items()},
        "steps": {k: v["status"] for k, v in provenance["steps"].items()},
        "run": "already complete" if figures.pop("already_complete") else
               ("resumed" if state == "resume" else "fresh"),
        "fingerprint": prep.fingerprint.digest[:16],
        "wall_s": wall,
        "uncal_MB": nbytes / 1e6,
        "throughput_MB_s": nbytes / 1e6 / wall,
        **figures,
        **summary,
    }
    if report is not None:
        out["report"] = str(report)
    return out


def _log_prepared(prep: Prepared, seconds: float) -> None:
    """The exposure, the references chosen and the steps that will run."""

    ds, a = prep.opened, prep.opened.attrs
    shape = " × ".join(str(ds.sizes[d]) for d in (dims.Y, dims.X))
    what = " ".join(str(a[k]) for k in ("INSTRUME", "DETECTOR", "EXP_TYPE", "SUBARRAY") if a.get(k))
    logger.info(f"{prep.root}: {what}; {len(dims.segment_bounds(ds))} segment(s), "
                f"{ds.sizes[dims.INTEGRATION]} integrations × {ds.sizes[dims.GROUP]} groups × "
                f"{shape} pixels")
    crds = getattr(prep.refs, "crds", None)
    if crds:
        logger.info(f"CRDS context {crds['context']} (crds {crds['version']}, {crds['mode']} "
                    f"best references, cache {crds['path']})")
    for rec in prep.config_files:
        if rec["format"] == "yaml":
            logger.info(f"configuration {rec['file']} (workflow YAML)")
            continue
        changed = changes(rec["values"])
        logger.info(f"configuration {rec['file']} ({'CRDS ' if rec.get('crds') else ''}"
                    f"official {rec['kind']} parameter file, "
                    f"{rec['class'].rsplit('.', 1)[-1]}): "
                    + (", ".join(f"{k}={v!r}" for k, v in changed.items()) or "step defaults only"))
    refs = prep.refs.provenance() if prep.refs is not None else {}
    for rt, rec in refs.items():
        if rec.get("path"):
            logger.info(f"reference {rt.upper()}: {rec['file']}")
        else:
            logger.info(f"reference {rt.upper()}: N/A ({rec.get('reason') or 'none'})")
    run_ = [n for n in registry.STEP_ORDER if n in prep.params and not prep.params[n].skip]
    skip = [n for n in registry.STEP_ORDER if n in prep.params and prep.params[n].skip]
    logger.info(f"steps switched on: {', '.join(run_) or 'none'}; switched off (skip): "
                f"{', '.join(skip) or 'none'} (a step switched on may still be SKIPPED by the "
                f"exposure, as the official pipeline does)")
    logger.info(f"inputs, parameters, references and output checked in {seconds:.1f} s; "
                f"products: {prep.outdir / prep.root}_*")


def _log_cluster(client, seconds: float) -> None:
    try:
        workers = list(client.scheduler_info(n_workers=-1).get("workers", {}).values())
    except Exception:  # noqa: BLE001 - the log must never break the run
        return
    threads = sorted({int(w.get("nthreads") or 1) for w in workers})
    mem = worker_memory_limit(client)
    logger.info(f"dask cluster {client.scheduler.address}: {len(workers)} worker(s) × "
                f"{'/'.join(map(str, threads)) or '?'} thread(s), "
                f"{format_bytes(mem) if mem else 'no memory limit'} each, ready in {seconds:.1f} s"
                + (f"; dashboard {client.dashboard_link}" if client.dashboard_link else ""))


def _log_finished(prep: Prepared, provenance: Mapping, paths: Mapping, wall: float,
                  nbytes: int) -> None:
    """Every step's status (with the references it used), the products and the time."""

    steps = provenance.get("steps") or {}
    files = provenance.get("reference_files") or {}
    for name in [n for n in registry.STEP_ORDER if n in steps] + [n for n in steps if n not in registry.STEP_ORDER]:
        rec = steps[name] if isinstance(steps[name], Mapping) else {"status": steps[name]}
        status = rec.get("status")
        used = [files[rt]["file"] for rt in (registry.spec(name).reftypes if name in registry.STEP_ORDER else ())
                if (files.get(rt) or {}).get("path")]
        detail = ", ".join(used) if status == "COMPLETE" else (rec.get("reason") or "")
        logger.info(f"{name}: {status}" + (f" ({detail})" if detail else ""))
    for key, path in paths.items():
        logger.info(f"product {key.replace('_', ' ')}: {path}")
    logger.info(f"done in {wall:.1f} s ({nbytes / 1e6:.1f} MB of uncal data, "
                f"{nbytes / 1e6 / wall if wall > 0 else 0:.1f} MB/s)")


@dataclass
class Prepared:
    """A run checked before any cluster starts: what it reads, computes and writes."""

    inputs: list[Path]
    outdir: Path
    root: str
    config: dict
    opened: xr.Dataset
    refs: object
    params: dict
    saved: list[str]
    stats_scope: str
    fingerprint: object
    ghost: int | None
    #: (chunked dataset, tile columns, memory plan) when the worker memory is known up front
    plan: tuple | None = None
    #: provenance records of the configuration files, in the order they were applied
    config_files: list = dataclasses.field(default_factory=list)


def prepare(inputs, outdir, *, refs=None, config=None, overrides=None, save_steps=(), report=None,
            workflow=None, cluster=None, client=None, crds=False) -> Prepared:
    """Check everything a run needs that can be checked without computing, in the order a user
    fixes them: settings, output location, inputs, parameters, references, memory.

    ``crds``: the references and parameter reference files come from the CRDS cache
    (:mod:`daskramp.io.crds`); the cache is checked with the settings, the lookups follow
    the opening of the inputs.

    Raises the errors listed in :func:`run`; nothing is written but the output directory.
    """
    config = dict(config or {})
    if crds and refs is not None:
        raise ConfigError("--crds and --refs exclude each other: the references come from the "
                          "CRDS cache or from a directory; give one")
    unknown = set(config) - WORKFLOW_SETTINGS
    if unknown:
        raise ConfigError(f"unknown workflow settings {sorted(unknown)}; known: {sorted(WORKFLOW_SETTINGS)}")
    stats_scope = config.get("stats_scope", "segment")
    if stats_scope not in ("segment", "exposure"):
        raise ConfigError(f"stats_scope must be 'segment' or 'exposure', got {stats_scope!r}")
    frame_stats = config.get("frame_stats", "compute")
    if frame_stats not in ("compute", "lazy"):
        raise ConfigError(f"frame_stats must be 'compute' or 'lazy', got {frame_stats!r}")
    saved = list(save_steps) or list(config.get("save_steps") or [])
    for name in saved:
        if name not in registry.STEP_ORDER or name in ("ramp_fit", "gain_scale"):
            raise ConfigError(f"save_steps: {name!r} is not a ramp step; choose from "
                              f"{', '.join(registry.STEP_ORDER[:-2])}")
    for key in ("tile_columns", "tile_rows", "integration_chunk", "segments_in_flight"):
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0
                              or (v == 0 and key != "segments_in_flight")):
            raise ConfigError(f"{key} must be a positive integer, got {v!r}")
    workflow = as_paths(workflow)
    for wf in workflow:
        if not wf.is_file():
            raise ConfigError(f"{wf}: workflow file not found")
    cache = None
    if crds:
        cache = crds_io.open_cache()
    outdir = Path(outdir)
    check_output_dir(outdir)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise InputError(errno.ENOENT, "no input given: uncal FITS segments of one exposure, or one Zarr store")
    for p in inputs:
        if not p.exists():
            raise InputError(errno.ENOENT, f"{p}: input not found", str(p))
    if report is not None:
        import importlib.util

        if importlib.util.find_spec("bokeh") is None:
            raise ConfigError("--report needs the bokeh package (pip install 'bokeh>=3.1')")
    opened = open_exposure(inputs if len(inputs) > 1 else inputs[0])
    crds_files = []
    if cache is not None:
        # CRDS parameter files under everything the user gave (spec 11 §4)
        crds_config, crds_files = crds_io.parameters(opened.attrs, cache, under=config)
        config = crds_io.layered_under(crds_config, config)
    params = pipeline.validate_steps(config.get("steps"))
    config_files = _config_files(workflow, opened)
    if crds_files:
        for rec in crds_files:
            check_exposure(rec, opened.attrs)
        config_files = crds_files + config_files
    check_exposures(params, opened)
    if cache is not None:
        refset = crds_io.reference_set(opened.attrs, params, overrides=overrides, cache=cache)
    else:
        refset = pipeline.reference_set(opened, refs, params, overrides, strict=True)
    root = product_root(inputs)
    settings = {"stats_scope": stats_scope}
    if cache is not None:
        settings["crds_context"] = cache.context
    if len(workflow) > 1:
        settings["config_files"] = [rec["sha256"] for rec in config_files]
    fingerprint = Fingerprint.make(
        inputs=inputs,
        steps={n: dataclasses.asdict(p) for n, p in params.items()},
        references=refset.provenance() if refset is not None else {},
        settings=settings,
        workflow=workflow[0] if len(workflow) == 1 else None,
        versions=pipeline.package_versions(),
    )
    ghost = fused_ghost(opened, params, saved)
    prep = Prepared(inputs=inputs, outdir=outdir, root=root, config=config, opened=opened,
                    refs=refset, params=params, saved=saved, stats_scope=stats_scope,
                    fingerprint=fingerprint, ghost=ghost, config_files=config_files)
    profile = cluster or ClusterProfile()
    local = client is None and not (profile.scheduler or os.environ.get("DASKRAMP_SCHEDULER"))
    if local:
        # a local cluster's worker memory is known before it starts: a plan that cannot fit
        # is refused before any process is spawned
        workers = profile.workers or default_workers()
        mem = parse_memory(profile.memory_limit, workers)
        prep.plan = plan_chunking(
            opened, memory_limit=mem, threads_per_worker=profile.threads_per_worker or 1,
            steps=config.get("steps"), stats_scope=stats_scope,
            tile_columns=config.get("tile_columns"),
            integration_chunk=config.get("integration_chunk"), ghost=ghost or 0,
            fused_chain=ghost is not None)
        if ghost is None:
            check_held(opened, params, memory_limit=mem, workers=workers)
    return prep


def _config_files(files: Sequence[Path], opened: xr.Dataset) -> list[dict]:
    """Provenance records of the configuration files (read again: the configuration given
    to the run is already merged), after the check a parameter file needs the exposure for
    (:func:`daskramp.parsfile.check_exposure`)."""
    records = from_files(files)[1] if files else []
    for rec in records:
        check_exposure(rec, opened.attrs)
    return records


def _check_products_fingerprint(prep: Prepared) -> None:
    """Complete products found for a resumed run carry the run's own fingerprint (products
    copied in beside a record of another run are refused)."""
    import json

    import zarr

    for name in ("rateints", "rate", *(f"{s}_ramp" for s in prep.saved)):
        path = prep.outdir / f"{prep.root}_{name}.zarr"
        if not is_complete(path):
            continue
        attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs
        try:
            digest = json.loads(attrs.get(PROVENANCE_ATTR) or "{}").get("fingerprint", {}).get("digest")
        except ValueError:
            digest = None
        if digest != prep.fingerprint.digest:
            raise StaleProductsError(
                f"{path} was not made by the run recorded in {prep.outdir} (its fingerprint "
                f"differs); choose another --out or rerun with --overwrite to replace it")


def _execute(prep: Prepared, client, *, fits: bool, show: bool, report, log):
    """Build, submit and write; returns ``(paths, summary, figures, provenance)``."""
    config, inputs, outdir = prep.config, prep.inputs, prep.outdir
    stats_scope, saved, ghost = prep.stats_scope, prep.saved, prep.ghost
    root = prep.root
    fused = ghost is not None
    if prep.plan is not None:
        ds, cols, plan = prep.plan
    else:
        mem = worker_memory_limit(client)
        threads = _worker_threads(client)
        ds, cols, plan = plan_chunking(
            prep.opened, memory_limit=mem, threads_per_worker=threads, steps=config.get("steps"),
            stats_scope=stats_scope, tile_columns=config.get("tile_columns"),
            integration_chunk=config.get("integration_chunk"), ghost=ghost or 0,
            fused_chain=ghost is not None)
    opened = prep.opened
    source = inputs
    convert = config.get("convert_fits")
    if convert is None:
        # the fused layout reads each tile's bytes straight from the uncal files; the
        # step-by-step layout needs a store written in column bands to do the same
        convert = not fused
    if any(p.is_file() for p in inputs) and convert:
        # uncal FITS arrive in whole frames; converting them to a store written in column
        # bands is what lets every later task read just its tile (resumable, once)
        store = outdir / f"{root}_uncal.zarr"
        log(f"converting {len(inputs)} uncal file(s) to {store}")
        t_conv = time.perf_counter()
        # a store finished by an earlier run of the same command is reused (resume)
        try:
            source = [store if store_is_complete(store) else ingest(inputs, store)]
        except OSError as err:
            clear = _translate(err, inputs, outdir)
            if clear is None:
                raise
            raise clear from err
        log(f"conversion done in {time.perf_counter() - t_conv:.1f} s")
    if fused:
        # the fused layout reads from the source itself, whatever its dask chunks
        ds = opened if source == inputs else open_exposure(source if len(source) > 1 else source[0])
    elif len(source) == 1 and source[0].is_dir():
        # a Zarr store is written in column bands: open it straight in the tile layout, so
        # each task reads only its own tile (no task ever holds whole frames)
        ds = open_exposure(source[0], chunks=tile_chunks(ds, cols, stats_scope))
    log(f"memory: {plan.describe()}")
    frame_stats = config.get("frame_stats", "compute")
    names = ["rateints", "rate", *(f"{s}_ramp" for s in saved)]
    complete = _zarr_complete(outdir, root, names)
    if complete:
        log(f"products of {root} already complete in {outdir} (same inputs, parameters and "
            f"references: fingerprint {prep.fingerprint.digest[:16]}); nothing to compute")
        frame_stats = "lazy"  # nothing will be computed: no first pass either
    if report is not None:
        from distributed import performance_report

        rep = performance_report(filename=str(report))
    else:
        rep = nullcontext()
    monitor = RunMonitor(client, stream=sys.stderr if show else None)
    # checkpoint stores of a step that needs whole frames (engine.checkpoint): beside the
    # products, where every worker writes; gone once the products are
    scratch = outdir / f".{root}_checkpoints.partial"
    t_compute = time.perf_counter()
    try:
        with rep, monitor:
            if frame_stats == "compute":
                # the first pass: refpix offsets and jump's DO_NOT_USE planes of whole frames
                monitor.stage = "frame statistics"
            result = pipeline.detector1(
                ds,
                prep.refs,
                steps=config.get("steps"),
                stats_scope=stats_scope,
                save_steps=saved,
                memory_limit=plan.budget,
                tile_columns=cols,
                tile_rows=config.get("tile_rows"),
                # on the cluster while this process submits the products
                frame_stats="submit" if frame_stats == "compute" else None,
                scratch=scratch,
            )
            provenance = dict(result.provenance)
            provenance["inputs"] = [str(p) for p in inputs]
            provenance["fingerprint"] = prep.fingerprint.to_dict()
            provenance["workflow"] = prep.fingerprint.workflow
            if prep.config_files:
                provenance["config_files"] = prep.config_files
            products = result.products()
            segments = getattr(result, "segments", None)
            in_flight = config.get("segments_in_flight")
            in_flight = None if in_flight is None else int(in_flight)
            if ((in_flight is None or in_flight > 0) and segments is not None
                    and len(segments.int_bounds) > 1 and frame_stats != "lazy"
                    and set(products) == {"rate", "rateints"} and by_segment(ds, prep.params)):
                # one segment after another: the cluster holds at most two segments'
                # tasks, however long the exposure
                tiles = len(segments.y_bounds) * len(segments.x_bounds)
                shown = in_flight or submit.blocks_in_flight(sum(client.nthreads().values()), tiles)
                n_blocks = len(segments.int_bounds)
                log(f"computing rateints and rate segment by segment: {n_blocks} segments of "
                    f"{tiles} tile(s), {min(shown, n_blocks)} in flight at a time")

                def _stage(a, n):
                    monitor.block_submitted(a, n, in_flight=shown)

                paths, values = submit.write_by_segment(
                    result, outdir, root=root, provenance=provenance, fits=fits,
                    client=client, in_flight=in_flight,
                    on_block=_stage)
            else:
                log(f"computing {', '.join(products)} in one graph")
                monitor.stage = "products"
                # the figures are reduced by the same graph that writes the stores
                paths, values = write_products(
                    products, outdir, root=root, provenance=provenance, fits=fits,
                    also=pipeline.summary_figures(products.get("rate"), products.get("rateints")))
    except OSError as err:
        clear = _translate(err, inputs, outdir)
        if clear is None:
            raise
        raise clear from err
    shutil.rmtree(scratch, ignore_errors=True)
    if not complete:
        log(f"products computed and written in {time.perf_counter() - t_compute:.1f} s "
            f"({monitor.done} tasks)")
    if values is not None:
        summary = pipeline.figures_of(values)
    else:
        # products found complete (a resumed run): figures from the written stores, as
        # summarising the lazy products would run the graph again; in column bands of a
        # few tens of MB, as a task per stored chunk would cost more in scheduling than
        # the reading does
        stores = {k[: -len("_zarr")]: _open_for_summary(v) for k, v in paths.items()
                  if k.endswith("_zarr")}
        summary = pipeline.summarize(stores.get("rate"), stores.get("rateints"))
    sizes = ds.sizes
    figures = {
        "uncal_bytes": ds[dims.DATA].size * 2,
        "pixel_groups": ds[dims.DATA].size,
        "already_complete": complete,
        **monitor.summary(),
        "memory_plan": plan.describe(),
        "tile_columns": provenance.get("tile_columns", cols),
        "tile_rows": provenance.get("tile_rows", sizes[dims.Y]),
        "integration_chunk": max(ds[dims.DATA].chunks[0]) if ds[dims.DATA].chunks else sizes[dims.INTEGRATION],
    }
    return paths, summary, figures, provenance
