"""The lakehouse: Iceberg tables through a pyiceberg catalog (SQLite locally, Glue or REST on AWS).

All Iceberg I/O goes through :class:`Lakehouse`. Appends retry commit conflicts (refresh the table
and append again, with exponential backoff and jitter), so concurrent writers never lose a batch;
data files written by a failed attempt stay orphaned until maintenance removes them.

Writers keep their table objects between commits (a warm ingest container commits many batches).
Those hold the metadata of the snapshot they last saw; once maintenance has expired that snapshot and
deleted its manifest list, a commit on top of it fails with a missing file. Such a commit is retried
on freshly loaded metadata, like a conflict. Readers always load the current metadata
(:meth:`Lakehouse.table`), so a long-lived reader never serves an old snapshot.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

from customer_context.errors import CommitFailed
from customer_context.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from customer_context.config import Settings


def _is_conflict(exc: Exception) -> bool:
    """Commit conflicts, and SQLite's lock errors when two local processes commit at once."""
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(exc, CommitFailedException):
        return True
    if type(exc).__name__ == "ValidationException" and "found matching the filter" in str(exc):
        return True  # an overwrite met rows committed meanwhile in its range: read again and redo
    text = str(exc).lower()
    if isinstance(exc, ValueError) and "older than last sequence number" in text:
        return True  # our metadata went stale under a concurrent commit: reload and redo
    return type(exc).__name__ == "OperationalError" and ("locked" in text or "busy" in text)


def _is_stale(exc: Exception) -> bool:
    """A file of the metadata we hold is gone: maintenance expired the snapshot it belongs to and deleted
    its files since we loaded it (pyarrow says so as FileNotFoundError locally, as an OSError on S3)."""
    if isinstance(exc, FileNotFoundError):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and ("does not exist" in text or "NoSuchKey" in text or "Not Found" in text)


