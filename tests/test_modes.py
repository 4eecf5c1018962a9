"""Near-IR TSO modes (spec 14): NIRSpec bright-object TSO and NIRCam grism time series.

* Presets (no jwst): the geometry, timing and keywords of every subarray/detector/output/readout
  combination against spec 14 §1–§4; what is refused (IRS2, unknown subarrays, 4-output NIRSpec);
  the uncal files (keywords, GROUP and INT_TIMES tables); reference selection by
  :meth:`daskramp.io.refs.RefSet.from_dir` with every reftype required (NIRSpec DARK by
  SUBSTRT/SUBSIZE, NIRCam DARK by NOUTPUTS and not READPATT); the RAPID dark averaged per group
  (BRIGHT2: 2 frames, BRIGHT1: a skipped frame) against the simulator's truth; the scene.
* refpix on each layout (no files, whole frames through :func:`daskramp.kernels.refpix.refpix`):
  the correction removes the simulator's per-group, per-amplifier, per-parity bias offsets —
  NIRSpec top/bottom detector rows (SUB2048, SUB1024A/B), the stand-in end columns of SUB512
  and SUB512S, NRS2's mirrored parity, NIRCam 1 output (pooled) and 4 outputs (per amplifier,
  bottom rows then side columns), module B.
* Parity (``parity`` marker, jwst 3.0, official pipeline offline in one process): simulate →
  :func:`daskramp.run.run` on an in-process client with forced tiles (narrow ones, ones holding
  the amplifier boundaries at 512 and 1536, rows split) and the workflow recipe → compare
  rateints/rate/DQ with Detector1Pipeline on the same files and references.  Expected: DQ
  identical; floats bit-identical with one output.  With 4 outputs jwst processes the first frame
  of each file in float32 (``refpix.reference_pixels.get_group`` allocates its frame buffer with
  the input dtype; the side correction makes it float64 for every later frame), a ≤ 1 float32 ulp
  difference in group 0 that daskramp does not reproduce (see
  ``tests/kernels/test_refpix.py::test_parity_full_frame_random``): the slopes of the first
  integration of each segment differ by ≤ 1e-3 DN/s, and var_poisson/err (whose Poisson term
  uses a rate pooled over the segment) by float32 rounding in any integration.  The recovered
  rates match the truth within the errors.  One official process per fast case (each setup
  < 30 s); the extra layouts are ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daskramp import dq
from daskramp.io.refs import REFTYPES, ReferenceFileError, RefSet, not_applicable
from daskramp.simulate import (
    AXES,
    _build_state,
    _configure,
    _Geometry,
    _one_integration,
    frame_time,
    load_truth,
    simulate,
)
from daskramp.testing.parity import compare_arrays

ROOT = Path(__file__).resolve().parents[1]
#: workflow recipe per EXP_TYPE
WORKFLOW = {"NRS_BRIGHTOBJ": ROOT / "workflows" / "nirspec_bots_tso.yaml",
            "NRC_TSGRISM": ROOT / "workflows" / "nircam_grism_tso.yaml",
            "NRC_TSIMAGE": ROOT / "workflows" / "nircam_imaging_tso.yaml",
            "NIS_SOSS": ROOT / "workflows" / "niriss_soss_tso.yaml"}


# ------------------------------------------------------------------------------ presets


#: (preset, overrides) → (DETECTOR, SUBARRAY, SUBSTRT1, SUBSTRT2, SUBSIZE1, SUBSIZE2, NOUTPUTS,
#: FASTAXIS, SLOWAXIS, READPATT, NFRAMES, GROUPGAP, TFRAME) from spec 14 §1–§4
GEOMETRY = [
    ("nirspec-bots", {}, ("NRS1", "SUB2048", 1, 963, 2048, 32, 1, 2, 1, "NRSRAPID", 1, 0, 0.90200)),
    ("nirspec-bots", {"detector": "NRS2"}, ("NRS2", "SUB2048", 1, 1055, 2048, 32, 1, -2, -1, "NRSRAPID", 1, 0, 0.90200)),
    ("nirspec-bots", {"subarray": "SUB1024A"}, ("NRS1", "SUB1024A", 1, 963, 1024, 32, 1, 2, 1, "NRSRAPID", 1, 0, 0.45144)),
    ("nirspec-bots", {"subarray": "SUB1024A", "detector": "NRS2"},
     ("NRS2", "SUB1024A", 1025, 1055, 1024, 32, 1, -2, -1, "NRSRAPID", 1, 0, 0.45144)),
    ("nirspec-bots", {"subarray": "SUB1024B", "grating": "G235H"},
     ("NRS1", "SUB1024B", 1025, 967, 1024, 32, 1, 2, 1, "NRSRAPID", 1, 0, 0.45144)),
    ("nirspec-bots", {"subarray": "SUB512", "grating": "PRISM"},
     ("NRS1", "SUB512", 1025, 957, 512, 32, 1, 2, 1, "NRSRAPID", 1, 0, 0.22616)),
    ("nirspec-bots", {"subarray": "SUB512S", "grating": "G395M", "detector": "NRS2"},
     ("NRS2", "SUB512S", 513, 1080, 512, 16, 1, -2, -1, "NRSRAPID", 1, 0, 0.14392)),
    ("nirspec-bots", {"readpatt": "NRSRAPIDD2"}, ("NRS1", "SUB2048", 1, 963, 2048, 32, 1, 2, 1, "NRSRAPIDD2", 1, 2, 0.90200)),
    ("nircam-grism-tso", {}, ("NRCALONG", "SUBGRISM64", 1, 1, 2048, 64, 4, -1, 2, "BRIGHT2", 2, 0, 0.34061)),
    ("nircam-grism-tso", {"noutputs": 1, "readpatt": "RAPID"},
     ("NRCALONG", "SUBGRISM64", 1, 1, 2048, 64, 1, -1, 2, "RAPID", 1, 0, 1.35960)),
    ("nircam-grism-tso", {"subarray": "SUBGRISM128", "readpatt": "BRIGHT1"},
     ("NRCALONG", "SUBGRISM128", 1, 1, 2048, 128, 4, -1, 2, "BRIGHT1", 1, 1, 0.67597)),
    ("nircam-grism-tso", {"subarray": "SUBGRISM256", "noutputs": 1, "readpatt": "SHALLOW2"},
     ("NRCALONG", "SUBGRISM256", 1, 1, 2048, 256, 1, -1, 2, "SHALLOW2", 2, 3, 5.31480)),
    ("nircam-grism-tso", {"detector": "NRCBLONG", "subarray": "SUBGRISM256"},
     ("NRCBLONG", "SUBGRISM256", 1, 1793, 2048, 256, 4, 1, -2, "BRIGHT2", 2, 0, 1.34669)),
    # NIRISS SOSS (spec 14 §1, §3, §4): the default SUBSTRIP256 as before, SUBSTRIP96 10 rows
    # higher, FULL through 4 outputs
    ("niriss-soss", {}, ("NIS", "SUBSTRIP256", 1, 1793, 2048, 256, 1, -2, -1, "NISRAPID", 1, 0, 5.49400)),
    ("niriss-soss", {"subarray": "SUBSTRIP96"}, ("NIS", "SUBSTRIP96", 1, 1803, 2048, 96, 1, -2, -1, "NISRAPID", 1, 0, 2.21400)),
    ("niriss-soss", {"subarray": "FULL", "readpatt": "NIS"},
     ("NIS", "FULL", 1, 1, 2048, 2048, 4, -2, -1, "NIS", 4, 0, 10.73677)),
    # NIRCam imaging TSO (NRC_TSIMAGE): the SW stripe taken with the grism TSO (SIAF GRISMTSn),
    # and the SUBnP imaging subarrays (SIAF PRDOPSSOC-073 corners)
    ("nircam-imaging-tso", {}, ("NRCA3", "SUBGRISM64", 1, 134, 2048, 64, 4, -1, 2, "BRIGHT2", 2, 0, 0.34061)),
    ("nircam-imaging-tso", {"detector": "NRCA1", "subarray": "SUBGRISM128", "noutputs": 1},
     ("NRCA1", "SUBGRISM128", 1, 95, 2048, 128, 1, -1, 2, "BRIGHT2", 2, 0, 2.67800)),
    ("nircam-imaging-tso", {"subarray": "SUBGRISM256", "readpatt": "RAPID"},
     ("NRCA3", "SUBGRISM256", 1, 1, 2048, 256, 4, -1, 2, "RAPID", 1, 0, 1.34669)),
    ("nircam-imaging-tso", {"subarray": "SUB64P", "readpatt": "RAPID"},
     ("NRCA3", "SUB64P", 1, 101, 64, 64, 1, -1, 2, "RAPID", 1, 0, 0.05016)),
    ("nircam-imaging-tso", {"subarray": "SUB160P"}, ("NRCA3", "SUB160P", 1889, 1, 160, 160, 1, -1, 2, "BRIGHT2", 2, 0, 0.27864)),
    ("nircam-imaging-tso", {"detector": "NRCB1", "subarray": "SUB400P"},
     ("NRCB1", "SUB400P", 1649, 1649, 400, 400, 1, 1, -2, "BRIGHT2", 2, 0, 1.65624)),
    ("nircam-imaging-tso", {"detector": "NRCB1", "subarray": "SUB64P"},
     ("NRCB1", "SUB64P", 1851, 1817, 64, 64, 1, 1, -2, "BRIGHT2", 2, 0, 0.05016)),
    ("nircam-imaging-tso", {"detector": "NRCBLONG", "subarray": "SUB160P", "readpatt": "RAPID"},
     ("NRCBLONG", "SUB160P", 1889, 1889, 160, 160, 1, 1, -2, "RAPID", 1, 0, 0.27864)),
    ("nircam-imaging-tso", {"detector": "NRCB1", "subarray": "FULL", "readpatt": "RAPID"},
     ("NRCB1", "FULL", 1, 1, 2048, 2048, 4, 1, -2, "RAPID", 1, 0, 10.73677)),
]


@pytest.mark.parametrize("preset, overrides, expect", GEOMETRY)
def test_preset_geometry_and_timing(preset, overrides, expect):
    p = _configure(preset, None, None, None, None, overrides)
    got = (p.detector, p.subarray, p.substrt1, p.substrt2, p.nx, p.ny, p.noutputs, *AXES[p.detector],
           p.readpatt, p.nframes, p.groupgap)
    assert got == expect[:-1]
    assert p.tframe == pytest.approx(expect[-1], abs=5e-6)
    # spec 14 §3 formula (n_f along the fast axis: NIRSpec SUBSIZE2, NIRCam SUBSIZE1)
    assert p.tframe == frame_time(p.nx, p.ny, fastaxis=AXES[p.detector][0], noutputs=p.noutputs)


def test_mode_keywords():
    p = _configure("nirspec-bots", None, None, None, None, {"grating": "PRISM", "subarray": "SUB512"})
    assert (p.instrument, p.exp_type, p.grating, p.filter, p.fxd_slit, p.pupil) == (
        "NIRSPEC", "NRS_BRIGHTOBJ", "PRISM", "CLEAR", "S1600A1", None)
    p = _configure("nircam-grism-tso", None, None, None, None, {"detector": "NRCBLONG"})
    assert (p.exp_type, p.module, p.channel, p.filter, p.pupil) == ("NRC_TSGRISM", "B", "LONG", "F322W2", "GRISMR")
    # explicit values win over the derived ones
    p = _configure("nircam-grism-tso", None, None, None, None, {"readpatt": "BRIGHT1", "nframes": 1, "tframe": 2.0})
    assert (p.nframes, p.groupgap, p.tframe) == (1, 1, 2.0)
    p = _configure("nircam-imaging-tso", None, None, None, None, {})
    assert (p.instrument, p.exp_type, p.module, p.channel, p.filter, p.pupil, p.scene, p.tsovisit) == (
        "NIRCAM", "NRC_TSIMAGE", "A", "SHORT", "F210M", "WLP8", "defocused", True)
    # simultaneous with the grism TSO preset: same exposure root, timing and readout
    g = _configure("nircam-grism-tso", None, None, None, None, {})
    assert (p.root, p.readpatt, p.ngroups, p.nints, p.tframe, p.date_obs, p.time_obs) == (
        g.root, g.readpatt, g.ngroups, g.nints, g.tframe, g.date_obs, g.time_obs)
    p = _configure("nircam-imaging-tso", None, None, None, None, {"detector": "NRCBLONG", "subarray": "SUB64P"})
    assert (p.module, p.channel, p.filter, p.pupil) == ("B", "LONG", "F444W", "CLEAR")
    p = _configure("niriss-soss", None, None, None, None, {"subarray": "SUBSTRIP96"})
    assert (p.exp_type, p.pupil, p.filter) == ("NIS_SOSS", "GR700XD", "CLEAR")
    # narrowing a strip keeps its rows (reference pixels where the real subarray has them)
    p = _configure("niriss-soss", None, None, 256, None, {"subarray": "SUBSTRIP96"})
    assert (p.subarray, p.substrt1, p.substrt2, p.nx, p.ny, p.noutputs, p.tframe) == (
        "GENERIC", 1, 1803, 256, 96, 1, 2.214)


@pytest.mark.parametrize("overrides, match", [
    ({"readpatt": "NRSIRS2RAPID"}, "IRS2 readout.*never for subarrays or time series"),
    ({"readpatt": "NRSIRS2"}, "IRS2 readout"),
    ({"noutputs": 4}, "one output"),
    ({"subarray": "SUB32"}, "unknown subarray 'SUB32'.*target-acquisition"),
    ({"detector": "NRCALONG"}, "DETECTOR must be NRS1 or NRS2"),
    ({"grating": "G999X"}, "unknown grating"),
    ({"readpatt": "RAPID"}, "unknown NIRSPEC readout pattern 'RAPID'"),
])
def test_nirspec_bots_refusals(overrides, match):
    with pytest.raises(ValueError, match=match):
        _configure("nirspec-bots", None, None, None, None, overrides)


@pytest.mark.parametrize("overrides, match", [
    ({"noutputs": 2}, "NOUTPUTS must be 1 or 4"),
    ({"subarray": "SUB64P"}, "unknown subarray"),
    ({"detector": "NRCA1"}, "DETECTOR must be one of NRCALONG, NRCBLONG"),
])
def test_nircam_grism_refusals(overrides, match):
    with pytest.raises(ValueError, match=match):
        _configure("nircam-grism-tso", None, None, None, None, overrides)


@pytest.mark.parametrize("preset, overrides, match", [
    ("niriss-soss", {"subarray": "SUBSTRIP80"}, "unknown subarray 'SUBSTRIP80'"),
    ("niriss-soss", {"subarray": "SUB204STRIPE_SOSS"}, "superstripe"),
    ("niriss-soss", {"subarray": "FULL", "noutputs": 1}, "FULL is read through 4 outputs, not 1"),
    ("niriss-soss", {"noutputs": 4}, "SUBSTRIP256 is read through 1 output, not 4"),
    ("niriss-soss", {"detector": "NRCA1"}, "DETECTOR must be NIS"),
    ("nircam-imaging-tso", {"detector": "NRCALONG"}, "DETECTOR must be one of NRCA1, NRCA3, NRCB1, NRCBLONG"),
    ("nircam-imaging-tso", {"detector": "NRCA1", "subarray": "SUB64P"}, "unknown subarray 'SUB64P' on NRCA1"),
    ("nircam-imaging-tso", {"subarray": "SUB64P", "noutputs": 4}, "NOUTPUTS must be 1 for SUB64P"),
    ("nircam-imaging-tso", {"subarray": "FULL", "noutputs": 1}, "NOUTPUTS must be 4 for FULL"),
    ("nircam-imaging-tso", {"noutputs": 2}, "NOUTPUTS must be 1 or 4 for SUBGRISM64"),
])
def test_soss_and_imaging_refusals(preset, overrides, match):
    with pytest.raises(ValueError, match=match):
        _configure(preset, None, None, None, None, overrides)


# ------------------------------------------------------------------------------ files


#: case → (preset, seed, simulate() arguments, daskramp tiles).  daskramp rounds tile_columns
#: down to a power of two dividing the 2048 columns (daskramp.engine.plan.plan_tiles), so a tile holds
#: several amplifiers only when it is ≥ 1024 columns wide: grism4's 1024-column tiles contain
#: the boundaries at 512 and 1536; tile_rows splits the rows (the NIRSpec parity alternates
#: along DMS rows, the NIRCam side correction varies by row)
CASES = {
    # NIRCam SUBGRISM64, 1 output, BRIGHT1 (GROUPGAP = 1: every other dark frame), one segment
    # (first: the cheapest case also pays the kernels' first compilation)
    "grism1": ("nircam-grism-tso", 13, dict(nints=3, ngroups=5, noutputs=1, readpatt="BRIGHT1",
                                            peak_rate=4000.0), {"tile_columns": 256}),
    # NIRSpec SUB2048 on NRS1: top/bottom detector rows (DMS columns 1–4, 2045–2048), 1 output
    "bots": ("nirspec-bots", 11, dict(nints=3, ngroups=5, segments=2, peak_rate=10500.0),
             {"tile_columns": 512, "tile_rows": 8}),
    # NIRCam SUBGRISM64, 4 outputs, BRIGHT2 (NFRAMES = 2: the RAPID dark is frame-averaged)
    "grism4": ("nircam-grism-tso", 12, dict(nints=3, ngroups=5, segments=2, peak_rate=15000.0),
               {"tile_columns": 1024, "tile_rows": 16}),
}


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """The small exposures shared by the file and parity tests: ``{case: SimulationResult}``.

    Peak rates are set so that the brightest part of the trace saturates in the last group(s).
    """
    root = tmp_path_factory.mktemp("modes")
    return {name: simulate(root / name, preset=preset, seed=seed, **kw)
            for name, (preset, seed, kw, _) in CASES.items()}


def test_uncal_keywords_and_tables(sims):
    bots, grism = sims["bots"], sims["grism4"]
    assert [f.name for f in bots.uncal_files] == [
        "jw01366004001_04101_00001-seg001_nrs1_uncal.fits", "jw01366004001_04101_00001-seg002_nrs1_uncal.fits"]
    a = bots.attrs
    assert (a["INSTRUME"], a["DETECTOR"], a["EXP_TYPE"], a["READPATT"], a["SUBARRAY"]) == (
        "NIRSPEC", "NRS1", "NRS_BRIGHTOBJ", "NRSRAPID", "SUB2048")
    assert (a["GRATING"], a["FILTER"], a["FXD_SLIT"], a["TSOVISIT"]) == ("G395H", "F290LP", "S1600A1", True)
    assert "PUPIL" not in a
    assert (a["NFRAMES"], a["GROUPGAP"], a["FRMDIVSR"], a["TGROUP"]) == (1, 0, 1, 0.902)
    g = grism.attrs
    assert (g["INSTRUME"], g["DETECTOR"], g["EXP_TYPE"], g["CHANNEL"], g["MODULE"], g["FILTER"], g["PUPIL"]) == (
        "NIRCAM", "NRCALONG", "NRC_TSGRISM", "LONG", "A", "F322W2", "GRISMR")
    assert (g["READPATT"], g["NFRAMES"], g["GROUPGAP"], g["FRMDIVSR"], g["NOUTPUTS"]) == ("BRIGHT2", 2, 0, 2, 4)
    assert g["TGROUP"] == pytest.approx(2 * 0.34061)
    for k, f in enumerate(grism.uncal_files):
        with fits.open(f) as h:
            assert [x.name for x in h] == ["PRIMARY", "SCI", "GROUP", "INT_TIMES", "ASDF"]
            t = h["GROUP"].data
            assert len(t) == 3 * 5
            assert list(t["integration_number"][::5]) == [3 * k + 1, 3 * k + 2, 3 * k + 3]
            assert list(t["group_number"][:5]) == [1, 2, 3, 4, 5]
            assert (t["number_of_columns"] == 2048).all() and (t["number_of_rows"] == 64).all()
            # a group ends with its last frame: BRIGHT2 groups are 2 frames apart
            end = (t["end_day"].astype(float) * 86400e3 + t["end_milliseconds"] + t["end_submilliseconds"] / 1e3)
            np.testing.assert_allclose(np.diff(end[:5]), 2 * 0.34061e3, atol=2e-3)
            # the last group of an integration ends when the integration does
            it = h["INT_TIMES"].data
            np.testing.assert_allclose((t["bary_end_time"][4::5] - it["int_end_BJD_TDB"] + 2400000.5) * 86400, 0,
                                       atol=1e-3)
            assert t["group_end_time"][0].startswith(g["DATE-OBS"])
            assert list(it["integration_number"]) == [3 * k + 1, 3 * k + 2, 3 * k + 3]


def test_reference_selection_all_reftypes(sims, tmp_path):
    """Every reftype is selected from the preset's directory with all of them required."""
    import shutil

    for name, sim in sims.items():
        rs = RefSet.from_dir(sim.refs_dir, sim.attrs, required=REFTYPES)
        # every one that applies to the instrument (no FLAT for NIRSpec spectroscopy)
        assert all(rs.get(rt) is not None for rt in REFTYPES if not_applicable(rt, sim.attrs) is None), name
        assert (rs.get("flat") is None) == (sim.attrs["INSTRUME"] == "NIRSPEC"), name
        assert rs.get("dark").arrays["SCI"].shape[-2:] == (sim.attrs["SUBSIZE2"], sim.attrs["SUBSIZE1"])
        with fits.open(sim.refs["dark"]) as h:
            d = h[0].header
            assert (d["NFRAMES"], d["GROUPGAP"]) == (1, 0)
            if d["INSTRUME"] == "NIRCAM":
                # a RAPID-like dark serves BRIGHT1/BRIGHT2 (NIRCam darks do not select on READPATT)
                assert d["READPATT"] == "RAPID" and sim.attrs["READPATT"] != "RAPID"
                assert (d["EXP_TYPE"], d["NOUTPUTS"], d["SUBARRAY"]) == (
                    "NRC_TSGRISM", sim.attrs["NOUTPUTS"], "SUBGRISM64")
            else:
                assert d["DATAMODL"] == "DarkNirspecModel"
                assert (d["READPATT"], d["SUBSTRT1"], d["SUBSTRT2"], d["SUBSIZE1"], d["SUBSIZE2"]) == (
                    "NRSRAPID", 1, 963, 2048, 32)
    # 1- and 4-output SUBGRISM64 darks in one directory: NOUTPUTS picks the right one
    both = tmp_path / "both"
    shutil.copytree(sims["grism4"].refs_dir, both)
    shutil.copy(sims["grism1"].refs["dark"], both / "jwst_nircam_nrcalong_dark_1out.fits")
    for name, nout in (("grism4", 4), ("grism1", 1)):
        dark = RefSet.from_dir(both, sims[name].attrs).get("dark")
        assert dark.header["NOUTPUTS"] == nout
    # NIRSpec: a SUB2048 dark made for another grating's rows is not selected (SUBSTRT2 selects)
    moved = tmp_path / "moved"
    shutil.copytree(sims["bots"].refs_dir, moved)
    with fits.open(moved / sims["bots"].refs["dark"].name, mode="update") as h:
        h[0].header["SUBSTRT2"] = 957
    with pytest.raises(ReferenceFileError, match=r"DARK reference: no file.*SUBSTRT2=957"):
        RefSet.from_dir(moved, sims["bots"].attrs)


