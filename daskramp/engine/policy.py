"""The fusion policy: which stages run as one task per tile.

By default every ramp step and ramp_fit run fused, one task per tile
(:mod:`daskramp.engine.fused`).  A configuration runs step by step, one dask layer per step
(:mod:`daskramp.engine.stepwise`), when intermediates are saved (``save_steps``), when a
step says it cannot run on a window (its spec's ``not_fusable``: clean_flicker_noise fits
whole frames, dark_current's ``dark_output`` is the whole frame, ramp_fit skipped leaves no
products), or when the exposure is held in memory.  Both give the same products."""

from __future__ import annotations

import dataclasses

import xarray as xr

from .. import dims
from .. import steps as registry
from ..params import RULE


def shrinks(params) -> list[tuple[str, int]]:
    """Where a window's exact region shrinks: ``(step, k)`` = the steps before ``step`` have
    made the outermost ``k`` columns/rows on each side depend on pixels outside the window.

    Each step that runs and looks at neighbours (its spec's ``halo``: saturation growth
    ``2·n_pix_grow_sat``, charge_migration 1, jump's neighbour flagging 1) shrinks it by its
    halo before the step that follows it; the other steps are pixel-local.
    """
    specs = registry.active()
    out = []
    for s, after in zip(specs, specs[1:]):
        p = params[s.name]
        k = 0 if s.halo is None or p.skip else int(s.halo(p))
        if k:
            out.append((after.name, k))
    return out


def halo_width(params) -> int:
    """Ghost columns/rows each window needs so that its interior equals the whole-frame result:
    the sum of the :func:`shrinks` of the steps that look at neighbours."""
    return sum(k for _, k in shrinks(params))


def frame_steps(params) -> list[str]:
    """The steps that run a ``frame_pass`` (a pass over whole frames) with these
    parameters, in order."""
    return [s.name for s in registry.active() if s.frame_pass is not None and s.frame_pass.runs(params[s.name])]


def unsupported(ds: xr.Dataset, params) -> str | None:
    """Why the fused layout cannot run this configuration (None: it can): a step's reason
    (its spec's ``not_fusable``: clean_flicker_noise fits whole frames, ramp_fit skipped
    leaves no products, dark_current's ``dark_output`` is the whole frame), or an exposure
    held in memory."""
    for s in registry.active():
        why = None if s.not_fusable is None else s.not_fusable(params[s.name])
        if why is not None:
            return why
    passes = frame_steps(params)
    if len(passes) > 1:
        # one checkpoint per integration block
        return f"{' and '.join(passes)} both need whole frames (one pass over them fused at a time)"
    if not any(hasattr(v.data, "dask") for v in ds.data_vars.values()):
        return "the exposure is in memory"
    return None


def whole_axis(ds: xr.Dataset, params) -> str | None:
    """The dim (``"y"`` or ``"x"``) a fused tile must span because a step that runs needs
    whole fast-read lines (its spec's ``fast_lines``): ``y`` for ``|FASTAXIS| = 2`` (the
    lines are columns), ``x`` for 1; None when no step does."""
    if not any(s.fast_lines is not None and s.fast_lines(params[s.name]) for s in registry.active()):
        return None
    return "y" if abs(int(ds.attrs["FASTAXIS"])) == 2 else "x"


def without_output_files(params) -> dict:
    """``params`` with every parameter that names a file for a step to write (an official
    ``output_file``, e.g. ``dark_current.dark_output``) set to None: windows of the frame
    run the steps to find statistics, and must not write a window's part as the file."""
    out = dict(params)
    for name, p in params.items():
        if not dataclasses.is_dataclass(p):
            continue
        off = {f.name: None for f in dataclasses.fields(p)
               if getattr(f.metadata.get(RULE), "kind", None) == "output_file" and getattr(p, f.name) is not None}
        if off:
            out[name] = dataclasses.replace(p, **off)
    return out


def by_segment(ds: xr.Dataset, params) -> bool:
    """Whether the segments of ``ds`` may be submitted one after another (the rate from
    sums carried between them): no step that runs combines every integration at once (its
    spec's ``whole_exposure``)."""
    ngroups = ds.sizes[dims.GROUP]
    return not any(s.whole_exposure is not None and not params[s.name].skip
                   and s.whole_exposure(params[s.name], ngroups) for s in registry.active())


def needs_draft_rate(params) -> bool:
    """Whether a step that runs takes the exposure's draft rate (its spec's ``draft_rate``)."""
    return any(s.draft_rate is not None and s.draft_rate(params[s.name]) for s in registry.active())


def fused_ghost(ds: xr.Dataset, params, saved=()) -> int | None:
    """The ghost margin of the fused tile layout that :func:`daskramp.pipeline.detector1`
    uses with the validated step ``params``, or None when it runs step by step."""
    if saved:
        return None
    return halo_width(params) if unsupported(ds, params) is None else None
