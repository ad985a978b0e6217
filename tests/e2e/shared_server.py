"""One `replaybank serve` shared by a whole test module (each test works on datasets of its own).

Starting the service takes seconds; modules whose tests never restart or kill it share one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import Server


@contextmanager
def shared_server(root: Path) -> Iterator[Server]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    admin_token = "e2e-admin-token-" + os.urandom(8).hex()
    data_dir = root / "service-data"
    env = {**os.environ, "REPLAYBANK_DATA_DIR": str(data_dir), "REPLAYBANK_ADMIN_TOKEN": admin_token}
    for name in ("REPLAYBANK_DATABASE_URL", "REPLAYBANK_REDIS_URL"):
        env.pop(name, None)
    running = Server(f"http://127.0.0.1:{port}", admin_token, data_dir, port, env, root / "service.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
