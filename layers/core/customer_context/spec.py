"""The context spec (``context.yaml``): one file declares what is assembled and served.

It declares identifiers (which event fields and record columns identify a customer, how they are
normalised, their priority and per-profile limits), record tables (CRM, billing, support …
drops), traits (each with a description, used by prompt text and tool schemas), scores, and the
snapshot's sections and size budget. Loading validates everything; each error names the path and
the reason, e.g. ``traits.ltv_90d.window: expected a duration like 30d``.

Imports only pydantic and PyYAML (the serving functions read the spec too).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from customer_context.errors import ConfigError
from customer_context.trait_kinds import RECORD_KINDS, TRAIT_KINDS, TraitKindName

DEFAULT_SPEC = Path(__file__).with_name("context.yaml")
# A spec is a few kilobytes; a bound keeps a hostile or broken file from costing minutes and gigabytes.
MAX_SPEC_BYTES = 1 << 20
# Names a record table cannot take: the lakehouse's own tables, and the tables a build creates beside the
# record tables in its DuckDB (a test checks every CREATE of build.py is listed).
RESERVED_TABLE_NAMES = frozenset({
    "events", "rejected_events", "rejected_records", "identity_graph", "identity_rejected_edges",
    "context_snapshots", "profile_state", "score_models", "serving_audit", "build_rows",
    "kept", "copies", "touched", "their_ids", "theirs",
    "events_unique", "events_chunk", "events_sliced", "events_profiled", "event_ids", "event_profile",
    "event_profile_next", "event_consent", "event_slice", "dup_hashes", "alias_edges", "profile_consent", "profiles",
    "profile_identifiers", "traits", "scores", "scores_arrow", "docs", "slice_docs", "prev_state", "prev_ids",
    "slice_fields", "slice_all", "id_map", "recent", "content", "dup_copies", "score_purchases", "score_buyers",
})
# Most traits one spec may declare: a build's traits stage grows faster than linearly past this (measured,
# README "Assembly"), and a document with more values than this is not context an agent can read.
MAX_TRAITS = 1000
# Trait names that would collide with the columns a build keeps beside them
RESERVED_TRAIT_NAMES = frozenset({"profile_id"})
_DURATION = re.compile(r"^(\d+)([hdw])$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(value: str) -> str:
    if value != "all" and not _DURATION.match(str(value)):
        raise ValueError("expected a duration like 30d (h, d or w), or `all`")
    return value


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("expected a lower-case name: letters, digits and _ (max 63), starting with a letter")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Duration = Annotated[str, AfterValidator(_duration)]
Name = Annotated[str, AfterValidator(_name)]
Regex = Annotated[str, AfterValidator(_regex)]
ColumnType = Literal["string", "integer", "double", "boolean", "timestamp", "date"]
Scalar = str | int | float | bool


def duration_seconds(value: str) -> int | None:
    """Seconds in a duration (``None`` for ``all``)."""
    if value == "all":
        return None
    found = _DURATION.match(value)
    assert found, value
    return int(found.group(1)) * _UNITS[found.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NormalizeStep = Literal["trim", "casefold", "digits", "phone"]  # the steps of customer_context.identifiers.STEPS


def _trim_only() -> list[NormalizeStep]:
    return ["trim"]


class IdentifierType(_Model):
    """A kind of identifier (user_id, email, a CRM id …)."""

    description: str = ""
    priority: int = Field(default=100, ge=1, description="Lower is more important (Segment: user_id 1, email 2).")
    limit: int = Field(default=100, ge=1, description="Most identifiers of this type one profile may hold.")
    normalize: list[NormalizeStep] = Field(
        default_factory=_trim_only,
        description="Steps, in order (customer_context.identifiers): trim, casefold (Unicode caseless, for "
        "emails; `lowercase` is read as casefold), digits, phone (E.164).")
    region: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$",
        description="phone: the country (ISO 3166-1 alpha-2, e.g. US) of numbers written without +<country code>; "
        "without it such numbers keep their digits.")
    from_events: list[str] = Field(
        default_factory=list,
        description="Event fields carrying it: userId, anonymousId, traits.<key>, context.traits.<key>, "
        "properties.<key>, or externalIds.<type> (context.externalIds).",
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        from customer_context.identifiers import ALIASES

        if isinstance(data, dict) and isinstance(data.get("normalize"), list):
            data = {**data, "normalize": [ALIASES.get(s, s) if isinstance(s, str) else s for s in data["normalize"]]}
        return data

    @model_validator(mode="after")
    def _paths(self) -> IdentifierType:
        for path in self.from_events:
            if path not in ("userId", "anonymousId") and not re.match(
                r"^(traits|context\.traits|properties|externalIds)\.[A-Za-z0-9_$-]+$", path
            ):
                raise ValueError(f"from_events: unsupported path {path!r}")
        if self.region is not None and "phone" not in self.normalize:
            raise ValueError("region: only used by the phone step (add phone to normalize, or drop region)")
        return self


class IdentifiersSpec(_Model):
    """Identity resolution settings."""

    types: dict[Name, IdentifierType]
    blocked_values: list[Regex] = Field(
        default_factory=lambda: [r"^[0-]*$", r"^-1$", r"^(null|none|nil|undefined|anonymous|unknown)$"])
    max_identifiers_per_profile: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _required(self) -> IdentifiersSpec:
        for needed in ("user_id", "anonymous_id"):
            if needed not in self.types:
                raise ValueError(f"types: `{needed}` must be declared (events carry it)")
        return self


class Interactions(_Model):
    """Marks a record table as customer interactions (tickets, chats, emails) kept in snapshots."""

    text_column: str
    keep: int = Field(default=5, ge=1, le=50, description="Most recent interactions per customer in the snapshot.")
    max_chars: int = Field(default=500, ge=20, description="Text is truncated to this many characters.")


class RecordTable(_Model):
    """A table of operational or enrichment records dropped under ``imports/<name>/``."""

    description: str = Field(min_length=1)
    primary_key: list[str] = Field(min_length=1)
    updated_at: str
    columns: dict[str, ColumnType]
    identifiers: dict[str, str] = Field(description="Identifier type → column holding it.")
    interactions: Interactions | None = None
    pii: dict[str, Literal["keep", "hash", "mask", "drop"]] = Field(
        default_factory=dict, description="Column → PII action, applied before the rows are written.")

    @model_validator(mode="after")
    def _pii_columns(self) -> RecordTable:
        for column, action in self.pii.items():
            if column not in self.columns:
                raise ValueError(f"pii.{column}: no such column")
            if action in ("drop", "mask") and column in (*self.primary_key, self.updated_at):
                raise ValueError(f"pii.{column}: a key or updated_at column can be kept or hashed, not {action}ed")
        return self

    @model_validator(mode="after")
    def _columns_exist(self) -> RecordTable:
        for key in self.primary_key:
            if key not in self.columns:
                raise ValueError(f"primary_key: column {key!r} is not in columns")
        if self.columns.get(self.updated_at) != "timestamp":
            raise ValueError(f"updated_at: column {self.updated_at!r} must be a declared timestamp column")
        for id_type, column in self.identifiers.items():
            if column not in self.columns:
                raise ValueError(f"identifiers.{id_type}: column {column!r} is not in columns")
        if self.interactions and self.interactions.text_column not in self.columns:
            raise ValueError(f"interactions.text_column: {self.interactions.text_column!r} is not in columns")
        return self


class Condition(_Model):
    """A comparison on an event property: exactly one operator."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _one(self) -> Condition:
        if len(self.model_fields_set) != 1:
            raise ValueError("expected exactly one of eq, ne, gt, gte, lt, lte, in")
        return self