@pytest.mark.parametrize("readpatt, frames", [
    ("BRIGHT2", [[0, 1], [2, 3], [4, 5], [6, 7]]),  # NFRAMES = 2: frames averaged
    ("BRIGHT1", [[0], [2], [4], [6]]),  # GROUPGAP = 1: one frame skipped per group
    ("SHALLOW2", [[0, 1], [5, 6], [10, 11], [15, 16]]),  # both
])
def test_rapid_dark_averaged_per_group_matches_truth(tmp_path, readpatt, frames):
    """dark_current's per-group average of the RAPID dark (spec 05) is the dark signal of the
    frames each group averages, as the simulator injects it."""
    from daskramp.kernels.dark_current import average_dark_frames

    sim = simulate(tmp_path, preset="nircam-grism-tso", nints=1, ngroups=4, noutputs=1, readpatt=readpatt,
                   seed=3, peak_rate=100.0)
    a = sim.attrs
    dark = RefSet.from_dir(sim.refs_dir, a).get("dark")
    planes = dark.arrays["SCI"]
    assert planes.shape[0] == frames[-1][-1] + 1  # read only the frames the exposure spans
    avg = np.asarray(average_dark_frames(planes, ngroups=a["NGROUPS"], nframes=a["NFRAMES"], groupgap=a["GROUPGAP"]))
    t = load_truth(sim.truth_path)
    rate = t["dark_rate"].values
    for g, fr in enumerate(frames):
        np.testing.assert_allclose(avg[g], np.mean(fr) * a["TFRAME"] * rate, rtol=1e-5, atol=1e-6)
    # the simulator reads group g at the mean time of its frames (1-based frame ends)
    np.testing.assert_allclose(t["group_time"].values, [(np.mean(fr) + 1) * a["TFRAME"] for fr in frames])


