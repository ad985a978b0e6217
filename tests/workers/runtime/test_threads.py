"""Training processes share the machine's cores, and each trains at the thread count that runs fastest."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from workers.algos.data import arrays_to_arrow
from workers.files.parquet import write_parquet
from workers.local import fit_file
from workers.rollouts.behaviour import PENDULUM_SPEC, pendulum_dataset
from workers.runtime.threads import (
    MEASURE_SECONDS,
    SHARE_FOLDER,
    WARMUP_STEPS,
    CoreShare,
    ThreadTuner,
    candidate_counts,
    usable_cores,
)

HOLD_A_SHARE = """
import sys, time
from pathlib import Path
from workers.runtime.threads import CoreShare
with CoreShare(Path(sys.argv[1]), cores=4):
    print("holding", flush=True)
    sys.stdin.read()
"""


def _member(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SHARE, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def test_each_training_process_gets_its_share_and_a_dead_one_gives_its_share_back(tmp_path: Path) -> None:
    with CoreShare(tmp_path, cores=4) as share:
        assert (share.members(), share.threads()) == (1, 4)
        other = _member(tmp_path)
        third = _member(tmp_path)
        assert (share.members(), share.threads()) == (3, 1)
        third.kill()
        third.wait()
        assert (share.members(), share.threads()) == (2, 2)
        assert len(list(tmp_path.glob("*.lock"))) == 2, "the dead member's file is cleared away"
        other.communicate("")
        assert (share.members(), share.threads()) == (1, 4)
    assert list(tmp_path.glob("*.lock")) == []


def test_candidate_counts_are_one_the_powers_of_two_and_the_share() -> None:
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [1, 2]
    assert candidate_counts(6) == [1, 2, 4, 6]


class Machine:
    """A fake clock that advances by one step's duration, which depends on the thread count in use."""

    def __init__(self, seconds_per_step: dict[int, float]) -> None:
        self.seconds_per_step = seconds_per_step
        self.now = 0.0
        self.threads = 2  # torch's default before the tuner sets anything
        self.changes: list[int] = []

    def set_threads(self, threads: int) -> None:
        self.threads = threads
        self.changes.append(threads)

    def run(self, tuner: ThreadTuner, steps: int) -> None:
        for _ in range(steps):
            tuner.between_steps()
            self.now += self.seconds_per_step[self.threads]


def _steps_to_measure(machine: Machine, counts: list[int]) -> int:
    return sum(WARMUP_STEPS + int(MEASURE_SECONDS / machine.seconds_per_step[count]) + 2 for count in counts)


def test_a_small_network_settles_on_one_thread() -> None:
    machine = Machine({1: 0.01, 2: 0.02})
    tuner = ThreadTuner(lambda: 2, machine.set_threads, clock=lambda: machine.now)
    machine.run(tuner, _steps_to_measure(machine, [1, 2]) + 50)
    assert tuner.threads == 1 and machine.threads == 1
    assert machine.changes == [1, 2, 1]
    assert tuner.rates[1] > tuner.rates[2]


def test_a_large_network_settles_on_its_whole_share() -> None:
    machine = Machine({1: 0.02, 2: 0.012})
    tuner = ThreadTuner(lambda: 2, machine.set_threads, clock=lambda: machine.now)
    machine.run(tuner, _steps_to_measure(machine, [1, 2]) + 50)
    assert tuner.threads == 2 and machine.changes == [1, 2]


def test_a_smaller_share_is_taken_at_once_and_a_busier_machine_measures_again() -> None:
    machine = Machine({1: 0.02, 2: 0.012})
    allowed = [2]
    tuner = ThreadTuner(lambda: allowed[0], machine.set_threads, clock=lambda: machine.now)
    machine.run(tuner, _steps_to_measure(machine, [1, 2]) + 50)
    assert tuner.threads == 2

    # another process starts training on the same cores: the share halves within a few seconds
    allowed[0] = 1
    machine.run(tuner, 600)
    assert tuner.threads == 1 and machine.threads == 1

    # a neighbour not counted in the share loads the cores: two threads now crawl, so measure again
    allowed[0] = 2
    machine.run(tuner, 400)
    assert tuner.threads == 2
    machine.seconds_per_step[2] = 0.5
    machine.run(tuner, 40)
    assert tuner.threads == 1, f"expected the tuner to fall back to one thread, rates {tuner.rates}"


def test_a_fixed_count_is_set_once_and_kept() -> None:
    machine = Machine({1: 0.01, 3: 0.5})
    tuner = ThreadTuner(lambda: 8, machine.set_threads, fixed=3, clock=lambda: machine.now)
    machine.run(tuner, 200)
    assert machine.changes == [3] and tuner.threads == 3


def test_fit_trains_within_its_share_of_the_cores_unless_the_count_is_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "pendulum.parquet"
    write_parquet(arrays_to_arrow(pendulum_dataset("medium", episodes=2, seed=0), PENDULUM_SPEC), data, PENDULUM_SPEC)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a machine of our own: no other test's trainers
    folder = tmp_path / f"{SHARE_FOLDER}-{os.getuid()}"
    previous = torch.get_num_threads()
    small = {"batch_size": 32, "hidden_sizes": [16, 16]}
    try:
        with CoreShare(folder), CoreShare(folder):  # two other training processes on this machine
            torch.set_num_threads(usable_cores())  # torch's default
            shared = fit_file("bc", data, steps=60, seed=0, device="cpu", out_dir=tmp_path / "shared", params=small)
            fixed = fit_file("bc", data, steps=20, seed=0, device="cpu", out_dir=tmp_path / "fixed", params=small, threads=3)
    finally:
        torch.set_num_threads(previous)
    assert 1 <= shared["threads"] <= max(1, usable_cores() // 3)
    assert fixed["threads"] == 3
    assert list(folder.glob("*.lock")) == [], "fit gives its share back"
