"""Reference files: selection from headers, overrides, subarray cut-outs, validation.

Every reference file here is written by the test with astropy, a few pixels wide, except the
two full-frame files (2048×2048) used once for the SOSS cut-out numbers.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from astropy.io import fits

from daskramp.io.refs import (
    REFTYPES,
    ReferenceFileError,
    ReferenceFileWarning,
    RefSet,
    dark_planes_needed,
    load_reffile,
    select,
    subarray_window,
)

# A small science window: 4 rows × 6 columns starting at detector column 3, row 2 (1-based).
SCI = {
    "INSTRUME": "NIRISS",
    "DETECTOR": "NIS",
    "EXP_TYPE": "NIS_SOSS",
    "READPATT": "NISRAPID",
    "SUBARRAY": "SUBSTRIP96",
    "SUBSTRT1": 3,
    "SUBSTRT2": 2,
    "SUBSIZE1": 6,
    "SUBSIZE2": 4,
    "NGROUPS": 3,
    "NFRAMES": 1,
    "GROUPGAP": 0,
    "DATE-OBS": "2023-06-01",
    "TIME-OBS": "12:00:00.000",
}

# The reference "subarray" that contains it: 8 rows × 10 columns from (1, 1).
REF_NY, REF_NX = 8, 10
REF_GEOM = {"SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": REF_NX, "SUBSIZE2": REF_NY}


def ramp_image(ny=REF_NY, nx=REF_NX, dtype=np.float32):
    """value = 100·row + column (0-based), so a cut-out reveals its origin."""
    y, x = np.mgrid[0:ny, 0:nx]
    return (100 * y + x).astype(dtype)


def default_arrays(reftype, ny=REF_NY, nx=REF_NX):
    img = ramp_image(ny, nx)
    dq = np.zeros((ny, nx), np.uint32)
    return {
        "mask": {"DQ": dq + 1024},
        "saturation": {"SCI": img + 60000, "DQ": dq},
        "superbias": {"SCI": img, "ERR": img * 0, "DQ": dq},
        "linearity": {"COEFFS": np.stack([img, img + 1, img + 2]), "DQ": dq},
        "dark": {"SCI": np.stack([img * 0, img, 2 * img, 3 * img, 4 * img]), "DQ": dq},
        "gain": {"SCI": img + 1},
        "readnoise": {"SCI": img + 2},
        "flat": {"SCI": img + 3},
    }[reftype]


def write_ref(path, reftype, arrays=None, *, geom=REF_GEOM, **keywords):
    """Write a CRDS-style reference file; a keyword given as None is left out."""
    hdr = {
        "REFTYPE": reftype.upper(),
        "DESCRIP": f"test {reftype}",
        "AUTHOR": "daskramp tests",
        "USEAFTER": "2022-01-01T00:00:00",
        "PEDIGREE": "GROUND",
        "TELESCOP": "JWST",
        "INSTRUME": "NIRISS",
        "DETECTOR": "NIS",
        "SUBARRAY": "GENERIC",
        "FASTAXIS": -2,
        "SLOWAXIS": -1,
        **geom,
        **keywords,
    }
    primary = fits.PrimaryHDU()
    for k, v in hdr.items():
        if v is not None:
            primary.header[k] = v
    arrays = default_arrays(reftype) if arrays is None else arrays
    hdus = [primary] + [fits.ImageHDU(a, name=name) for name, a in arrays.items()]
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def full_set(tmp_path):
    """One applicable file of every reftype (geometry 8×10 at (1, 1), dark 4×6 like the science)."""
    d = tmp_path / "refs"
    d.mkdir()
    for rt in REFTYPES:
        if rt == "dark":
            arr = default_arrays("dark", 4, 6)
            write_ref(
                d / f"{rt}.fits",
                rt,
                arr,
                geom={**REF_GEOM, "SUBSIZE1": 6, "SUBSIZE2": 4, "SUBSTRT1": 3, "SUBSTRT2": 2},
                SUBARRAY="SUBSTRIP96",
                NFRAMES=1,
                GROUPGAP=0,
            )
        else:
            write_ref(d / f"{rt}.fits", rt)
    return d


def test_recipe_reads_the_same_set_again(full_set):
    """What a dask worker does with the recipe instead of receiving the arrays in the graph."""
    import pickle

    refs = RefSet.from_dir(full_set, SCI, required=REFTYPES)
    files, attrs = refs.recipe()
    assert len(pickle.dumps((files, attrs))) < 10_000
    again = RefSet.from_recipe(files, attrs)
    assert again.provenance() == refs.provenance()
    for rt in REFTYPES:
        for ext, arr in refs.get(rt).arrays.items():
            np.testing.assert_array_equal(again.get(rt).arrays[ext], arr, err_msg=f"{rt} {ext}")
    # a window is a set of its own: arrays not as read from the files, no recipe
    assert refs.window((4, 6), slice(0, 2), slice(0, 3)).recipe() is None


def test_recipe_refuses_a_file_changed_since(full_set):
    refs = RefSet.from_dir(full_set, SCI)
    files, attrs = refs.recipe()
    arrays = default_arrays("gain")
    arrays["SCI"] = arrays["SCI"] + 1
    (full_set / "gain.fits").unlink()
    write_ref(full_set / "gain.fits", "gain", arrays)
    with pytest.raises(ReferenceFileError, match="GAIN reference gain.fits: changed on disk"):
        RefSet.from_recipe(files, attrs)


# ---------------------------------------------------------------------------- cut-out numbers


def test_cut_small_window_values(full_set):
    """Science rows 2..5, columns 3..8 (1-based) of a reference starting at (1, 1):
    slice y 1:5, x 2:8, so the corner value is 100·1 + 2 = 102 and the far one 100·4 + 7 = 407."""
    refs = RefSet.from_dir(full_set, SCI)
    gain = refs.get("gain").arrays["SCI"]
    assert gain.shape == (4, 6) and gain.dtype == np.float32 and gain.dtype.byteorder in "=|"
    assert gain[0, 0] == 102 + 1 and gain[-1, -1] == 407 + 1  # gain file holds image + 1
    lin = refs.get("linearity")
    assert lin.arrays["COEFFS"].shape == (3, 4, 6)  # the coefficient axis is kept whole
    np.testing.assert_array_equal(lin.arrays["COEFFS"][2], ramp_image()[1:5, 2:8] + 2)
    mask = refs.get("mask").arrays["DQ"]
    assert mask.dtype == np.uint32 and mask.shape == (4, 6) and (mask == 1024).all()


@pytest.fixture(scope="module")
def full_frame_refs(tmp_path_factory):
    """A full-frame GAIN with keywords and a full-frame MASK without SUBSTRT/SUBSIZE."""
    d = tmp_path_factory.mktemp("ff")
    y, x = np.mgrid[0:2048, 0:2048]
    img = (4096 * y + x).astype(np.float32)  # < 2**24, exact in float32
    full = {"SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 2048, "SUBSIZE2": 2048}
    write_ref(d / "gain_ff.fits", "gain", {"SCI": img}, geom=full, SUBARRAY="FULL")
    nokw = dict.fromkeys(full)  # all None: keywords left out
    write_ref(
        d / "mask_ff.fits",
        "mask",
        {"DQ": (y * 0 + x).astype(np.uint32)},
        geom=nokw,
        SUBARRAY="FULL",
    )
    return d


SOSS = {
    **SCI,
    "SUBARRAY": "SUBSTRIP256",
    "SUBSTRT1": 1,
    "SUBSTRT2": 1793,
    "SUBSIZE1": 2048,
    "SUBSIZE2": 256,
}


def test_full_frame_cut_to_soss_strip(full_frame_refs):
    """SUBSTRT2 = 1793 → rows 1792..2047 (0-based) of the full frame.
    value = 4096·row + column: [0, 0] = 4096·1792 = 7340032, [255, 2047] = 4096·2047 + 2047 = 8386559."""
    gain = load_reffile("gain", full_frame_refs / "gain_ff.fits", SOSS).arrays["SCI"]
    assert gain.shape == (256, 2048)
    assert gain[0, 0] == 7340032.0
    assert gain[255, 2047] == 8386559.0
    assert gain[10, 5] == 4096 * 1802 + 5


def test_full_frame_without_keywords_is_treated_as_full(full_frame_refs):
    """A 2048×2048 file without SUBSTRT/SUBSIZE is full frame (warning); DQ = column index."""
    with pytest.warns(ReferenceFileWarning, match="full frame"):
        mask = load_reffile("mask", full_frame_refs / "mask_ff.fits", SOSS).arrays["DQ"]
    assert mask.shape == (256, 2048) and mask.dtype == np.uint32
    np.testing.assert_array_equal(mask[0], np.arange(2048, dtype=np.uint32))


def test_non_full_frame_without_keywords_is_an_error(tmp_path):
    p = write_ref(tmp_path / "g.fits", "gain", geom=dict.fromkeys(REF_GEOM))
    with pytest.raises(ReferenceFileError, match=r"GAIN reference g\.fits: .*8×10, not full frame"):
        load_reffile("gain", p, SCI)


def test_subsize_disagreeing_with_array_is_corrected(tmp_path):
    """SUBSIZE1=20 in the header but the array is 10 wide: the array width wins (jwst warns too),
    and the cut is the same as with the right keyword."""
    p = write_ref(
        tmp_path / "rn.fits", "readnoise", geom={**REF_GEOM, "SUBSIZE1": 20, "SUBSIZE2": 9}
    )
    with pytest.warns(ReferenceFileWarning) as rec:
        rn = load_reffile("readnoise", p, SCI).arrays["SCI"]
    msgs = " ".join(str(w.message) for w in rec)
    assert "SUBSIZE1=20" in msgs and "SUBSIZE2=9" in msgs
    np.testing.assert_array_equal(rn, ramp_image()[1:5, 2:8] + 2)


def test_subsize_correction_decides_the_match(tmp_path):
    """Header says 8×10 but the array is 4×6 at the science origin: after correction it matches
    the science window exactly, so nothing is cut."""
    arr = {"SCI": ramp_image(4, 6)}
    p = write_ref(
        tmp_path / "g.fits",
        "gain",
        arr,
        geom={"SUBSTRT1": 3, "SUBSTRT2": 2, "SUBSIZE1": 10, "SUBSIZE2": 8},
    )
    with pytest.warns(ReferenceFileWarning):
        g = load_reffile("gain", p, SCI).arrays["SCI"]
    np.testing.assert_array_equal(g, ramp_image(4, 6))


def test_matching_subarray_is_not_cut():
    assert (
        subarray_window(
            "gain",
            "x.fits",
            {"SUBSTRT1": 3, "SUBSTRT2": 2, "SUBSIZE1": 6, "SUBSIZE2": 4},
            (4, 6),
            SCI,
        )
        is None
    )


@pytest.mark.parametrize(
    "geom, why",
    [
        (
            {"SUBSTRT1": 4, "SUBSTRT2": 1, "SUBSIZE1": 10, "SUBSIZE2": 8},
            "x -1:5",
        ),  # starts right of the science
        (
            {"SUBSTRT1": 1, "SUBSTRT2": 1, "SUBSIZE1": 7, "SUBSIZE2": 8},
            "x 2:8",
        ),  # too narrow: 8 > 7
        ({"SUBSTRT1": 0, "SUBSTRT2": 1, "SUBSIZE1": 10, "SUBSIZE2": 8}, "start"),
    ],
)
def test_science_window_outside_reference(tmp_path, geom, why):
    arr = {"SCI": ramp_image(geom["SUBSIZE2"], geom["SUBSIZE1"])}
    p = write_ref(
        tmp_path / "sat.fits",
        "saturation",
        {**arr, "DQ": np.zeros_like(arr["SCI"], np.uint32)},
        geom=geom,
    )
    with pytest.raises(ReferenceFileError, match=r"SATURATION reference sat\.fits") as exc:
        load_reffile("saturation", p, SCI)
    assert why in str(exc.value)


# ---------------------------------------------------------------------------- dark


def test_dark_is_not_cut_and_must_match_shape(tmp_path):
    """An 8×10 dark for a 4×6 exposure is an error naming the file and both shapes."""
    p = write_ref(tmp_path / "dark_big.fits", "dark", NFRAMES=1, GROUPGAP=0)
    with pytest.raises(
        ReferenceFileError,
        match=r"DARK reference dark_big\.fits: image shape 8×10 .* science image 4×6",
    ):
        load_reffile("dark", p, SCI)


def test_dark_planes_limited_to_what_the_exposure_uses(full_set):
    """NGROUPS=3, NFRAMES=1, GROUPGAP=0 → 3 of the 5 planes are read; plane k = k·image."""
    dark = RefSet.from_dir(full_set, SCI).get("dark")
    assert dark.arrays["SCI"].shape == (3, 4, 6)
    np.testing.assert_array_equal(dark.arrays["SCI"][2], 2 * ramp_image(4, 6))
    assert dark.header["NFRAMES"] == 1


def test_dark_planes_needed_rules():
    # same timing: one plane per group
    assert (
        dark_planes_needed(
            {"NGROUPS": 5, "NFRAMES": 4, "GROUPGAP": 1}, {"NFRAMES": 4, "GROUPGAP": 1}, 100
        )
        == 5
    )
    # frame darks: 5 groups of 4 frames with gaps of 1 → 5·4 + 4·1 = 24 frames
    assert (
        dark_planes_needed(
            {"NGROUPS": 5, "NFRAMES": 4, "GROUPGAP": 1}, {"NFRAMES": 1, "GROUPGAP": 0}, 100
        )
        == 24
    )
    # a short dark is kept whole for extrapolation
    assert dark_planes_needed({"NGROUPS": 5, "NFRAMES": 4, "GROUPGAP": 1}, {}, 10) == 10


# ---------------------------------------------------------------------------- selection


def _names(refs):
    return {rt: (f.name if f else None) for rt, f in ((rt, refs.get(rt)) for rt in REFTYPES)}


def test_selection_by_detector_and_readpatt(tmp_path):
    """NIRISS READNOISE selects on DETECTOR, READPATT, SUBARRAY (spec 11 §1): EXP_TYPE in its
    header does not select; a matching value and ANY weigh 1, N/A 0."""
    d = tmp_path
    write_ref(d / "r_nrs.fits", "readnoise", DETECTOR="NRS1", INSTRUME="NIRSPEC")
    write_ref(d / "r_nis.fits", "readnoise", READPATT="NIS")  # wrong READPATT
    write_ref(d / "r_na.fits", "readnoise", READPATT="N/A")  # weight 0
    assert select("readnoise", d, SCI).name == "r_na.fits"
    write_ref(d / "r_any.fits", "readnoise", READPATT="ANY", EXP_TYPE="NIS_IMAGE")  # weight 1
    assert select("readnoise", d, SCI).name == "r_any.fits"
    # a list member weighs as much as ANY: the later USEAFTER decides
    write_ref(d / "r_list.fits", "readnoise", READPATT="NIS|NISRAPID", USEAFTER="2022-06-01T00:00:00")
    assert select("readnoise", d, SCI).name == "r_list.fits"


def test_pattern_keywords_win_over_plain_ones(tmp_path):
    """CRDS files name their applicability in P_READPA (with a trailing '|')."""
    write_ref(tmp_path / "a.fits", "readnoise", READPATT="NIS", P_READPA="NIS|NISRAPID|")
    write_ref(tmp_path / "b.fits", "readnoise", READPATT="NISRAPID", P_READPA="NIS|")
    assert select("readnoise", tmp_path, SCI).name == "a.fits"


def test_selection_by_subarray(tmp_path):
    """A FULL file applies to every subarray (and is cut); a subarray file only to its own name;
    the subarray's own file is preferred."""
    write_ref(tmp_path / "full.fits", "gain", SUBARRAY="FULL")
    write_ref(tmp_path / "s256.fits", "gain", SUBARRAY="SUBSTRIP256")
    assert select("gain", tmp_path, SCI).name == "full.fits"
    write_ref(tmp_path / "s96.fits", "gain", SUBARRAY="SUBSTRIP96")
    assert select("gain", tmp_path, SCI).name == "s96.fits"
    assert select("gain", tmp_path, {**SCI, "SUBARRAY": "SUBSTRIP256"}).name == "s256.fits"
    assert select("gain", tmp_path, {**SCI, "SUBARRAY": "SUB80"}).name == "full.fits"


