"""References and parameter reference files chosen by CRDS from the user's cache (spec 11 §3–§4).

``daskramp run --crds`` (``daskramp.run.run(..., crds=True)``) asks the ``crds`` package, as
the official pipeline does, for every reference the steps that run read and for the
parameter reference files (``pars-detector1pipeline``, selected by TSOVISIT, and one
``pars-<step class>`` per official step).  CRDS is configured as for the official pipeline:

* ``CRDS_PATH`` names the cache (required: mappings in ``mappings/jwst/``, references in
  ``references/jwst/<instrument>/``, ``config/jwst/server_config``);
* ``CRDS_CONTEXT`` the rules (``jwst_1322.pmap``; unset: the context crds chooses, the
  server's or the one the cache was last synced with);
* ``CRDS_MODE=local`` and a ``CRDS_SERVER_URL`` that cannot be reached keep crds offline: a
  synced cache is then all it needs.  Otherwise crds may contact its server to learn the
  context, as it does for the official pipeline.

daskramp never downloads: a file CRDS chooses that is not in the cache is an error naming it
(``crds sync`` fetches it).  So is a missing ``CRDS_PATH``, a cache without its
configuration, and a context, or a mapping of it, that is not in the cache; each in one line,
before any cluster starts.

What CRDS answers becomes what ``--refs DIR`` would give (:class:`CrdsRefSet`, a
:class:`~daskramp.io.refs.RefSet`): a file (read and checked as an override is), or "N/A",
which skips the step with that reason, as ``--override-<reftype> N/A`` does.  A reftype CRDS
has no rule or no match for is an error, as it is fatal to the official pipeline.
``--override-<reftype>`` beats CRDS, as ``override_<reftype>`` does officially.

The parameter files are read as ``--config`` files are (:func:`daskramp.config.from_files`):
single-step files below the pipeline file (stpipe merges them in that order), the whole
layer below the user's configuration (spec 11 §4: code defaults < CRDS ``pars-<step>`` <
CRDS ``pars-<pipeline>`` < user configuration files < command line).  A parameter file CRDS
answers N/A for, or has no rule for, is not used (stpipe ignores those answers too).  A value
the user gives is taken out of the files before they are checked, since it is never used: a
file's value daskramp does not implement is refused only when it would apply (then one line
naming the file and the parameter).  ``STPIPE_DISABLE_CRDS_STEPPARS`` switches the files off
as it does for stpipe.

The context, the crds version and every file chosen (``crds://<name>``) are recorded in the
products' provenance and FITS headers (``CRDS_CTX``, ``CRDS_VER``, ``R_<reftype>``), as the
official products record them.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

from .. import steps as registry
from ..config import FILE_KINDS, ConfigError, merge
from ..parsfile import STEP_CLASSES, from_tree, load_tree
from .refs import (
    BASE_REFTYPES,
    NA,
    NOT_NEEDED,
    REFTYPES,
    SELECTION_KEYWORDS,
    RefSet,
    not_applicable,
)

logger = logging.getLogger("daskramp.crds")

OBSERVATORY = "jwst"

#: the pipeline's parameter reftype (stpipe: ``pars-`` + the lower-case class name)
PIPELINE_PARS = "pars-detector1pipeline"

#: the URI prefix the official products give a file CRDS chose (stpipe ``Step.get_reference_file``)
URI_PREFIX = "crds://"

#: FITS keyword → datamodel path (upper case, as rmaps spell parkeys) of the keywords the
#: Detector1 rmaps select on (spec 11 §1 and the pars rmaps); used when the datamodels
#: schema crds translates with (:func:`crds.jwst.schema.fits_to_dm`) cannot be loaded
DATAMODEL_KEYWORDS = {
    "TELESCOP": "META.TELESCOPE",
    "INSTRUME": "META.INSTRUMENT.NAME",
    "DETECTOR": "META.INSTRUMENT.DETECTOR",
    "FILTER": "META.INSTRUMENT.FILTER",
    "PUPIL": "META.INSTRUMENT.PUPIL",
    "BAND": "META.INSTRUMENT.BAND",
    "CHANNEL": "META.INSTRUMENT.CHANNEL",
    "MODULE": "META.INSTRUMENT.MODULE",
    "GRATING": "META.INSTRUMENT.GRATING",
    "EXP_TYPE": "META.EXPOSURE.TYPE",
    "READPATT": "META.EXPOSURE.READPATT",
    "NOUTPUTS": "META.EXPOSURE.NOUTPUTS",
    "NINTS": "META.EXPOSURE.NINTS",
    "NGROUPS": "META.EXPOSURE.NGROUPS",
    "NFRAMES": "META.EXPOSURE.NFRAMES",
    "GROUPGAP": "META.EXPOSURE.GROUPGAP",
    "SUBARRAY": "META.SUBARRAY.NAME",
    "SUBSTRT1": "META.SUBARRAY.XSTART",
    "SUBSTRT2": "META.SUBARRAY.YSTART",
    "SUBSIZE1": "META.SUBARRAY.XSIZE",
    "SUBSIZE2": "META.SUBARRAY.YSIZE",
    "FASTAXIS": "META.SUBARRAY.FASTAXIS",
    "SLOWAXIS": "META.SUBARRAY.SLOWAXIS",
    "TSOVISIT": "META.VISIT.TSOVISIT",
    "DATE-OBS": "META.OBSERVATION.DATE",
    "TIME-OBS": "META.OBSERVATION.TIME",
}


class CrdsError(ConfigError):
    """CRDS cannot give the references or parameter files of a run (one line: what is missing)."""


def pars_reftypes() -> tuple[str, ...]:
    """The parameter reftypes the official Detector1Pipeline asks for: the pipeline's, then
    one per official step (``pars-jumpstep``, …), whether daskramp runs the step or not."""
    return (PIPELINE_PARS, *(f"pars-{cls.lower()}" for cls in STEP_CLASSES.values()))


# ---------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Cache:
    """A CRDS cache ready for lookups: where it is, the context (``.pmap``) crds uses, the
    mode it computes best references in and its version."""

    path: Path
    context: str
    mode: str
    version: str

    def record(self) -> dict:
        """What the provenance keeps: ``context`` (``CRDS_CTX``), ``version`` (``CRDS_VER``),
        ``mode`` and ``path``."""
        return {"context": self.context, "version": self.version, "mode": self.mode,
                "path": str(self.path)}


def _import_crds():
    try:
        import crds
    except ImportError:
        raise ImportError("--crds needs the crds package: pip install crds (it comes with jwst)") from None
    return crds


@contextmanager
def _quiet():
    """crds's own console output held back while it answers: its errors become one
    :class:`CrdsError` line, its warnings go to daskramp's log; a traceback crds prints
    itself (a failed download of mappings) is dropped with its error."""
    lg = logging.getLogger("CRDS")
    handlers = list(lg.handlers)
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = _Keep(logging.WARNING)
    for h in handlers:
        lg.removeHandler(h)
    lg.addHandler(keep)
    try:
        with redirect_stderr(io.StringIO()):
            yield records
    finally:
        lg.removeHandler(keep)
        for h in handlers:
            lg.addHandler(h)
        for r in records:
            if r.levelno == logging.WARNING:
                logger.warning(f"CRDS: {' '.join(r.getMessage().split())}")


def _server_config(crds) -> Path:
    return Path(crds.core.config.locate_config("server_config", OBSERVATORY))


def _missing_file(exc: BaseException) -> str | None:
    """The file a failure of crds comes from not finding, if any (searched down the chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FileNotFoundError) and exc.filename:
            return str(exc.filename)
        exc = exc.__cause__ or exc.__context__
    return None