def test_trace_scene(sims, tmp_path):
    t = load_truth(sims["bots"].truth_path)
    src = t["source_rate"].values
    # a trace across the whole subarray, ~1 px wide, rows near the middle; no light on the
    # reference columns
    peak_rows = src[:, 4:-4].argmax(axis=0)
    assert 13 <= peak_rows.min() and peak_rows.max() <= 18
    assert (src[:, :4] == 0).all() and (src[:, -4:] == 0).all()
    assert 0.8 * 10500 < src.max() <= 10500 + 0.2
    assert t.attrs["transit_depth"] == 0.015
    # NIRSpec subarrays without reference pixels: the stand-in end columns get no light at all
    p = _configure("nirspec-bots", 1, 2, None, None, {"subarray": "SUB512", "grating": "PRISM"})
    state, *_ = _build_state(p, 0, 1)
    assert (state["src"][:, :4] == 0).all() and (state["src"][:, -4:] == 0).all()
    assert (state["src"][:, 4:-4] > 0).mean() > 0.99  # all but dead pixels
    # NIRCam grism: the trace at row 34 (1-based), the spectrum inside the detector
    g = load_truth(sims["grism4"].truth_path)["source_rate"].values
    assert abs(int(np.median(g[:, 800:1800].argmax(axis=0))) - 33) <= 1
    assert (g[:, 8:500] < 2.0).all()  # background only left of the spectrum


