"""Identity stitching, property-tested: order never matters, merge limits always hold, ids stay stable."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from customer_context.assemble.identity import (
    Edge,
    IdentifierRule,
    IdentityConfig,
    resolve,
    result_to_arrow,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CONFIG = IdentityConfig(rules={
    "user_id": IdentifierRule("user_id", 1, 1),
    "email": IdentifierRule("email", 2, 2),
    "anonymous_id": IdentifierRule("anonymous_id", 10, 3),
})
T0 = datetime(2026, 1, 1, tzinfo=UTC)

identifiers = st.tuples(st.sampled_from(["user_id", "email", "anonymous_id"]), st.sampled_from("abcdefgh"))
edges = st.lists(st.tuples(identifiers, identifiers, st.integers(0, 50)), max_size=40)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _edges(raw: list[tuple[tuple[str, str], tuple[str, str], int]]) -> list[Edge]:
    return [Edge(a[0], a[1], b[0], b[1], T0 + timedelta(minutes=m), "event:identify") for a, b, m in raw if a != b]


def _partition(result: object) -> set[frozenset[tuple[str, str]]]:
    groups: dict[str, set[tuple[str, str]]] = {}
    for identifier, profile in result.assignments.items():  # type: ignore[attr-defined]
        groups.setdefault(profile, set()).add(identifier)
    return {frozenset(g) for g in groups.values()}


@SETTINGS
@given(edges, st.randoms(use_true_random=False))
def test_order_of_edges_does_not_change_the_profiles(raw: list, rng: random.Random) -> None:
    first = resolve([], _edges(raw), CONFIG)
    shuffled = _edges(raw)
    rng.shuffle(shuffled)
    flipped = [Edge(e.b_type, e.b_value, e.a_type, e.a_value, e.first_seen, e.source) for e in shuffled]
    second = resolve([], flipped, CONFIG)
    assert _partition(first) == _partition(second)
    assert first.assignments == second.assignments  # the very same ids, not just the same groups


@SETTINGS
@given(edges)
def test_merge_limits_are_never_broken(raw: list) -> None:
    result = resolve([], _edges(raw), CONFIG)
    for group in _partition(result):
        counts = Counter(t for t, _ in group)
        for id_type, count in counts.items():
            assert count <= CONFIG.rule(id_type).limit, (id_type, group)


@SETTINGS
@given(edges, edges)
def test_ids_stay_stable_when_unrelated_data_arrives(old: list, new: list) -> None:
    before = resolve([], _edges(old), CONFIG)
    # unrelated: identifiers nobody has seen before (another value space), later in time
    unrelated = [((a[0], "z" + a[1]), (b[0], "z" + b[1]), m + 100) for a, b, m in new]
    after = resolve([], _edges(old) + _edges(unrelated), CONFIG, result_to_arrow(before))
    for identifier, profile in before.assignments.items():
        assert after.assignments[identifier] == profile


@SETTINGS
@given(edges, st.integers(0, 40))
def test_one_build_or_two_builds_give_the_same_groups(raw: list, cut: int) -> None:
    # Given the same edges resolved at once, or in two builds (the first seeing only the earlier ones)
    ordered = sorted(_edges(raw), key=lambda e: (e.first_seen, e.a_type, e.a_value, e.b_type, e.b_value))
    cut = min(cut, len(ordered))
    once = resolve([], ordered, CONFIG)
    first = resolve([], ordered[:cut], CONFIG)
    twice = resolve([], ordered, CONFIG, result_to_arrow(first))
    # Then the groups are the same: batch boundaries do not change who is one customer
    assert _partition(once) == _partition(twice)
