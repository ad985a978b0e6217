"""Streamed training: uniform batches from mapped columns, the budget's choice, learning and resume."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from schemas.dataset import ContinuousActionSpec, DatasetSpec, ObservationSpec
from tests.workers.algos.test_columns import mapped_version
from workers.algos.columns import MappedTransitions, parquet_to_columns
from workers.algos.data import Normalisation, TransitionArrays, arrays_to_arrow
from workers.algos.replay import MixedReplay, ReplayBuffer, SamplingMismatch, normalise_arrays
from workers.algos.streaming import StreamingReplay, device_row_bytes, should_stream, streaming_replay
from workers.algos.training import fit
from workers.local import fit_file
from workers.rollouts.behaviour import PENDULUM_SPEC

CPU = torch.device("cpu")
IDENTITY = Normalisation(observation_mean=np.zeros(1, np.float32), observation_std=np.ones(1, np.float32), reward_scale=1.0)
ROW_ID_SPEC = DatasetSpec(observation=ObservationSpec(shape=[1]), action=ContinuousActionSpec(shape=[1], low=[-1.0], high=[1.0]))
ROW_ID_FILES = (1000, 3000, 500, 2500, 3000)
"""Rows per file of the row-id version: 10 000 rows in uneven files."""
SMALL = {"hidden_sizes": [16, 16], "batch_size": 32}
CHI_SQUARE_999_DF19 = 43.82
CHI_SQUARE_999_DF4 = 18.47
"""The 99.9% quantiles of the chi-square distribution with 19 and 4 degrees of freedom."""


@pytest.fixture(scope="module")
def row_ids(tmp_path_factory) -> MappedTransitions:
    """A version whose observation is the row's index in it (exact in float32), in five files."""
    rows = sum(ROW_ID_FILES)
    ids = np.arange(rows, dtype=np.float32)[:, None]
    data = TransitionArrays(
        observations=ids, actions=np.zeros((rows, 1), np.float32), rewards=np.zeros(rows, np.float32),
        next_observations=ids, terminals=np.zeros(rows, bool), truncateds=(np.arange(rows) % 100) == 99,
        episode_ids=np.arange(rows) // 100, steps=(np.arange(rows) % 100).astype(np.int32),
    )  # fmt: skip
    return mapped_version(data, ROW_ID_SPEC, tmp_path_factory.mktemp("row-ids"), ROW_ID_FILES)


def drawn_rows(replay, batches: int, batch_size: int) -> np.ndarray:
    return np.concatenate([replay.sample(batch_size).observations[:, 0].numpy() for _ in range(batches)]).astype(np.int64)


def chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def test_batches_are_uniform_over_every_row_of_the_version(row_ids) -> None:
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=0) as replay:
        drawn = drawn_rows(replay, 200, 256)
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=0) as replay:
        first = drawn_rows(replay, 1, 256)
    counts = np.bincount(drawn // 500, minlength=20)  # 20 blocks of 500 rows, across file boundaries
    assert chi_square(counts, np.full(20, len(drawn) / 20)) < CHI_SQUARE_999_DF19
    per_file = np.bincount(np.searchsorted(np.cumsum(ROW_ID_FILES), drawn, side="right"), minlength=5)
    assert chi_square(per_file, np.asarray(ROW_ID_FILES) / len(row_ids) * len(drawn)) < CHI_SQUARE_999_DF4
    # not sequential chunks: the very first batch already reaches into the last file and the first
    last_file = len(row_ids) - ROW_ID_FILES[-1]
    assert (first >= last_file).sum() > 40 and (first < ROW_ID_FILES[0]).sum() > 10
    assert len(np.unique(first)) > 240


def test_a_row_mask_limits_sampling_to_its_rows_uniformly(row_ids) -> None:
    allowed = (np.arange(len(row_ids)) // 100) % 4 != 0  # a quarter of the episodes held out
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=3, rows=allowed) as replay:
        assert len(replay) == allowed.sum()
        drawn = drawn_rows(replay, 100, 256)
    assert allowed[drawn].all()
    counts = np.bincount(drawn // 500, minlength=20)
    expected = np.bincount(np.flatnonzero(allowed) // 500, minlength=20) / allowed.sum() * len(drawn)
    assert chi_square(counts, expected) < CHI_SQUARE_999_DF19


def test_a_row_mask_of_the_wrong_length_or_with_no_rows_is_refused(row_ids) -> None:
    with pytest.raises(ValueError, match="row mask has 3 entries"):
        StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, 0, rows=np.ones(3, bool))
    with pytest.raises(ValueError, match="no transitions"):
        StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, 0, rows=np.zeros(len(row_ids), bool))


def test_a_streamed_batch_is_the_resident_normalisation_of_its_rows(small_pendulum, tmp_path) -> None:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    normalisation = Normalisation.from_arrays(small_pendulum)
    with StreamingReplay(mapped, normalisation, PENDULUM_SPEC.action, CPU, seed=5) as replay:
        replay.sample(64)
        batch = replay.sample(64)
        expected = normalise_arrays(small_pendulum.subset(replay.indices(1, 64)), normalisation, PENDULUM_SPEC.action, CPU)
    for got, wanted in zip(batch, expected):
        torch.testing.assert_close(got, wanted, rtol=0, atol=0)


def test_the_sampling_state_resumes_the_same_batches_whatever_was_prefetched(row_ids) -> None:
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=1) as uninterrupted:
        whole = drawn_rows(uninterrupted, 10, 32)
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=1, prefetch=4) as first:
        head = drawn_rows(first, 4, 32)
        state = first.state_dict()
    with StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=99) as resumed:
        resumed.load_state_dict(state)
        tail = drawn_rows(resumed, 6, 32)
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)


