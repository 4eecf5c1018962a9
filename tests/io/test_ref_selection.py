"""Reference selection by the CRDS rules of spec 11 §1–§2, per reftype and instrument, and
what detector1 does when a reference is missing.

Reference files are written here with astropy, a few pixels wide; the exposures are
dictionaries of FITS keywords, or a tiny simulated ramp for the detector1 cases.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
from astropy.io import fits

from daskramp import dims
from daskramp.io.refs import (
    SELECTION_KEYWORDS,
    ReferenceFileError,
    RefSet,
    match_weight,
    not_applicable,
    select,
)
from daskramp.pipeline import detector1
from daskramp.testing.ramps import forbid_compute, make_ramp

NY, NX = 4, 6
GEOM = {"SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": NX, "SUBSIZE2": NY}

#: a NIRCam BRIGHT1 subarray exposure: NIRCam darks select on DETECTOR, EXP_TYPE, NOUTPUTS,
#: SUBARRAY, not READPATT
NRC = {
    "INSTRUME": "NIRCAM",
    "DETECTOR": "NRCALONG",
    "EXP_TYPE": "NRC_TSGRISM",
    "READPATT": "BRIGHT1",
    "NOUTPUTS": 4,
    "SUBARRAY": "SUBGRISM64",
    **GEOM,
    "NGROUPS": 3,
    "NFRAMES": 1,
    "GROUPGAP": 0,
    "DATE-OBS": "2023-06-01",
    "TIME-OBS": "12:00:00.000",
}
NIS = {**NRC, "INSTRUME": "NIRISS", "DETECTOR": "NIS", "EXP_TYPE": "NIS_SOSS",
       "READPATT": "NISRAPID", "NOUTPUTS": 1, "SUBARRAY": "SUBSTRIP96"}


def arrays(reftype, ny=NY, nx=NX):
    img = np.ones((ny, nx), np.float32)
    dq = np.zeros((ny, nx), np.uint32)
    return {
        "mask": {"DQ": dq},
        "saturation": {"SCI": img * 60000, "DQ": dq},
        "superbias": {"SCI": img * 0, "DQ": dq},
        "linearity": {"COEFFS": np.stack([img * 0, img]), "DQ": dq},
        "dark": {"SCI": np.stack([img * k for k in range(5)]), "DQ": dq},
        "gain": {"SCI": img * 2},
        "readnoise": {"SCI": img * 10},
        "flat": {"SCI": img * 1.02},
    }[reftype]


def write_ref(path, reftype, sci=NRC, **keywords):
    """A reference for the instrument/detector/subarray of ``sci``; ``None`` leaves a keyword out."""
    hdr = {"REFTYPE": reftype.upper(), "USEAFTER": "2022-01-01T00:00:00", "TELESCOP": "JWST",
           "INSTRUME": sci["INSTRUME"], "DETECTOR": sci["DETECTOR"], "SUBARRAY": "GENERIC",
           **GEOM, "FASTAXIS": -2, "SLOWAXIS": -1}
    if reftype == "dark":
        hdr.update(SUBARRAY=sci["SUBARRAY"], NFRAMES=1, GROUPGAP=0)
    hdr.update(keywords)
    primary = fits.PrimaryHDU()
    for k, v in hdr.items():
        if v is not None:
            primary.header[k] = v
    hdus = [primary] + [fits.ImageHDU(a, name=n) for n, a in arrays(reftype).items()]
    fits.HDUList(hdus).writeto(path)
    return path


def nrc_dark(path, **kw):
    return write_ref(path, "dark", EXP_TYPE="NRC_TSGRISM", NOUTPUTS=4, **kw)


# ---------------------------------------------------------------------------- the table


def test_selection_keywords_follow_spec_11():
    assert SELECTION_KEYWORDS["NIRCAM"]["dark"] == ("DETECTOR", "EXP_TYPE", "NOUTPUTS", "SUBARRAY")
    assert "READPATT" not in SELECTION_KEYWORDS["NIRCAM"]["dark"]
    assert SELECTION_KEYWORDS["NIRISS"]["dark"] == ("DETECTOR", "READPATT", "SUBARRAY")
    assert SELECTION_KEYWORDS["FGS"]["mask"] == ("DETECTOR", "SUBARRAY", "EXP_TYPE")
    assert set(SELECTION_KEYWORDS["MIRI"]["linearity"]) >= {"BAND", "FILTER"}
    for rt in ("superbias", "dark"):
        assert set(SELECTION_KEYWORDS["NIRSPEC"][rt]) >= {"SUBSTRT1", "SUBSTRT2", "SUBSIZE1", "SUBSIZE2"}


def test_not_applicable_miri_superbias(tmp_path):
    miri = {**NIS, "INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE", "READPATT": "FASTR1"}
    assert not_applicable("superbias", miri) == "SUPERBIAS does not apply to MIRI"
    assert not_applicable("dark", miri) is None
    assert not_applicable("superbias", NRC) is None
    # required by default, yet never searched: "N/A" with the reason
    write_ref(tmp_path / "sb.fits", "superbias", sci=miri)
    refs = RefSet.from_dir(tmp_path, miri, required=("superbias",))
    assert refs.get("superbias") is None
    assert refs.reason("superbias") == "SUPERBIAS does not apply to MIRI"
    assert refs.provenance()["superbias"]["reason"] == "SUPERBIAS does not apply to MIRI"


# ---------------------------------------------------------------------------- matching rules


@pytest.mark.parametrize(
    "cell, value, weight",
    [
        (4, "4", 1),  # numbers compared as floats
        ("4.0", 4, 1),
        ("4", 4.0, 1),
        ("1", 4, None),
        ("nis|NISRAPID|", "NISRAPID", 1),  # or-list with a trailing bar, any case
        ("NIS|", "NISRAPID", None),
        ("ANY", "X", 1),
        ("N/A", "X", 0),
        ("GENERIC", "X", 0),
        (None, "X", 0),  # the header does not carry it: no restriction
        ("NIS", None, None),  # the exposure lacks it: UNDEFINED matches only wildcards
        ("ANY", None, 1),
        (True, "T", 1),
        ("FULL", "SUB80", None),
    ],
)
def test_match_weight(cell, value, weight):
    assert match_weight(cell, value) == weight


def test_full_frame_serves_subarrays_but_weighs_nothing():
    assert match_weight("FULL", "SUB80", full_frame=True) == 0
    assert match_weight("FULL", "FULL", full_frame=True) == 1


def test_nircam_bright1_exposure_takes_a_rapid_dark(tmp_path):
    """READPATT is no NIRCam DARK selector: a RAPID dark serves a BRIGHT1 exposure."""
    nrc_dark(tmp_path / "rapid.fits", READPATT="RAPID")
    assert select("dark", tmp_path, NRC).name == "rapid.fits"
    refs = RefSet.from_dir(tmp_path, NRC, required=("dark",))
    assert refs.get("dark").name == "rapid.fits" and refs.rejections()["dark"] == []


def test_nircam_dark_noutputs_and_exp_type_select(tmp_path):
    write_ref(tmp_path / "one_amp.fits", "dark", EXP_TYPE="NRC_TSGRISM", NOUTPUTS=1)
    write_ref(tmp_path / "image.fits", "dark", EXP_TYPE="NRC_IMAGE", NOUTPUTS=4)
    write_ref(tmp_path / "p_list.fits", "dark", EXP_TYPE="NRC_IMAGE",
              P_EXP_TY="NRC_IMAGE|NRC_TSGRISM|", NOUTPUTS="4.0")
    refs = RefSet.from_dir(tmp_path, NRC, required=("dark",))
    assert refs.get("dark").name == "p_list.fits"  # P_EXP_TY wins over EXP_TYPE; '4.0' ≡ 4
    assert sorted(refs.rejections()["dark"]) == [
        "image.fits (EXP_TYPE='NRC_IMAGE', exposure 'NRC_TSGRISM')",
        "one_amp.fits (NOUTPUTS=1, exposure 4)",
    ]


def test_niriss_dark_readpatt_and_pattern_keyword(tmp_path):
    write_ref(tmp_path / "nis.fits", "dark", sci=NIS, READPATT="NIS")
    with pytest.raises(ReferenceFileError, match=r"nis\.fits \(READPATT='NIS', exposure 'NISRAPID'\)"):
        RefSet.from_dir(tmp_path, NIS, required=("dark",))
    write_ref(tmp_path / "both.fits", "dark", sci=NIS, READPATT="NIS", P_READPA="NIS|NISRAPID|")
    assert select("dark", tmp_path, NIS).name == "both.fits"


def test_flat_selection_and_when_it_is_needed(tmp_path):
    """FLAT (clean_flicker_noise's apply_flat_field) as the CRDS flat rmaps select it (crds'
    specs: NIRISS DETECTOR and FILTER, NIRCam also PUPIL, MIRI also BAND, READPATT, SUBARRAY);
    none for NIRSpec (its spectroscopy has FFLAT, SFLAT, DFLAT).  Needed only with the
    option."""
    from daskramp.engine.stages import needed_reftypes, validate_steps

    sci = {**NIS, "FILTER": "CLEAR", "PUPIL": "GR700XD"}
    write_ref(tmp_path / "f090w.fits", "flat", sci=sci, FILTER="F090W", PUPIL="GR700XD")
    with pytest.raises(ReferenceFileError, match=r"FLAT reference: no file .*rejected: f090w.fits "
                                                 r"\(FILTER='F090W', exposure 'CLEAR'\).* "
                                                 r"set --steps.clean_flicker_noise.apply_flat_field=false"):
        RefSet.from_dir(tmp_path, sci, required=("flat",))
    # PUPIL is no NIRISS FLAT selector
    write_ref(tmp_path / "clearp.fits", "flat", sci=sci, FILTER="CLEAR", PUPIL="CLEARP")
    assert RefSet.from_dir(tmp_path, sci, required=("flat",)).get("flat").name == "clearp.fits"
    assert SELECTION_KEYWORDS["NIRISS"]["flat"] == ("DETECTOR", "FILTER")
    assert SELECTION_KEYWORDS["NIRCAM"]["flat"] == ("DETECTOR", "FILTER", "PUPIL")
    assert SELECTION_KEYWORDS["MIRI"]["flat"] == ("DETECTOR", "FILTER", "BAND", "READPATT", "SUBARRAY")
    assert not_applicable("flat", {**NIS, "INSTRUME": "NIRSPEC"}) == "FLAT does not apply to NIRSPEC"
    # read only when required: with the option
    assert RefSet.from_dir(tmp_path, sci, required=()).reason("flat") == "FLAT: not needed by the steps that run"
    assert "flat" not in needed_reftypes(validate_steps({"clean_flicker_noise": {"skip": False}}))
    assert "flat" in needed_reftypes(validate_steps({"clean_flicker_noise": {"skip": False,
                                                                             "apply_flat_field": True}}))


def test_any_beats_na_and_a_literal_ties_with_any(tmp_path):
    write_ref(tmp_path / "na.fits", "readnoise", sci=NIS, READPATT="N/A")
    write_ref(tmp_path / "any.fits", "readnoise", sci=NIS, READPATT="ANY")
    assert select("readnoise", tmp_path, NIS).name == "any.fits"
    # equal weight (1): the later USEAFTER wins, whichever is the literal
    write_ref(tmp_path / "lit.fits", "readnoise", sci=NIS, READPATT="NISRAPID",
              USEAFTER="2021-01-01T00:00:00")
    assert select("readnoise", tmp_path, NIS).name == "any.fits"


def test_useafter_latest_not_after_the_observation(tmp_path):
    """Observation 2023-06-01 12:00:00; USEAFTER with 'T' or a space are the same."""
    write_ref(tmp_path / "a.fits", "gain", sci=NIS, USEAFTER="2022-01-01T00:00:00")
    write_ref(tmp_path / "b.fits", "gain", sci=NIS, USEAFTER="2023-06-01 12:00:00")  # equal counts
    write_ref(tmp_path / "c.fits", "gain", sci=NIS, USEAFTER="2023-06-01T12:00:01")
    refs = RefSet.from_dir(tmp_path, NIS, required=("gain",))
    assert refs.get("gain").name == "b.fits"
    assert refs.rejections()["gain"] == [
        "c.fits (USEAFTER 2023-06-01 12:00:01 is after the observation 2023-06-01 12:00:00)"]


def test_observation_before_every_useafter_is_an_error(tmp_path):
    write_ref(tmp_path / "late.fits", "gain", sci=NIS, USEAFTER="2024-01-01T00:00:00")
    with pytest.raises(ReferenceFileError) as exc:
        RefSet.from_dir(tmp_path, NIS, required=("gain",))
    msg = str(exc.value)
    assert msg.startswith(f"GAIN reference: no file in {tmp_path} applies to the exposure")
    assert "late.fits (USEAFTER 2024-01-01 00:00:00 is after the observation 2023-06-01 12:00:00)" in msg


def test_selectors_of_other_reftypes_are_ignored(tmp_path):
    """NIRISS GAIN selects on DETECTOR and SUBARRAY only: EXP_TYPE/READPATT in its header
    neither reject nor prefer it."""
    write_ref(tmp_path / "g.fits", "gain", sci=NIS, EXP_TYPE="NIS_IMAGE", READPATT="NIS")
    assert select("gain", tmp_path, NIS).name == "g.fits"


def test_dark_full_frame_does_not_serve_a_subarray(tmp_path):
    """Other reftypes are cut out of a FULL file; the dark is not, so a FULL dark only fits
    full-frame exposures."""
    nrc_dark(tmp_path / "full.fits", SUBARRAY="FULL")
    write_ref(tmp_path / "gain_full.fits", "gain", SUBARRAY="FULL")
    assert select("gain", tmp_path, NRC).name == "gain_full.fits"
    refs = RefSet.from_dir(tmp_path, NRC, required=("gain",))
    assert refs.get("dark") is None
    assert refs.rejections()["dark"] == [
        "full.fits (SUBARRAY='FULL', exposure 'SUBGRISM64'; darks are not cut out)"]


def test_nirspec_geometry_selects_darks_not_cut_references(tmp_path):
    nrs = {**NIS, "INSTRUME": "NIRSPEC", "DETECTOR": "NRS1", "READPATT": "NRSRAPID",
           "SUBARRAY": "SUB32"}
    write_ref(tmp_path / "bias_full.fits", "superbias", sci=nrs, READPATT="ANY", SUBARRAY="FULL")
    write_ref(tmp_path / "dark_moved.fits", "dark", sci=nrs, READPATT="NRSRAPID", SUBSTRT2=9)
    assert select("superbias", tmp_path, nrs).name == "bias_full.fits"
    refs = RefSet.from_dir(tmp_path, nrs, required=("superbias",))
    assert refs.rejections()["dark"] == ["dark_moved.fits (SUBSTRT2=9, exposure 1)"]


def test_miri_linearity_band_and_filter(tmp_path):
    miri = {**NIS, "INSTRUME": "MIRI", "DETECTOR": "MIRIMAGE", "READPATT": "FASTR1",
            "SUBARRAY": "FULL", "FILTER": "F770W"}
    write_ref(tmp_path / "short.fits", "linearity", sci=miri, BAND="SHORT")  # exposure has no BAND
    write_ref(tmp_path / "f1000.fits", "linearity", sci=miri, FILTER="F1000W")
    write_ref(tmp_path / "f770.fits", "linearity", sci=miri, FILTER="F770W", BAND="N/A")
    refs = RefSet.from_dir(tmp_path, miri, required=("linearity",))
    assert refs.get("linearity").name == "f770.fits"
    assert sorted(refs.rejections()["linearity"]) == [
        "f1000.fits (FILTER='F1000W', exposure 'F770W')",
        "short.fits (BAND='SHORT', exposure has no BAND)",
    ]


# ---------------------------------------------------------------------------- missing references


def test_missing_required_reference_lists_every_rejection_in_one_line(tmp_path):
    nrc_dark(tmp_path / "a.fits", SUBARRAY="FULLP")
    write_ref(tmp_path / "b.fits", "dark", EXP_TYPE="NRC_TSGRISM", NOUTPUTS=1)
    nrc_dark(tmp_path / "c.fits", USEAFTER="2024-01-01T00:00:00")
    write_ref(tmp_path / "gain.fits", "gain")  # another reftype: not listed
    with pytest.raises(ReferenceFileError) as exc:
        RefSet.from_dir(tmp_path, NRC, required=("dark",))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg == (
        f"DARK reference: no file in {tmp_path} applies to the exposure (INSTRUME='NIRCAM', "
        "DETECTOR='NRCALONG', EXP_TYPE='NRC_TSGRISM', NOUTPUTS=4, SUBARRAY='SUBGRISM64', "
        "DATE-OBS='2023-06-01', TIME-OBS='12:00:00.000'); rejected: "
        "a.fits (SUBARRAY='FULLP', exposure 'SUBGRISM64'), b.fits (NOUTPUTS=1, exposure 4), "
        "c.fits (USEAFTER 2024-01-01 00:00:00 is after the observation 2023-06-01 12:00:00); "
        "add one, or skip the step with --steps.dark_current.skip=true or --override-dark N/A")


def test_missing_reference_without_any_file_of_the_reftype(tmp_path):
    write_ref(tmp_path / "mask.fits", "mask")
    with pytest.raises(ReferenceFileError,
                       match=r"GAIN reference: .*the directory holds no GAIN file; add one, or give "
                             r"one with --override-gain FILE$"):
        RefSet.from_dir(tmp_path, NRC, required=("mask", "gain"))
    # not required: "N/A", with the reason kept
    refs = RefSet.from_dir(tmp_path, NRC, required=("mask",))
    assert refs.get("mask").name == "mask.fits"
    assert "the directory holds no GAIN file" in refs.reason("gain")


# ---------------------------------------------------------------------------- detector1

ALL = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise")


@pytest.fixture
def nrc_exposure():
    ds = make_ramp(2, 3, NY, NX, raw=True, bias=1000.0, **NRC)
    return dims.chunk(ds, {dims.INTEGRATION: 1})


@pytest.fixture
def refs_without_dark(tmp_path):
    for rt in ALL:
        if rt != "dark":
            write_ref(tmp_path / f"{rt}.fits", rt)
    write_ref(tmp_path / "dark_other.fits", "dark", EXP_TYPE="NRC_IMAGE", NOUTPUTS=4)
    return tmp_path


STEPS = {"refpix": {"skip": True}}  # 4 outputs on 6 columns: not this test's subject


def test_detector1_missing_dark_is_an_error_before_any_compute(nrc_exposure, refs_without_dark):
    with forbid_compute(), pytest.raises(
            ReferenceFileError,
            match=r"^DARK reference: no file in .* rejected: dark_other\.fits \(EXP_TYPE='NRC_IMAGE', "
                  r"exposure 'NRC_TSGRISM'\); add one, or skip the step with "
                  r"--steps\.dark_current\.skip=true"):
        detector1(nrc_exposure, refs_without_dark, steps=STEPS)


def test_detector1_dark_skipped_by_the_user(nrc_exposure, refs_without_dark):
    res = detector1(nrc_exposure, refs_without_dark, steps={**STEPS, "dark_current": {"skip": True}})
    assert res.provenance["steps"]["dark_current"]["status"] == "SKIPPED"
    assert res.provenance["steps"]["linearity"]["status"] == "COMPLETE"
    with dask.config.set(scheduler="synchronous"):
        rate = res.rate["data"].values
    assert rate.shape == (NY, NX) and np.isfinite(rate).all()


def test_detector1_dark_override_na_is_skipped_with_the_reason(nrc_exposure, refs_without_dark):
    res = detector1(nrc_exposure, refs_without_dark, steps=STEPS, overrides={"dark": "N/A"})
    rec = res.provenance["steps"]["dark_current"]
    assert rec["status"] == "SKIPPED" and rec["reason"] == "DARK: override N/A"
    assert res.provenance["reference_files"]["dark"]["reason"] == "DARK: override N/A"
    assert res.rate.attrs["S_DARK"] == "SKIPPED"


def test_detector1_selects_the_rapid_dark_for_bright1(nrc_exposure, refs_without_dark):
    nrc_dark(refs_without_dark / "dark_rapid.fits", READPATT="RAPID")
    res = detector1(nrc_exposure, refs_without_dark, steps=STEPS)
    assert res.provenance["steps"]["dark_current"]["status"] == "COMPLETE"
    assert res.provenance["reference_files"]["dark"]["file"] == "dark_rapid.fits"


def test_detector1_without_references_says_so(nrc_exposure):
    res = detector1(nrc_exposure, None, steps={**STEPS, "jump": {"skip": True},
                                                "ramp_fit": {"skip": True}})
    steps = res.provenance["steps"]
    assert steps["dq_init"]["status"] == "SKIPPED"
    assert steps["dq_init"]["reason"] == "MASK: no reference files given"
    assert steps["dark_current"]["reason"] == "DARK: no reference files given"
    assert steps["saturation"]["reason"] == "SATURATION: no reference files given"
