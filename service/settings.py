"""Every setting of the service, from REPLAYBANK_* environment variables; unsafe values are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_LENGTH = 12


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPLAYBANK_", extra="ignore")

    data_dir: Path = Path(".replaybank")
    """The default SQLite catalog, the ownership lock, scratch space and (without storage_url) the Delta
    tables and artifacts live here."""
    storage_url: str | None = None
    """`s3://bucket/prefix`: Delta tables, policies, checkpoints and dynamics models go to S3-compatible
    object storage, reached with the standard AWS_* variables below. None keeps them in data_dir."""
    aws_endpoint_url: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "aws_endpoint_url"))
    aws_access_key_id: str | None = Field(default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id"))
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key")
    )
    aws_region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "aws_region"))
    aws_allow_http: bool = Field(default=False, validation_alias=AliasChoices("AWS_ALLOW_HTTP", "aws_allow_http"))
    presigned_downloads: bool = True
    """With object storage, answer downloads of version files, policy artifacts, checkpoints and dynamics
    models with a redirect to a presigned URL, so the bytes go from the store to the client; off, they pass
    through the service."""
    presign_seconds: int = Field(default=300, ge=1, le=7 * 86_400)
    """How long a presigned download URL stays valid."""
    database_url: str | None = None
    """SQLAlchemy URL of the catalog; None means a SQLite file inside data_dir."""
    redis_url: str | None = None
    """Redis for the job queue; None runs the queue on the catalog."""
    admin_token: SecretStr | None = None
    """None: one is generated on first start, printed once, and stored only as a hash."""
    worker_token: SecretStr | None = None
    """A worker-scope token for deployments (docker-compose) whose workers must start without a manual step."""
    lease_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """A job whose worker sends no heartbeat for this long goes to the next worker that claims."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    """Claims of a job whose leases lapsed before it is failed; a worker's graceful release does not count."""
    max_upload_bytes: int = Field(default=1 << 30, ge=1024, le=1 << 40)
    query_max_rows: int = Field(default=100_000, ge=1, le=10_000_000)
    query_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    query_threads: int = Field(default=2, ge=1, le=256)
    query_memory_limit: str = "1GB"
    """DuckDB memory limit per query, e.g. '512MB' or '2GB'."""
    compaction_min_files: int = Field(default=16, ge=2, le=100_000)
    """After an append, a dataset whose latest version holds this many small files is compacted in the background."""
    compaction_small_file_bytes: int = Field(default=8 << 20, ge=1024, le=1 << 34)
    """Files under this size are merged, in runs of about this size; larger ones are never rewritten."""
    staged_file_grace_seconds: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    """With replicas (a PostgreSQL catalog) or object storage, a starting service removes a data file no version
    refers to only once it is this old; a younger one may be another replica's upload waiting for its commit."""
    workers_window_seconds: float = Field(default=300.0, gt=0, le=30 * 86_400)
    """`GET /v1/workers` lists the workers that claimed (a long-poll finding no job counts) or heartbeated this recently."""
    log_format: Literal["json", "text"] = "json"
    """`replaybank serve` logs one JSON object per line, or uvicorn's plain text with `text`."""

    @field_validator("admin_token", "worker_token")
    @classmethod
    def _strong_admin_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value) < MIN_ADMIN_TOKEN_LENGTH or len(set(value)) < 8:
            raise ValueError(f"a configured token needs at least {MIN_ADMIN_TOKEN_LENGTH} characters and 8 distinct ones")
        return token

    @field_validator("query_memory_limit")
    @classmethod
    def _memory_limit(cls, limit: str) -> str:
        number, unit = limit[:-2].strip(), limit[-2:].upper()
        if unit not in {"KB", "MB", "GB", "TB"} or not number.isdigit() or int(number) <= 0:
            raise ValueError("use a size such as '512MB' or '2GB'")
        return f"{int(number)}{unit}"

    @field_validator("storage_url")
    @classmethod
    def _s3_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("name a bucket and an optional prefix: 's3://bucket/prefix'")
        return url.rstrip("/")

    @field_validator("database_url", "redis_url")
    @classmethod
    def _blank_is_none(cls, url: str | None) -> str | None:
        return url or None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ValueError("the catalog runs on SQLite ('sqlite:///path') or PostgreSQL ('postgresql+psycopg://...')")
        return url

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> "Settings":
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @property
    def s3_options(self) -> dict[str, str]:
        """The AWS_* settings as delta-rs storage options (the S3 store reads the same)."""
        secret = self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        options = {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": self.aws_region,
            "AWS_ALLOW_HTTP": "true" if self.aws_allow_http else None,
        }
        return {name: value for name, value in options.items() if value}

    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.sqlite'}"
