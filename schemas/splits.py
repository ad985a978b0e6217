"""Held-out episodes: which episodes a split keeps out of training, computed alike by service and workers.

Membership is a fixed integer hash of (episode id, split seed), not a draw from a random generator over
the episodes present, so it depends on nothing but those two numbers: a grown version keeps every old
episode on the side it was on, and any process (the service, a worker, `replaybank fit`) agrees.

The hash: `x = episode_id ^ (seed * 0x9E3779B97F4A7C15 mod 2**64)` as an unsigned 64-bit integer, then
splitmix64's finaliser (Steele, Lea and Flood 2014; Vigna's reference `splitmix64.c`):
`x += 0x9E3779B97F4A7C15; x = (x ^ x >> 30) * 0xBF58476D1CE4E5B9; x = (x ^ x >> 27) * 0x94D049BB133111EB;
x ^= x >> 31`, all modulo 2**64. Its top 53 bits, divided by 2**53, are a number u in [0, 1); the episode
is held out when u < validation_fraction.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
MAX_VALIDATION_FRACTION = 0.9
"""At least a tenth of the episodes stay for training."""


class Split(BaseModel):
    """Hold out about `validation_fraction` of the episodes, chosen by a hash with `seed`."""

    model_config = ConfigDict(extra="forbid")

    validation_fraction: float = Field(
        ge=0.0,
        le=MAX_VALIDATION_FRACTION,
        allow_inf_nan=False,
        description="share of episodes held out of training, in [0, 0.9]",
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="which episodes: another seed, another split")


def episode_hash(episode_ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of `episode_id ^ (seed * golden gamma)`, uint64 (see the module docstring)."""
    ids = np.asarray(episode_ids, dtype=np.int64)
    # Arrays, never numpy scalars: scalar uint64 arithmetic warns on the wrap-around the hash relies on.
    # In place where possible: a million ids then cost a few temporaries, not one per operation.
    x = ids.reshape(-1).view(np.uint64) ^ np.uint64((seed * GOLDEN_GAMMA) & _MASK64)
    x += np.uint64(GOLDEN_GAMMA)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x.reshape(ids.shape)


def held_out(episode_ids: np.ndarray, split: Split) -> np.ndarray:
    """Per row (or per episode id), whether the split holds it out: bool, the shape of `episode_ids`."""
    # u = top53 / 2**53 < fraction  <=>  top53 < ceil(fraction * 2**53), exact in integers (top53 is one).
    threshold = math.ceil(split.validation_fraction * 2.0**53)
    return (episode_hash(episode_ids, split.seed) >> np.uint64(11)) < np.uint64(threshold)
