"""Run the official pipeline (``jwst`` Detector1Pipeline) offline, for parity and benchmarks.

Needs the ``parity`` extra (``pip install -e ".[parity]"``).  Follows spec 10: CRDS is never
contacted (private cache, a refusing server address, local mode, no parameter reference
files) and every reference file is given as an ``override_<reftype>``.

Run as a separate process so its memory can be measured on its own::

    python -m daskramp.testing.official UNCAL --refs REFS_DIR --out OUTDIR [--maximum-cores all]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
}


def configure_offline(crds_path: str | Path, context: str = "jwst_1300.pmap") -> None:
    """Environment that keeps CRDS and astropy off the network (call before importing jwst)."""
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
                 crds_path=None) -> dict:
    """Run Detector1Pipeline on one uncal segment; return output paths and step timings."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    configure_offline(crds_path or outdir / "crds_cache")
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
    args = p.parse_args(argv)
    refs_arg = Path(args.refs)
    if refs_arg.is_dir():
        from astropy.io import fits

        from ..dims import check_keywords  # noqa: F401  (keeps the import path honest)
        from ..io.refs import RefSet

        attrs = dict(fits.getheader(args.uncal, 0))
        rs = RefSet.from_dir(refs_arg, attrs)
        refs = {rt: str(rs.get(rt).path) for rt in
                ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise") if rs.get(rt)}
    else:
        refs = json.loads(refs_arg.read_text())
    extra = json.loads(args.steps_json) if args.steps_json else {}
    for step in ("jump", "ramp_fit"):
        extra.setdefault(step, {})["maximum_cores"] = args.maximum_cores
    out = run_official(args.uncal, refs, args.out, steps=extra)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
