"""Scripted behaviour policies and the datasets they generate, for tests, benchmarks and demos.

Pendulum-v1: an energy-pumping swing-up with a PD catch near the top, made worse on purpose by
Gaussian torque noise and random actions ("medium"), or whole episodes of a good and of a poor
policy side by side ("mixed", like D4RL's mixes of expert and random or early-training episodes:
cloning averages the two, a value function picks the good one). CartPole-v1: a balancing rule
with epsilon-random actions. LunarLander-v3 with continuous actions: Gymnasium's own landing heuristic,
with the same two kinds of noise as the Pendulum swing-up.
Episodes carry the environment's own ends: Pendulum only truncates (200-step limit), CartPole
terminates when the pole falls, LunarLander terminates on landing or crashing (1000-step limit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from schemas.dataset import DatasetSpec
from workers.algos.data import TransitionArrays

Controller = Callable[[np.ndarray, np.random.Generator], np.ndarray | int]

PENDULUM_SPEC = DatasetSpec.model_validate(
    {
        "observation": {"shape": [3]},
        "action": {"kind": "continuous", "shape": [1], "low": [-2.0], "high": [2.0]},
        "env_id": "Pendulum-v1",
    }
)
CARTPOLE_SPEC = DatasetSpec.model_validate(
    {"observation": {"shape": [4]}, "action": {"kind": "discrete", "n": 2}, "env_id": "CartPole-v1"}
)
LUNAR_LANDER_SPEC = DatasetSpec.model_validate(
    {
        "observation": {"shape": [8]},
        "action": {"kind": "continuous", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0]},
        "env_id": "LunarLanderContinuous-v3",
    }
)
LUNAR_LANDER_ENV = ("LunarLander-v3", {"continuous": True})
"""Gymnasium's id and keyword arguments for LunarLander with continuous actions (main and side engine)."""

# Pendulum-v1 dynamics: theta'' = 3g/(2l) sin(theta) + 3/(m l^2) u with g=10, m=l=1, theta=0 upright.
_GRAVITY_TERM = 15.0
_UPRIGHT_ENERGY = _GRAVITY_TERM  # 0.5 theta'^2 + 15 cos(theta) at rest upright
_MAX_TORQUE = 2.0


def pendulum_swing_up(observation: np.ndarray, catch_gain: float = 1.0) -> float:
    """Noise-free expert torque: pump energy towards the upright level, then catch with PD control.

    A negative `catch_gain` turns the catch into a push that tips the pendulum over.
    """
    cos_theta, sin_theta, velocity = (float(v) for v in observation)
    theta = np.arctan2(sin_theta, cos_theta)
    if cos_theta > 0.85:
        torque = -catch_gain * (10.0 * theta + 2.0 * velocity)
    else:
        energy = 0.5 * velocity**2 + _GRAVITY_TERM * cos_theta
        torque = 2.0 * (_UPRIGHT_ENERGY - energy) * velocity
        if abs(velocity) < 0.1:  # at rest at the bottom: start a swing
            torque = _MAX_TORQUE
    return float(np.clip(torque, -_MAX_TORQUE, _MAX_TORQUE))


def _fold_into_bounds(torque: float) -> float:
    """Reflect noise that overshoots a bound back inside: clipping would pile a share of the actions
    exactly on the bounds, a point mass that conservative methods (CQL) single out as the best action."""
    shifted = (torque + _MAX_TORQUE) % (4 * _MAX_TORQUE)
    return float(min(shifted, 4 * _MAX_TORQUE - shifted) - _MAX_TORQUE)


