"""`replaybank serve`: uvicorn on the app factory."""

from __future__ import annotations

import uvicorn
from filelock import FileLock, Timeout

from service.app import create_app
from service.services import LOCK_FILE, DataDirInUse
from service.settings import Settings


def ensure_data_dir_free(settings: Settings) -> None:
    """Fail early, with a clear message, when another service owns the data directory."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.data_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DataDirInUse(
            f"another replaybank service is using {settings.data_dir}; stop it or set REPLAYBANK_DATA_DIR to another folder"
        ) from None
    lock.release()


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the service until interrupted. A newly generated admin token is printed once at start-up."""
    settings = settings or Settings()
    ensure_data_dir_free(settings)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
