"""The serving store (DynamoDB): context snapshots, identifier aliases, behind a small interface.

Item layout in one table (``pk``, ``sk`` strings):

* snapshot: ``pk = profile#<profile_id>``, ``sk = snapshot`` — ``doc`` (the JSON document),
  ``content_hash``, ``version``, ``built_at``, ``data_as_of``;
* alias: ``pk = id#<type>#<value>``, ``sk = alias`` — ``profile_id``; one per known identifier,
  so any identifier resolves to its profile with one GetItem.

Writes go through boto3's ``batch_writer`` (25 items per BatchWriteItem, unprocessed items resent
by boto3, throttling retried by botocore's standard retry mode).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

SNAPSHOT_SK = "snapshot"
ALIAS_SK = "alias"


def snapshot_key(profile_id: str) -> dict[str, str]:
    """Primary key of a profile's snapshot item."""
    return {"pk": f"profile#{profile_id}", "sk": SNAPSHOT_SK}


def alias_key(id_type: str, id_value: str) -> dict[str, str]:
    """Primary key of an identifier's alias item."""
    return {"pk": f"id#{id_type}#{id_value}", "sk": ALIAS_SK}


@dataclass(frozen=True)
class SnapshotItem:
    """One profile's snapshot as landed."""

    profile_id: str
    doc: str
    content_hash: str
    version: int
    built_at: str
    data_as_of: str | None

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item."""
        item: dict[str, Any] = {**snapshot_key(self.profile_id), "profile_id": self.profile_id, "doc": self.doc,
                                "content_hash": self.content_hash, "version": self.version, "built_at": self.built_at}
        if self.data_as_of:
            item["data_as_of"] = self.data_as_of
        return item


class ContextStore(Protocol):
    """Where snapshots and aliases are served from."""

    def put_snapshots(self, items: Iterable[SnapshotItem]) -> int:
        """Write snapshot items; returns how many."""

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]]) -> int:
        """Write ``(type, value, profile_id)`` alias items; returns how many."""

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """Delete snapshot items; returns how many."""

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """Delete alias items; returns how many."""

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:
        """A snapshot item, or ``None``."""

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """The profile id of an identifier, or ``None``."""


class DynamoContextStore:
    """DynamoDB implementation over one table (boto3 resource API)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def _write(self, puts: Iterable[dict[str, Any]] = (), deletes: Iterable[dict[str, str]] = ()) -> int:
        n = 0
        with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
            for item in puts:
                batch.put_item(Item=item)
                n += 1
            for key in deletes:
                batch.delete_item(Key=key)
                n += 1
        return n

    def put_snapshots(self, items: Iterable[SnapshotItem]) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=(i.to_item() for i in items))

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]]) -> int:
        """BatchWriteItem puts."""
        return self._write(puts=({**alias_key(t, v), "profile_id": p} for t, v, p in aliases))

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """BatchWriteItem deletes."""
        return self._write(deletes=(snapshot_key(p) for p in profile_ids))

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """BatchWriteItem deletes."""
        return self._write(deletes=(alias_key(t, v) for t, v in identifiers))

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:
        """GetItem."""
        return self.table.get_item(Key=snapshot_key(profile_id)).get("Item")

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """GetItem on the alias."""
        item = self.table.get_item(Key=alias_key(id_type, id_value)).get("Item")
        return str(item["profile_id"]) if item else None


class MemoryContextStore:
    """In-memory store for unit tests; counts every item written or deleted."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0

    def _key(self, key: dict[str, str]) -> tuple[str, str]:
        return key["pk"], key["sk"]

    def put_snapshots(self, items: Iterable[SnapshotItem]) -> int:
        """Keep the items."""
        n = 0
        for item in items:
            data = item.to_item()
            self.items[self._key(data)] = data
            n += 1
        self.writes += n
        return n

    def put_aliases(self, aliases: Iterable[tuple[str, str, str]]) -> int:
        """Keep the items."""
        n = 0
        for t, v, p in aliases:
            key = alias_key(t, v)
            self.items[self._key(key)] = {**key, "profile_id": p}
            n += 1
        self.writes += n
        return n

    def delete_snapshots(self, profile_ids: Iterable[str]) -> int:
        """Drop the items."""
        n = 0
        for p in profile_ids:
            self.items.pop(self._key(snapshot_key(p)), None)
            n += 1
        self.writes += n
        return n

    def delete_aliases(self, identifiers: Iterable[tuple[str, str]]) -> int:
        """Drop the items."""
        n = 0
        for t, v in identifiers:
            self.items.pop(self._key(alias_key(t, v)), None)
            n += 1
        self.writes += n
        return n

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:
        """The item, or None."""
        return self.items.get(self._key(snapshot_key(profile_id)))

    def resolve(self, id_type: str, id_value: str) -> str | None:
        """The profile id, or None."""
        item = self.items.get(self._key(alias_key(id_type, id_value)))
        return item["profile_id"] if item else None
