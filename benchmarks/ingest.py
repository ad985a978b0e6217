"""Upload speed: Arrow IPC and JSON over HTTP into a real `replaybank serve`, beside pyarrow's write_table.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--json-rows 100000] [--storage-url s3://bucket/prefix]

With --storage-url the service keeps the data in that object storage (reached with the AWS_* variables of
the environment) and the baseline `write_table` writes to the same bucket through pyarrow's S3 filesystem.

Targets (issue 2): Arrow upload at least 0.5x the rows/s of `pyarrow.parquet.write_table` on the same
rows, measured in the same run; JSON upload at least 100k rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from _common import EPISODE_LENGTH, HOPPER, best_of_rounds, hopper_rows, running_service, verdict

from service.storage.stores import S3_OPTION_NAMES, S3Store
from workers.client import CONTENT_TYPES, ReplaybankClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--storage-url", help="s3://bucket/prefix: the service and the baseline write there")
    args = parser.parse_args()
    if args.storage_url:
        os.environ["REPLAYBANK_STORAGE_URL"] = args.storage_url  # the service subprocess inherits the environment
        options = {name: os.environ[name] for name in S3_OPTION_NAMES if os.environ.get(name)}
        store = S3Store(args.storage_url, options)

    # Every round appends new episodes (a row after an episode's end is refused), so each gets its own rows.
    episodes_per_round = -(-args.rows // EPISODE_LENGTH) + -(-args.json_rows // EPISODE_LENGTH)
    arrow_tables = iter([hopper_rows(args.rows, first_episode=r * episodes_per_round, seed=r) for r in range(args.rounds)])
    json_bodies = iter(
        [
            # Encoding JSON in Python is the uploader's cost, not the service's; it stays out of the timing.
            json.dumps({"rows": hopper_rows(args.json_rows, first_episode=(r + 1) * episodes_per_round - 100, seed=r).to_pylist()}).encode()
            for r in range(args.rounds)
        ]
    )
    baseline = hopper_rows(args.rows)

    with tempfile.TemporaryDirectory(prefix="replaybank-bench-") as folder:
        root = Path(folder)
        with running_service(root / "service") as service, ReplaybankClient(service.url, service.token) as client:
            client.create_dataset("hopper", HOPPER)
            json_size = 0

            def write_table() -> None:
                if args.storage_url:
                    pq.write_table(baseline, store.fs_path("baseline.parquet"), filesystem=store.filesystem)
                else:
                    pq.write_table(baseline, root / "baseline.parquet")

            def arrow_upload() -> None:
                assert client.upload("hopper", next(arrow_tables)).rows == args.rows

            def json_upload() -> None:
                nonlocal json_size
                body = next(json_bodies)
                json_size = len(body)
                assert client.upload_body("hopper", body, content_type=CONTENT_TYPES["json"]).rows == args.json_rows

            # Rounds interleave the three, so a busy spell on the shared machine hits them alike.
            write_seconds, arrow_seconds, json_seconds = best_of_rounds(args.rounds, [write_table, arrow_upload, json_upload])

    write_rate = args.rows / write_seconds
    arrow_rate = args.rows / arrow_seconds
    json_rate = args.json_rows / json_seconds
    where = f"object storage {args.storage_url}" if args.storage_url else "the local data folder"
    print(f"ingest of {args.rows:,} Hopper-shaped rows ({EPISODE_LENGTH}-step episodes) into {where}, one upload each, best of {args.rounds}")
    print(f"  pyarrow.parquet.write_table  {write_rate:>12,.0f} rows/s  ({write_seconds:.2f} s)")
    print(f"  Arrow IPC upload over HTTP   {arrow_rate:>12,.0f} rows/s  ({arrow_seconds:.2f} s)")
    print(f"    ratio to write_table       {arrow_rate / write_rate:>12.2f}   {verdict(arrow_rate / write_rate, 0.5)}")
    print(f"  JSON upload ({args.json_rows:,} rows, {json_size / 1e6:.0f} MB)")
    print(f"                               {json_rate:>12,.0f} rows/s  ({json_seconds:.2f} s)")
    print(f"    ratio to 100k rows/s       {json_rate / 100_000:>12.2f}   {verdict(json_rate / 100_000, 1.0)}")


if __name__ == "__main__":
    main()
