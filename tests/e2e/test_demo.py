"""`make demo` runs the whole loop and leaves state that a later `replaybank serve` shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import running_server
from workers.client import ReplaybankClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_the_loop_and_a_later_service_shows_it_all(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("REPLAYBANK_")},
        "REPLAYBANK_DATA_DIR": str(data_dir),
        "REPLAYBANK_CACHE_DIR": str(tmp_path / "cache"),
        "DEMO_LOGGED_EPISODES": "4",
        "DEMO_OFFLINE_STEPS": "300",
        "DEMO_COLLECT_EPISODES": "3",
        "DEMO_FINETUNE_STEPS": "200",
    }
    demo = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], env=env, capture_output=True, text=True, timeout=600
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    table = re.findall(r"^(offline IQL|fine-tuned IQL)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(-?\d+\.\d)$", demo.stdout, re.M)
    assert [row[0] for row in table] == ["offline IQL", "fine-tuned IQL"], demo.stdout
    (_, offline_version, offline_rows, offline_policy, _, _), (_, grown_version, grown_rows, tuned_policy, parent, _) = table
    assert parent == offline_policy
    assert int(grown_version) > int(offline_version) and int(grown_rows) == int(offline_rows) + 3 * 200

    with running_server(tmp_path, data_dir=data_dir) as later, ReplaybankClient(later.url, later.admin_token) as client:
        (dataset,) = client.list_datasets()
        assert dataset.latest_version == int(grown_version) and dataset.rows == int(grown_rows)
        sources = client.version_stats(dataset.name, grown_version).sources
        assert sources == {"logged": int(offline_rows), f"policy:{offline_policy}": 3 * 200}
        jobs = client.list_jobs(limit=100).data
        assert sorted(job.kind for job in jobs) == ["collect", "evaluate", "evaluate", "train", "train"]
        assert all(job.status == "succeeded" for job in jobs)
        tuned = client.get_policy(tuned_policy)
        assert tuned.parent_policy == offline_policy and tuned.version == int(grown_version)
        assert {policy.id for policy in client.list_policies()} == {offline_policy, tuned_policy}
        # the token printed for the dashboard signs in there and may submit jobs
        (dashboard_token,) = re.findall(r"^  (rb_\S+)$", demo.stdout, re.M)
        itself = httpx.get(f"{later.url}/v1/whoami", headers={"Authorization": f"Bearer {dashboard_token}"})
        assert itself.status_code == 200 and itself.json()["scopes"] == ["write"]
        assert httpx.get(f"{later.url}/ui").status_code == 200
