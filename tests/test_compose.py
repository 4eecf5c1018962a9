"""The docker compose cluster as the README uses it, checked statically (no Docker engine runs
here): the compose file and the Dockerfile parsed as text and YAML, every path and command of
the README's compose section against the services' mounts and the command line's parser."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _host_default(spec: str) -> str:
    """``${DASKRAMP_DATA:-./data}`` → ``./data`` (compose's default substitution)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec)


def _mounts(service: dict) -> dict[str, str]:
    """Container path → host path of a service's bind mounts (short syntax)."""
    out = {}
    for v in service.get("volumes", []):
        host, target, *_ = _host_default(str(v)).split(":")
        out[target] = host
    return out


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^### A cluster with docker compose\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no 'A cluster with docker compose' section"
    return m.group(1)


def _commands(section: str) -> list[list[str]]:
    """The shell commands of the section's code blocks (continuations joined, comments off)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                out.append(shlex.split(line))
    return out


def test_services_build_the_image_and_share_one_data_folder(compose):
    services = compose["services"]
    assert {"scheduler", "worker", "client"} <= set(services)
    for name in ("scheduler", "worker", "client"):
        s = services[name]
        assert s.get("build") in (".", {"context": "."}), f"{name} has no build: ."
        assert s.get("image") == "daskramp:latest"
        # bind mounts of one host folder (no named volume that nothing fills)
        assert _mounts(s) == {"/data": "./data"}, name
    assert not compose.get("volumes"), "a named volume nothing fills"


def test_the_client_reaches_the_scheduler_and_runs_daskramp(compose):
    services = compose["services"]
    sched = services["scheduler"]
    cmd = sched["command"]
    port = cmd[cmd.index("--port") + 1]
    dash = cmd[cmd.index("--dashboard-address") + 1].lstrip(":")
    assert f"{port}:{port}" in sched["ports"] and f"{dash}:{dash}" in sched["ports"]
    assert services["client"]["environment"]["DASKRAMP_SCHEDULER"] == f"tcp://scheduler:{port}"
    assert services["client"]["entrypoint"] == ["daskramp"]
    assert f"tcp://scheduler:{port}" in services["worker"]["command"]
    assert "scheduler" in services["worker"]["depends_on"]


def test_image_has_the_dashboard_and_plot_extras(dockerfile):
    installs = [ln for ln in dockerfile.splitlines() if ln.startswith("RUN pip install")]
    assert len(installs) == 1 and '".[plot]"' in installs[0]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!\[ ]", d)[0] for d in extras["plot"]}
    assert {"bokeh", "matplotlib"} <= names  # the dashboard, and `daskramp report`
    # what the image copies exists (the build context)
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_readme_section_paths_are_mounted_and_commands_parse(compose):
    from daskramp.cli import build_parser

    section = _readme_section()
    commands = _commands(section)
    services = compose["services"]
    assert ["mkdir", "-p", "data"] in commands
    up = next(c for c in commands if c[:3] == ["docker", "compose", "up"])
    assert "--build" in up
    runs = [c for c in commands if c[:3] == ["docker", "compose", "run"]]
    assert runs, "no docker compose run in the README section"
    parser = build_parser()
    used = set()
    for c in runs:
        i = 3
        while c[i].startswith("-"):
            i += 1
        service, argv = c[i], c[i + 1:]
        assert service in services and services[service]["entrypoint"] == ["daskramp"]
        args, extra = parser.parse_known_args(argv)  # a command the CLI takes
        assert not extra or args.command == "run", c
        for a in argv:
            if a.startswith("/"):
                used.add(PurePosixPath(a))
    assert used
    for path in used:
        # under a mount of the client and of every worker: the same file for both
        for name in ("client", "worker"):
            targets = [PurePosixPath(t) for t in _mounts(services[name])]
            assert any(path == t or t in path.parents for t in targets), (path, name)
    # the uncal names the section uses are those `daskramp simulate` writes
    from daskramp.simulate import PRESETS

    root = PRESETS["niriss-soss"].root
    for path in used:
        if path.name.endswith("_uncal.fits"):
            assert re.fullmatch(rf"{re.escape(root)}-seg\d{{3}}_nis_uncal\.fits", path.name), path
    # what the host lists is the host side of the mount
    ls = next(c for c in commands if c[0] == "ls")
    host = _mounts(services["client"])["/data"].removeprefix("./")
    for p in ls[1:]:
        assert p.split("/")[0] == host
        assert PurePosixPath("/data", *p.split("/")[1:]) in used


def test_the_compose_header_example_matches_the_readme(compose):
    header = (ROOT / "docker-compose.yml").read_text().split("x-daskramp")[0]
    section = _readme_section()
    for line in re.findall(r"#   (docker compose .*)", header):
        assert line.split(" #")[0].strip() in section.replace("\\\n    ", ""), line
