"""A minimal local CRDS cache written from scratch, for tests and offline parity runs.

The cache has the layout ``crds sync`` leaves (spec 11 §3): one pipeline mapping (``.pmap``),
one instrument mapping (``.imap``) and one reference mapping (``.rmap``) per reftype under
``mappings/jwst/``, the files under ``references/jwst/<instrument>/`` (links to the files
given, named as CRDS names them, ``jwst_<instrument>_<reftype>_<NNNN>.<ext>``), and
``config/jwst/server_config`` with the context, so that crds answers with no server.  Every
mapping carries its ``sha1sum``, as delivered mappings do.

:func:`write_cache` writes the mappings it is given; :func:`simulated_cache` writes the
rules of spec 11 §1 for the files of a simulated exposure (each file on a row of the
exposure's selector values, beside rows that must lose: another pattern, an older and a
future USEAFTER, whose files are not in the cache) and answers N/A for every other reftype
the official pipeline may ask for.  Neither touches ``os.environ``: :func:`crds_env` gives the
variables that point crds at the cache, offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daskramp.io.crds import DATAMODEL_KEYWORDS, pars_reftypes
from daskramp.io.refs import SELECTION_KEYWORDS

#: reftypes a NIR Detector1 run (with its optional steps) may ask CRDS for that the local cache
#: answers N/A when no file is given (CRDS answers N/A for them on NIR data, or the step runs
#: without them: clean_flicker_noise's FLAT and PASTASOSS are only read by options that are
#: off by default)
LOCAL_NA = ("ipc", "refpix", "sirskernel", "rscd", "reset", "emicorr", "flat", "pastasoss",
            "persat", "trapdensity", "trappars")

#: the context the cache is written with unless told otherwise
DEFAULT_CONTEXT = "jwst_9000.pmap"

#: a server address that refuses at once: crds never waits for a network
REFUSED_SERVER = "https://127.0.0.1:9"

#: USEAFTER of the files :func:`simulated_cache` serves (before any simulated observation)
USEAFTER = "2022-01-01 00:00:00"

#: selectors of the parameter reftypes :func:`simulated_cache` writes rules for (spec 11 §4:
#: the pipeline's file by TSOVISIT; NIRISS jump by FILTER and PUPIL); others by date only
PARS_SELECTORS = {
    "pars-detector1pipeline": ("TSOVISIT",),
    "pars-jumpstep": ("FILTER", "PUPIL"),
}


@dataclass
class Rmap:
    """One reftype's rules: ``parkey`` are FITS keywords (``("DETECTOR", "READPATT")``),
    ``rows`` map a tuple of cell values (a value, ``A|B``, ``ANY``, ``N/A``) to
    ``{USEAFTER: file name or "N/A"}``, or to "N/A" directly."""

    parkey: tuple[str, ...]
    rows: dict = field(default_factory=dict)


def crds_env(root, context: str = DEFAULT_CONTEXT) -> dict[str, str]:
    """The environment that makes crds answer from the cache at ``root``, offline: local
    best references, a server that refuses at once."""
    return {"CRDS_PATH": str(root), "CRDS_CONTEXT": context, "CRDS_MODE": "local",
            "CRDS_SERVER_URL": REFUSED_SERVER}


def _with_checksum(header: dict, selector: str) -> str:
    """A mapping's text with its ``sha1sum`` (computed as crds does: over every line but
    the one holding it)."""
    def text(h):
        lines = ["header = {"] + [f"    {k!r} : {v!r}," for k, v in sorted(h.items())]
        return "\n".join([*lines, "}", "", f"selector = {selector}", ""])

    digest = hashlib.sha1(text(header).encode()).hexdigest()
    return text({**header, "sha1sum": digest})


def _cell(value) -> str:
    if isinstance(value, bool):
        return "T" if value else "F"
    return str(value).strip().upper()


def _selector(rows: Mapping) -> str:
    out = ["Match({"]
    for match, value in rows.items():
        key = repr(tuple(_cell(v) for v in match))
        if isinstance(value, str):
            out.append(f"    {key} : {value!r},")
            continue
        out.append(f"    {key} : UseAfter({{")
        out += [f"        {ua!r} : {name!r}," for ua, name in sorted(value.items())]
        out.append("    }),")
    out.append("})")
    return "\n".join(out)


def _link(source: Path, target: Path) -> None:
    """``target`` holding ``source``'s bytes without copying them: a hard link keeps the
    name CRDS gives the file (a reader resolving symbolic links would see the source's)."""
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.link(source.resolve(), target)
    except OSError:  # another file system
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, target)


