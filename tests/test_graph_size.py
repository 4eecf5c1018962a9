"""Reference arrays stay out of the task graphs.

A reference set read from files has a recipe (:meth:`RefSet.recipe`): the graphs carry it and
the workers read (and cut) the files again, instead of every task holding the arrays.  In the
step-by-step layout the wrappers get the arrays as dask arrays (:meth:`RefSet.lazy`); the
fused layout ships the recipe; the DARK builder's set with the MASK's DO_NOT_USE cleared
records the cleared bit in its recipe.  With a SOSS strip of 256 × 2048 pixels the references
weigh tens of MB: before this, ``distributed`` warned of 16–40 MiB graphs.  The products must
be bit for bit those of the numpy references.
"""

from __future__ import annotations

import io

import cloudpickle
import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from daskramp import darks, dq
from daskramp.darks import make_dark, strip_mask_do_not_use
from daskramp.engine import stages, stepwise
from daskramp.io import open_exposure
from daskramp.io.refs import RefSet
from daskramp.pipeline import detector1
from daskramp.simulate import simulate
from daskramp.testing.ramps import forbid_compute

NX, NY = 2048, 256
#: a graph must pickle to less than this and hold no numpy array larger than ARRAY_LIMIT
#: (one 256 × 2048 reference image is 2 MiB)
GRAPH_LIMIT = 1 << 20
ARRAY_LIMIT = 100_000
PRODUCT_VARS = ("data", "dq", "err", "var_poisson", "var_rnoise")
#: after-jump flagging (the whole-subarray gain median) and a saturation scale on top of the
#: defaults: every reference-using branch of the wrappers
STEPS = {"jump": {"after_jump_flag_dn1": 10.0, "after_jump_flag_time1": 20.0},
         "saturation": {"saturation_scale": 0.9}}


@pytest.fixture(scope="module")
def soss(tmp_path_factory):
    """1 segment × 2 integrations × 4 groups × 256 × 2048 (a SOSS strip, its references
    ≈ 40 MB once cut)."""
    out = tmp_path_factory.mktemp("graph_size")
    return simulate(out, preset="niriss-soss", nints=2, ngroups=4, nx=NX, ny=NY, seed=1)


@pytest.fixture(scope="module")
def refs(soss):
    ds = open_exposure(soss.uncal_files)
    return RefSet.from_dir(soss.refs_dir, ds.attrs)


def _graph(*collections) -> dict:
    out: dict = {}
    for c in collections:
        out.update(dict(c.__dask_graph__()))
    return out


class _ArrayFinder(cloudpickle.CloudPickler):
    """Pickles like ``cloudpickle.dumps`` and notes every numpy array larger than
    :data:`ARRAY_LIMIT` it meets, wherever it sits in a task."""

    def __init__(self, file, found: list, images_only: bool):
        super().__init__(file)
        self.found = found
        self.images_only = images_only

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray) and obj.nbytes > ARRAY_LIMIT and (
                not self.images_only or obj.shape[-2:] == (NY, NX)):
            self.found.append((obj.shape, str(obj.dtype)))
        return super().reducer_override(obj)


def _assert_small(graph: dict, what: str, *, images_only: bool = False) -> int:
    """The graph pickles to less than :data:`GRAPH_LIMIT` and holds no numpy array larger
    than :data:`ARRAY_LIMIT` (no array of a reference; ``images_only``: no such array with
    the image shape); returns its pickled size."""
    buf, found = io.BytesIO(), []
    _ArrayFinder(buf, found, images_only).dump(graph)
    size = len(buf.getvalue())
    assert not found, f"{what}: arrays inside the graph {found}"
    assert size < GRAPH_LIMIT, f"{what}: graph of {size / 2**20:.1f} MiB"
    return size


def _ref_bytes(refs: RefSet) -> int:
    return sum(a.nbytes for rt in ("mask", "saturation", "superbias", "linearity", "dark", "gain",
                                   "readnoise") if refs.get(rt) is not None
               for a in refs.get(rt).arrays.values())


def test_lazy_refset_reads_the_files_in_one_task(refs):
    lazy = refs.lazy()
    assert lazy.is_lazy() and not refs.is_lazy()
    assert lazy.lazy() is lazy
    assert lazy.recipe() == refs.recipe()
    assert lazy.provenance() == refs.provenance()
    graph = _graph(*(a for rt in ("gain", "dark", "linearity") for a in lazy.get(rt).arrays.values()))
    # one read of the files for every array: the key the fused layout uses for the same set
    loads = [k for k in graph if isinstance(k, str) and k.startswith("from_recipe-")]
    assert loads == [dask.delayed(RefSet.from_recipe, pure=True)(*refs.recipe()).key]
    _assert_small(graph, "lazy reference set")
    with dask.config.set(scheduler="sync"):
        for rt in ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise"):
            for ext, arr in refs.get(rt).arrays.items():
                got = lazy.get(rt).arrays[ext]
                assert (got.shape, got.dtype) == (arr.shape, arr.dtype)
                np.testing.assert_array_equal(got.compute(), arr, err_msg=f"{rt} {ext}")


