"""The job queue on Redis, with lease deadlines kept by the queue itself on the injected clock.

Per channel, a sorted set of queued job ids scored by arrival (a counter, so oldest first) and a sorted
set of held job ids scored by their lease deadline (milliseconds since the epoch on the queue's clock,
absolute, so every service process sharing the Redis reads them alike; their clocks need to agree to
well within a lease, as NTP keeps them). A hash keeps each job's state: its channel, the attempts
counted before its current stretch in the queue (`prior`), the claims since (`deliveries`) and the
holder's token. The attempt a claim hands out is `prior + deliveries`; a lapsed lease taken over
counts a delivery, a release starts a new stretch with `prior` set so the released attempt counts or
not, as the release asked.

Every change is one Lua script, so a claim, renew, release or removal is atomic across processes: a
job is never held without a deadline, and only the token's holder renews or releases. Enqueue and
release append to a signal stream; a waiting claimant blocks on it (XREAD) from the last signal it saw
before looking, so it misses none, and looks again every `poll_seconds` for leases that lapsed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis

from service.clock import Clock
from service.queue.base import CHANNELS, Exhausted, JobQueue, Lease, check_channels

# KEYS: the job hash, the arrival counter, the signal stream, then per channel in CHANNELS order its
# queued set and its held set. Every script gets the same keys.
_PRELUDE = (
    "local CHANNELS = {"
    + ", ".join(f"'{channel}'" for channel in CHANNELS)
    + """}
local function slot(channel)
  for i, name in ipairs(CHANNELS) do
    if name == channel then return 2 + 2 * i end
  end
  error('unknown channel ' .. tostring(channel))
end
local function queued(channel) return KEYS[slot(channel)] end
local function held(channel) return KEYS[slot(channel) + 1] end
local function load(job)
  local raw = redis.call('HGET', KEYS[1], job)
  if not raw then return nil end
  return cjson.decode(raw)
end
local function save(job, state) redis.call('HSET', KEYS[1], job, cjson.encode(state)) end
local function requeue(job, channel, prior)
  save(job, {channel = channel, prior = prior, deliveries = 0, token = false})
  redis.call('ZADD', queued(channel), redis.call('INCR', KEYS[2]), job)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100, '*', 'changed', job)
end
"""
)

# ARGV: job id, channel.
_ENQUEUE = (
    _PRELUDE
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
requeue(ARGV[1], ARGV[2], 0)
return 1
"""
)

# ARGV: now (ms), lease (ms), max attempts, new token, then the channels asked for.
# Returns {kind, job id, attempt or attempts used, the last signal id before this look}.
_CLAIM = (
    _PRELUDE
    + """
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local seen = '0-0'
if #last > 0 then seen = last[1][1] end
local job, channel, best = nil, nil, nil
for i = 5, #ARGV do
  local found = redis.call('ZRANGEBYSCORE', held(ARGV[i]), '-inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0, 1)
  if #found > 0 and (best == nil or tonumber(found[2]) < best) then
    job, channel, best = found[1], ARGV[i], tonumber(found[2])
  end
end
if job == nil then
  for i = 5, #ARGV do
    local found = redis.call('ZRANGE', queued(ARGV[i]), 0, 0, 'WITHSCORES')
    if #found > 0 and (best == nil or tonumber(found[2]) < best) then
      job, channel, best = found[1], ARGV[i], tonumber(found[2])
    end
  end
  if job == nil then return {'none', '', 0, seen} end
  redis.call('ZREM', queued(channel), job)
end
local state = load(job)
state.deliveries = state.deliveries + 1
local attempt = state.prior + state.deliveries
if attempt > tonumber(ARGV[3]) then
  redis.call('ZREM', held(channel), job)
  redis.call('HDEL', KEYS[1], job)
  return {'exhausted', job, attempt - 1, seen}
end
state.token = ARGV[4]
save(job, state)
redis.call('ZADD', held(channel), tonumber(ARGV[1]) + tonumber(ARGV[2]), job)
return {'lease', job, attempt, seen}
"""
)

# ARGV: job id, token, now (ms), lease (ms). Only the holder renews.
_RENEW = (
    _PRELUDE
    + """
local state = load(ARGV[1])
if not state or state.token ~= ARGV[2] then return 0 end
redis.call('ZADD', held(state.channel), 'XX', tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
return 1
"""
)

# ARGV: job id, token, the attempts to keep counted. Only the holder releases.
_RELEASE = (
    _PRELUDE
    + """
local state = load(ARGV[1])
if not state or state.token ~= ARGV[2] then return 0 end
redis.call('ZREM', held(state.channel), ARGV[1])
requeue(ARGV[1], state.channel, tonumber(ARGV[3]))
return 1
"""
)

# ARGV: job id.
_REMOVE = (
    _PRELUDE
    + """
local state = load(ARGV[1])
if not state then return 0 end
redis.call('ZREM', held(state.channel), ARGV[1])
redis.call('ZREM', queued(state.channel), ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
)


class RedisJobQueue(JobQueue):
    def __init__(
        self,
        url: str,
        lease_seconds: float,
        max_attempts: int,
        clock: Clock,
        prefix: str = "replaybank",
        poll_seconds: float = 1.0,
    ) -> None:
        super().__init__(lease_seconds, max_attempts, clock)
        self._redis = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        # a blocked claimant hears of arrivals, not of leases lapsing, so it wakes this often to look
        self._poll_seconds = min(poll_seconds, lease_seconds / 4)
        self._lease_ms = round(lease_seconds * 1000)
        self._signal = f"{prefix}:queue:signal"
        self._keys = [f"{prefix}:queue:jobs", f"{prefix}:queue:arrivals", self._signal]
        for channel in CHANNELS:
            self._keys += [f"{prefix}:queue:queued:{channel}", f"{prefix}:queue:held:{channel}"]
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._remove = self._redis.register_script(_REMOVE)

    def _now_ms(self) -> int:
        return round(self._now() * 1000)

    async def enqueue(self, job_id: str, channel: str = "any") -> None:
        check_channels([channel])
        await self._enqueue(keys=self._keys, args=[job_id, channel])

    async def claim(self, channels: Sequence[str], wait: float) -> Lease | Exhausted | None:
        check_channels(channels)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            token = uuid.uuid4().hex
            kind, job_id, attempt, seen = await self._claim(
                keys=self._keys, args=[self._now_ms(), self._lease_ms, self.max_attempts, token, *channels]
            )
            if kind == "lease":
                return Lease(job_id, token, int(attempt))
            if kind == "exhausted":
                return Exhausted(job_id, int(attempt))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            block_ms = max(1, int(min(remaining, self._poll_seconds) * 1000))
            await self._redis.xread({self._signal: seen}, count=1, block=block_ms)

    async def renew(self, lease: Lease) -> bool:
        renewed = await self._renew(keys=self._keys, args=[lease.job_id, lease.token, self._now_ms(), self._lease_ms])
        return bool(renewed)

    async def release(self, lease: Lease, count_attempt: bool = False) -> bool:
        released = await self._release(
            keys=self._keys, args=[lease.job_id, lease.token, lease.attempts_kept(count_attempt)]
        )
        return bool(released)

    async def remove(self, job_id: str) -> None:
        await self._remove(keys=self._keys, args=[job_id])

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
