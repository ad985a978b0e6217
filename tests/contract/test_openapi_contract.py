"""Schemathesis, all checks, against a real `replaybank serve`: every answer is one the document declares,
in the declared shape, with the declared headers; what the schema allows is accepted and what it forbids
is refused. Seeded and bounded (about two minutes on two cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, running_server

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
SEED = 20261201
MAX_EXAMPLES = 40
RUN_TIMEOUT_S = 480

pytestmark = pytest.mark.slow


def seed(server: Server) -> None:
    """A dataset with a version and a tag, and a second token: the stateful phase follows links from them."""
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as client:
        spec = {"name": "demo", "observation": {"shape": [2]}, "action": {"kind": "discrete", "n": 2}}
        client.post("/v1/datasets", json=spec).raise_for_status()
        rows = [
            {"episode_id": 0, "step": step, "observation": [0.0, 1.0], "action": 1, "reward": 1.0,
             "next_observation": [1.0, 0.0], "terminal": step == 2, "truncated": False}
            for step in range(3)
        ]
        client.post("/v1/datasets/demo/transitions", json={"rows": rows}).raise_for_status()
        client.put("/v1/datasets/demo/tags/first", json={"version": 1}).raise_for_status()
        client.post("/v1/tokens", json={"name": "reader", "scopes": ["read"]}).raise_for_status()


def test_the_service_keeps_its_openapi_document(tmp_path: Path) -> None:
    with running_server(tmp_path, {"REPLAYBANK_QUERY_THREADS": "1"}) as server:
        seed(server)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
        }
        command = [
            SCHEMATHESIS, "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{server.url}/openapi.json",
            "--checks", "all",
            "--header", f"Authorization: Bearer {server.admin_token}",
            "--seed", str(SEED),
            "--max-examples", str(MAX_EXAMPLES),
            "--workers", "2",
            "--request-timeout", "20",
            "--no-color",
        ]  # fmt: skip
        run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        alive = server.process is not None and server.process.poll() is None
    report = run.stdout[-20000:] + run.stderr[-5000:]
    assert alive, f"the service died during the run:\n{server.log()}\n{report}"
    assert run.returncode == 0, report
