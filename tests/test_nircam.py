"""NIRCam full frame end to end: 2048 × 2048, four amplifiers, reference pixels on all sides.

* default suite: one 2 integrations × 4 groups exposure of the ``nircam-full`` preset (the
  smallest case that still reads through 4 outputs with side reference columns): rates vs
  truth, per-amplifier offsets removed by refpix, tile choice recorded; ~25 s.
* ``slow``: the preset's 10 groups, with refpix variants (no side reference pixels, refpix
  skipped) to show what the side and amplifier corrections remove (a smooth row-wise signal
  common to all outputs is injected for the side correction), and the process memory
  against the tile projection.
* ``parity``: the 4-group exposure through the official pipeline (≈ 30 s there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
from astropy.io import fits

from daskramp import dq
from daskramp.engine.plan import CHAIN_FACTOR as TILE_MEMORY_FACTOR
from daskramp.io import open_exposure
from daskramp.pipeline import detector1, plan_tiles
from daskramp.simulate import load_truth, simulate
from daskramp.testing.parity import compare_arrays, compare_dq

FULL = 2048
#: task budget for the tiles: 80 MiB → 128-column tiles for 2 × 4 groups (factor 7.8)
BUDGET = 80 * 2**20


def _compute(res):
    with dask.config.set(scheduler="threads", num_workers=2):
        return dask.compute(res.rate, res.rateints)


@pytest.fixture(scope="module")
def full4(tmp_path_factory):
    out = tmp_path_factory.mktemp("nircam4")
    # no 1/f: the simulator draws an independent 1/f series per output, which the side
    # reference columns (read by outputs 0 and 3 only) cannot correct in outputs 1 and 2, so
    # it would leave ~0.05 DN/s per-output offsets that no error term accounts for
    return simulate(out, preset="nircam-full", nints=2, ngroups=4, seed=5, workers=1,
                    one_over_f_amplitude=0.0)


@pytest.fixture(scope="module")
def products4(full4):
    ds = open_exposure(full4.uncal_files)
    res = detector1(ds, full4.refs_dir, memory_limit=BUDGET, frame_stats="compute")
    rate, rateints = _compute(res)
    return rate, rateints, res


def _amplifier(x: np.ndarray) -> np.ndarray:
    # NRCA1 reads along −x (FASTAXIS = −1): output k covers detector columns 512k … 512k+511,
    # i.e. DMS columns 2047 − 512k − 511 … 2047 − 512k
    return (FULL - 1 - x) // 512


def _clean(rateints, truth):
    q = rateints["dq"].values
    return (q == 0) & np.isfinite(rateints["data"].values) & (truth[None] > 0.2)


def test_full_frame_geometry_and_tiles(products4, full4):
    rate, rateints, res = products4
    a = full4.attrs
    assert (a["SUBARRAY"], a["NOUTPUTS"], a["SUBSIZE1"], a["SUBSIZE2"]) == ("FULL", 4, FULL, FULL)
    assert rateints.sizes == {"integration": 2, "y": FULL, "x": FULL}
    rows, cols = res.provenance["tile_rows"], res.provenance["tile_columns"]
    band = plan_tiles(open_exposure(full4.uncal_files), memory_limit=BUDGET)
    projected = TILE_MEMORY_FACTOR * 4 * 2 * 4 * FULL * band
    print(f"band of {band} columns: projected tile-stage task {projected / 2**20:.0f} MiB "
          f"of a {BUDGET / 2**20:.0f} MiB budget; laid out as {rows} × {cols} tiles")
    # TILE_MEMORY_FACTOR × 4 B × 2 integrations × 4 groups × 2048 rows per column: the widest
    # power of two that fits the budget, so the frame is cut into several tiles
    assert projected <= BUDGET < 2 * projected and FULL // band >= 4
    # the band's pixels as shorter, wider tiles (the frame is read row by row)
    assert rows * cols == FULL * band and rows < FULL
    assert res.provenance["layout"]["tiles"] == (FULL // rows) * (FULL // cols)
    for name in ("dq_init", "saturation", "superbias", "refpix", "linearity", "dark_current",
                 "jump", "ramp_fit"):
        assert res.provenance["steps"][name]["status"] == "COMPLETE", name
    assert rate.attrs["S_REFPIX"] == "COMPLETE"
    # the reference-pixel border on all four sides: NaN rate (zero gain, as in flight files)
    q = rate["dq"].values
    border = np.zeros((FULL, FULL), bool)
    border[:4] = border[-4:] = True
    border[:, :4] = border[:, -4:] = True
    assert ((q[border] & dq.REFERENCE_PIXEL) != 0).all()
    assert np.isnan(rate["data"].values[border]).all()


def test_rates_against_truth(products4, full4):
    """(rateints − truth)/err has σ in 0.9–1.2 and no bias on clean pixels."""
    _, rateints, _ = products4
    truth = load_truth(full4.truth_path)["source_rate"].values
    ok = _clean(rateints, truth)
    assert ok.sum() > 0.95 * 2 * (FULL - 8) ** 2
    d, e = rateints["data"].values, rateints["err"].values
    pull = (d[ok] - np.broadcast_to(truth, d.shape)[ok]) / e[ok]
    print(f"pulls: mean {pull.mean():.4f} std {pull.std():.4f} on {ok.sum()} pixel-integrations")
    assert 0.9 < pull.std() < 1.2
    assert abs(pull.mean()) < 0.05
    # the bright stars are found, not only the 0.5 DN/s background
    bright = ok[0] & (truth > 20)
    assert bright.sum() > 50
    np.testing.assert_allclose(d[0][bright], truth[bright], rtol=0.05)


def test_amplifier_offsets_removed(products4, full4):
    """Per group and amplifier the bias moves by ~4 DN (refpix_offset_rms): a slope error of
    4·√(12/60)/21.47 s ≈ 0.08 DN/s per amplifier with 4 groups, if refpix did not remove it.
    After refpix the medians of (rate − truth) of the 4 outputs agree to < 0.01 DN/s."""
    _, rateints, _ = products4
    truth = load_truth(full4.truth_path)["source_rate"].values
    ok = _clean(rateints, truth)
    amp = _amplifier(np.arange(FULL))
    resid = rateints["data"].values - truth[None]
    for i in range(2):
        med = [np.median(resid[i][:, amp == k][ok[i][:, amp == k]]) for k in range(4)]
        print(f"integration {i}: amplifier medians of rate − truth {np.round(med, 4)} DN/s")
        assert np.ptp(med) < 0.01, med


@pytest.mark.slow
def test_ten_groups_refpix_side_and_amplifier_corrections(tmp_path):
    """The preset's 10 groups.  A smooth signal common to every output along the rows (what
    correlated 1/f noise looks like: 30 DN, period 512 rows, a random phase per group) is
    added to the raw ramps; the side reference columns must remove it, and the per-output,
    per-group bias offsets (4 DN) must go with the top/bottom reference rows."""
    import xarray as xr

    from daskramp.testing.memory import TreeMemorySampler

    sim = simulate(tmp_path, preset="nircam-full", nints=2, seed=6, workers=1,
                   one_over_f_amplitude=0.0)
    truth = load_truth(sim.truth_path)["source_rate"].values
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, (2, 10, 1))
    rows = np.arange(FULL)[None, None, :]
    pattern = xr.DataArray(30.0 * np.sin(2 * np.pi * rows / 512 + phase),
                           dims=("integration", "group", "y"))
    raw = (open_exposure(sim.uncal_files)["data"].astype(np.float32)
           + pattern.astype(np.float32)).round().astype(np.uint16)
    plain = open_exposure(sim.uncal_files)
    ds = plain.assign(data=raw.transpose(*plain["data"].dims))
    out = {}
    for name, exposure, steps in (("plain", plain, None), ("default", ds, None),
                                  ("no_side", ds, {"refpix": {"use_side_ref_pixels": False}}),
                                  ("skip", plain, {"refpix": {"skip": True}})):
        res = detector1(exposure, sim.refs_dir, steps=steps, memory_limit=BUDGET,
                        frame_stats="compute")
        with TreeMemorySampler(interval=0.05) as mem:
            before = mem.sample()
            _, rateints = _compute(res)
        out[name] = (rateints, res, mem.peak - before)
    rateints, res, grew = out["plain"]
    rows, cols = res.provenance["tile_rows"], res.provenance["tile_columns"]
    projected = TILE_MEMORY_FACTOR * 4 * 2 * 10 * rows * cols
    # besides the tasks in flight the process holds the integration chunks read from FITS
    # (cast to float32 before they are cut into tiles, daskramp.engine.stages.as_float) and the products
    # (rate + rateints, 5 images each).  Measured 801–989 MiB over runs (thread scheduling
    # order); the bound says "never more than two whole copies of the float32 ramp + groupdq
    # (420 MiB each) besides the products", which a graph that materialised the exposure
    # between steps would break
    exposure_bytes = 2 * 10 * FULL * FULL * 5
    product_bytes = 3 * 5 * FULL * FULL * 4
    print(f"10 groups: tiles of {rows} × {cols}, projected task {projected / 2**20:.0f} MiB, "
          f"process grew by {grew / 2**20:.0f} MiB during compute (2 threads; ramp + groupdq "
          f"{exposure_bytes / 2**20:.0f} MiB, products {product_bytes / 2**20:.0f} MiB)")
    assert projected <= BUDGET
    assert grew < 2 * exposure_bytes + product_bytes + 2 * projected

    ok = _clean(rateints, truth)
    pull = ((rateints["data"].values - truth[None]) / rateints["err"].values)[ok]
    print(f"pulls: mean {pull.mean():.4f} std {pull.std():.4f}")
    assert 0.9 < pull.std() < 1.2 and abs(pull.mean()) < 0.05

    amp = _amplifier(np.arange(FULL))

    def amp_spread(ri):
        r = ri["data"].values[0] - truth
        good = _clean(ri, truth)[0]
        return float(np.ptp([np.median(r[:, amp == k][good[:, amp == k]]) for k in range(4)]))

    def row_scatter(ri):
        r = np.where(_clean(ri, truth), ri["data"].values - truth[None], np.nan)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows of saturated stars only
            return float(np.nanstd(np.nanmedian(r[4:-4], axis=1)))

    spreads = {k: amp_spread(v[0]) for k, v in out.items()}
    scatter = {k: row_scatter(v[0]) for k, v in out.items()}
    print(f"amplifier spread (DN/s) {spreads}; row-median scatter (DN/s) {scatter}")
    assert out["skip"][1].provenance["steps"]["refpix"]["status"] == "SKIPPED"
    # per-group offsets of 4 DN → ~0.02 DN/s per output over 10 groups without refpix
    assert spreads["plain"] < 0.005 < spreads["skip"]
    # 30 DN/√2 rms per group along the rows → ~0.07 DN/s row pattern unless the side
    # reference columns remove it
    assert scatter["default"] < 0.3 * scatter["no_side"]


@pytest.mark.parity
def test_parity_with_official_full_frame(products4, full4, tmp_path):
    """rateints and rate of the 2 × 4-group full frame against jwst 3.0 (offline, own process):
    within 1e-4 relative on ≥ 99.9 % of pixels, NaN pattern and DQ identical."""
    pytest.importorskip("jwst")
    rate, rateints, _ = products4
    proc = subprocess.run(
        [sys.executable, "-m", "daskramp.testing.official", str(full4.uncal_files[0]), "--refs",
         str(full4.refs_dir), "--out", str(tmp_path / "official")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"official pipeline: {report['wall_s']:.1f} s")
    for ours, path in ((rateints, report["rateints"]), (rate, report["rate"])):
        with fits.open(path) as h:
            for var, ext in (("data", "SCI"), ("err", "ERR"), ("var_poisson", "VAR_POISSON"),
                             ("var_rnoise", "VAR_RNOISE")):
                r = compare_arrays(ours[var].values, h[ext].data)
                print(Path(path).name, var, r)
                assert r["nan_pattern_identical"], (var, r)
                assert r["fraction_close"] >= 0.999, (var, r)
            d = compare_dq(ours["dq"].values, h["DQ"].data)
            assert d["fraction_identical"] == 1.0, d
