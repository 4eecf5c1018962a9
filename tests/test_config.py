import pytest

from daskramp import config
from daskramp.config import ConfigError


def test_layering_order(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text("steps:\n  jump:\n    rejection_threshold: 5\n    flag_4_neighbors: false\n  dark_current:\n    skip: true\n")
    env = {"DASKRAMP_STEPS__JUMP__REJECTION_THRESHOLD": "7", "DASKRAMP_STEPS__RAMP_FIT__SUPPRESS_ONE_GROUP": "false"}
    cfg = config.layered(workflow=wf, environ=env, cli=["--steps.jump.rejection_threshold=10"])
    # file < env < command line
    assert cfg["steps"]["jump"] == {"rejection_threshold": 10, "flag_4_neighbors": False}
    assert cfg["steps"]["dark_current"] == {"skip": True}
    assert cfg["steps"]["ramp_fit"] == {"suppress_one_group": False}


def test_parse_overrides_forms():
    cfg = config.parse_overrides(["--steps.dark_current.skip", "true", "--steps.saturation.n_pix_grow_sat=0",
                                  "--steps.jump.flag_4_neighbors"])
    assert cfg == {"steps": {"dark_current": {"skip": True}, "saturation": {"n_pix_grow_sat": 0},
                             "jump": {"flag_4_neighbors": True}}}


@pytest.mark.parametrize("bad", [["--steps.jump=3"], ["--other=1"]])
def test_parse_overrides_errors(bad):
    with pytest.raises(ConfigError):
        config.parse_overrides(bad)


def test_yaml_errors_name_file(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml: configuration file not found"):
        config.load_yaml(tmp_path / "nothere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        config.load_yaml(bad)


def test_workflow_files_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "workflows"
    for f in root.glob("*.yaml"):
        cfg = config.load_yaml(f)
        from daskramp.run import WORKFLOW_SETTINGS

        assert set(cfg) <= WORKFLOW_SETTINGS, f
