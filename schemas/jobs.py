"""Jobs: what a user submits, what the service shows, and the worker protocol around them."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.algorithms import ALGORITHM_PARAMS
from schemas.dataset import Name, StrictModel, VersionRef
from schemas.splits import Split
from schemas.times import UtcDatetime

JobKind = Literal["train", "collect", "evaluate"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DevicePreference = Literal["cpu", "cuda", "auto"]
WorkerDevice = Literal["cpu", "cuda"]

FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})

POLICY_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PolicyId = Annotated[str, Field(pattern=POLICY_ID_PATTERN, description="a policy id as the registry shows it")]

MAX_SEED = 2**31 - 1
MAX_TRAIN_STEPS = 100_000_000
DEFAULT_TRAIN_STEPS = 100_000
MAX_METRICS = 64
METRIC_NAME_PATTERN = r"^[A-Za-z0-9_./-]{1,64}$"
MetricName = Annotated[str, Field(pattern=METRIC_NAME_PATTERN)]


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float]:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is not finite ({value})")
    return metrics


# The names' pattern bounds the keys: without `additionalProperties`, JSON Schema lets other names through.
Metrics = Annotated[dict[MetricName, float], Field(max_length=MAX_METRICS, json_schema_extra={"additionalProperties": False})]


class GaussianExploration(StrictModel):
    """Gaussian noise added to continuous actions, as a fraction of each dimension's half-range, then clipped."""

    kind: Literal["gaussian"] = "gaussian"
    sigma: float = Field(0.1, ge=0.0, le=10.0)


class EpsilonExploration(StrictModel):
    """With probability epsilon a uniformly random action replaces the policy's."""

    kind: Literal["epsilon"] = "epsilon"
    epsilon: float = Field(0.1, ge=0.0, le=1.0)


Exploration = Annotated[GaussianExploration | EpsilonExploration, Field(discriminator="kind")]


class CollectOptions(StrictModel):
    """Run `policy` in the dataset's environment and append what it saw, chunk by chunk."""

    policy: PolicyId
    episodes: int | None = Field(default=None, ge=1, le=1_000_000)
    steps: int | None = Field(default=None, ge=1, le=100_000_000)
    exploration: Exploration | None = None
    chunk_steps: int = Field(
        default=5_000,
        ge=1,
        le=10_000_000,
        description="a chunk is closed at the first episode end after this many steps; each chunk is one version",
    )

    @model_validator(mode="after")
    def _one_budget(self) -> CollectOptions:
        if (self.episodes is None) == (self.steps is None):
            raise ValueError("give exactly one of episodes or steps")
        return self


EvaluateMethod = Literal["env", "fqe", "model"]
OfflineMethod = Literal["fqe", "model"]
MAX_OPE_STEPS = 1_000_000


class EvaluateOptions(StrictModel):
    """Evaluate `policy`: run it in the dataset's environment ("env"), or estimate its return from the pinned
    version's logged episodes (or their held-out part) by Fitted Q Evaluation ("fqe") or rollouts in a
    learned dynamics model ("model"). What it finds goes on the policy's card."""

    policy: PolicyId
    method: EvaluateMethod = Field(default="env", description="env needs the dataset's env_id; fqe and model do not")
    episodes: int = Field(default=10, ge=1, le=10_000, description="env: the episodes to run")
    split: Split | None = Field(default=None, description="fqe/model: estimate on this split's held-out episodes only")
    steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_OPE_STEPS,
        description="fqe: gradient steps (default 20,000); model: the rollout horizon (default the mean episode length)",
    )
    discount: float = Field(default=0.99, gt=0.0, lt=1.0, description="fqe/model: the discount of the estimated return")

    @model_validator(mode="after")
    def _offline_options_need_an_offline_method(self) -> EvaluateOptions:
        if self.method == "env" and (self.split is not None or self.steps is not None):
            raise ValueError("env evaluations run episodes; split and steps are for the fqe and model methods")
        return self