def test_refset_without_recipe_is_one_key(refs):
    bare = refs.window((NY, NX), slice(None), slice(None))
    assert bare.recipe() is None
    lazy = bare.lazy()
    graph = _graph(lazy.get("gain").arrays["SCI"], lazy.get("readnoise").arrays["SCI"])
    assert len([k for k in graph if isinstance(k, str) and k.startswith("refset-")]) == 1
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(lazy.get("gain").arrays["SCI"].compute(),
                                      refs.get("gain").arrays["SCI"])


@pytest.mark.parametrize("save_steps", [("jump",), ()])
def test_step_by_step_graph_carries_no_reference(soss, refs, save_steps, tmp_path):
    ds = open_exposure(soss.uncal_files)
    assert _ref_bytes(refs) > 20 * 2**20
    with forbid_compute():
        res = detector1(ds, soss.refs_dir, steps=STEPS, fused=False, save_steps=save_steps,
                        tile_columns=256)
    assert res.segments is None
    size = _assert_small(_graph(*res.products().values()), "detector1(fused=False)")
    assert size < _ref_bytes(refs) / 20


def test_step_by_step_statistics_stay_on_the_cluster(tmp_path):
    """Computed first on a dask.distributed cluster, the whole-frame statistics stay there:
    the product graph names them instead of carrying the refpix correction made from them
    (integration × group × 2048 columns, float64: 131 kB here, 0.2 GB for a BOTS segment)."""
    from distributed import Client

    sim = simulate(tmp_path, preset="nirspec-bots", nints=2, ngroups=4, seed=1)
    ds = open_exposure(sim.uncal_files)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"):
        res = detector1(ds, sim.refs_dir, fused=False, frame_stats="compute")
        assert res.frame_stats["refpix_offsets"] is not None
        _assert_small(_graph(*res.products().values()), "detector1(fused=False, frame_stats='compute')")
        computed = res.rateints.compute()
    with dask.config.set(scheduler="synchronous"):
        plain = detector1(ds, sim.refs_dir, fused=False, frame_stats="compute").rateints.compute()
    xr.testing.assert_identical(computed, plain)


def test_dark_output_writes_the_averaged_dark_outside_the_graph(soss, tmp_path):
    ds = open_exposure(soss.uncal_files)
    out = tmp_path / "dark_avg.fits"
    steps = {**STEPS, "dark_current": {"dark_output": str(out)}}
    res = detector1(ds, soss.refs_dir, steps=steps, tile_columns=256)
    assert res.segments is None  # dark_output runs the step-by-step layout
    _assert_small(_graph(*res.products().values()), "detector1 with dark_output")
    assert fits.getdata(out, "SCI").shape == (ds.sizes["group"], NY, NX)


def test_fused_graph_carries_no_reference(soss):
    ds = open_exposure(soss.uncal_files)
    with forbid_compute():
        res = detector1(ds, soss.refs_dir, steps=STEPS, tile_columns=256)
    assert res.segments is not None
    _assert_small(_graph(*res.products().values()), "detector1(fused=True)")


def _products(res):
    with dask.config.set(scheduler="threads", num_workers=2):
        (out,) = dask.compute(res.products())
    return out


