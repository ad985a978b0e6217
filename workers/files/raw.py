"""What every reader produces, and what is done with it whatever the file's format.

`RawTransitions` holds numpy columns plus what the file says about its spaces; `infer_spec` turns it
into a `DatasetSpec` and `to_upload_table` into Arrow rows ready to upload. The column helpers here are
shared by the format modules beside this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from schemas.transition import transition_schema

DEFAULT_SOURCE = "logged"


class FormatError(ValueError):
    """A file that cannot be read as transitions; the message names the file's field and the problem."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RawTransitions:
    """Transitions as read from a file, before they are fitted to a dataset's spec."""

    observations: np.ndarray  # [N, *obs_shape]
    actions: np.ndarray  # [N, *action_shape] floats, or [N] integers
    rewards: np.ndarray  # [N]
    next_observations: np.ndarray  # [N, *obs_shape]
    terminals: np.ndarray  # bool [N]
    truncateds: np.ndarray  # bool [N]
    episode_ids: np.ndarray  # int64 [N]
    steps: np.ndarray  # int32 [N]
    sources: pa.Array | None = None
    spec: DatasetSpec | None = None
    """The spec the file declares (replaybank Parquet metadata, Minari spaces), if any."""
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None
    env_id: str | None = None
    episode_ids_derived: bool = False
    """The reader numbered the episodes itself, from 0; an upload moves them to ids made up from the file's
    content (see `workers.files.digest`)."""
    notes: list[str] = field(default_factory=list)
    """What the reader derived or dropped, for the user to see (e.g. D4RL rows without a successor)."""

    def __len__(self) -> int:
        return len(self.rewards)


def infer_spec(
    raw: RawTransitions,
    env_id: str | None = None,
    action_low: list[float] | None = None,
    action_high: list[float] | None = None,
) -> DatasetSpec:
    """A dataset spec for these transitions: the file's own when it declares one, else derived from the data.

    Integer actions make a discrete spec (n = largest action + 1); float actions a continuous one whose
    bounds come from the arguments, else the file's action space, else the data: [-1, 1] when every
    action lies there (the usual normalised range, so later data is not refused for exceeding this
    file's extremes), otherwise the per-dimension min and max.
    """
    if (action_low is None) != (action_high is None):
        raise FormatError("give both action_low and action_high, or neither", "action_low" if action_low is None else "action_high")
    env_id = env_id or raw.env_id
    if raw.spec is not None:
        return raw.spec.model_copy(update={"env_id": env_id or raw.spec.env_id})
    observation = ObservationSpec(shape=list(raw.observations.shape[1:]) or [1])
    if np.issubdtype(raw.actions.dtype, np.integer):
        if raw.actions.ndim != 1:
            raise FormatError("integer actions must be one number per row (discrete)", "actions")
        n = int(raw.actions.max()) + 1 if len(raw.actions) else 2
        return DatasetSpec(observation=observation, action=DiscreteActionSpec(n=max(n, 2)), env_id=env_id)
    shape = list(raw.actions.shape[1:]) or [1]
    flat = raw.actions.reshape(len(raw.actions), -1)
    if action_low is not None and action_high is not None:
        low, high = np.asarray(action_low, dtype=np.float64), np.asarray(action_high, dtype=np.float64)
    elif raw.action_bounds is not None:
        low, high = raw.action_bounds
    elif len(flat) and flat.min() >= -1.0 and flat.max() <= 1.0:
        low, high = np.full(flat.shape[1], -1.0), np.full(flat.shape[1], 1.0)
    elif len(flat):
        low, high = flat.min(axis=0).astype(np.float64), flat.max(axis=0).astype(np.float64)
        # A dimension that never varies still needs low < high.
        fixed = low >= high
        low, high = np.where(fixed, low - 1.0, low), np.where(fixed, high + 1.0, high)
    else:
        raise FormatError("cannot infer action bounds from an empty file; give them explicitly", "actions")
    size = math.prod(shape)
    low, high = np.broadcast_to(low, (size,)), np.broadcast_to(high, (size,))
    return DatasetSpec(
        observation=observation,
        action=ContinuousActionSpec(shape=shape, low=[float(v) for v in low], high=[float(v) for v in high]),
        env_id=env_id,
    )


def upload_schema(spec: DatasetSpec) -> pa.Schema:
    """The columns an uploader sends: every transition column but `batch_id`, which the service sets."""
    schema = transition_schema(spec)
    return schema.remove(schema.get_field_index("batch_id"))


def to_upload_table(raw: RawTransitions, spec: DatasetSpec, first_episode_id: int = 0) -> pa.Table:
    """Rows ready to upload to a dataset with this spec.

    `first_episode_id` shifts episode ids that the reader derived (D4RL, NPZ, Minari), so files appended
    to one dataset do not share episode ids; ids a file states are kept.
    """
    n = len(raw)
    offset = first_episode_id if raw.episode_ids_derived else 0
    obs_size = spec.observation.size
    observations = _flat(raw.observations, obs_size, "observations")
    next_observations = _flat(raw.next_observations, obs_size, "next_observations")
    if isinstance(spec.action, ContinuousActionSpec):
        action = _fixed_list(_flat(raw.actions, spec.action.size, "actions"))
    else:
        if np.issubdtype(raw.actions.dtype, np.floating) and not np.all(np.mod(raw.actions, 1) == 0):
            raise FormatError("this dataset's actions are discrete; the file holds fractional actions", "actions")
        action = pa.array(raw.actions.reshape(n).astype(np.int64))
    sources = raw.sources if raw.sources is not None else pa.repeat(pa.scalar(DEFAULT_SOURCE), n)
    columns = [
        pa.array(raw.episode_ids.astype(np.int64) + offset),
        pa.array(raw.steps.astype(np.int32)),
        _fixed_list(observations),
        action,
        pa.array(raw.rewards.astype(np.float32).reshape(n)),
        _fixed_list(next_observations),
        pa.array(raw.terminals.astype(bool).reshape(n)),
        pa.array(raw.truncateds.astype(bool).reshape(n)),
        sources,
    ]
    schema = upload_schema(spec)
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema)], schema=schema)


def column_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as numpy: list columns (fixed-size or plain, equal lengths) become [N, width]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if array.null_count:
            raise FormatError("list columns must not hold nulls", None)
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and not np.all(lengths == width):
            raise FormatError("every row of a list column needs the same number of values", None)
        values = column_numpy(pc.list_flatten(array))
        return values.reshape(len(array), width)
    return array.to_numpy(zero_copy_only=False)


def list_values(column: pa.ChunkedArray, width: int) -> np.ndarray:
    return column_numpy(column).reshape(-1, width).astype(np.float32, copy=False)


def _flat(values: np.ndarray, size: int, name: str) -> np.ndarray:
    n = len(values)
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, size), np.float32)
    if flat.shape[1] != size:
        raise FormatError(f"{name} have {flat.shape[1]} values per row; the dataset's spec needs {size}", name)
    return flat


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def describe(raw: RawTransitions) -> str:
    """One line about what was read, for the command line."""
    episodes = len(np.unique(raw.episode_ids)) if len(raw) else 0
    text = f"{len(raw)} rows, {episodes} episodes"
    return "; ".join([text, *raw.notes])
