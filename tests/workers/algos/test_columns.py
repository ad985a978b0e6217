"""Mapped columns: Parquet files converted once, gathered by version row index, statistics a chunk at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from workers.algos.columns import MappedTransitions, parquet_to_columns, streamed_normalisation, write_columns
from workers.algos.data import Normalisation, TransitionArrays, arrays_to_arrow
from workers.rollouts.behaviour import CARTPOLE_SPEC, PENDULUM_SPEC

FILE_SIZES = (150, 50, 400, 200)
"""Rows per file of the test version: uneven, so file boundaries fall anywhere."""


def mapped_version(data: TransitionArrays, spec, folder, sizes=FILE_SIZES, source: str = "logged") -> MappedTransitions:
    """`data` written as one Parquet file per entry of `sizes` (in order) and mapped as one version."""
    assert sum(sizes) == len(data)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    folder.mkdir(parents=True, exist_ok=True)
    folders = []
    for number, (start, stop) in enumerate(zip(starts[:-1], starts[1:])):
        path = folder / f"part-{number}.parquet"
        pq.write_table(arrays_to_arrow(data.subset(np.arange(start, stop)), spec, source=source), path, row_group_size=64)
        folders.append(parquet_to_columns(path, folder / f"part-{number}.columns", spec))
    return MappedTransitions(folders)


def test_the_mapped_version_holds_every_row_in_order(small_pendulum, tmp_path) -> None:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    assert len(mapped) == len(small_pendulum) == sum(FILE_SIZES)
    chunks = list(mapped.chunks(128))
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "truncateds", "episode_ids", "steps"):
        np.testing.assert_array_equal(np.concatenate([getattr(chunk, name) for chunk in chunks]), getattr(small_pendulum, name))
    assert not mapped.column("collected").any()


def test_gather_returns_the_rows_asked_for_in_that_order(small_pendulum, tmp_path) -> None:
    mapped = mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path)
    index = np.random.default_rng(0).integers(0, len(mapped), 300)
    rows = mapped.gather(index)
    expected = small_pendulum.subset(index)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(expected, name))


def test_discrete_actions_and_policy_rows_survive_the_conversion(small_cartpole, tmp_path) -> None:
    table = arrays_to_arrow(small_cartpole, CARTPOLE_SPEC)
    collected = np.arange(table.num_rows) % 3 == 0
    table = table.set_column(table.schema.get_field_index("source"), "source", pa.array(np.where(collected, "policy:p1", "logged")))
    pq.write_table(table, tmp_path / "cartpole.parquet")
    mapped = MappedTransitions([parquet_to_columns(tmp_path / "cartpole.parquet", tmp_path / "cartpole.columns", CARTPOLE_SPEC)])
    rows = mapped.gather(np.arange(len(mapped)))
    assert rows.actions.dtype == np.int64
    np.testing.assert_array_equal(rows.actions, small_cartpole.actions)
    np.testing.assert_array_equal(mapped.column("collected"), collected)


def test_delta_style_plain_lists_convert_like_fixed_size_ones(small_pendulum, tmp_path) -> None:
    table = arrays_to_arrow(small_pendulum, PENDULUM_SPEC)
    for column in ("observation", "action", "next_observation"):
        position = table.schema.get_field_index(column)
        plain = pa.ListArray.from_arrays(pa.array(np.arange(0, table.num_rows + 1) * table.column(column).type.list_size, pa.int32()),
                                         pc.list_flatten(table.column(column).combine_chunks()))  # fmt: skip
        table = table.set_column(position, column, plain)
    pq.write_table(table, tmp_path / "plain.parquet")
    mapped = MappedTransitions([parquet_to_columns(tmp_path / "plain.parquet", tmp_path / "plain.columns", PENDULUM_SPEC)])
    np.testing.assert_array_equal(mapped.gather(np.arange(len(mapped))).next_observations, small_pendulum.next_observations)


def test_a_converted_folder_is_reused_and_a_failed_conversion_leaves_nothing(small_pendulum, tmp_path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(arrays_to_arrow(small_pendulum, PENDULUM_SPEC), path)
    folder = parquet_to_columns(path, tmp_path / "data.columns", PENDULUM_SPEC)
    written = (folder / "training.npy").stat().st_mtime_ns
    assert parquet_to_columns(path, folder, PENDULUM_SPEC) == folder
    assert (folder / "training.npy").stat().st_mtime_ns == written

    table = arrays_to_arrow(small_pendulum, PENDULUM_SPEC)
    with pytest.raises(ValueError, match="announced"):
        write_columns([table], len(small_pendulum) + 1, tmp_path / "short.columns", PENDULUM_SPEC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.columns", "data.parquet"]


@pytest.mark.parametrize("chunk_rows", [37, 256, 1 << 16])
def test_streamed_normalisation_equals_the_resident_one(small_pendulum, tmp_path, chunk_rows) -> None:
    # chunks of 37 rows cut every episode (200 rows each) into pieces, and files cut chunks short
    resident = Normalisation.from_arrays(small_pendulum)
    streamed = streamed_normalisation(mapped_version(small_pendulum, PENDULUM_SPEC, tmp_path), chunk_rows)
    np.testing.assert_allclose(streamed.observation_mean, resident.observation_mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.observation_std, resident.observation_std, rtol=1e-6)
    assert streamed.reward_scale == pytest.approx(resident.reward_scale, rel=1e-9)


def test_streamed_normalisation_without_finished_episodes_uses_the_reward_spread(small_pendulum, tmp_path) -> None:
    unfinished = TransitionArrays(**{**small_pendulum.__dict__, "truncateds": np.zeros(len(small_pendulum), bool),
                                     "terminals": np.zeros(len(small_pendulum), bool)})  # fmt: skip
    streamed = streamed_normalisation(mapped_version(unfinished, PENDULUM_SPEC, tmp_path), 64)
    assert streamed.reward_scale == pytest.approx(Normalisation.from_arrays(unfinished).reward_scale, rel=1e-9)
