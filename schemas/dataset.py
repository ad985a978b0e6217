"""Dataset specs: what a dataset's observations and actions look like, and the API models around them."""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from schemas.times import UtcDatetime

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$"
"""A safe slug: lowercase letters, digits, '.', '_' and '-', 1 to 64 characters, no leading/trailing punctuation."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase slug: a-z, 0-9, '.', '_', '-'")]
def _json_number(value: Any) -> Any:
    # As JSON Schema's `integer` reads it: 3.0 is the integer 3; `true` and the string "3" are not integers.
    if isinstance(value, bool):
        raise ValueError("a version is a number, a tag or 'latest', not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


VersionRef = Annotated[
    Annotated[int, Field(ge=0, strict=True)] | Annotated[str, Field(min_length=1, max_length=64)],
    BeforeValidator(_json_number),
]
"""A version as a request names it: its number, a tag or `latest`."""
TAG_PATTERN = r"^(?!latest$)(?![0-9]+$)" + NAME_PATTERN[1:]
"""A tag: a name that is neither `latest` nor a number (those already mean versions)."""

MAX_DIMS = 1_000_000
MAX_DESCRIPTION = 64 * 1024
"""Characters in a dataset card."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObservationSpec(StrictModel):
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=8)
    dtype: Literal["float32"] = "float32"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @field_validator("shape")
    @classmethod
    def _bounded(cls, shape: list[int]) -> list[int]:
        if math.prod(shape) > MAX_DIMS:
            raise ValueError(f"at most {MAX_DIMS} observation values per row")
        return shape


def _kind_required(schema: dict[str, Any]) -> None:
    # `kind` has a default for Python callers, but on the wire it picks the union's member: it must be sent.
    schema["required"] = ["kind", *schema.get("required", [])]


class ContinuousActionSpec(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_kind_required)

    kind: Literal["continuous"] = "continuous"
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=4)
    low: list[float]
    high: list[float]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @model_validator(mode="after")
    def _bounds_match(self) -> "ContinuousActionSpec":
        n = self.size
        if len(self.low) != n or len(self.high) != n:
            raise ValueError(f"low and high need {n} values each (one per action dimension)")
        for lo, hi in zip(self.low, self.high):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("low and high must be finite")
            if lo >= hi:
                raise ValueError("every low must be below its high")
        return self


class DiscreteActionSpec(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_kind_required)

    kind: Literal["discrete"] = "discrete"
    n: int = Field(ge=2, le=1_000_000)

    @property
    def size(self) -> int:
        return 1


ActionSpec = Annotated[ContinuousActionSpec | DiscreteActionSpec, Field(discriminator="kind")]


EnvId = Annotated[
    str | None, Field(max_length=200, description="the environment (e.g. a Gymnasium id) for collection and evaluation")
]
Description = Annotated[str | None, Field(max_length=MAX_DESCRIPTION, description="the dataset card, in Markdown")]


class DatasetSpec(StrictModel):
    """What a dataset holds. Observation and action are immutable once the dataset is created; `env_id`
    may be edited (`DatasetPatch`)."""

    observation: ObservationSpec
    action: ActionSpec
    env_id: EnvId = None


class DatasetCreate(DatasetSpec):
    name: Name
    metadata: dict[str, Any] = Field(default_factory=dict)
    description: Description = None


IMMUTABLE_FIELDS = ("observation", "action", "name")


class DatasetPatch(StrictModel):
    """What may change about a dataset: the fields given are replaced whole (`metadata` too); `null` clears
    `description` and `env_id`. The observation and action spec, and the name, stay as created."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    description: Description = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    env_id: EnvId = None

    @model_validator(mode="before")
    @classmethod
    def _spec_is_immutable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in IMMUTABLE_FIELDS:
                if field in data:
                    # a ValidationError at the field's own location, so the 422 names it
                    refusal = PydanticCustomError(
                        "immutable", "{field} cannot change once a dataset exists; create a new dataset instead", {"field": field}
                    )
                    raise ValidationError.from_exception_data(
                        cls.__name__, [InitErrorDetails(type=refusal, loc=(field,), input=data[field])]
                    )
        return data

    @model_validator(mode="after")
    def _something_to_change(self) -> "DatasetPatch":
        if not self.model_fields_set:
            raise ValueError("name at least one of description, metadata and env_id")
        return self


class DatasetPublic(DatasetCreate):
    model_config = ConfigDict(extra="ignore")

    created_at: UtcDatetime
    latest_version: int
    rows: int
    episodes: int


class VersionPublic(BaseModel):
    version: int
    rows: int
    """Rows in the whole version (cumulative)."""
    added_rows: int
    episodes: int
    sources: dict[str, int]
    created_at: UtcDatetime
    tags: list[str] = Field(default_factory=list)
    duplicate_episodes: int = 0
    """Whole episodes of this version's upload whose content an earlier stored episode already had."""


class DimensionStats(BaseModel):
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]


class Histogram(BaseModel):
    """Counts in equal bins: bin i holds the values in [low + i * width, low + (i + 1) * width)."""

    width: float
    low: float
    counts: list[int]


class Distribution(BaseModel):
    count: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    histogram: Histogram | None = None
    """None for an empty distribution, and for versions committed before histograms were kept."""


class VersionStats(VersionPublic):
    """Statistics of one version, computed at commit; training reads normalisation from here."""

    observation: DimensionStats | None
    action: DimensionStats | None
    reward: Distribution
    episode_return: Distribution
    """Over finished episodes (ended by a terminal or truncated row)."""
    episode_length: Distribution


class AppendResult(BaseModel):
    version: int
    rows: int
    replayed: bool = False
    """True when the Idempotency-Key had already made this version: the answer of that upload, nothing added."""
    duplicate_episodes: int = 0
    """How many of the upload's whole episodes repeat the content of an episode the dataset already held
    (the same episodes uploaded again under other episode ids)."""


class TagSet(StrictModel):
    version: VersionRef


class TagPublic(BaseModel):
    name: str
    version: int


class TagMoved(TagPublic):
    """The answer to setting a tag: where it points now and where it pointed before (None: a new tag)."""

    previous: int | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int
    next: str | None = None


class FileEntry(BaseModel):
    """One immutable Parquet file of a version; `path` is also its name in the file URL."""

    path: str
    size: int
    sha256: str
    rows: int


class VersionFiles(BaseModel):
    """The manifest of a version: every file it is made of (files are shared with neighbouring versions)."""

    version: int
    data: list[FileEntry]
    count: int
    next: str | None = None


class QueryRequest(StrictModel):
    sql: str = Field(min_length=1)
    version: VersionRef = "latest"
    max_rows: int | None = Field(default=None, ge=1)
    """At most the service's own cap (REPLAYBANK_QUERY_MAX_ROWS)."""


class QueryColumn(BaseModel):
    name: str
    type: str


class QueryResult(BaseModel):
    version: int
    columns: list[QueryColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    """More rows matched than the cap; `rows` holds the first ones."""
    total_rows: int | None = None
    """How many rows the query gave before the cap; None when the service could not count them within its time limit."""