def test_selection_by_useafter(tmp_path):
    """Newest USEAFTER wins, but not one after the observation (DATE-OBS 2023-06-01 12:00)."""
    write_ref(tmp_path / "old.fits", "gain", USEAFTER="2022-01-01T00:00:00")
    write_ref(tmp_path / "new.fits", "gain", USEAFTER="Jan 01 2023 00:00:00")  # old CRDS style
    write_ref(tmp_path / "future.fits", "gain", USEAFTER="2023-06-01T12:00:01")
    assert select("gain", tmp_path, SCI).name == "new.fits"
    # without an observation date the newest of all
    noobs = {k: v for k, v in SCI.items() if k not in ("DATE-OBS", "TIME-OBS")}
    assert select("gain", tmp_path, noobs).name == "future.fits"


def test_tie_is_an_error_listing_the_files(tmp_path):
    write_ref(tmp_path / "a.fits", "gain")
    write_ref(tmp_path / "b.fits", "gain")
    with pytest.raises(ReferenceFileError, match=r"GAIN reference: 2 files .* a\.fits, b\.fits"):
        select("gain", tmp_path, SCI)


def test_dark_selection_prefers_matching_timing(tmp_path):
    """Science NFRAMES=4, GROUPGAP=1: an identical-timing dark beats a frame dark (1, 0),
    which beats a dark that cannot be averaged (2, 0)."""
    sci = {**SCI, "NFRAMES": 4, "GROUPGAP": 1}
    write_ref(tmp_path / "d20.fits", "dark", NFRAMES=2, GROUPGAP=0, EXP_TYPE="NIS_SOSS")
    write_ref(tmp_path / "d10.fits", "dark", NFRAMES=1, GROUPGAP=0)
    assert select("dark", tmp_path, sci).name == "d10.fits"
    write_ref(tmp_path / "d41.fits", "dark", NFRAMES=4, GROUPGAP=1)
    assert select("dark", tmp_path, sci).name == "d41.fits"