class Lakehouse:
    """The Iceberg tables of one namespace.

    Args:
        catalog: A pyiceberg catalog.
        namespace: The namespace (Glue database) holding the tables.
        commit_retries: Retries of a conflicting commit before :class:`CommitFailed` is raised.
    """

    def __init__(self, catalog: Catalog, namespace: str, commit_retries: int = 10) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.commit_retries = commit_retries
        self._tables: dict[str, Table] = {}
        self._namespace_ready = False
        self._definitions: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Lakehouse:
        """Build the catalog named by the settings."""
        from pyiceberg.catalog import load_catalog

        config = settings.catalog_config()
        try:
            catalog = load_catalog(settings.catalog_name, **config)
        except Exception as exc:
            # Two functions opening a new SQL catalog at once both create its tables: the one that loses gets
            # "table iceberg_tables already exists" while the tables are there. Open it again.
            if "already exists" not in str(exc):
                raise
            catalog = load_catalog(settings.catalog_name, **config)
        return cls(catalog, settings.namespace, settings.commit_retries)

    def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        from pyiceberg.exceptions import NamespaceAlreadyExistsError

        with contextlib.suppress(NamespaceAlreadyExistsError):  # another writer created it first
            self.catalog.create_namespace(self.namespace)
        self._namespace_ready = True

    def define(self, definition: Any) -> None:
        """Declare a table not in the fixed list (record tables come from the spec)."""
        self._definitions[definition.name] = definition

    def _definition(self, name: str) -> Any:
        from customer_context.stores.tables import TABLES

        if name in self._definitions:
            return self._definitions[name]
        return TABLES[name]

    def table(self, name: str) -> Table:
        """A declared table with its current metadata (read from the catalog now), created (schema,
        partitioning) on first use."""
        if name in self._tables:
            return self._tables[name].refresh()
        return self._writable(name)

    def _writable(self, name: str) -> Table:
        """The table as this writer last saw it (loaded or created on first use): commits start from it
        and reload it only when it turns out stale (see the module docstring)."""
        if name in self._tables:
            return self._tables[name]
        from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

        identifier = (self.namespace, name)
        try:
            table = self.catalog.load_table(identifier)
        except NoSuchTableError:
            definition = self._definition(name)
            self._ensure_namespace()
            try:
                table = self.catalog.create_table(
                    identifier,
                    schema=definition.schema,
                    partition_spec=definition.partition_spec,
                    properties={"comment": definition.doc, "write.parquet.compression-codec": "zstd"},
                )
            except TableAlreadyExistsError:  # another writer created it first
                table = self.catalog.load_table(identifier)
        self._tables[name] = table
        return table

    def arrow_schema(self, name: str) -> pa.Schema:
        """The Arrow schema rows must have to be appended to ``name``."""
        return self._definition(name).schema.as_arrow()

    def add_missing_columns(self, name: str) -> list[str]:
        """Add the optional columns the declared schema has and the table (made by an earlier release) lacks;
        returns their names. Nothing is committed when none is missing."""
        definition = self._definition(name)
        added: list[str] = []

        def evolve(table: Table) -> None:
            have = {f.name for f in table.refresh().schema().fields}
            added[:] = [f.name for f in definition.schema.fields if f.name not in have]
            if added:
                with table.update_schema() as update:
                    for f in definition.schema.fields:
                        if f.name in added:
                            update.add_column(f.name, f.field_type, doc=f.doc, required=False)

        self._commit(name, evolve)
        return added

    def columns(self, name: str) -> list[str]:
        """The column names of an existing table, as its current schema has them."""
        return [f.name for f in self.table(name).schema().fields]

    def append(self, name: str, data: pa.Table, properties: dict[str, str] | None = None) -> int:
        """Append rows in one commit, retrying conflicts.

        Args:
            name: Table name.
            data: Rows with :meth:`arrow_schema`.
            properties: Snapshot summary properties (e.g. who wrote it).

        Returns:
            The number of attempts it took.

        Raises:
            CommitFailed: Still conflicting after ``commit_retries`` retries.
        """
        return self._commit(name, lambda table: table.append(data, snapshot_properties=properties or {}))

    def overwrite(self, name: str, data: pa.Table, properties: dict[str, str] | None = None) -> None:
        """Replace the table's rows in one commit (conflicts retried like :meth:`append`)."""
        self._commit(name, lambda table: table.overwrite(data, snapshot_properties=properties or {}))

    def update(self, name: str, operation: Callable[[Table], Any]) -> Any:
        """Run ``operation(table)`` — it reads the table and commits once — retrying conflicts like
        :meth:`append`; on a retry it runs again on fresh metadata, so what it read is never stale.

        Returns:
            What ``operation`` returned.
        """
        result: list[Any] = []
        self._commit(name, lambda table: result.append(operation(table)))
        return result[-1]

    def _commit(self, name: str, operation: Any) -> int:
        table = self._writable(name)
        for attempt in range(self.commit_retries + 1):
            try:
                operation(table)
                self._tables[name] = table
                return attempt + 1
            except Exception as exc:
                retryable = _is_conflict(exc) or _is_stale(exc)
                if not retryable or attempt == self.commit_retries:
                    if retryable:
                        raise CommitFailed(f"{name}: commit still conflicting after {attempt + 1} attempts") from exc
                    raise
                delay = min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5)
                logger.info("stale table metadata, reloading" if _is_stale(exc) else "commit conflict, retrying",
                            extra={"table": name, "attempt": attempt + 1, "delay_s": round(delay, 3)})
                time.sleep(delay)
                table = self.catalog.load_table((self.namespace, name))
        raise AssertionError("unreachable")

    def exists(self, name: str) -> bool:
        """Whether the table exists in the catalog."""
        return name in self._tables or name in self.table_names()

    def table_names(self) -> list[str]:
        """Names of the tables that exist in the namespace."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        try:
            return sorted(ident[-1] for ident in self.catalog.list_tables(self.namespace))
        except NoSuchNamespaceError:
            return []

    def scan(self, name: str, **kwargs: Any) -> pa.Table:
        """Read a table (or a filtered part of it) into Arrow."""
        return self.catalog.load_table((self.namespace, name)).scan(**kwargs).to_arrow()
