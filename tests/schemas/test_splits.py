import time

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.splits import Split, episode_hash, held_out


def test_membership_is_stable_across_calls_and_a_grown_set():
    split = Split(validation_fraction=0.2, seed=3)
    old = np.arange(1_000, dtype=np.int64)
    grown = np.concatenate([old, np.arange(1_000, 5_000, dtype=np.int64)])
    first = held_out(old, split)
    assert np.array_equal(first, held_out(old.copy(), split))
    assert np.array_equal(held_out(grown, split)[: len(old)], first)
    # Rows of one episode share its side, whatever the order they come in.
    rows = np.repeat(old, 3)[::-1]
    assert np.array_equal(held_out(rows, split), np.repeat(first, 3)[::-1])


def test_the_hash_is_the_documented_splitmix64():
    # Vigna's splitmix64.c seeded with 0 yields 0xE220A8397B1DCDAF first: our hash of id 0, seed 0.
    assert int(episode_hash(np.array([0]), 0)[0]) == 0xE220A8397B1DCDAF
    assert episode_hash(np.int64(7), 1).shape == ()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_the_held_out_share_is_close_to_the_fraction(fraction):
    share = held_out(np.arange(10_000), Split(validation_fraction=fraction, seed=0)).mean()
    assert abs(share - fraction) < 0.02


def test_fraction_zero_holds_nothing_out_and_negative_ids_hash_too():
    ids = np.arange(-500, 500)
    assert not held_out(ids, Split(validation_fraction=0.0, seed=0)).any()
    assert 0.2 < held_out(ids, Split(validation_fraction=0.3, seed=0)).mean() < 0.4


def test_different_seeds_give_different_splits():
    ids = np.arange(10_000)
    first = held_out(ids, Split(validation_fraction=0.2, seed=0))
    second = held_out(ids, Split(validation_fraction=0.2, seed=1))
    overlap = (first & second).sum() / first.sum()
    assert 0.1 < overlap < 0.3  # about the 20% two independent splits share


def test_a_million_ids_take_well_under_a_tenth_of_a_second():
    ids = np.arange(1_000_000, dtype=np.int64)
    split = Split(validation_fraction=0.1, seed=5)
    timings = []
    for _ in range(3):  # the best of three, so a busy machine's one slow moment does not count
        started = time.perf_counter()
        held_out(ids, split)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"validation_fraction": 0.95}, "validation_fraction"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_fraction": float("nan")}, "validation_fraction"),
        ({"validation_fraction": 0.1, "seed": -1}, "seed"),
        ({"validation_fraction": 0.1, "sede": 1}, "sede"),
        ({}, "validation_fraction"),
    ],
)
def test_bad_splits_name_the_field(body, field):
    with pytest.raises(ValidationError) as error:
        Split.model_validate(body)
    assert any(field in map(str, item["loc"]) for item in error.value.errors())
