"""Science acceptance on a simulated SOSS transit with 1/f noise: depth, noise budget, laziness.

One exposure (module fixture): NIRISS SOSS-like strip of 256 × 256 pixels, 2 segments × 30
integrations × 9 groups, a trapezoid transit of depth 1.5 % lasting 40 % of the exposure,
1/f noise of amplitude 1 DN (PSD a²/f per output), cosmic rays, non-linearity, saturation:
everything the simulator models.  Detector1 runs once; the 1/f variants re-run only what
they change.

The noise budget compares the out-of-transit white-light scatter with the scatter expected
from the products' ``err`` (photon + read noise, propagated through the aperture sum):

(a) no 1/f correction;
(b) group level: :func:`subtract_group_1overf` between dark_current and jump (column
    background of every group difference from pixels > 30 rows from the traces; the whole
    column level removed, ``keep_level=False``), and the ``clean_flicker_noise`` step
    (official algorithm, after jump; printed only, see below);
(c) rateints level only: :func:`correct_rateints_1overf` with the same mask;
(d) as (b), with jump's ``integration_scale`` (see "Depth" below).

Measured on this exposure (seed 2024; printed by ``test_noise_budget``): (a) 1.78,
(b) 1.07, clean_flicker_noise 1.85, (c) 1.11, (d) 1.07.  A standard deviation from 36 baseline points
is itself uncertain by ±12 %, so the acceptance target (≤ 1.1) is asserted on (b) and (c) is
held to ≤ 1.2.  With 1/f switched off the same analysis gives 0.88–1.16 over six seeds, so
the products' errors describe the white noise.  Most of the 1/f excess in the white light is
the *frame-level* offset of each group that refpix leaves (the simulated 1/f drifts within
the frame read, and 4 reference rows measure it with an error of ≈ 0.3 DN).  A correction
that keeps each group's overall level — the official clean_flicker_noise, or
subtract_group_1overf with ``keep_level=True`` — removes the column stripes but not that
offset, and the white light sums the same offset over the aperture.

Depth: with the official jump comparison, (b) recovers 14950 ± 23 ppm for 15000 injected
(−2.2σ): the depth comes out shallow by ≈ 30 ppm (0.2 %) because every group difference of a
pixel is compared with the median difference pooled over *all integrations of the segment*
(iterative and single-pass modes; sigma clipping pools across integrations too).  In full
transit a bright pixel's differences sit ≈ 1.5 % below that median — 1.2σ at 700 DN/s — so a
−2.8σ fluctuation already crosses the 4σ threshold; the low difference is dropped and that
in-transit rate comes out high (:func:`test_jump_pooled_median_flags_dips_in_transit` shows
it on hand-made ramps).  Evidence (no 1/f unless stated):

* noiseless truth through the same aperture and white light: 15000.0 ppm (the extraction and
  the white light are exact);
* above 400 DN/s, false JUMP_DET (no cosmic ray within one pixel) hit 0.36–0.39 % of the
  full-transit pixel-integrations against 0.12 % out of transit (seeds 1–3; 2024 with 1/f
  and (b): 0.39 % against 0.12 %), checked by
  :func:`test_false_jumps_do_not_follow_the_transit` (xfail for (b));
* depth from the aperture-weighted in/out ratio per source-rate bin, minus the injected one,
  mean of seeds 1–8: −31 ± 10 ppm (400–600 DN/s) and −44 ± 10 ppm (> 600 DN/s), consistent
  with 0 below 400 DN/s; leaving out the pixels that saturate in any integration changes
  nothing (−28 ppm overall either way);
* the same CR-free exposures (8 seeds): depth − injected = −37 ± 6 ppm with the jump step,
  −7 ± 6 ppm with it skipped;
* jump run on the ramps divided by a per-integration flux scale (median over the bright
  pixels, from the data) and its flags applied to the unscaled ramps: false jumps no longer
  follow the transit and, for (b) over 11 seeds of this fixture (2024, 1–10), the pulls go
  from −2.18, −2.25, −0.69, +0.11, −0.60, −1.19, −1.66, −0.84, −1.82, −1.67, −1.06 (mean
  depth − injected −29 ± 5 ppm) to −0.78, −0.69, +0.91, +1.36, +0.73, +0.31, −0.28, +0.63,
  −0.54, −0.38, +0.24 (+3 ± 5 ppm; the shift is 31.7 ppm, seed-to-seed rms 1.5 ppm);
  ``rejection_threshold=6`` gives the same pulls within 0.1 here.

(d) is the remedy built into the step: jump's ``integration_scale`` (not an official
parameter) divides each integration by its relative flux before the pooled comparison, with
the scale from the raw ramps (:func:`daskramp.analysis.integration_scale`, running median of
5).  Measured: 14982 ± 23 ppm (−0.78σ), false jumps in transit as often as out of it, noise
ratio 1.072.  The 1σ acceptance is asserted on (d); (b), the official behaviour, on 3σ.

Run: ``python -m pytest tests/test_tso_science.py -q -s`` (``-s`` shows the printed table).
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from daskramp import analysis as A
from daskramp import dq
from daskramp.dims import make_exposure
from daskramp.io import open_exposure
from daskramp.pipeline import detector1
from daskramp.simulate import load_truth, simulate
from daskramp.steps import STEP_ORDER
from daskramp.steps.jump import jump
from daskramp.testing.ramps import forbid_compute, make_attrs

SEED = 2024
RADIUS = 15.0
#: order settings for the 256-column SOSS-like strip (array rows; orders 1 and 2 are split at row 95)
ORDERS = {1: dict(x_start=250, x_end=5, y_start=75.0, rows=(40, 95)),
          2: dict(x_start=250, x_end=5, y_start=110.0, rows=(95, 200))}
EARLY = STEP_ORDER[: STEP_ORDER.index("dark_current") + 1]


def _compute(obj):
    with dask.config.set(scheduler="threads", num_workers=2):
        return obj.compute()


def background_mask(median_image: xr.DataArray, traces: xr.Dataset) -> np.ndarray:
    """True = background: > 30 rows from orders 1–2 and below 3 MAD-sigma (drops order 3)."""
    img = median_image.values
    v = img[np.isfinite(img)]
    sig = 1.4826 * np.median(np.abs(v - np.median(v)))
    faint = np.isfinite(img) & (img < np.median(v) + 3 * sig)
    return A.trace_mask(traces["trace"], median_image, halfwidth=30.0).values & faint


def white_light_metrics(rateints: xr.Dataset, trace, truth: xr.Dataset) -> dict:
    """Fixed-trace aperture extraction → white light → scatter ratio and in/out depth."""
    rf = truth["relative_flux"].values
    oot, full = rf == 1.0, rf == rf.min()
    spec = A.extract_aperture(rateints, trace, radius=RADIUS)
    cols = np.flatnonzero(np.isfinite(spec["flux"].values).all(axis=0))
    spec = spec.isel(x=cols)
    wl = A.white_light(spec, out_of_transit=oot, filter_size=1)
    f, e = wl["flux"].values, wl["flux_err"].values
    ratio = float(np.std(f[oot], ddof=1) / np.median(e[oot]))
    keep = np.flatnonzero(oot | full)  # ingress/egress integrations belong to neither mean
    d = A.depth_in_out(wl["flux"].isel(integration=keep), wl["flux_err"].isel(integration=keep), full[keep])
    return {"ratio": ratio, "scatter_ppm": float(np.std(f[oot], ddof=1) * 1e6),
            "expected_ppm": float(np.median(e[oot]) * 1e6), "depth": float(d["depth"]),
            "depth_err": float(d["depth_err"]) * max(1.0, ratio), "n_oot": int(oot.sum()),
            "n_full": int(full.sum())}


@pytest.fixture(scope="module")
def tso(tmp_path_factory):
    out = tmp_path_factory.mktemp("soss_transit")
    sim = simulate(out, preset="niriss-soss", nints=30, segments=2, ngroups=9, nx=256, seed=SEED,
                   one_over_f_amplitude=1.0)
    truth = load_truth(sim.truth_path)
    ds = open_exposure(sim.uncal_files)
    res = detector1(ds, sim.refs_dir, save_steps=["dark_current"])
    with dask.config.set(scheduler="threads", num_workers=2):
        raw, ramp = dask.compute(res.rateints, res.intermediates["dark_current"])
    median = raw["data"].median("integration").drop_vars(["y", "x"])
    traces = A.trace_orders(median, ORDERS).compute()
    mask = background_mask(median, traces)
    trace1 = traces["trace"].sel(order=1, drop=True)

    group = A.subtract_group_1overf(ramp, mask, keep_level=False).drop_vars("one_over_f_stripes")
    group_ri = _compute(detector1(group, sim.refs_dir, steps={s: {"skip": True} for s in EARLY}).rateints)
    # each integration's flux level from the raw ramps, for jump's comparison
    with dask.config.set(scheduler="threads", num_workers=2):
        scale = A.integration_scale(ds, smooth=5)
    scaled_steps = {s: {"skip": True} for s in EARLY}
    scaled_steps["jump"] = {"integration_scale": scale.values}
    scaled_ri = _compute(detector1(group, sim.refs_dir, steps=scaled_steps).rateints)
    cfn_ri = _compute(detector1(ds, sim.refs_dir, steps={"clean_flicker_noise": {"skip": False,
                                                                                   "user_mask": mask}}).rateints)
    rateints_ri = _compute(A.correct_rateints_1overf(raw, mask))
    variants = {"(a) no 1/f correction": raw,
                "(b) group level, subtract_group_1overf": group_ri,
                "(b') group level, clean_flicker_noise step": cfn_ri,
                "(c) rateints level only": rateints_ri,
                "(d) as (b), jump with integration_scale": scaled_ri}
    metrics = {k: white_light_metrics(v, trace1, truth) for k, v in variants.items()}
    return {"sim": sim, "truth": truth, "raw": raw, "mask": mask, "trace1": trace1, "metrics": metrics,
            "variants": variants, "scale": scale}


def test_noise_budget(tso):
    m = tso["metrics"]
    print(f"\nwhite-light out-of-transit scatter vs photon + read noise (from err), "
          f"{next(iter(m.values()))['n_oot']} baseline integrations, aperture ±{RADIUS:g} px:")
    for k, v in m.items():
        print(f"  {k:44s} ratio {v['ratio']:.3f}  scatter {v['scatter_ppm']:6.1f} ppm  "
              f"expected {v['expected_ppm']:5.1f} ppm  depth {v['depth'] * 1e6:7.0f} ± {v['depth_err'] * 1e6:3.0f} ppm")
    # the 1/f noise is really there: uncorrected white light well above the white-noise budget
    assert m["(a) no 1/f correction"]["ratio"] > 1.25
    # acceptance: corrected white light within 10 % of the photon + read noise budget
    assert m["(b) group level, subtract_group_1overf"]["ratio"] <= 1.1
    assert m["(c) rateints level only"]["ratio"] <= 1.2


def test_white_light_depth(tso):
    injected = tso["truth"].attrs["transit_depth"]
    assert injected == 0.015
    pulls = {}
    for key in ("(b) group level, subtract_group_1overf", "(d) as (b), jump with integration_scale"):
        m = tso["metrics"][key]
        pulls[key] = (m["depth"] - injected) / m["depth_err"]
        print(f"\ndepth {key[:3]}: {m['depth'] * 1e6:.0f} ± {m['depth_err'] * 1e6:.0f} ppm, injected "
              f"{injected * 1e6:.0f} ppm: pull {pulls[key]:+.2f}σ ({m['n_full']} integrations in "
              f"full transit, {m['n_oot']} out)")
    # σ: the in/out means' errors from err, scaled up by the measured scatter ratio when > 1.
    # Acceptance (1σ) with jump's integration_scale; the official comparison (b) is ≈ 30 ppm
    # shallow (module docstring) and held to 3σ
    assert abs(pulls["(d) as (b), jump with integration_scale"]) <= 1.0
    assert abs(pulls["(b) group level, subtract_group_1overf"]) <= 3.0
    # every variant recovers the depth: 1/f adds noise, not bias (3σ)
    for k, v in tso["metrics"].items():
        assert abs(v["depth"] - injected) <= 3 * v["depth_err"], (k, v)


def test_integration_scale_follows_the_transit(tso):
    """The scale from the raw ramps against the injected light curve (relative flux).

    Measured (seed 2024): residual rms 5e-4; in full transit the scale drops by 1.45 % where
    the flux drops by 1.5 % (the raw ramps are not linearity-corrected: M ≈ L + c₂L² compresses
    the contrast).  Jump only needs the level to ≪ the depth: 5e-4 moves a 700 DN/s pixel's
    differences by 0.04σ, against 1.2σ without the scale.
    """
    scale = tso["scale"].values
    rf = tso["truth"]["relative_flux"].values
    assert scale.shape == rf.shape and tso["scale"].attrs["pixels"] > 1000
    oot, full = rf == 1.0, rf == rf.min()
    contrast = 1.0 - scale[full].mean() / scale[oot].mean()
    assert abs(contrast - 0.015) < 0.1 * 0.015, contrast
    resid = scale / scale[oot].mean() - rf
    assert np.sqrt(np.mean(resid ** 2)) < 1e-3


def test_jump_pooled_median_flags_dips_in_transit():
    """The cause of the shallow depth, on hand-made ramps (gain 1, no read noise).

    30 integrations × 9 groups, differences of 10⁴ DN (σ = √10⁴ = 100 DN) and 1.5 % less in
    integrations 10–19 (a transit); a small ±3 DN dither keeps the values distinct.  One
    difference is 300 DN (3σ) low: in pixel 0 in transit, in pixel 1 out of transit.  The
    median is pooled over every integration (≈ 10⁴ DN), so the in-transit dip deviates by
    150 + 300 DN = 4.5σ > 4σ and is flagged, the same dip out of transit by 3σ and is not.
    Measured against each integration's own level (ramps divided by the relative flux, or the
    step's ``integration_scale``) the two dips are alike and neither is a jump.
    """
    nint, ng = 30, 9
    level = np.ones(nint)
    level[10:20] = 0.985
    dither = (np.arange(nint * (ng - 1)).reshape(nint, ng - 1) % 7) - 3.0
    diffs = np.repeat((1e4 * level[:, None] + dither)[..., None], 2, axis=-1)  # (int, diff, x)
    diffs[15, 4, 0] -= 300.0
    diffs[5, 4, 1] -= 300.0
    ramps = np.zeros((nint, ng, 1, 2))
    ramps[:, 1:, 0, :] = np.cumsum(diffs, axis=1)
    attrs = make_attrs(NINTS=nint, NGROUPS=ng, SUBSIZE1=2, SUBSIZE2=1)
    refs = dict(gain=np.ones((1, 2), np.float32), readnoise=np.zeros((1, 2), np.float32))
    out = jump(make_exposure((1000.0 + ramps).astype(np.float32), attrs), **refs)
    # (integration, group, y, x): group 5 = the difference between groups 4 and 5
    assert np.argwhere(out["groupdq"].values & dq.JUMP_DET).tolist() == [[15, 5, 0, 0]]
    scaled = 1000.0 + ramps / level[:, None, None, None]
    out = jump(make_exposure(scaled.astype(np.float32), attrs), **refs)
    assert not (out["groupdq"].values & dq.JUMP_DET).any()
    # the same through the step's integration_scale (one value per integration of the exposure)
    out = jump(make_exposure((1000.0 + ramps).astype(np.float32), attrs), integration_scale=level, **refs)
    assert not (out["groupdq"].values & dq.JUMP_DET).any()
    # and a real 20σ jump is still flagged with the scale (its neighbour, pixel 0, with it)
    ramps[12, 6:, 0, 1] += 2000.0
    out = jump(make_exposure((1000.0 + ramps).astype(np.float32), attrs), integration_scale=level, **refs)
    assert np.argwhere(out["groupdq"].values & dq.JUMP_DET).tolist() == [[12, 6, 0, 0], [12, 6, 0, 1]]


_OFFICIAL_JUMP = pytest.mark.xfail(
    strict=True, reason="the official jump compares each difference with a median pooled over the "
    "segment's integrations, so dips of in-transit ramps are flagged more often (module docstring)")


@pytest.mark.parametrize("variant", [
    pytest.param("(b) group level, subtract_group_1overf", marks=_OFFICIAL_JUMP),
    "(d) as (b), jump with integration_scale"])
def test_false_jumps_do_not_follow_the_transit(tso, variant):
    """JUMP_DET without a cosmic ray within one pixel, pixels > 400 DN/s.

    Out of transit the rate sets the expectation; in full transit the count must agree with it
    within 3 Poisson σ.  Measured (seed 2024): 237 in full transit (0.39 %) where the
    out-of-transit rate (163, 0.12 %) expects 72 ± 8; without 1/f, seeds 1–3 give 0.36–0.39 %
    against 0.12 %.
    """
    truth = tso["truth"]
    ri = tso["variants"][variant]
    flagged = (ri["dq"].values & dq.JUMP_DET) != 0
    ny, nx = flagged.shape[1:]
    near_cr = np.zeros_like(flagged)
    i, y, x = (truth[k].values for k in ("jump_integration", "jump_y", "jump_x"))
    for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):  # the hit and its 4 neighbours
        near_cr[i, np.clip(y + dy, 0, ny - 1), np.clip(x + dx, 0, nx - 1)] = True
    false = flagged & ~near_cr
    rf = truth["relative_flux"].values
    bright = truth["source_rate"].values > 400.0
    n_oot, n_full = false[rf == 1.0][:, bright].sum(), false[rf == rf.min()][:, bright].sum()
    tot_oot, tot_full = (rf == 1.0).sum() * bright.sum(), (rf == rf.min()).sum() * bright.sum()
    expected = n_oot / tot_oot * tot_full
    print(f"\nfalse jumps above 400 DN/s: out of transit {n_oot}/{tot_oot} "
          f"({n_oot / tot_oot:.3%}), full transit {n_full}/{tot_full} ({n_full / tot_full:.3%}; "
          f"{expected:.0f} expected)")
    assert n_full <= expected + 3 * np.sqrt(expected)


def test_trapezoid_fit_recovers_depth_and_timing(tso):
    truth = tso["truth"]
    ri = tso["variants"]["(b) group level, subtract_group_1overf"]
    rf = truth["relative_flux"].values
    spec = A.extract_aperture(ri, tso["trace1"], radius=RADIUS)
    spec = spec.isel(x=np.flatnonzero(np.isfinite(spec["flux"].values).all(axis=0)))
    wl = A.white_light(spec, out_of_transit=rf == 1.0, filter_size=1)
    t = (truth["int_mid_MJD_UTC"].values - truth["int_mid_MJD_UTC"].values[0]) * 86400.0
    t0 = (truth.attrs["transit_mid_MJD_UTC"] - truth["int_mid_MJD_UTC"].values[0]) * 86400.0
    fit = A.fit_transit(wl["flux"], wl["flux_err"], times=t, t0=t0, duration=truth.attrs["transit_duration_s"],
                        ingress=truth.attrs["transit_ingress_s"])
    err = float(fit["depth_err"]) * max(1.0, float(np.sqrt(fit["chi2"] / (t.size - 2))))
    assert abs(float(fit["depth"]) - 0.015) <= 2 * err
    # the free box search puts the mid-transit within a cadence of the truth
    box = A.fit_transit(wl["flux"], wl["flux_err"], times=t)
    assert abs(float(box["t0"]) - t0) <= np.median(np.diff(t))


def test_lazy_equals_eager_on_pipeline_products(tso):
    raw = tso["raw"].isel(integration=slice(0, 12))
    mask = tso["mask"]
    lazy = raw.assign({k: v.chunk({"integration": 5}) for k, v in raw.data_vars.items()})
    rf = tso["truth"]["relative_flux"].values[:12]
    oot = rf == 1.0
    with forbid_compute():
        t_l = A.trace_order(lazy["data"], **ORDERS[1])
        c_l = A.correct_rateints_1overf(lazy, mask)
        s_l = A.extract_aperture(c_l, tso["trace1"], radius=RADIUS)
        w_l = A.white_light(s_l, out_of_transit=oot, filter_size=1)
        f_l = A.flags_per_integration(lazy["dq"])
        p_l = A.column_background_psd(lazy["data"].isel(integration=slice(0, 2)), mask, fastaxis=-2,
                                      n_frequencies=50)
    t_e = A.trace_order(raw["data"], **ORDERS[1])
    c_e = A.correct_rateints_1overf(raw, mask)
    s_e = A.extract_aperture(c_e, tso["trace1"], radius=RADIUS)
    w_e = A.white_light(s_e, out_of_transit=oot, filter_size=1)
    with dask.config.set(scheduler="synchronous"):
        xr.testing.assert_allclose(t_l.compute(), t_e)
        xr.testing.assert_allclose(c_l["data"].compute(), c_e["data"])
        xr.testing.assert_allclose(w_l["flux"].compute(), w_e["flux"])
        xr.testing.assert_equal(f_l.compute(), A.flags_per_integration(raw["dq"]))
        xr.testing.assert_allclose(p_l.compute(), A.column_background_psd(
            raw["data"].isel(integration=slice(0, 2)), mask, fastaxis=-2, n_frequencies=50))
    assert int(f_l["JUMP_DET"].sum().compute()) > 0  # the comparison is not between zeros