# ------------------------------------------------------------------------------ refpix per layout


#: layout → (preset, overrides)
LAYOUTS = {
    "nrs1-sub2048": ("nirspec-bots", {}),
    "nrs2-sub2048": ("nirspec-bots", {"detector": "NRS2"}),
    "nrs1-sub1024b": ("nirspec-bots", {"subarray": "SUB1024B"}),
    "nrs2-sub1024a": ("nirspec-bots", {"subarray": "SUB1024A", "detector": "NRS2"}),
    "nrs1-sub512": ("nirspec-bots", {"subarray": "SUB512", "grating": "PRISM"}),
    "nrs2-sub512s": ("nirspec-bots", {"subarray": "SUB512S", "detector": "NRS2"}),
    "nrcalong-4out": ("nircam-grism-tso", {}),
    "nrcalong-1out": ("nircam-grism-tso", {"noutputs": 1, "readpatt": "RAPID"}),
    "nrcblong-4out": ("nircam-grism-tso", {"detector": "NRCBLONG"}),
    # NIRISS SOSS SUBSTRIP96: detector top/bottom rows = DMS columns 1–4, 2045–2048, NIS parity
    "nis-substrip96": ("niriss-soss", {"subarray": "SUBSTRIP96"}),
    # SOSS FULL: the full-frame algorithm, 4 amplifiers along DMS y
    "nis-full": ("niriss-soss", {"subarray": "FULL"}),
    # NIRCam imaging TSO: SW stripe with side columns only (1 output: one mean per parity of the
    # side columns), SUB64P with 4 columns only, SUB400P in the detector corner, SUBGRISM256 SW
    # (bottom rows and sides, 4 amplifiers)
    "nrca3-grism64-1out": ("nircam-imaging-tso", {"noutputs": 1, "readpatt": "RAPID"}),
    "nrca3-sub64p": ("nircam-imaging-tso", {"subarray": "SUB64P", "readpatt": "RAPID"}),
    "nrcb1-sub400p": ("nircam-imaging-tso", {"detector": "NRCB1", "subarray": "SUB400P"}),
    "nrca3-grism256-4out": ("nircam-imaging-tso", {"subarray": "SUBGRISM256"}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_refpix_removes_the_injected_offsets(layout):
    """The reference-pixel correction of each layout equals the simulator's bias offset of every
    (group, amplifier, detector-column parity) to within the noise of the reference pixels, and
    assigning the parities the other way round would not."""
    from daskramp.kernels import refpix as k

    preset, overrides = LAYOUTS[layout]
    # larger per-group offsets than the preset's, so that the two parities differ clearly
    p = _configure(preset, 1, 6, None, None, dict(overrides, one_over_f_amplitude=0.0, cr_rate=0.0,
                                                  refpix_offset_rms=10.0))
    state, _, sub, _ = _build_state(p, 5, 1)
    out, _, _, offsets = _one_integration(state, 0)
    raw = out.view(">i2").astype(np.float32) + np.float32(32768)
    data = (raw - sub["bias"][None])[None]
    fast, slow = AXES[p.detector]
    corrected = k.refpix(data, sub["mask"], substrt1=p.substrt1, substrt2=p.substrt2, fastaxis=fast,
                         slowaxis=slow, noutputs=p.noutputs, subarray=p.subarray)
    applied = (data - corrected)[0]
    geo = _Geometry(p)
    chans = np.unique(geo.chan)
    assert chans.size == 2 * p.noutputs
    # mean correction per channel vs the truth, and vs the truth with the parities swapped
    resid, swapped = [], []
    for g in range(p.ngroups):
        for ch in chans:
            got = applied[g][geo.chan == ch].mean()
            resid.append(got - offsets[g, ch])
            swapped.append(got - offsets[g, ch ^ 1])
    resid, swapped = np.abs(resid), np.abs(swapped)
    layout_ = k.reference_layout(p.ny, p.nx, substrt1=p.substrt1, substrt2=p.substrt2, subarray=p.subarray)
    per_parity = layout_.size // (2 if p.noutputs == 1 else 2 * p.noutputs)
    noise = p.readnoise / np.sqrt(2) / np.sqrt(max(per_parity, 1))
    assert resid.max() < 5 * noise + 0.1, (resid, noise)
    assert swapped.mean() > 4 * resid.mean() and swapped.mean() > 5.0, (swapped, resid)


def _refpix_applied(preset, overrides):
    """(preset, correction refpix subtracted per group (ngroups, ny, nx), truth offsets)."""
    from daskramp.kernels import refpix as k

    p = _configure(preset, 1, 6, None, None, dict(overrides, one_over_f_amplitude=0.0, cr_rate=0.0,
                                                  refpix_offset_rms=10.0))
    state, _, sub, _ = _build_state(p, 5, 1)
    out, _, _, offsets = _one_integration(state, 0)
    raw = out.view(">i2").astype(np.float32) + np.float32(32768)
    data = (raw - sub["bias"][None])[None]
    fast, slow = AXES[p.detector]
    corrected = k.refpix(data, sub["mask"], substrt1=p.substrt1, substrt2=p.substrt2, fastaxis=fast,
                         slowaxis=slow, noutputs=p.noutputs, subarray=p.subarray)
    return p, (data - corrected)[0], offsets


def test_refpix_side_columns_only_and_none():
    """Layouts whose offsets refpix cannot measure (spec 14 §5).

    * SW SUBGRISM64 stripe with 4 outputs (NRCA3 at SUBSTRT2 = 134): no top/bottom reference
      rows, so the per-amplifier step is skipped and only the side correction runs — one value
      per row, the same in every column and amplifier; the per-amplifier offsets stay in the
      data (they are what the simulator's truth holds, the pipeline does the same).
    * NRCB1 SUB64P (no reference pixel at all): nothing is subtracted.
    """
    p, applied, offsets = _refpix_applied("nircam-imaging-tso", {})
    assert (p.detector, p.subarray, p.noutputs, p.substrt2) == ("NRCA3", "SUBGRISM64", 4, 134)
    assert np.abs(applied).max() > 1.0  # the side correction does act
    np.testing.assert_allclose(applied - applied[:, :, :1], 0.0, atol=1e-2)  # float32 rounding of bright pixels
    geo = _Geometry(p)
    per_chan = [[applied[g][geo.chan == ch].mean() - offsets[g, ch] for ch in range(8)] for g in range(6)]
    assert np.ptp(np.asarray(per_chan), axis=1).max() > 5.0  # per-channel offsets not removed
    p, applied, _ = _refpix_applied("nircam-imaging-tso", {"detector": "NRCB1", "subarray": "SUB64P"})
    assert (p.substrt1, p.substrt2) == (1851, 1817)
    assert not applied.any()


# ------------------------------------------------------------------------------ jwst datamodels


def _offline_env(monkeypatch, tmp_path):
    """CRDS kept offline (spec 10) for this test only."""
    import os

    from daskramp.testing.official import configure_offline

    keys = ("CRDS_PATH", "CRDS_SERVER_URL", "CRDS_MODE", "CRDS_CONTEXT", "STPIPE_DISABLE_CRDS_STEPPARS")
    before = {k: os.environ.get(k) for k in keys}
    configure_offline(tmp_path / "crds")
    after = {k: os.environ[k] for k in keys}
    for k, v in before.items():  # undo, then set again through monkeypatch (restored afterwards)
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for k, v in after.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parity
def test_jwst_datamodels_open_uncal_and_references(sims, monkeypatch, tmp_path):
    _offline_env(monkeypatch, tmp_path)
    pytest.importorskip("jwst")
    from jwst import datamodels
    from stdatamodels.jwst.datamodels import (
        DarkModel,
        DarkNirspecModel,
        FlatModel,
        GainModel,
        Level1bModel,
        LinearityModel,
        MaskModel,
        ReadnoiseModel,
        SaturationModel,
        SuperBiasModel,
    )

    classes = {"mask": MaskModel, "saturation": SaturationModel, "superbias": SuperBiasModel,
               "linearity": LinearityModel, "gain": GainModel, "readnoise": ReadnoiseModel, "flat": FlatModel}
    for name, sim in sims.items():
        a = sim.attrs
        with datamodels.open(str(sim.uncal_files[0])) as m:
            assert isinstance(m, Level1bModel)
            m.validate()
            assert m.data.shape == (3, 5, a["SUBSIZE2"], a["SUBSIZE1"])
            assert m.meta.exposure.type == a["EXP_TYPE"] and m.meta.exposure.readpatt == a["READPATT"]
            assert (m.meta.subarray.name, m.meta.subarray.xstart, m.meta.subarray.ystart) == (
                a["SUBARRAY"], a["SUBSTRT1"], a["SUBSTRT2"])
            assert (m.meta.subarray.fastaxis, m.meta.subarray.slowaxis) == (a["FASTAXIS"], a["SLOWAXIS"])
            assert (m.meta.exposure.noutputs, m.meta.exposure.nframes, m.meta.exposure.groupgap) == (
                a["NOUTPUTS"], a["NFRAMES"], a["GROUPGAP"])
            assert len(m.group) == 15 and len(m.int_times) == 3
            assert m.meta.visit.tsovisit is True
            if a["INSTRUME"] == "NIRSPEC":
                assert m.meta.instrument.grating == "G395H"
            else:
                assert (m.meta.instrument.pupil, m.meta.instrument.channel) == ("GRISMR", "LONG")
        dark_cls = DarkNirspecModel if a["INSTRUME"] == "NIRSPEC" else DarkModel
        for rt, path in sim.refs.items():
            cls = dark_cls if rt == "dark" else classes[rt]
            with datamodels.open(str(path)) as r:  # DATAMODL names the class
                assert type(r) is cls, (name, rt, type(r))
                r.validate()


# ------------------------------------------------------------------------------ parity


def _read_fits(path) -> dict:
    with fits.open(path) as h:
        return {v: np.asarray(h[e].data) for v, e in (("data", "SCI"), ("err", "ERR"),
                                                      ("var_poisson", "VAR_POISSON"),
                                                      ("var_rnoise", "VAR_RNOISE"), ("dq", "DQ"))}


def _official(jobs: dict, root: Path) -> dict:
    """Detector1Pipeline (offline, spec 10) on every uncal file of ``jobs`` ({case: sim}), in one
    interpreter; ``{case: [report per segment]}``."""
    argv = [[str(u), "--refs", str(s.refs_dir), "--out", str(root / f"official-{name}-{k}")]
            for name, s in jobs.items() for k, u in enumerate(s.uncal_files)]
    code = ("import sys, json\nfrom daskramp.testing.official import main\n"
            "for a in json.loads(sys.argv[1]):\n    main(a)\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = iter(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
    return {name: [next(reports) for _ in s.uncal_files] for name, s in jobs.items()}


def _daskramp(sim, out: Path, client, tiles: dict) -> tuple:
    """daskramp.run.run with the mode's workflow recipe and the given tiles; (rate, rateints,
    summary)."""
    import xarray as xr

    from daskramp.config import layered
    from daskramp.run import run

    cfg = layered(workflow=WORKFLOW[sim.attrs["EXP_TYPE"]], environ={})
    cfg.update(tiles)
    summary = run(sim.uncal_files, out, refs=sim.refs_dir, config=cfg, client=client, quiet=True, fits=False,
                  workflow=WORKFLOW[sim.attrs["EXP_TYPE"]])
    with xr.open_zarr(summary["outputs"]["rate_zarr"], consolidated=False) as r, \
            xr.open_zarr(summary["outputs"]["rateints_zarr"], consolidated=False) as ri:
        return r.load(), ri.load(), summary


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def _runs(jobs: dict, tiles: dict, root: Path, client) -> dict:
    reports = _official(jobs, root)
    out = {}
    for name, sim in jobs.items():
        rate, rateints, summary = _daskramp(sim, root / f"ours-{name}", client, tiles[name])
        parts = [_read_fits(r["rateints"]) for r in reports[name]]
        o_rateints = {v: np.concatenate([p[v] for p in parts]) for v in parts[0]}
        o_rate = _read_fits(reports[name][0]["rate"]) if len(reports[name]) == 1 else None
        out[name] = {"sim": sim, "rate": rate, "rateints": rateints, "o_rate": o_rate,
                     "o_rateints": o_rateints, "summary": summary}
    return out


@pytest.fixture(scope="module", params=list(CASES))
def parity_run(request, sims, client, tmp_path_factory):
    """One case through both pipelines (one official process per case, so that no test setup
    takes more than ~30 s); ``{"sim", "rate", "rateints", "o_rate", "o_rateints", "summary"}``."""
    pytest.importorskip("jwst")
    case = request.param
    root = tmp_path_factory.mktemp(f"parity-{case}")
    run = _runs({case: sims[case]}, {case: CASES[case][3]}, root, client)[case]
    run["case"] = case
    return run


FLOATS = ("data", "err", "var_poisson", "var_rnoise")


def _assert_parity(run: dict) -> dict:
    """The products against the official ones; returns the figures.

    DQ identical everywhere.  With one output every float is bit-identical.  With 4 outputs
    jwst's refpix rounds the first frame of each file to float32 (module docstring): the slopes
    (data) and var_rnoise stay bit-identical except in the first integration of each segment,
    and var_poisson/err, whose Poisson term uses a rate pooled over the segment's
    integrations, may differ by float32 rounding in every integration; all agree to 1e-4
    relative (or 2e-3 DN/s, (DN/s)² absolute).
    """
    sim = run["sim"]
    nseg, nint = len(sim.uncal_files), sim.preset.nints
    ours, theirs = run["rateints"], run["o_rateints"]
    np.testing.assert_array_equal(ours["dq"].values, theirs["dq"])
    four = sim.attrs["NOUTPUTS"] == 4
    first = np.zeros(nseg * nint, bool)
    first[::nint] = four
    figures = {}
    for v in FLOATS:
        a, b = ours[v].values, theirs[v]
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        exact = ~first if v in ("data", "var_rnoise") else np.ones_like(first) & (not four)
        assert same[exact].all(), (v, int((~same[exact]).sum()))
        r = compare_arrays(a, b, rtol=1e-4, atol=2e-3)
        assert r["nan_pattern_identical"] and r["fraction_close"] == 1.0, (v, r)
        figures[v] = {"not_bit_identical": int((~same).sum()), "of": int(a.size),
                      "in_first_integrations": int((~same[first]).sum()),
                      "max_abs_diff": r["max_abs_diff"],
                      "max_rel_diff": float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30),
                                                      initial=0.0))}
    if run["o_rate"] is not None:
        rate, o_rate = run["rate"], run["o_rate"]
        np.testing.assert_array_equal(rate["dq"].values, o_rate["dq"])
        for v in FLOATS:
            if four:
                np.testing.assert_allclose(rate[v].values, o_rate[v], rtol=1e-4, atol=2e-3)
            else:
                np.testing.assert_array_equal(rate[v].values, o_rate[v])
    return figures


