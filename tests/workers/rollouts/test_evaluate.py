"""Evaluation: seeded, reproducible episodes in real Gymnasium environments, whatever form the policy takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from workers.rollouts.evaluate import (
    REFERENCE_RETURNS,
    EnvironmentUnavailable,
    SpaceMismatch,
    evaluate,
    load_policy,
    normalised_score,
)


def swing_up(observations: np.ndarray) -> np.ndarray:
    """A deterministic Pendulum controller whose returns depend on the start state."""
    cos_theta, sin_theta, velocity = observations[:, 0], observations[:, 1], observations[:, 2]
    energy = 0.5 * velocity**2 + 10.0 * (cos_theta - 1.0)
    torque = np.where(
        cos_theta > 0.8,
        -10.0 * np.arctan2(sin_theta, cos_theta) - 2.0 * velocity,
        2.0 * np.sign(-energy * velocity + 1e-8),
    )
    return np.clip(torque, -2.0, 2.0)[:, None].astype(np.float32)


class LinearPolicy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.tanh(self.layer(observations))


def test_same_seed_same_returns_and_another_seed_other_returns() -> None:
    first = evaluate(swing_up, "Pendulum-v1", episodes=3, seed=7)
    again = evaluate(swing_up, "Pendulum-v1", episodes=3, seed=7)
    other = evaluate(swing_up, "Pendulum-v1", episodes=3, seed=8)

    assert first == again
    assert first["returns"] != other["returns"]
    # episode i starts from seed + i, so seed 8's first episode is seed 7's second one
    assert other["returns"][0] == first["returns"][1]


def test_summary_describes_the_returns() -> None:
    result = evaluate(swing_up, "Pendulum-v1", episodes=4, seed=0)

    returns = np.asarray(result["returns"])
    assert result["episodes"] == 4 and result["seed"] == 0 and result["env_id"] == "Pendulum-v1"
    assert result["lengths"] == [200] * 4  # Pendulum-v1 is cut at 200 steps
    assert result["mean"] == pytest.approx(returns.mean())
    assert result["std"] == pytest.approx(returns.std())
    assert (result["min"], result["max"]) == (returns.min(), returns.max())
    reference = REFERENCE_RETURNS["Pendulum-v1"]
    expected = 100 * (returns.mean() - reference.random) / (reference.expert - reference.random)
    assert result["normalised_score"] == pytest.approx(expected)
    # the scripted swing-up is an expert: well above the random end of the scale
    assert result["normalised_score"] > 70
    json.dumps(result)  # plain JSON types only


def test_normalised_score_ends_and_unknown_environments() -> None:
    reference = REFERENCE_RETURNS["Pendulum-v1"]
    assert normalised_score("Pendulum-v1", reference.random) == pytest.approx(0.0)
    assert normalised_score("Pendulum-v1", reference.expert) == pytest.approx(100.0)
    assert normalised_score("CartPole-v1", 500.0) is None
    assert evaluate(lambda o: np.zeros(len(o), np.int64), "CartPole-v1", episodes=1)["normalised_score"] is None


def test_module_onnx_file_and_policy_directory_agree(tmp_path) -> None:
    module = LinearPolicy().eval()
    (tmp_path / "policy").mkdir()
    onnx_path = tmp_path / "policy" / "policy.onnx"
    torch.onnx.export(
        module,
        (torch.zeros(1, 3),),
        str(onnx_path),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
    )

    from_module = evaluate(module, "Pendulum-v1", episodes=2, seed=3)
    from_file = evaluate(onnx_path, "Pendulum-v1", episodes=2, seed=3)
    from_directory = evaluate(str(tmp_path / "policy"), "Pendulum-v1", episodes=2, seed=3)

    np.testing.assert_allclose(from_file["returns"], from_module["returns"], rtol=1e-4)
    assert from_directory["returns"] == from_file["returns"]


def test_discrete_actions_are_passed_as_integers() -> None:
    # always pushing right topples CartPole within a few dozen steps; reward is 1 per step
    result = evaluate(lambda o: np.ones(len(o), np.int64), "CartPole-v1", episodes=2, seed=0)

    assert all(length < 100 for length in result["lengths"])
    assert result["returns"] == [float(length) for length in result["lengths"]]


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="episodes"):
        evaluate(swing_up, "Pendulum-v1", episodes=0)
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        evaluate(swing_up, "NoSuchEnv-v0", episodes=1)
    with pytest.raises(FileNotFoundError, match="policy.onnx"):
        load_policy(tmp_path)
    with pytest.raises(TypeError, match="policy must be"):
        load_policy(42)


def test_an_environment_this_machine_cannot_make_is_named_with_the_reason() -> None:
    with pytest.raises(EnvironmentUnavailable, match="cannot make environment 'NoSuchEnv-v0': .*doesn't exist"):
        evaluate(swing_up, "NoSuchEnv-v0", episodes=1)


def test_spaces_that_are_not_the_policys_are_refused_before_the_first_step(tmp_path) -> None:
    pendulum = DatasetSpec(observation=ObservationSpec(shape=[3]), action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]))
    with pytest.raises(SpaceMismatch, match=r"takes observations of shape \[3\], but MountainCarContinuous-v0 gives observations of shape \[2\]"):
        evaluate(swing_up, "MountainCarContinuous-v0", episodes=1, spec=pendulum)
    with pytest.raises(SpaceMismatch, match=r"chooses among 3 discrete actions, but CartPole-v1's actions are Discrete\(2\)"):
        evaluate(swing_up, "CartPole-v1", episodes=1, spec=DatasetSpec(observation=ObservationSpec(shape=[4]), action=DiscreteActionSpec(n=3)))

    # a policy directory's card names the spaces it was made for
    (tmp_path / "card.json").write_text(json.dumps({"observation": pendulum.observation.model_dump(), "action": pendulum.action.model_dump()}))
    (tmp_path / "policy.onnx").write_bytes(b"not read: the spaces are checked first")
    with pytest.raises(SpaceMismatch, match="but CartPole-v1 gives observations of shape"):
        evaluate(tmp_path, "CartPole-v1", episodes=1)
