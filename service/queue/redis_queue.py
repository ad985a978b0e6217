"""The job queue on Redis Streams with one consumer group.

Each queued job is one stream entry (fields `job` and `prior`, the attempts used before this entry).
A claim reads with XREADGROUP under a consumer name made for that claim, so the pending entry of that
consumer *is* the lease: renewing resets its idle time (XCLAIM JUSTID by the owner), and XAUTOCLAIM
hands entries idle for longer than the lease to the next claimant, counting a delivery. The attempt
number is `prior` plus the entry's delivery count; releasing re-adds the job as a fresh entry with
`prior` set so the released attempt is counted or not, as the release asked. A hash maps job ids to
their current entry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.queue.base import CHANNELS, Exhausted, JobQueue, Lease, check_channels

GROUP = "workers"

_ENQUEUE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'prior', ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. id)
return 1
"""

# KEYS: stream. ARGV: group, consumer, entry id. Only the owner may renew.
_RENEW = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS: stream, hash. ARGV: group, consumer, entry id, job id, prior, channel.
_RELEASE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[4], 'prior', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[6] .. ' ' .. id)
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: hash, then one stream per channel in CHANNELS order. ARGV: group, job id.
_REMOVE = """
local entry = redis.call('HGET', KEYS[1], ARGV[2])
if not entry then return 0 end
local channel, id = string.match(entry, '^(%S+) (%S+)$')
local stream = nil
for i, name in ipairs(ARGV) do
  if i > 2 and name == channel then stream = KEYS[i - 1] end
end
if stream == nil then return redis.error_reply('unknown channel ' .. channel) end
local pending = redis.call('XPENDING', stream, ARGV[1], id, id, 1)
redis.call('XACK', stream, ARGV[1], id)
redis.call('XDEL', stream, id)
redis.call('HDEL', KEYS[1], ARGV[2])
if #pending > 0 then
  local owner = pending[1][2]
  local held = redis.call('XPENDING', stream, ARGV[1], '-', '+', 1, owner)
  if #held == 0 then redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], owner) end
end
return 1
"""

STALE_CONSUMER_MS = 60_000
"""Consumers with nothing pending and idle this long belong to dead workers; sweeping them keeps XINFO short."""


class RedisJobQueue(JobQueue):
    def __init__(
        self,
        url: str,
        lease_seconds: float,
        max_attempts: int,
        prefix: str = "replaybank",
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__(lease_seconds, max_attempts)
        self._redis = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        self._prefix = prefix
        # a blocking read cannot see leases lapse, so it wakes this often to look
        self._poll_seconds = min(poll_seconds, lease_seconds / 4)
        self._groups_ready = False
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._remove = self._redis.register_script(_REMOVE)

    def _stream(self, channel: str) -> str:
        return f"{self._prefix}:queue:{channel}"

    @property
    def _entries(self) -> str:
        return f"{self._prefix}:queue:entries"

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for channel in CHANNELS:
            try:
                await self._redis.xgroup_create(self._stream(channel), GROUP, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._groups_ready = True

    @staticmethod
    def _token(channel: str, entry_id: str, consumer: str) -> str:
        return f"{channel} {entry_id} {consumer}"

    @staticmethod
    def _parse(token: str) -> tuple[str, str, str] | None:
        parts = token.split(" ")
        if len(parts) != 3 or parts[0] not in CHANNELS:
            return None
        return parts[0], parts[1], parts[2]

    async def enqueue(self, job_id: str, channel: str = "any") -> None:
        check_channels([channel])
        await self._ensure_groups()
        await self._enqueue(keys=[self._entries, self._stream(channel)], args=[job_id, channel, 0])

    async def claim(self, channels: Sequence[str], wait: float) -> Lease | Exhausted | None:
        check_channels(channels)
        await self._ensure_groups()
        consumer = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        holding = False
        try:
            while True:
                for channel in channels:
                    reclaimed = await self._reclaim(channel, consumer)
                    if reclaimed is not None:
                        holding = isinstance(reclaimed, Lease)
                        return reclaimed
                remaining = deadline - loop.time()
                block_ms = int(min(remaining, self._poll_seconds) * 1000)
                answer = await self._redis.xreadgroup(
                    GROUP,
                    consumer,
                    {self._stream(channel): ">" for channel in channels},
                    count=1,
                    block=block_ms if block_ms > 0 else None,
                )
                if answer:
                    lease = await self._first_of(answer, consumer)
                    if lease.attempt > self.max_attempts:  # released with its last attempt counted
                        await self.remove(lease.job_id)
                        return Exhausted(lease.job_id, lease.attempt - 1)
                    holding = True
                    return lease
                if loop.time() >= deadline:
                    return None
        finally:
            if not holding:
                for channel in channels:
                    await self._redis.xgroup_delconsumer(self._stream(channel), GROUP, consumer)

    async def _first_of(self, answer: list, consumer: str) -> Lease:
        """Keep the first entry read; entries read from other streams in the same call go back as they were."""
        kept: Lease | None = None
        for stream, entries in answer:
            channel = stream.rsplit(":", 1)[1]
            for entry_id, fields in entries:
                prior = int(fields.get("prior", 0))
                if kept is None:
                    kept = Lease(fields["job"], self._token(channel, entry_id, consumer), prior + 1)
                else:
                    await self._release(
                        keys=[stream, self._entries], args=[GROUP, consumer, entry_id, fields["job"], prior, channel]
                    )
        assert kept is not None
        return kept

    async def _reclaim(self, channel: str, consumer: str) -> Lease | Exhausted | None:
        stream = self._stream(channel)
        lease_ms = int(self.lease_seconds * 1000)
        cursor = "0-0"
        while True:
            cursor, entries, _deleted = await self._redis.xautoclaim(
                stream, GROUP, consumer, min_idle_time=lease_ms, start_id=cursor, count=1
            )
            if entries:
                break
            if cursor == "0-0":
                return None
        entry_id, fields = entries[0]
        [pending] = await self._redis.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
        attempt = int(fields.get("prior", 0)) + int(pending["times_delivered"])
        await self._sweep_consumers(stream)
        if attempt > self.max_attempts:
            await self.remove(fields["job"])
            return Exhausted(fields["job"], attempt - 1)
        return Lease(fields["job"], self._token(channel, entry_id, consumer), attempt)

    async def _sweep_consumers(self, stream: str) -> None:
        for info in await self._redis.xinfo_consumers(stream, GROUP):
            if info["pending"] == 0 and info["idle"] > STALE_CONSUMER_MS:
                await self._redis.xgroup_delconsumer(stream, GROUP, info["name"])

    async def renew(self, lease: Lease) -> bool:
        parsed = self._parse(lease.token)
        if parsed is None:
            return False
        channel, entry_id, consumer = parsed
        return bool(await self._renew(keys=[self._stream(channel)], args=[GROUP, consumer, entry_id]))

    async def release(self, lease: Lease, count_attempt: bool = False) -> bool:
        parsed = self._parse(lease.token)
        if parsed is None:
            return False
        channel, entry_id, consumer = parsed
        released = await self._release(
            keys=[self._stream(channel), self._entries],
            args=[GROUP, consumer, entry_id, lease.job_id, lease.attempts_kept(count_attempt), channel],
        )
        return bool(released)

    async def remove(self, job_id: str) -> None:
        await self._ensure_groups()
        await self._remove(
            keys=[self._entries, *(self._stream(channel) for channel in CHANNELS)], args=[GROUP, job_id, *CHANNELS]
        )

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
