"""The dashboard: `/ui` answers the page, `/ui/assets` its script and style, all shipped in `service/ui`.

The page holds no data and no token; it signs in with a token kept in the browser's session storage and
reads everything through the `/v1` API with an `Authorization` header, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

UI_FILES = Path(__file__).resolve().parent.parent / "ui"
ASSETS = "/ui/assets"

router = APIRouter(include_in_schema=False)


CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",  # scripts, styles and API calls from the service alone: no CDN, no injected script
    "style-src 'self' 'unsafe-inline'",  # the widths of progress bars are style attributes
    "img-src 'self' data: blob:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'none'",
])  # fmt: skip
"""The page holds a token in session storage: it runs no script but its own, and no other site frames it."""


@router.get("/ui")
def dashboard() -> FileResponse:
    # no-store: a new release's page must not pair with an old cached script
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
    return FileResponse(UI_FILES / "index.html", media_type="text/html", headers=headers)


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=UI_FILES), name="ui-assets")
