"""Measures the random and expert returns behind workers/rollouts/evaluate.py's REFERENCE_RETURNS.

    .venv/bin/python benchmarks/reference_returns.py [--episodes 100]

Random: uniform actions from the action space. Expert: for Pendulum-v1, a noiseless energy-pumping
swing-up that hands over to a PD controller near the top; for InvertedPendulum-v5 the expert return is
the episode cap (1000 steps at +1), so only the random end is measured.
"""

from __future__ import annotations

import argparse

import numpy as np

from workers.rollouts.evaluate import evaluate

PENDULUM_MAX_TORQUE = 2.0


def pendulum_expert(observations: np.ndarray) -> np.ndarray:
    """Energy shaping far from upright, PD control close to it; observations are [cos θ, sin θ, θ̇]."""
    cos_theta, sin_theta, velocity = observations[:, 0], observations[:, 1], observations[:, 2]
    theta = np.arctan2(sin_theta, cos_theta)
    # Pendulum-v1 has m = l = 1 and g = 10: this energy is 0 exactly when the pole rests upright.
    energy = 0.5 * velocity**2 + 10.0 * (cos_theta - 1.0)
    pump = -1.0 * energy * velocity
    near_top = cos_theta > 0.8
    catch = -10.0 * theta - 2.0 * velocity
    torque = np.where(near_top, catch, np.sign(pump + 1e-8) * PENDULUM_MAX_TORQUE)
    return np.clip(torque, -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)[:, None].astype(np.float32)


def random_policy(env_id: str, seed: int):
    import gymnasium as gym

    space = gym.make(env_id).action_space
    rng = np.random.default_rng(seed)

    def act(observations: np.ndarray) -> np.ndarray:
        return rng.uniform(space.low, space.high, size=(len(observations), *space.shape)).astype(np.float32)

    return act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    rows = [
        ("Pendulum-v1", "random", random_policy("Pendulum-v1", 0)),
        ("Pendulum-v1", "expert", pendulum_expert),
        ("InvertedPendulum-v5", "random", random_policy("InvertedPendulum-v5", 0)),
    ]
    print(f"{'env':<22}{'policy':<8}{'mean':>10}{'std':>9}")
    for env_id, name, policy in rows:
        result = evaluate(policy, env_id, episodes=args.episodes, seed=0)
        print(f"{env_id:<22}{name:<8}{result['mean']:>10.1f}{result['std']:>9.1f}")


if __name__ == "__main__":
    main()
