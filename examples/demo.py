"""`make demo`: the reuse-the-dataset loop on one machine, with nothing but Python.

Starts `replaybank serve` and one `replaybank worker` on embedded defaults (SQLite catalog, the queue on
the catalog, a local folder, CPU), then: creates a Pendulum dataset, uploads data logged by a noisy
scripted controller, trains IQL offline, evaluates it, collects online with that policy, fine-tunes on
the grown version, evaluates again, and prints a table. Everything stays in REPLAYBANK_DATA_DIR
(default ./.replaybank), so `replaybank serve` on that folder afterwards shows it all.

Environment: REPLAYBANK_DATA_DIR, REPLAYBANK_ADMIN_TOKEN (the service's admin token; made up for this
run when unset), DEMO_OFFLINE_STEPS, DEMO_FINETUNE_STEPS, DEMO_LOGGED_EPISODES, DEMO_COLLECT_EPISODES
to change the budget.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator


from cli.health import ServiceNotReady, stop_child, wait_until_healthy
from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from schemas.jobs import JobCreate, JobPublic
from workers.algos.data import arrays_to_arrow
from workers.client import ReplaybankClient, ReplaybankError
from workers.rollouts.behaviour import pendulum_dataset

REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
ENV_ID = "Pendulum-v1"
SPEC = DatasetSpec(
    observation=ObservationSpec(shape=[3]),
    action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]),
    env_id=ENV_ID,
)


def budget(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def background(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A child process with its output in `log`, stopped with SIGTERM (then SIGKILL) on the way out."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop_child(process)


def free_dataset_name(client: ReplaybankClient, base: str) -> str:
    taken = {dataset.name for dataset in client.list_datasets()}
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def run_job(client: ReplaybankClient, job: JobCreate, label: str) -> JobPublic:
    submitted = client.submit_job(job)
    print(f"  {label}: job {submitted.id} on {job.dataset}@{submitted.version}", flush=True)
    last_shown = -1.0
    while True:
        current = client.get_job(submitted.id)
        if current.status in {"succeeded", "failed", "cancelled"}:
            break
        if current.progress - last_shown >= 0.1:
            losses = ", ".join(f"{key}={value:.3g}" for key, value in sorted(current.metrics.items())[:3])
            print(f"    {current.status} {current.progress:4.0%} {losses}", flush=True)
            last_shown = current.progress
        time.sleep(1.0)
    if current.status != "succeeded":
        raise SystemExit(f"{label} ended {current.status}: {current.error}")
    print(f"    succeeded{' -> policy ' + current.policy_id if current.policy_id else ''}", flush=True)
    return current


def evaluated_return(client: ReplaybankClient, dataset: str, policy_id: str, episodes: int) -> float:
    job = run_job(
        client,
        JobCreate(kind="evaluate", dataset=dataset, evaluate={"policy": policy_id, "episodes": episodes}),
        f"evaluate {policy_id}",
    )
    return job.metrics["return_mean"]


def main() -> None:
    data_dir = Path(os.environ.get("REPLAYBANK_DATA_DIR", ".replaybank")).resolve()
    logs = data_dir / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    # The service takes its admin token from the environment; without one, this run makes one up.
    admin_token = os.environ.get("REPLAYBANK_ADMIN_TOKEN") or "rb_demo_" + secrets.token_urlsafe(24)
    env = dict(os.environ, REPLAYBANK_DATA_DIR=str(data_dir))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    url = f"http://127.0.0.1:{free_port()}"
    print(f"replaybank demo: data in {data_dir}, service at {url}, logs in {logs}", flush=True)

    with ExitStack() as stack:
        service_log = logs / "service.log"
        service = stack.enter_context(
            background(
                [REPLAYBANK, "serve", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]],
                {**env, "REPLAYBANK_ADMIN_TOKEN": admin_token},
                service_log,
            )
        )
        try:
            wait_until_healthy(url, service)
        except ServiceNotReady as error:
            raise SystemExit(f"{error}; see {service_log}") from error
        client = stack.enter_context(ReplaybankClient(url, admin_token))
        worker_token = client.create_token(f"demo-worker-{stamp}-{secrets.token_hex(2)}", ["worker"]).token
        # the token through the environment, never argv (visible to every local user)
        worker_command = [REPLAYBANK, "worker", "--service", url, "--device", "cpu"]
        stack.enter_context(background(worker_command, {**env, "REPLAYBANK_TOKEN": worker_token}, logs / "worker.log"))
        loop(client)
        dashboard_token = client.create_token(f"demo-dashboard-{stamp}-{secrets.token_hex(2)}", ["write"]).token
    print(f"\nstate kept in {data_dir}: `REPLAYBANK_DATA_DIR={data_dir} replaybank serve` shows every dataset, job and policy")
    print("dashboard: run that command, open http://127.0.0.1:8000/ui and sign in with this write token (it stays valid):")
    print(f"  {dashboard_token}")


def loop(client: ReplaybankClient) -> None:
    dataset = free_dataset_name(client, "pendulum")
    client.create_dataset(dataset, SPEC, metadata={"created_by": "make demo", "behaviour": "noisy swing-up controller"})
    logged = pendulum_dataset("medium", episodes=budget("DEMO_LOGGED_EPISODES", 25), seed=0)
    uploaded = client.upload(dataset, arrays_to_arrow(logged, SPEC))
    print(f"1. created {dataset} and uploaded {uploaded.rows} logged rows -> version {uploaded.version}", flush=True)

    print("2. offline IQL on the logged data", flush=True)
    offline = run_job(
        client,
        JobCreate(kind="train", algorithm="iql", dataset=dataset, version=uploaded.version, steps=budget("DEMO_OFFLINE_STEPS", 4000), seed=0),
        "train iql",
    )
    offline_return = evaluated_return(client, dataset, offline.policy_id, episodes=10)

    print("3. collect online with the offline policy (Gaussian exploration)", flush=True)
    collected = run_job(
        client,
        JobCreate(
            kind="collect",
            dataset=dataset,
            seed=1,
            collect={
                "policy": offline.policy_id,
                "episodes": budget("DEMO_COLLECT_EPISODES", 20),
                "exploration": {"kind": "gaussian", "sigma": 0.2},
                "chunk_steps": 1000,
            },
        ),
        "collect",
    )
    grown = client.get_dataset(dataset)
    print(f"   versions {collected.result.get('versions')} appended; the dataset now has {grown.rows} rows", flush=True)

    print("4. fine-tune the offline policy on the grown version", flush=True)
    finetuned = run_job(
        client,
        JobCreate(
            kind="train",
            algorithm="iql",
            dataset=dataset,
            version="latest",
            steps=budget("DEMO_FINETUNE_STEPS", 3000),
            seed=0,
            parent_policy=offline.policy_id,
        ),
        "fine-tune iql",
    )
    finetuned_return = evaluated_return(client, dataset, finetuned.policy_id, episodes=10)

    versions = {version.version: version for version in client.versions(dataset)}
    rows = [
        ("offline IQL", offline.version, versions[offline.version].rows, offline.policy_id, "-", offline_return),
        ("fine-tuned IQL", finetuned.version, versions[finetuned.version].rows, finetuned.policy_id, offline.policy_id, finetuned_return),
    ]
    print(f"\n{'stage':<16}{'version':>8}{'rows':>8}  {'policy':<34}{'parent':<34}{'return':>9}")
    for stage, version, count, policy, parent, mean_return in rows:
        print(f"{stage:<16}{version:>8}{count:>8}  {policy:<34}{parent:<34}{mean_return:>9.1f}")
    sources = client.version_stats(dataset, finetuned.version).sources
    print(f"rows by source in version {finetuned.version}: {sources}")


if __name__ == "__main__":
    try:
        main()
    except ReplaybankError as error:
        raise SystemExit(f"demo failed: {error}") from None
