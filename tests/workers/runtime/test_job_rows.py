"""A job's rows, resident or streamed, offer the same things: normalisation, a replay limited by a row mask,
episode ids to build masks from, and what the job's result says about the choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.workers.algos.test_columns import mapped_version
from workers.algos.data import Normalisation
from workers.algos.streaming import close_replay
from workers.rollouts.behaviour import PENDULUM_SPEC, pendulum_dataset
from workers.runtime.job_rows import JobRows, columns_folder


@pytest.fixture(scope="module")
def small_pendulum():
    return pendulum_dataset("medium", 4, seed=0)


@pytest.fixture
def both(small_pendulum, tmp_path) -> dict[str, JobRows]:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    estimate = 800 * 36
    return {
        "resident": JobRows(small_pendulum, None, None, estimate, None),
        "streamed": JobRows(None, mapped, None, estimate, estimate - 1),
    }


def test_resident_and_streamed_rows_agree(both, small_pendulum) -> None:
    resident, streamed = both["resident"], both["streamed"]
    np.testing.assert_array_equal(resident.episode_ids(), streamed.episode_ids())
    np.testing.assert_allclose(streamed.normalisation().observation_std, resident.normalisation().observation_std, rtol=1e-6)
    assert resident.describe() == {"streamed": False, "estimated_device_bytes": 28800, "memory_budget": None}
    assert streamed.describe()["streamed"] is True


@pytest.mark.parametrize("kind", ["resident", "streamed"])
def test_a_row_mask_keeps_the_replay_to_its_rows(both, kind, small_pendulum) -> None:
    rows = both[kind]
    kept_episode = rows.episode_ids() == small_pendulum.episode_ids[0]
    normalisation = Normalisation.from_arrays(small_pendulum)
    replay = rows.replay(normalisation, PENDULUM_SPEC.action, torch.device("cpu"), 0, None, rows=kept_episode)
    try:
        assert len(replay) == kept_episode.sum() == 200
        observations = replay.sample(256).observations
    finally:
        close_replay(replay)
    allowed = (torch.as_tensor(small_pendulum.observations[kept_episode]) - torch.as_tensor(normalisation.observation_mean)) / torch.as_tensor(normalisation.observation_std)
    assert all(bool((allowed == row).all(dim=1).any()) for row in observations)


def test_the_columns_of_a_cached_file_live_beside_it(tmp_path) -> None:
    cached = tmp_path / "sha256" / "ab" / ("ab" + "0" * 62)
    assert columns_folder(cached) == cached.parent / (cached.name + ".columns-v1")
