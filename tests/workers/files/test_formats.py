"""Reading and writing transition files: every format round-trips to the same rows."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from schemas.transition import transition_schema
from workers import files

OBS_DIM, ACTION_DIM = 4, 2


def d4rl_arrays(rng: np.random.Generator, episode_lengths: list[int], last_terminal: list[bool]) -> dict[str, np.ndarray]:
    """D4RL-layout arrays: episodes end with a terminal or a timeout row."""
    n = sum(episode_lengths)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    end = 0
    for length, terminal in zip(episode_lengths, last_terminal):
        end += length
        (terminals if terminal else timeouts)[end - 1] = True
    return {
        "observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def spec() -> DatasetSpec:
    return DatasetSpec(
        observation=ObservationSpec(shape=[OBS_DIM]),
        action=ContinuousActionSpec(shape=[ACTION_DIM], low=[-1.0] * ACTION_DIM, high=[1.0] * ACTION_DIM),
    )


def pulled_table(rng: np.random.Generator, n_episodes: int = 3, length: int = 5) -> pa.Table:
    """Rows as a pull returns them: the dataset's full Arrow schema."""
    n = n_episodes * length
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    columns = {
        "episode_id": np.repeat(np.arange(n_episodes) + 10, length),
        "step": np.tile(np.arange(length), n_episodes),
        "observation": obs.tolist(),
        "action": rng.uniform(-1, 1, size=(n, ACTION_DIM)).astype(np.float32).tolist(),
        "reward": rng.normal(size=n).astype(np.float32),
        "next_observation": rng.normal(size=(n, OBS_DIM)).astype(np.float32).tolist(),
        "terminal": np.tile(np.arange(length) == length - 1, n_episodes) & (np.repeat(np.arange(n_episodes), length) == 0),
        "truncated": np.tile(np.arange(length) == length - 1, n_episodes) & (np.repeat(np.arange(n_episodes), length) > 0),
        "source": ["logged"] * n,
        "batch_id": ["b1"] * n,
    }
    return pa.table(columns, schema=transition_schema(spec()))


def client_columns(table: pa.Table) -> pa.Table:
    return table.drop_columns([name for name in ("batch_id",) if name in table.column_names])


def test_d4rl_with_next_observations_keeps_every_row(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = d4rl_arrays(rng, [3, 4], [True, False])
    arrays["next_observations"] = rng.normal(size=(7, OBS_DIM)).astype(np.float32)
    path = tmp_path / "d4rl.hdf5"
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value

    raw = files.read_file(path)
    inferred = files.infer_spec(raw)
    table = files.to_upload_table(raw, inferred, first_episode_id=100)

    # Actions all within [-1, 1]: the normalised range, not this file's extremes.
    assert inferred.action == ContinuousActionSpec(shape=[ACTION_DIM], low=[-1.0] * ACTION_DIM, high=[1.0] * ACTION_DIM)

    assert table.num_rows == 7
    assert table.column("episode_id").to_pylist() == [100] * 3 + [101] * 4
    assert table.column("step").to_pylist() == [0, 1, 2, 0, 1, 2, 3]
    np.testing.assert_array_equal(np.array(table.column("next_observation").to_pylist()), arrays["next_observations"])
    assert table.column("terminal").to_pylist() == [False, False, True] + [False] * 4
    assert table.column("truncated").to_pylist() == [False] * 6 + [True]
    assert set(table.column("source").to_pylist()) == {"logged"}


def test_d4rl_without_next_observations_derives_them_and_drops_rows_without_successor(tmp_path) -> None:
    rng = np.random.default_rng(1)
    # Episode 0 ends in a terminal (kept), episode 1 in a timeout (dropped), then an unfinished episode.
    arrays = d4rl_arrays(rng, [3, 4, 2], [True, False, False])
    arrays["timeouts"][-1] = False  # the file stops mid-episode
    path = tmp_path / "d4rl.hdf5"
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value

    raw = files.read_file(path)
    table = files.to_upload_table(raw, files.infer_spec(raw))
    obs = arrays["observations"]

    kept = [0, 1, 2, 3, 4, 5, 7]  # row 6 (timeout) and row 8 (last, unfinished) have no successor
    assert table.num_rows == len(kept)
    np.testing.assert_array_equal(np.array(table.column("observation").to_pylist()), obs[kept])
    expected_next = np.stack([obs[1], obs[2], obs[2], obs[4], obs[5], obs[6], obs[8]])
    np.testing.assert_array_equal(np.array(table.column("next_observation").to_pylist()), expected_next)
    assert table.column("episode_id").to_pylist() == [0, 0, 0, 1, 1, 1, 2]
    assert table.column("step").to_pylist() == [0, 1, 2, 0, 1, 2, 0]
    assert table.column("terminal").to_pylist() == [False, False, True, False, False, False, False]
    assert table.column("truncated").to_pylist() == [False, False, False, False, False, True, True]
    assert "2 row(s)" in files.describe(raw)


def test_npz_reads_like_d4rl(tmp_path) -> None:
    rng = np.random.default_rng(2)
    arrays = d4rl_arrays(rng, [5, 5], [True, True])
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)

    raw = files.read_file(path)
    table = files.to_upload_table(raw, files.infer_spec(raw))

    assert table.num_rows == 10
    np.testing.assert_array_equal(np.array(table.column("action").to_pylist()), arrays["actions"])
    np.testing.assert_array_equal(table.column("reward").to_numpy(), arrays["rewards"])


