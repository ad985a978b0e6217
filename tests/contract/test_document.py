"""`/docs` and `/redoc` work without the internet; the document declares the bearer scheme, the error
envelope and every method a path has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", admin_token="docs-test-admin", query_threads=1)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_documentation_pages_load_everything_from_the_service(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assert "/openapi.json" in html.text
    assert EXTERNAL.search(html.text) is None, "the page loads something from another host"
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 1000, asset


def test_the_document_declares_the_bearer_scheme_on_protected_routes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    operations = [(path, method, operation) for path, item in document["paths"].items() for method, operation in item.items()]
    for path, method, operation in operations:
        protected = path.startswith("/v1/") or path == "/metrics"
        assert (operation.get("security") == [{name: []}]) == protected, f"{method} {path}"
        if protected:
            assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"


def test_every_error_answer_is_the_envelope(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, f"{method} {path} {status}"


def test_a_405_allows_every_method_the_path_has(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, methods in [("/v1/datasets", {"GET", "POST"}), ("/v1/datasets/demo/tags/first", {"PUT", "DELETE"})]:
        template = path.replace("demo/tags/first", "{name}/tags/{tag}")
        assert {method.upper() for method in document["paths"][template]} == methods
        answer = client.patch(path)
        assert answer.status_code == 405
        assert set(answer.headers["Allow"].split(", ")) == methods
        assert answer.json()["error"]["code"] == "method_not_allowed"


def test_every_answer_declares_the_request_id_header(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                header = answer.get("headers", {}).get("X-Request-ID")
                assert header is not None and header["required"] is True, f"{method} {path} {status}"


def test_every_download_that_object_storage_can_redirect_declares_the_307(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    downloads = {
        "/v1/datasets/{name}/versions/{version}/files/{file}": [],
        "/v1/policies/{policy_id}/artifact": [],
        "/v1/jobs/{job_id}/checkpoint": ["Replaybank-Step"],  # the worker reads the step off the 307
        "/v1/jobs/{job_id}/dynamics": [],
    }
    for path, extra in downloads.items():
        redirect = document["paths"][path]["get"]["responses"]["307"]
        assert {"Location", *extra} <= set(redirect["headers"]), path