@pytest.mark.parity
def test_parity_with_official_pipeline(parity_run):
    r, case = parity_run, parity_run["case"]
    figures = _assert_parity(r)
    print(case, json.dumps(figures))
    # the scene exercises what can differ: saturation and cosmic rays, in every case
    assert (r["o_rateints"]["dq"] & dq.SATURATED).any()
    assert (r["o_rateints"]["dq"] & dq.JUMP_DET).any()
    assert r["summary"]["steps"]["refpix"] == "COMPLETE" and r["summary"]["steps"]["dark_current"] == "COMPLETE"
    # the tiles asked for were used
    for key, value in CASES[case][3].items():
        assert r["summary"][key] == value, key


@pytest.mark.parity
def test_rates_match_truth_within_errors(parity_run):
    _assert_truth(parity_run, bright=True)


def _assert_truth(r: dict, *, bright: bool = False, by_channel: bool = False, min_good: float = 0.85) -> None:
    """rateints − truth, in units of ERR.  The 1/f noise common to a whole output between the
    read times of its reference pixels and of the science pixels is not in ERR: it shifts every
    pixel of an integration alike (measured ≈ 0.3 × the median ERR rms with 1 output and the
    presets' 1/f amplitude, 0 without 1/f), so that per-integration offset is bounded and
    removed before the pulls are taken."""
    truth = load_truth(r["sim"].truth_path)["rate"].values
    ri = r["rateints"]
    rate, err, flags = ri["data"].values, ri["err"].values, ri["dq"].values
    good = np.isfinite(rate) & (flags == 0) & (err > 0)
    assert good.mean() > min_good
    resid = rate - truth
    if by_channel:
        # layouts whose per-amplifier offsets refpix cannot measure (side columns only, or no
        # reference pixels, spec 14 §5): those offsets stay in the slopes, one per integration,
        # amplifier and parity; they are removed like the common 1/f offset
        chan = _Geometry(r["sim"].preset).chan
        common_map = np.zeros_like(resid)
        for i in range(rate.shape[0]):
            for ch in np.unique(chan):
                sel = (chan == ch) & good[i]
                if sel.any():
                    common_map[i][chan == ch] = np.median(resid[i][sel])
        pulls = (resid - common_map) / err
    else:
        common = np.array([np.median(resid[i][good[i]]) for i in range(rate.shape[0])])
        assert np.abs(common).max() < 1.5 * np.median(err[good]), (common, np.median(err[good]))
        pulls = (resid - common[:, None, None]) / err
    pull = pulls[good]
    assert abs(np.median(pull)) < 0.1 and 0.9 < pull.std() < 1.2, (np.median(pull), pull.std())
    if bright:
        # the bright trace too (non-linearity, frame averaging, dark): within the errors
        hi = good & (truth > 0.2 * r["sim"].preset.peak_rate)
        assert hi.sum() > 100
        bp = pulls[hi]
        assert abs(np.median(bp)) < 0.3 and bp.std() < 1.5, (np.median(bp), bp.std())


