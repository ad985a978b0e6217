"""The compose file parses, and the commands it runs are the ones the tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import service_unavailable

ROOT = Path(__file__).resolve().parents[1]
REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))


@pytest.fixture(scope="module")
def compose() -> dict:
    executable = shutil.which("docker-compose")
    if executable is None:
        service_unavailable("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = dict(os.environ, REPLAYBANK_ADMIN_TOKEN="admin-secret", REPLAYBANK_WORKER_TOKEN="worker-secret")
    result = subprocess.run(
        [executable, "--profile", "gpu", "config"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_has_the_whole_deployment(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "service", "worker", "worker-cuda"} <= set(services)
    service_env = services["service"]["environment"]
    assert service_env["REPLAYBANK_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert service_env["REPLAYBANK_REDIS_URL"].startswith("redis://redis:")
    for worker in ("worker", "worker-cuda"):
        env = services[worker]["environment"]
        assert env["REPLAYBANK_URL"] == "http://service:8000"
        # Workers hold only the service URL and a token: no database or queue credentials.
        assert not any(key in env for key in ("REPLAYBANK_DATABASE_URL", "REPLAYBANK_REDIS_URL"))
        assert "worker" not in services[worker].get("ports", [])
    for name in ("redis", "postgres", "service"):
        assert "healthcheck" in services[name], name


def _options(command: list[str]) -> set[str]:
    help_text = subprocess.run([REPLAYBANK, *command, "--help"], capture_output=True, text=True, check=True).stdout
    return {word.rstrip(",") for word in help_text.split() if word.startswith("--")}


@pytest.mark.parametrize("service", ["service", "worker", "worker-cuda"])
def test_compose_commands_are_real_cli_commands(compose: dict, service: str) -> None:
    command = compose["services"][service]["command"]
    assert command[0] == "replaybank"
    subcommand = command[1]
    flags = {word for word in command[2:] if word.startswith("--")}
    assert flags <= _options([subcommand]), f"{service} uses flags the CLI lacks: {flags - _options([subcommand])}"


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda path: path.name)
def test_images_run_the_compose_commands(compose: dict, dockerfile: Path) -> None:
    commands = {tuple(service["command"]) for service in compose["services"].values() if "command" in service}
    cmd_line = next(line for line in dockerfile.read_text().splitlines() if line.startswith("CMD "))
    image_command = tuple(yaml.safe_load(cmd_line.removeprefix("CMD ")))
    assert image_command in commands
