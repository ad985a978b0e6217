"""The compose file parses and describes the deployment the service is built for (object storage, replicas
behind a load balancer, PostgreSQL, Redis, workers on the balancer), its commands are the ones the tests
run, and the load balancer's nginx.conf is valid nginx that streams, keeps request ids and keeps the limits."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from schemas.http import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from schemas.jobs import ClaimRequest
from service.api.jobs import KEEPALIVE_SECONDS
from service.settings import Settings
from tests.conftest import free_loopback_port, service_unavailable
from tests.e2e.conftest import Server, running_server

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "docker" / "nginx.conf"
REPLAYBANK = str(Path(sys.executable).with_name("replaybank"))
REPLICA = re.compile(r"service-\d+")
STORE, BUCKET_INIT, LB = "seaweedfs", "seaweedfs-init", "lb"
CLI_SERVICES = ["service-1", "service-2", "service-3", "worker", "worker-cuda"]
# What a setting may be called in the environment: REPLAYBANK_<field>, or the standard AWS_* names.
SETTING_NAMES = {f"REPLAYBANK_{name.upper()}" for name in Settings.model_fields} | {
    alias for field in Settings.model_fields.values() if field.validation_alias for alias in field.validation_alias.choices
}


@pytest.fixture(scope="module")
def compose() -> dict:
    executable = shutil.which("docker-compose")
    if executable is None:
        service_unavailable("docker-compose is not installed (Debian: apt-get install docker-compose)")
    env = dict(
        os.environ,
        REPLAYBANK_ADMIN_TOKEN="admin-secret",
        REPLAYBANK_WORKER_TOKEN="worker-secret",
        REPLAYBANK_S3_ACCESS_KEY_ID="s3-key-id",
        REPLAYBANK_S3_SECRET_ACCESS_KEY="s3-secret-key",
    )
    result = subprocess.run(
        [executable, "--profile", "gpu", "config"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def replicas(compose: dict) -> list[str]:
    return sorted(name for name in compose["services"] if REPLICA.fullmatch(name))


def replica_settings(compose: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The replicas' environment read by the service's own settings class."""
    for name in [name for name in os.environ if name.startswith(("REPLAYBANK_", "AWS_"))]:
        monkeypatch.delenv(name)
    for name, value in compose["services"][replicas(compose)[0]]["environment"].items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def directives(name: str) -> list[str]:
    """The arguments of every `name ...;` in docker/nginx.conf."""
    return re.findall(rf"^\s*{re.escape(name)}\s+(.+?);", NGINX_CONF.read_text(), re.MULTILINE)


def upstream_servers() -> list[str]:
    upstream = re.search(r"upstream\s+replaybank\s*\{(.*?)\}", NGINX_CONF.read_text(), re.DOTALL)
    assert upstream is not None, "docker/nginx.conf has no `upstream replaybank`"
    return re.findall(r"^\s*server\s+(\S+)", upstream.group(1), re.MULTILINE)


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


def test_compose_has_the_whole_deployment(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "postgres", STORE, BUCKET_INIT, LB, "worker", "worker-cuda"} <= set(services)
    assert len(replicas(compose)) >= 2, "the service runs as interchangeable replicas behind the load balancer"
    env = services[replicas(compose)[0]]["environment"]
    assert env["REPLAYBANK_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert urlsplit(env["REPLAYBANK_DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["REPLAYBANK_REDIS_URL"]).hostname == "redis"
    for worker in ("worker", "worker-cuda"):
        worker_env = services[worker]["environment"]
        assert worker_env["REPLAYBANK_URL"] == f"http://{LB}:8000"
        # Workers hold only the balancer's URL and a token: no database, queue or bucket credentials.
        assert not any(key in worker_env for key in ("REPLAYBANK_DATABASE_URL", "REPLAYBANK_REDIS_URL", "AWS_SECRET_ACCESS_KEY"))
        assert "ports" not in services[worker]
        assert services[worker]["depends_on"][LB]["condition"] == "service_healthy"
    for name in ("redis", "postgres", STORE, LB, *replicas(compose)):
        assert "healthcheck" in services[name], name
    for name in (STORE, LB, *replicas(compose)):
        assert services[name].get("restart") == "unless-stopped", f"{name} must come back after a crash"
    # Only the balancer is published: a request that went to one replica directly would still work, but
    # clients and workers are meant to see one address.
    assert [name for name, service in services.items() if "ports" in service] == [LB]
    assert [port["target"] for port in services[LB]["ports"]] == [8000]


