"""ramp_fit wrapper: laziness, chunking changes nothing, segments vs exposure statistics,
products (dims, dtypes, coords, attrs), parameters; parity with the official RampFitStep."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from daskramp import dq
from daskramp.dims import make_exposure
from daskramp.kernels import ramp_fit as kernel
from daskramp.steps.ramp_fit import Params, nothing_to_fit, ramp_fit
from daskramp.testing.ramps import forbid_compute, make_attrs

VARS = ("data", "err", "var_poisson", "var_rnoise", "dq")


def exposure(data, groupdq=None, *, segment=None, pixeldq=None, zeroframe=None, dark=None, **attrs):
    nint, ngroup, ny, nx = data.shape
    a = make_attrs(NINTS=nint, NGROUPS=ngroup, SUBSIZE1=nx, SUBSIZE2=ny, **attrs)
    ds = make_exposure(
        data, a, groupdq=groupdq, segment=segment, pixeldq=pixeldq, zeroframe=zeroframe,
        int_times={"int_mid_MJD_UTC": 60000.0 + np.arange(nint) / 1000},
    )
    if dark is not None:
        ds["average_dark_current"] = (("y", "x"), dark)
    return ds


def chunked(ds, **chunks):
    """Dask-backed data variables with numpy coordinates (as read from a store)."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        out[name] = var.chunk({d: c for d, c in chunks.items() if d in var.dims})
    return out


def random_exposure(seed, nint=4, ng=7, ny=5, nx=6, segment=None, chargeloss=True):
    rng = np.random.default_rng(seed)
    rate = rng.uniform(-2, 300, (ny, nx))
    data = rate * 10 * (np.arange(ng)[:, None, None] + 1) + rng.normal(0, 8, (nint, ng, ny, nx))
    cl = dq.CHARGELOSS | dq.DO_NOT_USE if chargeloss else 0
    flags = np.array([0, dq.JUMP_DET, dq.SATURATED, dq.DO_NOT_USE, dq.PERSISTENCE, cl], np.uint8)
    q = flags[rng.choice(6, size=data.shape, p=[0.8, 0.06, 0.05, 0.04, 0.03, 0.02])]
    pdq = rng.choice(np.array([0, 0, 0, 1, 4096], np.uint32), size=(ny, nx))
    gain = rng.uniform(1, 3, (ny, nx)).astype(np.float32)
    rn = rng.uniform(5, 20, (ny, nx)).astype(np.float32)
    dark = rng.uniform(0, 0.5, (ny, nx)).astype(np.float32)
    ds = exposure(data.astype(np.float32), q, segment=segment, pixeldq=pdq, dark=dark)
    return ds, gain, rn


def assert_same(a: xr.Dataset, b: xr.Dataset, rtol=0.0):
    for v in a.data_vars:
        if rtol and v != "dq":
            np.testing.assert_allclose(a[v].values, b[v].values, rtol=rtol, equal_nan=True, err_msg=v)
        else:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


def test_products_dims_dtypes_coords_attrs():
    ds, gain, rn = random_exposure(0)
    gain_da = xr.DataArray(gain, dims=("y", "x"), attrs={"GAINFACT": 1.5})
    rate, ints = ramp_fit(ds, gain=gain_da, readnoise=rn, save_intercepts=True)
    assert rate["data"].dims == ("y", "x") and ints["data"].dims == ("integration", "y", "x")
    for v in VARS:
        want = np.uint32 if v == "dq" else np.float32
        assert rate[v].dtype == want and ints[v].dtype == want
    assert ints["intercept"].dtype == np.float32
    np.testing.assert_array_equal(ints["int_mid_MJD_UTC"], ds["int_mid_MJD_UTC"])
    np.testing.assert_array_equal(ints["segment"], ds["segment"])
    np.testing.assert_array_equal(rate["x"], ds["x"])
    for out in (rate, ints):
        assert out.attrs["BUNIT"] == "DN/s" and out.attrs["S_RAMP"] == "COMPLETE"
        assert out.attrs["GAINFACT"] == 1.5
        assert out.attrs["INSTRUME"] == "NIRISS"
    assert rate["data"].attrs["units"] == "DN/s"