class EventFilter(_Model):
    """Which events a trait counts."""

    type: list[Literal["track", "identify", "page", "screen", "group", "alias"]] | None = None
    event: list[str] | None = None
    properties: dict[str, Scalar | Condition] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _listify(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("type", "event"):
                if isinstance(data.get(key), str):
                    data[key] = [data[key]]
        return data


class Trait(_Model):
    """A computed trait. ``table: events`` (default) aggregates events of the profile; a record
    table name aggregates that table's rows of the profile; ``kind: sql`` runs your DuckDB SQL."""

    description: str = Field(min_length=1, description="What the value means; shown to the AI.")
    kind: TraitKindName  # customer_context/trait_kinds.py: what each kind is and where it is allowed
    table: str = "events"
    property: str | None = Field(
        default=None,
        description="events: properties.<key>, traits.<key>, context.<key> or a column (event, name, page_path …); "
        "records: a column.",
    )
    window: Duration = "all"
    where: EventFilter | dict[str, Scalar] | None = Field(default=None, union_mode="left_to_right")
    limit: int = Field(default=10, ge=1, le=100, description="unique_list: most values kept.")
    sql: str | None = Field(
        default=None, description="kind sql: a query over `events_profiled` / `<table>_profiled` returning "
        "profile_id and value.")
    unit: str | None = Field(
        default=None, description="Unit shown with the value (USD, days …). A currency code (three capital letters) "
        "makes sum, avg, min and max add amounts in that currency only (see `currency`).")
    consent: str | None = Field(
        default=None, description="Consent category this trait needs: events sent without it are left out, and "
        "the value is withheld while the customer's latest consent denies it.")

    @model_validator(mode="after")
    def _consistent(self) -> Trait:
        if self.kind == "sql":
            if not self.sql:
                raise ValueError("sql: required when kind is sql")
            return self
        if self.sql:
            raise ValueError("sql: only allowed when kind is sql")
        kind = TRAIT_KINDS[self.kind]
        if kind.needs_property and not self.property:
            raise ValueError(f"property: required for kind {self.kind}")
        if self.table != "events":
            if not kind.on_records:
                raise ValueError(f"kind: {self.kind} is not available on record tables ({', '.join(RECORD_KINDS)})")
            if self.where is not None and not (isinstance(self.where, dict)):
                raise ValueError("where: on a record table, give column: value pairs")
        elif not kind.on_events:
            raise ValueError(f"kind: {self.kind} is not available on events")
        elif isinstance(self.where, dict):
            raise ValueError("where: on events, give type / event / properties")
        return self


class Scores(_Model):
    """Churn risk (1 − P(alive), BG/NBD) and LTV (BG/NBD × Gamma-Gamma) from purchase events."""

    enabled: bool = True
    purchase_event: str = "Order Completed"
    revenue_property: str = "revenue"
    horizon: Duration = "365d"
    min_customers: int = Field(default=30, ge=2, description="Fewer repeat-capable buyers: scores are skipped.")
    refit_every: Duration = Field(
        default="1d", description="Model parameters are refitted at most this often and reused in between, "
        "so a small data change rescores only the customers it touches.")


CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")
# Bounds of a currency rate: beyond them a rate is a typo, and a converted amount could leave the numeric range.
MIN_RATE, MAX_RATE = 1e-9, 1e9


def _currency_code(value: str) -> str:
    if not CURRENCY_CODE.match(value):
        raise ValueError(f"expected a currency code of three capital letters (ISO 4217, e.g. USD), got {value!r}")
    return value


CurrencyCode = Annotated[str, AfterValidator(_currency_code)]


def is_currency(unit: str | None) -> bool:
    """Whether a trait's ``unit`` names a currency (three capital letters, ISO 4217's shape: USD, EUR, JPY)."""
    return unit is not None and CURRENCY_CODE.match(unit) is not None


class Currency(_Model):
    """How amounts in several currencies are added up. A trait whose ``unit`` is a currency code adds amounts
    in that currency only: others are converted through ``rates`` or left out (counted in the build report);
    the scores' revenue is in ``base``."""

    property: str = Field(
        default="properties.currency",
        description="The event field naming an amount's currency (properties.<key>, traits.<key>, context.<key>); "
        "compared trimmed and upper-cased.")
    base: CurrencyCode = Field(default="USD", description="The currency rates are given in, and the scores' one.")
    rates: dict[CurrencyCode, float] = Field(
        default_factory=dict, description="Currency → the value of one unit of it in `base` (EUR: 1.08 when one euro "
        "is 1.08 US dollars). Amounts in a currency not listed here (nor `base`) convert to nothing.")
    missing: Literal["assume", "exclude"] = Field(
        default="assume", description="An amount whose event names no currency: `assume` it is in the unit being "
        "added up (the trait's unit; the scores' base), or `exclude` it (counted in the build report).")

    @model_validator(mode="after")
    def _checked(self) -> Currency:
        if not re.match(r"^(properties|traits|context)(\.[A-Za-z0-9_$-]+)+$", self.property):
            raise ValueError("property: expected properties.<key>, traits.<key> or context.<key>, "
                             f"got {self.property!r}")
        for code, rate in self.rates.items():
            if not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
                raise ValueError(f"rates.{code}: expected a number between {MIN_RATE:g} and {MAX_RATE:g}, got {rate!r}")
        if self.rates.get(self.base, 1.0) != 1.0:
            raise ValueError(f"rates.{self.base}: the base currency's rate is 1")
        return self

    def factors(self, unit: str) -> dict[str, float]:
        """Currency → what one unit of it is worth in ``unit`` (``unit`` itself: 1; none but that when ``unit``
        has no rate)."""
        table = {self.base: 1.0, **self.rates}
        if unit not in table:
            return {unit: 1.0}
        return {code: 1.0 if code == unit else rate / table[unit] for code, rate in table.items()}


class EventTimes(_Model):
    """Which event times are trusted. An event dated more than ``future_margin`` after it was received, or before
    ``earliest``, is flagged: its time is taken to be when it was received (windows, first and last times, recent
    events), the build report counts it, and a customer with a flagged purchase is left out of the score fits."""

    future_margin: Duration = Field(
        default="1h", description="How far after its receipt an event may be dated (clock skew is already corrected "
        "by collect when the SDK sends sentAt).")
    earliest: date = Field(
        default=date(2000, 1, 1), description="Events dated before this day (UTC) are flagged: 1970-01-01 and "
        "0001-01-01 are clocks that were never set. Lower it before importing older history (/v1/import).")

    @model_validator(mode="after")
    def _bounded(self) -> EventTimes:
        if self.future_margin == "all":
            raise ValueError("future_margin: expected a duration like 1h (h, d or w)")
        return self


class RecentEvents(_Model):
    """The tail of raw events kept in each snapshot."""

    limit: int = Field(default=20, ge=0, le=200, description="Most recent events a snapshot shows; 0 turns the "
                       "section and collect's live tail off.")
    types: list[str] = Field(default_factory=lambda: ["track", "page", "screen"], description="Event types shown; "
                             "collect also writes each accepted event of these types to the live tail, one "
                             "DynamoDB write a tail item (the largest cost per event: `customer-context cost`).")
    max_chars: int = Field(default=300, ge=50, description="Each event's properties JSON is cut to this length "
                           "(a live-tail item under 1 KB is one write unit).")


class Section(_Model):
    """A part of the snapshot, in priority order."""

    name: Literal["profile", "traits", "scores", "records", "interactions", "recent_events"]
    description: str = Field(min_length=1)
    consent: str | None = Field(default=None, description="Consent category the whole section needs.")


class SnapshotSpec(_Model):
    """The per-profile document."""

    max_bytes: int = Field(default=350_000, ge=1000, le=390_000, description="Below DynamoDB's 400 KB item limit.")
    clock_resolution: Duration = Field(
        default="1h", description="Windows and scores are relative to the newest event's time rounded down to "
        "this: customers whose data did not change keep the same snapshot until the clock moves a step.")
    recent_events: RecentEvents = Field(default_factory=RecentEvents)
    sections: list[Section]


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_WRITE_WORDS = re.compile(r"\b(insert|update|delete|drop|create|alter|attach|detach|copy|export|import|install|load|"
                          r"pragma|set|call|checkpoint|vacuum)\b", re.IGNORECASE)
_PARAM_DURATION = re.compile(r"^(\d+)([smhdw])$")
_PARAM_UNITS = {"s": 1, "m": 60, **_UNITS}
# JSON Schema of each parameter type, as LLM tool definitions show it
PARAM_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
                    "timestamp": "string", "duration": "string"}