#: extra layouts: case → (preset, seed, simulate() arguments, daskramp tiles)
SLOW_CASES = {
    "bots-nrs2": ("nirspec-bots", 21, dict(nints=2, ngroups=5, detector="NRS2", peak_rate=10500.0),
                  {"tile_columns": 256, "tile_rows": 4}),
    "bots-nrs1-sub1024b": ("nirspec-bots", 22, dict(nints=2, ngroups=5, subarray="SUB1024B", peak_rate=10500.0),
                           {"tile_columns": 128}),
    "bots-nrs2-sub1024a": ("nirspec-bots", 23, dict(nints=2, ngroups=5, subarray="SUB1024A", detector="NRS2",
                                                    peak_rate=10500.0), {"tile_columns": 128}),
    "bots-sub512-prism": ("nirspec-bots", 24, dict(nints=2, ngroups=5, subarray="SUB512", grating="PRISM",
                                                   peak_rate=10500.0), {"tile_columns": 64}),
    "bots-nrs2-sub512s": ("nirspec-bots", 25, dict(nints=2, ngroups=5, subarray="SUB512S", detector="NRS2",
                                                   peak_rate=10500.0), {"tile_columns": 64}),
    "bots-rapidd2": ("nirspec-bots", 26, dict(nints=2, ngroups=5, readpatt="NRSRAPIDD2", peak_rate=4000.0),
                     {"tile_columns": 256}),
    "grism-nrcblong-4out": ("nircam-grism-tso", 27, dict(nints=2, ngroups=5, detector="NRCBLONG",
                                                         readpatt="RAPID", peak_rate=25000.0),
                            {"tile_columns": 128, "tile_rows": 32}),
    "grism128-4out-bright1": ("nircam-grism-tso", 28, dict(nints=2, ngroups=5, subarray="SUBGRISM128",
                                                           readpatt="BRIGHT1", peak_rate=8000.0),
                              {"tile_columns": 1024}),
    "grism-1out-shallow2": ("nircam-grism-tso", 29, dict(nints=2, ngroups=4, noutputs=1, readpatt="SHALLOW2",
                                                         peak_rate=1500.0), {"tile_columns": 2048, "tile_rows": 16}),
}


@pytest.fixture(scope="module")
def slow_runs(client, tmp_path_factory):
    pytest.importorskip("jwst")
    root = tmp_path_factory.mktemp("slow")
    jobs = {name: simulate(root / name, preset=preset, seed=seed, **kw)
            for name, (preset, seed, kw, _) in SLOW_CASES.items()}
    return _runs(jobs, {name: c[3] for name, c in SLOW_CASES.items()}, root, client)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_parity_more_layouts(slow_runs, case):
    figures = _assert_parity(slow_runs[case])
    print(case, json.dumps(figures))
    _assert_truth(slow_runs[case])



# ------------------------------------------------------------------------------ SOSS subarrays, imaging TSO


#: case → (preset, seed, simulate() arguments, daskramp tiles, refpix offsets measurable).
#: SUBSTRIP96 at its real 2048 × 96 size (reference pixels: the detector top/bottom rows, DMS
#: columns 1–4 and 2045–2048); the SW stripe of the grism TSO with 4 outputs (side columns only:
#: the per-amplifier step is skipped, spec 14 §5) with 1024-column tiles holding the amplifier
#: boundaries; NRCA3 SUB64P (1 output, 4 side columns) at RAPID, whose 0.05-s frames need a
#: bright star to saturate
MODE_CASES = {
    "tsimage-sub64p": ("nircam-imaging-tso", 33, dict(nints=3, ngroups=5, subarray="SUB64P", readpatt="RAPID",
                                                      peak_rate=200000.0), {"tile_rows": 16}, True),
    "soss96": ("niriss-soss", 31, dict(nints=3, ngroups=5, segments=2, subarray="SUBSTRIP96", peak_rate=4500.0),
               {"tile_columns": 256, "tile_rows": 32}, True),
    "tsimage-grism64-4out": ("nircam-imaging-tso", 32, dict(nints=3, ngroups=5, segments=2, peak_rate=15000.0),
                             {"tile_columns": 1024, "tile_rows": 16}, False),
}

#: bigger or rarer layouts (``slow``): SOSS FULL (4 outputs, full frame), NRCB1 SUB400P in the
#: detector corner, NRCB1 SUB160P without reference pixels, the NRCA1 SUBGRISM128 stripe through
#: one output (one mean of the side columns)
SLOW_MODE_CASES = {
    "soss-full": ("niriss-soss", 41, dict(nints=2, ngroups=3, subarray="FULL", peak_rate=2500.0),
                  {"tile_columns": 512, "tile_rows": 512}, True),
    "tsimage-nrcb1-sub400p": ("nircam-imaging-tso", 42, dict(nints=2, ngroups=5, detector="NRCB1", subarray="SUB400P",
                                                             readpatt="RAPID", peak_rate=30000.0),
                              {"tile_columns": 128}, True),
    "tsimage-nrcb1-sub160p": ("nircam-imaging-tso", 43, dict(nints=2, ngroups=5, detector="NRCB1", subarray="SUB160P",
                                                             readpatt="RAPID", peak_rate=60000.0),
                              {"tile_columns": 64}, False),
    "tsimage-nrca1-grism128-1out": ("nircam-imaging-tso", 44, dict(nints=2, ngroups=4, detector="NRCA1",
                                                                   subarray="SUBGRISM128", noutputs=1,
                                                                   readpatt="RAPID", peak_rate=15000.0),
                                    {"tile_columns": 512, "tile_rows": 32}, True),
}


