"""benchmarks/ingest.py: one tiny run into a throwaway SeaweedFS, so the script and its report stay working."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_reports_the_first_upload_and_the_best_against_write_table_to_the_same_bucket(seaweedfs: SeaweedFS) -> None:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ingest.py"), "--rows", "3000", "--json-rows", "1000", "--rounds", "2",
         "--storage-url", f"s3://{seaweedfs.bucket}/{uuid.uuid4().hex}"],
        env={**os.environ, **seaweedfs.env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-4000:]
    out = finished.stdout
    assert f"into s3://{seaweedfs.bucket}/" in out, out
    for line in ("pyarrow.parquet.write_table, best", "Arrow IPC upload over HTTP, first", "Arrow IPC upload over HTTP, best"):
        assert re.search(rf"{re.escape(line)} +[\d,]+ rows/s", out), out
    ratios = re.findall(r"ratio to write_table +([\d.]+) +(meets|MISSES) target >= 0.5", out)
    assert len(ratios) == 2 and all(float(ratio) > 0 for ratio, _ in ratios), out
    # Every round's upload landed: the script asserts the rows of each answer.
    assert re.search(r"all [\d.]+, [\d.]+\)", out), out
