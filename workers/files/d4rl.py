"""The D4RL layout: one array per field, one row per step, episodes delimited by `terminals` and `timeouts`.

`from_arrays` reads that layout whatever holds the arrays (HDF5 here, NPZ, or Parquet columns); HDF5
files are read and written here. A file written here also holds `episode_ids`, `steps`, `sources` (each
row's provenance, as strings) and the dataset spec, so reading it back keeps episodes and sources exact.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.files.raw import FormatError, RawTransitions, list_values

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
"""The arrays a D4RL-layout file must hold; `next_observations` is optional."""


def read_hdf5(path: str) -> RawTransitions:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            arrays = {name: file[name][()] for name in file.keys() if isinstance(file[name], h5py.Dataset)}
            declared = file.attrs.get("replaybank.spec")
    except OSError as error:
        raise FormatError(f"{path} is not a readable HDF5 file: {error}", "file") from error
    raw = from_arrays(arrays, path)
    if declared is not None:
        raw = replace(raw, spec=DatasetSpec.model_validate_json(declared))
    return raw


def write_hdf5(table: pa.Table, path: str | Path, spec: DatasetSpec) -> None:
    """Write rows in the D4RL layout, plus `episode_ids`, `steps` and `sources` so reading back keeps them exact."""
    import h5py

    n = table.num_rows
    obs_shape = tuple(spec.observation.shape)

    def observations(column: str) -> np.ndarray:
        return list_values(table.column(column), spec.observation.size).reshape((n, *obs_shape))

    if isinstance(spec.action, ContinuousActionSpec):
        actions = list_values(table.column("action"), spec.action.size).reshape((n, *spec.action.shape))
    else:
        actions = table.column("action").to_numpy().astype(np.int64)
    with h5py.File(str(path), "w") as file:
        file["observations"] = observations("observation")
        file["actions"] = actions
        file["rewards"] = table.column("reward").to_numpy().astype(np.float32)
        file["next_observations"] = observations("next_observation")
        file["terminals"] = table.column("terminal").to_numpy(zero_copy_only=False).astype(bool)
        file["timeouts"] = table.column("truncated").to_numpy(zero_copy_only=False).astype(bool)
        file["episode_ids"] = table.column("episode_id").to_numpy().astype(np.int64)
        file["steps"] = table.column("step").to_numpy().astype(np.int32)
        if "source" in table.column_names:
            sources = table.column("source").to_pylist()
            file.create_dataset("sources", data=np.array(sources, dtype=object), dtype=h5py.string_dtype())
        file.attrs["replaybank.spec"] = spec.model_dump_json()


def from_arrays(arrays: dict[str, np.ndarray], path: str) -> RawTransitions:
    """D4RL layout: one row per step, episodes delimited by `terminals` and `timeouts`.

    With `next_observations`, every row is kept. Without them, a row's next observation is the following
    row's observation within its episode; a timeout row, and a file's unfinished last row, have no
    successor and are dropped (as D4RL's `qlearning_dataset` does), and the row before becomes the
    episode's truncated end. A terminal row is kept: nothing bootstraps from it, so its next observation
    is a copy of its own.
    """
    missing = [key for key in D4RL_KEYS if key not in arrays]
    if missing:
        raise FormatError(
            f"{path} lacks the array(s) {', '.join(missing)} of the D4RL layout "
            f"({', '.join(D4RL_KEYS)}, optionally next_observations)",
            missing[0],
        )
    observations = np.asarray(arrays["observations"])
    n = len(observations)
    for key in (*D4RL_KEYS, "next_observations", "episode_ids", "steps", "sources"):
        if key in arrays and len(arrays[key]) != n:
            raise FormatError(f"{key} has {len(arrays[key])} rows but observations has {n}", key)
    actions = np.asarray(arrays["actions"])
    if not np.issubdtype(actions.dtype, np.integer):
        actions = actions.astype(np.float32)
    elif actions.ndim == 2 and actions.shape[1] == 1:
        actions = actions[:, 0]
    rewards = np.asarray(arrays["rewards"], dtype=np.float32).reshape(n)
    terminals = np.asarray(arrays["terminals"]).astype(bool).reshape(n)
    timeouts = np.asarray(arrays["timeouts"]).astype(bool).reshape(n)
    observations = observations.astype(np.float32)
    sources = _sources(arrays["sources"]) if "sources" in arrays else None
    notes: list[str] = []
    derived = False
    if "episode_ids" in arrays and "steps" in arrays:
        episode_ids = np.asarray(arrays["episode_ids"], dtype=np.int64)
        steps = np.asarray(arrays["steps"], dtype=np.int32)
    else:
        episode_ids, steps = _episodes_from_ends(terminals | timeouts)
        derived = True

    if "next_observations" in arrays:
        next_observations = np.asarray(arrays["next_observations"], dtype=np.float32)
        return RawTransitions(
            observations,
            actions,
            rewards,
            next_observations,
            terminals,
            timeouts,
            episode_ids,
            steps,
            sources=None if sources is None else pa.array(sources, pa.string()),
            episode_ids_derived=derived,
            notes=notes,
        )

    ends = terminals | timeouts
    has_successor = np.zeros(n, dtype=bool)
    has_successor[:-1] = ~ends[:-1] & (episode_ids[1:] == episode_ids[:-1])
    keep = has_successor | terminals
    next_observations = observations.copy()
    next_observations[:-1][has_successor[:-1]] = observations[1:][has_successor[:-1]]
    # The kept row just before a dropped one ends its episode by truncation (bootstrap from its successor).
    truncateds = np.zeros(n, dtype=bool)
    truncateds[:-1] = has_successor[:-1] & ~keep[1:]
    dropped = int(n - keep.sum())
    if dropped:
        notes.append(f"{dropped} row(s) without a next observation dropped (timeouts, unfinished last row)")
    episode_ids = episode_ids[keep]
    if derived and len(episode_ids):
        # Episodes emptied by the drop leave gaps; renumber densely from 0.
        _, episode_ids = np.unique(episode_ids, return_inverse=True)
    return RawTransitions(
        observations=observations[keep],
        actions=actions[keep],
        rewards=rewards[keep],
        next_observations=next_observations[keep],
        terminals=terminals[keep],
        truncateds=truncateds[keep],
        episode_ids=episode_ids.astype(np.int64),
        steps=steps[keep],
        sources=None if sources is None else pa.array(sources[keep], pa.string()),
        episode_ids_derived=derived,
        notes=notes,
    )


def _sources(values: np.ndarray) -> np.ndarray:
    """A `sources` array as Python strings (HDF5 hands variable-length strings back as bytes)."""
    return np.array([value.decode() if isinstance(value, bytes) else str(value) for value in np.asarray(values).reshape(-1)], dtype=object)


def _episodes_from_ends(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Episode ids and step numbers for rows whose episodes end where `ends` is true."""
    n = len(ends)
    episode_ids = np.zeros(n, dtype=np.int64)
    if n > 1:
        episode_ids[1:] = np.cumsum(ends[:-1])
    starts = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1]]) if n else np.array([], dtype=np.int64)
    steps = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return episode_ids, steps.astype(np.int32)