def test_cli_simulate_new_modes(tmp_path, capsys):
    """``daskramp simulate --preset nircam-imaging-tso --subarray SUB64P`` and SOSS --subarray."""
    from daskramp.cli import main

    out = tmp_path / "img"
    assert main(["simulate", str(out), "--preset", "nircam-imaging-tso", "--detector", "NRCB1", "--subarray", "SUB64P",
                 "--readpatt", "RAPID", "--nints", "2", "--ngroups", "3"]) == 0
    (f,) = sorted(out.glob("*_uncal.fits"))
    h = fits.getheader(f)
    assert (f.name, h["EXP_TYPE"], h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"], h["NOUTPUTS"], h["TFRAME"]) == (
        "jw01366002001_04103_00001-seg001_nrcb1_uncal.fits", "NRC_TSIMAGE", "SUB64P", 1851, 1817, 1, 0.05016)
    out = tmp_path / "soss"
    assert main(["simulate", str(out), "--preset", "niriss-soss", "--subarray", "SUBSTRIP96", "--nints", "1",
                 "--ngroups", "2"]) == 0
    h = fits.getheader(next(out.glob("*_uncal.fits")))
    assert (h["SUBARRAY"], h["SUBSTRT2"], h["SUBSIZE2"], h["TFRAME"]) == ("SUBSTRIP96", 1803, 96, 2.214)
    capsys.readouterr()


@pytest.fixture(scope="module")
def mode_sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes2")
    return {name: simulate(root / name, preset=preset, seed=seed, **kw)
            for name, (preset, seed, kw, _, _) in MODE_CASES.items()}


