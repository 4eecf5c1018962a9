"""The stages of Detector1: the registry's steps called on a dataset, in order.

Whatever the fusion policy (:mod:`daskramp.engine.policy`), a step runs through
:func:`call_step` (its spec says how: references, statistics, parameters), the ramp steps
through :func:`ramp_steps` (on a lazy exposure, or on a tile's numpy window), and the rate
products are made by :func:`finish`.  Parameters are validated once (:func:`validate_steps`).
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import dims, dq
from .. import steps as registry
from ..cluster import worker_slots
from ..config import ConfigError
from ..io.refs import RefSet
from ..steps import params_kwargs, ref, ref_array, validate
from ..steps import ramp_fit as _ramp_fit
from ..steps import validate_steps as _validate_steps
from ..steps._apply import rechunk_method
from .plan import frame_block_integrations, in_rounds


def step_params(name: str, given: Mapping | None = None):
    """The validated frozen ``Params`` of a step from ``given`` (a mapping of official
    parameter names, None, or a ``Params``): what both engines run with.

    Values are coerced and checked against the rules declared on the step's ``Params``
    (:mod:`daskramp.params`); anything not allowed raises a one-line :class:`ConfigError`
    naming ``steps.<step>.<param>`` (an official value daskramp does not implement:
    :class:`daskramp.params.NotImplementedParameter`).
    """
    return validate(name, given)


def validate_steps(steps: Mapping | None) -> dict:
    """``{step: Params}`` for every registered step (:func:`daskramp.steps.step_order`) from
    a configuration's ``steps`` mapping (defaults for the steps not given), raising the first
    error; see :func:`daskramp.steps.validate_steps`."""
    return _validate_steps(steps)


def check_exposures(params: Mapping, ds: xr.Dataset) -> None:
    """Each active step's ``check_exposure`` on the exposure (its attributes and frame shape):
    an option that does not apply to it raises ConfigError before any graph is built."""
    frame_shape = (ds.sizes[dims.Y], ds.sizes[dims.X])
    for spec in registry.active():
        if spec.check_exposure is not None and not params[spec.name].skip:
            spec.check_exposure(params[spec.name], ds.attrs, frame_shape)


@dataclass
class Detector1Result:
    """Lazy products of :func:`detector1`."""

    rate: xr.Dataset | None
    rateints: xr.Dataset | None
    intermediates: dict[str, xr.Dataset] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    #: whole-frame statistics (lazy unless given): refpix offsets, jump's DO_NOT_USE planes
    frame_stats: dict = field(default_factory=dict)
    #: the fused layout's products one integration block at a time
    #: (:class:`daskramp.engine.fused.SegmentProducts`), None in the step-by-step layout
    segments: object | None = None

    def products(self) -> dict[str, xr.Dataset]:
        out = {k: v for k, v in (("rateints", self.rateints), ("rate", self.rate)) if v is not None}
        out.update({f"{k}_ramp": v for k, v in self.intermediates.items()})
        return out

    def __repr__(self) -> str:
        """One line per product (its shape) and the steps' statuses, not the whole graph."""
        lines = ["Detector1Result("]
        for name, ds in self.products().items():
            var = ds["data"] if "data" in ds else None
            shape = "" if var is None else " × ".join(f"{d} {n}" for d, n in zip(var.dims, var.shape))
            lazy = var is not None and var.chunks is not None
            lines.append(f"  {name}: {shape}{' (lazy)' if lazy else ''}")
        steps = (self.provenance or {}).get("steps") or {}
        status = ", ".join(f"{k} {v.get('status') if isinstance(v, dict) else v}" for k, v in steps.items())
        if status:
            lines.append(f"  steps: {status}")
        if self.segments is not None:
            lines.append("  layout: fused, by integration block")
        return "\n".join(lines) + "\n)"


def as_float(ds: xr.Dataset) -> xr.Dataset:
    if ds[dims.DATA].dtype != dims.FLOAT_DTYPE:
        ds = ds.assign({dims.DATA: ds[dims.DATA].astype(dims.FLOAT_DTYPE)})
    if dims.ZEROFRAME in ds and ds[dims.ZEROFRAME].dtype != dims.FLOAT_DTYPE:
        ds = ds.assign({dims.ZEROFRAME: ds[dims.ZEROFRAME].astype(dims.FLOAT_DTYPE)})
    return ds


def call_step(name: str, ds: xr.Dataset, refs, params, *, stats_scope: str, **extra):
    """Run one step lazily, as its spec (:class:`daskramp.steps.StepSpec`) says: the reference
    files mapped to the keyword arguments of its ``run``, ``stats_scope`` for a step that
    pools integrations, ``extra`` passed on.  None when a reference the step cannot do
    without is missing and the step is skipped for it; :class:`ConfigError` when it is one
    the step cannot be skipped for."""
    spec = registry.spec(name)
    missing = spec.missing(refs)
    if missing:
        if spec.refs_missing == "error":
            raise ConfigError(f"{name} needs reference files {missing}; none was found or given")
        return None
    kw = {**params_kwargs(params), **extra}
    if spec.pools_integrations:
        kw["stats_scope"] = stats_scope
    refs_kw = {} if spec.refs_kwargs is None else spec.refs_kwargs(refs, params, ds)
    return spec.run(ds, **refs_kw, **kw)


