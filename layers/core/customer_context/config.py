"""Typed settings, read from the environment on first use (never at import time), or given as a value.

Every setting is an environment variable named ``CUSTOMER_CONTEXT_<FIELD>`` (upper case). The
README's settings table is checked against this class by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from customer_context.errors import ConfigError

MiB = 1024 * 1024
# The shortest snapshot retention maintenance accepts. A commit or a read in flight (a function runs at
# most 15 minutes on Lambda) must never find the files of the snapshot it started from deleted.
MIN_RETENTION_SECONDS = 3600


ENV_PREFIX = "CUSTOMER_CONTEXT_"


class Settings(BaseModel):
    """All runtime settings of the engine. Defaults suit the embedded local stack.

    Built from the environment by :meth:`from_env` (plain pydantic rather than pydantic-settings:
    the latter adds ~70 ms to a cold start of the serving functions).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- collect ---
    write_keys: str = Field(
        default="",
        description="Write keys accepted by collect, as `key=source_id,key2=source_id2`. "
        "Used when write_keys_parameter is empty.",
    )
    write_keys_parameter: str = Field(
        default="",
        description="Name of an SSM parameter (SecureString) holding the write keys in the same "
        "`key=source_id,…` format; read once per container, cached for 5 minutes.",
    )
    max_event_bytes: int = Field(
        default=4 * MiB,
        gt=0,
        description="Largest accepted event (serialised JSON). The RudderStack Python SDK sends up to 4 MB.",
    )
    max_request_bytes: int = Field(
        default=10 * MiB,
        gt=0,
        description="Largest accepted request body after gzip decompression (API Gateway's own cap is 10 MB).",
    )
    queue_url: str = Field(default="", description="URL of the SQS queue between collect and ingest.")
    queue_max_message_bytes: int = Field(
        default=256 * 1024,
        gt=1024,
        description="Largest SQS message collect sends; events are packed into as few messages as fit.",
    )
    spool_bucket: str = Field(
        default="",
        description="S3 bucket for events too large for one SQS message (claim-check); usually the warehouse bucket.",
    )
    spool_prefix: str = Field(default="spool/", description="Key prefix of spooled events in spool_bucket.")
    cors_allow_origins: str = Field(
        default="*",
        description="Local stack only: origins whose pages may call the API from a browser (CORS), comma-separated, "
        "e.g. `https://www.example.com,https://shop.example.com`; `*` for any (the write key is public by design). "
        "On AWS the template parameter `CorsAllowOrigins` sets API Gateway's.",
    )

    # --- lakehouse ---
    catalog_type: Literal["sql", "glue", "rest"] = Field(
        default="sql",
        description="Iceberg catalog: `sql` (SQLite file, local), `glue` (AWS Glue), "
        "`rest` (S3 Tables or any REST catalog).",
    )
    catalog_name: str = Field(default="customer_context", description="Catalog name given to pyiceberg.")
    catalog_uri: str = Field(
        default="",
        description="Catalog URI: a SQLAlchemy URL for `sql` (default: sqlite file in data_dir), "
        "the endpoint for `rest`.",
    )
    catalog_properties: str = Field(
        default="",
        description="Extra pyiceberg catalog properties as a JSON object (e.g. S3 Tables SigV4 settings).",
    )
    warehouse: str = Field(
        default="",
        description="Warehouse location: `s3://bucket/prefix` on AWS, a file path or file:// URI locally "
        "(default: data_dir/warehouse); an S3 Tables bucket ARN for `rest` on S3 Tables.",
    )
    namespace: str = Field(default="customer_context", description="Iceberg namespace (Glue database) of the tables.")
    data_dir: str = Field(
        default=".customer-context",
        description="Local state folder: SQLite catalog, file warehouse, local config.",
    )
    spec_path: str = Field(
        default="",
        description="Path of the context spec (context.yaml); default: the one shipped in the package.",
    )
    context_table: str = Field(default="", description="DynamoDB table serving snapshots and aliases.")
    build_memory_limit: str = Field(
        default="", description="DuckDB memory limit of a build (e.g. `6GB`); default: DuckDB's own (80% of RAM)."
    )
    build_interval_seconds: int = Field(
        default=300, ge=0, description="Local stack only: how often `serve` runs a build (0: never)."
    )
    commit_retries: int = Field(
        default=10, ge=0, description="How often an Iceberg commit conflict is retried (exponential backoff)."
    )

    pii_hash_key: str = Field(
        default="",
        description="Key of the PII policy's `hash` rules (HMAC-SHA256), of suppression items and of the serving "
        "audit's identifier tokens. Changing it breaks joins with earlier hashes. Empty: read from "
        "pii_hash_key_secret.",
    )
    pii_hash_key_secret: str = Field(
        default="",
        description="Name or ARN of a Secrets Manager secret holding the PII hash key, read once per container when "
        "pii_hash_key is empty (the template generates one by default).",
    )

    regulate_function_name: str = Field(
        default="",
        description="Function that runs deletion jobs (invoked asynchronously by the regulation API); "
        "empty: run them in a thread of the same process (local stack).",
    )

    compact_min_files: int = Field(
        default=10, ge=2, description="maintain: a partition with at least this many data files is rewritten as one."
    )
    snapshot_retention_seconds: int = Field(
        default=7 * 86400, ge=MIN_RETENTION_SECONDS,
        description="maintain: snapshots replaced longer ago than this are expired, and unreferenced files older "
        "than this are deleted (time travel reaches back this far). At least 3600: a commit or read in flight "
        "never loses its files.",
    )

    # --- serve ---
    recent_events_ttl_seconds: int = Field(
        default=2 * 86400,
        ge=0,
        description="How long collect keeps each event in the live tail that fetch merges into "
        "`recent_events` before the next build (DynamoDB TTL); 0 turns the tail off.",
    )
    stale_after_seconds: int = Field(
        default=3600, gt=0, description="A served context older than this (since its build) is flagged `stale`."
    )
    cache_max_age_seconds: int = Field(
        default=5, ge=0, description="`Cache-Control: private, max-age=` of fetch responses."
    )
    api_url: str = Field(
        default="",
        description="This API's base URL, which MCP's query tools call with the caller's key; default: "
        "`https://` + the domain API Gateway received the request on (never the client's `Host` header).",
    )
    default_max_tokens: int = Field(
        default=1500, ge=50, le=100_000, description="Token budget of `format=text` when the request sets none."
    )

    query_max_seconds: float = Field(
        default=5.0, gt=0, le=25, description="Named queries: wall-time budget of one call (stopped beyond it)."
    )
    query_max_rows: int = Field(
        default=200, ge=1, le=10_000, description="Named queries: most rows returned (more are cut, `truncated`)."
    )
    query_max_scan_bytes: int = Field(
        default=256 * MiB, gt=0,
        description="Named queries: most bytes of data files one call may scan, checked from the planned files "
        "before reading.",
    )
    query_cache_seconds: float = Field(
        default=30.0, ge=0, description="Named queries: identical calls within this many seconds are served cached."
    )

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in value.split(","):
            origin = origin.strip()
            scheme, sep, host = origin.partition("://")
            if origin != "*" and not (sep and scheme in ("http", "https") and host and "/" not in host):
                raise ValueError(f"expected `*` or origins like `https://www.example.com`, got {origin!r}")
        return value

    @field_validator("catalog_properties")
    @classmethod
    def _properties_are_json_object(cls, value: str) -> str:
        if value:
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"expected a JSON object: {exc}") from exc
            if not isinstance(parsed, dict):
                raise ValueError("expected a JSON object")
        return value

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read every field from ``CUSTOMER_CONTEXT_<FIELD>``; unset variables keep their defaults.

        Raises:
            ConfigError: A variable has an invalid value; the message names the variable and the reason.
        """
        import os

        env = os.environ if environ is None else environ
        values = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields if ENV_PREFIX + name.upper() in env}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"invalid settings: {problems}") from exc

    # --- derived values ---
    @property
    def data_path(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    def catalog_config(self) -> dict[str, Any]:
        """The keyword properties for ``pyiceberg.catalog.load_catalog``."""
        props: dict[str, Any] = {"type": self.catalog_type}
        if self.catalog_type == "sql":
            self.data_path.mkdir(parents=True, exist_ok=True)
            props["uri"] = self.catalog_uri or f"sqlite:///{self.data_path / 'catalog.db'}"
            props["warehouse"] = self.warehouse or (self.data_path / "warehouse").as_uri()
        else:
            if self.catalog_uri:
                props["uri"] = self.catalog_uri
            if self.warehouse:
                props["warehouse"] = self.warehouse
        if self.catalog_properties:
            props.update(json.loads(self.catalog_properties))
        return props


def parse_write_keys(spec: str, *, origin: str = "write_keys") -> dict[str, str]:
    """Parse ``key=source_id,key2=source_id2`` into a mapping.

    Args:
        spec: The configured text; whitespace and empty items are ignored.
        origin: Where the text came from, named in errors.

    Returns:
        Write key to source id.

    Raises:
        ConfigError: An item is not ``key=source_id``.
    """
    keys: dict[str, str] = {}
    items = [item.strip() for item in spec.replace("\n", ",").split(",") if item.strip()]
    for n, item in enumerate(items, start=1):
        key, sep, source = item.partition("=")
        if not sep or not key.strip() or not source.strip():
            # the item itself is not quoted: it may be a write key, and this message reaches logs and callers
            raise ConfigError(f"{origin}: item {n} is not `key=source_id` (items are separated by commas)")
        keys[key.strip()] = source.strip()
    return keys


# the value given to use_settings, if any: it wins over the environment
_chosen: list[Settings] = []


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    return Settings.from_env()


def get_settings() -> Settings:
    """The settings of this process: the value given to :func:`use_settings`, else read from the environment
    once and cached.

    Raises:
        ConfigError: A setting has an invalid value; the message names it.
    """
    return _chosen[0] if _chosen else _from_environment()


def use_settings(settings: Settings | None) -> None:
    """Make ``settings`` this process's settings (``None``: read the environment again on next use). Called by
    the composition root (:func:`customer_context.wiring.configure`), which also forgets the services built
    from the previous settings."""
    _chosen[:] = [] if settings is None else [settings]
    _from_environment.cache_clear()
