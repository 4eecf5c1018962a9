"""Step parameters are validated once, centrally (:mod:`daskramp.params`), for every path.

A run that exits 0 must have produced exactly what was asked: every value is coerced and
checked against the rule declared on its step's ``Params`` (the official spec's type, options
and range), official values daskramp does not implement are refused saying so, and both
engines (the step-by-step graph and the fused per-tile one) run with the validated ``Params``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from daskramp import config, params
from daskramp import steps as steps_registry
from daskramp.config import ConfigError
from daskramp.io import open_exposure
from daskramp.params import NotImplementedParameter
from daskramp.pipeline import detector1, step_params, validate_steps
from daskramp.simulate import simulate
from daskramp.steps import STEP_ORDER


def _error(step, given) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        step_params(step, given)
    assert "\n" not in str(err.value)
    return err.value


# ---------------------------------------------------------------------------- booleans

@pytest.mark.parametrize("value", [True, 1, "true", "True", "TRUE", "yes", "Yes", "on", "ON", "t", "T", "1",
                                   " true "])
def test_boolean_true_spellings(value):
    assert step_params("jump", {"flag_4_neighbors": value}).flag_4_neighbors is True


@pytest.mark.parametrize("value", [False, 0, "false", "False", "FALSE", "no", "NO", "off", "Off", "f", "F",
                                   "0"])
def test_boolean_false_spellings(value):
    p = step_params("jump", {"flag_4_neighbors": value, "skip": value})
    assert p.flag_4_neighbors is False and p.skip is False


@pytest.mark.parametrize("value", ["maybe", 2, -1, "", "tru", 0.5, 1.0, None, [True], "none"])
def test_boolean_refused(value):
    err = _error("jump", {"skip": value})
    assert str(err).startswith(f"steps.jump.skip: {value!r} is not allowed (true or false)")


def test_quoted_false_in_a_workflow_does_not_skip(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text('steps:\n  jump:\n    skip: "false"\n  dark_current:\n    skip: "yes"\n')
    cfg = config.layered(workflow=wf, environ={})
    assert cfg["steps"]["jump"]["skip"] == "false"  # YAML gives the string...
    p = validate_steps(cfg["steps"])
    assert p["jump"].skip is False  # ...the validator the boolean
    assert p["dark_current"].skip is True


def test_command_line_bool_refused():
    cfg = config.layered(environ={}, cli=["--steps.jump.skip=maybe"])
    with pytest.raises(ConfigError, match=r"^steps\.jump\.skip: 'maybe' is not allowed \(true or false\)$"):
        validate_steps(cfg["steps"])


# ---------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("value, expected", [("10", 10.0), (10, 10.0), ("4.5", 4.5), (0, 0.0), ("1e3", 1000.0),
                                             (np.float32(3.5), 3.5), (" 7 ", 7.0)])
def test_float_coerced(value, expected):
    p = step_params("jump", {"rejection_threshold": value})
    assert p.rejection_threshold == expected and type(p.rejection_threshold) is float


@pytest.mark.parametrize("value", [-5, "-5", -0.001, "nan", math.nan, "inf", -math.inf, "abc", True, None, [1], "",
                                   "4,5"])
def test_float_refused(value):
    err = _error("jump", {"rejection_threshold": value})
    assert str(err) == f"steps.jump.rejection_threshold: {value!r} is not allowed (a float >= 0)"


def test_float_without_range_still_refuses_nan_and_inf():
    for value in ("nan", math.inf, "-inf"):
        err = _error("charge_migration", {"signal_threshold": value})
        assert "(a finite float)" in str(err)
    assert step_params("charge_migration", {"signal_threshold": "-3"}).signal_threshold == -3.0


@pytest.mark.parametrize("value, expected", [("3", 3), (3.0, 3), (0, 0), ("2.0", 2), (np.int64(4), 4)])
def test_integer_coerced(value, expected):
    p = step_params("saturation", {"n_pix_grow_sat": value})
    assert p.n_pix_grow_sat == expected and type(p.n_pix_grow_sat) is int


@pytest.mark.parametrize("value", [2.5, "abc", -1, "-1", True, None, "nan"])
def test_integer_refused(value):
    err = _error("saturation", {"n_pix_grow_sat": value})
    assert str(err) == f"steps.saturation.n_pix_grow_sat: {value!r} is not allowed (an integer >= 0)"


def test_the_lead_example_messages():
    assert str(_error("jump", {"rejection_threshold": -5})) == \
        "steps.jump.rejection_threshold: -5 is not allowed (a float >= 0)"
    assert str(_error("jump", 5)) == "steps.jump: expected a mapping of parameters, got 5"
    err = _error("ramp_fit", {"save_opt": True})
    assert isinstance(err, NotImplementedParameter) and isinstance(err, NotImplementedError)
    assert str(err) == ("steps.ramp_fit.save_opt: True is an official value that daskramp "
                        "does not implement (implemented: False)")


# ---------------------------------------------------------------------------- None

@pytest.mark.parametrize("step, name", [("ramp_fit", "firstgroup"), ("ramp_fit", "lastgroup"),
                                        ("dark_current", "average_dark_current"),
                                        ("dark_current", "dark_output"),
                                        ("clean_flicker_noise", "background_method"),
                                        ("clean_flicker_noise", "user_mask"),
                                        ("clean_flicker_noise", "background_box_size"),
                                        ("dq_init", "user_supplied_dq")])
@pytest.mark.parametrize("value", [None, "None", "null"])
def test_none_where_the_official_default_is_none(step, name, value):
    assert getattr(step_params(step, {name: value}), name) is None


@pytest.mark.parametrize("step, name", [("jump", "rejection_threshold"), ("ramp_fit", "algorithm"),
                                        ("ramp_fit", "int_name"), ("jump", "maximum_cores"),
                                        ("refpix", "side_smoothing_length"), ("saturation", "use_readpatt")])
def test_none_refused_elsewhere(step, name):
    assert str(_error(step, {name: None})).startswith(f"steps.{step}.{name}: None is not allowed (")


# ---------------------------------------------------------------------------- options

@pytest.mark.parametrize("step, name, value, hint", [
    ("ramp_fit", "algorithm", "ols_c", "'OLS_C'"),
    ("ramp_fit", "algorithm", "likely", "'LIKELY'"),
    ("refpix", "refpix_algorithm", "MEDIAN", "'median'"),
    ("clean_flicker_noise", "fit_method", "Median", "'median'"),
])
def test_options_are_case_sensitive_as_in_the_official_spec(step, name, value, hint):
    err = _error(step, {name: value})
    assert not isinstance(err, NotImplementedParameter)
    assert f"{value!r} is not allowed (one of" in str(err) and f"case-sensitive: {hint}" in str(err)


@pytest.mark.parametrize("step, name, value", [("ramp_fit", "algorithm", "BOGUS"), ("ramp_fit", "algorithm", 1),
                                               ("refpix", "refpix_algorithm", "mean"),
                                               ("clean_flicker_noise", "background_method", "mean")])
def test_options_refused(step, name, value):
    assert str(_error(step, {name: value})).startswith(f"steps.{step}.{name}: {value!r} is not allowed (one of")


def test_options_accepted():
    assert step_params("ramp_fit", {"algorithm": "OLS_C"}).algorithm == "OLS_C"
    assert step_params("refpix", {"refpix_algorithm": "median"}).refpix_algorithm == "median"
    assert step_params("clean_flicker_noise", {"background_method": "median"}).background_method == "median"


@pytest.mark.parametrize("value, expected", [("1", "1"), (4, "4"), ("12", "12"), ("all", "all"), ("half", "half"),
                                             ("quarter", "quarter"), ("none", "none"), ("One", "One")])
def test_maximum_cores(value, expected):
    assert step_params("jump", {"maximum_cores": value}).maximum_cores == expected
    assert step_params("ramp_fit", {"maximum_cores": value}).maximum_cores == expected


@pytest.mark.parametrize("value", ["0", 0, -2, "lots", "Half", 2.5, True])
def test_maximum_cores_refused(value):
    assert "is not allowed (a positive integer, 'none', 'one', 'quarter', 'half' or 'all')" in \
        str(_error("jump", {"maximum_cores": value}))


# ---------------------------------------------------------------------------- not implemented

@pytest.mark.parametrize("step, name, value", [
    ("ramp_fit", "save_opt", True),
    ("jump", "find_showers", True),
    ("jump", "find_showers", "true"),
    ("jump", "find_showers", "yes"),
    ("refpix", "refpix_algorithm", "sirs"),
    ("clean_flicker_noise", "background_method", "median_image"),
    ("persistence", "persistence_array_file", "persistence.asdf"),
    ("persistence", "save_persistence", "persistence.asdf"),
])
def test_official_values_not_implemented_are_refused(step, name, value):
    err = _error(step, {name: value})
    assert isinstance(err, NotImplementedParameter)
    assert str(err).startswith(f"steps.{step}.{name}: {value!r} is an official value that daskramp "
                               f"does not implement (implemented: ")
    # the same values are refused when the step is skipped (one answer per configuration)
    with pytest.raises(NotImplementedParameter):
        step_params(step, {name: value, "skip": True})


def test_implemented_values_of_those_parameters_are_accepted():
    p = step_params("jump", {"expand_large_events": "false", "find_showers": "no"})
    assert p.expand_large_events is False and p.find_showers is False
    assert step_params("ramp_fit", {"save_opt": 0}).save_opt is False


def test_wrappers_called_directly_refuse_the_same_values():
    from daskramp.steps import jump, ramp_fit, refpix

    with pytest.raises(NotImplementedParameter, match="^steps.jump.find_showers: True is an official"):
        jump.jump(None, gain=None, readnoise=None, find_showers=True)
    with pytest.raises(NotImplementedParameter, match="^steps.ramp_fit.save_opt: True"):
        ramp_fit.ramp_fit(None, gain=None, readnoise=None, save_opt=True)
    with pytest.raises(NotImplementedParameter, match="^steps.refpix.refpix_algorithm: 'sirs'"):
        refpix.refpix(None, refpix_algorithm="sirs")
    with pytest.raises(ConfigError, match=r"^steps.jump.rejection_threshold: -1 is not allowed"):
        jump.jump(None, gain=None, readnoise=None, rejection_threshold=-1)


# ---------------------------------------------------------------------------- other kinds

def test_int_list_image_and_scale_list(tmp_path):
    p = step_params("clean_flicker_noise", {"background_box_size": [32, "16"]})
    assert p.background_box_size == (32, 16)
    assert step_params("clean_flicker_noise", {"background_box_size": "32, 16"}).background_box_size == (32, 16)
    for bad in ([32], [32, 16, 8], [0, 4], "abc", 32):
        assert "(a list of 2 integers >= 1 or None)" in str(_error("clean_flicker_noise", {"background_box_size": bad}))
    missing = tmp_path / "nope.fits"
    assert str(_error("dq_init", {"user_supplied_dq": str(missing)})).endswith(
        "; the user_supplied_dq file does not exist)")
    assert str(_error("saturation", {"user_threshold": np.zeros(3)})).startswith(
        "steps.saturation.user_threshold: an array of shape (3,) is not allowed")
    assert step_params("saturation", {"user_threshold": np.ones((2, 2))}).user_threshold.shape == (2, 2)
    assert step_params("jump", {"integration_scale": [1, "2"]}).integration_scale == (1.0, 2.0)
    for bad in ([1.0, 0.0], [1.0, math.nan], [], "nope.npy", {"a": 1}):
        assert str(_error("jump", {"integration_scale": bad})).startswith("steps.jump.integration_scale: ")
    assert str(_error("ramp_fit", {"int_name": 5})) == "steps.ramp_fit.int_name: 5 is not allowed (a string)"


# ---------------------------------------------------------------------------- structure

@pytest.mark.parametrize("given", [5, [1, 2], "abc", True, 4.0])
def test_step_given_a_non_mapping(given):
    assert str(_error("jump", given)) == f"steps.jump: expected a mapping of parameters, got {given!r}"
    with pytest.raises(ConfigError, match=r"^steps\.jump: expected a mapping of parameters"):
        validate_steps({"jump": given})


def test_non_mapping_step_in_a_workflow(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps:\n  jump: 5\n  dark_current:\n")
    cfg = config.layered(workflow=wf, environ={})
    with pytest.raises(ConfigError, match=r"^steps\.jump: expected a mapping of parameters, got 5$"):
        validate_steps(cfg["steps"])
    # a command-line override does not silently replace the malformed value
    with pytest.raises(ConfigError, match=r"^steps\.jump: expected a mapping of parameters, got 5$"):
        config.layered(workflow=wf, environ={}, cli=["--steps.jump.rejection_threshold=10"])
    # ``dark_current:`` with nothing under it is the defaults
    assert validate_steps({"dark_current": None})["dark_current"] == step_params("dark_current")


def test_steps_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^steps: expected a mapping of step names to parameters, got 5$"):
        validate_steps(5)


def test_unknown_step_and_parameter():
    with pytest.raises(ConfigError, match=r"^steps\.jumps: unknown step \(did you mean 'jump'\?\); steps are: "):
        validate_steps({"jumps": {}})
    with pytest.raises(ConfigError, match=r"^steps\.jump\.rejection_treshold: unknown parameter "
                                          r"\(did you mean 'rejection_threshold'\?\); jump's parameters are: "):
        step_params("jump", {"rejection_treshold": 3})
    with pytest.raises(ConfigError, match=r"^steps\.ramp_fit\.save_results: an official step parameter that "
                                          r"daskramp does not implement"):
        step_params("ramp_fit", {"save_results": True})


def test_validate_steps_reports_the_first_error_and_fills_defaults():
    with pytest.raises(ConfigError, match=r"^steps\.jump\.rejection_threshold"):
        validate_steps({"jump": {"rejection_threshold": -5}, "ramp_fit": {"save_opt": True}})
    out = validate_steps({"ramp_fit": {"suppress_one_group": "no"}})
    assert tuple(out) == STEP_ORDER
    assert out["ramp_fit"].suppress_one_group is False
    assert out["jump"] == step_params("jump")


def test_cli_and_env_values_are_judged_by_the_validator():
    for cli in (["--steps.jump.rejection_threshold=abc"], ["--steps.jump.rejection_threshold", "[1"]):
        cfg = config.layered(environ={}, cli=cli)
        with pytest.raises(ConfigError, match=r"^steps\.jump\.rejection_threshold: '(abc|\[1)' is not allowed "
                                              r"\(a float >= 0\)$"):
            validate_steps(cfg["steps"])
    cfg = config.layered(environ={"DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD": "nan"})
    with pytest.raises(ConfigError, match=r"^steps\.jump\.rejection_threshold: 'nan' is not allowed"):
        validate_steps(cfg["steps"])
    cfg = config.layered(environ={"DASKRAMP_STEPS__RAMP_FIT__FIRSTGROUP": "2"},
                         cli=["--steps.jump.find_showers"])
    with pytest.raises(NotImplementedParameter, match=r"^steps\.jump\.find_showers: True is an official"):
        validate_steps(cfg["steps"])
    assert validate_steps({"ramp_fit": cfg["steps"]["ramp_fit"]})["ramp_fit"].firstgroup == 2


def test_darks_validate_steps(tmp_path):
    from daskramp.darks import make_dark

    with pytest.raises(ConfigError, match="dark_current cannot run"):
        make_dark([], tmp_path / "d.fits", steps={"dark_current": {"skip": "false"}})
    with pytest.raises(ConfigError, match=r"^steps\.jump: expected a mapping of parameters, got 5$"):
        make_dark([], tmp_path / "d.fits", steps={"jump": 5})


# ---------------------------------------------------------------------------- declarations

@pytest.mark.parametrize("step", STEP_ORDER)
def test_defaults_of_every_step_validate_cleanly(step):
    mod = __import__(f"daskramp.steps.{step}", fromlist=["Params"])
    rules = steps_registry.rules(step)  # raises if a field has no rule
    assert list(rules) == [f.name for f in dataclasses.fields(mod.Params)]
    assert step_params(step) == mod.Params()
    assert step_params(step, mod.Params()) == mod.Params()
    assert params.check(mod.Params()) == mod.Params()
    assert "skip" in rules and rules["skip"].kind == "boolean"
    for name, rule in rules.items():
        rule.allowed()  # every rule can say what it allows
        if rule.implemented is not None:
            assert getattr(mod.Params(), name) in rule.implemented, name


def test_official_types_and_ranges_match_jwst():
    """The declarations against the official step specs (jwst's spec strings)."""
    jwst = pytest.importorskip("jwst")
    del jwst
    import importlib

    classes = {"group_scale": "jwst.group_scale.GroupScaleStep", "dq_init": "jwst.dq_init.DQInitStep",
               "saturation": "jwst.saturation.SaturationStep", "superbias": "jwst.superbias.SuperBiasStep",
               "refpix": "jwst.refpix.RefPixStep", "linearity": "jwst.linearity.LinearityStep",
               "dark_current": "jwst.dark_current.DarkCurrentStep",
               "charge_migration": "jwst.charge_migration.ChargeMigrationStep", "jump": "jwst.jump.JumpStep",
               "clean_flicker_noise": "jwst.clean_flicker_noise.CleanFlickerNoiseStep",
               "persistence": "jwst.persistence.PersistenceStep",
               "ramp_fit": "jwst.ramp_fitting.RampFitStep", "gain_scale": "jwst.gain_scale.GainScaleStep"}
    kinds = {"boolean": "boolean", "float": "float", "integer": "integer", "string": "string",
             "option": "option", "int_list": "int_list", "output_file": "output_file"}
    for step, path in classes.items():
        mod, cls = path.rsplit(".", 1)
        spec = getattr(importlib.import_module(mod), cls).spec
        official = {}
        for line in spec.splitlines():
            line = line.split("#")[0].strip()
            if "=" in line:
                name, check = (s.strip() for s in line.split("=", 1))
                official[name] = check
        rules = steps_registry.rules(step)
        for name, check in official.items():
            assert name in rules, f"{step}.{name} missing"
            rule = rules[name]
            kind = check.split("(")[0]
            if name == "maximum_cores":
                assert rule.kind == "cores"
            elif kind == "string" and name in ("user_supplied_dq", "user_mask"):
                assert rule.kind == "image"  # a path, or (daskramp) an array
            else:
                assert kinds[rule.kind] == kind, f"{step}.{name}: {rule.kind} vs {check}"
            if "min=0" in check.replace(" ", ""):
                assert rule.min == 0, name
            if "default=None" in check.replace(" ", ""):
                assert rule.none, name
        for name, rule in rules.items():
            if name not in official and name != "skip":
                assert not rule.official, f"{step}.{name} is not an official parameter"


# ---------------------------------------------------------------------------- every path

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """1 segment × 2 integrations × 4 groups × 32 × 32 (SOSS-like)."""
    out = tmp_path_factory.mktemp("params")
    sim = simulate(out, preset="niriss-soss", nints=2, segments=1, ngroups=4, nx=32, ny=32, seed=1)
    return sim, open_exposure(sim.uncal_files), out


def _paths(tiny):
    sim, ds, _ = tiny
    return {"step-by-step": lambda steps: detector1(ds, sim.refs_dir, steps=steps, fused=False),
            "fused": lambda steps: detector1(ds, sim.refs_dir, steps=steps)}


def test_the_tiny_exposure_takes_both_paths(tiny):
    paths = _paths(tiny)
    res = paths["fused"](None)
    assert res.segments is not None and res.provenance["layout"]["fused"] is True
    res = paths["step-by-step"](None)
    assert res.segments is None and "layout" not in res.provenance


def _invalid_values(rule) -> list:
    k = rule.kind
    out = [] if rule.none else [None]
    if k == "boolean":
        out += ["maybe", 2]
    elif k == "float":
        out += ["abc", "nan", math.inf]
        if rule.min is not None:
            out.append(rule.min - 1)
        if rule.above is not None:
            out.append(rule.above)
    elif k == "integer":
        out += ["abc", 2.5]
        if rule.min is not None:
            out.append(rule.min - 1)
    elif k == "string":
        out += [5]
    elif k == "option":
        out += ["no-such-option"]
    elif k == "cores":
        out += ["0", "lots"]
    elif k == "int_list":
        out += [[4], "abc"]
    elif k == "image":
        out += ["no/such/file.fits", 5]
    elif k == "output_file":
        out += [5, ""]
    elif k == "scale_list":
        out += [[-1.0, 1.0], "no/such/file.npy"]
    else:  # pragma: no cover
        raise AssertionError(k)
    if rule.implemented is not None:
        out += [v for v in (rule.options or (True, False)) if v not in rule.implemented]
    return out


@pytest.mark.parametrize("step", STEP_ORDER)
def test_every_invalid_parameter_is_refused_on_both_paths(tiny, step):
    """For every parameter of the step, values it does not allow raise a one-line ConfigError
    naming ``steps.<step>.<param>`` when building either graph: no parameter can be checked on
    one path and ignored on the other."""
    paths = _paths(tiny)
    for name, rule in steps_registry.rules(step).items():
        values = _invalid_values(rule)
        assert values, name
        for value in values:
            for path, build in paths.items():
                with pytest.raises(ConfigError) as err:
                    build({step: {name: value}})
                msg = str(err.value)
                assert msg.startswith(f"steps.{step}.{name}: "), (path, name, value, msg)
                assert "\n" not in msg


def _non_default(step, name, rule, default, ds, out):
    """A valid value other than the default, given as the configuration layers would."""
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    k = rule.kind
    if (step, name) in (("clean_flicker_noise", "mask_science_regions"), ("clean_flicker_noise", "apply_flat_field")):
        # on this NIRISS SOSS exposure they would mask the traces or divide by a FLAT
        # (refused): tests/steps/test_clean_flicker_noise.py runs them where they apply
        return dataclasses.MISSING
    if k == "boolean":
        v = not default
        if rule.implemented is not None and v not in rule.implemented:
            return dataclasses.MISSING
        return "yes" if v else "no"
    if k == "float":
        return str((1.0 if default is None else default) + 1.5)
    if k == "integer":
        return str(1 if default is None else default + 1)
    if k == "string":
        return "given" if rule.implemented is None else dataclasses.MISSING
    if (step, name) == ("clean_flicker_noise", "fit_method"):
        # 'fft' applies to NIRSpec exposures only (refused on this NIRISS one):
        # tests/steps/test_clean_flicker_noise.py runs it
        return dataclasses.MISSING
    if k == "option":
        others = [o for o in (rule.implemented or rule.options) if o != default]
        return others[0] if others else dataclasses.MISSING
    if k == "cores":
        return 2
    if k == "int_list":
        return [8, "8"]
    if k == "image":
        return {"user_supplied_dq": np.zeros((ny, nx), np.uint32),
                "user_threshold": np.full((ny, nx), 6.0e4, np.float32),
                "user_mask": np.ones((ny, nx), bool)}[name]
    if k == "output_file":
        return str(out / f"{step}_{name}.fits")
    if k == "scale_list":
        return ["1.0"] * ds.sizes["integration"]
    raise AssertionError(k)  # pragma: no cover


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("step", STEP_ORDER)
def test_valid_non_default_values_are_carried_on_both_paths(tiny, step):
    """Every parameter given a valid non-default value (as strings where the layers give
    strings) reaches the Params the graph is built with, coerced, on both paths."""
    sim, ds, out = tiny
    mod = __import__(f"daskramp.steps.{step}", fromlist=["Params"])
    defaults = mod.Params()
    given = {}
    for name, rule in steps_registry.rules(step).items():
        value = _non_default(step, name, rule, getattr(defaults, name), ds, out)
        if value is not dataclasses.MISSING:
            given[name] = value
    # the step runs with the others changed; ``skip`` flipped is checked alone below
    given["skip"] = "no"
    expected = step_params(step, given)
    for name in given:
        if name != "skip":
            assert not _same(getattr(expected, name), getattr(defaults, name)), name
    for path, build in _paths(tiny).items():
        for cfg, want in (({step: given}, expected),
                          ({step: {"skip": str(not defaults.skip)}},
                           dataclasses.replace(defaults, skip=not defaults.skip))):
            res = build(cfg)
            used = res.segments.params[step] if res.segments is not None else None
            record = res.provenance["steps"][step]["parameters"]
            for f in dataclasses.fields(want):
                value = getattr(want, f.name)
                if isinstance(value, np.ndarray) and used is not None:
                    # the fused layout's status record holds a one-pixel window of an image:
                    # the whole one is in the Params its tiles run with
                    assert _same(getattr(used, f.name), value), (path, f.name)
                else:
                    assert _same(record[f.name], value), (path, f.name, record[f.name], value)
                    if used is not None:
                        assert _same(getattr(used, f.name), value), (path, f.name)


def test_dark_output_is_the_whole_frame_on_the_default_path(tiny, tmp_path):
    """dark_output saves the frame-averaged dark of the whole subarray: the default (fused)
    path hands such a run to the step-by-step graph, whose dark is written once, whole."""
    from astropy.io import fits

    sim, ds, _ = tiny
    out = tmp_path / "dark_avg.fits"
    res = detector1(ds, sim.refs_dir, steps={"dark_current": {"dark_output": str(out)}},
                    tile_columns=8)
    assert res.segments is None and "dark_output" in res.provenance["fused"]
    with fits.open(out) as h:
        assert h["SCI"].data.shape == (ds.sizes["group"], ds.sizes["y"], ds.sizes["x"])