def test_no_file_for_required_reftype(full_set):
    (full_set / "linearity.fits").unlink()
    write_ref(full_set / "lin_nrs.fits", "linearity", DETECTOR="NRS1")
    with pytest.raises(
        ReferenceFileError,
        match=r"LINEARITY reference: no file in .*rejected: lin_nrs\.fits \(DETECTOR='NRS1', exposure 'NIS'\)",
    ):
        RefSet.from_dir(full_set, SCI)
    # not required → "N/A"
    refs = RefSet.from_dir(full_set, SCI, required=("gain", "readnoise"))
    assert refs.get("linearity") is None and refs.get("gain") is not None
    assert refs.reason("linearity").startswith("LINEARITY reference: no file in ")
    assert refs.rejections()["linearity"] == ["lin_nrs.fits (DETECTOR='NRS1', exposure 'NIS')"]


# ---------------------------------------------------------------------------- overrides


def test_override_wins_and_na(full_set, tmp_path):
    other = write_ref(tmp_path / "my_gain.fits", "gain", {"SCI": ramp_image() * 0 + 7})
    refs = RefSet.from_dir(
        full_set, SCI, overrides={"gain": other, "override_dark": "N/A", "mask": "n/a"}
    )
    assert refs.get("gain").name == "my_gain.fits" and (refs.get("gain").arrays["SCI"] == 7).all()
    assert refs.get("dark") is None and refs.get("mask") is None
    assert refs.get("saturation").name == "saturation.fits"
    assert refs.provenance()["dark"] == {"file": "N/A", "path": None, "sha256": None,
                                         "reason": "DARK: override N/A"}


