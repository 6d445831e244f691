"""Identity resolution (stitching): edges between identifiers → one profile id per identifier.

The rules follow Segment Unify's identity resolution, in its simpler documented variant:

* An identifier is a ``(type, value)`` pair. Each type has a ``priority`` (lower is more
  important: ``user_id`` 1, ``email`` 2 …) and a ``limit`` (most identifiers of that type one
  profile may hold); every profile also has a global cap (``max_identifiers_per_profile``).
* Values matching a ``blocked_values`` regex (case-insensitive, tested on the value with
  surrounding whitespace trimmed; an empty value is always blocked) never join anything: they get
  no profile, are listed in :attr:`IdentityResult.blocked`, and their edges are rejected.
* **Merge protection**: an edge whose two profiles together would exceed a type limit or the cap
  is not applied; it is listed in :attr:`IdentityResult.rejected_edges` with the reason. A shared
  device's anonymous id seen with user u1 and later with user u2 stays with u1. (Segment can
  instead drop the event's lowest-priority identifier and retry; here the edge is skipped.)
* **Order independence**: the result depends only on the *set* of edges, nodes and the previous
  assignment. Edges are deduplicated as unordered pairs (earliest ``first_seen`` kept; the source
  of that earliest sighting, a count of sightings), then applied in the order ``(first_seen,
  priority of the more important end, priority of the other end, the ends)``, the ends ranked by
  their own ``(first_seen, type, value)``. At equal times the edges between important identifiers
  go first, so an event carrying a shared anonymous id, a new user id and that user's email joins
  the email to the new user, not to the device's first user.
* **Stable ids**: previous profiles are re-formed first from the previous assignment (it was
  valid), then the new edges are applied. A profile that grows keeps its id. When an edge joins two
  previous profiles the older one survives (earliest previous ``first_seen``; on a tie, the one whose
  first identifier ranks first by ``(priority, type, value)``, then the smaller id) and the other is
  reported in :attr:`IdentityResult.merged`. A profile with no previous id gets
  ``"p_" + sha256("type:value")[:16]`` of its first identifier by ``(first_seen, priority, type,
  value)``, so building twice from scratch gives the same ids, and building day by day (each build
  given all input so far and the previous graph) gives the ids of one build from scratch. If a
  previous profile violates a limit today (limits lowered since), it is kept as it is; it only
  refuses edges that would add more of the exceeded type (or any identifier, for the cap).
* Identifiers of the previous assignment that are absent from this build's nodes and edges are
  kept in their profile (``joined_via`` = "kept from previous build"); newly blocked ones are
  dropped and reported as blocked.

Implementation: interning (integer ids in ``(first_seen, type, value)`` order), deduplication, sorting
and the output table run as Arrow compute kernels; union-find (path halving, union by size,
per-component type counts) runs in plain Python over integer ids. The result's big dicts are built
from its Arrow ``graph`` only when read, so ``resolve`` → :func:`result_to_arrow` never makes
millions of Python objects. Arrow is imported lazily: importing the dataclasses costs nothing.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_BLOCKED_VALUES: tuple[str, ...] = (
    r"^[0-]*$",
    r"^-1$",
    r"^(null|none|nil|undefined|anonymous|unknown)$",
)
DEFAULT_PRIORITY = 100
FIRST_IDENTIFIER = "first identifier"
KEPT = "kept from previous build"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LISTED = 3  # identifiers named in a rejection reason, per side
_TYPE_CHAR = 0x100  # type codes are one character U+0100… in the interning key (sorts like the names)
_MAX_TYPES = 0x700
_UNSEEN = 2**63 - 1


@dataclass(frozen=True)
class IdentifierRule:
    """How one identifier type takes part in resolution.

    Attributes:
        type: The identifier type (``user_id``, ``email``, ``anonymous_id``, ``crm_id`` …).
        priority: Lower is more important (Segment: user_id 1, email 2, others after).
        limit: Most identifiers of this type one profile may hold (>= 1).
    """

    type: str
    priority: int
    limit: int

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"identifier type {self.type!r}: limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class IdentityConfig:
    """Identity resolution settings.

    Attributes:
        rules: Rule per identifier type. Types without a rule get priority 100 and ``default_limit``.
        blocked_values: Regexes (case-insensitive, Python/RE2 common syntax) of values that identify nobody.
        max_identifiers_per_profile: Global cap of identifiers per profile (Segment: 1,000).
        default_limit: Limit of types without a rule.
    """

    rules: dict[str, IdentifierRule]
    blocked_values: tuple[str, ...] = DEFAULT_BLOCKED_VALUES
    max_identifiers_per_profile: int = 1000
    default_limit: int = 100

    def __post_init__(self) -> None:
        for name, rule in self.rules.items():
            if rule.type != name:
                raise ValueError(f"rules[{name!r}] describes type {rule.type!r}")
        for pattern in self.blocked_values:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"blocked_values: invalid regex {pattern!r}: {exc}") from exc
        if self.max_identifiers_per_profile < 2:
            raise ValueError("max_identifiers_per_profile must be >= 2")
        if self.default_limit < 1:
            raise ValueError("default_limit must be >= 1")

    def rule(self, type_: str) -> IdentifierRule:
        """The rule of ``type_`` (a default rule for types not configured)."""
        return self.rules.get(type_) or IdentifierRule(type_, DEFAULT_PRIORITY, self.default_limit)


@dataclass(frozen=True)
class Edge:
    """Two identifiers seen together.

    Attributes:
        a_type: Type of the first identifier (for an alias: the previous id).
        a_value: Its value.
        b_type: Type of the second identifier.
        b_value: Its value.
        first_seen: When the pair was seen (naive datetimes are taken as UTC).
        source: Where: ``event:identify``, ``event:alias``, ``record:crm_contacts`` …
    """

    a_type: str
    a_value: str
    b_type: str
    b_value: str
    first_seen: datetime
    source: str


@dataclass(frozen=True)
class Node:
    """An identifier seen on its own (it gets a profile even without edges)."""

    type: str
    value: str
    first_seen: datetime


@dataclass(frozen=True)
class PreviousProfile:
    """The previous build's profile of one identifier."""

    profile_id: str
    first_seen: datetime