def _explain(crds, exc: BaseException, context: str | None) -> CrdsError:
    """One line saying what a failure of crds means for the cache."""
    path = os.environ.get("CRDS_PATH", "")
    cfg = _server_config(crds)
    if not cfg.is_file():
        return CrdsError(f"CRDS_PATH={path} is not a synced CRDS cache: {cfg} is missing and the "
                         f"CRDS server cannot be reached (fill the cache with: crds sync "
                         f"--contexts <context> --fetch-references)")
    missing = _missing_file(exc)
    where = f"context {context}" if context else "the context"
    if missing is not None:
        return CrdsError(f"CRDS {where} is not complete in the cache {path}: {missing} not found "
                         f"(fetch it with: crds sync --contexts {context or '<context>'})")
    if isinstance(exc, SystemExit):
        return CrdsError(f"crds could not read the cache {path} (its configuration {cfg} is "
                         f"unreadable); resync it with: crds sync --contexts <context>")
    msg = " ".join(str(exc).split())
    if type(exc).__name__ == "CrdsUnknownInstrumentError":
        return CrdsError(f"CRDS {where} has no rules for the exposure: {msg}")
    if type(exc).__name__ == "ChecksumError":
        return CrdsError(f"CRDS {where}: {msg} (a mapping in {path} was edited after it was "
                         f"delivered; resync it with: crds sync --contexts {context})")
    return CrdsError(f"crds could not answer from the cache {path} ({where}): "
                     f"{type(exc).__name__}: {msg}")


