"""The transition schema's validation: what it accepts (and converts), what it refuses, and the episode summary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.dataset import DatasetSpec
from schemas.transition import COLUMNS, TransitionError, conform, summarize_episodes, transition_schema

SPEC = DatasetSpec.model_validate(
    {"observation": {"shape": [2, 2]}, "action": {"kind": "continuous", "shape": [2], "low": [-1, -0.1], "high": [1, 0.1]}}
)
DISCRETE = DatasetSpec.model_validate({"observation": {"shape": [3]}, "action": {"kind": "discrete", "n": 3}})


def plain_rows(n: int = 4) -> dict[str, object]:
    """Rows as an uploader might build them: plain lists of float64, int64 steps, no source."""
    return {
        "episode_id": [7] * n,
        "step": list(range(n)),
        "observation": [[float(i)] * 4 for i in range(n)],
        "action": [[0.5, 0.1]] * n,
        "reward": [1.0] * n,
        "next_observation": [[float(i + 1)] * 4 for i in range(n)],
        "terminal": [False] * (n - 1) + [True],
        "truncated": [False] * n,
    }


def test_plain_lists_and_wide_numbers_are_converted_to_the_schema() -> None:
    conformed = conform(pa.table(plain_rows()), SPEC, "batch-1")
    assert conformed.table.schema == transition_schema(SPEC)
    assert conformed.table.column_names == list(COLUMNS)
    assert conformed.table.column("source").to_pylist() == ["logged"] * 4
    assert conformed.table.column("batch_id").to_pylist() == ["batch-1"] * 4
    # float32(0.1) equals the bound once both are float32: a bound written as 0.1 admits it.
    assert conformed.table.column("action").to_pylist()[0] == pytest.approx([0.5, 0.1])


def test_a_pulled_table_with_batch_id_can_be_uploaded_again() -> None:
    pulled = conform(pa.table(plain_rows()), SPEC, "old").table
    again = conform(pulled, SPEC, "new").table
    assert again.column("batch_id").to_pylist() == ["new"] * 4


def test_the_episode_summary_covers_each_episode_once() -> None:
    rows = plain_rows(3)
    rows = {key: value + value for key, value in rows.items()}
    rows["episode_id"] = [2, 2, 2, 1, 1, 1]
    rows["terminal"] = [False, False, False, False, False, True]
    rows["reward"] = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]
    summary = conform(pa.table(rows), SPEC, "b").episodes
    assert summary.episode_ids.tolist() == [1, 2]
    assert summary.rows.tolist() == [3, 3] and summary.last_steps.tolist() == [2, 2]
    assert summary.reward_sums.tolist() == [60.0, 6.0] and summary.ended.tolist() == [True, False]
    assert summarize_episodes(conform(pa.table(rows), SPEC, "b").table).reward_sums.tolist() == [60.0, 6.0]


def test_discrete_actions_are_integers_in_range() -> None:
    rows = {**plain_rows(3), "observation": [[0.0] * 3] * 3, "next_observation": [[0.0] * 3] * 3, "action": [0, 2, 1]}
    assert conform(pa.table(rows), DISCRETE, "b").table.column("action").type == pa.int64()
    with pytest.raises(TransitionError) as refused:
        conform(pa.table({**rows, "action": [0, 3, 1]}), DISCRETE, "b")
    assert refused.value.field == "action" and "row 1" in refused.value.message
    with pytest.raises(TransitionError, match="expected integers"):
        conform(pa.table({**rows, "action": [[0.0]] * 3}), DISCRETE, "b")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"observation": [[0.0] * 4, [0.0] * 3, [0.0] * 4, [0.0] * 4]}, "observation", "row 1 has 3 values"),
        ({"action": [[0.5, 0.1], [0.5, 0.2], [0.5, 0.0], [0.5, 0.0]]}, "action", "dimension 1, above high"),
        ({"reward": [1.0, float("nan"), 1.0, 1.0]}, "reward", "row 1 has a non-finite"),
        ({"reward": [1.0, 1e300, 1.0, 1.0]}, "reward", "non-finite"),
        ({"next_observation": [[0.0] * 4, [0.0, None, 0.0, 0.0], [0.0] * 4, [0.0] * 4]}, "next_observation", "missing value"),
        ({"episode_id": ["a", "b", "c", "d"]}, "episode_id", "expected integers"),
        ({"step": [0, 1, 1, 2]}, "step", "step 1 twice"),
        ({"terminal": [False, True, False, False]}, "terminal", "rows after its terminal row at step 1"),
        ({"truncated": [True, False, False, False], "terminal": [False] * 4}, "truncated", "after its truncated row at step 0"),
    ],
)
def test_each_problem_names_its_column(change: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(TransitionError) as refused:
        conform(pa.table({**plain_rows(), **change}), SPEC, "b")
    assert refused.value.field == field
    assert words in refused.value.message


def test_a_large_upload_of_whole_episodes_is_accepted() -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "episode_id": np.repeat(np.arange(n // 1000), 1000),
            "step": np.tile(np.arange(1000), n // 1000).astype(np.int32),
            "observation": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * n).astype(np.float32)), 4),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(-0.1, 0.1, 2 * n).astype(np.float32)), 2),
            "reward": rng.normal(size=n).astype(np.float32),
            "next_observation": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=4 * n).astype(np.float32)), 4),
            "terminal": np.tile(np.arange(1000) == 999, n // 1000),
            "truncated": np.zeros(n, dtype=bool),
        }
    )
    conformed = conform(table, SPEC, "b")
    assert conformed.table.num_rows == n and conformed.episodes.ended.all()
