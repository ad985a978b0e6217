"""Bulk downloads of large immutable files with the standard library's `http.client`.

httpx reads a response 64 KiB at a time and passes every piece through its parser into a new bytes
object; for a 92 MB dataset file that took 0.12-0.18 CPU-seconds against 0.02-0.03 s for reading
the same body with `readinto`, a megabyte at a time, into one reused buffer. Only GETs of large
files go this way, on a connection of their own; everything else stays on the client's httpx pool.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

PIECE = 1 << 20
"""Bytes read from the socket per call (and handed on per chunk)."""


class TransferFailed(Exception):
    """The connection failed or broke before the whole body arrived (the request may be repeated)."""


@dataclass
class Opened:
    status: int
    headers: Mapping[str, str]
    pieces: Iterator[bytes]
    """The body; closes the connection when exhausted or closed."""


class BulkDownloader:
    """GETs on one HTTP(S) origin, each on a fresh connection, with the body read in large pieces."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float, ssl_context: ssl.SSLContext | None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = dict(headers)
        self._timeout = timeout
        self._ssl_context = ssl_context

    @staticmethod
    def usable_for(base_url: str) -> bool:
        """False when the environment routes this origin through a proxy (httpx honours those; we do not)."""
        parts = urlsplit(base_url)
        proxies = getproxies_environment()
        if not (proxies.get(parts.scheme) or proxies.get("all")):
            return True
        return bool(parts.hostname) and bool(proxy_bypass_environment(parts.hostname, proxies))

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Opened:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request("GET", self._prefix + path, headers={**self._headers, **(headers or {})})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise TransferFailed(f"GET {path}: {error or type(error).__name__}") from error
        return Opened(response.status, dict(response.headers.items()), _pieces(path, connection, response))


def _pieces(path: str, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> Iterator[bytes]:
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    try:
        while count := response.readinto(view):
            yield bytes(view[:count])
    except (OSError, http.client.HTTPException) as error:
        raise TransferFailed(f"GET {path}: {error or type(error).__name__}") from error
    finally:
        response.close()
        connection.close()
