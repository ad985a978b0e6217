import json

import numpy as np
import pytest

from schemas.splits import Split, held_out
from tests.workers.ope.conftest import DISCOUNT, FAST_FQE, swing_up
from workers import files
from workers.algos.data import arrays_to_arrow
from workers.rollouts.behaviour import PENDULUM_SPEC
from workers.ope.estimate import evaluate_offline, ope_file


def test_a_split_evaluates_only_the_held_out_episodes(pendulum):
    split = Split(validation_fraction=0.3, seed=1)
    result = evaluate_offline(
        swing_up, pendulum, PENDULUM_SPEC, "fqe", steps=300, discount=DISCOUNT, split=split, fqe=FAST_FQE
    )
    mask = held_out(pendulum.episode_ids, split)
    assert result.rows == mask.sum() < len(pendulum)
    assert result.episodes == len(np.unique(pendulum.episode_ids[mask])) > 0
    assert result.split == {"validation_fraction": 0.3, "seed": 1}


def test_data_or_a_split_without_a_complete_episode_is_refused(pendulum):
    unfinished = pendulum.subset(~(pendulum.terminals | pendulum.truncateds))
    with pytest.raises(ValueError, match="the data has no complete episode: no row has terminal or truncated set"):
        evaluate_offline(swing_up, unfinished, PENDULUM_SPEC, steps=10)
    with pytest.raises(ValueError, match="holds out no episode"):
        evaluate_offline(swing_up, pendulum, PENDULUM_SPEC, steps=10, split=Split(validation_fraction=0.0))
    # Held-out episodes whose ends are missing: rows, but no complete episode among them.
    split = Split(validation_fraction=0.5, seed=0)
    cut = pendulum.subset(~(held_out(pendulum.episode_ids, split) & pendulum.truncateds))
    with pytest.raises(ValueError, match="the split's held-out episodes have no complete episode"):
        evaluate_offline(swing_up, cut, PENDULUM_SPEC, steps=10, split=split)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"method": "importance"}, "method must be one of fqe, model"),
        ({"discount": 1.0}, "discount must lie strictly between 0 and 1"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"confidence": 1.5}, "confidence must lie strictly between 0 and 1"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(pendulum, arguments, message):
    with pytest.raises(ValueError, match=message):
        evaluate_offline(swing_up, pendulum, PENDULUM_SPEC, **arguments)


def test_data_that_does_not_fit_the_spec_is_refused(pendulum, cartpole):
    with pytest.raises(ValueError, match="observation: the data's observations have"):
        evaluate_offline(swing_up, cartpole, PENDULUM_SPEC, steps=10)


def test_ope_file_reads_a_local_file_and_answers_json(pendulum, exported, tmp_path):
    data_path = tmp_path / "pendulum.parquet"
    files.write_file(arrays_to_arrow(pendulum, PENDULUM_SPEC), data_path, PENDULUM_SPEC)
    answer = ope_file(exported, data_path, steps=200, discount=DISCOUNT, validation_fraction=0.5, split_seed=2)
    assert json.loads(json.dumps(answer)) == answer
    assert {"method", "estimate", "low", "high", "discount", "episodes"} <= set(answer)
    assert answer["method"] == "fqe" and answer["split"] == {"validation_fraction": 0.5, "seed": 2}
    assert answer["rows"] == held_out(pendulum.episode_ids, Split(validation_fraction=0.5, seed=2)).sum()