def open_cache() -> Cache:
    """The user's CRDS cache (``CRDS_PATH``) and the context crds uses there.

    crds's remembered answers (contexts, mappings, server configuration) are cleared first,
    so a change of ``CRDS_PATH`` or ``CRDS_CONTEXT`` in this process takes effect.

    Raises
    ------
    CrdsError
        ``CRDS_PATH`` not set or not a directory, a cache without its configuration (never
        synced) while the server cannot be reached, a ``CRDS_CONTEXT`` that names no
        context, or a context whose ``.pmap`` is not in the cache.
    """
    path = os.environ.get("CRDS_PATH", "").strip()
    if not path:
        raise CrdsError("--crds needs a CRDS cache: CRDS_PATH is not set (set it to the directory "
                        "crds sync fills, and CRDS_CONTEXT to the context, e.g. jwst_1322.pmap)")
    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise CrdsError(f"CRDS_PATH={path}: no such directory (expected the CRDS cache that "
                        f"crds sync fills)")
    crds = _import_crds()
    from crds.core import heavy_client, utils

    env_context = os.environ.get("CRDS_CONTEXT", "").strip()
    if env_context and not crds.core.config.is_mapping_spec(env_context):
        raise CrdsError(f"CRDS_CONTEXT={env_context!r} is not a CRDS context (expected a .pmap "
                        f"name such as jwst_1322.pmap, or jwst-operational)")
    utils.clear_function_caches()
    with _quiet():
        try:
            mode, context = heavy_client.get_processing_mode(OBSERVATORY)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever crds raises: one line
            raise _explain(crds, exc, env_context or None) from None
    pmap = Path(crds.locate_mapping(context, OBSERVATORY))
    if not pmap.is_file():
        raise CrdsError(f"CRDS context {context} is not in the cache: {pmap} not found (fetch it "
                        f"with: crds sync --contexts {context} --fetch-references)")
    return Cache(path=root, context=str(context), mode=str(mode), version=str(crds.__version__))


# ---------------------------------------------------------------------------- lookups


def _fits_to_datamodel():
    """FITS keyword → datamodel path: crds's translation through the datamodels schema,
    which the official pipeline's ``get_crds_parameters`` follows, else
    :data:`DATAMODEL_KEYWORDS`."""
    try:
        from crds.jwst import schema

        schema.fits_to_dm("INSTRUME")
    except Exception:  # noqa: BLE001 - no datamodels package: the keywords rmaps select on
        return DATAMODEL_KEYWORDS.get
    return schema.fits_to_dm


def crds_parameters(exposure_attrs: Mapping) -> dict:
    """The exposure's FITS keywords as CRDS matches them: ``{"META.INSTRUMENT.NAME":
    "NIRISS", "META.VISIT.TSOVISIT": True, …}`` (datamodel paths, scalar values), as the
    official pipeline's ``model.get_crds_parameters()`` gives them."""
    import numpy as np

    translate = _fits_to_datamodel()
    out = {}
    for key, value in exposure_attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (str, int, float, bool)):
            continue
        path = translate(str(key).upper())
        if path:
            out[str(path).upper()] = value
    return out


def _answer(value) -> tuple[str, str]:
    """``("file", name)``, ``("na", "")`` or ``("error", why)`` from one CRDS answer."""
    text = str(value).strip()
    if text.upper().startswith("NOT FOUND"):
        why = text[len("NOT FOUND"):].strip()
        # stpipe reads any answer holding N/A as "no file" (crds_client._get_refpaths)
        return ("na", "") if "N/A" in why.upper() else ("error", why or "no answer")
    if text.upper() == NA:
        return "na", ""
    return "file", text


