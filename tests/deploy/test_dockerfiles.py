"""Structural lint of the service Dockerfile (no Docker engine is needed).

One Dockerfile (deploy/docker/Dockerfile) builds every stage's image, ``--build-arg
STAGE=<stage>`` picking the service. It is parsed into instructions (continuations
joined, comments dropped) and split into build stages; the checks are the image policy
of deploy/README.md, and, per stage, that what ``STAGE`` names exists.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from idq_common.contracts import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|gfortran|make|cc)\b")


@dataclass
class Stage:
    """One build stage: its FROM line and its instructions."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """Parse a Dockerfile into stages of ``(KEYWORD, arguments)`` instructions."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "dangling line continuation"
    stages: list[Stage] = []
    for instr in logical:
        keyword, _, args = instr.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, f"bad FROM: {args}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif keyword == "ARG" and not stages:
            continue  # global build arguments before the first FROM
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def global_args(text: str) -> dict[str, str]:
    """``ARG NAME=default`` declared before the first FROM."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("FROM"):
            break
        m = re.match(r"ARG\s+(\w+)=(\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def console_scripts(stage: str) -> dict[str, str]:
    data = tomllib.loads((ROOT / "services" / stage / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


@pytest.fixture
def dockerfile() -> tuple[str, list[Stage]]:
    text = DOCKERFILE.read_text()
    return text, parse(text)


def test_one_dockerfile_for_every_stage() -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile")), "per-service copies are back"
    assert not list((ROOT / "deploy" / "docker").glob("*.template"))


def test_multistage_with_builder(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    wheel_runs = [r for r in stages[0].all("RUN") if "pip wheel" in r]
    assert wheel_runs and "./common" in wheel_runs[0] and "./services/${STAGE}" in wheel_runs[0]
    # a build without --build-arg STAGE fails at once, saying so
    assert any('test -n "${STAGE}"' in r for r in stages[0].all("RUN"))
    # the final image installs from the builder's wheels only, offline
    final = stages[-1]
    installs = [r for r in final.all("RUN") if "pip install" in r]
    assert installs and "--no-index" in installs[0] and "from=builder" in installs[0]
    assert '"idq-${STAGE}"' in installs[0]
    for build_stage in stages:
        assert "STAGE" in build_stage.all("ARG"), f"{build_stage.name}: ARG STAGE not in scope"


def test_final_stage_is_slim_python_311(dockerfile: tuple[str, list[Stage]]) -> None:
    text, stages = dockerfile
    base = stages[-1].base
    for name, value in global_args(text).items():
        base = base.replace("${" + name + "}", value).replace("$" + name, value)
    assert base == "python:3.11-slim"


def test_final_stage_has_no_compilers(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    for run in stages[-1].all("RUN"):
        assert not COMPILERS.search(run.replace("--no-compile", "")), run
    assert not any("apt-get install" in r for r in stages[-1].all("RUN"))


def test_final_stage_runs_as_uid_10001(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == "10001" or any("--uid 10001" in r for r in stages[-1].all("RUN"))
    # USER must come after every RUN, so nothing later runs as root
    kws = [kw for kw, _ in stages[-1].instructions]
    assert max(i for i, kw in enumerate(kws) if kw == "RUN") < kws.index("USER")


def test_schemas_and_config_location(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert any(c.split()[-1].rstrip("/") == "/app/schemas" for c in final.all("COPY"))
    env = " ".join(final.all("ENV"))
    assert "IDQ_SCHEMA_DIR=/app/schemas" in env
    cmd = json.loads(final.all("CMD")[-1])
    assert cmd == ["--config", "/etc/idq/idq.toml"]


def test_healthcheck_uses_python_urllib(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    checks = stages[-1].all("HEALTHCHECK")
    assert len(checks) == 1
    cmd_json = checks[0][checks[0].index("CMD") + 3 :].strip()
    argv = json.loads(cmd_json)
    assert argv[:2] == ["python", "-c"]
    assert "urllib" in argv[2] and "/healthz" in argv[2] and "curl" not in checks[0]
    # the snippet itself is valid Python
    compile(argv[2], "<healthcheck>", "exec")


def test_entrypoint_is_the_stage_console_script(dockerfile: tuple[str, list[Stage]]) -> None:
    _, stages = dockerfile
    final = stages[-1]
    entry = json.loads(final.all("ENTRYPOINT")[-1])
    assert entry == ["idq-stage"]
    # exec form to a link to the stage's own script: SIGTERM reaches the service
    assert any("/usr/local/bin/idq-stage" in r and "idq-${STAGE}" in r for r in final.all("RUN"))


@pytest.mark.parametrize("stage", SERVICES)
def test_every_stage_can_be_built(stage: str) -> None:
    """What ``--build-arg STAGE=<stage>`` names: a package with the idq-<stage> script."""
    data = tomllib.loads((ROOT / "services" / stage / "pyproject.toml").read_text())
    assert data["project"]["name"] == f"idq-{stage}"
    assert f"idq-{stage}" in console_scripts(stage)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    for needed in ("common/src/", "schemas/", "services/*/src/"):
        assert needed in allowed


def test_parser_rejects_broken_file() -> None:
    with pytest.raises(AssertionError):
        parse("RUN echo before from\n")
