"""Exported policies run without this project and match the PyTorch policy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from schemas.dataset import DatasetSpec
from tests.factories import random_transitions
from workers.algos.data import Normalisation
from workers.algos.export import export_policy
from workers.algos.replay import ReplayBuffer
from workers.algos.training import make_algorithm, train
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC

IMAGE_LIKE_SPEC = DatasetSpec.model_validate(
    {
        "observation": {"shape": [2, 3]},
        "action": {"kind": "continuous", "shape": [2], "low": [-1.0, 0.0], "high": [3.0, 0.5]},
    }
)


def trained(name: str, spec: DatasetSpec, params: dict):
    data = random_transitions(spec)
    normalisation = Normalisation.from_arrays(data)
    params = {"hidden_sizes": [32, 32], "batch_size": 32, **params}
    algorithm = make_algorithm(name, params, spec, normalisation, "cpu", 0, 20)
    train(algorithm, ReplayBuffer.from_arrays(data, normalisation, spec.action, algorithm.device, 0), 20, 32)
    return algorithm


CASES = {
    "iql-continuous-2d-observations": ("iql", IMAGE_LIKE_SPEC, {}),
    "cql-continuous": ("cql", PENDULUM_SPEC, {"sampled_actions": 2}),
    "cql-discrete": ("cql", CARTPOLE_SPEC, {}),
    "bc-discrete": ("bc", CARTPOLE_SPEC, {}),
    "awac-continuous-2d-observations": ("awac", IMAGE_LIKE_SPEC, {"sampled_actions": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_and_program_match_pytorch(case, tmp_path):
    name, spec, params = CASES[case]
    algorithm = trained(name, spec, params)
    paths = export_policy(algorithm, tmp_path / "policy", card_extra={"dataset": "demo", "version": 3})
    policy = algorithm.policy().eval()

    session = onnxruntime.InferenceSession(str(paths.onnx), providers=["CPUExecutionProvider"])
    program = torch.export.load(paths.program).module()
    rng = np.random.default_rng(1)
    for batch_size in (1, 33):
        observations = (rng.normal(3.0, 5.0, (batch_size, *spec.observation.shape))).astype(np.float32)
        with torch.no_grad():
            expected = policy(torch.from_numpy(observations)).numpy()
            from_program = program(torch.from_numpy(observations)).numpy()
        (from_onnx,) = session.run(None, {"observations": observations})
        assert from_onnx.dtype == expected.dtype and from_onnx.shape == expected.shape
        if spec.action.kind == "continuous":
            assert from_onnx.dtype == np.float32 and from_onnx.shape == (batch_size, *spec.action.shape)
            np.testing.assert_allclose(from_onnx, expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(from_program, expected, atol=1e-6, rtol=0)
            assert (from_onnx >= np.array(spec.action.low, np.float32).reshape(spec.action.shape)).all()
            assert (from_onnx <= np.array(spec.action.high, np.float32).reshape(spec.action.shape)).all()
        else:
            assert from_onnx.dtype == np.int64 and from_onnx.shape == (batch_size,)
            np.testing.assert_array_equal(from_onnx, expected)
            np.testing.assert_array_equal(from_program, expected)

    model = onnx.load(str(paths.onnx))
    assert max(opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")) >= 17
    card = json.loads(paths.card.read_text())
    assert card["algorithm"] == name and card["dataset"] == "demo" and card["version"] == 3
    assert card["action"] == spec.action.model_dump(mode="json")
    assert card["observation"]["shape"] == spec.observation.shape
    np.testing.assert_allclose(card["normalisation"]["observation_mean"], algorithm.normalisation.observation_mean)
    assert card["steps"] == 20 and card["torch_version"] == torch.__version__
    assert card["params"]["hidden_sizes"] == [32, 32]