def noisy_pendulum_controller(
    noise_std: float, random_action_probability: float, tip_probability: float = 0.0
) -> Controller:
    """The swing-up plus Gaussian noise; some steps uniformly random, some tipping instead of catching."""

    def act(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < random_action_probability:
            torque = rng.uniform(-_MAX_TORQUE, _MAX_TORQUE)
        else:
            catch_gain = -1.0 if rng.random() < tip_probability else 1.0
            torque = _fold_into_bounds(pendulum_swing_up(observation, catch_gain) + noise_std * rng.standard_normal())
        return np.array([torque], dtype=np.float32)

    return act


def cartpole_controller(random_action_probability: float) -> Controller:
    def act(observation: np.ndarray, rng: np.random.Generator) -> int:
        if rng.random() < random_action_probability:
            return int(rng.integers(2))
        _, cart_velocity, angle, angular_velocity = (float(v) for v in observation)
        return int(angle + 0.5 * angular_velocity + 0.05 * cart_velocity > 0.0)

    return act


def lunar_lander_heuristic(observation: np.ndarray) -> np.ndarray:
    """Gymnasium's `lunar_lander.heuristic` for continuous actions (it lands almost every time, about +280):
    tilt towards the pad, hover at a height in proportion to the horizontal offset, and after touching
    down only brake the fall. Action: [main engine, side engine], each in [-1, 1]."""
    x, y, x_velocity, y_velocity, angle, angular_velocity, left_contact, right_contact = (float(v) for v in observation)
    angle_target = float(np.clip(0.5 * x + 1.0 * x_velocity, -0.4, 0.4))
    hover_target = 0.55 * abs(x)
    angle_todo = 0.5 * (angle_target - angle) - 1.0 * angular_velocity
    hover_todo = 0.5 * (hover_target - y) - 0.5 * y_velocity
    if left_contact or right_contact:
        angle_todo, hover_todo = 0.0, -0.5 * y_velocity
    return np.clip(np.array([20.0 * hover_todo - 1.0, -20.0 * angle_todo], dtype=np.float32), -1.0, 1.0)


def noisy_lunar_lander_controller(noise_std: float, random_action_probability: float) -> Controller:
    """The landing heuristic plus Gaussian noise (clipped to the bounds); some steps uniformly random."""

    def act(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < random_action_probability:
            return rng.uniform(-1.0, 1.0, 2).astype(np.float32)
        action = lunar_lander_heuristic(observation) + noise_std * rng.standard_normal(2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


def rollout(
    env_id: str,
    controllers: list[Controller],
    episodes: int,
    seed: int,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> TransitionArrays:
    """`episodes` episodes (reset seeds seed, seed+1, ...), episode i driven by controllers[i % len]."""
    import gymnasium as gym

    env = gym.make(env_id, max_episode_steps=max_episode_steps, **(env_kwargs or {}))
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {
        name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "truncateds")
    }
    episode_ids: list[int] = []
    steps: list[int] = []
    try:
        for episode in range(episodes):
            controller = controllers[episode % len(controllers)]
            observation, _ = env.reset(seed=seed + episode)
            step, done = 0, False
            while not done:
                action = controller(observation, rng)
                next_observation, reward, terminated, truncated, _ = env.step(action)
                for name, value in zip(
                    columns, (observation, action, reward, next_observation, terminated, truncated and not terminated)
                ):
                    columns[name].append(value)
                episode_ids.append(episode)
                steps.append(step)
                observation, step, done = next_observation, step + 1, terminated or truncated
    finally:
        env.close()
    actions = np.asarray(columns["actions"])
    return TransitionArrays(
        observations=np.asarray(columns["observations"], dtype=np.float32),
        actions=actions.astype(np.int64) if actions.ndim == 1 else actions.astype(np.float32),
        rewards=np.asarray(columns["rewards"], dtype=np.float32),
        next_observations=np.asarray(columns["next_observations"], dtype=np.float32),
        terminals=np.asarray(columns["terminals"], dtype=np.bool_),
        truncateds=np.asarray(columns["truncateds"], dtype=np.bool_),
        episode_ids=np.asarray(episode_ids, dtype=np.int64),
        steps=np.asarray(steps, dtype=np.int32),
    )


def pendulum_dataset(kind: Literal["medium", "mixed"], episodes: int, seed: int) -> TransitionArrays:
    """A Pendulum-v1 dataset of `episodes` 200-step episodes.

    medium: the swing-up with torque noise (std 1.0) and 30% uniformly random actions.
    mixed: whole episodes, alternately from the lightly noisy swing-up (torque noise std 0.3, 10%
    random actions; about -160 an episode) and from uniformly random actions (about -1200). Both
    start from the same hanging states, where cloning averages a swing-up push with zero-mean noise
    into too weak a push, while a value function learns which of the data's actions lead up.
    """
    if kind == "medium":
        controllers = [noisy_pendulum_controller(noise_std=1.0, random_action_probability=0.3)]
    elif kind == "mixed":
        controllers = [
            noisy_pendulum_controller(noise_std=0.3, random_action_probability=0.1),
            noisy_pendulum_controller(noise_std=0.0, random_action_probability=1.0),
        ]
    else:
        raise ValueError(f"unknown Pendulum dataset kind {kind!r}; choose 'medium' or 'mixed'")
    return rollout("Pendulum-v1", controllers, episodes, seed)


def cartpole_dataset(episodes: int, seed: int, random_action_probability: float = 0.2) -> TransitionArrays:
    """A CartPole-v1 dataset from the balancing rule with epsilon-random actions."""
    return rollout("CartPole-v1", [cartpole_controller(random_action_probability)], episodes, seed)


def lunar_lander_dataset(episodes: int, seed: int) -> TransitionArrays:
    """A LunarLander (continuous) dataset of mixed quality: episodes in turn from the heuristic with light
    noise (std 0.2, 10% random actions), with heavy noise (std 0.5, 40% random) and from uniformly random
    actions, so that policies from an expert down to random all find some of their actions in the data."""
    controllers = [
        noisy_lunar_lander_controller(noise_std=0.2, random_action_probability=0.1),
        noisy_lunar_lander_controller(noise_std=0.5, random_action_probability=0.4),
        noisy_lunar_lander_controller(noise_std=0.0, random_action_probability=1.0),
    ]
    env_id, env_kwargs = LUNAR_LANDER_ENV
    return rollout(env_id, controllers, episodes, seed, env_kwargs=env_kwargs)
