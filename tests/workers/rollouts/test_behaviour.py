"""The LunarLander behaviour: the landing heuristic is Gymnasium's, and its dataset mixes good and random episodes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.lunar_lander import heuristic

from workers.algos.data import episode_returns
from workers.rollouts.behaviour import (
    LUNAR_LANDER_ENV,
    LUNAR_LANDER_SPEC,
    lunar_lander_dataset,
    lunar_lander_heuristic,
    noisy_lunar_lander_controller,
)


def test_the_landing_heuristic_acts_as_gymnasiums_along_a_whole_episode() -> None:
    env_id, env_kwargs = LUNAR_LANDER_ENV
    env = gym.make(env_id, **env_kwargs)
    observation, _ = env.reset(seed=3)
    done, steps, total = False, 0, 0.0
    while not done:
        action = lunar_lander_heuristic(observation)
        np.testing.assert_allclose(action, heuristic(env.unwrapped, observation), rtol=0, atol=1e-5)
        observation, reward, terminated, truncated, _ = env.step(action)
        done, steps, total = terminated or truncated, steps + 1, total + reward
    env.close()
    assert total > 200  # it landed


def test_noise_stays_within_the_action_bounds_and_random_steps_cover_them() -> None:
    rng = np.random.default_rng(0)
    observation = np.zeros(8, np.float32)
    noisy = np.stack([noisy_lunar_lander_controller(2.0, 0.0)(observation, rng) for _ in range(500)])
    random = np.stack([noisy_lunar_lander_controller(0.0, 1.0)(observation, rng) for _ in range(500)])
    for actions in (noisy, random):
        assert actions.dtype == np.float32 and actions.shape == (500, 2)
        assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert random.std(0).min() > 0.5  # uniform on [-1, 1] has std 0.58


def test_the_dataset_holds_landing_and_random_episodes_with_their_ends() -> None:
    data = lunar_lander_dataset(episodes=6, seed=0)
    assert data.observations.shape[1:] == tuple(LUNAR_LANDER_SPEC.observation.shape)
    assert data.actions.shape[1:] == tuple(LUNAR_LANDER_SPEC.action.shape)
    returns, _ = episode_returns(data)
    assert len(returns) == 6
    light_noise, random = returns[0::3], returns[2::3]
    assert light_noise.min() > random.max()
    assert (data.terminals | data.truncateds).sum() == 6
