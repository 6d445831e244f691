"""Identity resolution on Apache Spark: connected components, then the resolver's rules per component.

:func:`customer_context.assemble.identity.resolve` runs one ordered union-find in one Python process. Its
decisions only ever look inside one connected component of the identifier graph (an identifier's edges, its
previous profile's members), so the graph can be cut into components first, on Spark, and most components
resolved by rule without any ordered pass:

1. **Identifiers** (Spark): every ``(type, value)`` of the nodes, edges and previous assignment, with its
   ``first_seen`` (the earliest sighting in this build's input; an identifier known only from the previous
   assignment takes its previous profile's), its priority and limit, and whether ``blocked_values`` refuses it
   (tested by the resolver's own code, in Arrow batches on the executors).
2. **Components** (Spark): the edges between identifiers that are not blocked (deduplicated as unordered pairs)
   and one edge from every identifier to its previous profile id, as an undirected graph; its connected
   components by alternating *large-star* and *small-star* steps (Kiveris et al., "Connected Components in
   MapReduce and Beyond", SoCC 2014) until every component is a star around its smallest vertex: a logarithmic
   number of rounds in practice. :attr:`SparkIdentityResult.rounds` says how many.
3. **Simple components** (Spark): a component within the profile cap, within every type's limit and holding
   at most one previous profile never meets merge protection: the resolver would apply every one of its edges
   and end with one profile. Its id is the previous profile's, or ``"p_" + sha256("type:value")[:16]`` of its
   first identifier by ``(first_seen, priority, type, value)``; its ``profile_first_seen`` is that identifier's
   (or the previous profile's, if older). Only ``joined_via`` (which edge brought each identifier) depends on
   the order edges are applied: it is replayed per component, in parallel, on the executors (a grouped Arrow
   function, without the limit checks that cannot fire).
4. **The other components** (the driver): those that break a limit or the cap, or merge previous profiles (which
   one survives can depend on the order of the merges), go through :func:`identity.resolve` as they are: their
   nodes, edges and previous rows are collected and resolved together.

The result is the identity graph :func:`identity.result_to_arrow` makes of ``resolve`` on the whole input, row
for row, in the same order (tests/integration/test_spark_identity.py checks it on generated graphs). Rejected
edges, blocked identifiers and merges are not reported yet (docs/spark.md: the next slices).

PySpark is imported lazily (an optional dependency: ``pip install customer-context[spark]``); the executors'
Python (``PYSPARK_PYTHON``) must be able to import this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from customer_context.assemble import identity as resolver

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

MAX_ROUNDS = 200  # large-star/small-star rounds before giving up (a chain of 10^6 needs ~25)


@dataclass(frozen=True)
class SparkIdentityResult:
    """The outcome of :func:`resolve_on_spark`.

    Attributes:
        graph: The identity graph, as :func:`identity.result_to_arrow` of :func:`identity.resolve` on the same
            input: identifier_type, identifier_value, profile_id, joined_via, profile_first_seen.
        rounds: Large-star + small-star rounds until the components stopped changing.
        components: Connected components (identifiers that are not blocked, previous profiles joining theirs).
        resolved_in_spark: Components resolved by rule in Spark.
        resolved_in_order: Components handed to the ordered resolver (over a limit or the cap, or merging
            previous profiles).
        identifiers_in_order: Identifiers in those components.
    """

    graph: pa.Table
    rounds: int
    components: int
    resolved_in_spark: int
    resolved_in_order: int
    identifiers_in_order: int


def resolve_on_spark(spark: SparkSession, nodes: pa.Table, edges: pa.Table, config: resolver.IdentityConfig,
                     previous: pa.Table | None = None, *, max_rounds: int = MAX_ROUNDS) -> SparkIdentityResult:
    """Resolve identifiers into profiles on ``spark``; the same graph as :func:`identity.resolve`.

    Args:
        spark: The session to compute with.
        nodes: Columns type, value, first_seen (as :func:`identity.nodes_from_arrow`).
        edges: Columns a_type, a_value, b_type, b_value, first_seen, source (as :func:`identity.edges_from_arrow`).
        config: Rules, limits, blocked values.
        previous: The previous build's graph (identifier_type, identifier_value, profile_id, profile_first_seen).
        max_rounds: Rounds of the connected-components loop before it gives up (RuntimeError).
    """
    from pyspark.sql import functions as F

    node_t, edge_t, prev_t = _inputs(nodes, edges, previous)
    n_df, e_df = _frame(spark, node_t), _frame(spark, edge_t)
    p_df = _frame(spark, prev_t)

    idents = _identifiers(n_df, e_df, p_df, config).cache()
    usable = idents.filter(~F.col("blocked"))
    # one previous profile per identifier (the smallest id, as the resolver picks), blocked ones left out
    prev_of = (p_df.join(usable.select("type", "value"), ["type", "value"], "left_semi")
               .groupBy("type", "value").agg(F.min("pid").alias("pid")))
    pid_fs = p_df.groupBy("pid").agg(F.min("fs").alias("pid_fs"))

    # Edges between usable identifiers, deduplicated as unordered pairs: the earliest (first_seen, source).
    ka, kb = _key("a_type", "a_value"), _key("b_type", "b_value")
    usable_keys = usable.select(_key("type", "value").alias("k"))
    pairs = (e_df.select(ka.alias("ka"), kb.alias("kb"), "fs", "source").filter(F.col("ka") != F.col("kb"))
             .join(usable_keys.withColumnRenamed("k", "ka"), "ka", "left_semi")
             .join(usable_keys.withColumnRenamed("k", "kb"), "kb", "left_semi")
             .groupBy(F.least("ka", "kb").alias("k1"), F.greatest("ka", "kb").alias("k2"))
             .agg(F.min(F.struct("fs", "source")).alias("first"))).cache()
    links = prev_of.select(_key("type", "value").alias("k1"), F.concat(F.lit("p"), "pid").alias("k2"))
    labels, rounds = connected_components(pairs.select("k1", "k2").union(links), max_rounds=max_rounds)

    members = (usable.withColumn("k", _key("type", "value"))
               .join(labels.withColumnRenamed("vertex", "k"), "k", "left")
               .withColumn("comp", F.coalesce("component", "k")).drop("component")
               .join(prev_of, ["type", "value"], "left")).cache()
    over = (members.groupBy("comp", "type").agg(F.count("*").alias("n"), F.first("lim").alias("lim"))
            .groupBy("comp").agg(F.max((F.col("n") > F.col("lim")).cast("int")).alias("over")))
    comps = (members.groupBy("comp").agg(
        F.count("*").alias("size"), F.countDistinct("pid").alias("pids"), F.max("pid").alias("pid"),
        F.min(F.struct("fs", "prio", "type", "value")).alias("seed"))
        .join(over, "comp")
        .withColumn("simple", (F.col("size") <= config.max_identifiers_per_profile) & (F.col("over") == 0)
                    & (F.col("pids") <= 1))).cache()
    counts = comps.groupBy("simple").count().collect()
    simple_count = sum(r["count"] for r in counts if r["simple"])
    ordered_count = sum(r["count"] for r in counts if not r["simple"])

    simple = _simple_graph(members, comps.filter("simple"), pairs, pid_fs)
    ordered_keys = members.join(comps.filter(~F.col("simple")).select("comp"), "comp", "left_semi")
    ordered, ordered_idents = (_ordered_graph(ordered_keys, n_df, e_df, p_df, config) if ordered_count
                               else (_empty_graph(), 0))
    graph = _in_resolver_order(simple, ordered)
    for frame in (idents, pairs, members, comps):
        frame.unpersist()
    return SparkIdentityResult(graph, rounds, simple_count + ordered_count, simple_count, ordered_count,
                               ordered_idents)


def connected_components(edges: DataFrame, *, max_rounds: int = MAX_ROUNDS) -> tuple[DataFrame, int]:
    """Connected components of an undirected graph by alternating large-star and small-star steps.

    Args:
        edges: Two string columns ``k1``, ``k2`` (vertices; either orientation, repeats and self-loops fine).

    Returns:
        (``vertex``, ``component``) for every vertex of an edge, ``component`` the smallest vertex of its
        component; and the number of rounds (one round = a large-star then a small-star step) it took until
        every component was a star around its smallest vertex (no label changes after that).
    """
    from pyspark.sql import functions as F

    current = (edges.select(F.greatest("k1", "k2").alias("a"), F.least("k1", "k2").alias("b"))
               .filter(F.col("a") != F.col("b")).distinct().localCheckpoint())
    rounds = 0
    while True:
        if rounds >= max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        rounds += 1
        # Large-star: every vertex u links its larger neighbours to the smallest of u and its neighbours.
        both = current.select(F.col("a").alias("u"), F.col("b").alias("v")).union(
            current.select(F.col("b").alias("u"), F.col("a").alias("v")))
        smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
        large = (both.filter(F.col("v") > F.col("u")).join(smallest, "u")
                 .select(F.col("v").alias("a"), F.col("m").alias("b")).distinct())
        # Small-star: every vertex u links itself and its smaller neighbours to the smallest of them.
        smaller = large.groupBy("a").agg(F.min("b").alias("m"))
        small = (large.join(smaller, "a").select(F.col("b").alias("a"), F.col("m").alias("b"))
                 .filter(F.col("a") != F.col("b"))
                 .union(smaller.select("a", F.col("m").alias("b"))).distinct()).localCheckpoint()
        current = small
        # A star forest (every vertex points at one centre, no centre points anywhere): nothing changes any more.
        centres = current.select(F.col("a").alias("b")).distinct()
        pointing_on = current.join(centres, "b", "left_semi").select("a")
        two_centres = current.groupBy("a").count().filter(F.col("count") > 1).select("a")
        if pointing_on.union(two_centres).limit(1).count() == 0:
            break
    labels = current.select(F.col("a").alias("vertex"), F.col("b").alias("component")).union(
        current.select(F.col("b").alias("vertex"), F.col("b").alias("component"))).distinct()
    return labels, rounds


# --------------------------------------------------------------------------------------------------------------


def _inputs(nodes: pa.Table, edges: pa.Table, previous: pa.Table | None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The inputs as the resolver reads them: strings, first_seen as int64 microseconds (UTC) in ``fs``, rows
    missing a part left out (the resolver drops such nodes and previous rows, and rejects such edges)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    s = resolver._strings
    node_t = resolver._nodes_table(nodes)
    node_t = pa.table({"type": s(node_t["type"]), "value": s(node_t["value"]),
                       "fs": resolver._micros(node_t["first_seen"])})
    edge_t = resolver._edges_table(edges)
    edge_t = pa.table({"a_type": s(edge_t["a_type"]), "a_value": s(edge_t["a_value"]),
                       "b_type": s(edge_t["b_type"]), "b_value": s(edge_t["b_value"]),
                       "fs": resolver._micros(edge_t["first_seen"]),
                       "source": pc.fill_null(s(edge_t["source"]), "")})
    if previous is None:
        prev_t = pa.table({"type": pa.array([], pa.string()), "value": pa.array([], pa.string()),
                           "pid": pa.array([], pa.string()), "fs": pa.array([], pa.int64())})
    else:
        prev_t = pa.table({"type": s(previous["identifier_type"]), "value": s(previous["identifier_value"]),
                           "pid": s(previous["profile_id"]), "fs": resolver._micros(previous["profile_first_seen"])})
    return node_t.filter(_all_valid(node_t)), edge_t.filter(_all_valid(edge_t)), prev_t.filter(_all_valid(prev_t))


def _all_valid(table: pa.Table) -> Any:
    import pyarrow.compute as pc

    mask = pc.is_valid(table.column(0))
    for column in table.columns[1:]:
        mask = pc.and_(mask, pc.is_valid(column))
    return mask


def _frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    from pyspark.sql import types as T

    kinds = {"fs": T.LongType()}
    schema = T.StructType([T.StructField(name, kinds.get(name, T.StringType()), False)
                           for name in table.column_names])
    if table.num_rows == 0:
        return spark.createDataFrame([], schema)
    return spark.createDataFrame(table, schema=schema)  # type: ignore[arg-type]


def _key(type_column: str, value_column: str) -> Column:
    """An identifier as one vertex name (``i`` + type + NUL + value; previous profiles are ``p`` + id)."""
    from pyspark.sql import functions as F

    return F.concat(F.lit("i"), F.col(type_column), F.lit("\x00"), F.col(value_column))


def _identifiers(n_df: DataFrame, e_df: DataFrame, p_df: DataFrame, config: resolver.IdentityConfig) -> DataFrame:
    """Every identifier: type, value, fs, prio, lim, blocked."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    no_fs = F.lit(None).cast("long")
    seen = (n_df.select("type", "value", "fs", no_fs.alias("pfs"))
            .union(e_df.select(F.col("a_type").alias("type"), F.col("a_value").alias("value"), "fs", no_fs))
            .union(e_df.select(F.col("b_type").alias("type"), F.col("b_value").alias("value"), "fs", no_fs))
            .union(p_df.select("type", "value", no_fs.alias("fs"), F.col("fs").alias("pfs"))))
    idents = seen.groupBy("type", "value").agg(F.coalesce(F.min("fs"), F.min("pfs")).alias("fs"))
    prio = F.lit(resolver.DEFAULT_PRIORITY)
    lim = F.lit(config.default_limit)
    for name, rule in config.rules.items():
        prio = F.when(F.col("type") == name, F.lit(rule.priority)).otherwise(prio)
        lim = F.when(F.col("type") == name, F.lit(rule.limit)).otherwise(lim)
    schema = T.StructType([T.StructField("type", T.StringType()), T.StructField("value", T.StringType()),
                           T.StructField("fs", T.LongType()), T.StructField("blocked", T.BooleanType())])
    return (idents.mapInArrow(_blocked_batches(config), schema)
            .withColumn("prio", prio.cast("long")).withColumn("lim", lim.cast("long")))