class QueryParam(_Model):
    """One parameter of a named query, bound (never interpolated) when the query runs.

    Types: ``string``, ``integer``, ``number``, ``boolean``, ``timestamp`` (ISO-8601; UTC when no
    offset is given) and ``duration`` (``90s``, ``15m``, ``12h``, ``30d``, ``2w``; bound as an INTERVAL).
    """

    type: Literal["string", "integer", "number", "boolean", "timestamp", "duration"] = "string"
    description: str = ""
    required: bool = False
    default: Scalar | None = None
    minimum: float | None = Field(default=None, description="Smallest value (integer and number parameters).")
    maximum: float | None = Field(default=None, description="Largest value (integer and number parameters).")

    @model_validator(mode="after")
    def _default_fits(self) -> QueryParam:
        if (self.minimum is not None or self.maximum is not None) and self.type not in ("integer", "number"):
            raise ValueError("minimum / maximum: only integer and number parameters have bounds")
        if self.default is None:
            return self
        if self.required:
            raise ValueError("default: a required parameter has no default (drop one of them)")
        try:
            self.coerce(self.default)
        except ValueError as exc:
            raise ValueError(f"default: {exc}") from None
        return self

    def coerce(self, value: Any) -> Any:
        """``value`` (as JSON gives it) as the Python value bound to DuckDB.

        Raises:
            ValueError: it does not fit the type; the message says what was expected.
        """
        if value is None:
            return None
        kind = self.type
        if kind == "string":
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
        if kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"expected {'an integer' if kind == 'integer' else 'a number'}, got {value!r}")
            try:
                number = float(value) if isinstance(value, str) else value
            except ValueError:
                raise ValueError(f"expected {'an integer' if kind == 'integer' else 'a number'}, got {value!r}") \
                    from None
            if not math.isfinite(number):
                raise ValueError(f"expected a finite number, got {value!r}")
            if kind == "integer" and int(number) != number:
                raise ValueError(f"expected an integer, got {value!r}")
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"expected at least {self.minimum:g}, got {value!r}")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"expected at most {self.maximum:g}, got {value!r}")
            return int(number) if kind == "integer" else float(number)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if kind == "duration":
            found = _PARAM_DURATION.match(value) if isinstance(value, str) else None
            if not found:
                raise ValueError(f"expected a duration like 30d (s, m, h, d or w), got {value!r}")
            return timedelta(seconds=int(found.group(1)) * _PARAM_UNITS[found.group(2)])
        if not isinstance(value, str):
            raise ValueError(f"expected an ISO-8601 date-time, got {value!r}")
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO-8601 date-time, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def json_schema(self) -> dict[str, Any]:
        """The parameter as JSON Schema (for LLM tool definitions)."""
        schema: dict[str, Any] = {"type": PARAM_JSON_TYPES[self.type]}
        if self.type == "timestamp":
            schema["format"] = "date-time"
        elif self.type == "duration":
            schema["pattern"] = _PARAM_DURATION.pattern
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.description:
            schema["description"] = self.description
        if self.default is not None:
            schema["default"] = self.default
        return schema


