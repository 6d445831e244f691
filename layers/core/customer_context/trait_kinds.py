"""The trait kinds, defined once: one row of :data:`TRAIT_KINDS` per kind.

Each row says where the kind is allowed (over events, over a record table), whether it needs a ``property``,
whether it reads numbers (under the numeric rule, :func:`customer_context.assemble.compiler.number`), the value
a profile without rows gets, and how it becomes SQL. The spec (:class:`customer_context.spec.Trait`) validates
against the table and the compiler (:func:`customer_context.assemble.compiler.compile_traits`) builds from it;
``tests/unit/test_trait_kinds.py`` checks that every row is accepted by the spec and compiles.

A new kind is one new row here (and a line in docs/spec.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal


@dataclass(frozen=True)
class Aggregate:
    """What a kind's SQL is built from: SQL expressions over one row of the trait's table."""

    value: str | None  # the trait's property (None: the kind reads none)
    number: str | None  # numeric kinds: the value under the numeric rule, in the trait's unit, as a DOUBLE
    exact: str | None  # numeric kinds: the same as a DECIMAL (exact sums)
    cond: str  # the trait's condition (where, window, consent)
    time: str  # the row's time column
    limit: int  # the trait's ``limit``
    source: str  # the table read (kinds that run a query of their own)
    iso_time: Callable[[str], str]  # a timestamp as the ISO-8601 text snapshots show

    @property
    def present(self) -> str:
        """The condition, and the value is there."""
        return f"{self.cond} AND {self.value} IS NOT NULL" if self.value else self.cond


@dataclass(frozen=True)
class TraitKind:
    """One trait kind."""

    name: str
    on_events: bool  # allowed over events
    on_records: bool  # allowed over a record table
    needs_property: bool  # ``property`` is required
    numeric: bool  # reads its value under the numeric rule (and converts currencies)
    zero: str | None  # SQL of the value a profile without rows gets (None: null)
    # SQL: an aggregate in the one grouped scan of the trait's table, or (``own_query``) a query of its own
    # returning ``profile_id, value``; None for ``sql`` (the spec's own query)
    sql: Callable[[Aggregate], str] | None
    own_query: bool = False
    uses_limit: bool = False  # ``limit`` means something (shown in a value's provenance)


def _exact(function: str) -> Callable[[Aggregate], str]:
    # exact decimal sums: a DOUBLE sum depends on the order parallel threads add in, which flips the last
    # rounded digit between builds and re-lands unchanged customers
    return lambda a: (f"CAST(round({function}({a.exact}) FILTER (WHERE {a.cond} AND {a.exact} IS NOT NULL), 4) "
                      "AS DOUBLE)")


def _extreme(function: str) -> Callable[[Aggregate], str]:
    return lambda a: f"round({function}({a.number}) FILTER (WHERE {a.cond} AND {a.number} IS NOT NULL), 4)"


def _most_frequent(a: Aggregate) -> str:
    """Segment's rule: the most frequent value seen at least twice; ties → alphabetical first."""
    return (
        f"SELECT profile_id, arg_min(v, (-n, v)) AS value FROM ("
        f"SELECT profile_id, {a.value} AS v, count(*) AS n FROM {a.source} "
        f"WHERE {a.cond} AND {a.value} IS NOT NULL GROUP BY ALL HAVING count(*) >= 2"
        f") GROUP BY profile_id"
    )


def _kind(name: str, *, events: bool = True, records: bool = True, needs_property: bool = True,
          numeric: bool = False, zero: str | None = None, sql: Callable[[Aggregate], str] | None,
          own_query: bool = False, uses_limit: bool = False) -> TraitKind:
    return TraitKind(name, events, records, needs_property, numeric, zero, sql, own_query, uses_limit)


_ROWS = (
    _kind("count", needs_property=False, zero="0", sql=lambda a: f"count(*) FILTER (WHERE {a.cond})"),
    _kind("sum", numeric=True, sql=_exact("sum")),
    _kind("avg", numeric=True, sql=_exact("avg")),
    _kind("min", numeric=True, sql=_extreme("min")),
    _kind("max", numeric=True, sql=_extreme("max")),
    _kind("first_value", sql=lambda a: f"arg_min({a.value}, ({a.time}, {a.value})) FILTER (WHERE {a.present})"),
    _kind("last_value", sql=lambda a: f"arg_max({a.value}, ({a.time}, {a.value})) FILTER (WHERE {a.present})"),
    _kind("first_time", records=False, needs_property=False,
          sql=lambda a: a.iso_time(f"min({a.time}) FILTER (WHERE {a.cond})")),
    _kind("last_time", records=False, needs_property=False,
          sql=lambda a: a.iso_time(f"max({a.time}) FILTER (WHERE {a.cond})")),
    _kind("most_frequent", records=False, sql=_most_frequent, own_query=True),
    _kind("unique_list", zero="[]", uses_limit=True,
          sql=lambda a: f"list_slice(list_sort(list_distinct(list({a.value}) FILTER (WHERE {a.present}))), 1, "
                        f"{a.limit})"),
    _kind("unique_count", records=False, zero="0",
          sql=lambda a: f"count(DISTINCT {a.value}) FILTER (WHERE {a.present})"),
    _kind("exists", needs_property=False, zero="FALSE",
          sql=lambda a: f"coalesce(count(*) FILTER (WHERE {a.cond}) > 0, FALSE)"),
    # the spec's own DuckDB query (``sql``), over events_profiled / <table>_profiled, whatever ``table`` says
    _kind("sql", needs_property=False, sql=None, own_query=True),
)

#: Every trait kind by name, in the order the spec's documentation lists them.
TRAIT_KINDS: dict[str, TraitKind] = {row.name: row for row in _ROWS}

#: The kinds allowed over a record table (``sql`` is its own query, whatever the table).
RECORD_KINDS: tuple[str, ...] = tuple(k.name for k in _ROWS if k.on_records and k.sql is not None)

if TYPE_CHECKING:
    TraitKindName = str
else:
    # the spec's ``kind`` field: one of the table's names (pydantic lists them in the table's order)
    TraitKindName = Literal[tuple(TRAIT_KINDS)]
