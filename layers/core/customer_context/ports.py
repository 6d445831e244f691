"""The ports: what the domain packages (collect, assemble, serve, govern) need from storage, as small role
protocols, and the plain values that cross them.

The domain is typed against these; the storage classes in ``customer_context.stores`` implement them
(:class:`~customer_context.stores.context_store.DynamoContextStore` and
:class:`~customer_context.stores.context_store.MemoryContextStore` implement every context-store role, the
same behaviour checked against both by ``tests/integration/test_store_parity.py``), and
:mod:`customer_context.wiring` picks which. How a store lays its items out (keys, partitions) stays inside the
store: a live tail is named by its owner (a profile id, or an identifier not yet in any profile), never by
a key.

This module imports nothing at run time beyond the standard library: the collect and fetch functions
import it on their cold start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# JSON objects as stored and served (snapshot items, consumer and regulation documents, tail rows)
JsonObject = dict[str, Any]
# A JSON value as parsed: object, array, string, number, boolean or null
JsonValue = Any
# A table row as pyarrow reads (to_pylist) and writes (from_pylist) it: column name → value
Row = dict[str, Any]

# Keys of a snapshot document that are build bookkeeping, not context.
BOOKKEEPING_KEYS = ("built_at", "data_as_of", "profile_id")
# Sections whose fields change one by one (``traits.plan``); the others (lists) change as a whole.
FIELD_SECTIONS = ("profile", "traits", "scores", "records")

# who a live tail belongs to: a profile id, or an (identifier type, value) not yet in any profile
TailOwner = str | tuple[str, str]


@dataclass(frozen=True)
class SnapshotItem:
    """One profile's snapshot as landed."""

    profile_id: str
    doc: str
    content_hash: str
    version: int
    built_at: str
    data_as_of: str | None
    changed_at: str | None = None  # JSON: field path → when its value last changed


@dataclass(frozen=True)
class RecentEvent:
    """One event in a live tail."""

    owner: TailOwner
    received_at: str
    message_id: str
    event: str  # compact JSON: type, event, name, timestamp, page_path, properties
    expires_at: int


@dataclass(frozen=True)
class Refused:
    """A snapshot or alias the store cannot hold: left out of the landing, reported by the build (never the
    identifier's value, which may be personal data)."""

    kind: str  # "snapshot" or "alias"
    profile_id: str
    reason: str
    identifier_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class SnapshotStore(Protocol):
    """Served snapshots: written by the build, read by fetch."""

    def put_snapshots(self, items: Iterable[SnapshotItem], refused: list[Refused] | None = None) -> int:
        """Write snapshot items; returns how many. Items the store cannot hold go to ``refused`` (without
        a list, the first one raises)."""

    def get_snapshot(self, profile_id: str) -> JsonObject | None:
        """The stored item of one profile, or ``None``."""

    def get_snapshots(self, profile_ids: Iterable[str]) -> dict[str, JsonObject]:
        """The stored items of the profiles that have one."""

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """Delete snapshots; returns how many deletes were sent."""


class AliasResolution(Protocol):
    """Identifier → profile id."""

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]], refused: list[Refused] | None = None) -> int:
        """Write ``(id_type, id_value, profile_id)`` aliases; returns how many."""

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """The profile id of an identifier, or ``None``."""

    def resolve_many(self, identifiers: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The profile ids of the identifiers that resolve."""

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """Delete aliases; returns how many deletes were sent."""


class RecentTailStore(Protocol):
    """Live tails: what collect accepted since the last build, per owner."""

    def put_recent(self, events: Iterable[RecentEvent]) -> int:
        """Write tail events; returns how many."""

    def recent(self, owner: TailOwner, after: str | None, limit: int) -> list[JsonObject]:
        """One owner's tail, newest first: rows with ``sk`` (``<receivedAt>#<messageId>``), ``event`` (the
        compact JSON) and ``expires_at``; only those with ``sk`` after ``after`` when given."""


class ConsumerKeys(Protocol):
    """Consumer keys, by the hash of the key (the key itself is never stored)."""

    def put_consumer(self, key_hash: str, attributes: JsonObject) -> None:
        """Create or replace a consumer."""

    def get_consumer(self, key_hash: str) -> JsonObject | None:
        """A consumer's attributes, or ``None``."""

    def list_consumers(self) -> list[JsonObject]:
        """Every consumer."""

    def delete_consumer(self, key_hash: str) -> None:
        """Delete a consumer."""


class SuppressionStore(Protocol):
    """Suppressed identifiers, by keyed hash."""

    def put_suppressions(self, digests: Iterable[str], regulation_id: str, delete: bool = False) -> int:
        """File suppressions; returns how many."""

    def suppressed(self, digests: Iterable[str], legacy: Iterable[str] = ()) -> set[str]:
        """The digests (and legacy unkeyed digests) that are suppressed."""

    def deleted_identifiers(self) -> set[str]:
        """Digests of the identifiers a ``suppress_with_delete`` regulation filed."""

    def note_suppression(self, at: str) -> None:
        """Record when identifiers were last suppressed."""

    def last_suppression(self) -> str | None:
        """When identifiers were last suppressed."""


