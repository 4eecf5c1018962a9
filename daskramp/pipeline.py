"""calwebb_detector1 as one lazy graph: the public entry of the engine (no compute here).

:func:`detector1` validates the parameters, selects the references, records the provenance
and hands the exposure to the engine (:mod:`daskramp.engine`): the ordered stages of the
step registry run fused, one task per tile (:mod:`daskramp.engine.fused`), or step by step
(:mod:`daskramp.engine.stepwise`), as the fusion policy says (:mod:`daskramp.engine.policy`).
:func:`summarize` gives a few figures of the products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import xarray as xr

from . import dims
from . import steps as registry
from .config import ConfigError
from .engine.checkpoint import frame_step
from .engine.fused import detector1_fused
from .engine.plan import plan_tiles, tile_shape
from .engine.policy import unsupported
from .engine.stages import (
    Detector1Result,
    check_exposures,
    figures_of,
    package_versions,
    reference_set,
    step_params,
    summarize,
    summary_figures,
    validate_steps,
)
from .engine.stepwise import detector1_stepwise, open_tiled
from .io import open_exposure

__all__ = ["Detector1Result", "detector1", "figures_of", "open_tiled", "plan_tiles", "reference_set",
           "step_params", "summarize", "summary_figures", "tile_shape", "validate_steps"]


def detector1(
    exposure,
    refs=None,
    *,
    steps: Mapping[str, Mapping] | None = None,
    stats_scope: str = "segment",
    save_steps: Sequence[str] = (),
    memory_limit: int | None = None,
    tile_columns: int | None = None,
    overrides: Mapping[str, str] | None = None,
    frame_stats: Mapping | str | None = None,
    fused: bool | None = None,
    tile_rows: int | None = None,
    scratch=None,
) -> Detector1Result:
    """Build the calwebb_detector1 graph for an exposure; nothing is computed.

    Parameters
    ----------
    exposure : xarray.Dataset or path(s)
        The exposure Dataset (see :mod:`daskramp.dims`), a Zarr store or uncal FITS files.
    refs : RefSet, path or None
        Reference files: a :class:`daskramp.io.refs.RefSet`, a directory of CRDS-format FITS
        files (every reference an active step needs must be found there or in ``overrides``,
        else :class:`~daskramp.io.refs.ReferenceFileError`), or None (steps that need a
        reference are skipped, as with "N/A", reason "no reference files given").
    steps : mapping
        ``{step: {param: value}}`` with the official parameter names (or ``{step: Params}``);
        ``{"skip": True}`` skips.  Validated before anything else (:func:`validate_steps`): a
        value that is not allowed raises :class:`ConfigError` naming ``steps.<step>.<param>``.
    stats_scope : {"segment", "exposure"}
        Pool jump/ramp_fit statistics per uncal segment (the official behaviour) or over the
        whole stitched exposure.
    save_steps : sequence of str
        Steps whose output ramp is returned in ``intermediates`` (like ``save_results``).
    memory_limit : int, optional
        Bytes per worker task budget used to size the pixel tiles of jump/ramp_fit.
    tile_columns : int, optional
        Columns of a pixel tile (default: from ``memory_limit``, :func:`plan_tiles`).
    tile_rows : int, optional
        Rows of a tile in the fused layout.  By default the pixels of an all-rows ×
        ``tile_columns`` band are laid out as the shorter, wider tile that costs least to read
        and compute (:func:`tile_shape`); the step-by-step layout always uses all rows.
    frame_stats : mapping, "compute" or "submit", optional
        Whole-frame statistics that tile-local work cannot see: refpix's per-frame
        reference-pixel offsets and jump's "every pixel DO_NOT_USE" planes.  By default they
        are lazy reductions inside the one graph (``result.frame_stats``), which then has a
        barrier: every tile must pass the early steps before the first tile can be corrected.
        ``"compute"`` evaluates them first (a streaming pass that keeps only reference pixels
        and flags, through the active dask scheduler) and builds the graph on the results,
        so tiles then flow through independently with bounded memory; ``"submit"`` does the
        same on a dask.distributed client without waiting for them: they are computed on the
        cluster while the caller builds and submits the product graph, whose tiles wait for
        them there (``result.frame_stats`` then holds delayed values; without a distributed
        client it is ``"compute"``); a mapping passes results computed earlier.
    fused : bool, optional
        Run the chain as one task per tile (:mod:`daskramp.engine.fused`; same products).  Default:
        whenever no intermediate is saved and the exposure is not held in memory; ``False``
        builds one dask layer per step.
    scratch : path, optional
        Directory of the checkpoint stores the fused layout writes when a step that needs
        whole frames runs (clean_flicker_noise: :mod:`daskramp.engine.checkpoint`), about 5
        bytes per pixel and group of one segment; it must be visible to every worker.
        Default: a new temporary directory, removed when this process exits (``daskramp
        run`` uses the output directory and removes the stores as the products are written).

    Returns
    -------
    Detector1Result
        ``rate`` (y, x) and ``rateints`` (integration, y, x) lazy Datasets in DN/s, the
        requested intermediates and a provenance record.
    """
    if not isinstance(exposure, xr.Dataset):
        exposure = open_exposure(exposure)
    ds = dims.validate(exposure)
    # every step parameter is checked here, before either engine is chosen; both engines run
    # with these validated Params (nothing reads the raw ``steps`` mapping again)
    params = validate_steps(steps)
    check_exposures(params, ds)
    ramp = registry.ramp_step_names()
    for name in save_steps:
        if name not in ramp:
            raise ConfigError(f"save_steps: {name!r} is not a ramp step; choose from {ramp}")
    if stats_scope not in ("segment", "exposure"):
        raise ConfigError(f"stats_scope must be 'segment' or 'exposure', got {stats_scope!r}")
    refs = reference_set(ds, refs, params, overrides)

    provenance: dict = {
        "pipeline": "calwebb_detector1",
        "stats_scope": stats_scope,
        "steps": {},
        "reference_files": refs.provenance() if refs is not None else {},
        "versions": package_versions(),
    }
    crds = getattr(refs, "crds", None)
    if crds:
        # files CRDS chose (daskramp.io.crds): the context, as the official products record it
        provenance["crds"] = dict(crds)

    if fused is None:
        fused = not save_steps
    if fused:
        why = unsupported(ds, params)
        if why is None:
            if scratch is None and frame_step(params) is not None:
                scratch = _temporary_scratch()
            return detector1_fused(
                ds, refs, params=params, provenance=provenance, stats_scope=stats_scope,
                memory_limit=memory_limit, tile_columns=tile_columns, frame_stats=frame_stats,
                tile_rows=tile_rows, scratch=scratch)
        provenance["fused"] = f"not used: {why}"

    return detector1_stepwise(ds, refs, params=params, provenance=provenance, stats_scope=stats_scope,
                              save_steps=save_steps, memory_limit=memory_limit, tile_columns=tile_columns,
                              frame_stats=frame_stats)


def _temporary_scratch() -> str:
    """A new temporary directory for checkpoint stores, removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="daskramp-checkpoints-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
