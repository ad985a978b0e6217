"""Settings come from REPLAYBANK_* variables; unsafe values are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("REPLAYBANK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("REPLAYBANK_MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("REPLAYBANK_QUERY_MEMORY_LIMIT", "512mb")
    settings = Settings()
    assert settings.data_dir == (tmp_path / "d").resolve() and settings.max_upload_bytes == 2048
    assert settings.query_memory_limit == "512MB"
    assert settings.catalog_url == f"sqlite:///{(tmp_path / 'd').resolve() / 'catalog.sqlite'}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"admin_token": "short"},
        {"admin_token": "aaaaaaaaaaaaaaaaaaaa"},
        {"worker_token": "short"},
        {"max_upload_bytes": 0},
        {"lease_seconds": -1},
        {"query_max_rows": 0},
        {"query_memory_limit": "lots"},
        {"database_url": "mysql://x"},
    ],
)
def test_unsafe_values_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_without_a_configured_admin_token_one_is_generated_once(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.services import open_services

    settings = Settings(data_dir=tmp_path)
    with open_services(settings) as services:
        generated = services.generated_admin_token
        assert generated and services.tokens.authenticate(generated).allows("admin")
    assert generated in capsys.readouterr().err
    with open_services(settings) as services:
        assert services.generated_admin_token is None
        assert services.tokens.authenticate(generated) is not None
    assert generated not in (tmp_path / "catalog.sqlite").read_bytes().decode(errors="replace")


def test_a_configured_worker_token_gets_the_worker_scope_only(tmp_path) -> None:
    from service.services import open_services

    worker_secret = "worker-secret-0123456789"
    with open_services(Settings(data_dir=tmp_path, worker_token=worker_secret)) as services:
        principal = services.tokens.authenticate(worker_secret)
        assert principal is not None and principal.allows("worker") and not principal.allows("write")
    rotated = "rotated-worker-9876543210"
    with open_services(Settings(data_dir=tmp_path, worker_token=rotated)) as services:
        assert services.tokens.authenticate(worker_secret) is None
        assert services.tokens.authenticate(rotated).allows("worker")
