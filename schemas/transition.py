"""The Arrow schema of a transition row, derived from a dataset's spec."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.dataset import ContinuousActionSpec, DatasetSpec

COLUMNS = (
    "episode_id",
    "step",
    "observation",
    "action",
    "reward",
    "next_observation",
    "terminal",
    "truncated",
    "source",
    "batch_id",
)
"""Every transition row has exactly these columns, in this order."""

CLIENT_COLUMNS = COLUMNS[:-2]
"""Columns an uploader provides; `source` defaults to 'logged' and `batch_id` is set by the service."""


def transition_schema(spec: DatasetSpec) -> pa.Schema:
    """The Arrow schema of a dataset's rows: fixed-size float32 lists for observations and continuous actions."""
    observation = pa.list_(pa.float32(), spec.observation.size)
    if isinstance(spec.action, ContinuousActionSpec):
        action = pa.list_(pa.float32(), spec.action.size)
    else:
        action = pa.int64()
    return pa.schema(
        [
            pa.field("episode_id", pa.int64(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("observation", observation, nullable=False),
            pa.field("action", action, nullable=False),
            pa.field("reward", pa.float32(), nullable=False),
            pa.field("next_observation", observation, nullable=False),
            pa.field("terminal", pa.bool_(), nullable=False),
            pa.field("truncated", pa.bool_(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("batch_id", pa.string(), nullable=False),
        ]
    )

MAX_SOURCE_LENGTH = 200

POLICY_SOURCE_PREFIX = "policy:"
"""Rows that a replaybank policy collected carry the source `policy:<policy id>`; the rest were logged."""


class TransitionError(ValueError):
    """An uploaded batch of rows breaks the dataset's schema or spec; names the column at fault."""

    def __init__(self, field: str, detail: str, row: int | None = None) -> None:
        self.field = field
        self.detail = detail
        self.row = row
        super().__init__(f"{field}: {self.message}")

    @property
    def message(self) -> str:
        return f"row {self.row} {self.detail}" if self.row is not None else self.detail

    def shifted(self, offset: int) -> "TransitionError":
        """The same error for rows counted from `offset` (a batch's place in a streamed upload)."""
        return TransitionError(self.field, self.detail, None if self.row is None else self.row + offset)


@dataclass(frozen=True)
class EpisodeSummary:
    """Per episode in one upload (sorted by episode id): what the cross-upload checks and statistics need."""

    episode_ids: np.ndarray  # int64
    first_steps: np.ndarray  # int32
    last_steps: np.ndarray  # int32
    rows: np.ndarray  # int64
    reward_sums: np.ndarray  # float64
    ended: np.ndarray  # bool: the episode's last row is terminal or truncated


@dataclass(frozen=True)
class ConformedRows:
    table: pa.Table
    """In the dataset's Arrow schema exactly, one chunk per column."""
    episodes: EpisodeSummary


def conform(table: pa.Table, spec: DatasetSpec, batch_id: str) -> ConformedRows:
    """Check uploaded rows against the dataset's spec and return them in its schema, or raise TransitionError.

    Numeric columns may arrive in any integer or float width and lists as plain or fixed-size lists;
    anything else (missing or extra columns, nulls, wrong lengths, non-finite numbers, actions outside the
    action space, duplicate steps, rows after an episode's end) is refused.
    """
    if table.num_rows == 0:
        raise TransitionError("rows", "the upload has no rows")
    rows = conform_rows(table, spec, batch_id)
    return ConformedRows(table=rows, episodes=summarize_episodes(rows))


def conform_rows(table: pa.Table, spec: DatasetSpec, batch_id: str) -> pa.Table:
    """The row-by-row half of `conform` (everything but the episode rules), for one part of an upload."""
    present = set(table.column_names)
    if len(present) != len(table.column_names):
        raise TransitionError("columns", "a column name appears twice")
    missing = [name for name in CLIENT_COLUMNS if name not in present]
    if missing:
        raise TransitionError(missing[0], "column is missing")
    # batch_id is the service's; a re-uploaded pulled file carries one, which is replaced.
    extra = sorted(present - set(COLUMNS))
    if extra:
        raise TransitionError(extra[0], f"unknown column (expected {', '.join(CLIENT_COLUMNS)}, and optionally source)")

    schema = transition_schema(spec)
    n = table.num_rows
    columns: dict[str, pa.Array] = {}
    for name in CLIENT_COLUMNS:
        array = table.column(name).combine_chunks()
        if array.null_count:
            row = int(np.flatnonzero(~np.asarray(array.is_valid()))[0])
            raise TransitionError(name, "has no value", row)
        columns[name] = array

    episode_ids = _integers(columns["episode_id"], "episode_id", pa.int64())
    steps = _integers(columns["step"], "step", pa.int32())
    if n and int(pc.min(steps).as_py()) < 0:
        row = int(np.flatnonzero(steps.to_numpy() < 0)[0])
        raise TransitionError("step", "has a negative step", row)
    observation_size = spec.observation.size
    observations = _vectors(columns["observation"], "observation", observation_size)
    next_observations = _vectors(columns["next_observation"], "next_observation", observation_size)
    if isinstance(spec.action, ContinuousActionSpec):
        actions = _vectors(columns["action"], "action", spec.action.size)
        _within_bounds(actions, spec.action)
    else:
        actions = _integers(columns["action"], "action", pa.int64())
        values = actions.to_numpy()
        outside = (values < 0) | (values >= spec.action.n)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise TransitionError("action", f"has action {int(values[row])}, outside the discrete range [0, {spec.action.n})", row)
    rewards = _floats(columns["reward"], "reward")
    terminal = _booleans(columns["terminal"], "terminal")
    truncated = _booleans(columns["truncated"], "truncated")
    sources = _sources(table, n)

    return pa.Table.from_arrays(
        [
            episode_ids,
            steps,
            observations,
            actions,
            rewards,
            next_observations,
            terminal,
            truncated,
            sources,
            _constant(batch_id, n),
        ],
        schema=schema,
    )


def summarize_episodes(table: pa.Table) -> EpisodeSummary:
    """Check the episode rules (no repeated step, nothing after an episode's end) over rows in the dataset's
    schema, and summarise each episode."""
    return _episodes(
        table.column("episode_id").to_numpy(),
        table.column("step").to_numpy(),
        table.column("reward").to_numpy(),
        table.column("terminal").combine_chunks(),
        table.column("truncated").combine_chunks(),
    )


def _constant(value: str, n: int) -> pa.Array:
    return pc.fill_null(pa.nulls(n, pa.string()), value)


def _integers(array: pa.Array, name: str, target: pa.DataType) -> pa.Array:
    if not pa.types.is_integer(array.type):
        raise TransitionError(name, f"expected integers, got {array.type}")
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, OverflowError):
        raise TransitionError(name, f"a value does not fit in {target}") from None


def _floats(array: pa.Array, name: str) -> pa.Array:
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise TransitionError(name, f"expected numbers, got {array.type}")
    result = array.cast(pa.float32(), safe=False)
    _finite(result.to_numpy(), name, 1)
    return result


def _booleans(array: pa.Array, name: str) -> pa.Array:
    if not pa.types.is_boolean(array.type):
        raise TransitionError(name, f"expected booleans, got {array.type}")
    return array


def _vectors(array: pa.Array, name: str, size: int) -> pa.FixedSizeListArray:
    kind = array.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise TransitionError(name, f"expected a list of {size} numbers per row, got {kind}")
    value_type = kind.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise TransitionError(name, f"expected numbers in the list, got {value_type}")
    if pa.types.is_fixed_size_list(kind):
        if kind.list_size != size:
            raise TransitionError(name, f"expected {size} values per row, got {kind.list_size}")
    else:
        lengths = pc.list_value_length(array).to_numpy()
        wrong = lengths != size
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise TransitionError(name, f"has {int(lengths[row])} values, expected {size}", row)
    values = array.flatten()
    if values.null_count:
        row = int(np.flatnonzero(~np.asarray(values.is_valid()))[0]) // size
        raise TransitionError(name, "has a missing value in its list", row)
    values = values.cast(pa.float32(), safe=False)
    _finite(values.to_numpy(), name, size)
    return pa.FixedSizeListArray.from_arrays(values, size)


def _finite(values: np.ndarray, name: str, size: int) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0]) // size
        raise TransitionError(name, "has a non-finite value (NaN or infinity)", row)


def _within_bounds(actions: pa.FixedSizeListArray, spec: ContinuousActionSpec) -> None:
    values = actions.values.to_numpy().reshape(-1, spec.size)
    # Compare in float32, the stored precision, so a bound written as 0.1 admits float32(0.1).
    low = np.asarray(spec.low, dtype=np.float32)
    high = np.asarray(spec.high, dtype=np.float32)
    for bound, outside, word in ((low, values < low, "below low"), (high, values > high, "above high")):
        if outside.any():
            row, dim = (int(i) for i in np.argwhere(outside)[0])
            raise TransitionError("action", f"has {float(values[row, dim])} in dimension {dim}, {word} {float(bound[dim])}", row)


def _sources(table: pa.Table, n: int) -> pa.Array:
    if "source" not in table.column_names:
        return _constant("logged", n)
    array = table.column("source").combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise TransitionError("source", f"expected strings, got {array.type}")
    array = array.cast(pa.string())
    if array.null_count:
        row = int(np.flatnonzero(~np.asarray(array.is_valid()))[0])
        raise TransitionError("source", "has no value", row)
    lengths = pc.utf8_length(array).to_numpy()
    bad = (lengths == 0) | (lengths > MAX_SOURCE_LENGTH)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TransitionError("source", f"has a source outside 1 to {MAX_SOURCE_LENGTH} characters", row)
    return array


def _episodes(episode_ids: np.ndarray, steps: np.ndarray, rewards: np.ndarray, terminal: pa.Array, truncated: pa.Array) -> EpisodeSummary:
    ended = np.asarray(terminal) | np.asarray(truncated)
    order = np.lexsort((steps, episode_ids))
    episodes, sorted_steps, sorted_ended = episode_ids[order], steps[order], ended[order]
    same_episode = episodes[1:] == episodes[:-1]
    duplicate = same_episode & (sorted_steps[1:] == sorted_steps[:-1])
    if duplicate.any():
        i = int(np.flatnonzero(duplicate)[0])
        raise TransitionError("step", f"episode {int(episodes[i])} has step {int(sorted_steps[i])} twice")
    after_end = same_episode & sorted_ended[:-1]
    if after_end.any():
        i = int(np.flatnonzero(after_end)[0])
        flag = "terminal" if bool(np.asarray(terminal)[order[i]]) else "truncated"
        raise TransitionError(
            flag,
            f"episode {int(episodes[i])} has rows after its {flag} row at step {int(sorted_steps[i])}",
        )
    starts = np.flatnonzero(np.concatenate(([True], ~same_episode)))
    ends = np.concatenate((starts[1:], [len(episodes)])) - 1
    return EpisodeSummary(
        episode_ids=episodes[starts],
        first_steps=sorted_steps[starts],
        last_steps=sorted_steps[ends],
        rows=(ends - starts + 1).astype(np.int64),
        reward_sums=np.add.reduceat(rewards[order].astype(np.float64), starts),
        ended=sorted_ended[ends],
    )
