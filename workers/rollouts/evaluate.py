"""Run a policy in a Gymnasium environment for seeded episodes and summarise its returns.

A policy here is anything that maps a float32 batch of raw observations `[N, *obs_shape]` to actions in
the environment's space: a plain callable, a torch `nn.Module`, an ONNX file, or a policy directory
(the artifact layout: `policy.onnx` beside `card.json`). Everything is resolved to a numpy callable once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.dataset import DatasetSpec, DiscreteActionSpec
from schemas.policies import POLICY_FILES

PolicyFn = Callable[[np.ndarray], np.ndarray]


class EnvironmentUnavailable(ValueError):
    """This machine cannot make the environment: its id is not registered here, or a package it needs is
    missing (Gymnasium's message names it). Another machine may well make it."""


class SpaceMismatch(ValueError):
    """The environment's observations or actions are not the ones the policy (or dataset) was made for."""


@dataclass(frozen=True)
class ReferenceReturns:
    """Episode returns of a random and an expert policy, the ends of the D4RL-style normalised score."""

    random: float
    expert: float
    source: str


REFERENCE_RETURNS: dict[str, ReferenceReturns] = {
    # Measured with benchmarks/reference_returns.py (100 episodes seeded 0..99): the random policy samples
    # uniform actions; the Pendulum expert is a noiseless energy-pumping swing-up with a PD catch near the
    # top (SAC reaches about -150 to -170 on this task too).
    "Pendulum-v1": ReferenceReturns(random=-1207.6, expert=-165.9, source="benchmarks/reference_returns.py"),
    # Reward is +1 per step the pole stays up and episodes stop at 1000 steps, so an expert scores 1000.
    "InvertedPendulum-v5": ReferenceReturns(random=5.2, expert=1000.0, source="benchmarks/reference_returns.py"),
    # D4RL's published reference scores for the v2 locomotion tasks (Fu et al. 2020), used unchanged for v5
    # as Minari and most papers do: the v5 dynamics match and the rewards differ only in small details.
    "Hopper-v5": ReferenceReturns(random=-20.272305, expert=3234.3, source="D4RL (hopper)"),
    "HalfCheetah-v5": ReferenceReturns(random=-280.178953, expert=12135.0, source="D4RL (halfcheetah)"),
    "Walker2d-v5": ReferenceReturns(random=1.629008, expert=4592.3, source="D4RL (walker2d)"),
}


def normalised_score(env_id: str, episode_return: float) -> float | None:
    """100 * (R - random) / (expert - random), or None when the environment has no reference returns."""
    reference = REFERENCE_RETURNS.get(env_id)
    if reference is None:
        return None
    return 100.0 * (episode_return - reference.random) / (reference.expert - reference.random)


def load_policy(policy: Any, threads: int = 1) -> PolicyFn:
    """Resolves a callable, an `nn.Module`, an ONNX file or a policy directory to a numpy function."""
    if isinstance(policy, (str, Path)):
        return _onnx_policy(_onnx_path(Path(policy)), threads)
    try:
        import torch
    except ImportError:  # a worker that only evaluates ONNX policies needs no torch
        torch = None
    if torch is not None and isinstance(policy, torch.nn.Module):
        return _torch_policy(policy)
    if callable(policy):
        return policy
    raise TypeError(f"policy must be a callable, an nn.Module, an ONNX file or a policy directory, not {type(policy)!r}")


def _onnx_path(path: Path) -> Path:
    if path.is_dir():
        path = path / POLICY_FILES["onnx"]
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX policy at {path}")
    return path


def _onnx_policy(path: Path, threads: int) -> PolicyFn:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # A policy network is small: one thread per call beats the cost of waking a pool at every step.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def act(observations: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: observations})[0]

    return act


def _torch_policy(module: Any) -> PolicyFn:
    import torch

    # Called as it is, without .eval(): switching modes would change a module that is still training.
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")

    def act(observations: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(observations).to(device)).cpu().numpy()

    return act


def evaluate(
    policy: Any,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    spec: DatasetSpec | None = None,
) -> dict[str, Any]:
    """Runs `episodes` episodes, episode i reset with seed `seed + i`, and returns their statistics.

    The same policy, environment and seed always give the same returns. The environment's spaces are
    checked against `spec` (by default a policy directory's card) before the first step, so a policy
    made for other observations is refused in one sentence (`SpaceMismatch`) rather than deep in a run.
    """
    if episodes < 1:
        raise ValueError("episodes must be at least 1")
    spec = spec or _card_spec(policy)
    env = make_env(env_id, max_episode_steps, **(env_kwargs or {}))
    try:
        if spec is not None:
            check_spaces(env, spec, env_id)
        act = load_policy(policy)
        to_env_action = _action_adapter(env.action_space)
        returns: list[float] = []
        lengths: list[int] = []
        for index in range(episodes):
            observation, _ = env.reset(seed=seed + index)
            episode_return, length, done = 0.0, 0, False
            while not done:
                batch = np.asarray(observation, dtype=np.float32)[None]
                action = to_env_action(np.asarray(act(batch))[0])
                observation, reward, terminated, truncated, _ = env.step(action)
                episode_return += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(episode_return)
            lengths.append(length)
    finally:
        env.close()
    return summarise(env_id, returns, lengths, seed)


def make_env(env_id: str, max_episode_steps: int | None = None, **kwargs: Any) -> Any:
    """`gymnasium.make`, with an unknown id or a missing dependency raised as `EnvironmentUnavailable` naming the id."""
    import gymnasium as gym

    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except (gym.error.Error, ImportError) as error:
        raise EnvironmentUnavailable(f"cannot make environment {env_id!r}: {error}") from error


def check_spaces(env: Any, spec: DatasetSpec, env_id: str) -> None:
    """Raise `SpaceMismatch`, naming both sides, unless `env`'s observation and action spaces are the ones
    `spec` (the policy's, or its dataset's) describes."""
    from gymnasium import spaces

    observation_size = int(np.prod(env.observation_space.shape or (0,)))
    if not isinstance(env.observation_space, spaces.Box) or observation_size != spec.observation.size:
        given = list(env.observation_space.shape or ()) if isinstance(env.observation_space, spaces.Box) else env.observation_space
        raise SpaceMismatch(
            f"the policy takes observations of shape {list(spec.observation.shape)}, but {env_id} gives observations of shape {given}"
        )
    if isinstance(spec.action, DiscreteActionSpec):
        if not isinstance(env.action_space, spaces.Discrete) or int(env.action_space.n) != spec.action.n:
            raise SpaceMismatch(f"the policy chooses among {spec.action.n} discrete actions, but {env_id}'s actions are {env.action_space}")
    elif not isinstance(env.action_space, spaces.Box) or int(np.prod(env.action_space.shape)) != spec.action.size:
        raise SpaceMismatch(f"the policy gives actions of shape {list(spec.action.shape)}, but {env_id}'s actions are {env.action_space}")


def _card_spec(policy: Any) -> DatasetSpec | None:
    """The spaces a policy directory's card names, or None for a policy of another form (or without a card)."""
    if not isinstance(policy, (str, Path)) or not (card_path := Path(policy) / POLICY_FILES["card"]).is_file():
        return None
    card = json.loads(card_path.read_text())
    if "observation" not in card or "action" not in card:
        return None
    return DatasetSpec(observation=card["observation"], action=card["action"])


def summarise(env_id: str, returns: list[float], lengths: list[int], seed: int) -> dict[str, Any]:
    values = np.asarray(returns, dtype=np.float64)
    mean = float(values.mean())
    return {
        "env_id": env_id,
        "episodes": len(returns),
        "seed": seed,
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "mean": mean,
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "normalised_score": normalised_score(env_id, mean),
    }


def _action_adapter(space: Any) -> Callable[[np.ndarray], Any]:
    """Turns one policy output into what `env.step` takes for this action space."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return lambda action: int(np.asarray(action).reshape(-1)[0])
    if isinstance(space, spaces.Box):
        low, high = space.low, space.high
        finite = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)))

        def to_box(action: np.ndarray) -> np.ndarray:
            action = np.asarray(action, dtype=space.dtype).reshape(space.shape)
            # Exported policies already stay in bounds; clipping keeps baselines that do not comparable.
            return np.clip(action, low, high) if finite else action

        return to_box
    raise TypeError(f"only Box and Discrete action spaces are supported, not {type(space).__name__}")