def _blocked_batches(config: resolver.IdentityConfig) -> Any:
    """A mapInArrow function adding ``blocked`` by the resolver's own test of ``blocked_values``."""

    def blocked(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        test = resolver._Resolver(config)
        for batch in batches:
            mask = test._blocked_mask(batch.column("value")) if batch.num_rows else pa.array([], pa.bool_())
            yield pa.RecordBatch.from_arrays([batch.column("type"), batch.column("value"), batch.column("fs"), mask],
                                             ["type", "value", "fs", "blocked"])

    return blocked


def _simple_graph(members: DataFrame, simple: DataFrame, pairs: DataFrame, pid_fs: DataFrame) -> DataFrame:
    """Graph rows (plus ``fs``) of the components resolved by rule."""
    from pyspark.sql import functions as F

    comps = (simple.join(pid_fs, "pid", "left")
             .select("comp", "pid", "seed", F.least("seed.fs", "pid_fs").alias("profile_first_seen"),
                     F.coalesce("pid", F.concat(F.lit("p_"), F.substring(F.sha2(F.concat(
                         "seed.type", F.lit(":"), "seed.value"), 256), 1, 16))).alias("profile_id")))
    rows = members.join(comps.drop("pid"), "comp")
    # joined_via: the edge that brought each identifier, replayed per component on the executors
    ends = rows.select(
        "k", "comp", "type", "value", "fs", "prio", F.col("pid").isNotNull().alias("prev"))
    lo_end = ends.select(*[F.col(c).alias("a_" + c) for c in ends.columns])
    hi_end = ends.select(*[F.col(c).alias("b_" + c) for c in ends.columns]).drop("b_comp")
    replay = (pairs.join(lo_end, F.col("k1") == F.col("a_k")).join(hi_end, F.col("k2") == F.col("b_k"))
              .select(F.col("a_comp").alias("comp"), "a_type", "a_value", "a_fs", "a_prio", "a_prev",
                      "b_type", "b_value", "b_fs", "b_prio", "b_prev", "first.fs", "first.source"))
    reasons = replay.groupBy("comp").applyInArrow(
        _replay, "identifier_type string, identifier_value string, reason string")
    return (rows.join(reasons.withColumnRenamed("identifier_type", "type")
                      .withColumnRenamed("identifier_value", "value"), ["type", "value"], "left")
            .select(F.col("type").alias("identifier_type"), F.col("value").alias("identifier_value"),
                    "profile_id",
                    F.when(F.col("pid").isNotNull(), F.lit(resolver.KEPT))
                    .otherwise(F.coalesce("reason", F.lit(resolver.FIRST_IDENTIFIER))).alias("joined_via"),
                    "profile_first_seen", "fs"))


def _replay(table: pa.Table) -> pa.Table:
    """One simple component's edges in the resolver's order: the edge that brought each identifier.

    The union-find of :mod:`identity` without its limit checks (a simple component never meets them): the
    previous profile's members start as one group; each edge joins two groups, the one without the previous
    profile (or, with none, the one whose first identifier is younger) joins the other, and its first
    identifier records the edge.
    """
    import pyarrow as pa

    prio: dict[tuple[int, str, str], int] = {}
    prev: dict[tuple[int, str, str], bool] = {}
    order = []
    for r in table.to_pylist():
        a, b = (r["a_fs"], r["a_type"], r["a_value"]), (r["b_fs"], r["b_type"], r["b_value"])
        prio[a], prio[b], prev[a], prev[b] = r["a_prio"], r["b_prio"], r["a_prev"], r["b_prev"]
        lo, hi = (a, b) if a < b else (b, a)
        order.append(((r["fs"], min(prio[a], prio[b]), max(prio[a], prio[b]), lo, hi), r["source"]))
    order.sort()

    def rank(x: tuple[int, str, str]) -> tuple[int, int, str, str]:
        return x[0], prio[x], x[1], x[2]

    parent = {x: x for x in prio}
    seed = dict(parent)
    olds = [x for x in prio if prev[x]]
    for x in olds[1:]:
        parent[x] = olds[0]
    has_prev = {x: prev[x] for x in prio}

    def find(x: tuple[int, str, str]) -> tuple[int, str, str]:
        while parent[x] != x:
            parent[x] = x = parent[parent[x]]
        return x

    reason: dict[tuple[int, str, str], tuple[tuple[int, str, str], tuple[int, str, str], int, str]] = {}
    for (fs, _, _, lo, hi), source in order:
        a, b = find(lo), find(hi)
        if a == b:
            continue
        s1, s2 = seed[a], seed[b]
        older = rank(s1) < rank(s2)
        if has_prev[a] or (not has_prev[b] and older):
            reason[s2] = (hi, lo, fs, source)
        else:
            reason[s1] = (lo, hi, fs, source)
        parent[b] = a
        seed[a] = s1 if older else s2
        has_prev[a] = has_prev[a] or has_prev[b]

    whom = list(reason)
    when = resolver._iso(pa.array([reason[x][2] for x in whom], pa.int64())).to_pylist()
    texts = []
    for x, iso in zip(whom, when, strict=True):
        end, other, _, source = reason[x]
        via = f", via {end[1]}:{end[2]}" if end != x else ""
        texts.append(f"edge {source} with {other[1]}:{other[2]} at {iso}{via}")
    return pa.table({"identifier_type": pa.array([x[1] for x in whom], pa.string()),
                     "identifier_value": pa.array([x[2] for x in whom], pa.string()),
                     "reason": pa.array(texts, pa.string())})


def _ordered_graph(members: DataFrame, n_df: DataFrame, e_df: DataFrame, p_df: DataFrame,
                   config: resolver.IdentityConfig) -> tuple[pa.Table, int]:
    """Graph rows (plus ``fs``) of the components the ordered resolver decides: their inputs, collected and
    resolved together (components are independent: the resolver decides the same for them alone)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    idents = members.select("type", "value", "fs", "pid").toArrow()
    if idents.num_rows == 0:
        return _empty_graph(), 0
    spark = members.sparkSession
    keys = _frame(spark, idents.select(["type", "value"]))
    pids = _frame(spark, idents.filter(pc.is_valid(idents["pid"])).select(["pid"])).distinct()
    # the edges with an end in these components (one to a blocked identifier too: it counts for its other end's
    # first_seen), the nodes of their identifiers, the previous rows of their identifiers or of their profiles
    flag_a = keys.select(F.col("type").alias("a_type"), F.col("value").alias("a_value"), F.lit(True).alias("in_a"))
    flag_b = keys.select(F.col("type").alias("b_type"), F.col("value").alias("b_value"), F.lit(True).alias("in_b"))
    edges = (e_df.join(flag_a, ["a_type", "a_value"], "left").join(flag_b, ["b_type", "b_value"], "left")
             .filter(F.coalesce("in_a", "in_b"))
             .select("a_type", "a_value", "b_type", "b_value", "fs", "source").toArrow())
    nodes = n_df.join(keys, ["type", "value"], "left_semi").select("type", "value", "fs").toArrow()
    prev = (p_df.join(keys.withColumn("by_id", F.lit(True)), ["type", "value"], "left")
            .join(pids.withColumn("by_pid", F.lit(True)), "pid", "left")
            .filter(F.coalesce("by_id", "by_pid")).select("type", "value", "pid", "fs").toArrow())

    def stamped(table: pa.Table) -> pa.Table:
        return table.set_column(table.schema.get_field_index("fs"), "first_seen",
                                pc.cast(table["fs"], resolver._ts_type()))

    previous = pa.table({"identifier_type": prev["type"], "identifier_value": prev["value"],
                         "profile_id": prev["pid"], "profile_first_seen": pc.cast(prev["fs"], resolver._ts_type())})
    result = resolver.resolve(stamped(nodes), stamped(edges), config, previous if previous.num_rows else None)
    graph = resolver.result_to_arrow(result)
    fs = idents.select(["type", "value", "fs"]).rename_columns(["identifier_type", "identifier_value", "fs"])
    return graph.join(fs, ["identifier_type", "identifier_value"]), idents.num_rows


def _empty_graph() -> pa.Table:
    import pyarrow as pa

    return pa.table({"identifier_type": pa.array([], pa.string()), "identifier_value": pa.array([], pa.string()),
                     "profile_id": pa.array([], pa.string()), "joined_via": pa.array([], pa.string()),
                     "profile_first_seen": pa.array([], resolver._ts_type()), "fs": pa.array([], pa.int64())})


def _in_resolver_order(simple: DataFrame, ordered: pa.Table) -> pa.Table:
    """Both parts in one table, rows in the resolver's order: by the identifier's first_seen, type, value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _empty_graph().schema
    rows = simple.toArrow()
    rows = rows.set_column(rows.schema.get_field_index("profile_first_seen"), "profile_first_seen",
                           pc.cast(rows["profile_first_seen"], resolver._ts_type()))
    parts = [t.select(schema.names).cast(schema) for t in (rows, ordered) if t.num_rows]
    both = pa.concat_tables(parts) if parts else _empty_graph()
    both = both.sort_by([("fs", "ascending"), ("identifier_type", "ascending"), ("identifier_value", "ascending")])
    return both.drop_columns(["fs"]).append_column("first_seen", pc.cast(both["fs"], resolver._ts_type()))
