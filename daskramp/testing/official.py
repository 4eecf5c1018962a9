"""Run the official pipeline (``jwst`` Detector1Pipeline) offline, for parity and benchmarks.

Needs the ``parity`` extra (``pip install -e ".[parity]"``).  Follows spec 10: CRDS is never
contacted (private cache, a refusing server address, local mode, no parameter reference
files) and every reference file is given as an ``override_<reftype>``.  A lookup no override
reaches — clean_flicker_noise's draft ``RampFitStep()`` asks CRDS for GAIN and READNOISE — is
served by a local CRDS cache of the same files (spec 11 §3, :func:`write_crds_cache`,
``--local-crds``; on by default when clean_flicker_noise runs).

Run as a separate process so its memory can be measured on its own::

    python -m daskramp.testing.official UNCAL --refs REFS_DIR --out OUTDIR [--maximum-cores all]
    python -m daskramp.testing.official UNCAL --refs REFS_DIR --out OUTDIR \
        --steps-json '{"clean_flicker_noise": {"skip": false}}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..dims import check_keywords  # noqa: F401  (keeps the import path honest)
from ..io.refs import RefSet
from .crds_cache import DEFAULT_CONTEXT as LOCAL_CONTEXT
from .crds_cache import LOCAL_NA, Rmap, write_cache

#: per step, the reference overrides it takes (spec 10); N/A where CRDS answers N/A for NIR
STEP_OVERRIDES = {
    "dq_init": {"mask": "mask"},
    "saturation": {"saturation": "saturation", "superbias": "superbias"},
    "ipc": {"ipc": None},
    "superbias": {"superbias": "superbias"},
    "refpix": {"refpix": None, "sirskernel": None},
    # MIRI-only steps: the pipeline still prefetches their references for any instrument
    "rscd": {"rscd": None},
    "reset": {"reset": None},
    "linearity": {"linearity": "linearity"},
    "dark_current": {"dark": "dark"},
    "jump": {"gain": "gain", "readnoise": "readnoise"},
    "ramp_fit": {"gain": "gain", "readnoise": "readnoise"},
    "gain_scale": {"gain": "gain"},
    # its FLAT with apply_flat_field; PASTASOSS (NIS_SOSS mask_science_regions) is not made
    "clean_flicker_noise": {"flat": "flat", "pastasoss": None},
}


def configure_offline(crds_path: str | Path, context: str = "jwst_1300.pmap") -> None:
    """Environment that keeps CRDS and astropy off the network (call before importing jwst).

    ``context`` names the pmap CRDS would use; it is only opened for a reference that no
    ``override_<reftype>`` gives (a cache written by :func:`write_crds_cache` serves those).
    """
    crds_path = Path(crds_path)
    cfg = crds_path / "config" / "jwst"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "server_config").write_text(
        repr(
            {
                "observatory": "jwst",
                "operational_context": context,
                "edit_context": context,
                "force_remote_mode": False,
                "last_synced": "2026-01-01 00:00:00",
                "bad_files": "",
                # real lookups read it (spec 11 §3)
                "bad_files_list": [],
                "download_metadata": "",
            }
        )
    )
    os.environ.update(
        CRDS_PATH=str(crds_path),
        CRDS_SERVER_URL="https://127.0.0.1:9",
        CRDS_MODE="local",
        CRDS_CONTEXT=context,
        STPIPE_DISABLE_CRDS_STEPPARS="True",
    )


def write_crds_cache(crds_path: str | Path, refs: dict[str, str], attrs: dict, *,
                     context: str = LOCAL_CONTEXT) -> str:
    """A minimal offline CRDS cache that serves the given reference files (spec 11 §3).

    The official pipeline asks CRDS for references that no ``override_<reftype>`` can reach:
    clean_flicker_noise's draft rate is a fresh ``RampFitStep()`` that looks GAIN and
    READNOISE up itself.  This writes (:func:`daskramp.testing.crds_cache.write_cache`) one
    pmap, one imap for the exposure's instrument and one rmap per reftype of ``refs`` (every DETECTOR value matched, one USEAFTER in 1900, so
    the file is chosen whatever the observation date), links the files into the cache's
    ``references/jwst/<instrument>/`` and answers N/A for :data:`LOCAL_NA`.  Then it calls
    :func:`configure_offline` with the context, so call it before importing jwst.

    Parameters
    ----------
    crds_path : path
        Cache root (created).
    refs : mapping
        ``{reftype: path}`` (lower-case reftypes, as :data:`STEP_OVERRIDES` names them).
    attrs : mapping
        The exposure's primary header (INSTRUME).

    Returns
    -------
    str : the context name (``CRDS_CONTEXT``).
    """
    instrument = str(attrs["INSTRUME"]).strip().upper()
    rules: dict = {rt: "N/A" for rt in LOCAL_NA}
    files = {}
    for reftype, path in refs.items():
        name = Path(path).name
        files[name] = path
        # any DETECTOR; one USEAFTER before every observation
        rules[reftype.lower()] = Rmap(("DETECTOR",), {("ANY",): {"1900-01-01 00:00:00": name}})
    write_cache(crds_path, instrument, rules, files=files, context=context)
    configure_offline(crds_path, context=context)
    return context


def step_config(refs: dict[str, str], extra: dict | None = None) -> dict:
    """``steps=`` argument of Detector1Pipeline.call with every reference overridden."""
    steps: dict = {}
    for step, mapping in STEP_OVERRIDES.items():
        s = {}
        for key, reftype in mapping.items():
            s[f"override_{key}"] = "N/A" if reftype is None or reftype not in refs else str(refs[reftype])
        steps[step] = s
    for step, params in (extra or {}).items():
        steps.setdefault(step, {}).update(params)
    return steps


def run_official(uncal, refs: dict[str, str], outdir, *, steps: dict | None = None,
                 crds_path=None, local_crds: bool = False) -> dict:
    """Run Detector1Pipeline on one uncal segment; return output paths and step timings.

    ``local_crds``: CRDS serves ``refs`` from a local cache (:func:`write_crds_cache`), for
    the references a step looks up without an override (clean_flicker_noise's draft ramp
    fit); otherwise the cache is empty and every lookup must be overridden.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    crds_path = crds_path or outdir / "crds_cache"
    if local_crds:
        from astropy.io import fits

        write_crds_cache(crds_path, refs, dict(fits.getheader(str(uncal), 0)))
    else:
        configure_offline(crds_path)
    from astropy.utils import iers

    iers.conf.auto_download = False
    import logging

    from jwst.pipeline import Detector1Pipeline

    timings: dict[str, float] = {}

    class _Timer(logging.Handler):
        # step start/finish lines give per-step wall times without touching the pipeline
        def __init__(self):
            super().__init__()
            self.start = {}

        def emit(self, record):
            msg = record.getMessage()
            if not msg.startswith("Step "):
                return
            name = msg.split()[1]
            if " running with args" in msg:
                self.start[name] = time.perf_counter()
            elif msg.endswith(" done") and name in self.start:
                # gain_scale runs twice (rate and rateints): add the runs up
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.start.pop(name)

    handler = _Timer()
    logging.getLogger("stpipe").addHandler(handler)
    logging.getLogger("stpipe").setLevel(logging.INFO)
    t0 = time.perf_counter()
    Detector1Pipeline.call(str(uncal), steps=step_config(refs, steps), output_dir=str(outdir),
                           save_results=True)
    wall = time.perf_counter() - t0
    root = Path(uncal).name.replace("_uncal.fits", "")
    return {
        "rate": str(outdir / f"{root}_rate.fits"),
        "rateints": str(outdir / f"{root}_rateints.fits"),
        "wall_s": wall,
        "step_s": timings,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("uncal")
    p.add_argument("--refs", required=True, help="JSON file {reftype: path} or a directory")
    p.add_argument("--out", required=True)
    p.add_argument("--maximum-cores", default="1")
    p.add_argument("--steps-json", help="extra step parameters as JSON")
    p.add_argument("--local-crds", action="store_true",
                   help="serve the references from a local CRDS cache too (for lookups no "
                        "override reaches, e.g. clean_flicker_noise's draft ramp fit; implied "
                        "when --steps-json turns clean_flicker_noise on)")
    args = p.parse_args(argv)
    refs_arg = Path(args.refs)
    if refs_arg.is_dir():
        from astropy.io import fits

        attrs = dict(fits.getheader(args.uncal, 0))
        rs = RefSet.from_dir(refs_arg, attrs)
        refs = {rt: str(rs.get(rt).path) for rt in
                ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise") if rs.get(rt)}
    else:
        refs = json.loads(refs_arg.read_text())
    extra = json.loads(args.steps_json) if args.steps_json else {}
    for step in ("jump", "ramp_fit"):
        extra.setdefault(step, {})["maximum_cores"] = args.maximum_cores
    # the draft ramp fit of clean_flicker_noise cannot be given overrides: CRDS must serve it
    cfn_on = not extra.get("clean_flicker_noise", {}).get("skip", True)
    out = run_official(args.uncal, refs, args.out, steps=extra, local_crds=args.local_crds or cfn_on)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
