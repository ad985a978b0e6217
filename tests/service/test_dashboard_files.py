"""The dashboard's files as the service ships them: the page and every file it names, from the package,
with nothing to fetch from anywhere else and no data or token in the page itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.api.ui import UI_FILES


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the catalog plays no part here
def test_the_page_and_every_asset_it_names_are_served_without_a_token(client: TestClient) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/ui/assets/[^"]+)"', page.text)
    assert {asset.rsplit("/", 1)[1] for asset in assets} == {"style.css", "charts.js", "app.js", "pages.js"}
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.headers["content-type"].split(";")[0] in {"text/css", "text/javascript", "application/javascript"}
    assert client.get("/ui/assets/missing.js").status_code == 404
    assert "/ui" not in client.get("/openapi.json").json()["paths"]


def test_nothing_is_loaded_from_another_origin_and_the_token_stays_out_of_urls() -> None:
    for path in UI_FILES.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), path.name
        assert not re.search(r"fetch\(\s*[\"'`]https?://", text), path.name
        assert "localStorage" not in text, path.name  # session storage only: the token leaves with the tab
