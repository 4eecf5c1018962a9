"""Official parameter reference files (``pars-*``, ASDF) read as daskramp configuration.

The official pipeline takes its step parameters from ASDF files: those CRDS selects for an
exposure (``pars-detector1pipeline``, ``pars-jumpstep``, …) and those ``Step.export_config``
/ ``Pipeline.export_config`` write (spec 11 §4).  ``daskramp run --config FILE.asdf`` and
``daskramp.run.run(config="FILE.asdf")`` read both layouts:

* a **pipeline file**: ``class: jwst.pipeline.Detector1Pipeline`` (any ``jwst.`` path ending
  in the class name), the pipeline's own ``parameters``, and ``steps``: a list of
  ``{class, name, parameters}``, ``name`` being the official step name (``jump``), which is
  daskramp's;
* a **single-step file**: ``class: jwst.jump.JumpStep`` and its ``parameters``; the step is
  known by its class (``export_config`` names it after the class, ``JumpStep``).

``meta`` (what CRDS adds: author, pedigree, reftype, useafter, …) is recorded, not used.  The
older layout stpipe still reads (everything under ``parameters``, sub-steps a mapping by name)
is read too.

Precedence, as the official pipeline merges them (spec 11 §4): code defaults < single-step
files < pipeline files < the daskramp workflow YAML < ``DASKRAMP_STEPS__…`` < the command
line; files of one kind apply in the order given, the later winning.

What each parameter becomes:

* a parameter of a step daskramp runs, under its official name, is the same parameter of the
  daskramp step, checked as any other (:mod:`daskramp.params`);
* a parameter the official step has and daskramp does not implement, or an official value it
  does not implement, is refused unless it is the official default (one line naming the file,
  the step and the parameter);
* a step of the official Detector1Pipeline that daskramp does not run (not in
  :data:`daskramp.steps.REGISTRY`) is accepted with ``skip: true`` (its other parameters
  then change nothing, officially either), or with ``skip: false`` where that is its
  official default and its other parameters are at theirs.  ``skip: false`` where the
  default is true (emicorr, firstframe, picture_frame) is refused.  The steps whose official
  default is ``skip: false`` are ipc, whose reference CRDS answers N/A for the near-IR
  instruments so that the official step is SKIPPED (spec 10), and the MIRI-only rscd,
  lastframe and reset, which the official pipeline runs on MIRI exposures only (a MIRI
  exposure with them on is refused, :func:`check_exposure`): refusing these would refuse
  every file ``Detector1Pipeline.export_config`` writes;
* the official pipeline's bookkeeping (:data:`BOOKKEEPING`, :data:`PIPELINE_BOOKKEEPING`:
  hooks, output names and places, saving intermediate files, the input directory, a nested
  ``config_file``, reference overrides) is accepted at its default and refused otherwise, with
  the daskramp option that does the same (daskramp names and places its products itself).
  The one exception is the pipeline's own ``save_results``, accepted either way: daskramp
  always writes the rate and rateints products;
* daskramp's own parameters (``official=False``) are not official parameters: refused in a
  parameter file, they belong in the workflow YAML.

Reading ASDF needs the ``asdf`` package (installed with ``jwst``, or ``pip install asdf``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import steps as registry
from .errors import ConfigError
from .params import Refused, Rule, shown

#: the official pipeline's class name (jwst 3.0 ``jwst.pipeline.Detector1Pipeline``)
PIPELINE_CLASS = "Detector1Pipeline"

#: official step name (the pipeline's ``step_defs`` key) → class name, in the official order
STEP_CLASSES = {
    "group_scale": "GroupScaleStep",
    "dq_init": "DQInitStep",
    "emicorr": "EmiCorrStep",
    "saturation": "SaturationStep",
    "ipc": "IPCStep",
    "superbias": "SuperBiasStep",
    "refpix": "RefPixStep",
    "rscd": "RscdStep",
    "firstframe": "FirstFrameStep",
    "lastframe": "LastFrameStep",
    "linearity": "LinearityStep",
    "dark_current": "DarkCurrentStep",
    "reset": "ResetStep",
    "persistence": "PersistenceStep",
    "charge_migration": "ChargeMigrationStep",
    "jump": "JumpStep",
    "picture_frame": "PictureFrameStep",
    "clean_flicker_noise": "CleanFlickerNoiseStep",
    "ramp_fit": "RampFitStep",
    "gain_scale": "GainScaleStep",
}
_STEP_OF_CLASS = {c: s for s, c in STEP_CLASSES.items()}

#: steps the official pipeline runs only when INSTRUME is MIRI (spec 13 §1)
MIRI_ONLY = frozenset({"emicorr", "firstframe", "lastframe", "reset", "rscd"})

#: the official parameters and defaults (jwst 3.0, bookkeeping left out) of the Detector1
#: steps that daskramp may not register; read only for a step not in the registry (a
#: registered step declares its parameters in its ``Params``)
OFFICIAL_DEFAULTS: dict[str, dict] = {
    "emicorr": {"skip": True, "algorithm": "joint", "nints_to_phase": None, "nbins": None,
                "scale_reference": True, "onthefly_corr_freq": None, "use_n_cycles": 3,
                "fit_ints_separately": False, "user_supplied_reffile": None,
                "save_intermediate_results": False},
    "ipc": {"skip": False},
    "rscd": {"skip": False},
    "firstframe": {"skip": True, "bright_use_group1": True},
    "lastframe": {"skip": False},
    "reset": {"skip": False},
    "picture_frame": {"skip": True, "mask_science_regions": True, "n_sigma": 2.0,
                      "save_mask": False, "save_correction": False},
}

_OUTPUTS = "daskramp names and places its products itself (--out)"
#: every official step's bookkeeping parameters (stpipe ``Step.spec``, jwst's ``output_ext``,
#: and the ``config_file`` a pipeline accepts per step), with the default they are accepted
#: at and what daskramp offers instead
BOOKKEEPING: dict[str, tuple[object, str]] = {
    "pre_hooks": ([], "daskramp runs no hooks"),
    "post_hooks": ([], "daskramp runs no hooks"),
    "output_file": (None, _OUTPUTS),
    "output_dir": (None, _OUTPUTS),
    "output_ext": (".fits", _OUTPUTS),
    "output_use_model": (False, _OUTPUTS),
    "output_use_index": (True, _OUTPUTS),
    "suffix": (None, _OUTPUTS),
    "search_output_file": (True, _OUTPUTS),
    "save_results": (False, "a step's output ramp is kept with --save-steps STEP"),
    "input_dir": (None, "the inputs are given to daskramp run"),
    "config_file": (None, "give that file as another --config"),
}
#: the pipeline's own bookkeeping, with its default and what daskramp offers instead
PIPELINE_BOOKKEEPING: dict[str, tuple[object, str]] = {
    "save_calibrated_ramp": (False, "the ramp before ramp_fit is kept with --save-steps "
                                    "naming the last ramp step"),
    "skip": (False, "daskramp cannot skip the whole pipeline"),
}
#: ``override_<reftype>`` parameters: accepted at their default, None
OVERRIDE_PREFIX = "override_"


@dataclass
class ParameterFile:
    """One official parameter file, read and checked.

    ``steps``: ``{step: {parameter: value}}`` for the steps daskramp runs (values as the file
    gives them; :mod:`daskramp.params` coerces them with every other layer); ``not_used``:
    ``{"steps.<step>.<parameter>": value}``, the parameters of official steps daskramp does
    not run (at their default, or of a step skipped) and the pipeline's ``save_results``;
    ``not_run``: ``{step: skip}`` for the official steps daskramp does not run.  Bookkeeping
    parameters at their defaults are not kept.
    """

    path: Path
    kind: str  # "pipeline" or "step"
    class_name: str
    steps: dict
    not_used: dict = field(default_factory=dict)
    not_run: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    sha256: str = ""

    def config(self) -> dict:
        """The file as a daskramp configuration (``{"steps": {...}}``)."""
        return {"steps": copy.deepcopy(self.steps)}

    def record(self) -> dict:
        """What the run's provenance keeps of the file."""
        rec = {"file": self.path.name, "path": str(self.path), "sha256": self.sha256,
               "format": "asdf", "kind": self.kind, "class": self.class_name,
               "values": copy.deepcopy(self.steps)}
        if self.not_used:
            rec["not_used"] = copy.deepcopy(self.not_used)
        if self.not_run:
            rec["steps_not_run"] = dict(self.not_run)
        if self.meta:
            rec["meta"] = copy.deepcopy(self.meta)
        return rec


