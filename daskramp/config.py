"""Layered configuration: step defaults < configuration files < environment < command line.

A workflow file (``workflows/*.yaml``) holds the science recipe::

    steps:
      jump:
        rejection_threshold: 10
      dark_current:
        skip: true
    stats_scope: segment

Cluster profiles (``workflows/clusters/*.yaml``) are separate: they say where the graph runs
and with how much memory, never what it computes.  Environment variables
``DASKRAMP_STEPS__<STEP>__<PARAM>=value`` override the file; ``--steps.<step>.<param>=value``
on the command line overrides both.

The official pipeline's parameter files (ASDF, ``pars-detector1pipeline``, ``pars-jumpstep``,
files ``export_config`` writes; :mod:`daskramp.parsfile`) are configuration files too, below
the workflow YAML as the official pipeline puts CRDS parameter files below the user's:
single-step files < pipeline files < workflow YAML files, each kind in the order given
(:func:`from_files`).  Values are parsed as YAML scalars (``10``, ``true``,
``4.5``, ``null``); text that is not valid YAML stays the string given.  Nothing here judges
a step parameter: :mod:`daskramp.params` coerces and checks every value once, whichever
layer it came from, and names ``steps.<step>.<param>`` in its one-line error.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from . import parsfile
from .errors import ConfigError


def parse_value(text: str):
    """Parse a command-line/env value as a YAML scalar (``'10'`` → 10, ``'true'`` → True).

    Text that is not valid YAML (``'[1'``) is returned as the string given, so that the
    parameter's validation (:mod:`daskramp.params`) refuses it naming the parameter.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_yaml(path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Mapping, update: Mapping, _where: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces).

    A mapping merged onto a value that is neither a mapping nor None (``jump: 5`` in the
    workflow, ``--steps.jump.rejection_threshold=10`` on the command line) is an error, not a
    silent replacement of the malformed value.
    """
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        where = f"{_where}.{k}" if _where else str(k)
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v, where)
        elif isinstance(v, Mapping) and out.get(k) is not None:
            what = "a mapping of parameters" if where.count(".") == 1 and where.startswith("steps.") \
                else "a mapping"
            raise ConfigError(f"{where}: expected {what}, got {out[k]!r}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, dotted: str, value) -> dict:
    """Set ``cfg['steps']['jump']['rejection_threshold']`` from ``'steps.jump.rejection_threshold'``."""
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"empty configuration key {dotted!r}")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"configuration key {dotted!r} goes through a non-mapping value")
    node[keys[-1]] = value
    return cfg


def from_env(environ: Mapping[str, str] | None = None, prefix: str = "DASKRAMP_STEPS__") -> dict:
    """Step overrides from ``DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD=10`` style variables."""
    environ = os.environ if environ is None else environ
    cfg: dict = {}
    for key, val in environ.items():
        if key.startswith(prefix):
            parts = key[len(prefix) :].lower().split("__")
            if len(parts) != 2:
                raise ConfigError(f"environment variable {key}: expected {prefix}<STEP>__<PARAM>")
            set_dotted(cfg, f"steps.{parts[0]}.{parts[1]}", parse_value(val))
    return cfg


def parse_overrides(args: Iterable[str]) -> dict:
    """``['--steps.jump.rejection_threshold=10', '--steps.dark_current.skip', 'true']`` → nested dict."""
    cfg: dict = {}
    args = list(args)
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--steps."):
            raise ConfigError(f"unrecognised argument {a!r} (step parameters are --steps.<step>.<param>=<value>)")
        key = a[2:]
        if "=" in key:
            key, val = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 1
            val = args[i]
        else:
            val = "true"
        parts = key.split(".")
        if len(parts) != 3:
            raise ConfigError(f"{a!r}: expected --steps.<step>.<param>=<value>")
        set_dotted(cfg, key, parse_value(val))
        i += 1
    return cfg


#: precedence of the kinds of configuration file, lowest first (spec 11 §4: CRDS step files <
#: the CRDS pipeline file < the user's configuration)
FILE_KINDS = ("step", "pipeline", "yaml")


def as_paths(files) -> list[Path]:
    """``files`` (one path or a sequence of paths, or None) as a list of paths."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        return [Path(files)]
    return [Path(f) for f in files]


def read_file(path) -> tuple[str, dict, dict]:
    """``(kind, configuration, record)`` of one configuration file: an official parameter
    file (ASDF; kind "pipeline" or "step") or a workflow YAML (kind "yaml").  ``record`` is
    what the run's provenance keeps of it (name, sha256 and, for a parameter file, the values
    daskramp took from it)."""
    path = Path(path)
    if parsfile.is_asdf(path):
        pf = parsfile.read(path)
        return pf.kind, pf.config(), pf.record()
    data = load_yaml(path)
    if "class" in data and "parameters" in data:
        raise ConfigError(f"{path}: an official parameter tree (class, parameters) in plain YAML: "
                          f"daskramp reads official parameter files in ASDF, as export_config "
                          f"writes them and CRDS serves them")
    record = {"file": path.name, "path": str(path), "format": "yaml",
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return "yaml", data, record


def from_files(files) -> tuple[dict, list[dict]]:
    """The configuration of several files merged in the official precedence (single-step
    parameter files < pipeline parameter files < workflow YAML; files of one kind in the
    order given, the later winning), and their provenance records in the order applied."""
    read = [read_file(p) for p in as_paths(files)]
    ordered = sorted(read, key=lambda r: FILE_KINDS.index(r[0]))  # stable: given order kept
    cfg: dict = {"steps": {}}
    for _kind, data, record in ordered:
        try:
            cfg = merge(cfg, data)
        except ConfigError as err:
            raise ConfigError(f"{record['path']}: {err}") from None
    return cfg, [record for _, _, record in ordered]


def layered(*, workflow=None, environ: Mapping[str, str] | None = None, cli: Iterable[str] = ()) -> dict:
    """The effective configuration: files < environment < command line.

    ``workflow``: one configuration file or a sequence of them, workflow YAML or official
    parameter files (ASDF), layered as :func:`from_files` does.
    """
    cfg, _ = from_files(workflow)
    cfg = merge(cfg, from_env(environ))
    cfg = merge(cfg, parse_overrides(cli))
    return cfg
