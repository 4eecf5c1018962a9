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
from daskramp.io.refs import REFTYPES, ReferenceFileError, RefSet
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
WORKFLOW = {"NIRSPEC": ROOT / "workflows" / "nirspec_bots_tso.yaml",
            "NIRCAM": ROOT / "workflows" / "nircam_grism_tso.yaml"}


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


# ------------------------------------------------------------------------------ files


#: case → (preset, seed, simulate() arguments, daskramp tiles).  daskramp rounds tile_columns
#: down to a power of two dividing the 2048 columns (pipeline.plan_tiles), so a tile holds
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
        assert all(rs.get(rt) is not None for rt in REFTYPES), name
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
        GainModel,
        Level1bModel,
        LinearityModel,
        MaskModel,
        ReadnoiseModel,
        SaturationModel,
        SuperBiasModel,
    )

    classes = {"mask": MaskModel, "saturation": SaturationModel, "superbias": SuperBiasModel,
               "linearity": LinearityModel, "gain": GainModel, "readnoise": ReadnoiseModel}
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

    cfg = layered(workflow=WORKFLOW[sim.attrs["INSTRUME"]], environ={})
    cfg.update(tiles)
    summary = run(sim.uncal_files, out, refs=sim.refs_dir, config=cfg, client=client, quiet=True, fits=False,
                  workflow=WORKFLOW[sim.attrs["INSTRUME"]])
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


def _assert_truth(r: dict, *, bright: bool = False) -> None:
    """rateints − truth, in units of ERR.  The 1/f noise common to a whole output between the
    read times of its reference pixels and of the science pixels is not in ERR: it shifts every
    pixel of an integration alike (measured ≈ 0.3 × the median ERR rms with 1 output and the
    presets' 1/f amplitude, 0 without 1/f), so that per-integration offset is bounded and
    removed before the pulls are taken."""
    truth = load_truth(r["sim"].truth_path)["rate"].values
    ri = r["rateints"]
    rate, err, flags = ri["data"].values, ri["err"].values, ri["dq"].values
    good = np.isfinite(rate) & (flags == 0) & (err > 0)
    assert good.mean() > 0.85
    resid = rate - truth
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