def is_asdf(path) -> bool:
    """The file starts as every ASDF file does (``#ASDF``)."""
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"#ASDF"
    except OSError:
        return False


def read(path) -> ParameterFile:
    """Read and check an official parameter file; every refusal is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    tree = load_tree(path)
    return from_tree(tree, path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def load_tree(path: Path) -> dict:
    """The tree of an ASDF file as plain dicts, lists and scalars (no checks of its keys);
    a file asdf cannot read is one line naming it."""
    try:
        import asdf
    except ImportError:
        raise ImportError(f"{path}: reading an official parameter file (ASDF) needs the asdf "
                          f"package: pip install asdf (it comes with jwst)") from None
    import warnings

    try:
        with warnings.catch_warnings():
            # an unknown tag or extension is the file's business, not the run's: the tree
            # is checked below, key by key
            warnings.simplefilter("ignore")
            with asdf.open(path, lazy_load=False, memmap=False) as af:
                tree = _plain(af.tree)
    except Exception as err:  # noqa: BLE001 - whatever asdf raises, the user sees one line
        raise ConfigError(f"{path}: not a readable ASDF file ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]})") from None
    return tree


def _plain(value):
    """A tree of plain dicts, lists and Python scalars (asdf hands out its own types)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def from_tree(tree: Mapping, path, *, sha256: str = "") -> ParameterFile:
    """A :class:`ParameterFile` from the file's tree (``class``, ``parameters``, ``steps``)."""
    path = Path(path)
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level of the parameter file")
    tree = _current_layout(tree, path)
    cls = tree.get("class")
    if not isinstance(cls, str) or not cls.strip():
        raise ConfigError(f"{path}: class: expected the official class, e.g. "
                          f"'jwst.pipeline.{PIPELINE_CLASS}' or 'jwst.jump.JumpStep', got "
                          f"{shown(cls)}")
    short = _class_short_name(cls, path)
    params = _mapping(tree.get("parameters"), path, "parameters")
    substeps = tree.get("steps")
    meta = tree.get("meta")
    pf = ParameterFile(path=path, kind="pipeline" if short == PIPELINE_CLASS else "step",
                       class_name=cls, steps={}, meta=dict(meta) if isinstance(meta, Mapping) else {},
                       sha256=sha256)
    if pf.kind == "pipeline":
        _pipeline_parameters(pf, params)
        if substeps is None:
            substeps = []
        if not isinstance(substeps, list):
            raise ConfigError(f"{path}: steps: expected a list of {{class, name, parameters}}, "
                              f"got {shown(substeps)}")
        seen = set()
        for i, sub in enumerate(substeps):
            name = _substep_name(sub, i, path)
            if name in seen:
                raise ConfigError(f"{path}: steps: step {name!r} is given twice")
            seen.add(name)
            if sub.get("steps"):
                raise ConfigError(f"{path}: steps.{name}: a step of {PIPELINE_CLASS} has no steps")
            _step_parameters(pf, name, _mapping(sub.get("parameters"), path, f"steps.{name}.parameters"))
    else:
        if substeps:
            raise ConfigError(f"{path}: steps: a single-step file ({short}) has no steps")
        _step_parameters(pf, _STEP_OF_CLASS[short], params)
    return pf