class NamedQuery(_Model):
    """A parameterised query agents may run over one customer's rows (``POST …/queries/<name>``).

    The SQL is one DuckDB SELECT over views already restricted to the customer: ``events``
    (deduplicated) and the record tables. Parameters are written ``$name`` and bound, never pasted in.
    """

    description: str = Field(min_length=1, description="What it answers; shown to the AI as the tool's description.")
    sql: str = Field(
        min_length=1,
        description="One DuckDB SELECT over the views `events` and the record tables, already restricted to the "
        "customer; parameters as `$name`.",
    )
    params: dict[Name, QueryParam] = Field(default_factory=dict)
    tables: list[str] | None = Field(
        default=None, description="The tables it reads (events and/or record tables); default: those its SQL names. "
        "Only these are scanned and visible to the query.")
    max_rows: int | None = Field(default=None, ge=1, le=10_000, description="Below the global row budget.")
    reveals: list[str] | None = Field(
        default=None, description="What its answer reveals, as snapshot sections or field paths (`recent_events`, "
        "`interactions`, `records.crm_contacts` …): a consumer key runs it only if its scope covers all of them. "
        "Default: every section (only keys allowed everything run it).")
    consent: str | None = Field(
        default=None, description="Consent category the query needs: its `events` view holds only events sent with "
        "that consent, and it answers no rows (`withheld` names the category) while the customer's latest consent "
        "denies it. The customer's events are read to learn it, even if the SQL reads only record tables.")

    @model_validator(mode="after")
    def _checked(self) -> NamedQuery:
        text = self.sql.strip().rstrip(";")
        bare = _STRING_LITERAL.sub("''", text)
        if ";" in bare:
            raise ValueError("sql: one statement only (no `;` inside)")
        if not re.match(r"^(select|with|from)\b", text, re.IGNORECASE):
            raise ValueError("sql: must be a SELECT (or WITH … SELECT)")
        bad = _WRITE_WORDS.search(bare)
        if bad:
            raise ValueError(f"sql: {bad.group(1)!r} is not allowed in a named query (read-only SELECT)")
        used = set(_PARAM.findall(bare))
        undeclared = sorted(used - set(self.params))
        if undeclared:
            raise ValueError(f"sql: ${undeclared[0]} is used but not declared under params")
        unused = sorted(set(self.params) - used)
        if unused:
            raise ValueError(f"params.{unused[0]}: declared but not used in sql")
        return self


