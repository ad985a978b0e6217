"""benchmarks/scale.py: one tiny run of the whole script against real PostgreSQL, Redis and SeaweedFS, two replicas."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_reports_commits_catalog_rows_and_pulls(seaweedfs: SeaweedFS, postgres_server_url: str, redis_url: str) -> None:
    # The script takes a Redis database of its own beside this test's (the same lock files), so it only needs the server.
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--uploads", "6", "--clients", "2", "--replicas", "2",
         "--episodes", "400", "--repeats", "2", "--rounds", "1",
         "--storage-url", f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}", "--postgres", postgres_server_url, "--redis", redis_url],
        env={**os.environ, **seaweedfs.env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    out = finished.stdout

    rates = re.findall(r"(\d) replica\(s\), (one dataset|2 datasets) +([\d.]+) commits/s", out)
    # embedded: 1 replica; shared: 1 and 2 replicas; each to one dataset and to two
    assert len(rates) == 6 and all(float(rate) > 0 for *_, rate in rates), out
    assert "2 replicas / 1 replica: one dataset" in out
    # one episode and one file per small upload (too few for compaction), one version row per commit and dataset
    assert re.search(r"dataset_episodes +\d+ rows +1\.00 per commit", out), out
    assert re.search(r"dataset_files +\d+ rows +1\.00 per commit", out), out
    assert re.search(r"episodes +1 +400\n", out), out
    for way in ("through the service", "presigned redirect"):
        for pullers in (1, 4):
            assert re.search(rf"{pullers} puller\(s\), {way} +\d+ MB/s  service CPU", out), out