def _current_layout(tree: Mapping, path: Path) -> dict:
    """The tree in the current layout; the older one (stpipe's ``step_config-0.1.0``) keeps
    ``class``, ``name`` and the sub-steps (a mapping by name) inside ``parameters``."""
    params = tree.get("parameters")
    if "class" in tree or not isinstance(params, Mapping) or "class" not in params:
        return dict(tree)
    params = dict(params)
    out = {k: v for k, v in tree.items() if k != "parameters"}
    out["class"] = params.pop("class")
    out["name"] = params.pop("name", None)
    subs = params.pop("steps", None)
    if subs is not None:
        if not isinstance(subs, Mapping):
            raise ConfigError(f"{path}: parameters.steps: expected a mapping of steps by name, "
                              f"got {shown(subs)}")
        out["steps"] = []
        for name, sp in subs.items():
            sp = dict(_mapping(sp, path, f"parameters.steps.{name}"))
            entry = {"name": name, "class": sp.pop("class", None)}
            sp.pop("name", None)
            entry["parameters"] = sp
            out["steps"].append(entry)
    out["parameters"] = params
    return out


def _class_short_name(cls: str, path: Path) -> str:
    parts = cls.strip().split(".")
    short = parts[-1]
    known = short == PIPELINE_CLASS or short in _STEP_OF_CLASS
    if parts[0] != "jwst" or len(parts) < 2 or not known:
        raise ConfigError(f"{path}: class: {cls!r} is not the official {PIPELINE_CLASS} or one of "
                          f"its steps (e.g. 'jwst.pipeline.{PIPELINE_CLASS}', 'jwst.jump.JumpStep')")
    return short


