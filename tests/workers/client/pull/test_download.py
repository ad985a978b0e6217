"""When bulk downloads may bypass httpx: never where the environment asks for a proxy."""

from __future__ import annotations

import pytest

from workers.client.pull.download import BulkDownloader

PROXY_VARIABLES = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"]


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_direct_without_proxies() -> None:
    assert BulkDownloader.usable_for("http://10.1.2.3:8000")
    assert BulkDownloader.usable_for("https://replaybank.example.com")


def test_a_proxy_for_the_scheme_sends_downloads_through_httpx(monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example.com:3128")
    assert not BulkDownloader.usable_for("http://10.1.2.3:8000")
    assert BulkDownloader.usable_for("https://replaybank.example.com")  # no proxy for https

    monkeypatch.setenv("all_proxy", "http://proxy.example.com:3128")
    assert not BulkDownloader.usable_for("https://replaybank.example.com")


def test_hosts_excluded_from_the_proxy_stay_direct(monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example.com:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1,.internal")
    assert BulkDownloader.usable_for("http://127.0.0.1:8000")
    assert BulkDownloader.usable_for("http://data.internal:8000")
    assert not BulkDownloader.usable_for("http://data.example.com:8000")


def test_only_http_origins() -> None:
    with pytest.raises(ValueError, match="not an http"):
        BulkDownloader("ftp://example.com", {}, 10.0, None)