class PiiRule(_Model):
    """What happens to one event field before anything is queued or written."""

    path: str = Field(description="properties.<key>, traits.<key> (also context.traits.<key>) or context.<a>.<b>")
    action: Literal["keep", "hash", "mask", "drop"]

    @model_validator(mode="after")
    def _path(self) -> PiiRule:
        root = self.path.split(".", 1)[0]
        if root not in ("properties", "traits", "context") or "." not in self.path:
            raise ValueError(f"path: expected properties.<key>, traits.<key> or context.<key>, got {self.path!r}")
        return self


ViolationAction = Literal["reject", "flag"]


class PlannedEvent(_Model):
    """One planned track event."""

    description: str = ""
    properties: dict[str, Any] | None = Field(default=None, description="JSON Schema of `properties`.")


class TrackingPlan(_Model):
    """What one source may send (keyed by its source id in ``tracking_plans``)."""

    description: str = ""
    allow_unplanned_events: bool = Field(default=True, description="Track events not listed under `events`.")
    on_violation: dict[Literal["unplanned_event", "invalid_properties", "invalid_traits"], ViolationAction] = Field(
        default_factory=dict,
        description="Per violation kind: `reject` (to rejected_events with the schema error) or `flag` "
        "(accepted, the errors kept in `context.violationErrors`); default reject.",
    )
    events: dict[str, PlannedEvent] = Field(default_factory=dict)
    identify_traits: dict[str, Any] | None = Field(default=None, description="JSON Schema of identify `traits`.")

    @model_validator(mode="after")
    def _schemas_compile(self) -> TrackingPlan:
        import fastjsonschema

        schemas = [(f"events.{n}.properties", e.properties) for n, e in self.events.items()]
        schemas.append(("identify_traits", self.identify_traits))
        for path, schema in schemas:
            if schema is not None:
                try:
                    fastjsonschema.compile(schema)
                except fastjsonschema.JsonSchemaDefinitionException as exc:
                    raise ValueError(f"{path}: not a valid JSON Schema: {exc}") from None
        return self


