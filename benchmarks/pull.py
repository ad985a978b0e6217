"""Pull speed: a version's files through the client's cache, beside pyarrow's read_table of the same files.

    .venv/bin/python benchmarks/pull.py [--rows 1000000]

Targets (issue 2): a full pull at least 0.7x the rows/s of `pyarrow.parquet.read_table` on the same
files, measured in the same run; pulling a version that adds 1% of rows moves at most 2% of the bytes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _common import HOPPER, best_of_rounds, hopper_rows, process_cpu_seconds, running_service, verdict

from workers.client import ReplaybankClient
from workers.client.pull.cache import FileCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    added_rows = args.rows // 100

    with tempfile.TemporaryDirectory(prefix="replaybank-bench-") as folder:
        root = Path(folder)
        with running_service(root / "service") as service, ReplaybankClient(service.url, service.token) as client:
            client.create_dataset("hopper", HOPPER)
            first = client.upload("hopper", hopper_rows(args.rows)).version
            episodes = -(-args.rows // 1000)
            second = client.upload("hopper", hopper_rows(added_rows, first_episode=episodes, seed=1)).version

            paths = client.pull_files("hopper", first).paths
            cold_caches = iter(FileCache(root / f"cache-{i}") for i in range(args.repeats + 1))
            warm_cache = client.cache

            def raw_read() -> None:
                assert pa.concat_tables([pq.read_table(path) for path in paths]).num_rows == args.rows

            def cold_pull() -> None:
                client.cache = next(cold_caches)
                assert client.pull("hopper", first).num_rows == args.rows

            def warm_pull() -> None:
                client.cache = warm_cache
                assert client.pull("hopper", first).num_rows == args.rows

            # Rounds interleave the three, so a busy spell on the shared machine hits them alike.
            read_seconds, cold_seconds, warm_seconds = best_of_rounds(args.repeats, [raw_read, cold_pull, warm_pull])

            # Where the CPU goes, measured apart from the timed rounds: on a machine with few cores the
            # service's sending, the download, the checksum and the decoding all compete for them.
            start = time.process_time()
            raw_read()
            read_cpu = time.process_time() - start
            service_start, start = process_cpu_seconds(service.pid), time.process_time()
            cold_pull()
            pull_cpu, service_end = time.process_time() - start, process_cpu_seconds(service.pid)
            service_cpu = service_end - service_start if service_start is not None and service_end is not None else None
            client.cache = warm_cache

            incremental = client.pull_files("hopper", second)
            ratio_bytes = incremental.transferred_bytes / incremental.total_bytes
            size = sum(path.stat().st_size for path in paths)

    read_rate, cold_rate, warm_rate = (args.rows / s for s in (read_seconds, cold_seconds, warm_seconds))
    print(f"pull of {args.rows:,} Hopper-shaped rows ({len(paths)} file(s), {size / 1e6:.0f} MB), best of {args.repeats}")
    print(f"  pyarrow.parquet.read_table of the same files  {read_rate:>12,.0f} rows/s  ({read_seconds:.2f} s)")
    print(f"  client.pull, empty cache (download+verify+read) {cold_rate:>10,.0f} rows/s  ({cold_seconds:.2f} s)")
    print(f"    ratio to read_table                         {cold_rate / read_rate:>12.2f}   {verdict(cold_rate / read_rate, 0.7)}")
    cores = os.cpu_count() or 1
    print(f"    CPU seconds: read_table {read_cpu:.2f}; cold pull {pull_cpu:.2f} in the client", end="")
    if service_cpu is not None:
        floor = (pull_cpu + service_cpu) / cores
        print(f" + {service_cpu:.2f} in the service = {pull_cpu + service_cpu:.2f}, over {cores} cores at least {floor:.2f} s")
        print(f"    best ratio these CPU seconds allow here: {read_seconds / max(floor, read_seconds):.2f}")
    else:
        print()
    print(f"  client.pull, files cached                     {warm_rate:>12,.0f} rows/s  ({warm_seconds:.2f} s)")
    print(f"    ratio to read_table                         {warm_rate / read_rate:>12.2f}   {verdict(warm_rate / read_rate, 0.7)}")
    print(
        f"  version adding {added_rows:,} rows (1%): {incremental.transferred_bytes:,} of {incremental.total_bytes:,} bytes moved"
    )
    print(f"    ratio of bytes moved                        {ratio_bytes:>12.4f}   {verdict(ratio_bytes, 0.02, higher_is_better=False)}")


if __name__ == "__main__":
    main()
