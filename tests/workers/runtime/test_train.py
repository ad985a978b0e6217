"""Fine-tuning starts from the parent's networks and optimiser moments with fresh schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from workers.algos.data import Normalisation, TransitionArrays
from workers.algos.replay import ReplayBuffer
from workers.algos.training import make_algorithm, train
from workers.runtime.train import start_from_parent

SPEC = DatasetSpec(observation=ObservationSpec(shape=[3]), action=ContinuousActionSpec(shape=[1], low=[-2.0], high=[2.0]))


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def arrays(n: int = 200) -> TransitionArrays:
    rng = np.random.default_rng(0)
    steps = np.arange(n) % 20
    return TransitionArrays(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=np.zeros(n, dtype=bool),
        truncateds=steps == 19,
        episode_ids=np.arange(n) // 20,
        steps=steps.astype(np.int32),
    )


def test_a_finished_parent_fine_tunes_with_its_weights_and_a_fresh_schedule() -> None:
    data = arrays()
    normalisation = Normalisation.from_arrays(data)
    params = {"hidden_sizes": [16, 16], "batch_size": 32}
    parent = make_algorithm("iql", params, SPEC, normalisation, "cpu", 0, total_steps=50)
    train(parent, ReplayBuffer.from_arrays(data, normalisation, SPEC.action, parent.device, 0), 50, 32)
    assert parent.actor_optimiser.param_groups[0]["lr"] < 1e-6  # the cosine schedule ran out

    child = make_algorithm("iql", params, SPEC, normalisation, "cpu", 1, total_steps=30)
    start_from_parent(child, parent.state_dict())
    assert child.step == 0
    assert child.actor_optimiser.param_groups[0]["lr"] == pytest.approx(3e-4)
    for name in ("actor", "critic", "value"):
        for mine, theirs in zip(getattr(child, name).parameters(), getattr(parent, name).parameters()):
            assert torch.equal(mine, theirs)
    before = [parameter.clone() for parameter in child.actor.parameters()]
    result = train(child, ReplayBuffer.from_arrays(data, normalisation, SPEC.action, child.device, 1), 30, 32)
    assert result.step == 30
    assert any(not torch.equal(old, new) for old, new in zip(before, child.actor.parameters()))  # the actor learns