def test_closing_stops_the_prefetch_thread_and_a_failed_gather_reaches_the_training_loop(row_ids, tmp_path) -> None:
    replay = StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=0, prefetch=2)
    replay.sample(8)
    assert any(thread.name == "replaybank-prefetch" for thread in threading.enumerate())
    replay.close()
    assert not any(thread.name == "replaybank-prefetch" for thread in threading.enumerate())
    forgotten = StreamingReplay(row_ids, IDENTITY, ROW_ID_SPEC.action, CPU, seed=0, prefetch=2)
    forgotten.sample(8)
    prefetching = [thread for thread in threading.enumerate() if thread.name == "replaybank-prefetch"]
    del forgotten  # never closed: collecting it stops the thread
    gc.collect()
    for thread in prefetching:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in prefetching)

    class Broken(MappedTransitions):
        def gather(self, index):
            raise OSError("the disk went away")

    path = tmp_path / "one.parquet"
    pq.write_table(arrays_to_arrow(row_ids.chunks().__next__(), ROW_ID_SPEC), path)
    broken = Broken([parquet_to_columns(path, tmp_path / "one.columns", ROW_ID_SPEC)])
    with StreamingReplay(broken, IDENTITY, ROW_ID_SPEC.action, CPU, seed=0) as failing, pytest.raises(OSError, match="went away"):
        failing.sample(8)


def test_a_checkpoint_of_the_other_kind_resumes_the_networks_and_samples_afresh(small_pendulum, tmp_path) -> None:
    # a job re-claimed by a worker whose memory budget decides otherwise
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    normalisation = Normalisation.from_arrays(small_pendulum)
    resident = ReplayBuffer.from_arrays(small_pendulum, normalisation, PENDULUM_SPEC.action, CPU, 0)
    with StreamingReplay(mapped, normalisation, PENDULUM_SPEC.action, CPU, 0) as streamed:
        with pytest.raises(SamplingMismatch, match="resident replay"):
            streamed.load_state_dict(resident.state_dict())
        with pytest.raises(SamplingMismatch, match="streamed its batches"):
            resident.load_state_dict(streamed.state_dict())
    torch.set_num_threads(1)
    saved: list[dict] = []
    fit("bc", small_pendulum, PENDULUM_SPEC, 10, 0, params=SMALL, on_checkpoint=saved.append, checkpoint_every=10)
    with pytest.warns(RuntimeWarning, match="sampling starts afresh"):
        resumed, result = fit("bc", mapped, PENDULUM_SPEC, 20, 0, params=SMALL, normalisation=normalisation, resume_from=saved[0])
    assert result.step == 20