class _FromGraph:
    """A dict field of :class:`IdentityResult` built from its ``graph`` table on first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default
        value = obj.__dict__.get(self.name)
        if value is None:
            value = obj.__dict__[self.name] = _dict_from_graph(obj.graph, self.name)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


_LAZY = ("assignments", "joined_via", "profile_first_seen")


@dataclass(repr=False)
class IdentityResult:
    """The outcome of :func:`resolve`.

    ``assignments``, ``joined_via`` and ``profile_first_seen`` are built from ``graph`` (the Arrow form
    of the result) the first time they are read; :func:`result_to_arrow` returns ``graph`` as is unless
    one of them was read or set (then it builds the table from the dicts, edits included).

    Attributes:
        assignments: ``(type, value)`` → profile id, for every identifier that is not blocked.
        joined_via: Why each identifier is in its profile: ``"first identifier"``; ``"edge event:identify
            with user_id:u1 at 2026-…"`` (plus ``", via <type>:<value>"`` when that edge brought the
            identifier's group through another member); ``"kept from previous build"`` (plus the merge
            when its previous profile was merged away).
        rejected_edges: Edges not applied (one per unordered pair: its earliest sighting) with the reason,
            in processing order.
        blocked: Identifiers refused by ``blocked_values``, sorted.
        merged: Previous profile id → surviving profile id, for merges made by this build.
        profile_first_seen: Profile id → earliest first_seen of its identifiers (and of its previous version).
        stats: Counters: nodes, edges, unique_edges, self_loops, applied_edges, rejected_edges, identifiers,
            blocked, profiles, merged_profiles.
        graph: The :func:`result_to_arrow` table, when built by :func:`resolve`.
    """

    assignments: dict[tuple[str, str], str] = _FromGraph()  # type: ignore[assignment]
    joined_via: dict[tuple[str, str], str] = _FromGraph()  # type: ignore[assignment]
    rejected_edges: list[tuple[Edge, str]] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    merged: dict[str, str] = field(default_factory=dict)
    profile_first_seen: dict[str, datetime] = _FromGraph()  # type: ignore[assignment]
    stats: dict[str, int] = field(default_factory=dict)
    graph: pa.Table | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return (f"IdentityResult(stats={self.stats}, rejected_edges={len(self.rejected_edges)}, "
                f"blocked={len(self.blocked)}, merged={len(self.merged)})")


def _dict_from_graph(graph: pa.Table | None, name: str) -> dict[Any, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if graph is None or graph.num_rows == 0:
        return {}
    if name == "profile_first_seen":
        first = graph.group_by("profile_id").aggregate([("profile_first_seen", "min")]).sort_by("profile_id")
        micros = pc.cast(first["profile_first_seen_min"], pa.int64()).to_pylist()
        return dict(zip(first["profile_id"].to_pylist(), map(_datetime, micros), strict=True))
    keys = zip(graph["identifier_type"].to_pylist(), graph["identifier_value"].to_pylist(), strict=True)
    column = "profile_id" if name == "assignments" else "joined_via"
    return dict(zip(keys, graph[column].to_pylist(), strict=True))


class _ArrowRows:
    """An Arrow table viewed as a sequence of dataclass rows; :func:`resolve` reads the table directly."""

    _columns: tuple[str, ...] = ()
    _row: type = object

    def __init__(self, table: pa.Table) -> None:
        missing = [c for c in self._columns if c not in table.column_names]
        if missing:
            raise ValueError(f"missing column(s) {missing}; expected {list(self._columns)}")
        self.table = table.select(list(self._columns))

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[Any]:
        for batch in self.table.to_batches():
            columns = []
            for column in batch.columns:
                if column.type.id != _ts_type().id:
                    columns.append(column.to_pylist())
                else:  # as UTC datetimes (naive = UTC), like resolve reads them
                    columns.append([None if m is None else _datetime(m) for m in _micros(column).to_pylist()])
            yield from map(self._row, *columns)


class EdgeTable(_ArrowRows):
    """Edges held in an Arrow table (see :func:`edges_from_arrow`); iterates as :class:`Edge`."""

    _columns = ("a_type", "a_value", "b_type", "b_value", "first_seen", "source")
    _row = Edge


class NodeTable(_ArrowRows):
    """Nodes held in an Arrow table (see :func:`nodes_from_arrow`); iterates as :class:`Node`."""

    _columns = ("type", "value", "first_seen")
    _row = Node


def edges_from_arrow(table: pa.Table) -> EdgeTable:
    """Edges from an Arrow table with columns a_type, a_value, b_type, b_value, first_seen, source.

    The returned view iterates as :class:`Edge` objects, but :func:`resolve` reads the columns directly
    (no per-row objects), which is what makes millions of edges fast.
    """
    return EdgeTable(table)


def nodes_from_arrow(table: pa.Table) -> NodeTable:
    """Nodes from an Arrow table with columns type, value, first_seen (see :func:`edges_from_arrow`)."""
    return NodeTable(table)


def previous_from_arrow(table: pa.Table) -> dict[tuple[str, str], PreviousProfile]:
    """The previous assignment from a :func:`result_to_arrow` table (``resolve`` also takes the table as is)."""
    rows = zip(table.column("identifier_type").to_pylist(), table.column("identifier_value").to_pylist(),
               table.column("profile_id").to_pylist(), table.column("profile_first_seen").to_pylist(), strict=True)
    return {(t, v): PreviousProfile(p, f) for t, v, p, f in rows}


def profile_id_for(type_: str, value: str) -> str:
    """The id of a new profile whose first identifier is ``type_:value``."""
    return "p_" + hashlib.sha256(f"{type_}:{value}".encode()).hexdigest()[:16]


def result_to_arrow(result: IdentityResult) -> pa.Table:
    """The identity graph as a table, one row per identifier that is not blocked.

    Columns: identifier_type, identifier_value, profile_id, joined_via (strings), profile_first_seen and
    first_seen (the identifier's own; timestamp[us, UTC]) — also the shape :func:`resolve` accepts as
    ``previous``. Rows come in a
    deterministic order (from :func:`resolve`: by the identifier's first_seen, then type and value).
    """
    import pyarrow as pa

    if result.graph is not None and all(result.__dict__.get(name) is None for name in _LAZY):
        return result.graph
    assignments = result.assignments
    keys = list(assignments)
    pids = list(assignments.values())
    first_seen = result.profile_first_seen
    reasons = result.joined_via
    return pa.table({
        "identifier_type": pa.array([k[0] for k in keys], pa.string()),
        "identifier_value": pa.array([k[1] for k in keys], pa.string()),
        "profile_id": pa.array(pids, pa.string()),
        "joined_via": pa.array([reasons.get(k, "") for k in keys], pa.string()),
        "profile_first_seen": pa.array([first_seen.get(p) for p in pids], _ts_type()),
        "first_seen": pa.nulls(len(keys), _ts_type()),
    })


def resolve(
    nodes: Iterable[Node] | pa.Table,
    edges: Iterable[Edge] | pa.Table,
    config: IdentityConfig,
    previous: Mapping[tuple[str, str], PreviousProfile] | pa.Table | None = None,
) -> IdentityResult:
    """Resolve identifiers into profiles.

    Args:
        nodes: Identifiers seen (alone or not), with when: every one gets a profile. Identifiers that only
            appear in edges need not be listed. Objects, :func:`nodes_from_arrow` or an Arrow table.
        edges: Pairs seen together. Repeats and both orientations are fine (deduplicated here). Objects,
            :func:`edges_from_arrow` or an Arrow table.
        config: Rules, limits, blocked values.
        previous: The previous build's assignment, ``(type, value)`` → :class:`PreviousProfile`, or that
            build's :func:`result_to_arrow` table.

    Returns:
        The assignment of every non-blocked identifier, with reasons, rejections and merges.
    """
    collecting = gc.isenabled()
    gc.disable()  # millions of small containers: the cyclic collector would rescan them over and over
    try:
        return _Resolver(config).run(_nodes_table(nodes), _edges_table(edges), _previous_table(previous))
    finally:
        if collecting:
            gc.enable()


# --------------------------------------------------------------------------------------------------------------
# Inputs → Arrow


def _ts_type() -> pa.DataType:
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC")


def _nodes_table(nodes: Iterable[Node] | pa.Table) -> pa.Table:
    import pyarrow as pa

    if isinstance(nodes, _ArrowRows):
        return nodes.table
    if isinstance(nodes, pa.Table):
        return NodeTable(nodes).table
    items = list(nodes)
    return pa.table({
        "type": pa.array([n.type for n in items], pa.string()),
        "value": pa.array([n.value for n in items], pa.string()),
        "first_seen": pa.array([n.first_seen for n in items], _ts_type()),
    })


def _edges_table(edges: Iterable[Edge] | pa.Table) -> pa.Table:
    import pyarrow as pa

    if isinstance(edges, _ArrowRows):
        return edges.table
    if isinstance(edges, pa.Table):
        return EdgeTable(edges).table
    items = list(edges)
    return pa.table({
        "a_type": pa.array([e.a_type for e in items], pa.string()),
        "a_value": pa.array([e.a_value for e in items], pa.string()),
        "b_type": pa.array([e.b_type for e in items], pa.string()),
        "b_value": pa.array([e.b_value for e in items], pa.string()),
        "first_seen": pa.array([e.first_seen for e in items], _ts_type()),
        "source": pa.array([e.source for e in items], pa.string()),
    })


def _previous_table(previous: Mapping[tuple[str, str], PreviousProfile] | pa.Table | None) -> pa.Table | None:
    import pyarrow as pa

    if previous is None:
        return None
    if isinstance(previous, pa.Table):
        return previous.select(["identifier_type", "identifier_value", "profile_id", "profile_first_seen"])
    keys = list(previous)
    profiles = list(previous.values())
    return pa.table({
        "identifier_type": pa.array([k[0] for k in keys], pa.string()),
        "identifier_value": pa.array([k[1] for k in keys], pa.string()),
        "profile_id": pa.array([p.profile_id for p in profiles], pa.string()),
        "profile_first_seen": pa.array([p.first_seen for p in profiles], _ts_type()),
    })


def _micros(column: Any) -> Any:
    """A timestamp/date column as int64 microseconds since the epoch, UTC (naive = UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)):
        raise TypeError(f"first_seen must be a timestamp, got {column.type}")
    return pc.cast(pc.cast(column, _ts_type(), safe=False), pa.int64())


def _strings(column: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _chunks(columns: list[Any], type_: pa.DataType) -> Any:
    """Columns end to end, as one chunked array (no copy)."""
    import pyarrow as pa

    return pa.chunked_array([chunk for column in columns for chunk in column.chunks], type_)


def _ranked(column: Any) -> tuple[Any, Any]:
    """(sorted distinct values, each row's rank among them): a canonical dictionary encoding."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    order = pc.sort_indices(encoded.dictionary)
    rank = pc.take(pc.cast(pc.sort_indices(order), pa.int64()), encoded.indices)
    return pc.take(encoded.dictionary, order), rank


def _iso(micros: Any) -> Any:
    """Int64 microseconds → ISO-8601 UTC strings (``2026-01-01T12:00:00Z``, fractions only when present)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pc.cast(micros, pa.timestamp("us")), pa.string())  # "2026-01-01 12:00:00.000000"
    text = pc.replace_substring(pc.replace_substring(text, " ", "T", max_replacements=1), ".000000", "")
    return pc.binary_join_element_wise(text, "Z", "")


def _datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# --------------------------------------------------------------------------------------------------------------
# The resolver


def _has_nulls(table: pa.Table) -> bool:
    return any(column.null_count for column in table.columns)


def _complete(table: pa.Table, condition: Any) -> pa.Table:
    """``table`` without the rows that fail ``condition`` (a null check): copied only when some do."""
    return table.filter(condition) if _has_nulls(table) else table


def _arange(n: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if n == 0:
        return pa.array([], pa.int64())
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def _first_per_group(groups: Any, values: Any) -> tuple[Any, Any]:
    """(group, smallest value) per distinct group, groups ascending."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = pa.table({"g": groups, "v": values}).sort_by([("g", "ascending"), ("v", "ascending")])
    g = t["g"].combine_chunks()
    if len(g) == 0:
        return g, t["v"].combine_chunks()
    starts = pa.concat_arrays([pa.array([True]), pc.not_equal(g.slice(1), g.slice(0, len(g) - 1))])
    return pc.filter(g, starts), pc.filter(t["v"].combine_chunks(), starts)


def _ints(array: Any) -> memoryview:
    """The values of an int64 Arrow array without nulls, as a sequence of ints (no copy)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) == 0:
        return memoryview(b"").cast("q")
    assert array.type == pa.int64() and array.null_count == 0
    return memoryview(array.buffers()[1]).cast("q")[array.offset:array.offset + len(array)]  # type: ignore[index]


def _scatter(mask: Any, values: Any, default: str) -> Any:
    """A string array shaped like ``mask``: ``values`` in order where it is true, ``default`` elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = pc.if_else(mask, pc.subtract(pc.cumulative_sum(pc.cast(mask, pa.int64())), 1), len(values))
    return pc.take(pa.concat_arrays([values, pa.array([default], pa.string())]), index)


class _Resolver:
    """One resolution run: Arrow preparation, the union-find pass, then the result.

    Identifiers are numbered in ``(first_seen, type, value)`` order: canonical (every tie-break uses it)
    and, since edges are applied in time order, it keeps the union-find's memory accesses local.
    """

    def __init__(self, config: IdentityConfig) -> None:
        self.config = config
        self.patterns = [re.compile(p, re.IGNORECASE) for p in config.blocked_values]
        self.stats: dict[str, int] = {}
        self.rejected: list[tuple[Edge, str]] = []

    def run(self, nodes: pa.Table, edges: pa.Table, previous: pa.Table | None) -> IdentityResult:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.stats.update(nodes=nodes.num_rows, edges=edges.num_rows)
        valid = pc.field("type").is_valid() & pc.field("value").is_valid() & pc.field("fs").is_valid()
        node_t = _complete(pa.table({"type": _strings(nodes["type"]), "value": _strings(nodes["value"]),
                                     "fs": _micros(nodes["first_seen"])}), valid)
        edge_t = pa.table({
            "a_type": _strings(edges["a_type"]), "a_value": _strings(edges["a_value"]),
            "b_type": _strings(edges["b_type"]), "b_value": _strings(edges["b_value"]),
            "fs": _micros(edges["first_seen"]), "source": pc.fill_null(_strings(edges["source"]), ""),
        })
        complete = (pc.field("a_type").is_valid() & pc.field("a_value").is_valid() & pc.field("b_type").is_valid()
                    & pc.field("b_value").is_valid() & pc.field("fs").is_valid())
        incomplete = edge_t.filter(~complete) if _has_nulls(edge_t) else edge_t.slice(0, 0)
        for row in incomplete.to_pylist():
            missing = ", ".join("first_seen" if k == "fs" else k for k, v in row.items() if v is None)
            edge = Edge(row["a_type"], row["a_value"], row["b_type"], row["b_value"],
                        None if row["fs"] is None else _datetime(row["fs"]), row["source"])  # type: ignore[arg-type]
            self.rejected.append((edge, f"incomplete edge: missing {missing}"))
        edge_t = _complete(edge_t, complete)
        prev_t = None
        if previous is not None:
            prev_t = pa.table({"type": _strings(previous["identifier_type"]),
                               "value": _strings(previous["identifier_value"]),
                               "pid": _strings(previous["profile_id"]),
                               "fs": _micros(previous["profile_first_seen"])})
            prev_t = _complete(prev_t, valid & pc.field("pid").is_valid())

        self._intern(node_t, edge_t, prev_t)
        edge_cols = self._edges(edge_t)
        self._union_find(edge_cols, self._previous(prev_t))
        return self._result(edge_cols)

    # -- preparation -------------------------------------------------------------------------------------------

    def _intern(self, node_t: pa.Table, edge_t: pa.Table, prev_t: pa.Table | None) -> None:
        """Ids: identifiers ranked by (first_seen, type, value); per id its type, first_seen, blocked flag."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = [node_t, edge_t.select(["a_type", "a_value", "fs"]), edge_t.select(["b_type", "b_value", "fs"])]
        if prev_t is not None:  # first_seen comes from this build's input; the previous one only fills gaps
            parts.append(prev_t.select(["type", "value"]).append_column(
                "fs", pa.repeat(pa.scalar(_UNSEEN, pa.int64()), prev_t.num_rows)))
        self.n_nodes, self.n_edges = node_t.num_rows, edge_t.num_rows
        types = _chunks([p.column(0) for p in parts], pa.string())
        values = _chunks([p.column(1) for p in parts], pa.string())
        first_seen = _chunks([p.column(2) for p in parts], pa.int64())

        # Key = one character per type (in name order) + value: one string column sorts like (type, value).
        type_names, type_rank = _ranked(types)
        self.type_names: list[str] = type_names.to_pylist()
        if len(self.type_names) > _MAX_TYPES:
            raise ValueError(f"too many identifier types ({len(self.type_names)} > {_MAX_TYPES})")
        chars = pa.array([chr(_TYPE_CHAR + r) for r in range(len(self.type_names))], pa.string())
        encoded = pc.dictionary_encode(pc.binary_join_element_wise(pc.take(chars, type_rank), values, ""))
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        keys, codes = encoded.dictionary, encoded.indices
        self.n = n = len(keys)
        fs = _first_per_group(codes, first_seen)[1]
        if prev_t is not None and prev_t.num_rows:  # identifiers only in the previous build: their profile's
            prev_codes, prev_fs = _first_per_group(codes.slice(len(codes) - prev_t.num_rows), prev_t["fs"])
            fallback = pc.take(prev_fs, pc.index_in(_arange(n), value_set=prev_codes))
            fs = pc.if_else(pc.equal(fs, _UNSEEN), fallback, fs)
        # Ids: ranks by (first_seen, type, value).
        code_of_id = pc.sort_indices(pa.table({"fs": fs, "key": keys}), sort_keys=[("fs", "ascending"),
                                                                                   ("key", "ascending")])
        self.occurrence_ids = pc.take(pc.cast(pc.sort_indices(code_of_id), pa.int64()), codes)
        keys = pc.take(keys, code_of_id)
        self.values = pc.utf8_slice_codeunits(keys, 1)
        self.tp_arr = pc.cast(pc.index_in(pc.utf8_slice_codeunits(keys, 0, 1), value_set=chars), pa.int64())
        self.tp: list[int] = self.tp_arr.to_pylist()
        self.fs_arr = pc.take(fs, code_of_id)
        self.fs: list[int] = self.fs_arr.to_pylist()
        rules = [self.config.rule(t) for t in self.type_names]
        self.limit = [r.limit for r in rules]
        self.prio = [r.priority for r in rules]
        levels = sorted(set(self.prio))
        self.prank_arr = pc.take(pa.array([levels.index(p) for p in self.prio], pa.int64()), self.tp_arr)
        self.id_prio: list[int] = pc.take(pa.array(self.prio, pa.int64()), self.tp_arr).to_pylist()
        self.blocked_arr = self._blocked_mask(self.values)
        self.stats.update(identifiers=n - (pc.sum(self.blocked_arr).as_py() or 0))

    def _blocked_mask(self, values: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        trimmed = pc.utf8_trim_whitespace(values)
        empty = pc.equal(pc.utf8_length(trimmed), 0)
        if not self.patterns:
            return empty
        combined = "|".join(f"(?:{p.pattern})" for p in self.patterns)
        try:
            matched = pc.match_substring_regex(trimmed, combined, ignore_case=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a regex RE2 does not support: Python's re
            matched = pa.array([any(p.search(v) for p in self.patterns) for v in trimmed.to_pylist()], pa.bool_())
        return pc.or_(empty, matched)

    def _edges(self, edge_t: pa.Table) -> dict[str, Any]:
        """Edges as id pairs, deduplicated as unordered pairs, in processing order (see the module docs)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n, start, count = self.n, self.n_nodes, self.n_edges
        sources, src = _ranked(edge_t["source"])
        self.source_names: list[str] = sources.to_pylist()
        ids = self.occurrence_ids
        e = pa.table({"a": ids.slice(start, count), "b": ids.slice(start + count, count), "fs": edge_t["fs"],
                      "src": src})
        loops = pc.equal(e["a"], e["b"])
        self.stats["self_loops"] = pc.sum(loops).as_py() or 0
        e = e.filter(pc.invert(loops))
        lo, hi = pc.min_element_wise(e["a"], e["b"]), pc.max_element_wise(e["a"], e["b"])
        p_lo, p_hi = pc.take(self.prank_arr, lo), pc.take(self.prank_arr, hi)
        e = pa.table({
            "fs": e["fs"],
            "pk": pc.add(pc.multiply(pc.min_element_wise(p_lo, p_hi), _MAX_TYPES), pc.max_element_wise(p_lo, p_hi)),
            "pair": pc.add(pc.multiply(lo, n), hi),
            "sa": pc.add(pc.multiply(e["src"], 2), pc.cast(pc.not_equal(e["a"], lo), pa.int64())),
        })
        # Processing order; each pair's earliest sighting (ties: source, orientation) is its first row.
        e = e.sort_by([(c, "ascending") for c in ("fs", "pk", "pair", "sa")])
        pair = e["pair"].combine_chunks()
        by_pair = pc.sort_indices(pair)  # stable: a pair's rows stay in processing order
        grouped = pc.take(pair, by_pair)
        starts = pa.concat_arrays([pa.array([True] * min(len(grouped), 1), pa.bool_()),
                                   pc.not_equal(grouped.slice(1), grouped.slice(0, max(len(grouped) - 1, 0)))])
        firsts = pc.filter(by_pair, starts)
        run_starts = pc.indices_nonzero(starts)
        run_ends = pa.concat_arrays([run_starts.slice(1), pa.array([len(grouped)] * min(len(grouped), 1), pa.uint64())])
        sightings = pc.subtract(run_ends, run_starts)  # rows per pair
        in_order = pc.sort_indices(firsts)
        d = e.take(pc.take(firsts, in_order))
        self.stats["unique_edges"] = d.num_rows
        pair = d["pair"].combine_chunks()
        lo = pc.divide(pair, max(n, 1))
        hi = pc.subtract(pair, pc.multiply(lo, n))
        sa = d["sa"].combine_chunks()
        blocked = pc.or_(pc.take(self.blocked_arr, lo), pc.take(self.blocked_arr, hi))
        return {"lo": _ints(lo), "hi": _ints(hi), "blocked": _ints(pc.cast(blocked, pa.int64())), "lo_arr": lo,
                "hi_arr": hi, "a": pc.if_else(pc.equal(pc.bit_wise_and(sa, 1), 1), hi, lo),
                "fs": d["fs"].combine_chunks(), "src": pc.shift_right(sa, 1),
                "count": pc.take(sightings, in_order)}

    def _previous(self, prev_t: pa.Table | None) -> tuple[list[int], list[int]]:
        """The previous assignment as (id, profile code) lists; codes rank the previous profile ids."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self.pid_names: list[str] = []
        self.pid_fs: list[int] = []
        if prev_t is None or prev_t.num_rows == 0:
            return [], []
        ids = self.occurrence_ids.slice(self.n_nodes + 2 * self.n_edges)
        pids, code = _ranked(prev_t["pid"])
        self.pid_names = pids.to_pylist()
        self.pid_fs = _first_per_group(code, prev_t["fs"])[1].to_pylist()
        p = pa.table({"id": ids, "code": code}).filter(pc.invert(pc.take(self.blocked_arr, ids)))
        ids, codes = _first_per_group(p["id"], p["code"])  # listed twice: the smallest profile id
        return ids.to_pylist(), codes.to_pylist()

    # -- union-find --------------------------------------------------------------------------------------------

    def _union_find(self, edges: dict[str, Any], previous: tuple[list[int], list[int]]) -> None:
        n, tp, limit, fs, id_prio = self.n, self.tp, self.limit, self.fs, self.id_prio
        cap = self.config.max_identifiers_per_profile
        # A component's count per type, packed in one int: a field of ``width`` bits per type code. Adding two
        # packs adds the counts; ``(pack + bias) & high`` is non-zero iff some count exceeds its type's limit.
        width = max(n, cap).bit_length() + 2
        half = 1 << (width - 1)  # > any count
        types = range(len(self.type_names))
        unit = [1 << (width * t) for t in types]
        high = sum(half << (width * t) for t in types)
        bias = sum((half - 1 - min(limit[t], half - 1)) << (width * t) for t in types)
        field = (1 << width) - 1
        parent = list(range(n))
        size = [1] * n
        counts = [unit[t] for t in tp]  # root → packed counts per type
        prevkey: list[tuple[int, int] | None] = [None] * n  # root → (first_seen, code) of its previous profile
        seed = parent[:]  # root → its first identifier, by (first_seen, priority, type, value)
        reason = [-1] * n  # identifier → 2 × the edge that brought its group + (1 if its end is the edge's hi)
        prev_of = [-1] * n  # identifier → previous profile code
        merged_by: dict[int, int] = {}  # previous profile code → the edge that merged it away
        first_member: dict[int, int] = {}

        # 1. The previous profiles, as they were.
        for i, code in zip(*previous, strict=True):
            prev_of[i] = code
            r = first_member.get(code)
            if r is None:
                first_member[code] = i
                prevkey[i] = (self.pid_fs[code], code)
                continue
            parent[i] = r
            size[r] += 1
            counts[r] += unit[tp[i]]
            if fs[i] == fs[seed[r]] and id_prio[i] < id_prio[seed[r]]:  # ids come in (fs, type, value) order
                seed[r] = i

        # 2. The edges, in order.
        rejections: list[tuple[int, str, Any]] = []
        applied = 0
        for e, x, y, blocked in zip(range(len(edges["lo"])), edges["lo"], edges["hi"], edges["blocked"],
                                    strict=True):
            if blocked:
                rejections.append((e, "blocked", None))
                continue
            a = x
            while parent[a] != a:
                parent[a] = a = parent[parent[a]]
            b = y
            while parent[b] != b:
                parent[b] = b = parent[parent[b]]
            if a == b:
                continue
            sa, sb = size[a], size[b]
            if sa + sb > cap:
                rejections.append((e, "cap", (sa, sb)))
                continue
            ca, cb = counts[a], counts[b]
            merged = ca + cb
            if (merged + bias) & high:  # over a limit, unless only a previous profile's own excess (kept)
                over = [t for t in types if (k := ca >> width * t & field) and (m := cb >> width * t & field)
                        and k + m > limit[t]]
                if over:
                    rejections.append((e, "limit", min(over, key=lambda t: (self.prio[t], t))))
                    continue
            applied += 1
            # Who joins whom: a previous profile wins over a new group; two previous ones: the older;
            # two new groups: the one whose first identifier is older.
            s1, s2 = seed[a], seed[b]
            f1, f2 = fs[s1], fs[s2]
            older = f1 < f2 or (f1 == f2 and (id_prio[s1], s1) < (id_prio[s2], s2))  # ids: (fs, type, value)
            ka, kb = prevkey[a], prevkey[b]
            key = ka or kb
            if ka is not None and kb is not None:
                # The older previous profile survives; same first_seen: the one whose first identifier ranks
                # first (as a build from scratch would name it), then the smaller id.
                if ka[0] < kb[0] or (ka[0] == kb[0] and (id_prio[s1], s1, ka[1]) < (id_prio[s2], s2, kb[1])):
                    merged_by[kb[1]] = e
                else:
                    merged_by[ka[1]] = e
                    key = kb
            elif ka is not None or (kb is None and older):
                reason[s2] = 2 * e + 1
            else:
                reason[s1] = 2 * e
            if sa < sb:
                a, b = b, a
            parent[b] = a
            size[a] = sa + sb
            counts[a] = merged
            prevkey[a] = key
            seed[a] = s1 if older else s2

        self.parent, self.prevkey, self.seed, self.reason, self.prev_of = parent, prevkey, seed, reason, prev_of
        self.merged_by, self.first_member, self.rejections = merged_by, first_member, rejections
        self.stats.update(applied_edges=applied)

    # -- result ------------------------------------------------------------------------------------------------

    def _ident(self, ids: Any) -> Any:
        """``type:value`` strings of ``ids`` (an Arrow array)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        types = pc.take(pa.array(self.type_names, pa.string()), pc.take(self.tp_arr, ids))
        return pc.binary_join_element_wise(types, pc.take(self.values, ids), ":")

    def _name(self, i: int) -> str:
        return f"{self.type_names[self.tp[i]]}:{self.values[i].as_py()}"

    def _edge_ends(self, edges: dict[str, Any], e: int) -> tuple[int, int]:
        a = edges["a"][e].as_py()
        return a, edges["lo"][e] + edges["hi"][e] - a

    def _edge_text(self, edges: dict[str, Any], e: int) -> str:
        a, b = self._edge_ends(edges, e)
        when = _iso(edges["fs"].slice(e, 1))[0].as_py()
        return f"{self.source_names[edges['src'][e].as_py()]} {self._name(a)} ↔ {self._name(b)} at {when}"

    def _result(self, edges: dict[str, Any]) -> IdentityResult:
        import pyarrow as pa
        import pyarrow.compute as pc

        n, tp, names = self.n, self.tp, self.type_names
        parent_arr = pa.array(self.parent, pa.int64())
        while True:  # pointer jumping until every identifier points at its root
            grand = pc.take(parent_arr, parent_arr)
            if pc.all(pc.equal(grand, parent_arr)).as_py() is not False:
                break
            parent_arr = grand
        self.parent_arr = parent_arr
        self.parent = parent = parent_arr.to_pylist()
        is_root = pc.equal(parent_arr, _arange(n))
        roots = pc.indices_nonzero(is_root).to_pylist()
        # Profile ids: previous ones kept, new ones from their first identifier.
        seeds = [self.seed[r] for r in roots]
        seed_values = pc.take(self.values, pa.array(seeds, pa.int64())).to_pylist()
        sha256, prefix, prevkey = hashlib.sha256, [f"{name}:" for name in names], self.prevkey
        pids = [self.pid_names[key[1]] if (key := prevkey[r]) is not None
                else "p_" + sha256((prefix[tp[s]] + value).encode()).hexdigest()[:16]
                for r, s, value in zip(roots, seeds, seed_values, strict=True)]
        self.pid_of_root = dict(zip(roots, pids, strict=True))

        # Rows in id order, i.e. by (first_seen, type, value); each row's root as a position in ``roots``.
        position = pc.take(pc.subtract(pc.cumulative_sum(pc.cast(is_root, pa.int64())), 1), parent_arr)
        first_seen = pa.array([self.fs[s] if (key := self.prevkey[r]) is None else min(self.fs[s], key[0])
                               for r, s in zip(roots, seeds, strict=True)], pa.int64())  # ids: first_seen order
        graph = pa.table({
            "identifier_type": pc.take(pa.array(names, pa.string()), self.tp_arr),
            "identifier_value": self.values,
            "profile_id": pc.take(pa.array(pids, pa.string()), position),
            "joined_via": self._joined_via(edges),
            "profile_first_seen": pc.cast(pc.take(first_seen, position), _ts_type()),
            "first_seen": pc.cast(self.fs_arr, _ts_type()),
        })
        blocked = pc.indices_nonzero(self.blocked_arr).to_pylist()
        if blocked:
            graph = graph.filter(pc.invert(self.blocked_arr))

        merged = {self.pid_names[code]: self.pid_of_root[parent[self.first_member[code]]] for code in self.merged_by}
        self._rejection_reasons(edges)
        blocked_values = pc.take(self.values, pa.array(blocked, pa.int64())).to_pylist()
        self.stats.update(blocked=len(blocked), profiles=len(roots) - len(blocked),
                          rejected_edges=len(self.rejected), merged_profiles=len(merged))
        return IdentityResult(
            rejected_edges=self.rejected,
            blocked=sorted((names[tp[i]], v) for i, v in zip(blocked, blocked_values, strict=True)),
            merged=merged,
            stats=self.stats,
            graph=graph,
        )

    def _joined_via(self, edges: dict[str, Any]) -> Any:
        """The joined_via column, in id order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        reason = pa.array(self.reason, pa.int64())
        has_edge = pc.greater_equal(reason, 0)
        reason = pc.filter(reason, has_edge)
        which = pc.shift_right(reason, 1)
        lo, hi = pc.take(edges["lo_arr"], which), pc.take(edges["hi_arr"], which)
        ends = pc.if_else(pc.equal(pc.bit_wise_and(reason, 1), 1), hi, lo)
        others = pc.subtract(pc.add(lo, hi), ends)
        elsewhere = pc.not_equal(ends, pc.cast(pc.indices_nonzero(has_edge), pa.int64()))  # via another member
        via = _scatter(elsewhere, pc.binary_join_element_wise(", via ", self._ident(pc.filter(ends, elsewhere)), ""),
                       "")
        sources = pc.take(pa.array(self.source_names, pa.string()), pc.take(edges["src"], which))
        texts = [pc.binary_join_element_wise("edge ", sources, " with ", self._ident(others), " at ",
                                             _iso(pc.take(edges["fs"], which)), via, "")]
        index = pc.subtract(pc.cumulative_sum(pc.cast(has_edge, pa.int64())), 1)
        index = pc.if_else(has_edge, index, len(reason))
        offset = len(reason)
        if self.pid_names:
            kept = [KEPT] * len(self.pid_names)
            for code, e in self.merged_by.items():
                kept[code] = f"{KEPT} (was {self.pid_names[code]}; merged by edge {self._edge_text(edges, e)})"
            prev_of = pa.array(self.prev_of, pa.int64())
            was_kept = pc.greater_equal(prev_of, 0)
            texts.append(pc.take(pa.array(kept, pa.string()), pc.filter(prev_of, was_kept)))
            kept_index = pc.add(pc.subtract(pc.cumulative_sum(pc.cast(was_kept, pa.int64())), 1), offset)
            offset += len(texts[-1])
            index = pc.if_else(was_kept, kept_index, pc.if_else(has_edge, index, offset))
        else:
            index = pc.if_else(has_edge, index, offset)
        texts.append(pa.array([FIRST_IDENTIFIER], pa.string()))
        return pc.take(pa.concat_arrays(texts), index)

    def _rejection_reasons(self, edges: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not self.rejections:
            return
        parent, tp, names, pid_of = self.parent, self.tp, self.type_names, self.pid_of_root
        which = pa.array([e for e, _, _ in self.rejections], pa.int64())
        ends_a = pc.take(edges["a"], which)
        ends_b = pc.subtract(pc.add(pc.take(edges["lo_arr"], which), pc.take(edges["hi_arr"], which)), ends_a)
        a_ids, b_ids = ends_a.to_pylist(), ends_b.to_pylist()
        a_values, b_values = pc.take(self.values, ends_a).to_pylist(), pc.take(self.values, ends_b).to_pylist()
        when = pc.take(edges["fs"], which).to_pylist()
        sources = pc.take(edges["src"], which).to_pylist()
        seen = pc.take(edges["count"], which).to_pylist()

        # Members of the exceeded types in the profiles involved, listed by value.
        wanted: set[tuple[int, int]] = set()
        for (_, kind, t), a, b in zip(self.rejections, a_ids, b_ids, strict=True):
            if kind == "limit":
                wanted.update(((parent[a], t), (parent[b], t)))
        members: dict[tuple[int, int], list[str]] = {}
        if wanted:
            roots = pa.array(sorted({r for r, _ in wanted}), pa.int64())
            candidates = pc.indices_nonzero(pc.is_in(self.parent_arr, value_set=roots))
            for i, value in zip(candidates.to_pylist(), pc.take(self.values, candidates).to_pylist(), strict=True):
                if (parent[i], tp[i]) in wanted:
                    members.setdefault((parent[i], tp[i]), []).append(value)

        def listed(root: int, t: int) -> str:
            vals = sorted(members.get((root, t), []))
            more = f" (+{len(vals) - _LISTED} more)" if len(vals) > _LISTED else ""
            return ", ".join(vals[:_LISTED]) + more

        rows = zip(self.rejections, a_ids, b_ids, a_values, b_values, when, sources, seen, strict=True)
        for (_, kind, detail), a, b, a_value, b_value, fs, src, count in rows:
            edge = Edge(names[tp[a]], a_value, names[tp[b]], b_value, _datetime(fs), self.source_names[src])
            ra, rb = parent[a], parent[b]
            if kind == "blocked":
                why = "; ".join(self._blocked_reason(i) for i in (a, b) if self.blocked_arr[i].as_py())
            elif kind == "cap":
                sa, sb = detail
                why = (f"profile cap {self.config.max_identifiers_per_profile}: profile {pid_of[ra]} "
                       f"holds {sa} identifiers, edge brings {sb} more (profile {pid_of[rb]})")
            else:
                t = detail
                why = (f"{names[t]} limit {self.limit[t]}: profile {pid_of[ra]} already holds {names[t]} "
                       f"{listed(ra, t)}, edge brings {names[t]} {listed(rb, t)} (profile {pid_of[rb]})")
            if count > 1:
                why += f" [pair seen {count} times]"
            self.rejected.append((edge, why))

    def _blocked_reason(self, i: int) -> str:
        value = self.values[i].as_py()
        what = f"blocked value {self.type_names[self.tp[i]]}:{value!r}"
        if not value.strip():
            return f"{what} (empty)"
        found = next((p.pattern for p in self.patterns if p.search(value.strip())), None)
        return f"{what} (matches {found})" if found else what
