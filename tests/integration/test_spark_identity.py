"""Identity resolution on Spark (assemble/spark_identity.py) gives the graph the ordered resolver gives
(assemble/identity.py), row for row; its connected components take a logarithmic number of rounds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from customer_context.assemble.identity import (
    Edge,
    IdentifierRule,
    IdentityConfig,
    Node,
    _edges_table,
    _nodes_table,
    resolve,
    result_to_arrow,
)
from customer_context.assemble.spark_identity import connected_components, resolve_on_spark
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow  # each resolution is a few Spark jobs: seconds, not milliseconds

CONFIG = IdentityConfig(rules={
    "user_id": IdentifierRule("user_id", 1, 1),
    "email": IdentifierRule("email", 2, 2),
    "anonymous_id": IdentifierRule("anonymous_id", 10, 3),
}, max_identifiers_per_profile=12)  # device ids: no rule (limit 100), so a long device chain meets the cap
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ["user_id", "email", "anonymous_id", "device_id"]

Raw = tuple[tuple[str, str], tuple[str, str], int]


def _edges(raw: list[Raw], source: str = "event:identify") -> pa.Table:
    return _edges_table([Edge(a[0], a[1], b[0], b[1], T0 + timedelta(minutes=m), source) for a, b, m in raw])


def _nodes(raw: list[tuple[tuple[str, str], int]]) -> pa.Table:
    return _nodes_table([Node(t, v, T0 + timedelta(minutes=m)) for (t, v), m in raw])


def _both(spark: Any, nodes: pa.Table, edges: pa.Table, previous: pa.Table | None = None) -> tuple[pa.Table, Any]:
    """The ordered resolver's graph, and the Spark path's result; asserts they are the same table."""
    expected = result_to_arrow(resolve(nodes, edges, CONFIG, previous))
    got = resolve_on_spark(spark, nodes, edges, CONFIG, previous)
    assert got.graph.schema == expected.schema
    mismatched = [(e, g) for e, g in zip(expected.to_pylist(), got.graph.to_pylist(), strict=False) if e != g]
    assert not mismatched and got.graph.num_rows == expected.num_rows, mismatched[:3]
    return expected, got


# Shapes of components, each in its own value space (``ns``); minutes in 0..59, so a cut in time splits them.
def _chain(ns: str, kind: str, length: int, minutes: list[int]) -> list[Raw]:
    return [((kind, f"{ns}{i}"), (kind, f"{ns}{i + 1}"), minutes[i % len(minutes)]) for i in range(length)]


def _star(ns: str, kind: str, leaves: int, minutes: list[int]) -> list[Raw]:
    return [(("user_id", ns), (kind, f"{ns}{i}"), minutes[i % len(minutes)]) for i in range(leaves)]


minutes = st.lists(st.integers(0, 59), min_size=1, max_size=6)
chains = st.builds(lambda kind, n, m: lambda ns: _chain(ns, kind, n, m),
                   st.sampled_from(["device_id", "anonymous_id"]), st.integers(1, 14), minutes)
stars = st.builds(lambda kind, n, m: lambda ns: _star(ns, kind, n, m),
                  st.sampled_from(["device_id", "anonymous_id", "email"]), st.integers(1, 6), minutes)
identifier = st.tuples(st.sampled_from(TYPES), st.sampled_from(["a", "b", "c", "d", "null", " "]))
tangles = st.builds(lambda raw: lambda ns: [((a[0], ns + a[1]) if a[1].strip() and a[1] != "null" else a,
                                             (b[0], ns + b[1]) if b[1].strip() and b[1] != "null" else b, m)
                                            for a, b, m in raw],
                    st.lists(st.tuples(identifier, identifier, st.integers(0, 59)), max_size=14))
graphs = st.lists(st.one_of(chains, stars, tangles), min_size=1, max_size=6).map(
    lambda shapes: [edge for i, shape in enumerate(shapes) for edge in shape(f"g{i}")])
SETTINGS = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate])  # no shrinking: each example is seconds of Spark


@SETTINGS
@given(graphs, st.lists(st.tuples(identifier, st.integers(0, 59)), max_size=4), st.integers(0, 60))
def test_spark_resolves_generated_graphs_as_the_resolver_does(spark: Any, raw: list[Raw],
                                                              lone: list[tuple[tuple[str, str], int]],
                                                              cut: int) -> None:
    # Given chains, stars and tangles (merges over a limit, blocked values, self-loops, repeats), and as the
    # previous assignment the resolver's graph of what was seen before ``cut`` (profiles to keep, or to merge)
    before = [edge for edge in raw if edge[2] < cut]
    previous = result_to_arrow(resolve(_nodes([n for n in lone if n[1] < cut]), _edges(before), CONFIG))
    # Then the build of everything gives the same graph on Spark as in the resolver (checked in _both)
    _both(spark, _nodes(lone), _edges(raw, "event:track"), previous if cut else None)


def test_each_kind_of_component_goes_its_way(spark: Any) -> None:
    # Given a chain and a star within every limit, two users sharing a device's anonymous id (over the user_id
    # limit), a chain past the profile cap, and two previous profiles merged by a new edge
    raw = (_chain("c", "device_id", 5, [3, 1, 4]) + _star("s", "anonymous_id", 3, [2])
           + [(("user_id", "u1"), ("anonymous_id", "shared"), 1), (("user_id", "u2"), ("anonymous_id", "shared"), 2)]
           + _chain("long", "device_id", 15, [5]) + [(("email", "m1"), ("device_id", "m1"), 1),
                                                     (("email", "m2"), ("device_id", "m2"), 1)])
    lone = [(("crm_id", "x"), 0)]
    first, got = _both(spark, _nodes(lone), _edges(raw))
    # Then the chain, the star, the two merged pairs and the lone node are resolved in Spark; the merge over a
    # limit and the chain past the cap by the resolver
    assert (got.components, got.resolved_in_spark, got.resolved_in_order) == (7, 5, 2)
    # And when a later edge joins m1's and m2's profiles (within every limit), which one survives is the
    # resolver's call; the rest stays as it was
    merge = [(("device_id", "m1"), ("device_id", "m2"), 9)]
    _, again = _both(spark, _nodes(lone), _edges(raw + merge), first)
    assert (again.components, again.resolved_in_spark, again.resolved_in_order) == (6, 3, 3)


def test_a_long_chain_converges_in_a_logarithmic_number_of_rounds(spark: Any) -> None:
    # Given a chain of 1,000 vertices, named so that the smallest label sits at one end
    n = 1000
    chain = spark.createDataFrame([(f"v{i:04d}", f"v{i + 1:04d}") for i in range(n - 1)], "k1 string, k2 string")
    # When its connected components are computed (allowed 2·log2(n) rounds, then an error)
    bound = 2 * math.ceil(math.log2(n))
    labels, rounds = connected_components(chain, max_rounds=bound)
    # Then it is one component, labelled with its smallest vertex, in at most 2·log2(n) = 20 rounds (label
    # propagation would take ~1,000)
    assert labels.count() == n
    assert {row["component"] for row in labels.select("component").distinct().collect()} == {"v0000"}
    assert rounds <= bound
