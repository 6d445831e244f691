"""SQL text in DuckDB's dialect, shared by the build, the lakehouse's SQL views, named queries and deletion jobs:
literals, identifiers, and which copy of a repeated event counts (the first received; one definition, so the
build, ``events_unique`` and named queries keep the same copy)."""

from __future__ import annotations

from datetime import datetime

from customer_context.models.events import EVENT_CONTENT


def lit(value: object) -> str:
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def event_content_sql() -> str:
    """SQL: a digest of an event's content (:data:`customer_context.models.events.EVENT_CONTENT`)."""
    return "md5(to_json({" + ", ".join(f"{lit(c)}: {ident(c)}" for c in EVENT_CONTENT) + "}))"


def first_copy_order(content: str | None = None) -> str:
    """ORDER BY of the copies of one ``message_id``, the copy kept first: the first received; copies received at
    the same instant by content (``content``: a column holding :func:`event_content_sql`), so the copy kept never
    depends on how the lakehouse's files are laid out."""
    return f"received_at, {content or event_content_sql()}"
