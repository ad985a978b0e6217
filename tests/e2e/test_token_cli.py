"""`replaybank token` goes through the API: it works from any folder, and the service honours what it does."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx

from tests.e2e.conftest import REPLAYBANK, Server


def test_token_create_list_and_revoke_from_an_unrelated_folder(server: Server, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Nothing points at the service's data: only its URL and an admin token.
    env = {name: value for name, value in os.environ.items() if not name.startswith("REPLAYBANK_")}
    env.update({"REPLAYBANK_URL": server.url, "REPLAYBANK_TOKEN": server.admin_token})

    def replaybank(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([REPLAYBANK, *args], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"replaybank {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def datasets_status(secret: str) -> int:
        return httpx.get(f"{server.url}/v1/datasets", headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code

    created = replaybank("token", "create", "ci-reader", "--scope", "read")
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n"  # the secret alone, for `$(replaybank token create ...)`
    assert datasets_status(secret) == 200
    assert list(elsewhere.iterdir()) == []  # no local catalog was made

    listed = replaybank("token", "list").stdout
    assert listed.splitlines()[0].split() == ["id", "name", "scopes", "created", "revoked"]
    row = re.search(r"^(\w+)\s+ci-reader\s+read\s+\S+ \S+\s+no$", listed, re.MULTILINE)
    assert row is not None, listed

    replaybank("token", "revoke", "ci-reader")
    assert datasets_status(secret) == 401
    assert re.search(rf"^{row.group(1)}\s+ci-reader\s+read\s+\S+ \S+\s+yes$", replaybank("token", "list").stdout, re.MULTILINE)


def test_token_create_without_an_admin_token_is_one_line_and_creates_nothing(server: Server, tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REPLAYBANK_")}
    result = subprocess.run(
        [REPLAYBANK, "token", "create", "nobody", "--service", server.url],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "401" in result.stderr and "Traceback" not in result.stderr
    names = [token["name"] for token in httpx.get(f"{server.url}/v1/tokens", headers=server.headers(), timeout=10).json()["data"]]
    assert "nobody" not in names