def recommendations(cache: Cache, exposure_attrs: Mapping, reftypes: Sequence[str]) -> dict:
    """``{reftype: ("file", name) | ("na", "") | ("error", why)}``: what the cache's context
    selects for the exposure, computed as crds computes it (``crds.getrecommendations``,
    nothing downloaded)."""
    if not reftypes:
        return {}
    crds = _import_crds()
    params = crds_parameters(exposure_attrs)
    with _quiet():
        try:
            raw = crds.getrecommendations(params, reftypes=list(reftypes), context=cache.context,
                                          observatory=OBSERVATORY)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever crds raises: one line
            raise _explain(crds, exc, cache.context) from None
    return {rt: _answer(raw.get(rt, "NOT FOUND no answer")) for rt in reftypes}


def _cache_paths(cache: Cache, chosen: Mapping[str, str]) -> dict[str, Path]:
    """``{reftype: path in the cache}`` of the chosen names; a name not in the cache is an
    error listing every one missing."""
    crds = _import_crds()
    paths, missing = {}, []
    for rt, name in chosen.items():
        p = Path(crds.locate_file(name, OBSERVATORY))
        if p.is_file():
            paths[rt] = p
        else:
            missing.append((rt, name, p))
    if missing:
        listed = ", ".join(f"{name} ({rt.upper()})" for rt, name, _ in missing)
        raise CrdsError(f"CRDS context {cache.context} chooses files that are not in the cache "
                        f"{cache.path}: {listed}, expected in {missing[0][2].parent}; fetch them "
                        f"with: crds sync --files {' '.join(n for _, n, _ in missing)}")
    return paths


def _exposure_values(reftype: str, attrs: Mapping) -> str:
    inst = str(attrs.get("INSTRUME", "")).strip().upper()
    keys = SELECTION_KEYWORDS.get(inst, {}).get(reftype, ())
    shown = ("INSTRUME", *keys, "DATE-OBS", "TIME-OBS")
    return ", ".join(f"{k}={attrs.get(k)!r}" for k in shown if attrs.get(k) is not None)


# ---------------------------------------------------------------------------- parameter files


def parameter_files(exposure_attrs: Mapping, cache: Cache | None = None) -> dict[str, Path]:
    """``{pars reftype: path}``: the parameter reference files the context chooses for the
    exposure (those it answers N/A for, or has no rule for, are left out, as stpipe leaves
    them out)."""
    cache = cache or open_cache()
    answers = recommendations(cache, exposure_attrs, pars_reftypes())
    chosen = {rt: v for rt, (kind, v) in answers.items() if kind == "file"}
    for rt, (kind, why) in answers.items():
        if kind == "error":
            logger.debug(f"{rt.upper()}: no parameter file in {cache.context} ({why})")
    return _cache_paths(cache, chosen)


#: values of ``STPIPE_DISABLE_CRDS_STEPPARS`` that switch the CRDS parameter files off, as
#: stpipe reads it (spec 11 §4: exactly these; "TRUE" and "1" do not)
DISABLE_STEPPARS = ("true", "True", "t", "yes", "y")


def steppars_disabled() -> bool:
    """``STPIPE_DISABLE_CRDS_STEPPARS`` says not to use CRDS parameter files (as stpipe reads it)."""
    return os.environ.get("STPIPE_DISABLE_CRDS_STEPPARS", "") in DISABLE_STEPPARS


def _user_steps(config: Mapping | None) -> dict:
    """``{step: {param: value}}`` the user's configuration gives (a step's whole ``Params``
    gives every parameter)."""
    import dataclasses

    steps = (config or {}).get("steps")
    if not isinstance(steps, Mapping):
        return {}
    out = {}
    for name, given in steps.items():
        if dataclasses.is_dataclass(given) and not isinstance(given, type):
            given = dataclasses.asdict(given)
        if isinstance(given, Mapping):
            out[str(name)] = given
    return out


def _pruned(params: Mapping, given: Mapping | None) -> dict:
    """A step's parameters in a CRDS file without those the user's configuration gives
    (``given``: the user's values for the step), or none of them when the user skips the
    step: what the user gives wins officially, so the file's value for it is never used."""
    if not given:
        return dict(params)
    skip = given.get("skip")
    if skip is True or (isinstance(skip, str) and skip.strip().lower() in ("true", "yes", "on", "1")):
        return {}
    return {k: v for k, v in params.items() if k not in given}


