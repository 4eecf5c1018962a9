"""DARK reference files from many dark exposures: ``daskramp darks``.

Every input exposure runs through Detector1 up to and including jump (group_scale, dq_init,
saturation, superbias, refpix, linearity, jump; dark_current, charge_migration,
clean_flicker_noise and ramp_fit are skipped).  Then, per pixel and per group ``g``, the
differences

    d[i, g] = data[i, g] − data[i, 0]        (linear DN, one value per integration i)

of **all integrations of all exposures** are sigma-clipped (centre = median, width = standard
deviation of the kept values, ``sigma`` × width, up to ``maxiters`` passes, as
``astropy.stats.sigma_clip``) and averaged.  A difference is excluded when group ``g`` is
DO_NOT_USE or SATURATED, when group 0 is, or when any group ``1 … g`` of that integration
has JUMP_DET: everything from the first cosmic-ray hit of an integration onward is dropped.

Layout of the DARK (spec 01 §2, ``jwst.datamodels.DarkModel``):

* ``SCI`` (ngroups, y, x) float32 DN: the clipped mean of ``d[·, g]``.  Plane 0 is exactly 0:
  the DARK convention is "dark signal per frame with its own frame 0 subtracted" (spec 01 §2,
  the simulator's and CRDS's NIR darks).  Averaging per-integration differences rather than
  subtracting the mean of group 0 from the mean of group g gives the same expectation but
  cancels whatever is common to the reads of one integration (reset level, residual bias),
  and makes the scatter of ``d`` the effective noise of a ramp of g + 1 groups.
* ``ERR`` (ngroups, y, x) float32 DN: the standard error of that mean, ``std(d)/√N`` (N kept
  samples), i.e. the uncertainty of the reference value itself, which is what the pipeline
  subtracts from every science integration (``err="std"`` writes the scatter of one
  integration instead).  The scatter is always available in the statistics store.
* ``DQ`` (y, x) uint32: UNRELIABLE_DARK where some plane ``g ≥ 1`` kept fewer than
  ``min_samples`` values; ``DQ_DEF``; ``AVDRKCUR`` (y, x) float32 e⁻/s, the dark rate of the
  last plane times the gain (when a GAIN reference is available), which dark_current hands
  to ramp_fit's Poisson variance.
* PRIMARY: REFTYPE=DARK, INSTRUME, DETECTOR, SUBARRAY, SUBSTRT1/2, SUBSIZE1/2, FASTAXIS,
  SLOWAXIS, READPATT, NFRAMES, GROUPGAP, NGROUPS (of the inputs, so dark_current uses the
  planes directly), NOUTPUTS, EXP_TYPE, USEAFTER, PEDIGREE, DESCRIP, AUTHOR, AVDRKCUR
  (median over active pixels, e⁻/s) and the number of exposures and integrations used.

Memory
------
The statistics are per pixel, but need every integration of every exposure of that pixel,
while the inputs arrive by integration.  The pipeline already works on *pixel tiles* (every
integration of a segment × all groups × all rows × a band of columns), so one reduction task
takes the same column band of every exposure's jump output and concatenates them: its
memory is ``DARK_TILE_FACTOR × 4 bytes × N_integrations(total) × ngroups × ny × columns``.
The tile width is chosen from that projection and the per-task budget before anything runs
(:func:`daskramp.engine.plan.plan_dark_tiles`; all exposures use the same width so their tiles line up), and a
width of one column that still does not fit is refused with :class:`MemoryError`.  The
whole-frame statistics of the early steps (refpix offsets, jump's all-DO_NOT_USE planes) are
computed first in one streaming pass over all exposures, so tiles flow independently.
The clipped statistics, per-integration jump counts and the number of CR-affected
integrations go into a Zarr store in the same single ``dask.compute`` (the graph runs once);
the FITS file is then streamed plane by plane from that store.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import xarray as xr

from . import dims
from . import dq as dqflags
from .cluster import worker_memory_limit
from .config import ConfigError
from .engine.plan import DARK_TILE_FACTOR, plan_dark_tiles, task_budget, tile_chunks
from .io import open_exposure
from .io.fitswrite import FITS_BLOCK, dq_def_hdu
from .io.products import image_header
from .io.refs import RefSet
from .pipeline import detector1, plan_tiles, validate_steps
from .steps._apply import map_ramp_blocks

#: per-task budget used when neither ``memory_limit`` nor a dask client says otherwise
DEFAULT_TASK_BYTES = 1 << 30

#: steps that make a dark ramp: everything up to jump except dark_current (and the optional
#: steps, which stay at their defaults); ramp_fit and gain_scale are not needed
DARK_STEPS = {
    "dark_current": {"skip": True},
    "ramp_fit": {"skip": True},
    "gain_scale": {"skip": True},
}

#: keywords every input must share for the DARK to make sense
MATCH_KEYWORDS = ("INSTRUME", "DETECTOR", "SUBARRAY", "SUBSTRT1", "SUBSTRT2", "SUBSIZE1",
                  "SUBSIZE2", "FASTAXIS", "SLOWAXIS", "NOUTPUTS", "READPATT", "NGROUPS",
                  "NFRAMES", "GROUPGAP")

#: fields of :func:`dark_statistics` output (leading axis)
FIELDS = ("mean", "std", "nsamples", "n_jumped")

_EXCLUDE = dqflags.DO_NOT_USE | dqflags.SATURATED


# --------------------------------------------------------------------------------- kernels


def _clip_one(buf, m, sigma, maxiters):
    """Sigma-clip ``buf[:m]`` in place (kept values packed at the front); return the count."""
    for _ in range(maxiters):
        if m < 2:
            break
        med = np.median(buf[:m])
        s = np.std(buf[:m])
        k = 0
        lim = sigma * s
        for j in range(m):
            if abs(buf[j] - med) <= lim:
                buf[k] = buf[j]
                k += 1
        if k == m:
            break
        m = k
    return m


_clip_one_nb = numba.njit(cache=True)(_clip_one)


@numba.njit(cache=True)
def _dark_statistics_nb(data, groupdq, sigma, maxiters, out):
    nint, ng, ny, nx = data.shape
    buf = np.empty(nint, np.float64)
    first_jump = np.empty(nint, np.int64)
    for y in range(ny):
        for x in range(nx):
            for i in range(nint):
                first_jump[i] = ng
                if groupdq[i, 0, y, x] & 3:  # DO_NOT_USE | SATURATED in group 0: no reference read
                    first_jump[i] = 0
                    continue
                for g in range(1, ng):
                    if groupdq[i, g, y, x] & 4:  # JUMP_DET
                        first_jump[i] = g
                        break
            for g in range(ng):
                m = 0
                nj = 0
                for i in range(nint):
                    if first_jump[i] <= g and first_jump[i] > 0:
                        nj += 1
                    if g >= first_jump[i] or groupdq[i, g, y, x] & 3:
                        continue
                    buf[m] = np.float64(data[i, g, y, x]) - np.float64(data[i, 0, y, x])
                    m += 1
                m = _clip_one_nb(buf, m, sigma, maxiters)
                out[3, g, y, x] = nj
                out[2, g, y, x] = m
                if m == 0:
                    out[0, g, y, x] = np.nan
                    out[1, g, y, x] = np.nan
                    continue
                mean = 0.0
                for j in range(m):
                    mean += buf[j]
                mean /= m
                out[0, g, y, x] = mean
                if m < 2:
                    out[1, g, y, x] = np.nan
                    continue
                ss = 0.0
                for j in range(m):
                    ss += (buf[j] - mean) ** 2
                out[1, g, y, x] = math.sqrt(ss / (m - 1))


def _dark_statistics_numpy(data, groupdq, sigma, maxiters):
    nint, ng, ny, nx = data.shape
    gdq = np.asarray(groupdq)
    # an unusable group 0 leaves no reference read: the whole integration drops out
    ok0 = (gdq[:, 0] & _EXCLUDE) == 0
    # a jump lies between two reads, so group 0 cannot hold one (and never gets JUMP_DET)
    hit = (gdq & dqflags.JUMP_DET) != 0
    hit[:, 0] = False
    jumped = np.logical_or.accumulate(hit, axis=1)
    valid = ok0[:, None] & ~jumped & ((gdq & _EXCLUDE) == 0)
    n_jumped = (jumped & ok0[:, None]).sum(axis=0)
    d = np.asarray(data, np.float64) - np.asarray(data, np.float64)[:, :1]
    keep = valid.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN / single-value slices
        for _ in range(maxiters):
            vals = np.where(keep, d, np.nan)
            n = keep.sum(axis=0)
            med = np.nanmedian(vals, axis=0)
            s = np.nanstd(vals, axis=0)
            new = keep & ((np.abs(d - med) <= sigma * s) | (n < 2))
            if np.array_equal(new, keep):
                break
            keep = new
        vals = np.where(keep, d, np.nan)
        n = keep.sum(axis=0)
        mean = np.nanmean(vals, axis=0)
        std = np.where(n >= 2, np.nanstd(vals, axis=0, ddof=1), np.nan)
    return np.stack([mean, std, n, n_jumped]).astype(np.float32)


def dark_statistics(data, groupdq, *, sigma=3.0, maxiters=5, engine="numba"):
    """Clipped statistics of the dark signal per pixel and group, over all integrations.

    Parameters
    ----------
    data : numpy.ndarray, (integration, group, y, x) float32, linear DN
        Ramps after superbias, refpix and linearity (no dark subtraction).
    groupdq : numpy.ndarray, (integration, group, y, x) uint8
        Group DQ after jump.
    sigma : float
        Clipping threshold in standard deviations about the median.
    maxiters : int
        At most this many clipping passes (stops earlier when nothing changes).
    engine : {"numba", "numpy"}
        Compiled per-pixel loop, or the vectorised reference implementation.

    Returns
    -------
    numpy.ndarray, (4, group, y, x) float32
        ``[mean, std, nsamples, n_jumped]`` of ``d[i, g] = data[i, g] − data[i, 0]``: the
        clipped mean (DN; NaN without samples), the sample standard deviation of the kept
        values (ddof = 1; NaN below 2 samples), the number of kept values, and the number of
        integrations excluded at group g because a jump was flagged in groups 1 … g.
        ``d[i, g]`` is used only if group 0 and group g are neither DO_NOT_USE nor SATURATED
        and no group 1 … g has JUMP_DET (JUMP_DET on group 0 is ignored: a jump lies between
        two reads).
    """
    if data.shape != groupdq.shape or data.ndim != 4:
        raise ValueError(f"data {data.shape} and groupdq {groupdq.shape} must be the same 4-D shape")
    if engine == "numpy":
        return _dark_statistics_numpy(data, groupdq, float(sigma), int(maxiters))
    if engine != "numba":
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    out = np.empty((len(FIELDS), *data.shape[1:]), np.float32)
    _dark_statistics_nb(np.ascontiguousarray(data), np.ascontiguousarray(groupdq, np.uint8),
                        float(sigma), int(maxiters), out)
    return out


def jump_counts(groupdq, pixeldq):
    """Cosmic-ray counts per integration and column.

    Parameters
    ----------
    groupdq : numpy.ndarray, (integration, group, y, x) uint8
    pixeldq : numpy.ndarray, (y, x) uint32

    Returns
    -------
    numpy.ndarray, (3, integration, x) float32
        Per integration and column, over non-reference pixels: pixels with at least one
        JUMP_DET group, JUMP_DET pixel-groups, and the number of such pixels.
    """
    active = (np.asarray(pixeldq) & dqflags.REFERENCE_PIXEL) == 0
    jumped = (np.asarray(groupdq) & dqflags.JUMP_DET) != 0
    pix = (jumped.any(axis=1) & active).sum(axis=1)
    grp = (jumped & active).sum(axis=(1, 2))
    act = np.broadcast_to(active.sum(axis=0), pix.shape)
    return np.stack([pix, grp, act]).astype(np.float32)


# --------------------------------------------------------------------------------- planning


def _budget(memory_limit) -> tuple[int | None, str]:
    if memory_limit is not None:
        return int(memory_limit), "given"
    try:
        from distributed import get_client

        client = get_client()
        threads = max([int(w.get("nthreads") or 1)
                       for w in client.scheduler_info(n_workers=-1).get("workers", {}).values()] or [1])
        b = task_budget(worker_memory_limit(client), threads_per_worker=threads)
        if b:
            return b, "worker memory limit"
    except (ImportError, ValueError):
        pass
    return DEFAULT_TASK_BYTES, "default"


# --------------------------------------------------------------------------------- inputs


_SEG = re.compile(r"-seg\d{3}")


def group_inputs(inputs: Sequence) -> list:
    """Group input paths into exposures: uncal files differing only in ``-segNNN`` form one.

    Zarr stores and xarray Datasets stand alone; a nested sequence is taken as the files of
    one exposure.  Order of first appearance is kept.
    """
    groups: dict = {}
    out: list = []
    for item in inputs:
        if isinstance(item, xr.Dataset) or (not isinstance(item, (str, os.PathLike))):
            out.append(item)
            continue
        p = Path(item)
        if p.suffix.lower() in (".fits", ".fit"):
            key = (str(p.parent), _SEG.sub("", p.name))
            if key not in groups:
                groups[key] = []
                out.append(groups[key])
            groups[key].append(p)
        else:
            out.append(p)
    return [sorted(g) if isinstance(g, list) else g for g in out]


def _open(item) -> xr.Dataset:

    if isinstance(item, xr.Dataset):
        return item
    if isinstance(item, list) and len(item) == 1:
        item = item[0]
    return open_exposure(item)


def _reopen_tiled(item, ds: xr.Dataset, cols: int) -> xr.Dataset:

    if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
        return dims.validate(open_exposure(item, chunks=tile_chunks(ds, cols)))
    return ds


def check_consistent(exposures: Sequence[xr.Dataset]) -> dict:
    """The attributes of the first exposure, once every exposure matches it in the
    :data:`MATCH_KEYWORDS`; a mismatch is one line naming the exposure and the keywords."""
    first = exposures[0].attrs
    for k, ds in enumerate(exposures[1:], start=2):
        bad = {key: (first.get(key), ds.attrs.get(key)) for key in MATCH_KEYWORDS
               if first.get(key) != ds.attrs.get(key)}
        if bad:
            diffs = ", ".join(f"{key} {a!r} vs {b!r}" for key, (a, b) in bad.items())
            raise ConfigError(f"darks: exposure {k} does not match exposure 1: {diffs}")
    return dict(first)


# --------------------------------------------------------------------------------- result


@dataclass
class DarkResult:
    """What :func:`make_dark` produced.

    Attributes
    ----------
    path : Path
        The DARK reference FITS file.
    stats : xarray.Dataset
        Opened (lazily) from the statistics store: ``sci``, ``err``, ``std`` (scatter of
        ``d`` per integration, DN), ``nsamples``, ``n_jumped`` (group, y, x); ``dq`` and
        ``dark_rate`` (DN/s, last plane / its time) (y, x); per integration
        ``jump_pixels``, ``jump_groups``, ``active_pixels``.
    jumps : xarray.Dataset
        Per integration: ``jump_fraction`` (pixels with ≥ 1 JUMP_DET / active pixels),
        ``jump_rate`` (JUMP_DET pixel-groups per active pixel per second of the ramp); scalar
        ``any_jump_fraction`` (pixels hit in at least one integration).
    noise : xarray.Dataset
        Per group k: ``effective_noise`` (median over good pixels of std(d[·, k]), DN),
        ``readnoise_only`` (median CDS read noise), ``expected`` (read noise ⊕ dark shot
        noise).
    provenance : dict
    """

    path: Path
    stats: xr.Dataset
    jumps: xr.Dataset
    noise: xr.Dataset
    provenance: dict = field(default_factory=dict)


def _dark_store_path(out: Path) -> Path:
    name = out.name[:-5] if out.name.endswith(".fits") else out.name
    return out.with_name(name + "_stats.zarr")


def make_dark(
    inputs,
    out,
    *,
    refs=None,
    sigma: float = 3.0,
    maxiters: int = 5,
    min_samples: int = 5,
    err: str = "sem",
    steps: Mapping[str, Mapping] | None = None,
    overrides: Mapping[str, str] | None = None,
    memory_limit: int | None = None,
    tile_columns: int | None = None,
    stats_store=None,
    header: Mapping | None = None,
    mask_do_not_use: bool = False,
    engine: str = "numba",
) -> DarkResult:
    """Build a DARK reference file from dark exposures (see the module docstring).

    Parameters
    ----------
    inputs : sequence
        Uncal FITS files (segments of one exposure are grouped by name), Zarr stores written by
        :func:`daskramp.io.ingest`, or exposure Datasets.  All must share the detector,
        subarray and readout (:data:`MATCH_KEYWORDS`).
    out : path
        Output DARK FITS file (e.g. ``jwst_nircam_dark_<name>.fits``).
    refs : RefSet or path, optional
        Reference files for dq_init … jump (a directory of CRDS-format files); jump needs
        GAIN and READNOISE.
    sigma, maxiters : float, int
        Sigma clipping of the differences over integrations.
    min_samples : int
        Planes g ≥ 1 with fewer kept samples flag the pixel UNRELIABLE_DARK.
    err : {"sem", "std"}
        ERR = std/√N (uncertainty of the dark value, default) or std (scatter of one ramp).
    steps : mapping, optional
        Step parameters for the Detector1 part (official names); dark_current is always
        skipped.
    overrides : mapping, optional
        Reference overrides per reftype (as ``detector1``).
    memory_limit : int, optional
        Bytes one task may use; default from the active dask client's workers, else 1 GiB.
    tile_columns : int, optional
        Force the tile width.
    stats_store : path, optional
        Where the statistics Zarr store goes (default ``<out stem>_stats.zarr``).
    header : mapping, optional
        Primary keywords to set or override (USEAFTER, PEDIGREE, DESCRIP, AUTHOR, …).
    mask_do_not_use : bool
        Apply the MASK's DO_NOT_USE in dq_init (it marks every group of hot pixels unusable,
        so by default it is cleared while building a dark; see :func:`strip_mask_do_not_use`).
    engine : {"numba", "numpy"}

    Returns
    -------
    DarkResult
    """
    import dask


    if err not in ("sem", "std"):
        raise ConfigError(f"darks: err must be 'sem' or 'std', got {err!r}")
    # every parameter checked (one-line ConfigError naming steps.<step>.<param>) before
    # anything is read; the skip asked for is the validated one ("false" → False)
    checked = validate_steps(steps)
    user_steps = {k: dict(v or {}) for k, v in (steps or {}).items()}
    if "skip" in user_steps.get("dark_current", {}) and not checked["dark_current"].skip:
        raise ConfigError("darks: dark_current cannot run when building a DARK")
    if not checked["group_1overf"].skip:
        raise ConfigError("darks: group_1overf cannot run when building a DARK (it removes the "
                          "background of every line, the dark signal itself)")
    run_steps = {**user_steps}
    for name, p in DARK_STEPS.items():
        run_steps[name] = {**run_steps.get(name, {}), **p}

    items = group_inputs(list(inputs))
    if not items:
        raise ConfigError("darks: no input exposures")
    exposures = [dims.validate(_open(it)) for it in items]
    attrs = check_consistent(exposures)
    if not isinstance(refs, RefSet):
        refs = RefSet.from_dir(refs, attrs, overrides=overrides, required=())
    if not mask_do_not_use:
        refs = strip_mask_do_not_use(refs)
    nints = [ds.sizes[dims.INTEGRATION] for ds in exposures]
    ntotal = int(sum(nints))
    ng, ny, nx = (exposures[0].sizes[d] for d in (dims.GROUP, dims.Y, dims.X))

    budget, budget_source = _budget(memory_limit)
    cols = plan_dark_tiles(ntotal, ng, ny, nx, budget=budget, tile_columns=tile_columns)
    # the Detector1 part must fit too (a tile there holds one segment only)
    cols = min(cols, min(plan_tiles(ds, memory_limit=budget) for ds in exposures))
    # Zarr stores are reopened in the tile layout, so each task reads only its own column
    # band (uncal FITS holds whole integrations per read and is rechunked by dask instead)
    exposures = [_reopen_tiled(it, ds, cols) for it, ds in zip(items, exposures)]

    # whole-frame statistics of every exposure in one streaming pass, then graphs that tile
    first = [detector1(ds, refs, steps=run_steps, tile_columns=cols) for ds in exposures]
    (frame_stats,) = dask.compute([r.frame_stats for r in first])
    results = [detector1(ds, refs, steps=run_steps, tile_columns=cols, save_steps=["jump"],
                         frame_stats=fs) for ds, fs in zip(exposures, frame_stats)]
    ramps = [r.intermediates["jump"] for r in results]

    import dask.array as da

    data = da.concatenate([r[dims.DATA].data for r in ramps], axis=0)
    gdq = da.concatenate([r[dims.GROUPDQ].data for r in ramps], axis=0)
    coords = {d: ramps[0][d].values for d in (dims.GROUP, dims.Y, dims.X)}
    coords[dims.INTEGRATION] = np.arange(ntotal)
    data = xr.DataArray(data, dims=dims.RAMP_DIMS, coords=coords)
    gdq = xr.DataArray(gdq, dims=dims.RAMP_DIMS, coords=coords)
    # one task per column band: the integration chunks of every exposure are concatenated
    stats = map_ramp_blocks(dark_statistics, data, gdq, dims_out=(dims.GROUP, dims.Y, dims.X),
                            dtype=np.float32, new_axis=("field", len(FIELDS)), name="dark-stats",
                            sigma=float(sigma), maxiters=int(maxiters), engine=engine)
    pixeldq = ramps[0][dims.PIXELDQ]
    counts = map_ramp_blocks(jump_counts, gdq, xr.DataArray(pixeldq.data, dims=dims.IMAGE_DIMS),
                             dims_out=(dims.INTEGRATION, dims.X), dtype=np.float32,
                             new_axis=("count", 3), name="dark-jumps").sum(dims.X)

    mean, std, nsamp, njump = (stats.isel(field=k, drop=True) for k in range(len(FIELDS)))
    nsamp = nsamp.astype(np.uint32)
    with np.errstate(invalid="ignore", divide="ignore"):
        errv = std / np.sqrt(nsamp.astype(np.float32)) if err == "sem" else std
    errv = errv.where(mean[dims.GROUP] > 0, np.float32(0.0)).fillna(np.float32(0.0))
    low = nsamp.isel(group=slice(1, None)).min(dims.GROUP) < min_samples if ng > 1 else nsamp[0] < min_samples
    dark_dq = xr.where(low, np.uint32(dqflags.UNRELIABLE_DARK), np.uint32(0)).astype(np.uint32)
    out_ds = xr.Dataset(
        {
            "sci": (dims.RAMP_DIMS[1:], mean.data.astype(np.float32),
                    {"units": "DN", "description": "clipped mean of data[g] - data[0] over integrations"}),
            "err": (dims.RAMP_DIMS[1:], errv.data.astype(np.float32),
                    {"units": "DN", "description": "ERR written to the DARK (" + err + ")"}),
            "std": (dims.RAMP_DIMS[1:], std.data.astype(np.float32),
                    {"units": "DN", "description": "clipped scatter of data[g] - data[0] over integrations (ddof=1)"}),
            "nsamples": (dims.RAMP_DIMS[1:], nsamp.data,
                         {"description": "integrations kept per pixel and group"}),
            "n_jumped": (dims.RAMP_DIMS[1:], njump.data.astype(np.uint32),
                         {"description": "integrations excluded at this group by a jump in groups 1..g"}),
            "dq": (dims.IMAGE_DIMS, dark_dq.data, {"description": "DARK DQ (UNRELIABLE_DARK)"}),
            "jump_pixels": ((dims.INTEGRATION,), counts.isel(count=0).data,
                            {"description": "active pixels with >= 1 JUMP_DET group"}),
            "jump_groups": ((dims.INTEGRATION,), counts.isel(count=1).data,
                            {"description": "JUMP_DET pixel-groups on active pixels"}),
            "active_pixels": ((dims.INTEGRATION,), counts.isel(count=2).data,
                              {"description": "non-reference pixels"}),
        },
        coords={d: coords[d] for d in (dims.GROUP, dims.Y, dims.X, dims.INTEGRATION)},
    )
    chunks = {dims.GROUP: ng, dims.Y: ny, dims.X: cols}
    out_ds = out_ds.chunk({**chunks, dims.INTEGRATION: -1})

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = Path(stats_store) if stats_store is not None else _dark_store_path(out)
    partial = store.with_name(store.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tgroup = float(attrs["TGROUP"])
    obs = [str(ds.attrs.get("DATE-OBS") or datetime.date.today().isoformat()) for ds in exposures]
    provenance = {
        "tool": "daskramp darks",
        "inputs": [str(it) if not isinstance(it, xr.Dataset) else "<Dataset>" for it in items],
        "n_exposures": len(exposures),
        "n_integrations": ntotal,
        "sigma": float(sigma),
        "maxiters": int(maxiters),
        "min_samples": int(min_samples),
        "err": err,
        "tile_columns": int(cols),
        "task_budget_bytes": budget,
        "task_budget_source": budget_source,
        "projected_task_bytes": int(DARK_TILE_FACTOR * 4 * ntotal * ng * ny * cols),
        "date_range": [min(obs), max(obs)],
        "stats_store": str(store),
        "detector1": results[0].provenance,
    }
    out_ds.attrs = {"daskramp_provenance": json.dumps(provenance, default=str), "TGROUP": tgroup}
    out_ds.to_zarr(partial, mode="w", zarr_format=3, consolidated=False)
    shutil.rmtree(store, ignore_errors=True)
    os.replace(partial, store)

    opened = xr.open_zarr(store, zarr_format=3, consolidated=False)
    gain = refs.get("gain")
    gain_img = None if gain is None else gain.arrays["SCI"]
    _write_dark_fits(out, opened, attrs, header=header, gain=gain_img, provenance=provenance)
    opened = _with_rate(opened, tgroup)
    jumps = _jump_summary(opened, attrs)
    mask = refs.get("mask")
    rn = refs.get("readnoise")
    noise = effective_noise(opened, pixeldq=None if mask is None else mask.arrays["DQ"],
                            readnoise=None if rn is None else rn.arrays["SCI"], gain=gain_img,
                            tgroup=tgroup)
    return DarkResult(path=out, stats=opened, jumps=jumps, noise=noise, provenance=provenance)


def strip_mask_do_not_use(refs):
    """The same references with DO_NOT_USE cleared from the MASK.

    dq_init copies the MASK's DO_NOT_USE into every group, which would leave hot pixels —
    what a DARK must measure above all — without a single usable sample and out of jump
    detection.  The other MASK bits (HOT, DEAD, …) still reach pixeldq.

    The set's recipe (:meth:`daskramp.io.refs.RefSet.recipe`) records the cleared bit, so
    the workers read the files and clear it themselves: the arrays stay out of the graphs.
    """
    return refs.with_bits_cleared("mask", "DQ", dqflags.DO_NOT_USE)


def _with_rate(stats: xr.Dataset, tgroup: float) -> xr.Dataset:
    ng = stats.sizes[dims.GROUP]
    if ng < 2:
        return stats
    rate = stats["sci"].isel(group=-1, drop=True) / np.float32((ng - 1) * tgroup)
    return stats.assign(dark_rate=rate.assign_attrs(
        units="DN/s", description="dark rate: last SCI plane / (NGROUPS-1)*TGROUP"))


def _jump_summary(stats: xr.Dataset, attrs: Mapping) -> xr.Dataset:
    ng = stats.sizes[dims.GROUP]
    ramp_s = max(ng - 1, 1) * float(attrs["TGROUP"])
    act = stats["active_pixels"].values
    frac = stats["jump_pixels"].values / act
    rate = stats["jump_groups"].values / act / ramp_s
    # pixels hit in at least one integration: from the per-pixel count at the last group
    any_hit = float(((stats["n_jumped"].isel(group=-1) > 0)).mean().values) if ng > 1 else 0.0
    return xr.Dataset(
        {
            "jump_fraction": ((dims.INTEGRATION,), frac, {"units": "1",
                              "description": "active pixels with >= 1 JUMP_DET group"}),
            "jump_rate": ((dims.INTEGRATION,), rate, {"units": "1/(pixel s)",
                          "description": "JUMP_DET pixel-groups per active pixel per second between group 0 and the last"}),
        },
        coords={dims.INTEGRATION: stats[dims.INTEGRATION].values},
        attrs={"any_jump_fraction": any_hit, "ramp_seconds": ramp_s},
    )


def effective_noise(stats: xr.Dataset, *, pixeldq=None, readnoise=None, gain=None,
                    tgroup: float | None = None) -> xr.Dataset:
    """Effective noise of a ramp versus the number of groups, against expectations.

    ``effective_noise[k]`` is the median over good pixels (not reference, HOT, DEAD or
    DO_NOT_USE in ``pixeldq``, with samples) of the scatter of ``d[·, k] = data[k] − data[0]``
    across integrations (DN).  With read noise only it would equal the CDS read noise
    (``readnoise_only``, median of the READNOISE reference) for every k; ``expected`` adds the
    dark shot noise ``√(dark_rate · k · TGROUP / gain)`` in quadrature, per pixel, then takes
    the median.  Reads one plane at a time from ``stats``.
    """
    ng = stats.sizes[dims.GROUP]
    ny, nx = stats.sizes[dims.Y], stats.sizes[dims.X]
    good = np.ones((ny, nx), bool)
    if pixeldq is not None:
        bad = dqflags.REFERENCE_PIXEL | dqflags.HOT | dqflags.DEAD | dqflags.DO_NOT_USE
        good &= (np.asarray(pixeldq) & bad) == 0
    eff = np.full(ng, np.nan)
    exp = np.full(ng, np.nan)
    rn_med = np.nan
    if readnoise is not None:
        rn = np.asarray(readnoise, np.float64)
        rn_med = float(np.nanmedian(rn[good]))
    last = stats["sci"].isel(group=-1).values if ng > 1 else None
    for k in range(1, ng):
        s = stats["std"].isel(group=k).values
        ok = good & np.isfinite(s)
        eff[k] = float(np.median(s[ok])) if ok.any() else np.nan
        if readnoise is not None:
            var = rn**2
            if gain is not None and tgroup is not None and last is not None:
                # dark charge collected between group 0 and group k, in DN², Poisson
                with np.errstate(invalid="ignore", divide="ignore"):
                    dark_dn = np.clip(last, 0, None) * k / (ng - 1)
                    var = var + np.where(np.asarray(gain) > 0, dark_dn / np.asarray(gain), 0.0)
            exp[k] = float(np.median(np.sqrt(var[ok]))) if ok.any() else np.nan
    groups = stats[dims.GROUP].values
    return xr.Dataset(
        {
            "effective_noise": ((dims.GROUP,), eff, {"units": "DN",
                                "description": "median over good pixels of std(data[k] - data[0])"}),
            "readnoise_only": ((dims.GROUP,), np.where(groups > 0, rn_med, np.nan),
                               {"units": "DN", "description": "median CDS read noise"}),
            "expected": ((dims.GROUP,), exp, {"units": "DN",
                         "description": "median of sqrt(CDS read noise^2 + dark shot noise)"}),
        },
        coords={dims.GROUP: groups, "ngroups_in_ramp": ((dims.GROUP,), groups + 1)},
        attrs={"good_pixels": int(good.sum())},
    )


# --------------------------------------------------------------------------------- FITS


#: the NIRCam exposure types a dark from ``daskramp darks`` serves (CRDS or-list form)
NIRCAM_DARK_EXP_TYPES = ("NRC_IMAGE|NRC_TSIMAGE|NRC_TSGRISM|NRC_GRISM|NRC_WFSS|NRC_CORON|NRC_FLAT|"
                         "NRC_LED|NRC_DARK|NRC_FOCUS|NRC_TACQ|NRC_TACONFIRM|")


def dark_header(attrs: Mapping, *, stats: xr.Dataset | None = None, header: Mapping | None = None,
                avdrkcur: float | None = None, provenance: Mapping | None = None) -> dict:
    """PRIMARY keywords of the DARK (CRDS rules of spec 01 §2), ``header`` values win."""
    today = datetime.date.today().isoformat()
    dates = (provenance or {}).get("date_range") or (attrs.get("DATE-OBS", today),) * 2
    kw: dict = {
        "REFTYPE": "DARK",
        "DESCRIP": "Dark current from sigma-clipped mean of dark ramps",
        "AUTHOR": "daskramp darks",
        # CRDS form "INFLIGHT <first> <last>" with the observation dates of the inputs
        "PEDIGREE": f"INFLIGHT {dates[0]} {dates[1]}",
        "USEAFTER": f"{dates[0]}T00:00:00",
        "TELESCOP": attrs.get("TELESCOP", "JWST"),
    }
    for key in ("INSTRUME", "DETECTOR", "CHANNEL", "MODULE", "EXP_TYPE", "READPATT", "SUBARRAY",
                "SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2", "FASTAXIS", "SLOWAXIS",
                "NOUTPUTS", "NFRAMES", "GROUPGAP", "NGROUPS"):
        if attrs.get(key) is not None:
            kw[key] = attrs[key]
    if str(attrs.get("INSTRUME", "")).upper() == "NIRCAM":
        # NIRCam darks are selected by EXP_TYPE (spec 11 §1): a dark measured from dark
        # exposures (EXP_TYPE=NRC_DARK) must name the science exposure types it serves
        kw["P_EXP_TY"] = NIRCAM_DARK_EXP_TYPES
    kw["NINTS"] = 1
    kw["BUNIT"] = "DN"
    if avdrkcur is not None and np.isfinite(avdrkcur):
        kw["AVDRKCUR"] = (float(avdrkcur), "[e-/s] median dark current of active pixels")
    if provenance is not None:
        kw["NEXPOS"] = (int(provenance["n_exposures"]), "dark exposures combined")
        kw["NINTSUSE"] = (int(provenance["n_integrations"]), "integrations combined")
        kw["CLIPSIG"] = (float(provenance["sigma"]), "sigma-clipping threshold")
    kw.update(dict(header or {}))
    return kw


def _fits_bytes(block: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.uint32:
        # BZERO = 2³¹: stored value = value − 2³¹, the same bits with the top one flipped
        return (block.astype(np.uint32) ^ np.uint32(0x80000000)).view(np.int32).astype(">i4")
    return block.astype(">f4")


def _write_dark_fits(out: Path, stats: xr.Dataset, attrs: Mapping, *, header, gain, provenance):
    """Stream the DARK FITS from the statistics store, one plane (or image) at a time."""
    from astropy.io import fits

    ng = stats.sizes[dims.GROUP]
    tgroup = float(attrs["TGROUP"])
    avd_img = None
    avd = None
    if gain is not None and ng > 1:
        rate = stats["sci"].isel(group=-1).values / ((ng - 1) * tgroup)
        g = np.asarray(gain, np.float32)
        avd_img = np.where(np.isfinite(rate) & (g > 0), rate * g, 0.0).astype(np.float32)
        act = (stats["dq"].values == 0) & (g > 0)
        avd = float(np.median(avd_img[act])) if act.any() else None
    kw = dark_header(attrs, header=header, avdrkcur=avd, provenance=provenance)
    phdr = fits.PrimaryHDU().header
    phdr["EXTEND"] = True
    for k, v in kw.items():
        phdr[k] = v
    partial = out.with_name(out.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(phdr.tostring().encode("ascii"))
            images = [("SCI", "sci", np.float32, "DN"), ("ERR", "err", np.float32, "DN"),
                      ("DQ", "dq", np.uint32, None)]
            for ext, var, dtype, bunit in images:
                arr = stats[var]
                f.write(image_header(ext, tuple(arr.shape), np.dtype(dtype), bunit=bunit)
                        .tostring().encode("ascii"))
                written = 0
                planes = range(arr.shape[0]) if arr.ndim == 3 else [None]
                for g in planes:
                    block = arr.values if g is None else arr.isel(group=g).values
                    raw = np.ascontiguousarray(_fits_bytes(block, dtype))
                    f.write(memoryview(raw).cast("B"))
                    written += raw.nbytes
                f.write(b"\0" * ((-written) % FITS_BLOCK))
        with fits.open(partial, mode="append") as hdul:
            if avd_img is not None:
                hdul.append(fits.ImageHDU(avd_img, name="AVDRKCUR"))
            hdul.append(dq_def_hdu())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------------- figures


def figures(result: DarkResult, outdir) -> dict[str, Path]:
    """Write PNG figures of a :class:`DarkResult`: dark rate histogram, jumps, effective noise.

    Returns ``{name: path}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}

    if "dark_rate" in result.stats:
        rate = result.stats["dark_rate"].values
        fin = rate[np.isfinite(rate)]
        fig, ax = plt.subplots(figsize=(6, 4))
        pos = fin[fin > 0]
        if pos.size:
            bins = np.logspace(np.log10(max(pos.min(), 1e-4)), np.log10(pos.max() * 1.01), 60)
            ax.hist(pos, bins=bins, histtype="step")
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dark rate (DN/s)")
        ax.set_ylabel("pixels")
        ax.set_title(f"dark rate, {int((fin <= 0).sum())} pixels ≤ 0 not shown")
        fig.tight_layout()
        paths["dark_rate"] = outdir / "dark_rate_histogram.png"
        fig.savefig(paths["dark_rate"], dpi=100)
        plt.close(fig)

    j = result.jumps
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(j[dims.INTEGRATION].values, 100 * j["jump_fraction"].values, "o-")
    ax[0].set_xlabel("integration (all exposures)")
    ax[0].set_ylabel("pixels with ≥ 1 jump (%)")
    ax[1].plot(j[dims.INTEGRATION].values, j["jump_rate"].values, "o-")
    ax[1].set_xlabel("integration (all exposures)")
    ax[1].set_ylabel("jump rate (flags / pixel / s)")
    fig.suptitle(f"jumps: {100 * j.attrs['any_jump_fraction']:.2f} % of pixels hit at least once")
    fig.tight_layout()
    paths["jumps"] = outdir / "jumps.png"
    fig.savefig(paths["jumps"], dpi=100)
    plt.close(fig)

    n = result.noise
    k = n["ngroups_in_ramp"].values
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(k[1:], n["effective_noise"].values[1:], "o-", label="measured std(group k − group 0)")
    ax.plot(k[1:], n["readnoise_only"].values[1:], "--", label="read noise only (CDS)")
    if np.isfinite(n["expected"].values[1:]).any():
        ax.plot(k[1:], n["expected"].values[1:], ":", label="read noise ⊕ dark shot noise")
    ax.set_xlabel("groups in the ramp")
    ax.set_ylabel("effective noise (DN)")
    ax.legend()
    fig.tight_layout()
    paths["noise"] = outdir / "effective_noise.png"
    fig.savefig(paths["noise"], dpi=100)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------- command


