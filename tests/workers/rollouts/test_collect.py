"""Collection: whole episodes per chunk, the right flags, sources and ids, and chunks a retry rebuilds exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pytest
from gymnasium import spaces

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from schemas.jobs import EpsilonExploration, GaussianExploration
from schemas.transition import conform
from workers.rollouts.collect import COLLECTED_ID_FLAG, CollectCursor, collect, episode_id_base

GRID_ENV = "replaybank-test/Grid-v0"


class GridEnv(gym.Env):
    """A 2x3 observation that counts steps; action 1 ends the episode (terminal) from step 2 on.

    Episodes that never choose 1 are cut by the time limit at 6 steps (truncated).
    """

    observation_space = spaces.Box(-np.inf, np.inf, (2, 3), np.float32)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        self.offset = float(self.np_random.integers(100))
        return self._observation(), {}

    def _observation(self) -> np.ndarray:
        return (np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * self.t + self.offset).astype(np.float32)

    def step(self, action):
        assert isinstance(action, int)
        self.t += 1
        terminated = action == 1 and self.t >= 2
        return self._observation(), float(action), terminated, False, {}


gym.register(GRID_ENV, entry_point=GridEnv, max_episode_steps=6)

GRID = DatasetSpec(observation=ObservationSpec(shape=[2, 3]), action=DiscreteActionSpec(n=3), env_id=GRID_ENV)
PENDULUM = DatasetSpec(
    observation=ObservationSpec(shape=[3]),
    action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]),
    env_id="Pendulum-v1",
)


def always(action: int):
    return lambda observations: np.full(len(observations), action, np.int64)


def zero_torque(observations: np.ndarray) -> np.ndarray:
    return np.zeros((len(observations), 1), np.float32)


def rows(chunk) -> dict[str, list]:
    return chunk.table.to_pydict()


def test_chunks_hold_whole_episodes_and_close_after_chunk_steps() -> None:
    chunks = list(
        collect(always(0), GRID, job_id="job-a", policy_id="p1", seed=0, episodes=7, chunk_steps=10,
                exploration=EpsilonExploration(epsilon=0.3))
    )

    seen_episodes: set[int] = set()
    for chunk in chunks[:-1]:
        assert chunk.table.num_rows >= 10
    for chunk in chunks:
        data = rows(chunk)
        ids = np.asarray(data["episode_id"])
        episodes_here = list(dict.fromkeys(ids.tolist()))
        assert not seen_episodes & set(episodes_here), "an episode spans two chunks"
        seen_episodes |= set(episodes_here)
        for episode in episodes_here:
            at = np.flatnonzero(ids == episode)
            assert np.array_equal(at, np.arange(at[0], at[-1] + 1)), "an episode's rows are not contiguous"
            assert [data["step"][i] for i in at] == list(range(len(at)))
            ended = [data["terminal"][i] or data["truncated"][i] for i in at]
            assert ended == [False] * (len(at) - 1) + [True]
        assert chunk.lengths == [int((ids == e).sum()) for e in episodes_here]
        assert chunk.returns == pytest.approx([sum(np.asarray(data["reward"])[ids == e]) for e in episodes_here])
        conform(chunk.table, GRID, batch_id="check")  # the service accepts it as one upload
    assert len(seen_episodes) == 7
    assert chunks[-1].cursor == CollectCursor(chunk_index=len(chunks), episodes=7, steps=sum(
        c.table.num_rows for c in chunks))


def test_terminal_and_truncated_follow_gymnasium() -> None:
    # action 1 terminates at step 2; action 0 runs into the 6-step time limit
    (ended_early,) = collect(always(1), GRID, job_id="j", policy_id="p", seed=0, episodes=1)
    (timed_out,) = collect(always(0), GRID, job_id="j", policy_id="p", seed=0, episodes=1)

    assert rows(ended_early)["terminal"] == [False, True]
    assert rows(ended_early)["truncated"] == [False, False]
    assert rows(timed_out)["terminal"] == [False] * 6
    assert rows(timed_out)["truncated"] == [False] * 5 + [True]


def test_step_budget_cuts_the_last_episode_as_truncated() -> None:
    chunks = list(collect(zero_torque, PENDULUM, job_id="j", policy_id="p", seed=0, steps=450, chunk_steps=200))

    assert [c.table.num_rows for c in chunks] == [200, 200, 50]
    last = rows(chunks[-1])
    assert last["truncated"][-1] and not last["terminal"][-1]
    assert sum(last["truncated"]) == 1
    assert chunks[-1].cursor.steps == 450


def test_observations_flatten_row_major_and_rows_chain() -> None:
    (chunk,) = collect(always(0), GRID, job_id="j", policy_id="p", seed=3, episodes=1)
    data = rows(chunk)

    first = np.asarray(data["observation"][0], np.float32)
    offset = first[0]
    np.testing.assert_array_equal(first, np.arange(6, dtype=np.float32) + offset)
    for i in range(len(data["step"]) - 1):
        assert data["next_observation"][i] == data["observation"][i + 1]
    assert chunk.table.schema.field("action").type == pa.int64()


def test_source_names_the_policy_and_ids_are_unique_per_job() -> None:
    a = list(collect(always(0), GRID, job_id="job-a", policy_id="pol-7", seed=0, episodes=5, chunk_steps=6))
    b = list(collect(always(0), GRID, job_id="job-b", policy_id="pol-7", seed=0, episodes=5, chunk_steps=6))

    ids_a = np.concatenate([c.table.column("episode_id").to_numpy() for c in a])
    ids_b = np.concatenate([c.table.column("episode_id").to_numpy() for c in b])
    assert len(np.unique(ids_a)) == 5 and len(np.unique(ids_b)) == 5
    assert not set(ids_a) & set(ids_b)
    assert (ids_a >= COLLECTED_ID_FLAG).all() and (ids_a < 2**63).all()
    assert sorted(set(ids_a)) == [episode_id_base("job-a") + k for k in range(5)]
    assert {s for c in a for s in c.table.column("source").to_pylist()} == {"policy:pol-7"}


def test_keys_and_chunks_are_deterministic_and_a_resume_rebuilds_the_rest() -> None:
    def run(start=None):
        return list(
            collect(zero_torque, PENDULUM, job_id="job-r", policy_id="p", seed=5, steps=1000, chunk_steps=300,
                    exploration=GaussianExploration(sigma=0.2), start=start)
        )

    first, again = run(), run()
    assert [c.idempotency_key for c in first] == [f"job-r:{i}" for i in range(len(first))]
    assert [c.idempotency_key for c in again] == [c.idempotency_key for c in first]
    assert all(x.table.equals(y.table) for x, y in zip(first, again))

    resumed = run(start=first[0].cursor)
    assert [c.idempotency_key for c in resumed] == [c.idempotency_key for c in first[1:]]
    assert all(x.table.equals(y.table) for x, y in zip(first[1:], resumed))


def test_gaussian_noise_is_scaled_to_the_range_and_clipped() -> None:
    quiet = list(collect(zero_torque, PENDULUM, job_id="j", policy_id="p", seed=0, episodes=1))
    noisy = list(collect(zero_torque, PENDULUM, job_id="j", policy_id="p", seed=0, episodes=2,
                         exploration=GaussianExploration(sigma=0.5)))
    wide = list(collect(zero_torque, PENDULUM, job_id="j", policy_id="p", seed=0, episodes=1,
                        exploration=GaussianExploration(sigma=5.0)))

    assert np.all(np.asarray(rows(quiet[0])["action"]) == 0.0)
    actions = np.concatenate([np.asarray(rows(c)["action"]).ravel() for c in noisy])
    # sigma is a fraction of the half-range (2): the spread is about 1
    assert 0.8 < actions.std() < 1.2
    wide_actions = np.asarray(rows(wide[0])["action"]).ravel()
    assert wide_actions.min() == -2.0 and wide_actions.max() == 2.0


def test_epsilon_replaces_some_discrete_actions() -> None:
    chunks = list(collect(always(0), GRID, job_id="j", policy_id="p", seed=1, episodes=40,
                          exploration=EpsilonExploration(epsilon=0.5)))
    actions = np.concatenate([c.table.column("action").to_numpy() for c in chunks])

    share_replaced = np.mean(actions != 0)
    # half the steps draw uniformly from 3 actions: a third of those still pick 0
    assert 0.2 < share_replaced < 0.5


def test_mismatched_spaces_and_exploration_are_refused() -> None:
    with pytest.raises(ValueError, match="Discrete"):
        next(collect(always(0), GRID.model_copy(update={"action": DiscreteActionSpec(n=4)}), job_id="j",
                     policy_id="p", seed=0, episodes=1))
    with pytest.raises(ValueError, match="observations"):
        next(collect(zero_torque, PENDULUM, job_id="j", policy_id="p", seed=0, episodes=1, env_id=GRID_ENV))
    with pytest.raises(ValueError, match="Gaussian"):
        next(collect(always(0), GRID, job_id="j", policy_id="p", seed=0, episodes=1,
                     exploration=GaussianExploration(sigma=0.1)))
    with pytest.raises(ValueError, match="exactly one"):
        next(collect(always(0), GRID, job_id="j", policy_id="p", seed=0, episodes=1, steps=5))