def _prune_step(sub, given: Mapping | None):
    """One step's entry of a file without the values ``given`` replaces; ``class`` and
    ``name`` (kept inside the parameters by the older layout) stay."""
    if not isinstance(sub, Mapping):
        return sub
    keep = {k: sub[k] for k in ("class", "name") if k in sub}
    return {**keep, **_pruned({k: v for k, v in sub.items() if k not in keep}, given)}


def _prune_tree(tree, user: Mapping):
    """``tree`` (a parameter file, current or older layout) without the values ``user``
    (``{step: {param: value}}``) replaces; a tree of another shape is returned as it is, for
    :func:`daskramp.parsfile.from_tree` to judge."""
    if not isinstance(tree, Mapping) or not user:
        return tree
    tree = dict(tree)
    params = tree.get("parameters")
    cls = tree.get("class") or (params.get("class") if isinstance(params, Mapping) else None)
    step = {c: s for s, c in STEP_CLASSES.items()}.get(str(cls or "").strip().split(".")[-1])
    if step is not None:  # a single-step file
        tree["parameters"] = _prune_step(params, user.get(step))
    elif isinstance(tree.get("steps"), list):  # a pipeline file
        tree["steps"] = [{**sub, "parameters": _prune_step(sub.get("parameters"), user.get(sub.get("name")))}
                         if isinstance(sub, Mapping) else sub for sub in tree["steps"]]
    elif isinstance(params, Mapping) and isinstance(params.get("steps"), Mapping):  # older layout
        tree["parameters"] = {**params, "steps": {name: _prune_step(sub, user.get(name))
                                                  for name, sub in params["steps"].items()}}
    return tree


