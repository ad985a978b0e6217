"""Sweeps: a grid of train jobs on one pinned version and split, each policy then evaluated off-policy (and in
the environment, where the dataset has one), and the leaderboard that ranks them by the estimate.

The grid: every algorithm in `algorithms`, crossed with the values of each parameter in `params` that the
algorithm has (a parameter only some algorithms have varies only theirs), crossed with `seeds`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import Name, StrictModel, VersionRef
from schemas.jobs import (
    DEFAULT_TRAIN_STEPS,
    MAX_OPE_STEPS,
    MAX_SEED,
    MAX_TRAIN_STEPS,
    DevicePreference,
    JobStatus,
    OfflineMethod,
)
from schemas.splits import Split
from schemas.times import UtcDatetime

MAX_SWEEP_JOBS = 1_000
"""Every job a sweep may submit, train jobs and their evaluations together."""
DEFAULT_SPLIT = Split(validation_fraction=0.1, seed=0)

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
SweepStatus = Literal["running", "finished", "cancelled"]


@dataclass(frozen=True)
class GridPoint:
    """One train job of a sweep: the algorithm, the swept parameters' values for it, the seed."""

    algorithm: str
    params: dict[str, Any]
    seed: int


def _refusal(field: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError at `field`, so the 422 names it (inside a field validator, under that field)."""
    error = PydanticCustomError("sweep", "{message}", {"message": message})
    return ValidationError.from_exception_data("SweepCreate", [InitErrorDetails(type=error, loc=field, input=value)])


class SweepCreate(StrictModel):
    """A sweep as a user submits it. The version may be a number, a tag or 'latest'; the service pins a number."""

    dataset: Name
    version: VersionRef = "latest"
    split: Split = Field(
        default=DEFAULT_SPLIT,
        description="the episodes held out of every train job and estimated on; validation_fraction 0 trains and "
        "estimates on every episode",
    )
    algorithms: list[str] = Field(
        min_length=1,
        max_length=len(ALGORITHM_PARAMS),
        description="the algorithms to train, each once per point of its grid",
        json_schema_extra={"items": {"enum": sorted(ALGORITHM_PARAMS)}, "uniqueItems": True},
    )
    params: dict[str, Annotated[list[Any], Field(min_length=1, max_length=MAX_SWEEP_JOBS)]] = Field(
        default_factory=dict,
        description="parameter name -> the values to try; each algorithm that has the parameter tries every value",
    )
    seeds: list[Seed] = Field(
        default=[0], min_length=1, max_length=MAX_SWEEP_JOBS, json_schema_extra={"uniqueItems": True}
    )
    steps: int = Field(default=DEFAULT_TRAIN_STEPS, ge=1, le=MAX_TRAIN_STEPS, description="gradient steps of each train job")
    method: OfflineMethod = Field(default="fqe", description="how each policy's return is estimated from the held-out episodes")
    ope_steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_OPE_STEPS,
        description="fqe: gradient steps (default 20,000); model: the rollout horizon (default the mean episode length)",
    )
    discount: float = Field(default=0.99, gt=0.0, lt=1.0, description="the discount of the estimated return")
    eval_episodes: int = Field(
        default=10, ge=1, le=10_000, description="episodes of the environment evaluation, where the dataset names an env_id"
    )
    device: DevicePreference = "auto"

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, algorithms: list[str]) -> list[str]:
        for index, algorithm in enumerate(algorithms):
            if algorithm not in ALGORITHM_PARAMS:
                known = ", ".join(sorted(ALGORITHM_PARAMS))
                raise _refusal((index,), f"unknown algorithm {algorithm!r}; known: {known}", algorithm)
            if algorithm in algorithms[:index]:
                raise _refusal((index,), f"{algorithm} is given twice", algorithm)
        return algorithms

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        for index, seed in enumerate(seeds):
            if seed in seeds[:index]:
                raise _refusal((index,), f"seed {seed} is given twice", seed)
        return seeds

    @field_validator("params")
    @classmethod
    def _params_fit_algorithms(cls, params: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        """Each name belongs to at least one chosen algorithm, and each value is valid for every one that has it."""
        algorithms = info.data.get("algorithms")
        if algorithms is None:
            return params  # the algorithms are refused already
        for name, values in params.items():
            having = [algorithm for algorithm in algorithms if name in ALGORITHM_PARAMS[algorithm].model_fields]
            if not having:
                raise _refusal((name,), f"none of {', '.join(algorithms)} has a parameter {name!r}", name)
            seen: list[str] = []
            for index, value in enumerate(values):
                text = json.dumps(value, sort_keys=True, default=str)
                if text in seen:
                    raise _refusal((name, index), f"the value {text} is given twice", value)
                seen.append(text)
                for algorithm in having:
                    try:
                        ALGORITHM_PARAMS[algorithm].model_validate({name: value})
                    except ValidationError as error:
                        first = error.errors()[0]
                        inner = tuple(first["loc"][1:]) if first["loc"][:1] == (name,) else ()
                        raise _refusal((name, index, *inner), f"{algorithm}: {first['msg']}", value) from None
        return params

    @model_validator(mode="after")
    def _grid_is_bounded_and_valid(self) -> SweepCreate:
        refusal = self.grid_refusal(env_evaluations=False)
        if refusal is not None:
            field, message = refusal
            raise _refusal(tuple(field.split(".")), message, None)
        for point in self.grid():
            try:
                ALGORITHM_PARAMS[point.algorithm].model_validate(point.params)
            except ValidationError as error:  # values valid one by one, not together (e.g. COMBO's elites)
                raise _refusal(("params",), f"{point.algorithm} with {point.params}: {error.errors()[0]['msg']}", None) from None
        return self

    def swept(self, algorithm: str) -> dict[str, list[Any]]:
        """The parameters of `params` that `algorithm` has, with their values."""
        fields = ALGORITHM_PARAMS[algorithm].model_fields
        return {name: values for name, values in self.params.items() if name in fields}

    def grid(self) -> list[GridPoint]:
        """Every train job, algorithm by algorithm, then parameter values in the order given, then seeds."""
        points = []
        for algorithm in self.algorithms:
            swept = self.swept(algorithm)
            for values in itertools.product(*swept.values()):
                for seed in self.seeds:
                    points.append(GridPoint(algorithm, dict(zip(swept, values)), seed))
        return points

    def train_jobs(self) -> int:
        per_seed = sum(math.prod(len(values) for values in self.swept(algorithm).values()) for algorithm in self.algorithms)
        return per_seed * len(self.seeds)

    def job_count(self, env_evaluations: bool) -> int:
        """Every job the sweep may submit: each train job, its estimate, and its environment evaluation when asked."""
        return self.train_jobs() * (3 if env_evaluations else 2)

    def grid_refusal(self, env_evaluations: bool) -> tuple[str, str] | None:
        """(field, why) when the grid makes more than MAX_SWEEP_JOBS jobs; the field named is its longest list."""
        jobs = self.job_count(env_evaluations)
        if jobs <= MAX_SWEEP_JOBS:
            return None
        lists = {"algorithms": len(self.algorithms), "seeds": len(self.seeds)}
        lists |= {f"params.{name}": len(values) for name, values in self.params.items()}
        field = max(lists, key=lambda name: lists[name])
        per_train = "an estimate and an environment evaluation" if env_evaluations else "an estimate"
        message = (
            f"the grid makes {jobs:,} jobs ({self.train_jobs():,} train jobs, each followed by {per_train}); "
            f"a sweep submits at most {MAX_SWEEP_JOBS:,}: try fewer {field}"
        )
        return field, message


class JobCounts(BaseModel):
    """How many of a sweep's jobs of one role are in each status."""

    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class SweepPublic(BaseModel):
    id: str
    status: SweepStatus
    """running until every job has finished (and every trained policy has its evaluations); cancelled when a
    user cancelled it."""
    dataset: str
    version: int
    """The concrete version every job of the sweep uses, pinned at submission."""
    requested_version: int | str
    split: Split
    algorithms: list[str]
    params: dict[str, list[Any]]
    seeds: list[int]
    steps: int
    method: OfflineMethod
    ope_steps: int | None
    discount: float
    eval_episodes: int
    device: DevicePreference
    train: JobCounts
    evaluations: JobCounts
    train_jobs: list[str]
    evaluate_jobs: list[str]
    created_at: UtcDatetime
    cancelled_at: UtcDatetime | None = None


class LeaderboardEntry(BaseModel):
    """One train job of the sweep and what is known of its policy."""

    rank: int | None
    """1 for the highest estimate; None until the policy has one."""
    algorithm: str
    params: dict[str, Any]
    """The swept parameters' values (the job shows every parameter)."""
    seed: int
    train_job: str
    train_status: JobStatus
    policy_id: str | None
    ope_job: str | None
    ope_status: JobStatus | None
    estimate: float | None
    low: float | None
    high: float | None
    env_return: float | None
    """The mean return in the dataset's environment, when measured (by the sweep's evaluate job, or at training)."""
    error: str | None = None
    """Why the policy has no estimate: its train job failed, or its evaluations could not be submitted."""


class Leaderboard(BaseModel):
    entries: list[LeaderboardEntry]
    """Ranked first, by estimate (highest first), then the policies still without one."""
    compared: int
    """Policies with both an estimate and an environment return: the ones the two figures below are over."""
    spearman: float | None
    """Spearman's rank correlation of estimates and environment returns (average ranks for ties); None below two
    policies compared, or when either side is constant."""
    regret_at_1: float | None
    """(best environment return - that of the top estimate) / (highest - lowest environment return), over the
    policies compared; 0 when their returns are all equal, None below two policies compared."""


class SweepDetail(SweepPublic):
    leaderboard: Leaderboard
