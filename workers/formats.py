"""Transition files in and out: Parquet, Arrow IPC, NPZ, D4RL-layout HDF5 and Minari datasets.

Every reader produces the same thing, `RawTransitions` (numpy columns plus what the file says about its
spaces), which `infer_spec` turns into a `DatasetSpec` and `to_upload_table` into Arrow rows ready to upload.
Writers take a pulled table (the dataset's Arrow schema) and write Parquet or D4RL-layout HDF5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.dataset import ContinuousActionSpec, DatasetSpec, DiscreteActionSpec, ObservationSpec
from schemas.transition import transition_schema

FORMATS = ("parquet", "arrow", "npz", "hdf5", "minari")

SPEC_METADATA_KEY = b"replaybank.spec"
"""Parquet files written here carry their dataset spec, so reading one back needs no inference."""

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
"""The arrays a D4RL-layout file must hold; `next_observations` is optional."""

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
    """The reader numbered the episodes itself, from 0; appending to a dataset shifts them past its own."""
    notes: list[str] = field(default_factory=list)
    """What the reader derived or dropped, for the user to see (e.g. D4RL rows without a successor)."""

    def __len__(self) -> int:
        return len(self.rewards)


def detect_format(path: str | Path) -> str:
    """The format a path's name suggests; a directory or a name without a known suffix is a Minari dataset."""
    suffix = Path(path).suffix.lower()
    by_suffix = {
        ".parquet": "parquet",
        ".pq": "parquet",
        ".arrow": "arrow",
        ".arrows": "arrow",
        ".ipc": "arrow",
        ".feather": "arrow",
        ".npz": "npz",
        ".hdf5": "hdf5",
        ".h5": "hdf5",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    if Path(path).is_file():
        raise FormatError(
            f"cannot tell the format of {path}; name it .parquet, .arrow, .npz or .hdf5, or pass a format",
            "format",
        )
    return "minari"


def read_file(path: str | Path, format: str | None = None) -> RawTransitions:
    """Read transitions from a file (or a Minari dataset id or folder)."""
    format = format or detect_format(path)
    readers = {
        "parquet": _read_parquet,
        "arrow": _read_arrow,
        "npz": _read_npz,
        "hdf5": _read_hdf5,
        "minari": _read_minari,
    }
    if format not in readers:
        raise FormatError(f"unknown format {format!r}; one of {', '.join(FORMATS)}", "format")
    if format != "minari" and not Path(path).is_file():
        raise FormatError(f"no such file: {path}", "file")
    return readers[format](str(path))


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

    `first_episode_id` shifts episode ids that the reader derived (D4RL, NPZ, Minari), so a second file
    appended to a dataset does not reuse the first file's episode ids; ids a file states are kept.
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


# --- writers -------------------------------------------------------------------------------------------


def write_parquet(table: pa.Table, path: str | Path, spec: DatasetSpec | None = None) -> None:
    """Write rows as Parquet, with the spec in the file's metadata when given."""
    if spec is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[SPEC_METADATA_KEY] = spec.model_dump_json().encode()
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, str(path))


def write_d4rl_hdf5(table: pa.Table, path: str | Path, spec: DatasetSpec) -> None:
    """Write rows in the D4RL layout, plus `episode_ids` and `steps` so reading back keeps episodes exact."""
    import h5py

    n = table.num_rows
    obs_shape = tuple(spec.observation.shape)

    def observations(column: str) -> np.ndarray:
        return _list_values(table.column(column), spec.observation.size).reshape((n, *obs_shape))

    if isinstance(spec.action, ContinuousActionSpec):
        actions = _list_values(table.column("action"), spec.action.size).reshape((n, *spec.action.shape))
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
        file.attrs["replaybank.spec"] = spec.model_dump_json()


def output_format(path: str | Path) -> str:
    """The format a path to write names by its suffix: parquet or hdf5."""
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".hdf5", ".h5"):
        return "hdf5"
    raise FormatError(f"can write .parquet or .hdf5 files, not {Path(path).name}", "out")


def write_file(table: pa.Table, path: str | Path, spec: DatasetSpec) -> None:
    """Write rows to a .parquet or .hdf5 (D4RL layout) file, by the path's suffix."""
    if output_format(path) == "parquet":
        write_parquet(table, path, spec)
    else:
        write_d4rl_hdf5(table, path, spec)


# --- readers -------------------------------------------------------------------------------------------


def _read_parquet(path: str) -> RawTransitions:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise FormatError(f"{path} is not a readable Parquet file: {error}", "file") from error
    return _from_table(table, path)


def _read_arrow(path: str) -> RawTransitions:
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
    if set(D4RL_KEYS) <= names:
        arrays = {name: _column_numpy(table.column(name)) for name in table.column_names}
        return _from_d4rl(arrays, path)
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
        actions = _column_numpy(action_column)
        if declared is not None and isinstance(declared.action, ContinuousActionSpec):
            actions = actions.reshape((len(actions), *declared.action.shape))

    def observations(name: str) -> np.ndarray:
        values = _column_numpy(table.column(name))
        return values.reshape((len(values), *obs_shape)) if obs_shape else values

    sources = None
    if "source" in table.column_names:
        sources = table.column("source").combine_chunks().cast(pa.string())
    return RawTransitions(
        observations=observations("observation"),
        actions=actions,
        rewards=_column_numpy(table.column("reward")),
        next_observations=observations("next_observation"),
        terminals=_column_numpy(table.column("terminal")).astype(bool),
        truncateds=_column_numpy(table.column("truncated")).astype(bool),
        episode_ids=_column_numpy(table.column("episode_id")).astype(np.int64),
        steps=_column_numpy(table.column("step")).astype(np.int32),
        sources=sources,
        spec=declared,
    )