def write_cache(root, instrument: str, rmaps: Mapping[str, Rmap | str], *,
                files: Mapping[str, str | Path] | None = None, context: str = DEFAULT_CONTEXT) -> Path:
    """Write a CRDS cache at ``root`` whose ``context`` holds the rules ``rmaps`` for
    ``instrument``.

    Parameters
    ----------
    rmaps : mapping
        ``{reftype: Rmap or "N/A"}`` (``"dark"``, ``"pars-jumpstep"``; "N/A" is the
        instrument mapping's answer for the reftype).
    files : mapping, optional
        ``{name in the cache: source file}``: the files the rules may choose (linked).
    context : str
        The ``.pmap`` name (``jwst_<NNNN>.pmap``); the other mappings take its number.

    Returns
    -------
    Path : ``root``.
    """
    root = Path(root)
    inst = instrument.strip().upper()
    serial = context.removeprefix("jwst_").removesuffix(".pmap")
    maps = root / "mappings" / "jwst"
    refs = root / "references" / "jwst" / inst.lower()
    cfg = root / "config" / "jwst"
    for d in (maps, refs, cfg):
        d.mkdir(parents=True, exist_ok=True)
    common = {"observatory": "JWST", "derived_from": "written by daskramp.testing.crds_cache"}
    imap = f"jwst_{inst.lower()}_{serial}.imap"
    (maps / context).write_text(_with_checksum(
        {**common, "mapping": "PIPELINE", "name": context, "parkey": ("META.INSTRUMENT.NAME",)},
        repr({inst: imap})))
    selector = {}
    dates = ("META.OBSERVATION.DATE", "META.OBSERVATION.TIME")
    for reftype, rules in rmaps.items():
        rt = reftype.upper()
        if isinstance(rules, str):
            selector[rt] = rules
            continue
        name = f"jwst_{inst.lower()}_{reftype.lower()}_{serial}.rmap"
        parkey = tuple(DATAMODEL_KEYWORDS[k.upper()] for k in rules.parkey)
        header = {**common, "mapping": "REFERENCE", "name": name, "instrument": inst,
                  "filekind": rt, "classes": ("Match", "UseAfter"), "parkey": (parkey, dates)}
        (maps / name).write_text(_with_checksum(header, _selector(rules.rows)))
        selector[rt] = name
    (maps / imap).write_text(_with_checksum(
        {**common, "mapping": "INSTRUMENT", "name": imap, "instrument": inst, "parkey": ("REFTYPE",)},
        repr(dict(sorted(selector.items())))))
    for name, source in (files or {}).items():
        _link(Path(source), refs / name)
    (cfg / "server_config").write_text(repr({
        "observatory": "jwst", "operational_context": context, "edit_context": context,
        "force_remote_mode": False, "last_synced": "2026-01-01 00:00:00", "bad_files": "",
        # crds reads the list on every lookup (spec 11 §3)
        "bad_files_list": [], "download_metadata": ""}))
    (cfg / "ref_cache_subdir_mode").write_text("instrument")
    return root


def cache_name(instrument: str, reftype: str, number: int, ext: str) -> str:
    """A file name as CRDS gives it (``jwst_niriss_dark_9001.fits``)."""
    return f"jwst_{instrument.lower()}_{reftype.lower()}_{number:04d}.{ext}"


def simulated_cache(root, refs: Mapping[str, str | Path], attrs: Mapping, *,
                    pars: Mapping[str, str | Path] | None = None, na=(),
                    rmaps: Mapping[str, Rmap | str] | None = None,
                    context: str = DEFAULT_CONTEXT) -> dict[str, str]:
    """A cache serving a simulated exposure's reference files, with the rules of spec 11 §1.

    Parameters
    ----------
    refs : mapping
        ``{reftype: file}`` (``daskramp.simulate`` writes them), each served on the row of
        the exposure's own selector values (``attrs``) with USEAFTER :data:`USEAFTER`.  Rows
        that must lose point at files not in the cache: a row of another READPATT or
        SUBARRAY where the reftype selects on one, the same selectors with an older
        USEAFTER and with one after the observation.
    attrs : mapping
        The exposure's primary header.
    pars : mapping, optional
        ``{pars reftype: ASDF file}``, selected by :data:`PARS_SELECTORS`.
    na : iterable of str
        Reftypes the instrument mapping answers N/A for, beside every Detector1 reftype
        and parameter reftype not given (the official pipeline asks for them).
    rmaps : mapping, optional
        Rules written instead of those above (``{reftype: Rmap or "N/A"}``).
    context : str

    Returns
    -------
    dict : :func:`crds_env` of the cache.
    """
    inst = str(attrs["INSTRUME"]).strip().upper()
    serial = int(context.removeprefix("jwst_").removesuffix(".pmap"))
    rules: dict[str, Rmap | str] = {rt: "N/A" for rt in (*LOCAL_NA, *pars_reftypes(), *na)}
    files: dict[str, Path] = {}
    after = "2099-01-01 00:00:00"
    for reftype, path in refs.items():
        keys = ("DETECTOR", *(k for k in SELECTION_KEYWORDS[inst][reftype] if k != "DETECTOR"))
        own = tuple(attrs.get(k, "N/A") for k in keys)
        name = cache_name(inst, reftype, serial + 1, "fits")
        files[name] = Path(path)
        rows = {own: {"2021-01-01 00:00:00": cache_name(inst, reftype, serial + 2, "fits"),
                      USEAFTER: name, after: cache_name(inst, reftype, serial + 3, "fits")}}
        for k in ("READPATT", "SUBARRAY"):
            if k in keys:
                other = tuple("OTHER" if kk == k else v for kk, v in zip(keys, own, strict=True))
                rows[other] = {USEAFTER: cache_name(inst, reftype, serial + 4, "fits")}
        rules[reftype] = Rmap(keys, rows)
    for reftype, path in (pars or {}).items():
        keys = PARS_SELECTORS.get(reftype, ())
        name = cache_name(inst, reftype, serial + 1, "asdf")
        files[name] = Path(path)
        rules[reftype] = Rmap(keys, {tuple(attrs.get(k, "N/A") for k in keys): {USEAFTER: name}})
    rules.update(rmaps or {})
    write_cache(root, inst, rules, files=files, context=context)
    return crds_env(root, context)


__all__ = ["DEFAULT_CONTEXT", "LOCAL_NA", "PARS_SELECTORS", "REFUSED_SERVER", "USEAFTER", "Rmap", "cache_name",
           "crds_env", "simulated_cache", "write_cache"]
