"""Waiting for a `replaybank serve` that a program has just started to answer, and stopping it again.

For the tests', benchmarks' and demo's helpers that run the service (or a worker) as a child process. It lives
beside the command it waits for, in the installed `cli` package, so each of them imports it from any
working folder (`python examples/demo.py` included) without a copy; it needs httpx, not click.
"""

from __future__ import annotations

import subprocess
import time

import httpx


class ServiceNotReady(Exception):
    """A service being started did not come up: its process ended, or /healthz never answered."""


def wait_until_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Poll `url`/healthz until it answers 200.

    Raises `ServiceNotReady` when `process` exits first or `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceNotReady(f"the service exited with status {process.returncode}")
        try:
            if httpx.get(f"{url.rstrip('/')}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ServiceNotReady(f"the service did not answer {url}/healthz within {timeout:g} s")


def stop_child(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, so the child shuts down as it would for a user, then SIGKILL if it is not gone in `timeout` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