def test_replicas_differ_only_in_their_data_volume(compose: dict) -> None:
    services = compose["services"]
    first, *others = replicas(compose)

    def without_volumes(name: str) -> dict:
        return {key: value for key, value in services[name].items() if key != "volumes"}

    for other in others:
        assert without_volumes(other) == without_volumes(first), f"{other} is set up unlike {first}"
    data_dir = services[first]["environment"]["REPLAYBANK_DATA_DIR"]
    mounts = {name: [volume.split(":") for volume in services[name]["volumes"]] for name in replicas(compose)}
    data_volumes = [next(source for source, target, *_ in mounts[name] if target == data_dir) for name in replicas(compose)]
    # Each its own named volume: the folder holds a lock that refuses a second service on it.
    assert len(set(data_volumes)) == len(data_volumes), data_volumes
    assert set(data_volumes) <= set(compose["volumes"])
    assert all(len(mount) == 1 for mount in mounts.values()), mounts


def test_replicas_use_real_settings_and_keep_everything_in_the_store(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    env = services[replicas(compose)[0]]["environment"]
    # The settings class ignores unknown variables, so a misspelt name would silently do nothing.
    assert set(env) <= SETTING_NAMES, f"not settings: {set(env) - SETTING_NAMES}"
    settings = replica_settings(compose, monkeypatch)
    storage = urlsplit(settings.storage_url or "")
    assert storage.scheme == "s3" and storage.netloc
    endpoint = urlsplit(settings.aws_endpoint_url or "")
    # Presigned download URLs point at the endpoint, so workers must reach it under this very name.
    assert endpoint.hostname == STORE and endpoint.port == 8333
    assert endpoint.scheme == "http" and settings.aws_allow_http
    assert settings.presigned_downloads and settings.aws_region
    assert "-s3" in services[STORE]["command"] and not any(word.startswith("-s3.port=") for word in services[STORE]["command"])
    # SeaweedFS takes the pair in its environment as its admin identity: the one the replicas sign with.
    store_env = services[STORE]["environment"]
    assert settings.aws_secret_access_key is not None
    assert (store_env["AWS_ACCESS_KEY_ID"], store_env["AWS_SECRET_ACCESS_KEY"]) == (
        settings.aws_access_key_id,
        settings.aws_secret_access_key.get_secret_value(),
    )
    assert services[STORE]["image"].startswith("chrislusf/seaweedfs:")
    assert any(volume.endswith(":/data:rw") for volume in services[STORE]["volumes"])


def test_the_bucket_is_made_before_any_replica_starts(compose: dict) -> None:
    services = compose["services"]
    init = services[BUCKET_INIT]
    bucket = urlsplit(services[replicas(compose)[0]]["environment"]["REPLAYBANK_STORAGE_URL"]).netloc
    script = " ".join(init["command"])
    assert f"s3.bucket.create -name {bucket}" in script
    assert f"-master={STORE}:9333" in script
    assert f"bucket {bucket} already exists" in script, "a second `up` finds the bucket there: that is success too"
    assert init["image"] == services[STORE]["image"]
    assert init["depends_on"][STORE]["condition"] == "service_healthy"
    for replica in replicas(compose):
        assert services[replica]["depends_on"][BUCKET_INIT]["condition"] == "service_completed_successfully"
        assert {"redis", "postgres"} <= set(services[replica]["depends_on"])


def test_the_balancer_spreads_over_every_replica(compose: dict) -> None:
    services = compose["services"]
    ports = {name: services[name]["command"][services[name]["command"].index("--port") + 1] for name in replicas(compose)}
    assert sorted(upstream_servers()) == sorted(f"{name}:{port}" for name, port in ports.items())
    assert directives("listen") == ["8000"]
    assert f"{NGINX_CONF}:/etc/nginx/nginx.conf:ro" in services[LB]["volumes"]
    assert services[LB]["image"].startswith("nginx:")
    assert {name: dependency["condition"] for name, dependency in services[LB]["depends_on"].items()} == dict.fromkeys(
        replicas(compose), "service_healthy"
    )
    for name in (LB, *replicas(compose)):
        assert any("/readyz" in word for word in services[name]["healthcheck"]["test"]), name


def test_the_balancer_streams_and_keeps_the_services_limits() -> None:
    assert directives("proxy_request_buffering") == ["off"], "uploads must stream to the replica as they arrive"
    assert directives("proxy_buffering") == ["off"], "downloads and event streams must go out as written"
    (body_limit,) = directives("client_max_body_size")
    assert body_limit == f"{Settings.model_fields['max_upload_bytes'].default >> 30}g"
    longest_claim = next(meta.le for meta in ClaimRequest.model_fields["wait"].metadata if hasattr(meta, "le"))
    (read_timeout,) = directives("proxy_read_timeout")
    assert seconds(read_timeout) > max(longest_claim, KEEPALIVE_SECONDS)
    assert f"{REQUEST_ID_HEADER} $replaybank_request_id" in directives("proxy_set_header")
    # nginx keeps a client's id by the service's own rule, so the id nginx answers with is the one logged.
    kept = rf'^\s*"~{re.escape(REQUEST_ID_PATTERN)}"\s+\$http_x_request_id;'
    assert re.search(kept, NGINX_CONF.read_text(), re.MULTILINE), "the map must keep ids matching REQUEST_ID_PATTERN"


def _options(command: list[str]) -> set[str]:
    help_text = subprocess.run([REPLAYBANK, *command, "--help"], capture_output=True, text=True, check=True).stdout
    return {word.rstrip(",") for word in help_text.split() if word.startswith("--")}


def _replaybank_services(compose: dict) -> list[str]:
    return [name for name, service in compose["services"].items() if service.get("command", [None])[0] == "replaybank"]


def test_every_replaybank_service_is_checked(compose: dict) -> None:
    assert sorted(_replaybank_services(compose)) == sorted(CLI_SERVICES), "CLI_SERVICES lists what the compose file runs"


@pytest.mark.parametrize("service", CLI_SERVICES)
def test_compose_commands_are_real_cli_commands(compose: dict, service: str) -> None:
    command = compose["services"][service]["command"]
    assert command[0] == "replaybank"
    subcommand = command[1]
    flags = {word for word in command[2:] if word.startswith("--")}
    assert flags <= _options([subcommand]), f"{service} uses flags the CLI lacks: {flags - _options([subcommand])}"


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda path: path.name)
def test_images_run_the_compose_commands(compose: dict, dockerfile: Path) -> None:
    commands = {tuple(service["command"]) for service in compose["services"].values() if "command" in service}
    cmd_line = next(line for line in dockerfile.read_text().splitlines() if line.startswith("CMD "))
    image_command = tuple(yaml.safe_load(cmd_line.removeprefix("CMD ")))
    assert image_command in commands


