import numpy as np
import pyarrow as pa
import pytest

from schemas.splits import Split, held_out

from workers.algos.data import (
    MAX_SCALED_REWARD,
    Normalisation,
    TransitionArrays,
    arrays_from_arrow,
    arrays_to_arrow,
    episode_returns,
    split_summary,
)
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset, pendulum_dataset


def assert_same_arrays(first: TransitionArrays, second: TransitionArrays) -> None:
    for name in first.__dataclass_fields__:
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.fixture(scope="module")
def pendulum():
    return pendulum_dataset("medium", 3, seed=0)


def test_arrow_round_trip_continuous(pendulum):
    table = arrays_to_arrow(pendulum, PENDULUM_SPEC, source="logged")
    assert table.num_rows == len(pendulum) == 600
    assert_same_arrays(arrays_from_arrow(table), pendulum)


def test_arrow_round_trip_from_plain_lists_as_delta_returns_them():
    data = cartpole_dataset(2, seed=0)
    table = arrays_to_arrow(data, CARTPOLE_SPEC)
    plain = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.list_(pa.float32())) if pa.types.is_fixed_size_list(f.type) else f
                for f in table.schema
            ]
        )
    )
    assert_same_arrays(TransitionArrays.from_arrow(plain), data)


def test_generated_episodes_mark_terminal_and_truncated_apart(pendulum):
    # Pendulum only times out; CartPole terminates when the pole falls.
    assert not pendulum.terminals.any() and pendulum.truncateds.sum() == 3
    cartpole = cartpole_dataset(5, seed=0, random_action_probability=0.6)
    assert cartpole.terminals.sum() == 5 and not (cartpole.terminals & cartpole.truncateds).any()
    ends = np.flatnonzero(cartpole.terminals | cartpole.truncateds)
    np.testing.assert_array_equal(ends, np.flatnonzero(np.diff(np.append(cartpole.episode_ids, -1)) != 0))


def test_episode_returns_only_count_finished_episodes(pendulum):
    unfinished = TransitionArrays(
        **{**pendulum.__dict__, "truncateds": pendulum.truncateds & (pendulum.episode_ids != 2)}
    )
    returns, lengths = episode_returns(unfinished)
    assert len(returns) == 2 and lengths.tolist() == [200, 200]
    np.testing.assert_allclose(returns[0], pendulum.rewards[:200].sum(dtype=np.float64), rtol=1e-6)


def test_normalisation_from_statistics_matches_from_arrays(pendulum):
    returns, lengths = episode_returns(pendulum)
    observations = pendulum.observations.astype(np.float64)
    statistics = {
        "observation": {"mean": observations.mean(0).tolist(), "std": observations.std(0).tolist()},
        "reward": {"mean": float(pendulum.rewards.mean()), "std": float(pendulum.rewards.astype(np.float64).std()),
                   "min": float(pendulum.rewards.min()), "max": float(pendulum.rewards.max()), "count": len(pendulum)},
        "episode_return": {"count": len(returns), "mean": float(returns.mean()), "min": float(returns.min()),
                           "max": float(returns.max())},
        "episode_length": {"count": len(lengths), "mean": float(lengths.mean())},
    }
    from_arrays = Normalisation.from_arrays(pendulum)
    from_statistics = Normalisation.from_statistics(statistics)
    np.testing.assert_allclose(from_statistics.observation_mean, from_arrays.observation_mean, rtol=1e-6)
    np.testing.assert_allclose(from_statistics.observation_std, from_arrays.observation_std, rtol=1e-6)
    assert from_statistics.reward_scale == pytest.approx(from_arrays.reward_scale, rel=1e-6)


def test_reward_scale_undoes_a_change_of_units(pendulum):
    scaled = TransitionArrays(**{**pendulum.__dict__, "rewards": pendulum.rewards * 1000.0})
    original = Normalisation.from_arrays(pendulum)
    thousandfold = Normalisation.from_arrays(scaled)
    assert thousandfold.reward_scale * 1000.0 == pytest.approx(original.reward_scale, rel=1e-5)


def test_scaled_rewards_stay_bounded_whatever_the_offset(pendulum):
    for offset in (0.0, 3000.0, -50_000.0, 1e6):
        rewards = pendulum.rewards * 1000.0 + offset
        shifted = TransitionArrays(**{**pendulum.__dict__, "rewards": rewards})
        scale = Normalisation.from_arrays(shifted).reward_scale
        assert scale > 0
        # so |Q| < MAX_SCALED_REWARD / (1 - gamma)
        assert np.abs(rewards * scale).max() <= MAX_SCALED_REWARD * (1 + 1e-6)
        if abs(offset) <= 1000.0 * np.ptp(pendulum.rewards):
            # an offset no bigger than the rewards' own range keeps their variation of order one
            assert 0.3 <= (rewards * scale).std() <= 3.0


def test_constant_observation_dimension_gets_a_std_floor():
    data = pendulum_dataset("medium", 1, seed=0)
    flat = TransitionArrays(**{**data.__dict__, "observations": data.observations * np.array([1, 1, 0], np.float32)})
    assert Normalisation.from_arrays(flat).observation_std[2] > 0


def test_a_split_puts_each_episode_wholly_on_one_side(pendulum):
    ids = np.unique(pendulum.episode_ids)
    seed = next(seed for seed in range(100) if 0 < held_out(ids, Split(validation_fraction=0.5, seed=seed)).sum() < len(ids))
    split = Split(validation_fraction=0.5, seed=seed)
    rows = held_out(pendulum.episode_ids, split)
    training, validation = pendulum.subset(~rows), pendulum.subset(rows)
    assert set(np.unique(validation.episode_ids)) == set(ids[held_out(ids, split)])
    assert not set(training.episode_ids) & set(validation.episode_ids)
    assert split_summary(split, validation.episode_ids) == {
        "validation_fraction": 0.5, "seed": seed, "held_out_episodes": int(held_out(ids, split).sum()), "held_out_rows": int(rows.sum()),
    }  # fmt: skip