def test_overrides_without_directory(tmp_path):
    g = write_ref(tmp_path / "g.fits", "gain")
    refs = RefSet.from_dir(None, SCI, overrides={"gain": g})
    assert _names(refs) == {**dict.fromkeys(REFTYPES), "gain": "g.fits"}


def test_override_with_wrong_reftype(tmp_path):
    p = write_ref(tmp_path / "rn.fits", "readnoise")
    with pytest.raises(
        ReferenceFileError, match=r"GAIN reference rn\.fits: REFTYPE is 'READNOISE'"
    ):
        RefSet.from_dir(None, SCI, overrides={"gain": p})


@pytest.mark.parametrize(
    "kw, msg",
    [({"DETECTOR": "NRS1"}, "DETECTOR='NRS1'"), ({"INSTRUME": "NIRCAM"}, "INSTRUME='NIRCAM'")],
)
def test_override_for_another_detector(tmp_path, kw, msg):
    p = write_ref(tmp_path / "g.fits", "gain", **kw)
    with pytest.raises(ReferenceFileError, match=rf"GAIN reference g\.fits: {msg} does not match"):
        RefSet.from_dir(None, SCI, overrides={"gain": p})


def test_unknown_override_key():
    with pytest.raises(ReferenceFileError, match="unknown reftype"):
        RefSet.from_dir(None, SCI, overrides={"fflat": "x.fits"})


