"""A context store in one SQLite file, for the benchmarks only: the same kind of store Feast's SQLite
online store is, so the two are compared like for like (store size and kind).

It is :class:`~customer_context.stores.context_store.MemoryContextStore` with its items kept in a SQLite
table (one row per DynamoDB item: ``pk``, ``sk`` and the item as JSON) instead of a dict; every
method the build and fetch call works unchanged, and ``recent`` reads by key range, as DynamoDB's
Query does.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from customer_context.ports import TailOwner
from customer_context.stores.context_store import SUPPRESSION_PARTITIONS, MemoryContextStore, tail_pk


class _Items(MutableMapping[tuple[str, str], dict[str, Any]]):
    """(pk, sk) → item, in a SQLite table; written through as DynamoDB would be (each put committed)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS items (pk TEXT, sk TEXT, item TEXT, PRIMARY KEY (pk, sk))"
                        " WITHOUT ROWID")
        self.lock = threading.Lock()

    def __getitem__(self, key: tuple[str, str]) -> dict[str, Any]:
        row = self.db.execute("SELECT item FROM items WHERE pk = ? AND sk = ?", key).fetchone()
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])  # type: ignore[no-any-return]

    def __setitem__(self, key: tuple[str, str], item: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", (*key, json.dumps(item, default=str)))

    def put_many(self, items: list[dict[str, Any]]) -> None:
        """Many items in one transaction (as a build lands its batches)."""
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                                [(i["pk"], i["sk"], json.dumps(i, default=str)) for i in items])
            self.db.execute("COMMIT")

    def __delitem__(self, key: tuple[str, str]) -> None:
        with self.lock:
            if self.db.execute("DELETE FROM items WHERE pk = ? AND sk = ?", key).rowcount == 0:
                raise KeyError(key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.db.execute("SELECT pk, sk FROM items").fetchall())

    def items(self) -> Any:  # type: ignore[override]
        return [((pk, sk), json.loads(item)) for pk, sk, item in self.db.execute("SELECT pk, sk, item FROM items")]

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])


class SqliteContextStore(MemoryContextStore):
    """The context store interface over a SQLite file at ``path``."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.items = _Items(path)  # type: ignore[assignment]

    def _put(self, items: Any) -> int:
        batch = list(items)
        self.items.put_many(batch)  # type: ignore[attr-defined]
        self.writes += len(batch)
        return len(batch)

    def recent(self, owner: TailOwner, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first, by key range."""
        rows = self.items.db.execute(  # type: ignore[attr-defined]
            "SELECT item FROM items WHERE pk = ? AND sk > ? ORDER BY sk DESC LIMIT ?",
            (tail_pk(owner), after or "", max(limit, 1)))
        return [json.loads(r[0]) for r in rows]

    def deleted_identifiers(self) -> set[str]:
        """Keyed hashes filed by ``suppress_with_delete`` (the suppression partitions only, by key)."""
        marks = ",".join("?" * len(SUPPRESSION_PARTITIONS))
        rows = self.items.db.execute(  # type: ignore[attr-defined]
            f"SELECT item FROM items WHERE pk IN ({marks})", SUPPRESSION_PARTITIONS)  # noqa: S608 - placeholders
        return {i["sk"] for i in (json.loads(r[0]) for r in rows) if i.get("delete")}
