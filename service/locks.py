"""Named locks that order the work replicas share: a dataset's commits, start-up, compaction, the lease sweeper.

With a PostgreSQL catalog every replica of a deployment takes the same session-level advisory locks, so a
lock held by one replica is held for all of them; a replica that dies (even by SIGKILL) loses its database
connection and with it every lock it held. With SQLite the service is one process and the locks are
ordinary thread locks.

A process first takes a thread lock of its own for the name and only then the advisory lock, so threads of
one replica waiting for the same dataset queue in the process and hold one database connection between them.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager

import anyio.to_thread

from sqlalchemy import Connection, Engine, create_engine, text


class Locks(ABC):
    shared: bool
    """Whether the locks order every replica of the deployment, or only this process's threads."""

    def __init__(self) -> None:
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _thread_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._local.setdefault(name, threading.Lock())

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Wait for the lock called `name` and hold it for the block."""
        with self._thread_lock(name), self._held(name, wait=True):
            yield

    @contextmanager
    def try_hold(self, name: str) -> Iterator[bool]:
        """Hold the lock for the block if nobody holds it now; yields whether it is held. Never waits."""
        local = self._thread_lock(name)
        if not local.acquire(blocking=False):
            yield False
            return
        try:
            with self._held(name, wait=False) as held:
                yield held
        finally:
            local.release()

    @asynccontextmanager
    async def try_hold_async(self, name: str) -> AsyncIterator[bool]:
        """`try_hold` for the event loop: taking and letting go run on a thread."""
        holding = self.try_hold(name)
        held = await anyio.to_thread.run_sync(holding.__enter__)
        try:
            yield held
        finally:
            await anyio.to_thread.run_sync(holding.__exit__, None, None, None)

    @abstractmethod
    def _held(self, name: str, wait: bool) -> AbstractContextManager[bool]:
        """The lock across the deployment, taken once this process's thread lock is held."""

    def close(self) -> None:
        """Let go of what the locks hold open (every lock is released by then)."""


class ThreadLocks(Locks):
    """One process is the whole deployment: its thread locks are enough."""

    shared = False

    @contextmanager
    def _held(self, name: str, wait: bool) -> Iterator[bool]:
        yield True


class AdvisoryLocks(Locks):
    """PostgreSQL session-level advisory locks, one 64-bit key per name, each on a connection held for the block.

    The connections come from a pool of their own: a commit holds its lock's connection while the catalog
    writes on others, so sharing the catalog's pool could leave every connection held by a lock."""

    shared = True

    def __init__(self, catalog_engine: Engine) -> None:
        super().__init__()
        self.engine = create_engine(catalog_engine.url, pool_pre_ping=True, pool_size=4, max_overflow=64)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _held(self, name: str, wait: bool) -> Iterator[bool]:
        key = advisory_key(name)
        with self.engine.connect() as connection:
            if wait:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                held = True
            else:
                held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
            connection.commit()  # the lock belongs to the session, not the transaction: end the transaction now
            try:
                yield held
            finally:
                if held:
                    _unlock(connection, key)


def _unlock(connection: Connection, key: int) -> None:
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        connection.commit()
    except Exception:
        # The connection broke: closing it for good ends its session, and the session's locks with it.
        connection.invalidate()


def advisory_key(name: str) -> int:
    """A signed 64-bit key for `name` (PostgreSQL's advisory lock key type), the same in every replica."""
    return int.from_bytes(hashlib.sha256(f"replaybank:{name}".encode()).digest()[:8], "big", signed=True)


def open_locks(engine: Engine) -> Locks:
    """Advisory locks on a PostgreSQL catalog (any number of replicas), thread locks on SQLite (one process)."""
    return AdvisoryLocks(engine) if engine.dialect.name == "postgresql" else ThreadLocks()
