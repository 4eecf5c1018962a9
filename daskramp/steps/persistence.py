"""persistence step wrapper (spec 12 §4, spec 06): PERSISTENCE after saturation, flags only.

jwst 3.0's PersistenceStep reads no reference file: after a pixel's first SATURATED group
(or, with ``dn_threshold``, a group above it) it flags every group read within
``persistence_time`` seconds, into the following integrations (the rules:
:mod:`daskramp.kernels.persistence`).  Skipped by default, as in the official pipeline; run
without a ``persistence_time`` > 0 it does nothing and reports FAILED, as the official step.

The windows carry from one integration to the next, so the step runs on blocks holding every
integration of one uncal segment (:func:`daskramp.steps._apply.chunk_by_segment`, declared with
``pools_integrations`` in its spec): the official pipeline processes each segment file on its
own and opens it with every window closed.  ``stats_scope="exposure"`` carries the windows
across the segments of the stitched exposure instead.  The flags then do not depend on how the
integrations were chunked, nor on how the segments are submitted.

Integration start times: the INT_TIMES ``int_start_MJD_UTC`` coordinate, else (for the
integrations without one) EXPSTART + k·EFFINTTM, k counted from the start of the segment (the
official fallback, which counts from the start of the processed file).  Only ``groupdq``
changes.

Not implemented (refused when given, :class:`~daskramp.params.NotImplementedParameter`):
``persistence_array_file`` (window ends carried in from an earlier exposure's ASDF file) and
``save_persistence`` (writing them to one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..dims import DATA, GROUPDQ, GROUPDQ_DTYPE, INTEGRATION, segment_bounds, validate
from ..kernels import persistence as kernel
from ..params import boolean, check, floating, integer, string
from ._apply import chunk_by_segment, map_ramp_blocks
from ._spec import StepSpec
from ._wrapper import COMPLETE, SKIPPED, with_status

STATUS = "S_PERSIS"
#: what the official step reports when ``persistence_time`` is None or <= 0
FAILED = "FAILED"
#: INT_TIMES column holding each integration's start (MJD, UTC)
START_COLUMN = "int_start_MJD_UTC"
#: MJD of the Unix epoch (1970-01-01T00:00:00 UTC), and seconds per day
MJD_UNIX_EPOCH = 40587.0
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Params:
    """PersistenceStep parameters (official names, order and defaults)."""

    save_persistence: str | None = string(
        None, none=True, implemented=(None,),
        note="writing the window ends to an ASDF file is not implemented")
    #: s; None or <= 0 with the step on: status FAILED, nothing flagged (official)
    persistence_time: int | None = integer(None, none=True)
    #: DN; None: only saturation opens windows
    dn_threshold: float | None = floating(None, none=True)
    persistence_array_file: str | None = string(
        None, none=True, implemented=(None,),
        note="window ends from an earlier exposure's ASDF file are not implemented")
    persistence_dnu: bool = boolean(False)
    skip: bool = boolean(True)


def mjd_to_unix(mjd):
    """Unix seconds of an MJD (UTC), float64, as the official step converts it."""
    return (np.asarray(mjd, np.float64) - MJD_UNIX_EPOCH) * SECONDS_PER_DAY


def integration_starts(ds: xr.Dataset, *, stats_scope: str = "segment") -> tuple[np.ndarray, np.ndarray]:
    """Start of each integration (Unix s, float64) and where the windows are reset.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure (its per-integration coordinates and attributes are read, no data).
    stats_scope : {"segment", "exposure"}
        Windows start closed at every uncal segment (official) or only at the first
        integration of ``ds``.

    Returns
    -------
    (ndarray (integration,) float64, ndarray (integration,) bool)
    """
    n = ds.sizes[INTEGRATION]
    if stats_scope == "segment":
        parts = segment_bounds(ds)
    elif stats_scope == "exposure":
        parts = [(0, n)]
    else:
        raise ValueError(f"stats_scope must be 'segment' or 'exposure', got {stats_scope!r}")
    reset = np.zeros(n, bool)
    local = np.zeros(n, np.int64)
    for a, b in parts:
        reset[a] = True
        local[a:b] = np.arange(b - a)
    # one float per integration, already in memory (the coordinates are never chunked)
    mjd = ds[START_COLUMN].values if START_COLUMN in ds.coords else np.full(n, np.nan)
    starts = mjd_to_unix(mjd)
    missing = np.flatnonzero(~np.isfinite(starts))
    if missing.size:
        expstart, effinttm = ds.attrs.get("EXPSTART"), ds.attrs.get("EFFINTTM")
        if expstart is None:
            raise ValueError("persistence: integrations without an INT_TIMES start and no EXPSTART "
                             "keyword: the group times are unknown")
        if effinttm is None and local[missing].any():
            raise ValueError("persistence: integrations without an INT_TIMES start and no EFFINTTM "
                             "keyword: the integration start times are unknown")
        epoch = float(mjd_to_unix(float(expstart)))
        for i in missing:
            k = int(local[i])
            # Python float arithmetic, as the official fallback (EXPSTART + k·EFFINTTM)
            starts[i] = epoch + k * float(effinttm) if k else epoch
    return starts, reset


def persistence(
    ds: xr.Dataset,
    *,
    stats_scope: str = "segment",
    save_persistence: str | None = None,
    persistence_time: int | None = None,
    dn_threshold: float | None = None,
    persistence_array_file: str | None = None,
    persistence_dnu: bool = False,
    skip: bool = False,
) -> xr.Dataset:
    """Flag the groups read within ``persistence_time`` of a saturation (lazy).

    ``skip`` defaults to False here so that calling the function runs the step; the pipeline
    default (``Params.skip``) is True.

    Parameters
    ----------
    ds : xarray.Dataset
        Exposure with float32 ``data`` (DN), numpy- or dask-backed.
    stats_scope : {"segment", "exposure"}
        Windows start closed at each uncal segment (official) or carry across the exposure.
    save_persistence, persistence_array_file : None
        Official parameters daskramp implements only as None.
    persistence_time : int, s
        Length of a window; None or <= 0: nothing is flagged, status FAILED.
    dn_threshold : float or None, DN
        Data above it also open a window where none is open.
    persistence_dnu : bool
        Flag PERSISTENCE | DO_NOT_USE instead of PERSISTENCE.
    skip : bool

    Returns
    -------
    xarray.Dataset with new ``groupdq`` (rechunked to whole segments when dask-backed) and
    ``attrs["S_PERSIS"]``.
    """
    p = check(Params(save_persistence=save_persistence, persistence_time=persistence_time,
                     dn_threshold=dn_threshold, persistence_array_file=persistence_array_file,
                     persistence_dnu=persistence_dnu, skip=skip))
    validate(ds, calibrated=True, source="persistence")
    if p.skip:
        return with_status(ds, STATUS, SKIPPED)
    if p.persistence_time is None or p.persistence_time <= 0:
        return with_status(ds, STATUS, FAILED)
    starts, reset = integration_starts(ds, stats_scope=stats_scope)
    ds_c = chunk_by_segment(ds, stats_scope=stats_scope)
    start_da = xr.DataArray(starts, dims=(INTEGRATION,))
    reset_da = xr.DataArray(reset, dims=(INTEGRATION,))
    groupdq = map_ramp_blocks(
        kernel.persistence,
        ds_c[DATA],
        ds_c[GROUPDQ],
        start_da,
        reset_da,
        dtype=GROUPDQ_DTYPE,
        name="persistence",
        group_time=float(ds.attrs["TGROUP"]),
        persistence_time=float(p.persistence_time),
        dn_threshold=p.dn_threshold,
        persistence_dnu=p.persistence_dnu,
    )
    return with_status(ds_c, STATUS, COMPLETE, groupdq=groupdq)


SPEC = StepSpec(name="persistence", status=STATUS, params=Params, run=persistence, scratch=0.25,
                pools_integrations=True)