class JobCreate(StrictModel):
    """A job as a user submits it. The version may be a number, a tag or 'latest'; the service pins a number."""

    kind: JobKind = "train"
    algorithm: str | None = Field(
        default=None,
        description="train jobs: one of the registered algorithms",
        json_schema_extra={"enum": [*sorted(ALGORITHM_PARAMS), None]},
    )
    dataset: Name
    version: VersionRef = "latest"
    steps: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRAIN_STEPS,
        validate_default=True,
        description=f"train jobs: gradient steps (default {DEFAULT_TRAIN_STEPS:,}); other kinds take none",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    params: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="the algorithm's parameters; defaults filled in"
    )
    parent_policy: PolicyId | None = Field(default=None, description="train jobs: fine-tune from this policy")
    online_fraction: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "train jobs: the share of every batch drawn from rows that policies collected (source 'policy:...'), "
            "the rest from the other rows; unset, every row is as likely as any other"
        ),
    )
    split: Split | None = Field(
        default=None,
        description=(
            "train jobs: hold these episodes out of training (by a hash of episode id and seed, so a grown "
            "version keeps every old episode on its side); validation metrics are measured on them"
        ),
    )
    device: DevicePreference = "auto"
    collect: CollectOptions | None = None
    evaluate: EvaluateOptions | None = None

    _given_params: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_given_params(cls, data: Any, handler: ModelWrapValidatorHandler[JobCreate]) -> JobCreate:
        job = handler(data)
        if isinstance(data, dict) and isinstance(data.get("params"), dict):
            job._given_params = frozenset(data["params"])
        elif isinstance(data, JobCreate):
            job._given_params = data._given_params
        return job

    @property
    def given_params(self) -> dict[str, Any]:
        """Only the params the submitter stated (a fine-tuning job takes the rest from its parent)."""
        return {name: value for name, value in self.params.items() if name in self._given_params}

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, algorithm: str | None) -> str | None:
        if algorithm is not None and algorithm not in ALGORITHM_PARAMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(ALGORITHM_PARAMS))}")
        return algorithm

    @field_validator("steps")
    @classmethod
    def _steps_fit_kind(cls, steps: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind")
        if kind == "train":
            return DEFAULT_TRAIN_STEPS if steps is None else steps
        if steps is not None and kind is not None:
            raise ValueError(f"{kind} jobs take no gradient steps: their {kind} options say how much")
        return steps

    @field_validator("online_fraction")
    @classmethod
    def _online_fraction_for_training(cls, fraction: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if fraction is not None and kind not in ("train", None):
            raise ValueError(f"{kind} jobs sample no batches; online_fraction is for train jobs")
        return fraction

    @field_validator("split")
    @classmethod
    def _split_for_training(cls, split: Split | None, info: ValidationInfo) -> Split | None:
        kind = info.data.get("kind")
        if split is not None and kind not in ("train", None):
            raise ValueError(f"{kind} jobs train nothing; an evaluate job takes its split in its evaluate options")
        return split

    @field_validator("params")
    @classmethod
    def _params_fit_algorithm(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algorithm = info.data.get("algorithm")
        if algorithm is None:
            # an unknown algorithm is already reported; a missing one is reported for the kind below
            if params and "algorithm" in info.data:
                raise ValueError("params need an algorithm")
            return params
        # a ValidationError raised here keeps its locations, so errors read `params.<field>`
        return ALGORITHM_PARAMS[algorithm].model_validate(params).model_dump(mode="json")

    @model_validator(mode="after")
    def _options_fit_kind(self) -> JobCreate:
        if self.kind == "train":
            if self.algorithm is None:
                raise ValueError("train jobs need an algorithm")
            if self.collect is not None or self.evaluate is not None:
                raise ValueError("train jobs take no collect or evaluate options")
        elif self.kind == "collect":
            if self.collect is None:
                raise ValueError("collect jobs need collect options (policy, episodes or steps)")
            if self.evaluate is not None or self.parent_policy is not None or self.algorithm is not None:
                raise ValueError("collect jobs take only collect options (no algorithm, parent_policy or evaluate)")
        else:
            if self.evaluate is None:
                raise ValueError("evaluate jobs need evaluate options (policy, episodes)")
            if self.collect is not None or self.parent_policy is not None or self.algorithm is not None:
                raise ValueError("evaluate jobs take only evaluate options (no algorithm, parent_policy or collect)")
        return self


class JobPublic(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    algorithm: str | None
    dataset: str
    version: int
    """The concrete version the job was pinned to at submission; never changes."""
    requested_version: int | str
    steps: int | None
    """Gradient steps of a train job; None for the other kinds."""
    seed: int
    params: dict[str, Any]
    parent_policy: str | None
    online_fraction: float | None = None
    split: Split | None = None
    """Train jobs: the episodes held out of training."""
    device: DevicePreference
    collect: CollectOptions | None = None
    evaluate: EvaluateOptions | None = None
    progress: float
    step: int
    """The last step a worker reported."""
    attempts: int
    metrics: dict[str, float]
    error: str | None
    policy_id: str | None
    result: dict[str, Any]
    """What a finished collect or evaluate job produced (versions and rows, or returns)."""
    worker: str | None
    checkpoint_step: int | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    updated_at: UtcDatetime


class MetricPoint(BaseModel):
    step: int = Field(ge=0)
    values: Metrics
    time: UtcDatetime | None = None

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(values)


class ClaimRequest(StrictModel):
    worker: str = Field(default="worker", min_length=1, max_length=120, description="a name for logs and the job record")
    device: WorkerDevice = "cpu"
    kinds: list[JobKind] = Field(default_factory=lambda: ["train", "collect", "evaluate"], min_length=1)
    wait: float = Field(default=20.0, ge=0.0, le=60.0, strict=True, description="seconds to hold the request open for a job")
    threads: int | None = Field(
        default=None, ge=1, le=4096, description="CPU threads this worker trains with at most (shown in the workers list)"
    )


class Claim(BaseModel):
    """A job handed to a worker; `lease` goes in the Replaybank-Lease header of every call about the job."""

    job: JobPublic
    lease: str
    lease_seconds: float


class Heartbeat(StrictModel):
    progress: float = Field(ge=0.0, le=1.0)
    step: int = Field(default=0, ge=0)
    metrics: Metrics = Field(default_factory=dict)
    history: list[MetricPoint] = Field(default_factory=list, max_length=10_000)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(metrics)


class HeartbeatReply(BaseModel):
    cancelled: bool
    lease_seconds: float


class JobComplete(StrictModel):
    metrics: Metrics = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        return _finite_metrics(metrics)


class JobFail(StrictModel):
    error: str = Field(min_length=1, max_length=8_000)
    retry: bool = False
    """The job could not run on this worker (e.g. its environment is missing): back to the queue for another
    worker, counting the attempt, and failed with `error` once it was the last (REPLAYBANK_MAX_ATTEMPTS)."""


class CollectResult(StrictModel):
    versions: list[int] = Field(default_factory=list)
    rows: int = Field(default=0, ge=0)
    episodes: int = Field(default=0, ge=0)
    returns: list[float] = Field(default_factory=list)


class EnvEvaluateResult(StrictModel):
    """What an "env" evaluate job found: the return and length of each episode it ran."""

    returns: list[float] = Field(min_length=1)
    lengths: list[int] = Field(default_factory=list)


class OPEEvaluateResult(StrictModel):
    """What an "fqe" or "model" evaluate job estimated: the expected discounted return and its interval."""

    method: OfflineMethod
    estimate: float = Field(allow_inf_nan=False)
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    discount: float = Field(gt=0.0, lt=1.0)
    episodes: int = Field(ge=1, description="complete episodes whose initial states the estimate averages over")
    rows: int = Field(ge=1)
    split: Split | None = None
    steps: int = Field(ge=1, description="fqe: gradient steps; model: the rollout horizon")
    details: dict[str, float | int | bool | str] = Field(default_factory=dict, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _estimate_within_interval(self) -> OPEEvaluateResult:
        if not self.low <= self.high:
            raise ValueError(f"the interval [{self.low}, {self.high}] is empty")
        return self


EvaluateResult = EnvEvaluateResult | OPEEvaluateResult
"""What `complete` takes for an evaluate job: the shape its method makes (`evaluate_result_model`)."""


def evaluate_result_model(method: str) -> type[EnvEvaluateResult] | type[OPEEvaluateResult]:
    return EnvEvaluateResult if method == "env" else OPEEvaluateResult