def needed_reftypes(params: Mapping) -> set[str]:
    """Reference types the steps that run (not ``skip``) cannot do without (their optional
    ones left out: saturation runs without SUPERBIAS, gain_scale without GAIN)."""
    return {rt for s in registry.active() if not params[s.name].skip for rt in s.required_for(params[s.name])}


def reference_set(ds: xr.Dataset, refs, params: Mapping, overrides: Mapping | None = None, *,
                  strict: bool = False):
    """The :class:`daskramp.io.refs.RefSet` of the exposure ``ds`` for the steps that run.

    As the official pipeline prefetches the references of every step that runs, one missing
    from the directory is an error naming every file rejected, not a silently skipped step;
    :meth:`RefSet.from_dir` leaves out overridden reftypes ("N/A" skips the step) and those
    that do not apply to the instrument.  Without a directory only the overrides are read and
    the steps needing another reference are skipped, unless ``strict`` (``daskramp run``):
    then a reference nobody gave is an error.  A RefSet is returned as it is.
    """
    if isinstance(refs, RefSet):
        return refs
    needed = needed_reftypes(params)
    if refs is None:
        missing = sorted(needed - {k.lower().removeprefix("override_") for k in (overrides or {})})
        if strict and missing:
            steps = sorted({s.name for s in registry.active() if not params[s.name].skip
                            and set(s.reftypes) & set(missing)})
            raise ConfigError(
                f"no reference files given: steps {', '.join(steps)} need "
                f"{', '.join(m.upper() for m in missing)}; give --refs DIR (or --override-<reftype> "
                f"FILE, or skip the steps with --steps.<step>.skip=true)")
        if not overrides:
            return None
    return RefSet.from_dir(refs, ds.attrs, overrides=overrides,
                           required=() if refs is None else needed)


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("daskramp", "numpy", "dask", "distributed", "xarray", "zarr", "astropy", "numba"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def ramp_steps(ds: xr.Dataset, refs, params: Mapping, *, stats_scope: str, given_stats: Mapping,
               provenance: dict | None = None,
               save_steps: Sequence[str] = (), intermediates: dict | None = None,
               until: str = registry.FIT_STEP, frame_shape: tuple[int, int] | None = None,
               start: str | None = None) -> xr.Dataset:
    """Run the ramp steps of the registry from ``start`` (default: the first) up to, not
    including, ``until`` on ``ds`` (lazy or numpy).

    ``given_stats`` holds the whole-frame statistics (``refpix_offsets``, ``refpix_zf_offsets``,
    ``plane_dnu``, ``draft_rate``, ``gain_median``: :mod:`daskramp.engine.stats`), which the
    steps take through their spec's ``stats_kwargs``.  ``frame_shape`` is the parent
    subarray size when ``ds`` is a window of it.
    Step statuses and parameters are recorded in ``provenance["steps"]`` when given.
    """
    record_steps = None if provenance is None else provenance.setdefault("steps", {})
    order = registry.step_order()
    first = 0 if start is None else order.index(start)
    for name in order[first: order.index(until)]:
        spec = registry.spec(name)
        p = params[name]
        record = {"parameters": dataclasses.asdict(p)}
        if record_steps is not None:
            record_steps[name] = record
        if p.skip:
            record["status"] = "SKIPPED"
            _set_status(ds, name, "SKIPPED")
            continue
        extra = {}
        if spec.stats_kwargs is not None:
            extra = spec.stats_kwargs(ds, p, given_stats, frame_shape)
        if spec.frame_pass is not None and not spec.frame_pass.after and is_lazy(ds):
            # step by step, the step's own pass over whole frames: blocks sized as the fused layout's frame pass, shortened to whole rounds of the
            # cluster's threads (a block of whole frames is one task)
            nint = ds.sizes[dims.INTEGRATION]
            extra["frame_integrations"] = in_rounds(
                nint, frame_block_integrations(*(ds.sizes[d] for d in dims.RAMP_DIMS)), worker_slots())
        out = call_step(name, ds, refs, p, stats_scope=stats_scope, **extra)
        if out is None:
            _skipped(record, spec, refs)
            _set_status(ds, name, "SKIPPED")
        else:
            ds = laid_out_as(out, ds)
            record["status"] = ds.attrs.get(spec.status, "COMPLETE")
        if name in save_steps and intermediates is not None:
            intermediates[name] = ds
    return ds


def laid_out_as(out: xr.Dataset, before: xr.Dataset) -> xr.Dataset:
    """A step's lazy output with the ramp laid out in its input's chunks again: a step that
    works on blocks of whole frames (clean_flicker_noise) returns them, and the next steps
    (jump, ramp_fit) pool integrations in pixel tiles.  Under a dask.distributed scheduler
    the rechunk is dask's peer-to-peer shuffle, which spills to disk, so the exposure is
    never held in memory between the two layouts."""
    changed = {}
    for name in (dims.DATA, dims.GROUPDQ):
        if name in out and name in before and out[name].chunks is not None and before[name].chunks is not None \
                and out[name].chunks != before[name].chunks:
            changed[name] = out[name].copy(data=out[name].data.rechunk(before[name].data.chunks,
                                                                     method=rechunk_method()))
    return out.assign(changed) if changed else out


def is_lazy(value) -> bool:
    if isinstance(value, xr.Dataset):
        return any(dask.is_dask_collection(v.data) for v in value.data_vars.values())
    if isinstance(value, Mapping):
        return any(is_lazy(v) for v in value.values())
    return dask.is_dask_collection(getattr(value, "data", value))


def lazy_refs(refs, ds):
    """``refs`` (a RefSet or None) for a graph on ``ds``: :meth:`RefSet.lazy` when ``ds`` is
    dask-backed, so the reference arrays are read by the workers (from the files when the
    set has a recipe) instead of travelling inside the tasks; as it is for an in-memory
    ``ds`` (numpy all the way, nothing to ship)."""
    if refs is None or not is_lazy(ds):
        return refs
    return refs.lazy()


def _skipped(record: dict, spec, refs) -> None:
    """Record a step skipped for want of references: the ones it cannot run without, and why
    each is missing."""
    record["status"] = "SKIPPED"
    record["reason"] = "; ".join(
        f"{rt.upper()}: no reference files given" if refs is None else refs.reason(rt)
        for rt in spec.missing(refs)) or "no reference file"


def finish(fields, ds: xr.Dataset, refs, params: Mapping, provenance: dict,
           *, pixeldq: xr.DataArray | None = None):
    """``(rate, rateints)`` from ramp_fit's per-integration fields (or per-block products,
    see :func:`daskramp.steps.ramp_fit.products`), then the steps on the rate products
    (gain_scale; lazy)."""
    rate = rateints = None
    steps = provenance.setdefault("steps", {})
    # lazy products: the GAIN image (rate) and header come from the workers' reference set
    refs = lazy_refs(refs, fields)
    order = registry.step_order()
    for name in order[order.index(registry.FIT_STEP):]:
        spec = registry.spec(name)
        p = params[name]
        record = steps[name] = {"parameters": dataclasses.asdict(p)}
        if p.skip or (spec.on_rate and rate is None):
            record["status"] = "SKIPPED"
            if not spec.on_rate:
                _set_status(ds, name, "SKIPPED")
            continue
        if name == registry.FIT_STEP:
            rate, rateints = _ramp_fit.products(fields, ds, gain=ref_array(ref(refs, "gain")),
                                               save_intercepts=p.save_intercepts, pixeldq=pixeldq,
                                               algorithm=getattr(p, "algorithm", "OLS_C"))
            record["status"] = "COMPLETE"
            continue
        scope = provenance.get("stats_scope", "segment")
        out = call_step(name, rate, refs, p, stats_scope=scope)
        if out is None:
            _skipped(record, spec, refs)
            continue
        rate, rateints = out, call_step(name, rateints, refs, p, stats_scope=scope)
        record["status"] = rate.attrs.get(spec.status, "COMPLETE")

    statuses = {registry.spec(n).status: steps[n]["status"] for n in order if n in steps}
    for prod in (rate, rateints):
        if prod is not None:
            prod.attrs.update(statuses)
    return rate, rateints


def _set_status(ds: xr.Dataset, name: str, status: str) -> None:
    ds.attrs[registry.spec(name).status] = status


# ---------------------------------------------------------------- summary of the products


def summary_figures(rate: xr.Dataset | None, rateints: xr.Dataset | None = None) -> dict:
    """The figures of :func:`summarize` as lazy dask values (nothing computed): computed in
    the graph that writes the products, they cost no second pass over the data."""
    if rate is None:
        return {}
    r = da.asarray(rate["data"].data)
    rdq = da.asarray(rate["dq"].data)
    # the rate image is small: gather it with plain tasks, not a distributed shuffle
    with dask.config.set({"array.rechunk.method": "tasks"}):
        flat = r.ravel().rechunk(-1)
    out = {
        "rate_median_DN_s": da.nanmedian(flat, axis=0),
        "finite_fraction": da.isfinite(r).mean(),
        "jump_flagged_fraction": ((rdq & dq.JUMP_DET) != 0).mean(),
        "saturated_fraction": ((rdq & dq.SATURATED) != 0).mean(),
    }
    if rateints is not None:
        idq = da.asarray(rateints["dq"].data)
        out["jump_fraction_per_integration"] = ((idq & dq.JUMP_DET) != 0).mean(axis=(1, 2))
    return out


def figures_of(values: dict) -> dict:
    """Computed :func:`summary_figures` as plain floats and lists."""
    return {k: (v.tolist() if np.ndim(v) else float(v)) for k, v in values.items()}


def summarize(rate: xr.Dataset | None, rateints: xr.Dataset | None = None) -> dict:
    """A few figures describing written (or lazy) products, computed through dask reductions."""
    (vals,) = dask.compute(summary_figures(rate, rateints))
    return figures_of(vals)