def test_missing_d4rl_array_names_the_field(tmp_path) -> None:
    arrays = d4rl_arrays(np.random.default_rng(3), [4], [True])
    del arrays["timeouts"]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)

    with pytest.raises(files.FormatError, match="timeouts") as raised:
        files.read_file(path)
    assert raised.value.field == "timeouts"


def test_observation_width_must_match_the_spec(tmp_path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **d4rl_arrays(np.random.default_rng(4), [4], [True]))
    wider = DatasetSpec(observation=ObservationSpec(shape=[OBS_DIM + 1]), action=spec().action)

    with pytest.raises(files.FormatError, match="observations have 4 values per row") as raised:
        files.to_upload_table(files.read_file(path), wider)
    assert raised.value.field == "observations"


@pytest.mark.parametrize("suffix", [".parquet", ".hdf5"])
def test_pulled_rows_written_and_read_back_are_the_same(tmp_path, suffix: str) -> None:
    table = pulled_table(np.random.default_rng(5))
    path = tmp_path / f"out{suffix}"

    files.write_file(table, path, spec())
    raw = files.read_file(path)

    assert files.infer_spec(raw) == spec()
    again = files.to_upload_table(raw, spec(), first_episode_id=1000)
    assert again.equals(client_columns(table))


def test_parquet_with_plain_lists_is_cast_to_fixed_size_lists(tmp_path) -> None:
    table = client_columns(pulled_table(np.random.default_rng(6)))
    plain = table.cast(
        pa.schema(
            [
                field.with_type(pa.list_(pa.float32())) if pa.types.is_fixed_size_list(field.type) else field
                for field in table.schema
            ]
        )
    )
    path = tmp_path / "plain.parquet"
    pq.write_table(plain, path)

    raw = files.read_file(path)
    inferred = files.infer_spec(raw, action_low=[-1.0, -1.0], action_high=[1.0, 1.0])

    assert inferred == spec()
    assert files.to_upload_table(raw, inferred).equals(table)


@pytest.mark.parametrize("use_file_format", [True, False])
def test_arrow_ipc_file_and_stream(tmp_path, use_file_format: bool) -> None:
    table = client_columns(pulled_table(np.random.default_rng(7)))
    path = tmp_path / "rows.arrow"
    writer_class = pa.ipc.new_file if use_file_format else pa.ipc.new_stream
    with pa.OSFile(str(path), "wb") as sink, writer_class(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=4)

    raw = files.read_file(path)

    assert files.to_upload_table(raw, spec()).equals(table)