# docker/nginx.conf run by a real nginx on loopback: the replicas' names become loopback addresses.


@pytest.fixture(scope="module")
def nginx() -> str:
    # Debian puts it in /usr/sbin, which is not on a user's PATH.
    executable = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if executable is None:
        service_unavailable("nginx is not installed (Debian: apt-get install nginx)")
    return executable


def local_config(folder: Path, upstream: str, listen: int) -> Path:
    """docker/nginx.conf with every replica at `upstream`, listening on loopback port `listen`, its temporary
    files in `folder` (the compiled-in paths need root)."""
    text, replaced = re.subn(r"server service-\d+:8000", f"server {upstream}", NGINX_CONF.read_text())
    assert replaced == len(upstream_servers())
    text, listens = re.subn(r"listen 8000;", f"listen 127.0.0.1:{listen};", text)
    assert listens == 1
    temp = "".join(f"    {kind}_temp_path {folder / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + temp, 1)
    config = folder / "nginx.conf"
    config.write_text(text)
    return config


def nginx_command(nginx: str, config: Path, *extra: str) -> list[str]:
    folder = config.parent
    return [nginx, "-e", "stderr", "-p", str(folder), "-c", str(config), "-g", f"pid {folder / 'nginx.pid'};", *extra]


def test_nginx_accepts_the_config(nginx: str, tmp_path: Path) -> None:
    checked = subprocess.run(
        nginx_command(nginx, local_config(tmp_path, "127.0.0.1:8000", free_loopback_port()), "-t"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.fixture
def balanced(nginx: str, tmp_path: Path) -> Iterator[tuple[str, Server]]:
    """A real `replaybank serve` behind docker/nginx.conf: the balancer's URL and the server."""
    with running_server(tmp_path, {"REPLAYBANK_QUERY_THREADS": "1"}) as server:
        port = free_loopback_port()
        (tmp_path / "nginx").mkdir()
        config = local_config(tmp_path / "nginx", f"127.0.0.1:{server.port}", port)
        process = subprocess.Popen(
            nginx_command(nginx, config, "-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_nginx(process, url)
            yield url, server
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_for_nginx(process: subprocess.Popen, url: str) -> None:
    """Return once nginx answers; fail with its error output if it exits first."""
    for _ in range(300):
        try:
            httpx.get(f"{url}/readyz", timeout=1)
            return
        except httpx.TransportError:
            try:
                process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {errors}") from None
    raise RuntimeError("nginx did not listen within 30 s")


def test_the_balancer_passes_request_ids_both_ways(balanced: tuple[str, Server]) -> None:
    url, server = balanced
    assert httpx.get(f"{url}/readyz").status_code == 200
    answer = httpx.get(f"{url}/v1/datasets", headers={**server.headers(), REQUEST_ID_HEADER: "through-the-lb.1"})
    assert answer.status_code == 200
    assert answer.headers[REQUEST_ID_HEADER] == "through-the-lb.1"
    # An id the service would refuse is replaced by nginx's own, which the replica then keeps.
    answer = httpx.get(f"{url}/v1/datasets", headers={**server.headers(), REQUEST_ID_HEADER: "not sane!"})
    nginx_id = answer.headers[REQUEST_ID_HEADER]
    assert re.fullmatch(REQUEST_ID_PATTERN, nginx_id) and nginx_id != "not sane!"
    server.stop()  # the access line is written after the answer: a stopped server has written all of them
    access = [json.loads(line) for line in server.log_path.read_text().splitlines() if '"replaybank.access"' in line]
    assert [line["request_id"] for line in access if line["path"] == "/v1/datasets"] == ["through-the-lb.1", nginx_id]


def test_the_balancer_streams_an_upload_to_the_replica(balanced: tuple[str, Server]) -> None:
    """With request buffering nginx would wait for the whole body before calling the replica; streaming,
    the replica answers (no such dataset) while most of the body has not been sent."""
    url, server = balanced
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=20)
    try:
        connection.putrequest("POST", "/v1/datasets/no-such-dataset/transitions")
        headers = {**server.headers(), "Content-Type": "application/vnd.apache.arrow.stream", "Content-Length": str(64 << 20)}
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(b"\0" * (64 << 10))
        answer = connection.getresponse()
        assert answer.status == 404
        assert json.loads(answer.read())["error"]["code"] == "not_found"
    finally:
        connection.close()


def test_the_balancer_refuses_an_oversized_body_in_the_services_envelope(balanced: tuple[str, Server]) -> None:
    url, server = balanced
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=20)
    try:
        connection.putrequest("POST", "/v1/datasets/any/transitions")
        limit = Settings.model_fields["max_upload_bytes"].default
        for name, value in {**server.headers(), "Content-Length": str(limit + 1), REQUEST_ID_HEADER: "too-big-1"}.items():
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413
        assert answer.getheader("Content-Type") == "application/json"
        assert answer.getheader(REQUEST_ID_HEADER) == "too-big-1"
        error = json.loads(answer.read())["error"]
        assert error == {
            "code": "payload_too_large",
            "message": f"the request body is larger than the limit of {limit} bytes (REPLAYBANK_MAX_UPLOAD_BYTES)",
            "field": "body",
            "request_id": "too-big-1",
        }
    finally:
        connection.close()
