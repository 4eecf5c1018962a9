"""The step registry: every step declares its facts once, in its own module.

A step is its module (``Params``, wrapper, ``SPEC``) and one entry of
:data:`daskramp.steps.REGISTRY`; the engines, the memory projection and the products read
their tables from it.  A toy step registered into a copy of the registry runs through both
engines without touching anything else.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import dask
import numpy as np
import pytest
import xarray as xr

from daskramp import pipeline, steps
from daskramp.config import ConfigError
from daskramp.dims import DATA
from daskramp.engine import plan as memory
from daskramp.engine import policy
from daskramp.io import open_exposure, products, refs
from daskramp.kernels.ramp_fit_likely import LIKELY_MIN_NGROUPS
from daskramp.params import boolean, floating
from daskramp.simulate import simulate
from daskramp.steps import StepSpec
from daskramp.steps._wrapper import COMPLETE, SKIPPED, with_status

PRODUCT_VARS = ("data", "dq", "err", "var_poisson", "var_rnoise")

# ------------------------------------------------------------------ the toy step module
# (what daskramp/steps/toy.py would hold)

TOY_STATUS = "S_TOY"


@dataclass(frozen=True)
class ToyParams:
    """The toy's parameters."""

    factor: float = floating(1.0)
    skip: bool = boolean(False)


def toy(ds, *, factor: float = 1.0, skip: bool = False):
    """Multiply the ramp by ``factor`` (lazy or numpy)."""
    if skip:
        return with_status(ds, TOY_STATUS, SKIPPED)
    return with_status(ds, TOY_STATUS, COMPLETE, data=ds[DATA].copy(data=ds[DATA].data * np.float32(factor)))


TOY = StepSpec(name="toy", status=TOY_STATUS, params=ToyParams, run=toy, scratch=1.0)


# ------------------------------------------------------------------ the registry's tables


def test_the_order_and_tables_are_those_of_the_official_pipeline():
    assert steps.STEP_ORDER == (
        "group_scale", "dq_init", "saturation", "superbias", "refpix", "linearity",
        "dark_current", "group_1overf", "charge_migration", "jump", "clean_flicker_noise", "persistence",
        "ramp_fit", "gain_scale")
    assert {s.name: s.reftypes for s in steps.REGISTRY if s.reftypes} == {
        "dq_init": ("mask",), "saturation": ("saturation", "superbias"),
        "superbias": ("superbias",), "linearity": ("linearity",), "dark_current": ("dark",),
        "jump": ("gain", "readnoise"), "clean_flicker_noise": ("gain", "readnoise"),
        "ramp_fit": ("gain", "readnoise"), "gain_scale": ("gain",)}
    # steps that run without one of their references (clean_flicker_noise: its draft rate)
    optional = {s.name: s.optional_reftypes for s in steps.REGISTRY if s.optional_reftypes}
    assert optional == {"saturation": ("superbias",), "clean_flicker_noise": ("gain", "readnoise"),
                        "gain_scale": ("gain",)}
    # persistence carries its windows from integration to integration: whole segments too
    assert memory.TILE_STEPS == ("jump", "persistence", "ramp_fit")


def test_every_step_has_the_status_keyword_of_the_products():
    for spec in steps.REGISTRY:
        assert products.STATUS_KEYWORDS[spec.name] == spec.status == steps.spec(spec.name).status
        module = sys.modules[spec.params.__module__]
        assert module.SPEC is spec and module.Params is spec.params
        assert getattr(module, "STATUS", spec.status) == spec.status
    # the official steps daskramp does not run keep their keywords
    for name, key in (("ipc", "S_IPC"), ("picture_frame", "S_PCTFRM")):
        assert products.STATUS_KEYWORDS[name] == key and name not in steps.STEP_ORDER


def test_every_reftype_is_known_and_written_to_the_products():
    for spec in steps.REGISTRY:
        for rt in spec.reftypes:
            assert rt in refs.REFTYPES, (spec.name, rt)
            assert rt in products.REFERENCE_KEYWORDS, (spec.name, rt)
        assert set(spec.optional_reftypes) <= set(spec.reftypes)
        assert (spec.refs_kwargs is None) == (not spec.reftypes), spec.name


def test_every_step_declares_its_memory():
    assert set(memory.MEASURED_SCRATCH) == set(steps.STEP_ORDER)
    for spec in steps.REGISTRY:
        assert memory.MEASURED_SCRATCH[spec.name] == spec.scratch >= 0
        assert memory.step_factor(spec.name) >= memory.INPUT_FACTOR
    # the figures measured with ``python benchmarks/memory_factors.py`` (see its docstring)
    assert memory.MEASURED_SCRATCH == {
        "group_scale": 0.0, "dq_init": 0.28, "saturation": 1.11, "superbias": 1.03,
        "refpix": 1.03, "linearity": 1.11, "dark_current": 1.17, "group_1overf": 1.5, "charge_migration": 1.25,
        "jump": 0.50, "clean_flicker_noise": 3.0, "persistence": 0.25, "ramp_fit": 3.24,
        "gain_scale": 0.0}


def test_halos_come_from_the_specs():
    p = pipeline.validate_steps(None)
    assert policy.shrinks(p) == [("superbias", 2), ("clean_flicker_noise", 1)]
    assert policy.halo_width(p) == 3
    p = pipeline.validate_steps({"charge_migration": {"skip": False}, "saturation": {"n_pix_grow_sat": 0},
                                 "jump": {"flag_4_neighbors": False}})
    assert policy.shrinks(p) == [("jump", 1)]