def test_inferred_spec_for_discrete_and_data_bounds(tmp_path) -> None:
    rng = np.random.default_rng(8)
    arrays = d4rl_arrays(rng, [6], [True])
    arrays["observations"] = rng.normal(size=(6, 2, 3)).astype(np.float32)
    arrays["actions"] = np.array([0, 2, 1, 2, 0, 1])
    path = tmp_path / "discrete.npz"
    np.savez(path, **arrays)

    raw = files.read_file(path)
    inferred = files.infer_spec(raw, env_id="CartPole-v1")

    assert inferred.observation.shape == [2, 3]
    assert inferred.action == DiscreteActionSpec(n=3)
    assert inferred.env_id == "CartPole-v1"
    table = files.to_upload_table(raw, inferred)
    assert table.column("action").to_pylist() == [0, 2, 1, 2, 0, 1]
    assert table.schema.field("observation").type.list_size == 6

    arrays["actions"] = np.array([[0.5], [-2.0], [1.0], [3.0], [0.0], [0.0]], dtype=np.float32)
    np.savez(path, **arrays)
    continuous = files.infer_spec(files.read_file(path)).action
    assert continuous == ContinuousActionSpec(shape=[1], low=[-2.0], high=[3.0])


def test_minari_dataset_made_with_minaris_own_writer(tmp_path, monkeypatch) -> None:
    minari = pytest.importorskip("minari")
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(9)
    lengths = [4, 6, 3]
    buffers = []
    for index, length in enumerate(lengths):
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=rng.normal(size=(length + 1, OBS_DIM)).astype(np.float32),
                actions=rng.uniform(-0.5, 0.5, size=(length, ACTION_DIM)).astype(np.float32),
                rewards=list(rng.normal(size=length)),
                terminations=[False] * (length - 1) + [index == 0],
                truncations=[False] * (length - 1) + [index != 0],
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about missing author and code links
        minari.create_dataset_from_buffers(
            "test/tiny-v0",
            buffers,
            observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32),
        )

    raw = files.read_file("test/tiny-v0")
    inferred = files.infer_spec(raw)
    table = files.to_upload_table(raw, inferred, first_episode_id=7)

    assert inferred == spec()  # the bounds come from the action space, not the data
    assert table.num_rows == sum(lengths)
    assert table.column("episode_id").to_pylist() == [7] * 4 + [8] * 6 + [9] * 3
    assert table.column("step").to_pylist()[:5] == [0, 1, 2, 3, 0]
    first = buffers[0]
    np.testing.assert_array_equal(np.array(table.column("observation").to_pylist()[:4]), first.observations[:4])
    np.testing.assert_array_equal(np.array(table.column("next_observation").to_pylist()[:4]), first.observations[1:])
    assert table.column("terminal").to_pylist()[3] is True
    assert table.column("truncated").to_pylist()[9] is True
    assert sum(table.column("truncated").to_pylist()) == 2
    # The dataset's folder works as well as its id.
    by_folder = files.read_file(str(tmp_path / "minari" / "test" / "tiny-v0"), format="minari")
    assert len(by_folder) == sum(lengths)


@pytest.mark.parametrize("suffix", [".parquet", ".hdf5"])
def test_each_rows_source_survives_an_export(tmp_path, suffix: str) -> None:
    table = pulled_table(np.random.default_rng(6))
    sources = pa.array(["logged"] * 5 + ["policy:p-1"] * 5 + ["sim"] * 5, pa.string())
    table = table.set_column(table.schema.get_field_index("source"), "source", sources)
    path = tmp_path / f"out{suffix}"

    files.write_file(table, path, spec())

    assert files.to_upload_table(files.read_file(path), spec()).column("source").to_pylist() == sources.to_pylist()


def test_d4rl_sources_follow_the_rows_that_are_kept(tmp_path) -> None:
    arrays = d4rl_arrays(np.random.default_rng(7), [3, 4], [False, True])
    path = tmp_path / "sourced.hdf5"
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value
        file.create_dataset("sources", data=np.array([f"s{i}" for i in range(7)], dtype=object), dtype=h5py.string_dtype())

    raw = files.read_file(path)

    # the first episode's timeout row has no successor and is dropped, with its source
    assert raw.sources.to_pylist() == ["s0", "s1", "s3", "s4", "s5", "s6"]
