"""Training on a local file: the artifact layout, the metrics log, exported policies that agree, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workers.algos.data import arrays_to_arrow
from workers.files.parquet import write_parquet
from workers.local import evaluate_dir, fit_file
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC, cartpole_dataset, pendulum_dataset

SMALL = {"batch_size": 32, "hidden_sizes": [16, 16]}


@pytest.fixture(scope="module")
def pendulum_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pendulum.parquet"
    write_parquet(arrays_to_arrow(pendulum_dataset("medium", episodes=3, seed=0), PENDULUM_SPEC), path, PENDULUM_SPEC)
    return path


def test_fit_file_writes_the_policy_layout_and_a_metrics_log(pendulum_file, tmp_path) -> None:
    reports: list[int] = []
    summary = fit_file(
        "iql", pendulum_file, steps=40, seed=0, device="cpu", out_dir=tmp_path / "out", params=SMALL,
        on_progress=lambda step, metrics: reports.append(step), progress_every=10,
    )

    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"policy.onnx", "policy.pt2", "card.json", "metrics.jsonl"}
    assert summary["steps"] == 40 and summary["rows"] == 600
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 30, 40] == reports
    assert all(np.isfinite(line["critic_loss"]) for line in lines)
    card = json.loads((out / "card.json").read_text())
    assert card["algorithm"] == "iql" and card["env_id"] == "Pendulum-v1" and card["steps"] == 40
    assert card["params"]["hidden_sizes"] == [16, 16]
    assert card["data_file"] == str(pendulum_file.resolve())

    import onnxruntime

    observations = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 3
    session = onnxruntime.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    from_onnx = session.run(None, {session.get_inputs()[0].name: observations})[0]
    from_program = torch.export.load(str(out / "policy.pt2")).module()(torch.from_numpy(observations)).numpy()
    np.testing.assert_allclose(from_onnx, from_program, atol=1e-5)
    assert from_onnx.shape == (64, 1) and from_onnx.min() >= -2.0 and from_onnx.max() <= 2.0


def test_same_seed_gives_the_same_policy(pendulum_file, tmp_path) -> None:
    for name in ("a", "b"):
        fit_file("bc", pendulum_file, steps=20, seed=3, device="cpu", out_dir=tmp_path / name, params=SMALL)
    assert (tmp_path / "a" / "policy.onnx").read_bytes() == (tmp_path / "b" / "policy.onnx").read_bytes()


def test_evaluate_dir_takes_the_environment_from_the_card(pendulum_file, tmp_path) -> None:
    fit_file("bc", pendulum_file, steps=10, seed=0, device="cpu", out_dir=tmp_path / "out", params=SMALL)

    result = evaluate_dir(tmp_path / "out", episodes=2, seed=4)
    assert result["env_id"] == "Pendulum-v1" and result["lengths"] == [200, 200]
    assert result == evaluate_dir(tmp_path / "out", "Pendulum-v1", episodes=2, seed=4)


def test_discrete_dataset_trains_and_evaluates(tmp_path) -> None:
    path = tmp_path / "cartpole.parquet"
    write_parquet(arrays_to_arrow(cartpole_dataset(episodes=4, seed=0), CARTPOLE_SPEC), path, CARTPOLE_SPEC)

    fit_file("cql", path, steps=20, seed=0, device="cpu", out_dir=tmp_path / "out", params=SMALL)
    result = evaluate_dir(tmp_path / "out", episodes=2)

    assert result["env_id"] == "CartPole-v1"
    assert result["returns"] == [float(n) for n in result["lengths"]]


def test_bad_requests_are_refused_before_training(pendulum_file, tmp_path) -> None:
    with pytest.raises(ValueError, match="no_such_param"):
        fit_file("iql", pendulum_file, 10, 0, "cpu", tmp_path / "a", params={"no_such_param": 1})
    with pytest.raises(ValueError, match="expectile"):
        fit_file("iql", pendulum_file, 10, 0, "cpu", tmp_path / "b", params={"expectile": 1.5})
    with pytest.raises(ValueError, match="unknown algorithm"):
        fit_file("ppo", pendulum_file, 10, 0, "cpu", tmp_path / "c")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            fit_file("iql", pendulum_file, 10, 0, "cuda", tmp_path / "d")
    assert list(tmp_path.iterdir()) == [], "a refused request wrote files"
    with pytest.raises(ValueError, match="--env"):
        evaluate_dir(tmp_path)
