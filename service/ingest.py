"""Ingest: an upload body, as it arrives, becomes the dataset's next version.

An Arrow stream or JSON rows are validated and written while they arrive (`BodyPipe` carries the chunks
to a reader thread), so an upload costs about the longer of the transfer and the write, not their sum;
Parquet needs its footer first and is buffered whole, and so is a retry whose idempotency key is known.
The commit is serialised per dataset (`Datasets.lock`) and catches the catalog up to the Delta log first.
Nothing is visible before the commit; a failed upload leaves no file behind. A client that hangs up
before its whole body arrived is an ordinary event: one INFO line, nothing committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
import pyarrow as pa
from starlette.requests import ClientDisconnect

from schemas.dataset import AppendResult, DatasetSpec
from schemas.http import ARROW_STREAM, IDEMPOTENCY_KEY_HEADER, PARQUET
from schemas.transition import EpisodeSummary, TransitionError, conform, conform_rows, summarize_episodes
from service import fingerprints
from service import stats as statistics
from service import uploads
from service.catalog import EpisodeState
from service.catalog.tables import DatasetRow
from service.compaction import Compaction
from service.datasets import Datasets, spec_of
from service.errors import ApiError, not_found
from service.observability.metrics import ServiceMetrics
from service.recovery import catch_up
from service.storage.datasets import DataFile
from service.storage.staging import StagedFile

log = logging.getLogger("replaybank.ingest")


@dataclass(frozen=True)
class PreparedUpload:
    """An upload that passed validation and sits staged, waiting for its commit."""

    dataset_id: str
    staged: StagedFile
    episodes: EpisodeSummary
    moments: statistics.UploadMoments
    lanes: fingerprints.EpisodeLanes
    batch_id: str


class Ingest:
    def __init__(self, datasets: Datasets, compaction: Compaction, metrics: ServiceMetrics) -> None:
        self.datasets = datasets
        self.metrics = metrics
        self.catalog = datasets.catalog
        self.storage = datasets.storage
        self.compaction = compaction
        self._side_work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="replaybank-stats")

    def close(self) -> None:
        self._side_work.shutdown(wait=True)

    async def append(
        self, name: str, body: AsyncIterable[bytes], content_type: str | None, idempotency_key: str | None
    ) -> AppendResult:
        """Take an upload body as it arrives and commit it as the next version; the answer `{version, rows}`.
        The size limit is enforced by the body-size middleware as the chunks arrive."""
        kind = uploads.media_type(content_type)
        await anyio.to_thread.run_sync(self.datasets.get, name)
        counted = _CountedBody(body)
        try:
            result = await self._append(name, counted, kind, idempotency_key)
        except ClientDisconnect:
            log.info(
                "dataset %s: the client disconnected after %d bytes of its upload; nothing was committed", name, counted.received
            )
            raise ApiError(400, "bad_request", "the client disconnected before the whole body arrived", "body") from None
        if not result.replayed:
            self.metrics.upload_accepted(name, result.rows, counted.received)
        return result

    async def _append(self, name: str, body: AsyncIterable[bytes], kind: str, idempotency_key: str | None) -> AppendResult:
        if kind != PARQUET and not (idempotency_key and await anyio.to_thread.run_sync(self._knows_key, name, idempotency_key)):
            return await self._append_streamed(name, body, kind, idempotency_key)
        whole = bytearray()
        digest = hashlib.sha256()
        async for chunk in body:
            whole += chunk
            digest.update(chunk)
        return await anyio.to_thread.run_sync(self._append_whole, name, whole, kind, idempotency_key, digest.hexdigest())

    async def _append_streamed(self, name: str, body: AsyncIterable[bytes], kind: str, idempotency_key: str | None) -> AppendResult:
        """Validate and write an Arrow stream or JSON rows on a thread while the event loop feeds it the body."""
        pipe = uploads.BodyPipe()

        def prepare() -> PreparedUpload:
            try:
                return self._prepare_stream(name, pipe, kind)
            except BaseException:
                pipe.abandon()
                raise

        preparing = asyncio.get_running_loop().run_in_executor(None, prepare)
        digest = hashlib.sha256()
        try:
            async for chunk in body:
                digest.update(chunk)
                await pipe.put(chunk)
        except BaseException:
            pipe.fail()
            try:
                await anyio.to_thread.run_sync(self._discard, await preparing)
            except Exception:  # the reader failed too (its staged file is gone); the body's own error is the answer
                pass
            raise
        pipe.end()
        prepared = await preparing
        return await anyio.to_thread.run_sync(self._commit, name, prepared, idempotency_key, digest.hexdigest())

    def _append_whole(self, name: str, body: bytes | bytearray, kind: str, idempotency_key: str | None, body_sha256: str) -> AppendResult:
        """Validate, stage and commit a whole upload body as the next version."""
        row = self.datasets.get(name)
        if idempotency_key is not None:
            earlier = self._earlier_answer(row.id, idempotency_key, body_sha256)
            if earlier is not None:
                return earlier
        return self._commit(name, self._prepare_whole(row, spec_of(row), body, kind), idempotency_key, body_sha256)

    def _prepare_whole(self, row: DatasetRow, spec: DatasetSpec, body: bytes | bytearray, kind: str) -> PreparedUpload:
        batch_id = uuid.uuid4().hex
        table = uploads.parse(body, kind, spec)
        try:
            conformed = conform(table, spec, batch_id)
        except TransitionError as error:
            raise ApiError(422, "invalid_rows", error.message, error.field) from None
        del table
        # The file write, the statistics and the fingerprints all release the GIL: run them side by side.
        measuring = self._side_work.submit(statistics.measure, conformed.table, spec)
        fingerprinting = self._side_work.submit(fingerprints.measure, conformed.table)
        staged = self.storage.stage(row.id, conformed.table)
        return PreparedUpload(row.id, staged, conformed.episodes, measuring.result(), fingerprinting.result(), batch_id)

    def _prepare_stream(self, name: str, source: Any, kind: str) -> PreparedUpload:
        """Validate and stage an Arrow stream or JSON body part by part as it is read from `source` (a blocking
        file), so checking and writing overlap the transfer. Nothing is visible until `commit`."""
        row = self.datasets.get(name)
        spec = spec_of(row)
        if kind == ARROW_STREAM:
            return self._prepare_parts(row, spec, uploads.arrow_parts(source))
        lines = uploads.JsonRowLines(source)
        try:
            return self._prepare_parts(row, spec, uploads.json_parts(lines, spec))
        except uploads.NotRowLines:
            return self._prepare_whole(row, spec, lines.whole_body(), kind)

    def _prepare_parts(self, row: DatasetRow, spec: DatasetSpec, parts: Iterator[pa.Table]) -> PreparedUpload:
        """Each part is checked and written while the next is still arriving; the episode rules, which need the
        whole upload, are checked at the end."""
        batch_id = uuid.uuid4().hex
        writer = self.storage.staging_writer(row.id)
        try:
            measures = _PartMeasures(self._side_work, spec)
            episode_columns: list[pa.Table] = []
            offset = 0
            for table in parts:
                if table.num_rows == 0:
                    continue
                try:
                    part = conform_rows(table, spec, batch_id)
                except TransitionError as error:
                    raise ApiError(422, "invalid_rows", error.shifted(offset).message, error.field) from None
                measures.add(part)
                writer.write(part)
                episode_columns.append(part.select(["episode_id", "step", "reward", "terminal", "truncated"]))
                offset += part.num_rows
            if not episode_columns:
                raise ApiError(422, "invalid_rows", "the upload has no rows", "rows")
            moments, lanes = measures.result()
            try:
                episodes = summarize_episodes(pa.concat_tables(episode_columns))
            except TransitionError as error:
                raise ApiError(422, "invalid_rows", error.message, error.field) from None
            staged = writer.close()
        except BaseException:
            writer.abort()
            raise
        return PreparedUpload(row.id, staged, episodes, moments, lanes, batch_id)

    def _discard(self, prepared: PreparedUpload) -> None:
        self.storage.discard(prepared.dataset_id, prepared.staged)

    def _knows_key(self, name: str, idempotency_key: str) -> bool:
        return self.catalog.version_by_key(self.datasets.get(name).id, idempotency_key) is not None


    def _commit(self, name: str, prepared: PreparedUpload, idempotency_key: str | None, body_sha256: str) -> AppendResult:
        """Make a staged upload the next version (serialised per dataset); the staged file is removed on failure."""
        row = self.datasets.get(name)
        spec = spec_of(row)
        committed = False
        try:
            if row.id != prepared.dataset_id:
                raise not_found(f"dataset {name!r}", "name")
            with self.datasets.lock(row.id):
                catch_up(self.datasets, row.id)
                if idempotency_key is not None:
                    earlier = self._earlier_answer(row.id, idempotency_key, body_sha256)
                    if earlier is not None:
                        return earlier
                current = self.catalog.dataset_by_id(row.id)
                if current is None:
                    raise not_found(f"dataset {name!r}", "name")
                previous = self.catalog.version(row.id, current.latest_version)
                assert previous is not None
                prior = self.catalog.episodes(row.id, prepared.episodes.episode_ids.tolist())
                _check_continuation(prepared.episodes, prior)
                number = previous.version + 1
                staged = prepared.staged
                delta_version = self.storage.commit(
                    row.id,
                    [staged],
                    {"version": number, "idempotency_key": idempotency_key, "body_sha256": body_sha256, "batch_id": prepared.batch_id},
                )
                committed = True
                duplicates = self.datasets.record_version(
                    current,
                    spec,
                    previous,
                    prepared.episodes,
                    prepared.moments,
                    prepared.lanes,
                    prior,
                    number=number,
                    delta_version=delta_version,
                    idempotency_key=idempotency_key,
                    body_sha256=body_sha256,
                    batch_id=prepared.batch_id,
                    created_at=datetime.now(timezone.utc),
                    added=[DataFile(path=staged.path, size=staged.size, rows=staged.rows)],
                    checksums={staged.path: staged.sha256},
                )
        finally:
            if not committed:
                self._discard(prepared)
        self.compaction.schedule(row.id)
        return AppendResult(version=number, rows=prepared.moments.rows, duplicate_episodes=duplicates)

    def _earlier_answer(self, dataset_id: str, key: str, body_sha256: str) -> AppendResult | None:
        earlier = self.catalog.version_by_key(dataset_id, key)
        if earlier is None:
            return None
        if earlier.body_sha256 != body_sha256:
            raise ApiError(
                409, "idempotency_conflict", f"this {IDEMPOTENCY_KEY_HEADER} was used with a different body", IDEMPOTENCY_KEY_HEADER
            )
        return AppendResult(
            version=earlier.version,
            rows=earlier.added_rows,
            replayed=True,
            duplicate_episodes=earlier.stats.get("duplicate_episodes", 0),
        )


class _PartMeasures:
    """The statistics and fingerprints of an upload's parts, measured on the side threads while the next
    parts arrive; only the last MEASURES_AHEAD parts may still be waiting (each holds its rows)."""

    MEASURES_AHEAD = 4

    def __init__(self, side_work: ThreadPoolExecutor, spec: DatasetSpec) -> None:
        self._side_work = side_work
        self._spec = spec
        self._waiting: deque[tuple[Future[statistics.UploadMoments], Future[fingerprints.EpisodeLanes]]] = deque()
        self._moments: statistics.UploadMoments | None = None
        self._lanes: fingerprints.EpisodeLanes | None = None

    def add(self, part: pa.Table) -> None:
        self._waiting.append((self._side_work.submit(statistics.measure, part, self._spec), self._side_work.submit(fingerprints.measure, part)))
        while self._waiting and (len(self._waiting) > self.MEASURES_AHEAD or all(future.done() for future in self._waiting[0])):
            self._take_oldest()

    def _take_oldest(self) -> None:
        measuring, fingerprinting = self._waiting.popleft()
        moments, lanes = measuring.result(), fingerprinting.result()
        self._moments = moments if self._moments is None else self._moments.merge(moments)
        self._lanes = lanes if self._lanes is None else self._lanes.merge(lanes)

    def result(self) -> tuple[statistics.UploadMoments, fingerprints.EpisodeLanes]:
        while self._waiting:
            self._take_oldest()
        assert self._moments is not None and self._lanes is not None, "no part was added"
        return self._moments, self._lanes


class _CountedBody:
    """The upload body, counting the bytes that arrived (for the metrics, and the log line of an upload cut short)."""

    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self._body = body
        self.received = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            self.received += len(chunk)
            yield chunk


def _check_continuation(episodes: EpisodeSummary, prior: dict[int, EpisodeState]) -> None:
    """Refuse rows for episodes that already ended, or that repeat steps stored in an earlier version."""
    for episode_id, first_step in zip(episodes.episode_ids.tolist(), episodes.first_steps.tolist()):
        state = prior.get(episode_id)
        if state is None:
            continue
        if state.ended_in is not None:
            raise ApiError(422, "invalid_rows", f"episode {episode_id} already ended in version {state.ended_in}", "episode_id")
        if first_step <= state.last_step:
            raise ApiError(
                422,
                "invalid_rows",
                f"episode {episode_id} already has steps up to {state.last_step} in an earlier version; this upload starts at {first_step}",
                "step",
            )
