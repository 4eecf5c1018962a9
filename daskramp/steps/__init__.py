"""The calibration steps: one module per step, and their ordered registry.

Each module ``daskramp.steps.<name>`` holds the step's ``Params`` (validated by
:mod:`daskramp.params`), its xarray wrapper and its ``SPEC`` (:class:`StepSpec`: status
keyword, reference files, halo, memory, …).  :data:`REGISTRY` lists the specs in pipeline
order; the engines (:mod:`daskramp.pipeline`, :mod:`daskramp.engine.fused`), the memory projection
(:mod:`daskramp.engine.plan`) and the products (:mod:`daskramp.io.products`) derive their tables
from it.  Adding a step is writing its module and adding its ``SPEC`` here.

A registry other than :data:`REGISTRY` (a step under development, a test's toy step) is made
with :func:`registry_with` and made active for a block of code with :func:`using`; everything
that runs in this process inside the block (configuration validation, both engines, dask's
local schedulers) sees it.  Workers of a distributed cluster in other processes see
:data:`REGISTRY`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from ..errors import ConfigError
from ..params import Rule, rules_of, shown, validate_params
from . import (
    charge_migration,
    clean_flicker_noise,
    dark_current,
    dq_init,
    gain_scale,
    group_1overf,
    group_scale,
    jump,
    linearity,
    persistence,
    ramp_fit,
    refpix,
    saturation,
    superbias,
)
from ._spec import StepSpec, params_kwargs, ref, ref_array

#: near-IR step order of jwst 3.0 calwebb_detector1 (spec 00 §4), with daskramp's own
#: group-level 1/f correction (group_1overf, off by default) before jump; persistence
#: (flag-only, off by default) after clean_flicker_noise; ipc and picture_frame are out of
#: scope for NIR TSO/imaging and not registered
REGISTRY: tuple[StepSpec, ...] = (
    group_scale.SPEC,
    dq_init.SPEC,
    saturation.SPEC,
    superbias.SPEC,
    refpix.SPEC,
    linearity.SPEC,
    dark_current.SPEC,
    group_1overf.SPEC,
    charge_migration.SPEC,
    jump.SPEC,
    clean_flicker_noise.SPEC,
    persistence.SPEC,
    ramp_fit.SPEC,
    gain_scale.SPEC,
)

#: the step that turns the ramp into rate products; the steps before it work on the ramp,
#: those after it on the products
FIT_STEP = "ramp_fit"

#: names of :data:`REGISTRY`, in order
STEP_ORDER: tuple[str, ...] = tuple(s.name for s in REGISTRY)

_active: tuple[StepSpec, ...] = REGISTRY


def _check(registry: Sequence[StepSpec]) -> tuple[StepSpec, ...]:
    registry = tuple(registry)
    names = [s.name for s in registry]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"steps {dup} are registered twice")
    if FIT_STEP not in names:
        raise ValueError(f"a registry needs the {FIT_STEP} step")
    fit = names.index(FIT_STEP)
    for i, s in enumerate(registry):
        if i < fit and s.on_rate:
            raise ValueError(f"step {s.name} works on the rate products: it goes after {FIT_STEP}")
        if i > fit and not s.on_rate:
            raise ValueError(f"step {s.name} works on the ramp: it goes before {FIT_STEP}")
    return registry


def registry_with(spec: StepSpec, *, after: str,
                  registry: Sequence[StepSpec] | None = None) -> tuple[StepSpec, ...]:
    """A copy of ``registry`` (default: the active one) with ``spec`` placed after the step
    ``after``.  Ramp steps go before ramp_fit, steps with ``on_rate`` after it."""
    base = active() if registry is None else tuple(registry)
    names = [s.name for s in base]
    if spec.name in names:
        raise ValueError(f"step {spec.name} is already registered")
    if after not in names:
        raise ConfigError(f"unknown step {after!r}; steps are: {', '.join(names)}")
    i = names.index(after) + 1
    return _check((*base[:i], spec, *base[i:]))


@contextmanager
def using(registry: Sequence[StepSpec]) -> Iterator[tuple[StepSpec, ...]]:
    """Make ``registry`` the active one (see the module docstring) for the ``with`` block."""
    global _active
    previous, _active = _active, _check(registry)
    try:
        yield _active
    finally:
        _active = previous


def active() -> tuple[StepSpec, ...]:
    """The active registry (:data:`REGISTRY` outside :func:`using`)."""
    return _active


def step_order() -> tuple[str, ...]:
    """Names of the active registry, in order."""
    return tuple(s.name for s in _active)


def ramp_step_names() -> tuple[str, ...]:
    """The steps of the active registry that work on the ramp (before ramp_fit)."""
    names = step_order()
    return names[: names.index(FIT_STEP)]


def spec(name: str) -> StepSpec:
    """The spec of step ``name`` in the active registry (:class:`ConfigError` if unknown)."""
    for s in _active:
        if s.name == name:
            return s
    raise ConfigError(f"unknown step {name!r}; steps are: {', '.join(step_order())}")


def pooling_step() -> str:
    """The first step of the active registry that pools integrations (jump): where the
    per-integration steps end."""
    return next(s.name for s in _active if s.pools_integrations)


def _params_class(step) -> type:
    names = step_order()
    if not isinstance(step, str) or step not in names:
        close = difflib.get_close_matches(str(step), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"steps.{step}: unknown step{hint}; steps are: {', '.join(names)}")
    return spec(step).params


def rules(step: str) -> dict[str, Rule]:
    """``{parameter: Rule}`` of a registered step, in declaration order."""
    return rules_of(_params_class(step), step)


def validate(step: str, given=None):
    """The frozen ``Params`` of the registered ``step`` from ``given`` (a mapping, None, or a
    ``Params``); an unknown step, parameter or value is a one-line :class:`ConfigError`
    (:func:`daskramp.params.validate_params`)."""
    return validate_params(_params_class(step), step, given)


def validate_steps(steps: Mapping | None) -> dict:
    """``{step: Params}`` for every step of the active registry (defaults for those not
    given) from a configuration's ``steps`` mapping; the first error is raised."""
    names = step_order()
    if steps is None:
        steps = {}
    if not isinstance(steps, Mapping):
        raise ConfigError(f"steps: expected a mapping of step names to parameters, got {shown(steps)}")
    out = {name: validate(name, value) for name, value in steps.items()}
    return {name: out[name] if name in out else validate(name) for name in names}


__all__ = [
    "FIT_STEP",
    "REGISTRY",
    "STEP_ORDER",
    "StepSpec",
    "active",
    "params_kwargs",
    "pooling_step",
    "ramp_step_names",
    "ref",
    "ref_array",
    "registry_with",
    "rules",
    "spec",
    "step_order",
    "using",
    "validate",
    "validate_steps",
]