def _assert_identical(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        for var in a[name].data_vars:
            np.testing.assert_array_equal(a[name][var].values, b[name][var].values,
                                          err_msg=f"{name} {var}")
        assert a[name].attrs == b[name].attrs


@pytest.mark.parametrize("fused", [False, True])
def test_products_bit_identical_to_numpy_references(soss, refs, fused, tmp_path, monkeypatch):
    """The lazy references give exactly the products of the numpy references (the graph as
    built before: ``lazy_refs`` kept the numpy arrays), dark_output file included."""
    ds = open_exposure(soss.uncal_files)
    kw = dict(steps=STEPS, tile_columns=512, fused=fused)
    if not fused:
        kw["save_steps"] = ("dark_current", "jump")

    def run(tag):
        steps = dict(STEPS)
        if not fused:
            steps["dark_current"] = {"dark_output": str(tmp_path / f"{tag}.fits")}
        res = detector1(ds, refs, **{**kw, "steps": steps})
        size = len(cloudpickle.dumps(_graph(*res.products().values())))
        return _products(res), size

    lazy, lazy_size = run("lazy")
    monkeypatch.setattr(stages, "lazy_refs", lambda refs, ds: refs)
    monkeypatch.setattr(stepwise, "lazy_refs", lambda refs, ds: refs)
    numpy, numpy_size = run("numpy")
    # the numpy references travelled inside that graph (the GAIN alone is 2 MiB)
    assert numpy_size > lazy_size + 2_000_000
    _assert_identical(lazy, numpy)
    # the run flags something, so the comparison means something
    assert (lazy["rateints"]["dq"].values & dq.JUMP_DET).any()
    if not fused:
        np.testing.assert_array_equal(fits.getdata(tmp_path / "lazy.fits", "SCI"),
                                      fits.getdata(tmp_path / "numpy.fits", "SCI"))


def test_stripped_mask_is_stripped_by_the_workers(refs):
    stripped = strip_mask_do_not_use(refs)
    assert stripped.recipe() is not None and len(stripped.recipe()) == 3
    again = RefSet.from_recipe(*stripped.recipe())
    mask = stripped.get("mask").arrays["DQ"]
    assert (refs.get("mask").arrays["DQ"] & dq.DO_NOT_USE).any()
    assert not (mask & dq.DO_NOT_USE).any()
    np.testing.assert_array_equal(again.get("mask").arrays["DQ"], mask)
    for rt in ("gain", "dark"):
        np.testing.assert_array_equal(again.get(rt).arrays["SCI"], refs.get(rt).arrays["SCI"])
    assert stripped.provenance() == refs.provenance()
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(stripped.lazy().get("mask").arrays["DQ"].compute(), mask)
    # no file of that reftype: nothing to clear
    bare = RefSet({"gain": refs.get("gain")})
    assert strip_mask_do_not_use(bare) is bare


def test_darks_graphs_carry_no_reference(tmp_path, monkeypatch):
    sim = simulate(tmp_path / "sim", preset="nircam-dark", nints=3, ngroups=4, nx=NX, ny=NY, seed=3)
    sizes = []

    def recording(dsk, keys, **kw):
        graph = dsk.__dask_graph__() if hasattr(dsk, "__dask_graph__") else dsk
        # the second graph is given the frame statistics computed by the first (refpix
        # offsets per integration, group and row or column: 196 KB here), not references
        sizes.append(_assert_small(dict(graph), "make_dark", images_only=True))
        return dask.threaded.get(dsk, keys, **kw)

    stripped = []
    monkeypatch.setattr(darks, "strip_mask_do_not_use",
                        lambda refs: stripped.append(strip_mask_do_not_use(refs)) or stripped[-1])
    with dask.config.set(scheduler=recording, num_workers=2):
        res = make_dark(sim.uncal_files, tmp_path / "dark.fits", refs=sim.refs_dir, tile_columns=512)
    assert stripped and stripped[0].recipe() is not None
    assert len(sizes) >= 2 and max(sizes) < _ref_bytes(stripped[0]) / 20
    assert res.path.exists()
    # the graphs still ran
    assert np.isfinite(res.stats["sci"].isel(group=-1).values).mean() > 0.5


def test_frame_statistics_graph_carries_no_stand_in_offsets(tmp_path):
    """The DO_NOT_USE probe runs on stand-in refpix offsets (zeros of the offsets' shape):
    they are made by its tasks, not shipped in the graph, whose size would otherwise grow
    with the integrations (34 MiB for a 366-integration NIRCam grism segment)."""
    from daskramp.engine import chain, policy, stats
    from daskramp.pipeline import reference_set, validate_steps

    sim = simulate(tmp_path / "sim", preset="nircam-grism-tso", nints=40, ngroups=4, seed=1)
    ds = open_exposure(sim.uncal_files)
    params = validate_steps(None)
    refs = reference_set(ds, sim.refs_dir, params)
    p = chain.loaded_params(params)
    plan = chain.Plan(skeleton=chain.skeleton(ds), var_attrs={k: dict(v.attrs) for k, v in ds.data_vars.items()},
                      params=dict(p), stats_scope="segment", halo=policy.halo_width(p))
    refs_key = dask.delayed(RefSet.from_recipe, pure=True)(*refs.recipe())
    with forbid_compute():
        stats = stats.frame_statistics(ds, plan, chain.reader_for(ds), refs_key, compute=False)
    offsets = stats["refpix_offsets"]
    assert offsets is not None and np.prod(offsets.shape) * 8 > ARRAY_LIMIT  # would be caught
    _assert_small(_graph(*(v for v in stats.values() if v is not None)), "frame_statistics")