def test_a_mixed_streamed_replay_draws_its_share_from_the_online_rows(small_pendulum, tmp_path) -> None:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path / "logged", (400, 400))
    online = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path / "online", (800,), source="policy:abc")
    both = MappedTransitions([*sorted((tmp_path / "logged").glob("*.columns")), *(tmp_path / "online").glob("*.columns")])
    assert len(mapped) == len(online) == 800
    replay = streaming_replay(both, Normalisation.from_arrays(small_pendulum), PENDULUM_SPEC.action, CPU, 0, online_fraction=0.25)
    assert isinstance(replay, MixedReplay) and len(replay.first) == len(replay.second) == 800
    first = replay.first.indices(0, 64)
    assert (first >= 800).all() and (replay.second.indices(0, 64) < 800).all()
    assert replay.sample(64).rewards.shape == (64,)
    replay.first.close()
    replay.second.close()


def test_the_version_streams_exactly_when_its_estimate_exceeds_the_budget() -> None:
    row = device_row_bytes(PENDULUM_SPEC)
    assert row == 8 * 3 + 4 * 1 + 8  # float32 observations twice, one action, reward, terminal
    assert not should_stream(1000, PENDULUM_SPEC, 1000 * row)
    assert should_stream(1001, PENDULUM_SPEC, 1000 * row)
    assert not should_stream(10**12, PENDULUM_SPEC, None)


def test_fit_file_streams_exactly_when_the_rows_exceed_the_budget(small_pendulum, tmp_path) -> None:
    path = tmp_path / "pendulum.parquet"
    pq.write_table(arrays_to_arrow(small_pendulum, PENDULUM_SPEC), path)
    estimate = len(small_pendulum) * device_row_bytes(PENDULUM_SPEC)
    for budget, streams in ((estimate, False), (estimate - 1, True), (None, False)):
        out = tmp_path / f"out-{budget}"
        summary = fit_file("bc", path, steps=20, seed=0, device="cpu", out_dir=out, params=SMALL, threads=1, memory_budget=budget)
        assert summary["streamed"] is streams and summary["steps"] == 20
        assert sorted(p.name for p in out.iterdir()) == ["card.json", "metrics.jsonl", "policy.onnx", "policy.pt2"]


def test_an_algorithm_that_needs_the_whole_version_is_refused_before_it_streams(small_pendulum, tmp_path) -> None:
    path = tmp_path / "pendulum.parquet"
    pq.write_table(arrays_to_arrow(small_pendulum, PENDULUM_SPEC), path)
    with pytest.raises(ValueError, match="combo cannot stream .* dynamics model"):
        fit_file("combo", path, steps=20, seed=0, device="cpu", out_dir=tmp_path / "out", memory_budget=1000)
    assert not (tmp_path / "out").exists()


def test_streamed_training_makes_the_progress_resident_training_makes(small_pendulum, tmp_path) -> None:
    # IQL's critic loss over 400 steps, measured: resident 8.1 -> 3.1, streamed 9.3 -> 3.0
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    torch.set_num_threads(1)
    curves: dict[str, list[float]] = {"resident": [], "streamed": []}
    for name, data in (("resident", small_pendulum), ("streamed", mapped)):
        fit("iql", data, PENDULUM_SPEC, 400, 0, params=SMALL, progress_every=50,
            on_progress=lambda step, metrics, curve=curves[name]: curve.append(metrics["critic_loss"]))  # fmt: skip
    resident, streamed = curves["resident"], curves["streamed"]
    assert len(streamed) == 8
    assert streamed[-1] < 0.5 * streamed[0]
    assert streamed[-1] < 1.5 * resident[-1]


def test_a_streamed_run_resumed_from_its_checkpoint_repeats_the_uninterrupted_one(small_pendulum, tmp_path) -> None:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    torch.set_num_threads(1)
    whole, _ = fit("iql", mapped, PENDULUM_SPEC, 30, 0, params=SMALL)
    saved: list[dict] = []
    asked = iter(range(10**6))  # train asks before every step: stop before the 13th
    _, result = fit("iql", mapped, PENDULUM_SPEC, 30, 0, params=SMALL, should_stop=lambda: next(asked) == 12, on_checkpoint=saved.append)
    assert result.stopped and result.step == 12
    assert saved[0]["replay"] == {"streamed": {"seed": 0, "drawn": 12, "rows": 800}}
    resumed, result = fit("iql", mapped, PENDULUM_SPEC, 30, 0, params=SMALL, resume_from=saved[0])
    assert result.step == 30 and not result.stopped
    for network in ("critic", "value", "actor"):
        for name, value in whole.state_dict()[network].items():
            torch.testing.assert_close(resumed.state_dict()[network][name], value, rtol=0, atol=0)
