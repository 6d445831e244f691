"""Whose row is it: the one rule the build, the deletion job and the live tail attribute rows by.

A row (an event, a record row) belongs to the profile of its **most important identifier that has a
profile**: its identifiers sorted by (priority, type, value) as :func:`compiler.event_identifiers_sql`
sorts them, the first one the identity graph knows. So an order sent from a device Ann used first,
by Bob signed in, is Bob's (``user_id`` outranks ``anonymous_id``), and a device seen only anonymously
is its profile's. The live tail applies the same rule to one event in Python
(:func:`owner_of`), against the aliases the build landed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from customer_context.assemble.compiler import ident

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


def owner_of(identifiers: Iterable[tuple[int, str, str]],
             resolve: Callable[[Iterable[tuple[str, str]]], dict[tuple[str, str], Any]]) -> tuple[Any, list[Any]]:
    """One event's owner: the profile of its most important identifier that has one (:func:`attribute`).

    Args:
        identifiers: The event's ``(priority, type, value)`` identifiers.
        resolve: Known profiles of ``(type, value)`` pairs (the aliases).

    Returns:
        The owner (``None`` when no identifier has a profile), and the identifiers sorted by importance.
    """
    ordered = sorted(set(identifiers))
    known = resolve([(t, v) for _, t, v in ordered])
    owner = next((known[(t, v)] for _, t, v in ordered if (t, v) in known), None)
    return owner, ordered