def test_the_steps_import_neither_engine():
    code = ("import sys, daskramp.steps.jump, daskramp.steps; "
            "bad = [m for m in ('daskramp.pipeline', 'daskramp.engine.fused', 'daskramp.engine.plan') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_with_refuses_what_cannot_be_placed():
    with pytest.raises(ValueError, match="already registered"):
        steps.registry_with(steps.spec("jump"), after="linearity")
    with pytest.raises(ConfigError, match="unknown step"):
        steps.registry_with(TOY, after="linearty")
    with pytest.raises(ValueError, match="works on the ramp: it goes before ramp_fit"):
        steps.registry_with(TOY, after="ramp_fit")
    with pytest.raises(ValueError, match="works on the rate products: it goes after ramp_fit"):
        steps.registry_with(dataclasses.replace(TOY, on_rate=True), after="linearity")


def test_a_registered_step_is_validated_like_the_others():
    with pytest.raises(ConfigError, match="unknown step"):
        pipeline.validate_steps({"toy": {}})
    with steps.using(steps.registry_with(TOY, after="linearity")):
        p = pipeline.validate_steps({"toy": {"factor": "2"}})
        assert list(p) == ["group_scale", "dq_init", "saturation", "superbias", "refpix", "linearity",
                           "toy", "dark_current", "group_1overf", "charge_migration", "jump",
                           "clean_flicker_noise", "persistence",
                           "ramp_fit", "gain_scale"]
        assert p["toy"].factor == 2.0
        with pytest.raises(ConfigError, match=r"steps\.toy\.factor"):
            pipeline.validate_steps({"toy": {"factor": "much"}})
        assert memory.step_factor("toy") == memory.INPUT_FACTOR + 1.0
    assert steps.active() is steps.REGISTRY


# ------------------------------------------------------------------ the toy through both engines


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """2 segments × 3 integrations × 5 groups × 256 × 32 (SOSS-like)."""
    return simulate(tmp_path_factory.mktemp("registry"), preset="niriss-soss", nints=3, segments=2,
                    ngroups=5, nx=32, seed=7)


def _run(sim, **kw):
    res = pipeline.detector1(open_exposure(sim.uncal_files), sim.refs_dir, tile_columns=16, **kw)
    with dask.config.set(scheduler="threads", num_workers=2):
        rateints, rate = dask.compute(res.rateints, res.rate)
    return res, rateints, rate


@pytest.mark.parametrize("engine", [None, False], ids=["fused", "step-by-step"])
def test_a_toy_step_runs_in_both_engines(sim, engine):
    res0, ri0, r0 = _run(sim, fused=engine)
    with steps.using(steps.registry_with(TOY, after="linearity")):
        res, ri, r = _run(sim, fused=engine)
    assert ("layout" in res.provenance) == (engine is None)
    # it ran: its status is in the products and its record in the provenance
    assert r.attrs[TOY_STATUS] == ri.attrs[TOY_STATUS] == COMPLETE
    assert res.provenance["steps"]["toy"] == {"status": COMPLETE, "parameters": {"factor": 1.0, "skip": False}}
    names = list(res.provenance["steps"])
    assert names.index("toy") == names.index("linearity") + 1
    # and multiplying by 1 changed nothing
    for a, b in ((ri, ri0), (r, r0)):
        for var in PRODUCT_VARS:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
        assert {k: v for k, v in a.attrs.items() if k.startswith("S_") and k != TOY_STATUS} == \
            {k: v for k, v in b.attrs.items() if k.startswith("S_")}
        assert TOY_STATUS not in b.attrs


def test_a_toy_step_with_a_halo_widens_the_fused_windows(sim):
    res0, ri0, _ = _run(sim)
    wide = dataclasses.replace(TOY, halo=lambda p: 2)
    with steps.using(steps.registry_with(wide, after="superbias")):
        res, ri, _ = _run(sim, steps={"toy": {"skip": True}})
        assert res.provenance["layout"]["ghost_columns"] == res0.provenance["layout"]["ghost_columns"]
        res, ri, _ = _run(sim)
    assert res.provenance["layout"]["ghost_columns"] == res0.provenance["layout"]["ghost_columns"] + 2
    assert res.provenance["steps"]["toy"]["status"] == COMPLETE
    for var in PRODUCT_VARS:
        np.testing.assert_array_equal(ri[var].values, ri0[var].values, err_msg=var)


@pytest.mark.parametrize("algorithm, ngroups, expected", [
    ("OLS_C", 9, True),
    ("LIKELY", 9, False),
    # too few groups for LIKELY: the official step fits OLS_C, from sums like any other
    ("LIKELY", LIKELY_MIN_NGROUPS - 1, True),
])
def test_segments_go_one_after_another_unless_a_step_combines_every_integration(algorithm, ngroups, expected):
    """ramp_fit's spec says when its rate needs every integration at once (LIKELY): the
    run then submits the exposure as one graph instead of segment by segment."""
    ds = xr.Dataset(coords={"group": np.arange(ngroups)})
    params = pipeline.validate_steps({"ramp_fit": {"algorithm": algorithm}})
    assert policy.by_segment(ds, params) is expected
    assert policy.by_segment(ds, pipeline.validate_steps({"ramp_fit": {"algorithm": algorithm, "skip": True}}))
