import numpy as np
import pytest
import torch

from schemas.dataset import DatasetSpec
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import Batch, MixedReplay, ReplayBuffer, training_replay

SPEC = DatasetSpec.model_validate(
    {"observation": {"shape": [2]}, "action": {"kind": "continuous", "shape": [1], "low": [-4], "high": [0]}}
)


def arrays(n: int = 10) -> TransitionArrays:
    index = np.arange(n, dtype=np.float32)
    return TransitionArrays(
        observations=np.stack([index, -index], 1),
        actions=np.linspace(-4, 0, n, dtype=np.float32)[:, None],
        rewards=index * 10,
        next_observations=np.stack([index + 1, -index - 1], 1),
        terminals=index == n - 1,
        truncateds=np.zeros(n, bool),
        episode_ids=np.zeros(n, np.int64),
        steps=np.arange(n, dtype=np.int32),
    )


NORMALISATION = Normalisation(np.array([1.0, 2.0], np.float32), np.array([2.0, 4.0], np.float32), 0.5)


def test_from_arrays_normalises_everything_on_the_device():
    buffer = ReplayBuffer.from_arrays(arrays(), NORMALISATION, SPEC.action, torch.device("cpu"), seed=0)
    assert len(buffer) == 10
    torch.testing.assert_close(buffer.observations[3], torch.tensor([(3 - 1) / 2, (-3 - 2) / 4]))
    torch.testing.assert_close(buffer.next_observations[3], torch.tensor([(4 - 1) / 2, (-4 - 2) / 4]))
    torch.testing.assert_close(buffer.actions[:, 0], torch.linspace(-1, 1, 10))
    torch.testing.assert_close(buffer.rewards, torch.arange(10.0) * 5)
    assert buffer.terminals.dtype == torch.float32 and buffer.terminals.tolist() == [0.0] * 9 + [1.0]


def test_sampling_is_seeded_and_rows_stay_aligned():
    first = ReplayBuffer.from_arrays(arrays(), NORMALISATION, SPEC.action, torch.device("cpu"), seed=3)
    second = ReplayBuffer.from_arrays(arrays(), NORMALISATION, SPEC.action, torch.device("cpu"), seed=3)
    a, b = first.sample(32), second.sample(32)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    # reward 5*i belongs with observation (i-1)/2 in every row
    torch.testing.assert_close(a.rewards, (a.observations[:, 0] * 2 + 1) * 5)
    assert a.actions.shape == (32, 1)


def test_state_dict_resumes_the_same_draws():
    buffer = ReplayBuffer.from_arrays(arrays(), NORMALISATION, SPEC.action, torch.device("cpu"), seed=1)
    buffer.sample(8)
    state = buffer.state_dict()
    expected = buffer.sample(8)
    buffer.sample(8)
    buffer.load_state_dict(state)
    torch.testing.assert_close(buffer.sample(8).rewards, expected.rewards)


def batch_of(value: float, n: int) -> Batch:
    return Batch(
        torch.full((n, 2), value), torch.full((n, 1), value), torch.full((n,), value), torch.zeros(n, 2), torch.zeros(n)
    )


def test_ring_buffer_overwrites_oldest_and_keeps_data_in_state():
    ring = ReplayBuffer(capacity=5, observation_size=2, action_size=1, device=torch.device("cpu"), seed=0)
    ring.add(batch_of(1.0, 3))
    ring.add(batch_of(2.0, 4))
    assert len(ring) == 5
    assert sorted(ring.rewards.tolist()) == [1.0, 2.0, 2.0, 2.0, 2.0]
    state = ring.state_dict(include_data=True)
    copy = ReplayBuffer(capacity=5, observation_size=2, action_size=1, device=torch.device("cpu"), seed=9)
    copy.load_state_dict(state)
    torch.testing.assert_close(copy.sample(16).rewards, ring.sample(16).rewards)


def buffer_of(reward: float, seed: int) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity=100, observation_size=2, action_size=1, device=torch.device("cpu"), seed=seed)
    buffer.add(batch_of(reward, 100))
    return buffer


def test_mixed_replay_takes_its_share_of_every_batch_from_each_buffer():
    online, offline = buffer_of(1.0, 0), buffer_of(-1.0, 1)
    assert MixedReplay(online, offline, 0.3).sample(10).rewards.tolist() == [1.0] * 3 + [-1.0] * 7
    assert MixedReplay(online, offline, 0.0).sample(8).rewards.tolist() == [-1.0] * 8
    assert MixedReplay(online, offline, 1.0).sample(8).rewards.tolist() == [1.0] * 8
    assert len(MixedReplay(online, offline, 0.5)) == 200
    with pytest.raises(ValueError, match="first_fraction"):
        MixedReplay(online, offline, 1.5)


def test_mixed_replay_resumes_both_draws_exactly():
    def mixed(seed: int) -> MixedReplay:
        rows = arrays(50)
        online = np.arange(50) % 5 == 0
        return training_replay(rows, NORMALISATION, SPEC.action, torch.device("cpu"), seed, 0.5, online)

    first = mixed(seed=0)
    first.sample(7)
    state = first.state_dict()
    expected = first.sample(16).rewards
    again = mixed(seed=5)
    assert not torch.equal(again.sample(16).rewards, expected)  # other seeds, other rows
    again.load_state_dict(state)
    torch.testing.assert_close(again.sample(16).rewards, expected)
    with pytest.raises(ValueError, match="mixes two"):
        again.load_state_dict(buffer_of(1.0, 0).state_dict())
    with pytest.raises(ValueError, match="mixed two"):
        buffer_of(1.0, 0).load_state_dict(state)


def test_online_rows_are_told_apart_by_the_mask():
    data = arrays(10)
    online = np.arange(10) >= 8  # the last two rows (rewards 80 and 90) came from a policy
    mixed = training_replay(data, NORMALISATION, SPEC.action, torch.device("cpu"), 0, 0.5, online)
    assert isinstance(mixed, MixedReplay)
    assert isinstance(training_replay(data, NORMALISATION, SPEC.action, torch.device("cpu"), 0), ReplayBuffer)
    assert (len(mixed.first), len(mixed.second)) == (2, 8)
    rewards = mixed.sample(1000).rewards / NORMALISATION.reward_scale
    assert set(rewards[:500].tolist()) == {80.0, 90.0}  # half of every batch, though a fifth of the rows
    assert set(rewards[500:].tolist()) <= {0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0}


def test_discrete_actions_stay_int64():
    spec = DatasetSpec.model_validate({"observation": {"shape": [2]}, "action": {"kind": "discrete", "n": 3}})
    data = arrays()
    discrete = TransitionArrays(**{**data.__dict__, "actions": np.arange(10, dtype=np.int64) % 3})
    buffer = ReplayBuffer.from_arrays(discrete, NORMALISATION, spec.action, torch.device("cpu"), seed=0)
    batch = buffer.sample(4)
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (4,)


def test_empty_dataset_is_refused():
    empty = TransitionArrays(*(a[:0] for a in arrays().__dict__.values()))
    with pytest.raises(ValueError, match="no transitions"):
        ReplayBuffer.from_arrays(empty, NORMALISATION, SPEC.action, torch.device("cpu"), seed=0)