def test_matches_kernel_on_whole_array():
    ds, gain, rn = random_exposure(1)
    rate, ints = ramp_fit(ds, gain=gain, readnoise=rn)
    f = kernel.ramp_fit(
        ds.data.values, ds.groupdq.values, ds.pixeldq.values, gain, rn,
        ds.average_dark_current.values, nframes=1, tframe=10.0, tgroup=10.0,
    )
    np.testing.assert_array_equal(ints["data"].values, f[0].astype(np.float32))
    r = kernel.combine_rate(kernel.rate_partials(f), ds.pixeldq.values, gain, nints=4)
    np.testing.assert_array_equal(rate["var_poisson"].values, r[2].astype(np.float32))
    np.testing.assert_array_equal(rate["dq"].values, r[4].astype(np.uint32))


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    xchunk=st.integers(1, 6),
    ychunk=st.integers(1, 5),
    ichunk=st.integers(1, 4),
    two_segments=st.booleans(),
)
def test_chunked_equals_numpy(seed, xchunk, ychunk, ichunk, two_segments):
    seg = [1, 1, 2, 2] if two_segments else None
    ds, gain, rn = random_exposure(seed, segment=seg)
    whole_rate, whole_ints = ramp_fit(ds, gain=gain, readnoise=rn)
    lazy = chunked(ds, integration=ichunk, y=ychunk, x=xchunk)
    rate, ints = ramp_fit(lazy, gain=gain, readnoise=rn)
    rate, ints = dask.compute(rate, ints, scheduler="synchronous")
    assert_same(ints, whole_ints)
    # the rate sums partials in a different order (tree reduction): float64 rounding only
    assert_same(rate, whole_rate, rtol=1e-6)


def test_building_the_graph_computes_nothing():
    ds, gain, rn = random_exposure(2, segment=[1, 1, 2, 2])
    lazy = chunked(ds, integration=1, x=3)
    with forbid_compute():
        rate, ints = ramp_fit(lazy, gain=gain, readnoise=rn, save_intercepts=True)
        assert isinstance(rate["data"].data, da.Array)
        assert isinstance(ints["data"].data, da.Array)
        flag = nothing_to_fit(lazy)
        assert isinstance(flag.data, da.Array)


def test_inputs_not_mutated():
    ds, gain, rn = random_exposure(3)
    before = ds.copy(deep=True)
    g0, r0 = gain.copy(), rn.copy()
    ramp_fit(ds, gain=gain, readnoise=rn, firstgroup=1, suppress_one_group=False)
    xr.testing.assert_identical(ds, before)
    np.testing.assert_array_equal(gain, g0)
    np.testing.assert_array_equal(rn, r0)


def test_segments_vs_exposure_statistics():
    # 2 segments × 2 integrations, 6 groups, noiseless: segment 1 rate 5, segment 2 rate 15.
    # Slopes and read noise do not depend on R̃; var_poisson = R̃/(10·2·5) does:
    # per segment R̃ = 5 → 0.05 and 15 → 0.15; pooled R̃ = 10 → 0.1 everywhere.
    rates = np.array([5.0, 5.0, 15.0, 15.0])
    data = (rates[:, None] * 10 * (np.arange(6) + 1))[:, :, None, None] * np.ones((1, 1, 2, 3))
    ds = exposure(data.astype(np.float32), segment=[1, 1, 2, 2])
    gain, rn = np.full((2, 3), 2.0, np.float32), np.full((2, 3), 10.0, np.float32)
    out = {}
    for scope in ("segment", "exposure"):
        for src in (ds, chunked(ds, integration=1)):
            out[scope, src is ds] = ramp_fit(src, gain=gain, readnoise=rn, stats_scope=scope)
    for scope in ("segment", "exposure"):
        assert_same(out[scope, False][1].compute(), out[scope, True][1])
    seg_rate, seg_ints = out["segment", True]
    exp_rate, exp_ints = out["exposure", True]
    np.testing.assert_allclose(seg_ints["data"][:, 0, 0], rates, rtol=1e-6)
    np.testing.assert_array_equal(seg_ints["data"], exp_ints["data"])
    np.testing.assert_array_equal(seg_ints["var_rnoise"], exp_ints["var_rnoise"])
    np.testing.assert_allclose(seg_ints["var_poisson"][:, 0, 0], [0.05, 0.05, 0.15, 0.15], rtol=1e-6)
    np.testing.assert_allclose(exp_ints["var_poisson"][:, 0, 0], [0.1] * 4, rtol=1e-6)
    # rate: read-noise weights are equal → mean slope 10; vr = (6/210)/4
    for r in (seg_rate, exp_rate):
        np.testing.assert_allclose(r["data"], 10.0, rtol=1e-6)
        np.testing.assert_allclose(r["var_rnoise"], 6 / 210 / 4, rtol=1e-6)
    np.testing.assert_allclose(seg_rate["var_poisson"], 1 / (2 / 0.05 + 2 / 0.15), rtol=1e-6)
    np.testing.assert_allclose(exp_rate["var_poisson"], 0.1 / 4, rtol=1e-6)


