import numpy as np
import pytest

from tests.workers.ope.conftest import DISCOUNT, FAST_FQE, RandomTorques, discounted_returns, swing_up
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_controller, noisy_pendulum_controller, rollout
from workers.ope.estimate import evaluate_offline


def fqe(policy, data, spec, steps=3000, **kwargs):
    return evaluate_offline(policy, data, spec, "fqe", steps=steps, discount=DISCOUNT, fqe=FAST_FQE, **kwargs)


def test_fqe_of_the_behaviour_policy_recovers_its_return_in_the_data(pendulum):
    controller = noisy_pendulum_controller(noise_std=1.0, random_action_probability=0.3)
    rng = np.random.default_rng(1)
    behaviour = lambda observations: np.stack([controller(o, rng) for o in observations])  # noqa: E731
    result = fqe(behaviour, pendulum, PENDULUM_SPEC)
    truth = discounted_returns(pendulum, DISCOUNT).mean()
    assert result.estimate == pytest.approx(truth, rel=0.1)
    assert result.low <= result.estimate <= result.high
    assert (result.method, result.episodes, result.rows, result.steps) == ("fqe", 20, len(pendulum), 3000)


def test_fqe_ranks_the_swing_up_above_random_torques_and_values_both(pendulum, true_pendulum_values):
    good = fqe(swing_up, pendulum, PENDULUM_SPEC)
    bad = fqe(RandomTorques(seed=0), pendulum, PENDULUM_SPEC)
    assert good.estimate > bad.estimate + 20.0
    assert good.estimate == pytest.approx(true_pendulum_values["good"], rel=0.15)
    assert bad.estimate == pytest.approx(true_pendulum_values["bad"], rel=0.15)


def test_discrete_fqe_on_cartpole_values_the_balancing_rule_above_random_actions(cartpole):
    rule, rng = cartpole_controller(random_action_probability=0.0), np.random.default_rng(0)
    balance = lambda observations: np.array([rule(o, rng) for o in observations])  # noqa: E731
    coin = lambda observations: rng.integers(0, 2, len(observations))  # noqa: E731
    good, bad = fqe(balance, cartpole, CARTPOLE_SPEC), fqe(coin, cartpole, CARTPOLE_SPEC)
    true_good = discounted_returns(rollout("CartPole-v1", [rule], 20, seed=0), DISCOUNT).mean()
    true_bad = discounted_returns(rollout("CartPole-v1", [lambda o, r: int(r.integers(2))], 20, seed=0), DISCOUNT)
    # The rule balances all 500 steps (about 20 discounted), random actions topple the pole in about 20 (about 12.6).
    assert good.estimate == pytest.approx(true_good, rel=0.15)
    assert bad.estimate == pytest.approx(true_bad.mean(), rel=0.2)
    assert good.estimate > bad.estimate + 3.0


def test_the_interval_holds_the_estimate_and_narrows_with_more_episodes(pendulum):
    few = pendulum.subset(pendulum.episode_ids < 4)
    narrow, wide = fqe(swing_up, pendulum, PENDULUM_SPEC, steps=1000), fqe(swing_up, few, PENDULUM_SPEC, steps=1000)
    assert (narrow.episodes, wide.episodes) == (20, 4)
    for result in (narrow, wide):
        assert result.low <= result.estimate <= result.high
    assert narrow.high - narrow.low < wide.high - wide.low


def test_the_same_seed_gives_the_same_estimate(pendulum):
    few = pendulum.subset(pendulum.episode_ids < 4)
    first, second = (fqe(swing_up, few, PENDULUM_SPEC, steps=200, seed=3) for _ in range(2))
    assert (first.estimate, first.low, first.high) == (second.estimate, second.low, second.high)
