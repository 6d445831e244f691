"""DuckDB over the lakehouse: every Iceberg table queryable by its name.

Tables are read through pyiceberg into Arrow and registered in an in-memory DuckDB connection
(no DuckDB extension is downloaded). Only the tables a query names are read. Besides the tables,
``events_unique`` is ``events`` with duplicates (SDK retries, SQS redelivery) removed by
``message_id`` (the first received copy wins, as in the build), and ``rejected_events_unique`` likewise by
``rejection_id``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from customer_context.sql_text import first_copy_order

if TYPE_CHECKING:
    import duckdb

    from customer_context.stores.iceberg import Lakehouse

DEDUPED_VIEWS = {
    "events_unique": ("events", "message_id"),
    "rejected_events_unique": ("rejected_events", "rejection_id"),
}


def _mentions(query: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", query, flags=re.IGNORECASE) is not None


def connect(lakehouse: Lakehouse, query: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lakehouse tables (those ``query`` names, or all) registered."""
    import duckdb

    con = duckdb.connect()
    existing = set(lakehouse.table_names())
    wanted = {name for name in existing if query is None or _mentions(query, name)}
    for view, (table, _) in DEDUPED_VIEWS.items():
        if (query is None or _mentions(query, view)) and table in existing:
            wanted.add(table)
    for name in sorted(wanted):
        con.register(name, lakehouse.scan(name))
    for view, (table, key) in DEDUPED_VIEWS.items():
        if table in wanted:
            order = first_copy_order() if table == "events" else "received_at"
            con.execute(
                f"CREATE VIEW {view} AS SELECT * FROM {table} "
                f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"
            )
    return con


def query(lakehouse: Lakehouse, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query; returns column names and rows."""
    con = connect(lakehouse, sql)
    try:
        rel = con.sql(sql)
        if rel is None:
            return [], []
        return list(rel.columns), rel.fetchall()
    finally:
        con.close()
