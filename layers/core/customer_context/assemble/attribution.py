"""Whose row is it: the one rule the build, the deletion job and the live tail attribute rows by.

A row (an event, a record row) belongs to the profile of its **most important identifier that has a
profile**: its identifiers sorted by (priority, type, value) as :func:`compiler.event_identifiers_sql`
sorts them, the first one the identity graph knows. So an order sent from a device Ann used first,
by Bob signed in, is Bob's (``user_id`` outranks ``anonymous_id``), and a device seen only anonymously
is its profile's. Collect reads one event's identifiers the way the build's SQL does
(:func:`event_identifiers`), for suppression and for the live tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from customer_context.identifiers import normalize_identifier
from customer_context.ports import JsonValue
from customer_context.spec import ContextSpec
from customer_context.sql_text import ident

if TYPE_CHECKING:
    import duckdb


def attribute(con: duckdb.DuckDBPyConnection, rows: str, key: str, graph: str, out: str) -> None:
    """Create table ``out`` (``key``, ``profile_id``): the owner of each row of ``rows`` that has one.

    Args:
        con: The DuckDB connection holding the tables.
        rows: A table with ``key`` and ``ids``, the row's identifiers as a list of ``{p, t, v}`` sorted by
            importance (:func:`customer_context.assemble.compiler.event_identifiers_sql`).
        key: The column identifying a row.
        graph: A table of ``identifier_type, identifier_value, profile_id`` (the identity graph).
        out: The table to create.
    """
    k = ident(key)
    # the profile of the row's most important identifier (most rows: one join) …
    con.execute(f"CREATE TABLE {ident(out)} AS SELECT r.{k}, m.profile_id FROM {ident(rows)} r LEFT JOIN "
                f"{ident(graph)} m ON m.identifier_type = r.ids[1].t AND m.identifier_value = r.ids[1].v")
    if con.sql(f"SELECT count(*) FROM {ident(out)} WHERE profile_id IS NULL").fetchall()[0][0]:
        # … else of the most important one that has a profile
        con.execute(
            f"CREATE TEMP TABLE _owner_next AS SELECT {k}, arg_min(m.profile_id, (x.p, x.t, x.v)) AS profile_id "
            f"FROM (SELECT r.{k}, unnest(r.ids) AS x FROM {ident(rows)} r SEMI JOIN {ident(out)} o "
            f"ON o.{k} = r.{k} AND o.profile_id IS NULL) "
            f"JOIN {ident(graph)} m ON m.identifier_type = x.t AND m.identifier_value = x.v GROUP BY {k}")
        con.execute(f"DELETE FROM {ident(out)} WHERE profile_id IS NULL")
        con.execute(f"INSERT INTO {ident(out)} SELECT {k}, profile_id FROM _owner_next")
        con.execute("DROP TABLE _owner_next")


def record_ids_sql(long_ids: str) -> str:
    """The per-row identifier lists (``row_key``, ``ids``) of a long table of ``row_key, id_type, id_value,
    priority`` (:func:`customer_context.assemble.compiler.record_identifier_sql`), sorted as events' are."""
    return (f"SELECT row_key, list_sort(list({{'p': priority, 't': id_type, 'v': id_value}})) AS ids "
            f"FROM {ident(long_ids)} GROUP BY row_key")


@dataclass(frozen=True)
class Found:
    """One identifier on an event: what it is and where it was read."""

    priority: int
    id_type: str
    value: str
    path: tuple[str, ...]  # keys from the event's root; a digit string picks an externalIds entry


def _get(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = event
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _value(spec: ContextSpec, id_type: str, raw: Any) -> str | None:
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        return None
    return normalize_identifier(spec, id_type, str(raw))


def event_identifiers(spec: ContextSpec, event: JsonValue) -> list[Found]:
    """The identifiers of one event (a Segment-shaped dict, as collect queues it), normalised and sorted
    by importance (priority, type, value) as :func:`compiler.event_identifiers_sql` reads and sorts them:
    every ``from_events`` path (``traits.<key>`` and its ``context.traits.<key>`` copy, ``context.externalIds``
    entries); blocked values (``identifiers.blocked_values``) are left out, as the identity graph leaves them."""
    if not isinstance(event, dict):
        return []
    blocked = [re.compile(p, re.IGNORECASE) for p in spec.identifiers.blocked_values]
    out: list[Found] = []
    for id_type, rule in spec.identifiers.types.items():
        for path in rule.from_events:
            if path.startswith("externalIds."):
                context = event.get("context")
                entries = context.get("externalIds") if isinstance(context, dict) else None
                for n, entry in enumerate(entries if isinstance(entries, list) else ()):
                    if isinstance(entry, dict) and entry.get("type") == path.split(".", 1)[1]:
                        value = _value(spec, id_type, entry.get("id"))
                        if value:
                            out.append(Found(rule.priority, id_type, value, ("context", "externalIds", str(n))))
                continue
            parts = tuple(path.split("."))
            for where in (parts, ("context", *parts)) if parts[0] == "traits" else (parts,):
                value = _value(spec, id_type, _get(event, where))
                if value:
                    out.append(Found(rule.priority, id_type, value, where))
    out = [f for f in out if not any(p.search(f.value.strip()) for p in blocked)]
    return sorted(out, key=lambda f: (f.priority, f.id_type, f.value))
