"""Upload speed: Arrow IPC and JSON over HTTP into a real `replaybank serve`, beside pyarrow's write_table.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--json-rows 100000] [--rounds 3]
                                          [--seaweedfs | --storage-url s3://bucket/prefix]

With --seaweedfs the service keeps the data in a throwaway SeaweedFS started here (tests/seaweedfs.py); with
--storage-url in that object storage (reached with the AWS_* variables of the environment). Either way the
baseline `write_table` writes to the same bucket through pyarrow's S3 filesystem.

The first upload goes to a service that has just started and a dataset that has just been created, as a
user's first upload does; the report gives it beside the best of the rounds. Both are compared with the
fastest `write_table` of the rounds (the strictest baseline).

Targets (issues 2 and 13): a single Arrow upload at least 0.5x the rows/s of `pyarrow.parquet.write_table`
on the same rows to the same place, measured in the same run; JSON upload at least 100k rows/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
from _common import EPISODE_LENGTH, HOPPER, hopper_rows, object_store, running_service, timed_rounds, verdict

from service.storage.stores import open_store
from workers.client import CONTENT_TYPES, ReplaybankClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    where_group = parser.add_mutually_exclusive_group()
    where_group.add_argument("--seaweedfs", action="store_true", help="keep the data in a throwaway SeaweedFS started here")
    where_group.add_argument("--storage-url", help="s3://bucket/prefix: the service and the baseline write there")
    args = parser.parse_args()

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

    with tempfile.TemporaryDirectory(prefix="replaybank-bench-") as folder, ExitStack() as stack:
        root = Path(folder)
        settings: dict[str, str] = {}
        storage_url, store_env = None, {}
        if args.seaweedfs or args.storage_url:
            storage_url, store_env, _ = stack.enter_context(object_store(root / "seaweedfs", args.storage_url))
            settings = {**store_env, "REPLAYBANK_STORAGE_URL": storage_url}
        # Where the baseline writes: the same bucket as the service, or a folder beside its data folder.
        store = open_store(storage_url, root / "baseline", store_env)
        service = stack.enter_context(running_service(root / "service", settings))
        client = stack.enter_context(ReplaybankClient(service.url, service.token))
        client.create_dataset("hopper", HOPPER)
        json_size = 0

        def write_table() -> None:
            pq.write_table(baseline, store.fs_path("baseline.parquet"), filesystem=store.filesystem)

        def arrow_upload() -> None:
            assert client.upload("hopper", next(arrow_tables)).rows == args.rows

        def json_upload() -> None:
            nonlocal json_size
            body = next(json_bodies)
            json_size = len(body)
            assert client.upload_body("hopper", body, content_type=CONTENT_TYPES["json"]).rows == args.json_rows

        # The first Arrow upload is the service's first request after creating the dataset.
        arrow_times, write_times, json_times = timed_rounds(args.rounds, [arrow_upload, write_table, json_upload])
        location = storage_url or "the local data folder"

    write_rate = args.rows / min(write_times)
    first_rate, best_rate = args.rows / arrow_times[0], args.rows / min(arrow_times)
    json_rate = args.json_rows / min(json_times)
    print(f"ingest of {args.rows:,} Hopper-shaped rows ({EPISODE_LENGTH}-step episodes) into {location}, {args.rounds} rounds")
    print(f"  pyarrow.parquet.write_table, best  {write_rate:>12,.0f} rows/s  ({min(write_times):.2f} s; first {write_times[0]:.2f} s)")
    print(f"  Arrow IPC upload over HTTP, first  {first_rate:>12,.0f} rows/s  ({arrow_times[0]:.2f} s)")
    print(f"    ratio to write_table             {first_rate / write_rate:>12.2f}   {verdict(first_rate / write_rate, 0.5)}")
    print(f"  Arrow IPC upload over HTTP, best   {best_rate:>12,.0f} rows/s  ({min(arrow_times):.2f} s; all {', '.join(f'{t:.2f}' for t in arrow_times)})")
    print(f"    ratio to write_table             {best_rate / write_rate:>12.2f}   {verdict(best_rate / write_rate, 0.5)}")
    print(f"  JSON upload ({args.json_rows:,} rows, {json_size / 1e6:.0f} MB), best")
    print(f"                                     {json_rate:>12,.0f} rows/s  ({min(json_times):.2f} s)")
    print(f"    ratio to 100k rows/s             {json_rate / 100_000:>12.2f}   {verdict(json_rate / 100_000, 1.0)}")


if __name__ == "__main__":
    main()
