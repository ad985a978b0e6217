"""benchmarks/reuse_loop.py: its glue around the worker's functions, and one tiny run of the whole script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.reuse_loop import collect_round, concatenate, fine_tune, logged_dataset
from workers.algos.training import fit
from workers.rollouts.behaviour import PENDULUM_SPEC

ROOT = Path(__file__).resolve().parents[2]
TINY_PARAMS = {"hidden_sizes": [16, 16]}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def policy_outputs(algorithm, observations: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return algorithm.policy()(torch.from_numpy(observations)).numpy()


def test_fine_tuning_starts_from_the_parent_and_leaves_it_untouched() -> None:
    data = logged_dataset(episodes=1, seed=0, random_actions=0.6)
    parent, _ = fit("iql", data, PENDULUM_SPEC, 20, seed=0, params=TINY_PARAMS)
    probe = data.observations[:32]
    before = policy_outputs(parent, probe)
    parent_actor = {name: value.clone() for name, value in parent.actor.state_dict().items()}

    unchanged = fine_tune(parent, data, steps=0, seed=1)
    np.testing.assert_allclose(policy_outputs(unchanged, probe), before, rtol=0, atol=1e-6)

    trained = fine_tune(parent, data, steps=30, seed=1)
    assert trained.step == 30
    assert not np.allclose(policy_outputs(trained, probe), before)
    for name, value in parent.actor.state_dict().items():
        assert torch.equal(value, parent_actor[name]), name
    np.testing.assert_array_equal(policy_outputs(parent, probe), before)


def test_fine_tuning_with_an_online_fraction_draws_that_share_from_the_collected_rows(monkeypatch) -> None:
    data = logged_dataset(episodes=2, seed=0, random_actions=0.6)
    parent, _ = fit("iql", data, PENDULUM_SPEC, 5, seed=0, params=TINY_PARAMS)
    online = np.arange(len(data)) >= len(data) - 40  # the last 40 of 400 rows stand for collected ones
    sampled: list = []
    from workers.algos import replay

    real_sample = replay.MixedReplay.sample
    monkeypatch.setattr(replay.MixedReplay, "sample", lambda self, size: sampled.append(self) or real_sample(self, size))

    fine_tune(parent, data, steps=3, seed=1, online=online, online_fraction=0.5)

    assert len(sampled) == 3 and sampled[0].first_fraction == 0.5
    assert (len(sampled[0].first), len(sampled[0].second)) == (40, 360)


def test_a_round_appends_whole_collected_episodes_to_the_logged_data() -> None:
    logged = logged_dataset(episodes=2, seed=0, random_actions=0.6)
    policy, _ = fit("iql", logged, PENDULUM_SPEC, 5, seed=0, params=TINY_PARAMS)
    collected, mean_return = collect_round(policy, seed=0, round_index=1, episodes=2, sigma=0.2)
    grown = concatenate(logged, collected)

    assert len(collected) == 2 * 200 and len(grown) == len(logged) + len(collected)
    assert np.isfinite(mean_return) and mean_return < 0.0  # Pendulum rewards are never positive
    np.testing.assert_array_equal(grown.observations[len(logged):], collected.observations)
    assert not set(np.unique(collected.episode_ids)) & set(np.unique(logged.episode_ids))
    assert collected.truncateds.sum() == 2 and not collected.terminals.any()


def test_the_script_prints_every_arm_with_its_rows_and_steps() -> None:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reuse_loop.py"), "--seeds", "0", "--rounds", "2",
         "--offline-steps", "30", "--round-steps", "10", "--offline-episodes", "1", "--collect-episodes", "1",
         "--eval-episodes", "1"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    lines = finished.stdout.splitlines()

    def row(label: str, round_index: int) -> list[str]:
        matching = [line for line in lines if line.startswith(label) and line[40:].split()[0] == str(round_index)]
        assert len(matching) == 1, (label, round_index, finished.stdout)
        return matching[0][40:].split()

    assert row("offline IQL", 0)[1:3] == ["200", "30"]
    assert row("loop: collect + fine-tune", 1)[1:3] == ["400", "40"]
    assert row("loop: collect + fine-tune", 2)[1:3] == ["600", "50"]
    assert row("loop, online fraction 0.5", 2)[1:3] == ["600", "50"]
    assert row("offline alone", 2)[1:3] == ["200", "50"]
    assert row("from scratch on the final data", 2)[1:3] == ["600", "50"]