# ---------------------------------------------------------------------------- layout errors


@pytest.mark.parametrize(
    "reftype, arrays, msg",
    [
        ("saturation", {"SCI": ramp_image()}, r"missing extension\(s\) \['DQ'\]"),
        (
            "gain",
            {"SCI": ramp_image().astype(np.int32)},
            "extension SCI has dtype int32, expected float32",
        ),
        ("mask", {"DQ": ramp_image()}, "extension DQ has dtype float32"),
        (
            "superbias",
            {"SCI": ramp_image(), "DQ": np.zeros((REF_NY, REF_NX - 1), np.uint32)},
            r"extension DQ has shape \(8, 9\)",
        ),
        (
            "linearity",
            {"COEFFS": ramp_image(), "DQ": np.zeros((REF_NY, REF_NX), np.uint32)},
            "extension COEFFS has shape",
        ),
        (
            "linearity",
            {
                "COEFFS": np.stack([ramp_image()] * 2),
                "INV_COEFFS": ramp_image(),
                "DQ": np.zeros((REF_NY, REF_NX), np.uint32),
            },
            "extension INV_COEFFS has shape",
        ),
    ],
)
def test_layout_errors_name_reftype_and_file(tmp_path, reftype, arrays, msg):
    p = write_ref(tmp_path / f"bad_{reftype}.fits", reftype, arrays)
    with pytest.raises(
        ReferenceFileError, match=rf"{reftype.upper()} reference bad_{reftype}\.fits: .*{msg}"
    ):
        load_reffile(reftype, p, SCI)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ReferenceFileError, match=r"GAIN reference nope\.fits: file not found"):
        RefSet.from_dir(None, SCI, overrides={"gain": tmp_path / "nope.fits"})
    with pytest.raises(ReferenceFileError, match="does not exist"):
        RefSet.from_dir(tmp_path / "missing", SCI)


