import json
import shutil

import numpy as np
import pytest
from tests.workers.ope.conftest import DISCOUNT, FAST_FQE
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC
from workers.ope.estimate import evaluate_offline
from workers.ope.policies import as_dataset_policy, load_artifact


def test_the_onnx_graph_and_the_exported_program_act_alike(exported, pendulum):
    observations = pendulum.observations[:50]
    onnx = load_artifact(exported, PENDULUM_SPEC, prefer="onnx")(observations)
    program = load_artifact(exported / "policy.pt2", PENDULUM_SPEC)(observations)
    assert onnx.shape == (50, 1) and onnx.dtype == np.float32
    np.testing.assert_allclose(onnx, program, atol=1e-5)
    assert np.all(np.abs(onnx) <= 2.0)


def test_fqe_of_an_artifact_folder(exported, pendulum):
    result = evaluate_offline(exported, pendulum, PENDULUM_SPEC, "fqe", steps=300, discount=DISCOUNT, fqe=FAST_FQE)
    assert np.isfinite(result.estimate) and result.low <= result.estimate <= result.high


def test_spaces_that_do_not_match_name_the_field_and_both_shapes(exported, tmp_path):
    four = PENDULUM_SPEC.observation.model_copy(update={"shape": [4]})
    bigger = PENDULUM_SPEC.model_copy(update={"observation": four})
    with pytest.raises(ValueError, match=r"observation: .*\[3\].*\[4\]"):
        load_artifact(exported, bigger)
    with pytest.raises(ValueError, match=r"action: .*continuous of shape \[1\].*discrete with n=2"):
        load_artifact(exported, CARTPOLE_SPEC.model_copy(update={"observation": PENDULUM_SPEC.observation}))
    # Without a card (a policy trained elsewhere) the probe call finds the same mismatch.
    bare = tmp_path / "bare"
    shutil.copytree(exported, bare)
    (bare / "card.json").unlink()
    with pytest.raises(ValueError, match=r"observation: the policy does not take .* observations of shape \[4\]"):
        load_artifact(bare, bigger)
    card = json.loads((exported / "card.json").read_text())
    assert card["observation"]["shape"] == [3]


def test_a_callable_with_the_wrong_outputs_is_refused():
    with pytest.raises(ValueError, match=r"action: the policy returns float32 actions of shape \[2\]"):
        as_dataset_policy(lambda o: np.zeros((len(o), 2), np.float32), PENDULUM_SPEC)
    with pytest.raises(ValueError, match="action: the policy returns float"):
        as_dataset_policy(lambda o: np.zeros(len(o), np.float32), CARTPOLE_SPEC)
    with pytest.raises(ValueError, match="action: the policy returned action 5"):
        as_dataset_policy(lambda o: np.full(len(o), 5), CARTPOLE_SPEC)
    with pytest.raises(FileNotFoundError):
        as_dataset_policy("/nonexistent/policy", PENDULUM_SPEC)
