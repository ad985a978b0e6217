"""Parquet and Arrow IPC files: replaybank's transition columns, or the D4RL arrays as columns.

A Parquet file written here carries its dataset spec in the file's metadata, so reading it back needs
no inference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.dataset import ContinuousActionSpec, DatasetSpec
from workers.files import d4rl
from workers.files.raw import FormatError, RawTransitions, column_numpy

SPEC_METADATA_KEY = b"replaybank.spec"
"""Parquet files written here carry their dataset spec, so reading one back needs no inference."""


def write_parquet(table: pa.Table, path: str | Path, spec: DatasetSpec | None = None) -> None:
    """Write rows as Parquet, with the spec in the file's metadata when given."""
    if spec is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[SPEC_METADATA_KEY] = spec.model_dump_json().encode()
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, str(path))


def read_parquet(path: str) -> RawTransitions:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise FormatError(f"{path} is not a readable Parquet file: {error}", "file") from error
    return _from_table(table, path)


def read_arrow(path: str) -> RawTransitions:
    try:
        with pa.memory_map(path) as source:
            try:
                table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise FormatError(f"{path} is neither an Arrow IPC file nor stream: {error}", "file") from error
    return _from_table(table, path)


def _from_table(table: pa.Table, path: str) -> RawTransitions:
    names = set(table.column_names)
    declared = None
    if table.schema.metadata and SPEC_METADATA_KEY in table.schema.metadata:
        declared = DatasetSpec.model_validate_json(table.schema.metadata[SPEC_METADATA_KEY])
    if {"observation", "action", "reward"} <= names:
        return _from_transition_columns(table, path, declared)
    if set(d4rl.D4RL_KEYS) <= names:
        arrays = {name: column_numpy(table.column(name)) for name in table.column_names}
        return d4rl.from_arrays(arrays, path)
    raise FormatError(
        f"{path} has columns {sorted(names)}; expected replaybank's transition columns "
        "(episode_id, step, observation, action, reward, next_observation, terminal, truncated) "
        "or the D4RL ones (observations, actions, rewards, terminals, timeouts)",
        "columns",
    )


def _from_transition_columns(table: pa.Table, path: str, declared: DatasetSpec | None) -> RawTransitions:
    required = ("episode_id", "step", "observation", "action", "reward", "next_observation", "terminal", "truncated")
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise FormatError(f"{path} lacks the column(s) {', '.join(missing)}", missing[0])
    obs_shape = tuple(declared.observation.shape) if declared else None
    action_column = table.column("action")
    if pa.types.is_integer(action_column.type):
        actions = action_column.to_numpy().astype(np.int64)
    else:
        actions = column_numpy(action_column)
        if declared is not None and isinstance(declared.action, ContinuousActionSpec):
            actions = actions.reshape((len(actions), *declared.action.shape))

    def observations(name: str) -> np.ndarray:
        values = column_numpy(table.column(name))
        return values.reshape((len(values), *obs_shape)) if obs_shape else values

    sources = None
    if "source" in table.column_names:
        sources = table.column("source").combine_chunks().cast(pa.string())
    return RawTransitions(
        observations=observations("observation"),
        actions=actions,
        rewards=column_numpy(table.column("reward")),
        next_observations=observations("next_observation"),
        terminals=column_numpy(table.column("terminal")).astype(bool),
        truncateds=column_numpy(table.column("truncated")).astype(bool),
        episode_ids=column_numpy(table.column("episode_id")).astype(np.int64),
        steps=column_numpy(table.column("step")).astype(np.int32),
        sources=sources,
        spec=declared,
    )
