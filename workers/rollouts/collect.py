"""Online collection: run a policy with exploration in the dataset's environment, in uploadable chunks.

Every chunk ends on an episode boundary and is one idempotent upload (key `"{job_id}:{chunk_index}"`).
A chunk's rows depend only on the job (id, seed, policy, options) and on which episodes it holds: episode
k is reset with a seed derived from (seed, k) and draws its exploration noise from its own generator. So a
collector that resumes from the cursor stored after the last uploaded chunk continues exactly where it
stopped, and one that crashed between an upload and storing the cursor rebuilds the same chunk under the
same key, which the service answers without appending twice.

Episode ids. Collected ids are `2**62 | hash38(job_id) << 24 | k` for the job's k-th episode: bit 62 keeps
them away from logged ids (files number their episodes from 0), 38 bits of the job id's hash make two
jobs' ids collide with probability ~ jobs² / 2**39, and 24 bits number up to 16.7 million episodes per
job. If ids ever did collide with a finished episode, the service refuses the chunk (a row after an
episode's end), so a collision is an error, never silently merged data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec
from schemas.jobs import EpsilonExploration, GaussianExploration
from schemas.transition import POLICY_SOURCE_PREFIX
from workers.files import upload_schema
from workers.rollouts.evaluate import check_spaces, load_policy, make_env

COLLECTED_ID_FLAG = 1 << 62
JOB_HASH_BITS = 38
EPISODE_INDEX_BITS = 24
MAX_EPISODES_PER_JOB = 1 << EPISODE_INDEX_BITS


def episode_id_base(job_id: str) -> int:
    """The first episode id of a collect job; its k-th episode gets `base + k`."""
    digest = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    job_bits = digest >> (64 - JOB_HASH_BITS)
    return COLLECTED_ID_FLAG | (job_bits << EPISODE_INDEX_BITS)


def idempotency_key(job_id: str, chunk_index: int) -> str:
    return f"{job_id}:{chunk_index}"


@dataclass(frozen=True)
class CollectCursor:
    """Where a collection stands between chunks: store it after each upload to resume from there."""

    chunk_index: int = 0
    episodes: int = 0
    """Episodes collected so far, which is also the index of the next episode."""
    steps: int = 0


@dataclass(frozen=True)
class Chunk:
    index: int
    table: pa.Table
    """Rows in the upload schema (every transition column but batch_id), whole episodes only."""
    idempotency_key: str
    returns: list[float]
    lengths: list[int]
    cursor: CollectCursor
    """The cursor after this chunk: resume from it once the chunk is stored."""


@dataclass
class _Rows:
    """Columns of the chunk being built."""

    episode_ids: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    next_observations: list[np.ndarray] = field(default_factory=list)
    terminals: list[bool] = field(default_factory=list)
    truncateds: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rewards)


def collect(
    policy: Any,
    spec: DatasetSpec,
    *,
    job_id: str,
    policy_id: str,
    seed: int,
    episodes: int | None = None,
    steps: int | None = None,
    exploration: GaussianExploration | EpsilonExploration | None = None,
    chunk_steps: int = 5_000,
    start: CollectCursor | None = None,
    env_id: str | None = None,
    max_episode_steps: int | None = None,
) -> Iterator[Chunk]:
    """Yields chunks of transitions until `episodes` episodes or `steps` steps are collected.

    A chunk closes at the first episode end once it holds `chunk_steps` rows. With a step budget the
    last episode is cut when the budget runs out and its last row is marked truncated (the episode did
    not end in the environment, so its successor state still bootstraps).
    """
    if (episodes is None) == (steps is None):
        raise ValueError("give exactly one of episodes or steps")
    if chunk_steps < 1:
        raise ValueError("chunk_steps must be at least 1")
    env_id = env_id or spec.env_id
    if not env_id:
        raise ValueError("the dataset has no env_id to collect in; give one")
    if episodes is not None and episodes > MAX_EPISODES_PER_JOB:
        raise ValueError(f"at most {MAX_EPISODES_PER_JOB} episodes per collect job")
    cursor = start or CollectCursor()
    act = load_policy(policy)
    env = make_env(env_id, max_episode_steps)
    try:
        check_spaces(env, spec, env_id)
        explore = _exploration(spec, exploration)
        schema = upload_schema(spec)
        source = f"{POLICY_SOURCE_PREFIX}{policy_id}"
        base = episode_id_base(job_id)
        rows, returns, lengths = _Rows(), [], []
        total_steps, episode_index = cursor.steps, cursor.episodes
        chunk_index = cursor.chunk_index

        def budget_left() -> bool:
            if episodes is not None:
                return episode_index < episodes
            return total_steps < steps

        while budget_left():
            if episode_index >= MAX_EPISODES_PER_JOB:
                raise ValueError(f"at most {MAX_EPISODES_PER_JOB} episodes per collect job")
            episode_seed = np.random.SeedSequence([seed, episode_index])
            rng = np.random.default_rng(episode_seed.spawn(1)[0])
            observation, _ = env.reset(seed=int(episode_seed.generate_state(1)[0]))
            episode_return, step, done = 0.0, 0, False
            while not done:
                flat = np.asarray(observation, dtype=np.float32).reshape(-1)
                proposed = np.asarray(act(np.asarray(observation, dtype=np.float32)[None]))[0]
                action = explore(proposed, rng)
                next_observation, reward, terminated, truncated, _ = env.step(action)
                total_steps += 1
                out_of_budget = steps is not None and total_steps >= steps
                done = terminated or truncated or out_of_budget
                rows.episode_ids.append(base + episode_index)
                rows.steps.append(step)
                rows.observations.append(flat)
                rows.actions.append(action)
                rows.rewards.append(float(reward))
                rows.next_observations.append(np.asarray(next_observation, dtype=np.float32).reshape(-1))
                rows.terminals.append(bool(terminated))
                rows.truncateds.append(bool(not terminated and (truncated or out_of_budget)))
                episode_return += float(reward)
                step += 1
                observation = next_observation
            episode_index += 1
            returns.append(episode_return)
            lengths.append(step)
            if len(rows) >= chunk_steps or not budget_left():
                after = CollectCursor(chunk_index=chunk_index + 1, episodes=episode_index, steps=total_steps)
                yield Chunk(
                    index=chunk_index,
                    table=_table(rows, spec, schema, source),
                    idempotency_key=idempotency_key(job_id, chunk_index),
                    returns=returns,
                    lengths=lengths,
                    cursor=after,
                )
                rows, returns, lengths = _Rows(), [], []
                chunk_index += 1
    finally:
        env.close()


def _exploration(spec: DatasetSpec, exploration: GaussianExploration | EpsilonExploration | None):
    """A function (policy action, generator) -> the action to take, in the dataset's action space."""
    action = spec.action
    if isinstance(action, DiscreteActionSpec):
        if isinstance(exploration, GaussianExploration):
            raise ValueError("Gaussian exploration needs continuous actions; use epsilon for discrete ones")
        epsilon = exploration.epsilon if exploration is not None else 0.0

        def discrete(proposed: np.ndarray, rng: np.random.Generator) -> int:
            # Both draws happen every step, so the noise stream does not depend on the policy's choices.
            random_action, explore = int(rng.integers(action.n)), rng.random() < epsilon
            return random_action if explore else int(np.asarray(proposed).reshape(-1)[0])

        return discrete

    assert isinstance(action, ContinuousActionSpec)
    low = np.asarray(action.low, dtype=np.float32)
    high = np.asarray(action.high, dtype=np.float32)
    shape = tuple(action.shape)

    if isinstance(exploration, EpsilonExploration):
        epsilon = exploration.epsilon

        def uniform(proposed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            random_action, explore = rng.uniform(low, high).astype(np.float32), rng.random() < epsilon
            chosen = random_action if explore else np.asarray(proposed, dtype=np.float32).reshape(-1)
            return np.clip(chosen, low, high).reshape(shape)

        return uniform

    sigma = exploration.sigma if exploration is not None else 0.0
    scale = (sigma * (high - low) / 2.0).astype(np.float32)

    def gaussian(proposed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(low.shape).astype(np.float32) * scale
        return np.clip(np.asarray(proposed, dtype=np.float32).reshape(-1) + noise, low, high).reshape(shape)

    return gaussian


def _table(rows: _Rows, spec: DatasetSpec, schema: pa.Schema, source: str) -> pa.Table:
    n = len(rows)

    def vectors(values: list[np.ndarray], size: int) -> pa.FixedSizeListArray:
        flat = np.stack(values).astype(np.float32).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), size)

    if isinstance(spec.action, DiscreteActionSpec):
        actions: pa.Array = pa.array(np.asarray(rows.actions, dtype=np.int64))
    else:
        actions = vectors([np.asarray(a).reshape(-1) for a in rows.actions], spec.action.size)
    columns = [
        pa.array(np.asarray(rows.episode_ids, dtype=np.int64)),
        pa.array(np.asarray(rows.steps, dtype=np.int32)),
        vectors(rows.observations, spec.observation.size),
        actions,
        pa.array(np.asarray(rows.rewards, dtype=np.float32)),
        vectors(rows.next_observations, spec.observation.size),
        pa.array(np.asarray(rows.terminals, dtype=bool)),
        pa.array(np.asarray(rows.truncateds, dtype=bool)),
        pa.array([source] * n, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)