class RegulationStore(Protocol):
    """Regulation documents and the fence a deletion job holds."""

    def put_regulation(self, regulation: JsonObject) -> None:
        """Create or replace a regulation."""

    def get_regulation(self, regulation_id: str) -> JsonObject | None:
        """A regulation, or ``None``."""

    def acquire_fence(self, owner: str, lease_seconds: float) -> bool:
        """Take the landing fence (or renew it); whether it is held now."""

    def release_fence(self, owner: str) -> None:
        """Release the landing fence if ``owner`` holds it."""

    def deletion_generation(self) -> int:
        """How many deletion jobs have finished."""

    def bump_deletion_generation(self) -> int:
        """Count one more finished deletion job; returns the new generation."""

    def delete_customer(self, profile_ids: Iterable[str], identifiers: Iterable[tuple[str, str]]) -> int:
        """Delete a customer's snapshots, aliases and live tails; returns how many items."""


class Landing(Protocol):
    """What the build needs to tell a store that lost items: the marker of the last complete landing."""

    def get_landing_marker(self) -> str | None:
        """The generation whose landing completed last."""

    def put_landing_marker(self, generation: str) -> None:
        """Record that a landing completed."""

    def missing(self, snapshots: dict[str, str], aliases: list[tuple[str, str, str]]) -> str | None:
        """What the store lacks of a landing (snapshot content hashes, aliases), or ``None``."""


class ServingStore(SnapshotStore, AliasResolution, RecentTailStore, Protocol):
    """What fetch reads: snapshots, identifiers, live tails."""


class ContextStore(SnapshotStore, AliasResolution, RecentTailStore, ConsumerKeys, SuppressionStore, RegulationStore,
                   Landing, Protocol):
    """Every role of the serving store together: what a landing or a deletion job, which touch all of
    them, needs. Services that need one role are typed by that role."""


class BlobStore(Protocol):
    """Put and get whole objects by key."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""

    def get(self, key: str) -> bytes:
        """Return the object under ``key``."""

    def keys(self, prefix: str) -> list[str]:
        """The keys of every object under ``prefix``."""

    def delete(self, key: str) -> None:
        """Delete the object under ``key`` (nothing if absent)."""


class EventQueue(Protocol):
    """Where collect hands accepted and rejected events."""

    def send(self, bodies: list[str]) -> None:
        """Enqueue every body or raise :class:`~customer_context.errors.QueueUnavailable`."""


class WriteKeyStore(Protocol):
    """Maps a write key to its source id."""

    def source_for(self, write_key: str) -> str | None:
        """The source id of ``write_key``, or ``None`` when the key is unknown."""


class IdentifierLookup(Protocol):
    """An identifier as stored and looked up (serve's ``ContextService``, called by regulations)."""

    def identifier(self, id_type: str, id_value: str) -> tuple[str, str]:
        """``(type, value)`` normalised, and hashed where the PII policy hashes."""


class TailRecorder(Protocol):
    """Files accepted events in the live tail (serve's ``RecentTail``, called by collect)."""

    def record(self, events: Iterable[JsonObject]) -> int:
        """File events; returns the items written."""


# for a message's events, whether each is kept
EventVerdicts = Callable[[list[Any]], list[bool]]


class SuppressionCheck(Protocol):
    """Whether events carry a suppressed identifier (govern's ``Suppressions``, called by collect and ingest)."""

    def apply(self, events: list[Any]) -> list[bool]:
        """For each event: whether it is kept; kept events lose the suppressed values they carry (in place)."""

    def queued_before(self) -> EventVerdicts:
        """For ingest: the verdict of :meth:`apply` for events received before the latest suppression."""


class Lakehouse(Protocol):
    """The Iceberg tables of one namespace (:class:`customer_context.stores.iceberg.Lakehouse`)."""

    catalog: Catalog
    namespace: str

    def define(self, definition: Any) -> None:
        """Register a table definition (created on first write)."""

    def table(self, name: str) -> Table:
        """The loaded table."""

    def arrow_schema(self, name: str) -> pa.Schema:
        """The table's schema as Arrow."""

    def add_missing_columns(self, name: str) -> list[str]:
        """Add the defined columns the table lacks; returns their names."""

    def columns(self, name: str) -> list[str]:
        """The table's column names."""

    def append(self, name: str, data: pa.Table, properties: dict[str, str] | None = None) -> int:
        """Append rows in one commit; returns the attempts it took."""

    def overwrite(self, name: str, data: pa.Table, properties: dict[str, str] | None = None) -> None:
        """Replace the table's rows in one commit."""

    def update(self, name: str, operation: Callable[[Table], Any]) -> Any:
        """Run ``operation`` on the table as one commit (retried on conflict); returns its result."""

    def exists(self, name: str) -> bool:
        """Whether the table exists."""

    def table_names(self) -> list[str]:
        """Names of the tables in the namespace."""

    def scan(self, name: str, **kwargs: Any) -> pa.Table:
        """Read the table (pyiceberg scan arguments)."""