def _mapping(value, path: Path, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {where}: expected a mapping of parameters, got {shown(value)}")
    return dict(value)


def _substep_name(sub, i: int, path: Path) -> str:
    if not isinstance(sub, Mapping):
        raise ConfigError(f"{path}: steps[{i}]: expected a mapping {{class, name, parameters}}, "
                          f"got {shown(sub)}")
    name = sub.get("name")
    if name not in STEP_CLASSES:
        raise ConfigError(f"{path}: steps[{i}].name: {shown(name)} is not a step of "
                          f"{PIPELINE_CLASS}; its steps are: {', '.join(STEP_CLASSES)}")
    cls = sub.get("class")
    if cls:
        short = str(cls).strip().split(".")[-1]
        if short != STEP_CLASSES[name]:
            raise ConfigError(f"{path}: steps.{name}.class: {cls!r} is not the class of the "
                              f"official {name} step ({STEP_CLASSES[name]})")
    return name


# ---------------------------------------------------------------------- parameters


def _at_default(value, default) -> bool:
    """``value`` means the official default ``default`` (as stpipe would read it)."""
    if default is None:
        return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value is default
        if isinstance(value, str):
            return value.strip().lower() == str(default).lower()
        return False
    if isinstance(default, numbers.Real):
        if isinstance(value, bool):
            return False
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        return math.isfinite(v) and v == float(default)
    if isinstance(default, list):
        return isinstance(value, (list, tuple)) and list(value) == default
    return value == default


def _boolean(value, path: Path, where: str) -> bool:
    try:
        return Rule("boolean").coerce(value)
    except Refused:
        raise ConfigError(f"{path}: {where}: {shown(value)} is not allowed (true or false)") from None


def _bookkeeping(pf: ParameterFile, where: str, name: str, value, table) -> None:
    default, instead = table[name]
    if not _at_default(value, default):
        raise ConfigError(f"{pf.path}: {where}.{name}: {shown(value)} is not accepted: an official "
                          f"bookkeeping parameter daskramp takes only at its default "
                          f"{default!r} ({instead})")


def _override(pf: ParameterFile, where: str, name: str, value) -> None:
    if not _at_default(value, None):
        rt = name[len(OVERRIDE_PREFIX):]
        raise ConfigError(f"{pf.path}: {where}.{name}: {shown(value)} is not accepted in a "
                          f"parameter file: give the reference file with --override-{rt}")


def _pipeline_parameters(pf: ParameterFile, params: dict) -> None:
    where = PIPELINE_CLASS
    for name, value in params.items():
        if name == "save_results":
            # the pipeline's own result: daskramp always writes rate and rateints
            pf.not_used[f"{where}.{name}"] = _boolean(value, pf.path, f"{where}.{name}")
        elif name in PIPELINE_BOOKKEEPING:
            _bookkeeping(pf, where, name, value, PIPELINE_BOOKKEEPING)
        elif name in BOOKKEEPING:
            _bookkeeping(pf, where, name, value, BOOKKEEPING)
        elif name.startswith(OVERRIDE_PREFIX):
            _override(pf, where, name, value)
        else:
            raise ConfigError(f"{pf.path}: {where}.{name}: not a parameter of the official "
                              f"{PIPELINE_CLASS} (its step parameters go under steps)")


def _step_parameters(pf: ParameterFile, step: str, params: dict) -> None:
    where = f"steps.{step}"
    if step in registry.step_order():
        rules = registry.rules(step)
        values = pf.steps.setdefault(step, {})
        for name, value in params.items():
            rule = rules.get(name)
            if rule is not None and rule.official:
                try:
                    registry.validate(step, {name: value})
                except ConfigError as err:
                    raise type(err)(f"{pf.path}: {err}") from None
                values[name] = value
            elif rule is not None:
                raise ConfigError(f"{pf.path}: {where}.{name}: not a parameter of the official "
                                  f"{STEP_CLASSES.get(step, step)} but daskramp's own: set it in "
                                  f"the workflow YAML")
            else:
                _unused(pf, step, name, value, official=None)
        return
    defaults = OFFICIAL_DEFAULTS[step]
    skip = _boolean(params.get("skip", defaults["skip"]), pf.path, f"{where}.skip")
    if not skip and defaults["skip"]:
        raise ConfigError(f"{pf.path}: {where}.skip: False is not accepted: daskramp does not run "
                          f"the official {step} step"
                          + (" (MIRI only)" if step in MIRI_ONLY else "")
                          + "; a parameter file may name it only with skip: true")
    pf.not_run[step] = skip
    for name, value in params.items():
        if name == "skip":
            continue
        if skip:
            # a step that does not run: its parameters change nothing, officially either
            # (bookkeeping is still checked: it means the same for every step)
            if name in BOOKKEEPING or name.startswith(OVERRIDE_PREFIX):
                _unused(pf, step, name, value, official=None)
            else:
                pf.not_used[f"{where}.{name}"] = value
            continue
        _unused(pf, step, name, value, official=defaults)


def _unused(pf: ParameterFile, step: str, name: str, value, official) -> None:
    """A parameter daskramp does not use: accepted only at the official default."""
    where = f"steps.{step}"
    if name in BOOKKEEPING:
        _bookkeeping(pf, where, name, value, BOOKKEEPING)
    elif name.startswith(OVERRIDE_PREFIX):
        _override(pf, where, name, value)
    elif official is not None and name in official:
        if not _at_default(value, official[name]):
            raise ConfigError(f"{pf.path}: {where}.{name}: {shown(value)} is not accepted: daskramp "
                              f"does not run the official {step} step, so only its default "
                              f"{official[name]!r} is")
        pf.not_used[f"{where}.{name}"] = value
    else:
        raise ConfigError(f"{pf.path}: {where}.{name}: not a parameter of the official "
                          f"{STEP_CLASSES.get(step, step)} (jwst 3.0)")


def changes(values: Mapping) -> dict:
    """``{"<step>.<parameter>": value}`` of the values (a record's ``values``) that differ
    from daskramp's step defaults: what a parameter file changes, for the log."""
    out = {}
    for step, params in values.items():
        default = registry.validate(step)
        for name, value in params.items():
            given = getattr(registry.validate(step, {name: value}), name)
            if given != getattr(default, name):
                out[f"{step}.{name}"] = given
    return out


def check_exposure(record: Mapping, attrs: Mapping) -> None:
    """Refuse a MIRI-only step left on (``skip: false``) in a parameter file (its provenance
    record, :meth:`ParameterFile.record`) for a MIRI exposure: the official pipeline would
    run it there, daskramp does not."""
    if str(attrs.get("INSTRUME", "")).strip().upper() != "MIRI":
        return
    on = [s for s, skip in (record.get("steps_not_run") or {}).items() if not skip and s in MIRI_ONLY]
    if on:
        raise ConfigError(f"{record['path']}: steps.{on[0]}.skip: False is not accepted for a MIRI "
                          f"exposure: the official pipeline runs {on[0]} on MIRI data and "
                          f"daskramp does not")


__all__ = ["BOOKKEEPING", "MIRI_ONLY", "OFFICIAL_DEFAULTS", "PIPELINE_BOOKKEEPING", "PIPELINE_CLASS",
           "STEP_CLASSES", "ParameterFile", "changes", "check_exposure", "from_tree", "is_asdf", "load_tree",
           "read"]