class ConsentCategory(_Model):
    """One consent category and how consent managers name it in events."""

    description: str = ""
    ids: list[str] = Field(
        min_length=1,
        description="Its names in events: RudderStack `context.consentManagement.allowed/deniedConsentIds`, "
        "Segment `context.consent.categoryPreferences` keys.",
    )
    default: Literal["granted", "denied"] = Field(
        default="granted", description="When an event (or a customer) says nothing about this category.")


class ContextSpec(_Model):
    """The whole spec."""

    version: Literal[1]
    identifiers: IdentifiersSpec
    record_tables: dict[Name, RecordTable] = Field(default_factory=dict)
    traits: dict[Name, Trait] = Field(default_factory=dict)
    scores: Scores = Field(default_factory=Scores)
    snapshot: SnapshotSpec
    queries: dict[Name, NamedQuery] = Field(default_factory=dict)
    tracking_plans: dict[str, TrackingPlan] = Field(default_factory=dict)
    pii: list[PiiRule] = Field(default_factory=list)
    consent: dict[Name, ConsentCategory] = Field(default_factory=dict)
    currency: Currency = Field(default_factory=Currency)
    event_times: EventTimes = Field(default_factory=EventTimes)

    @model_validator(mode="after")
    def _consent_declared(self) -> ContextSpec:
        needs = [(f"traits.{n}.consent", t.consent) for n, t in self.traits.items()]
        needs += [(f"snapshot.sections.{s.name}.consent", s.consent) for s in self.snapshot.sections]
        needs += [(f"queries.{n}.consent", q.consent) for n, q in self.queries.items()]
        for path, category in needs:
            if category is not None and category not in self.consent:
                raise ValueError(f"{path}: consent category {category!r} is not declared under consent "
                                 f"(declared: {', '.join(self.consent) or 'none'})")
        for name, trait in self.traits.items():
            if trait.consent and (trait.kind == "sql" or trait.table != "events"):
                raise ValueError(f"traits.{name}.consent: only traits over events can be consent-gated")
        return self

    @model_validator(mode="after")
    def _query_tables(self) -> ContextSpec:
        from customer_context.serve.catalog import catalog

        known = ["events", *self.record_tables]
        cat = catalog(self)
        for name, query in self.queries.items():
            for table in query.tables or ():
                if table not in known:
                    raise ValueError(f"queries.{name}.tables: no table {table!r} (declared: {', '.join(known)})")
            if query.reveals is not None and not query.reveals:
                raise ValueError(f"queries.{name}.reveals: name at least one section or field (or leave it out: "
                                 "every section)")
            for path in query.reveals or ():
                if path not in cat.sections and path not in cat.fields:
                    raise ValueError(f"queries.{name}.reveals: {path!r} is no section or field of the snapshot "
                                     f"(sections: {', '.join(cat.sections)})")
        return self

    @model_validator(mode="after")
    def _not_too_many(self) -> ContextSpec:
        if len(self.traits) > MAX_TRAITS:
            raise ValueError(f"traits: {len(self.traits):,} declared; at most {MAX_TRAITS:,} (a build's cost grows "
                             "faster than linearly past that, see the README)")
        return self

    @model_validator(mode="after")
    def _reserved_names(self) -> ContextSpec:
        for name in self.record_tables:
            if (name in RESERVED_TABLE_NAMES or re.match(r"^events_s\d+$", name)
                    or name.endswith(("_profiled", "_arrow", "__ids"))):
                raise ValueError(f"record_tables.{name}: the name is taken by the engine's own tables; choose "
                                 "another (reserved: events, the lakehouse's tables and the build's working tables)")
        for name in self.traits:
            if name in RESERVED_TRAIT_NAMES or re.match(r"^traits_[gs]\d+$", name):
                raise ValueError(f"traits.{name}: the name is reserved (a snapshot's own field); choose another")
        return self

    @model_validator(mode="after")
    def _references(self) -> ContextSpec:
        for table_name, table in self.record_tables.items():
            for id_type in table.identifiers:
                if id_type not in self.identifiers.types:
                    raise ValueError(f"record_tables.{table_name}.identifiers: type {id_type!r} is not declared "
                                     "under identifiers.types")
        for trait_name, trait in self.traits.items():
            if trait.kind != "sql" and trait.table != "events":
                source = self.record_tables.get(trait.table)
                if source is None:
                    raise ValueError(f"traits.{trait_name}.table: no record table {trait.table!r} "
                                     f"(declared: events, {', '.join(self.record_tables) or 'none'})")
                if trait.property and trait.property not in source.columns:
                    raise ValueError(f"traits.{trait_name}.property: {trait.table} has no column {trait.property!r}")
                for column in trait.where or {}:
                    if column not in source.columns:
                        raise ValueError(f"traits.{trait_name}.where: {trait.table} has no column {column!r}")
        return self

    def window_delta(self, trait: Trait) -> timedelta | None:
        """The trait's window as a timedelta (``None``: all time)."""
        seconds = duration_seconds(trait.window)
        return None if seconds is None else timedelta(seconds=seconds)


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "tagged-union")))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def _yaml_loader(origin: str) -> Any:
    """A safe YAML loader that refuses aliases (``*name``: the "billion laughs" expansion bomb, and merge
    keys) and duplicate keys (which YAML would let silently win), each named with its line."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{origin}: line {mark.line + 1}: YAML aliases (*name) are not allowed in a "
                                  "context spec; write the value out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, list | dict):
                    raise ConfigError(f"{origin}: line {line}: a mapping key must be a plain value")
                if key in seen:
                    raise ConfigError(f"{origin}: line {line}: duplicate key {key!r} (first at line {seen[key]}); "
                                      "YAML would silently keep only the last")
                seen[key] = line
            return super().construct_mapping(node, deep)

    return SpecLoader


def parse_spec(text: str, origin: str = "context.yaml") -> ContextSpec:
    """Parse and validate spec text.

    Raises:
        ConfigError: YAML syntax or validation errors; each line names the path and the reason.
    """
    import yaml

    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_SPEC_BYTES:,} bytes; a context spec is a few kilobytes")
    try:
        data = yaml.load(text, Loader=_yaml_loader(origin))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    try:
        return ContextSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: invalid spec:\n{_format(exc)}") from None


@lru_cache(maxsize=8)
def load_spec(path: str | None = None) -> ContextSpec:
    """Load the spec from ``path``, ``CUSTOMER_CONTEXT_SPEC_PATH`` or the packaged default (cached)."""
    from customer_context.config import get_settings

    chosen = Path(path or get_settings().spec_path or DEFAULT_SPEC)
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the context spec at {chosen}: {exc.strerror}") from None
    return parse_spec(text, str(chosen))
