"""group_1overf in the pipeline: lazy, the same in both layouts, and it removes simulated 1/f."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from daskramp.io import open_exposure
from daskramp.pipeline import detector1
from daskramp.simulate import load_truth, simulate
from daskramp.steps.group_1overf import MASK_VAR, PATTERN_VAR, group_1overf
from daskramp.testing.ramps import forbid_compute

ON = {"group_1overf": {"skip": False}}


@pytest.fixture(scope="module")
def soss(tmp_path_factory):
    """2 segments × 4 integrations × 5 groups × 256 × 96, 1/f of 6 DN per read."""
    return simulate(tmp_path_factory.mktemp("g1f-soss"), preset="niriss-soss", nints=4, segments=2,
                    ngroups=5, nx=96, seed=3, one_over_f_amplitude=6.0)


@pytest.fixture(scope="module")
def grism(tmp_path_factory):
    """NIRCam SUBGRISM64, four outputs (FASTAXIS = −1: the lines are rows, per amplifier)."""
    return simulate(tmp_path_factory.mktemp("g1f-grism"), preset="nircam-grism-tso", nints=3, segments=2,
                    ngroups=4, seed=4, one_over_f_amplitude=6.0)


def _products(res):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dask.compute(res.rateints, res.rate)


def test_the_wrapper_builds_lazily_and_equals_its_numpy_call(soss):
    ds = open_exposure(soss.uncal_files)
    ds = ds.assign(data=ds["data"].astype(np.float32))
    with forbid_compute():
        lazy = group_1overf(ds, save_mask=True, save_pattern=True)
    assert lazy.attrs["S_1OVERF"] == "COMPLETE"
    eager = group_1overf(ds.load(), save_mask=True, save_pattern=True)
    for var in ("data", MASK_VAR, PATTERN_VAR):
        np.testing.assert_array_equal(lazy[var].values, eager[var].values, err_msg=var)
    assert group_1overf(ds, skip=True).attrs["S_1OVERF"] == "SKIPPED"


@pytest.mark.parametrize("case", ["soss", "grism"])
def test_fused_equals_step_by_step(case, soss, grism):
    sim = {"soss": soss, "grism": grism}[case]
    ds = open_exposure(sim.uncal_files)
    fused = detector1(ds, sim.refs_dir, steps=ON, tile_columns=32)
    assert fused.segments is not None and fused.provenance["layout"]["fused"]
    # tiles span the fast axis: all rows (SOSS columns are the lines), all columns (NIRCam rows)
    whole = "tile_rows" if case == "soss" else "tile_columns"
    assert fused.provenance[whole] == ds.sizes["y" if case == "soss" else "x"]
    step = detector1(ds, sim.refs_dir, steps=ON, fused=False)
    assert step.segments is None
    for a, b in zip(_products(fused), _products(step), strict=True):
        for var in ("data", "dq", "err", "var_poisson", "var_rnoise"):
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=f"{case} {var}")
        assert a.attrs["S_1OVERF"] == b.attrs["S_1OVERF"] == "COMPLETE"


def test_mask_grow_widens_the_trace_mask_on_both_paths(soss):
    """``mask_grow`` grows the draft-rate mask (fused and step by step alike): fewer
    background pixels, a different correction, the same products on both layouts."""
    ds = open_exposure(soss.uncal_files)
    grown = {"group_1overf": {"skip": False, "mask_grow": 8}}
    fused = _products(detector1(ds, soss.refs_dir, steps=grown, tile_columns=32))
    step = _products(detector1(ds, soss.refs_dir, steps=grown, fused=False))
    default = _products(detector1(ds, soss.refs_dir, steps=ON, fused=False))
    for a, b, c in zip(fused, step, default, strict=True):
        np.testing.assert_array_equal(a["data"].values, b["data"].values)
        assert not np.array_equal(a["data"].values, c["data"].values, equal_nan=True)
    with forbid_compute():
        masks = [group_1overf(ds, mask_grow=g, save_mask=True)[MASK_VAR] for g in (0, 4, 8)]
    m0, m4, m8 = (m.values for m in masks)
    np.testing.assert_array_equal(group_1overf(ds, save_mask=True)[MASK_VAR].values, m4)  # the default
    assert (m8 <= m4).all() and (m4 <= m0).all() and m8.sum() < m4.sum() < m0.sum()


def test_a_user_mask_replaces_the_draft_rate(soss, tmp_path):
    from astropy.io import fits

    ds = open_exposure(soss.uncal_files)
    mask = np.ones((ds.sizes["y"], ds.sizes["x"]), bool)
    mask[:, : ds.sizes["x"] // 2] = False  # background from the right half only
    path = tmp_path / "mask.fits"
    fits.PrimaryHDU(mask.astype(np.uint8)).writeto(path)
    steps = {"group_1overf": {"skip": False, "user_mask": str(path)}}
    a, _ = _products(detector1(ds, soss.refs_dir, steps=steps, tile_columns=32))
    b, _ = _products(detector1(ds, soss.refs_dir, steps={"group_1overf": {"skip": False, "user_mask": mask}},
                               fused=False))
    c, _ = _products(detector1(ds, soss.refs_dir, steps=ON, tile_columns=32))
    np.testing.assert_array_equal(a["data"].values, b["data"].values)
    assert not np.array_equal(a["data"].values, c["data"].values, equal_nan=True)


def test_the_stripes_of_simulated_1overf_are_removed(soss):
    """Against the simulator's truth: the column-to-column scatter of the background rate of
    each integration (1/f stripes, NIRISS columns) drops well below its uncorrected value."""
    ds = open_exposure(soss.uncal_files)
    truth = load_truth(soss.truth_path)
    before, _ = _products(detector1(ds, soss.refs_dir))
    after, _ = _products(detector1(ds, soss.refs_dir, steps=ON, tile_columns=32))
    src = np.asarray(truth["source_rate"])[:, 4:-4]  # columns 0–3 and 92–95: reference pixels
    # rows with only background (≈ 1.8 DN/s) and no reference pixel
    rows = ((src < 2) & np.isfinite(before["data"].values[0][:, 4:-4])).all(axis=1)

    def stripes(rateints):
        vals = rateints["data"].values[:, rows][:, :, 4:-4]
        return float(np.nanmedian(np.nanstd(np.nanmedian(vals, axis=1), axis=1)))

    assert rows.sum() >= 20
    assert stripes(after) < 0.35 * stripes(before)