def test_one_segment_rate_equals_kernel_rate_of_whole_block():
    ds, gain, rn = random_exposure(4)
    rate, _ = ramp_fit(chunked(ds, integration=2), gain=gain, readnoise=rn)
    f = kernel.ramp_fit(
        ds.data.values, ds.groupdq.values, ds.pixeldq.values, gain, rn,
        ds.average_dark_current.values, nframes=1, tframe=10.0, tgroup=10.0,
    )
    r = kernel.combine_rate(kernel.rate_partials(f), ds.pixeldq.values, gain, nints=4)
    np.testing.assert_allclose(rate["data"].values, r[0].astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(rate["dq"].values, r[4])


def test_dark_current_and_zeroframe_from_dataset():
    # spec 09 §2: dark 0.5 → var_poisson (5 + 0.5)/(10·2·5); ZEROFRAME 300 DN with all groups
    # saturated, NFRAMES 4, TFRAME 10: slope 30 only with suppress_one_group=False
    data = (5.0 * 10 * (np.arange(6) + 1))[None, :, None, None] * np.ones((1, 1, 1, 2))
    ds = exposure(data.astype(np.float32), dark=np.full((1, 2), 0.5, np.float32))
    gain, rn = np.full((1, 2), 2.0, np.float32), np.full((1, 2), 10.0, np.float32)
    rate, _ = ramp_fit(ds, gain=gain, readnoise=rn)
    np.testing.assert_allclose(rate["var_poisson"], 0.055, rtol=1e-6)

    data = np.full((1, 3, 1, 2), 1000.0, np.float32)
    q = np.zeros(data.shape, np.uint8)
    q[..., 0] = dq.SATURATED  # pixel 0 saturated, pixel 1 clean
    zf = np.full((1, 1, 2), 300.0, np.float32)
    ds = exposure(data, q, zeroframe=zf, NFRAMES=4, TFRAME=10.0, ZEROFRAM=True)
    rate, ints = ramp_fit(ds, gain=gain, readnoise=rn, suppress_one_group=False)
    assert float(rate["data"][0, 0]) == pytest.approx(30.0)
    assert float(rate["var_poisson"][0, 0]) == pytest.approx(1.5)
    assert float(rate["var_rnoise"][0, 0]) == pytest.approx(0.25)
    assert int(rate["dq"][0, 0]) == 2
    rate, _ = ramp_fit(ds, gain=gain, readnoise=rn)
    assert np.isnan(rate["data"][0, 0]) and int(rate["dq"][0, 0]) == 3
    # ZEROFRAM = F: the zeroframe variable is ignored
    ds.attrs["ZEROFRAM"] = False
    rate, _ = ramp_fit(ds, gain=gain, readnoise=rn, suppress_one_group=False)
    assert np.isnan(rate["data"][0, 0])


def test_parameters():
    assert Params() == Params(
        algorithm="OLS_C", suppress_one_group=True, firstgroup=None, lastgroup=None,
        save_opt=False, maximum_cores="1", skip=False, save_intercepts=False,
    )
    ds, gain, rn = random_exposure(5)
    assert ramp_fit(ds, gain=gain, readnoise=rn, skip=True) == (None, None)
    with pytest.raises(NotImplementedError, match="save_opt"):
        ramp_fit(ds, gain=gain, readnoise=rn, save_opt=True)
    with pytest.raises(TypeError):
        ramp_fit(ds, gain=gain, readnoise=rn, weighting="unweighted")
    rate, ints = ramp_fit(ds, gain=gain, readnoise=rn, algorithm="OLS_C", maximum_cores="all")
    assert "intercept" not in ints
    with pytest.raises(ValueError, match="gain"):
        ramp_fit(ds, gain=gain[:-1], readnoise=rn)
    with pytest.raises(ValueError, match="stats_scope"):
        ramp_fit(ds, gain=gain, readnoise=rn, stats_scope="integration")


def test_nothing_to_fit():
    data = np.ones((2, 3, 1, 2), np.float32)
    q = np.zeros(data.shape, np.uint8)
    q[:, 0, 0, 0] = dq.SATURATED
    ds = exposure(data, q)
    assert not bool(nothing_to_fit(ds))
    q[:, 0] = dq.SATURATED
    assert bool(nothing_to_fit(exposure(data, q)))


# --- parity with the official step (jwst 3.0) ---------------------------------------------

PARITY_CASES = {
    # default parameters, jumps/saturation/DNU/persistence/CHARGELOSS, pixeldq, bad gain
    "flags": dict(nint=3, ng=8, nframes=1, groupgap=0, tframe=10.0, params={}),
    # NFRAMES 4 with a gap, one-group ramps and ZEROFRAME kept, a group range
    "zeroframe": dict(
        nint=2, ng=5, nframes=4, groupgap=1, tframe=10.736, zeroframe=True,
        params=dict(suppress_one_group=False),
    ),
    "groups": dict(nint=4, ng=9, nframes=2, groupgap=0, tframe=5.49, params=dict(firstgroup=1, lastgroup=7)),
}


def _parity_inputs(case, seed):
    c = PARITY_CASES[case]
    rng = np.random.default_rng(seed)
    nint, ng, ny, nx = c["nint"], c["ng"], 6, 7
    tgroup = c["tframe"] * (c["nframes"] + c["groupgap"])
    rate = rng.uniform(-1, 400, (ny, nx))
    t = tgroup * (np.arange(ng) + 1.0)
    data = 1000 + rate * t[:, None, None] + rng.normal(0, 12, (nint, ng, ny, nx))
    jumps = rng.random(data.shape) < 0.05
    data += np.cumsum(jumps * rng.uniform(100, 800, data.shape), axis=1)
    q = np.zeros(data.shape, np.uint8)
    q[jumps] |= dq.JUMP_DET
    sat_from = rng.integers(0, ng + 3, (nint, ny, nx))
    q[np.arange(ng)[None, :, None, None] >= sat_from[:, None]] |= dq.SATURATED
    q[rng.random(data.shape) < 0.03] |= dq.DO_NOT_USE
    q[rng.random(data.shape) < 0.03] |= dq.PERSISTENCE
    q[rng.random(data.shape) < 0.03] |= dq.CHARGELOSS | dq.DO_NOT_USE
    pdq = rng.choice(np.array([0] * 8 + [1, 2, 2048], np.uint32), size=(ny, nx))
    gain = rng.uniform(1.2, 2.5, (ny, nx)).astype(np.float32)
    gain[1, 1] = 0.0
    rn = rng.uniform(6, 20, (ny, nx)).astype(np.float32)
    dark = rng.uniform(0, 0.3, (ny, nx)).astype(np.float32)
    zf = None
    if c.get("zeroframe"):
        zf = (1000 + rate * c["tframe"] + rng.normal(0, 12, (nint, ny, nx))).astype(np.float32)
        zf[rng.random(zf.shape) < 0.2] = 0.0
    attrs = dict(NFRAMES=c["nframes"], GROUPGAP=c["groupgap"], TFRAME=c["tframe"], TGROUP=tgroup,
                 ZEROFRAM=zf is not None)
    return data.astype(np.float32), q, pdq, gain, rn, dark, zf, attrs, c["params"]


def _official(tmp_path, data, q, pdq, gain, rn, dark, zf, attrs, params):
    from daskramp.testing.official import configure_offline

    configure_offline(tmp_path / "crds")
    from astropy.utils import iers

    iers.conf.auto_download = False
    from jwst.ramp_fitting import RampFitStep
    from stdatamodels.jwst import datamodels

    nint, ng, ny, nx = data.shape
    kw = dict(data=data.copy(), groupdq=q.copy(), pixeldq=pdq.copy(), average_dark_current=dark.copy())
    if zf is not None:
        kw["zeroframe"] = zf.copy()
    m = datamodels.RampModel(**kw)
    m.meta.instrument.name, m.meta.instrument.detector = "NIRISS", "NIS"
    m.meta.exposure.type, m.meta.exposure.readpatt = "NIS_SOSS", "NISRAPID"
    m.meta.subarray.name = "SUBSTRIP256"
    m.meta.subarray.xstart, m.meta.subarray.ystart = 1, 1
    m.meta.subarray.xsize, m.meta.subarray.ysize = nx, ny
    m.meta.subarray.fastaxis, m.meta.subarray.slowaxis = -2, -1
    e = m.meta.exposure
    e.nints, e.ngroups, e.nframes, e.groupgap = nint, ng, attrs["NFRAMES"], attrs["GROUPGAP"]
    e.frame_time, e.group_time, e.zero_frame = attrs["TFRAME"], attrs["TGROUP"], zf is not None
    refs = {}
    for name, model, arr in (("gain", datamodels.GainModel, gain), ("readnoise", datamodels.ReadnoiseModel, rn)):
        r = model(data=arr.copy())
        r.meta.instrument.name, r.meta.instrument.detector = "NIRISS", "NIS"
        r.meta.subarray.xstart, r.meta.subarray.ystart = 1, 1
        r.meta.subarray.xsize, r.meta.subarray.ysize = nx, ny
        refs[name] = str(tmp_path / f"{name}.fits")
        r.save(refs[name])
    rate, ints = RampFitStep.call(
        m, override_gain=refs["gain"], override_readnoise=refs["readnoise"], **params
    )
    get = lambda mdl: {"data": mdl.data, "err": mdl.err, "var_poisson": mdl.var_poisson,  # noqa: E731
                       "var_rnoise": mdl.var_rnoise, "dq": mdl.dq}
    return get(rate), get(ints)


def max_rel_diff(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(ours)
    d = np.abs(ours[ok] - theirs[ok]) / np.maximum(np.abs(theirs[ok]), 1e-30)
    d[(ours[ok] == theirs[ok])] = 0
    return float(d.max()) if d.size else 0.0


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_official_step(tmp_path, case, seed):
    pytest.importorskip("jwst")
    data, q, pdq, gain, rn, dark, zf, attrs, params = _parity_inputs(case, seed)
    ref_rate, ref_ints = _official(tmp_path, data, q, pdq, gain, rn, dark, zf, attrs, params)
    ds = exposure(data, q, pixeldq=pdq, zeroframe=zf, dark=dark, **attrs)
    rate, ints = ramp_fit(chunked(ds, x=3), gain=gain, readnoise=rn, **params)
    worst = {}
    for name, ours, theirs in (("rate", rate.compute(), ref_rate), ("rateints", ints.compute(), ref_ints)):
        np.testing.assert_array_equal(ours["dq"].values, theirs["dq"], err_msg=f"{name} dq")
        for v in ("data", "err", "var_poisson", "var_rnoise"):
            worst[f"{name}.{v}"] = max_rel_diff(ours[v].values, theirs[v])
    print(case, seed, "max relative difference", max(worst.values()), worst)
    assert max(worst.values()) < 1e-5, worst


@pytest.mark.parametrize("scope", ["segment", "exposure"])
def test_ramp_products_equal_block_products_of_fields(scope):
    """The fused tasks' fit-to-products path equals the fields path, segment by segment."""
    from daskramp.steps.ramp_fit import block_products, ramp_fields, ramp_products

    ds, gain, rn = random_exposure(11, nint=5, segment=[1, 1, 2, 2, 2])
    got = ramp_products(ds, gain=gain, readnoise=rn, stats_scope=scope, save_intercepts=True)
    fields = ramp_fields(ds, gain=gain, readnoise=rn, stats_scope=scope).values
    want = block_products(fields, save_intercepts=True)
    assert set(got) == set(want)
    for name in want:
        if name == "rate_terms":
            # summed per segment, then over segments: the same terms in another order
            np.testing.assert_allclose(got[name], want[name], rtol=1e-13)
        else:
            np.testing.assert_array_equal(got[name], want[name])
    # the pooled and per-segment median rates differ: the test can tell the scopes apart
    other = ramp_products(ds, gain=gain, readnoise=rn,
                          stats_scope="exposure" if scope == "segment" else "segment")
    assert not np.array_equal(other["var_poisson"], got["var_poisson"], equal_nan=True)


def test_ramp_products_refuses_lazy_exposures():
    from daskramp.steps.ramp_fit import ramp_products

    ds, gain, rn = random_exposure(2)
    with pytest.raises(TypeError, match="in-memory windows.*dask-backed"):
        ramp_products(chunked(ds, integration=2), gain=gain, readnoise=rn)


def _in_order(values):
    acc = np.zeros(values.shape[1:])
    for block in values:
        acc = acc + np.where(np.isnan(block), 0.0, block)
    return acc


def _rate_terms(n, seed=3):
    rng = np.random.default_rng(seed)
    # not integers: a different order of the additions would show in the last bits
    values = rng.normal(0, 1, (n, 3, 4, 5)) * 10.0 ** rng.integers(-8, 8, (n, 3, 4, 5))
    values[min(2, n - 1), 1, 0, 0] = np.nan
    values[:, 2, 3, 4] = np.nan  # a pixel with no term at all sums to 0
    values[0, 0, 1, 1] = np.inf
    return values


def test_rate_terms_of_many_blocks_are_added_in_order():
    """Summing the rate terms over 16 blocks (segments) never waits for all of them in one
    task, and adds the blocks one after another (NaN as 0), lazy or not."""
    from daskramp.steps.ramp_fit import _sum_blocks

    values = _rate_terms(16)
    terms = xr.DataArray(da.from_array(values, chunks=(1, 3, (2, 2), 5)),
                         dims=("block", "term", "y", "x"), coords={"x": np.arange(5)})
    with forbid_compute():
        total = _sum_blocks(terms)
    assert total.dims == ("term", "y", "x") and "x" in total.coords
    graph = dict(total.data.__dask_graph__())
    widest = max(len(dask.core.get_dependencies(graph, k)) for k in graph)
    assert widest <= 2
    want = _in_order(values)
    assert not np.array_equal(want, np.nansum(values[::-1], axis=0))  # the order shows
    np.testing.assert_array_equal(total.values, want)
    np.testing.assert_array_equal(_sum_blocks(terms.compute()).values, want)
    assert total.values[2, 3, 4] == 0.0 and total.values[0, 1, 1] == np.inf


@pytest.mark.parametrize("n, split", [(1, 0), (2, 1), (5, 2), (16, 1), (16, 15), (16, 8)])
def test_rate_terms_continued_from_a_saved_sum_equal_one_graph(n, split):
    """The segment-by-segment path's sum (the first blocks summed and saved, the rest added
    to it one at a time, :mod:`daskramp.engine.submit`) equals the one graph's, bit for bit."""
    from daskramp.kernels.ramp_fit import add_block_terms
    from daskramp.steps.ramp_fit import fold_block_terms

    values = _rate_terms(n, seed=n + split)
    whole = fold_block_terms(da.from_array(values, chunks=(1, 3, (3, 1), (2, 3)))).compute()
    saved = None
    for k in range(split):
        saved = add_block_terms(saved, values[k:k + 1])
    saved = None if saved is None else saved.copy()  # as read back from its file
    for k in range(split, n):
        saved = add_block_terms(saved, values[k:k + 1])
    assert saved.shape == (1, 3, 4, 5)
    np.testing.assert_array_equal(saved[0], whole)
    np.testing.assert_array_equal(whole, _in_order(values))