def _read_npz(path: str) -> RawTransitions:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise FormatError(f"{path} is not a readable NPZ archive: {error}", "file") from error
    return _from_d4rl(arrays, path)


def _read_hdf5(path: str) -> RawTransitions:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            arrays = {name: file[name][()] for name in file.keys() if isinstance(file[name], h5py.Dataset)}
            declared = file.attrs.get("replaybank.spec")
    except OSError as error:
        raise FormatError(f"{path} is not a readable HDF5 file: {error}", "file") from error
    raw = _from_d4rl(arrays, path)
    if declared is not None:
        raw = replace(raw, spec=DatasetSpec.model_validate_json(declared))
    return raw


def _from_d4rl(arrays: dict[str, np.ndarray], path: str) -> RawTransitions:
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
    for key in (*D4RL_KEYS, "next_observations", "episode_ids", "steps"):
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
        episode_ids_derived=derived,
        notes=notes,
    )


def _episodes_from_ends(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Episode ids and step numbers for rows whose episodes end where `ends` is true."""
    n = len(ends)
    episode_ids = np.zeros(n, dtype=np.int64)
    if n > 1:
        episode_ids[1:] = np.cumsum(ends[:-1])
    starts = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1]]) if n else np.array([], dtype=np.int64)
    steps = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return episode_ids, steps.astype(np.int32)


def _read_minari(dataset: str) -> RawTransitions:
    """A Minari dataset by local id (under MINARI_DATASETS_PATH) or by its folder (the one holding `data/`)."""
    try:
        import minari
        from minari.dataset.minari_dataset import MinariDataset
    except ImportError as error:
        raise FormatError("reading Minari datasets needs the `minari` package (and pillow)", "format") from error
    from gymnasium import spaces

    folder = Path(dataset)
    try:
        if (folder / "data").is_dir():
            loaded = MinariDataset(str(folder / "data"))
        elif (folder / "metadata.json").is_file():
            loaded = MinariDataset(str(folder))
        else:
            loaded = minari.load_dataset(dataset)
    except (FileNotFoundError, ValueError) as error:
        raise FormatError(f"no local Minari dataset {dataset!r}: {error}", "file") from error

    observation_space, action_space = loaded.observation_space, loaded.action_space
    if not isinstance(observation_space, spaces.Box):
        raise FormatError(f"Minari observations must be a Box space, not {observation_space}", "observations")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise FormatError(f"Minari actions must be a Box or Discrete space, not {action_space}", "actions")

    parts: dict[str, list[np.ndarray]] = {key: [] for key in ("obs", "next", "act", "rew", "term", "trunc", "ep", "step")}
    for index, episode in enumerate(loaded.iterate_episodes()):
        length = len(episode)
        observations = np.asarray(episode.observations, dtype=np.float32)
        parts["obs"].append(observations[:length])
        parts["next"].append(observations[1 : length + 1])
        parts["act"].append(np.asarray(episode.actions))
        parts["rew"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["term"].append(np.asarray(episode.terminations, dtype=bool))
        parts["trunc"].append(np.asarray(episode.truncations, dtype=bool))
        parts["ep"].append(np.full(length, index, dtype=np.int64))
        parts["step"].append(np.arange(length, dtype=np.int32))
    if not parts["obs"]:
        raise FormatError(f"Minari dataset {dataset!r} has no episodes", "file")
    merged = {key: np.concatenate(values) for key, values in parts.items()}

    actions = merged["act"]
    if isinstance(action_space, spaces.Discrete):
        actions = actions.astype(np.int64).reshape(-1) - int(action_space.start)
        action_spec: Any = DiscreteActionSpec(n=int(action_space.n))
        bounds = None
    else:
        actions = actions.astype(np.float32)
        low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
        bounds = (low.astype(np.float64), high.astype(np.float64)) if np.all(np.isfinite(low) & np.isfinite(high)) else None
        action_spec = None
    env_id = loaded.env_spec.id if loaded.env_spec is not None else None
    spec = None
    if action_spec is not None:
        spec = DatasetSpec(observation=ObservationSpec(shape=list(observation_space.shape)), action=action_spec, env_id=env_id)
    return RawTransitions(
        observations=merged["obs"],
        actions=actions,
        rewards=merged["rew"],
        next_observations=merged["next"],
        terminals=merged["term"],
        truncateds=merged["trunc"],
        episode_ids=merged["ep"],
        steps=merged["step"],
        spec=spec,
        action_bounds=bounds,
        env_id=env_id,
        episode_ids_derived=True,
    )


# --- helpers -------------------------------------------------------------------------------------------


def _column_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as numpy: list columns (fixed-size or plain, equal lengths) become [N, width]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if array.null_count:
            raise FormatError("list columns must not hold nulls", None)
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else 0
        if len(lengths) and not np.all(lengths == width):
            raise FormatError("every row of a list column needs the same number of values", None)
        values = _column_numpy(pc.list_flatten(array))
        return values.reshape(len(array), width)
    return array.to_numpy(zero_copy_only=False)


def _list_values(column: pa.ChunkedArray, width: int) -> np.ndarray:
    return _column_numpy(column).reshape(-1, width).astype(np.float32, copy=False)


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