def test_soss_and_imaging_files_and_references(mode_sims):
    """Keywords, tables and reference selection (every reftype required) of the new layouts."""
    soss, img4, p64 = mode_sims["soss96"], mode_sims["tsimage-grism64-4out"], mode_sims["tsimage-sub64p"]
    a = soss.attrs
    assert (a["EXP_TYPE"], a["SUBARRAY"], a["SUBSTRT1"], a["SUBSTRT2"], a["SUBSIZE1"], a["SUBSIZE2"], a["NOUTPUTS"],
            a["TFRAME"], a["PUPIL"]) == ("NIS_SOSS", "SUBSTRIP96", 1, 1803, 2048, 96, 1, 2.214, "GR700XD")
    g = img4.attrs
    assert (g["EXP_TYPE"], g["DETECTOR"], g["CHANNEL"], g["MODULE"], g["FILTER"], g["PUPIL"], g["SUBARRAY"],
            g["SUBSTRT2"], g["NOUTPUTS"], g["READPATT"], g["TSOVISIT"]) == (
        "NRC_TSIMAGE", "NRCA3", "SHORT", "A", "F210M", "WLP8", "SUBGRISM64", 134, 4, "BRIGHT2", True)
    assert img4.uncal_files[0].name == "jw01366002001_04103_00001-seg001_nrca3_uncal.fits"
    with fits.open(img4.uncal_files[1]) as h:
        assert [x.name for x in h] == ["PRIMARY", "SCI", "GROUP", "INT_TIMES", "ASDF"]
        assert len(h["GROUP"].data) == 15 and (h["GROUP"].data["number_of_rows"] == 64).all()
    q = p64.attrs
    assert (q["SUBARRAY"], q["SUBSTRT1"], q["SUBSTRT2"], q["SUBSIZE1"], q["SUBSIZE2"], q["NOUTPUTS"], q["TFRAME"]) == (
        "SUB64P", 1, 101, 64, 64, 1, 0.05016)
    for name, sim in mode_sims.items():
        rs = RefSet.from_dir(sim.refs_dir, sim.attrs, required=REFTYPES)
        # every one that applies to the instrument (no FLAT for NIRSpec spectroscopy)
        assert all(rs.get(rt) is not None for rt in REFTYPES if not_applicable(rt, sim.attrs) is None), name
        assert (rs.get("flat") is None) == (sim.attrs["INSTRUME"] == "NIRSPEC"), name
        dark = rs.get("dark")
        assert dark.arrays["SCI"].shape[-2:] == (sim.attrs["SUBSIZE2"], sim.attrs["SUBSIZE1"])
        assert (dark.header["EXP_TYPE"], dark.header["SUBARRAY"], dark.header["NOUTPUTS"]) == (
            sim.attrs["EXP_TYPE"], sim.attrs["SUBARRAY"], sim.attrs["NOUTPUTS"])
        # the full-frame references are cut to the subarray at its place on the detector
        mask = rs.get("mask").arrays["DQ"]
        t = load_truth(sim.truth_path)
        np.testing.assert_array_equal(mask, t["pixeldq"].values)
    # reference pixels where spec 14 §4 puts them
    ref = (load_truth(soss.truth_path)["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    assert ref[:, :4].all() and ref[:, -4:].all() and ref.sum() == 768
    ref = (load_truth(img4.truth_path)["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    assert ref[:, :4].all() and ref[:, -4:].all() and ref.sum() == 8 * 64
    ref = (load_truth(p64.truth_path)["pixeldq"].values & dq.REFERENCE_PIXEL) != 0
    assert ref[:, :4].all() and ref.sum() == 4 * 64


def test_defocused_psf_scene(mode_sims):
    """The weak-lens image: an annulus (dark centre) of outer radius 20 px at the subarray centre,
    transiting; the SUB64P one fits in its 64 × 64 pixels away from the reference columns."""
    for name in ("tsimage-grism64-4out", "tsimage-sub64p"):
        sim = mode_sims[name]
        t = load_truth(sim.truth_path)
        src = t["source_rate"].values
        a = t.attrs
        cx, cy = a["psf_x"] - (sim.attrs["SUBSTRT1"] - 1), a["psf_y"] - (sim.attrs["SUBSTRT2"] - 1)
        assert a["psf_radius"] == 20.0 and a["transit_depth"] == 0.015
        yy, xx = np.indices(src.shape)
        r = np.hypot(xx - cx, yy - cy)
        bg = sim.preset.background
        assert np.median(src[r < 4]) < bg + 0.02 * sim.preset.peak_rate  # the central hole
        ring = (r > 10) & (r < 18)
        assert np.median(src[ring]) > 0.5 * sim.preset.peak_rate
        assert np.allclose(src[(r > 24) & (src > 0)], bg, atol=0.01 * sim.preset.peak_rate)
        assert src.max() <= sim.preset.peak_rate + bg + 1
    # saturation and cosmic rays are exercised
    assert mode_sims["tsimage-grism64-4out"].n_saturated > 0 and mode_sims["tsimage-sub64p"].n_saturated > 0


#: cases whose behaviour another default case holds too (the NIRCam 4-output reference
#: pixels: tests/test_nircam.py's full frame, grism4 here)
SLOW_PARITY_CASES = ("tsimage-grism64-4out",)


@pytest.fixture(scope="module", params=[pytest.param(c, marks=pytest.mark.slow) if c in SLOW_PARITY_CASES
                                        else c for c in MODE_CASES])
def mode_parity_run(request, mode_sims, client, tmp_path_factory):
    pytest.importorskip("jwst")
    case = request.param
    root = tmp_path_factory.mktemp(f"parity-{case}")
    run = _runs({case: mode_sims[case]}, {case: MODE_CASES[case][3]}, root, client)[case]
    run["case"] = case
    return run


@pytest.mark.parity
def test_parity_soss_subarrays_and_imaging(mode_parity_run):
    r, case = mode_parity_run, mode_parity_run["case"]
    figures = _assert_parity(r)
    print(case, json.dumps(figures))
    assert (r["o_rateints"]["dq"] & dq.SATURATED).any()
    assert r["summary"]["steps"]["refpix"] == "COMPLETE"
    for key, value in MODE_CASES[case][3].items():
        assert r["summary"][key] == value, key
    # the bright SUB64P star flags ~11 % of its pixels SATURATED (grown by one pixel)
    _assert_truth(r, by_channel=not MODE_CASES[case][4], min_good=0.75)


@pytest.fixture(scope="module")
def slow_mode_runs(client, tmp_path_factory):
    pytest.importorskip("jwst")
    root = tmp_path_factory.mktemp("slow-modes")
    jobs = {name: simulate(root / name, preset=preset, seed=seed, **kw)
            for name, (preset, seed, kw, _, _) in SLOW_MODE_CASES.items()}
    return _runs(jobs, {name: c[3] for name, c in SLOW_MODE_CASES.items()}, root, client)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("case", list(SLOW_MODE_CASES))
def test_parity_more_soss_and_imaging_layouts(slow_mode_runs, case):
    figures = _assert_parity(slow_mode_runs[case])
    print(case, json.dumps(figures))
    _assert_truth(slow_mode_runs[case], by_channel=not SLOW_MODE_CASES[case][4], min_good=0.75)


# ------------------------------------------------------------------------------ TSO science per mode


#: small exposures with the presets' transit (1.5 %, 40 % of the exposure): the NIRSpec BOTS
#: trace (σ 0.9 px in 32 rows, across every column) and the NIRCam grism trace (σ 1.2 px in 64
#: rows, detector columns 600–2000, 4 outputs).  1/f noise is off here: with it the white light
#: needs a group-level 1/f correction (measured ratio of scatter to err 2–4 without one; the
#: SOSS case is tests/test_tso_science.py); what is tested is the geometry of tracing,
#: extraction and the light curve.
SCIENCE = {
    "bots": ("nirspec-bots", 51, dict(nints=30, ngroups=10, one_over_f_amplitude=0.0)),
    "grism": ("nircam-grism-tso", 52, dict(nints=30, ngroups=6, one_over_f_amplitude=0.0)),
}


@pytest.fixture(scope="module", params=[pytest.param("bots", marks=pytest.mark.slow), "grism"])
def science(request, tmp_path_factory):
    import dask

    from daskramp.io import open_exposure
    from daskramp.pipeline import detector1

    case = request.param
    preset, seed, kw = SCIENCE[case]
    root = tmp_path_factory.mktemp(f"science-{case}")
    sim = simulate(root / "sim", preset=preset, seed=seed, **kw)
    res = detector1(open_exposure(sim.uncal_files), sim.refs_dir)
    with dask.config.set(scheduler="threads", num_workers=2):
        ri = res.rateints.compute()
    products = root / "products"
    products.mkdir()
    ri.to_zarr(products / "sim_rateints.zarr", mode="w", consolidated=False)
    return {"case": case, "sim": sim, "truth": load_truth(sim.truth_path), "ri": ri, "products": products}


def test_trace_extraction_white_light_per_mode(science):
    """daskramp.analysis on BOTS and grism products: the order finder picks the illuminated
    columns and the narrow-trace settings, the trace follows the injected one to < 0.05 px,
    and the white light (aperture 2.5 × FWHM, per-column background from a band beyond it)
    recovers the transit depth within 3σ (σ from err, scaled up by the measured scatter)."""
    from daskramp import analysis as A
    from daskramp.report import default_radius

    ri, truth, case = science["ri"], science["truth"], science["case"]
    med = ri["data"].median("integration").drop_vars(["y", "x"])
    orders = A.find_orders(med.values, ri["x"].values)
    assert set(orders) == {1}
    o = orders[1]
    assert o["gauss_filter_width"] == 1.0 and 4.0 <= o["profile_radius"] <= 8.0
    if case == "grism":  # the spectrum covers detector columns ~600–2000 only
        assert 590 <= o["x_end"] <= 660 and 1940 <= o["x_start"] <= 2010
    else:  # every column but the reference columns
        assert (o["x_start"], o["x_end"]) == (2042, 5)
    traces = A.trace_orders(med, orders).compute()
    y0 = int(ri["y"].values[0])
    trace = traces["trace"].sel(order=1, drop=True)
    resid = trace.values + y0 - truth["trace_y"].values
    cols = np.isfinite(resid)
    assert cols.sum() > (1300 if case == "grism" else 2000)
    assert np.median(np.abs(resid[cols])) < 0.05 and np.abs(resid[cols]).max() < 0.3, np.abs(resid[cols]).max()
    # per-integration traces: the injected trace does not move
    per_int = A.trace_orders(ri["data"].isel(integration=slice(0, 8)), orders)["trace"].sel(order=1)
    assert float(np.nanstd(A.trace_position(per_int).values)) < 0.02

    radius = default_radius(med.values, orders)
    assert 5.0 <= radius <= 8.0  # 2.5 × FWHM of a σ 0.9–1.2 px profile
    spec = A.extract_aperture(ri, trace, radius=radius, background_radius=radius + 8.0)
    spec = spec.isel(x=np.flatnonzero(np.isfinite(spec["flux"].values).all(axis=0)))
    rf = truth["relative_flux"].values
    oot, full = rf == 1.0, rf == rf.min()
    wl = A.white_light(spec, out_of_transit=oot, filter_size=1)
    f, e = wl["flux"].values, wl["flux_err"].values
    ratio = float(np.std(f[oot], ddof=1) / np.median(e[oot]))
    keep = np.flatnonzero(oot | full)
    d = A.depth_in_out(wl["flux"].isel(integration=keep), wl["flux_err"].isel(integration=keep), full[keep])
    depth, err = float(d["depth"]), float(d["depth_err"]) * max(1.0, ratio)
    print(f"\n{case}: trace |resid| median {np.median(np.abs(resid[cols])):.4f} px; white light scatter/err "
          f"{ratio:.2f}; depth {depth * 1e6:.0f} ± {err * 1e6:.0f} ppm (injected 15000)")
    # grism, 4 outputs: the side-reference correction is one smoothed value per row (11-row running
    # median of 8 side pixels, ≈ 0.85 DN per group), common to every column of a row; the trace
    # runs along rows, so it adds coherently over the ~1400 columns of the aperture — expected
    # ratio ≈ 2 (measured 1.95), a property of the instrument's refpix, not of the analysis
    assert ratio < (2.5 if case == "grism" else 1.6)
    assert abs(depth - truth.attrs["transit_depth"]) <= 3 * err
    # the trapezoid fit at the true timing, and a free box search finds the mid-transit
    t = (truth["int_mid_MJD_UTC"].values - truth["int_mid_MJD_UTC"].values[0]) * 86400.0
    t0 = (truth.attrs["transit_mid_MJD_UTC"] - truth["int_mid_MJD_UTC"].values[0]) * 86400.0
    fit = A.fit_transit(wl["flux"], wl["flux_err"], times=t, t0=t0, duration=truth.attrs["transit_duration_s"],
                        ingress=truth.attrs["transit_ingress_s"])
    ferr = float(fit["depth_err"]) * max(1.0, float(np.sqrt(fit["chi2"] / (t.size - 2))))
    assert abs(float(fit["depth"]) - 0.015) <= 3 * ferr
    box = A.fit_transit(wl["flux"], wl["flux_err"], times=t)
    assert abs(float(box["t0"]) - t0) <= np.median(np.diff(t))


def test_report_per_mode(science, tmp_path):
    """``daskramp report`` on BOTS and grism rateints: it finds the trace (narrow aperture), finds
    the transit by itself and measures its depth within the reported error (3σ)."""
    pytest.importorskip("matplotlib")
    from daskramp.report import make_report

    html = make_report(science["products"], tmp_path / "report")
    numbers = json.loads((tmp_path / "report" / "numbers.json").read_text())
    text = html.read_text()
    for fig in ("trace_overlay", "spectrum", "white_light", "lc_matrix"):
        assert f"{fig}.png" in text, fig
    dep = numbers["transit depth (trapezoid fit)"]
    print(f"\n{science['case']} report: depth {dep['value']:.0f} ± {dep['error']:.0f} ppm; "
          f"trace movement {numbers['trace movement rms (order 1)']['value']:.4f} px")
    assert abs(dep["value"] - 15000.0) <= 3 * dep["error"]
    assert numbers["trace movement rms (order 1)"]["value"] < 0.05