def test_inv_coeffs_are_cut_too(tmp_path):
    img = ramp_image()
    arrays = {
        "COEFFS": np.stack([img, img]),
        "INV_COEFFS": np.stack([-img, -img, -img]),
        "DQ": np.zeros(img.shape, np.uint32),
    }
    lin = load_reffile("linearity", write_ref(tmp_path / "l.fits", "linearity", arrays), SCI)
    assert lin.arrays["INV_COEFFS"].shape == (3, 4, 6)
    assert lin.arrays["INV_COEFFS"][1, 0, 0] == -102


# ---------------------------------------------------------------------------- provenance


def test_sha256_and_provenance(full_set):
    refs = RefSet.from_dir(full_set, SCI, required=REFTYPES)
    prov = refs.provenance()
    assert set(prov) == set(REFTYPES)
    for rt in REFTYPES:
        expected = hashlib.sha256((full_set / f"{rt}.fits").read_bytes()).hexdigest()
        assert prov[rt]["sha256"] == expected and prov[rt]["file"] == f"{rt}.fits"
    assert refs.get("gain").header["REFTYPE"] == "GAIN"


def test_foreign_fits_files_are_ignored(full_set):
    """A FITS file without REFTYPE (e.g. an uncal) in the directory is not a candidate."""
    fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(full_set / "jw_uncal.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refs = RefSet.from_dir(full_set, SCI)
    assert refs.get("gain").name == "gain.fits"