def add_arguments(p) -> None:
    """Arguments of ``daskramp darks`` (the cluster arguments are added by the CLI)."""
    p.add_argument("inputs", nargs="+", help="dark exposures: uncal FITS (segments grouped) or Zarr stores")
    p.add_argument("--out", required=True, help="output DARK file, e.g. jwst_nircam_dark_<name>.fits")
    p.add_argument("--refs", help="directory of CRDS-format reference files (dq_init … jump)")
    p.add_argument("--crds", action="store_true",
                   help="take the references of dq_init … jump from the CRDS cache $CRDS_PATH, "
                        "context $CRDS_CONTEXT (offline with CRDS_MODE=local); instead of --refs")
    p.add_argument("--sigma", type=float, default=3.0, help="sigma-clipping threshold (default 3)")
    p.add_argument("--maxiters", type=int, default=5, help="clipping passes (default 5)")
    p.add_argument("--min-samples", type=int, default=5,
                   help="fewer kept integrations in a plane → UNRELIABLE_DARK (default 5)")
    p.add_argument("--err", choices=["sem", "std"], default="sem",
                   help="ERR: standard error of the mean (default) or scatter of one ramp")
    p.add_argument("--tile-columns", type=int, help="columns per tile (default: from worker memory)")
    p.add_argument("--figures", metavar="DIR", help="write PNG figures to DIR")
    p.add_argument("--useafter", help="USEAFTER keyword (default: DATE-OBS of the first input)")
    p.add_argument("--pedigree", help="PEDIGREE keyword")
    p.add_argument("--descrip", help="DESCRIP keyword")
    p.add_argument("--author", help="AUTHOR keyword")


__all__ = [
    "DarkResult",
    "add_arguments",
    "check_consistent",
    "dark_header",
    "dark_statistics",
    "effective_noise",
    "figures",
    "group_inputs",
    "jump_counts",
    "make_dark",
    "strip_mask_do_not_use",
]