def parameters(exposure_attrs: Mapping, cache: Cache | None = None, *,
               under: Mapping | None = None) -> tuple[dict, list[dict]]:
    """``(configuration, records)``: the CRDS parameter files of the exposure merged as stpipe
    merges them (``pars-<step>`` files, then ``pars-detector1pipeline`` over them), and their
    provenance records (as :func:`daskramp.config.from_files` makes them, each with ``crds``:
    its ``crds://`` name).  Layer the user's configuration over it (:func:`layered_under`).

    ``under``: the user's configuration.  A value it gives is left out of the files before
    they are read, as it wins anyway: a file's value daskramp does not implement is refused
    only when it would be used (``--steps.jump.expand_large_events=false`` over a file that
    turns it on runs, as it does officially).  With ``STPIPE_DISABLE_CRDS_STEPPARS`` set as
    stpipe reads it, no parameter file is used.
    """
    import hashlib

    if steppars_disabled():
        logger.info("CRDS parameter files not used (STPIPE_DISABLE_CRDS_STEPPARS="
                    f"{os.environ['STPIPE_DISABLE_CRDS_STEPPARS']})")
        return {"steps": {}}, []
    user = _user_steps(under)
    read = []
    for path in parameter_files(exposure_attrs, cache).values():
        tree = _prune_tree(load_tree(path), user)
        try:
            pf = from_tree(tree, path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        except ConfigError as err:
            raise type(err)(f"{err} (a parameter file CRDS chose: give the value yourself, "
                            f"e.g. --steps.<step>.<parameter>=…, or set "
                            f"STPIPE_DISABLE_CRDS_STEPPARS=true to use none)") from None
        read.append(pf)
    cfg: dict = {"steps": {}}
    records = []
    for pf in sorted(read, key=lambda f: FILE_KINDS.index(f.kind)):  # stable: given order kept
        cfg = merge(cfg, pf.config())
        rec = pf.record()
        rec["crds"] = URI_PREFIX + pf.path.name
        records.append(rec)
    return cfg, records


def layered_under(crds_config: Mapping, config: Mapping | None) -> dict:
    """``config`` (the user's files, environment and command line, merged) over the CRDS
    parameter files' ``crds_config``: spec 11 §4's precedence."""
    config = dict(config or {})
    if config.get("steps") is not None and not isinstance(config.get("steps"), Mapping):
        return config  # malformed: refused by the parameters' validation, naming it
    return merge(crds_config, config)


# ---------------------------------------------------------------------------- references


class CrdsRefSet(RefSet):
    """A :class:`RefSet` of files chosen by CRDS: its provenance gives each file's
    ``crds://`` name (``uri``) and :attr:`crds` the cache record (context, version, …)."""

    #: :meth:`Cache.record` of the cache the files come from
    crds: dict | None = None
    #: ``{reftype: "crds://<name>"}`` of the files CRDS chose (overrides are not among them)
    uris: dict

    def provenance(self) -> dict:
        out = super().provenance()
        for rt, uri in getattr(self, "uris", {}).items():
            if out.get(rt, {}).get("path"):
                out[rt]["uri"] = uri
        return out


def reference_set(exposure_attrs: Mapping, steps=None, *, overrides: Mapping | None = None,
                  cache: Cache | None = None) -> CrdsRefSet:
    """The reference files CRDS chooses for the steps that run on the exposure.

    Parameters
    ----------
    exposure_attrs : mapping
        The exposure's FITS keywords (``Dataset.attrs``).
    steps : mapping, optional
        ``{step: Params or {param: value}}``: which steps run (the references of a skipped
        step are not asked for, as the official pipeline does not prefetch them).
    overrides : mapping of reftype to path or "N/A", optional
        Files used instead of CRDS's choice (``--override-<reftype>``).
    cache : Cache, optional
        Default: :func:`open_cache`.

    Raises
    ------
    CrdsError
        A reftype a running step reads that the context has no rule or no match for; a file
        it chooses that is not in the cache; an N/A answer for a reference a step cannot run
        without (jump, ramp_fit).  One line each.
    """
    params = registry.validate_steps(steps)
    cache = cache or open_cache()
    ov = {}
    for k, v in (overrides or {}).items():
        rt = str(k).lower().removeprefix("override_")
        if rt not in REFTYPES:
            raise CrdsError(f"override {k!r}: unknown reftype; known: {REFTYPES}")
        ov[rt] = v
    wanted = {rt for s in registry.active() if not params[s.name].skip
              for rt in (*s.reftypes, *s.required_for(params[s.name]))}
    reasons: dict[str, str] = {}
    ask = []
    for rt in REFTYPES:
        if rt in ov:
            continue
        why = not_applicable(rt, exposure_attrs)
        if why is not None:
            reasons[rt] = why
        elif rt not in wanted and rt not in BASE_REFTYPES:
            # an option's reftype (FLAT): left out of the products, as officially
            reasons[rt] = f"{rt.upper()}: {NOT_NEEDED}"
        elif rt not in wanted:
            reasons[rt] = f"{rt.upper()}: not asked of CRDS (no step that runs reads it)"
        else:
            ask.append(rt)
    answers = recommendations(cache, exposure_attrs, ask)
    failed = [(rt, why) for rt, (kind, why) in answers.items() if kind == "error"]
    if failed:
        raise CrdsError("; ".join(
            f"CRDS context {cache.context} selects no {rt.upper()} reference for the exposure "
            f"({_exposure_values(rt, exposure_attrs)}): {' '.join(why.split())}" for rt, why in failed))
    chosen = {rt: v for rt, (kind, v) in answers.items() if kind == "file"}
    for rt, (kind, _) in answers.items():
        if kind == "na":
            reasons[rt] = f"{rt.upper()}: N/A in CRDS context {cache.context}"
    files: dict[str, Path | str | None] = dict(_cache_paths(cache, chosen))
    for rt, v in ov.items():
        if v is None or (isinstance(v, str) and v.strip().upper() == NA):
            reasons[rt] = f"{rt.upper()}: override N/A"
        else:
            files[rt] = v
    for s in registry.active():
        if params[s.name].skip or s.refs_missing != "error":
            continue
        lacking = [rt for rt in s.required_for(params[s.name]) if files.get(rt) is None]
        if lacking:
            raise CrdsError(f"{s.name} cannot run without {lacking[0].upper()} ("
                            f"{reasons.get(lacking[0], 'no file')}); give one with "
                            f"--override-{lacking[0]} FILE")
    out = CrdsRefSet.from_files(files, exposure_attrs, reasons=reasons)
    out.crds = cache.record()
    out.uris = {rt: URI_PREFIX + name for rt, name in chosen.items()}
    return out


__all__ = ["DATAMODEL_KEYWORDS", "DISABLE_STEPPARS", "PIPELINE_PARS", "URI_PREFIX", "Cache",
           "CrdsError", "CrdsRefSet", "crds_parameters", "layered_under", "open_cache",
           "parameter_files", "parameters", "pars_reftypes", "recommendations", "reference_set",
           "steppars_disabled"]
