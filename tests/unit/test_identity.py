"""Identity resolution: stitching with merge protection, blocked values, stable ids, order independence."""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from customer_context.assemble.identity import (
    Edge,
    EdgeTable,
    IdentifierRule,
    IdentityConfig,
    IdentityResult,
    Node,
    PreviousProfile,
    edges_from_arrow,
    nodes_from_arrow,
    previous_from_arrow,
    profile_id_for,
    resolve,
    result_to_arrow,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SEEN = re.compile(r" \[pair seen \d+ times\]$")
CONFIG = IdentityConfig(rules={
    "user_id": IdentifierRule("user_id", 1, 1),
    "email": IdentifierRule("email", 2, 5),
    "crm_id": IdentifierRule("crm_id", 4, 1),
    "anonymous_id": IdentifierRule("anonymous_id", 10, 100),
})


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def edge(a: str, b: str, minutes: float, source: str = "event:identify") -> Edge:
    """An edge between ``type:value`` identifiers."""
    a_type, a_value = a.split(":", 1)
    b_type, b_value = b.split(":", 1)
    return Edge(a_type, a_value, b_type, b_value, at(minutes), source)


def node(identifier: str, minutes: float) -> Node:
    type_, value = identifier.split(":", 1)
    return Node(type_, value, at(minutes))


def pid(result: IdentityResult, identifier: str) -> str:
    type_, value = identifier.split(":", 1)
    return result.assignments[(type_, value)]


def why(result: IdentityResult, identifier: str) -> str:
    type_, value = identifier.split(":", 1)
    return result.joined_via[(type_, value)]


def groups(result: IdentityResult) -> set[frozenset[str]]:
    """The partition of identifiers into profiles, ignoring profile ids."""
    members: dict[str, set[str]] = defaultdict(set)
    for (type_, value), profile in result.assignments.items():
        members[profile].add(f"{type_}:{value}")
    return {frozenset(m) for m in members.values()}


def fingerprint(result: IdentityResult) -> tuple:
    return (result.assignments, result.joined_via, result.rejected_edges, result.blocked, result.merged,
            result.profile_first_seen)


# -- the classic journeys -------------------------------------------------------------------------------------


def test_an_anonymous_visitor_joins_the_user_when_identified() -> None:
    # Given a visitor browsing anonymously, then identifying as u1
    nodes = [node("anonymous_id:a1", 0)]
    edges = [edge("anonymous_id:a1", "user_id:u1", 5)]
    # When resolved
    result = resolve(nodes, edges, CONFIG)
    # Then both are one profile, named after the first identifier seen (the anonymous id)
    assert pid(result, "anonymous_id:a1") == pid(result, "user_id:u1") == profile_id_for("anonymous_id", "a1")
    assert why(result, "anonymous_id:a1") == "first identifier"
    assert why(result, "user_id:u1") == "edge event:identify with anonymous_id:a1 at 2026-01-05T09:05:00Z"
    assert result.profile_first_seen[pid(result, "user_id:u1")] == at(0)
    assert result.rejected_edges == [] and result.merged == {}


def test_an_alias_joins_the_previous_id_to_the_user() -> None:
    # Given an alias call: previousId (a device id) → userId
    edges = [edge("anonymous_id:old-device", "user_id:u1", 3, "event:alias")]
    # When resolved
    result = resolve([node("anonymous_id:old-device", 1)], edges, CONFIG)
    # Then they are one profile, and the reason names the alias
    assert pid(result, "anonymous_id:old-device") == pid(result, "user_id:u1")
    assert why(result, "user_id:u1").startswith("edge event:alias with anonymous_id:old-device at ")


def test_two_devices_of_the_same_user_are_one_profile() -> None:
    # Given a user seen on a laptop and on a phone
    nodes = [node("anonymous_id:laptop", 0), node("anonymous_id:phone", 60)]
    edges = [edge("anonymous_id:laptop", "user_id:u1", 5), edge("anonymous_id:phone", "user_id:u1", 65)]
    # When resolved
    result = resolve(nodes, edges, CONFIG)
    # Then one profile holds both devices and the user
    assert groups(result) == {frozenset({"anonymous_id:laptop", "anonymous_id:phone", "user_id:u1"})}
    assert why(result, "anonymous_id:phone") == "edge event:identify with user_id:u1 at 2026-01-05T10:05:00Z"


def test_a_record_only_identifier_joins_the_web_profile_through_the_email() -> None:
    # Given a web profile (device, user, email from identify traits) and a CRM row linking crm_id ↔ email
    edges = [
        edge("anonymous_id:a1", "user_id:u1", 1),
        edge("user_id:u1", "email:ada@example.com", 1),
        edge("crm_id:c-42", "email:ada@example.com", 30, "record:crm_contacts"),
    ]
    # When resolved
    result = resolve([node("anonymous_id:a1", 0)], edges, CONFIG)
    # Then the CRM id is in the web profile
    assert len({pid(result, i) for i in ("anonymous_id:a1", "user_id:u1", "email:ada@example.com",
                                         "crm_id:c-42")}) == 1
    assert why(result, "crm_id:c-42").startswith("edge record:crm_contacts with email:ada@example.com at ")


def test_identifiers_seen_alone_get_their_own_profile() -> None:
    # Given an anonymous visitor who never identified and a record-only id
    nodes = [node("anonymous_id:lurker", 0), node("crm_id:c-7", 3)]
    # When resolved without edges
    result = resolve(nodes, [], CONFIG)
    # Then each is its own profile
    assert pid(result, "anonymous_id:lurker") == profile_id_for("anonymous_id", "lurker")
    assert pid(result, "crm_id:c-7") == profile_id_for("crm_id", "c-7")
    assert why(result, "crm_id:c-7") == "first identifier"
    assert result.stats["profiles"] == 2


# -- merge protection -----------------------------------------------------------------------------------------


def test_a_shared_device_does_not_merge_two_users() -> None:
    # Given a family computer: u1 signs in, later u2 signs in on the same device
    edges = [edge("anonymous_id:family-pc", "user_id:u1", 5), edge("anonymous_id:family-pc", "user_id:u2", 50)]
    # When resolved
    result = resolve([node("anonymous_id:family-pc", 0)], edges, CONFIG)
    # Then u1 and u2 stay apart and the device stays with the first user
    assert pid(result, "user_id:u1") != pid(result, "user_id:u2")
    assert pid(result, "anonymous_id:family-pc") == pid(result, "user_id:u1")
    # And the second edge is refused, the reason naming the limit and both users
    [(refused, reason)] = result.rejected_edges
    assert refused == edges[1]
    assert reason == (f"user_id limit 1: profile {pid(result, 'user_id:u1')} already holds user_id u1, "
                      f"edge brings user_id u2 (profile {pid(result, 'user_id:u2')})")


def test_at_equal_times_edges_between_important_identifiers_go_first() -> None:
    # Given the shared device of u1, then one event carrying that device, a new user u2 and u2's email
    edges = [
        edge("anonymous_id:family-pc", "user_id:u1", 5),
        edge("anonymous_id:family-pc", "user_id:u2", 50),
        edge("anonymous_id:family-pc", "email:u2@example.com", 50),
        edge("user_id:u2", "email:u2@example.com", 50),
    ]
    # When resolved
    result = resolve([], edges, CONFIG)
    # Then the email joins u2 (user_id–email first), not u1 through the device
    assert pid(result, "email:u2@example.com") == pid(result, "user_id:u2") != pid(result, "user_id:u1")
    assert {(e.a_value, e.b_value) for e, _ in result.rejected_edges} == {
        ("family-pc", "u2"), ("family-pc", "u2@example.com")}


def test_the_per_profile_identifier_cap_holds() -> None:
    # Given a user seen on five devices, with a cap of three identifiers per profile
    config = IdentityConfig(rules=CONFIG.rules, max_identifiers_per_profile=3)
    edges = [edge(f"anonymous_id:d{k}", "user_id:u1", k) for k in range(5)]
    # When resolved
    result = resolve([], edges, config)
    # Then the profile holds three identifiers and the other devices stay alone
    sizes = Counter(result.assignments.values())
    assert sizes[pid(result, "user_id:u1")] == 3
    assert len(result.rejected_edges) == 3
    assert all(reason.startswith("profile cap 3: profile ") for _, reason in result.rejected_edges)


def test_a_type_limit_above_one_allows_that_many() -> None:
    # Given a user with seven emails (limit 5)
    edges = [edge("user_id:u1", f"email:e{k}@example.com", k) for k in range(7)]
    # When resolved
    result = resolve([], edges, CONFIG)
    # Then the first five join; the refusal lists what the profile holds
    joined = [k for k in range(7) if pid(result, f"email:e{k}@example.com") == pid(result, "user_id:u1")]
    assert joined == [0, 1, 2, 3, 4]
    owner, stray = pid(result, "user_id:u1"), pid(result, "email:e5@example.com")
    assert result.rejected_edges[0][1] == (
        f"email limit 5: profile {owner} already holds email e0@example.com, e1@example.com, e2@example.com "
        f"(+2 more), edge brings email e5@example.com (profile {stray})")


def test_blocked_values_never_join() -> None:
    # Given events whose userId is a placeholder
    edges = [
        edge("anonymous_id:a1", "user_id:0", 1),
        edge("anonymous_id:a2", "user_id:null", 2),
        edge("anonymous_id:a3", "user_id:Anonymous", 3),
        edge("anonymous_id:a4", "user_id:   ", 4),
        edge("anonymous_id:a1", "anonymous_id:a2", 5, "event:alias"),
    ]
    # When resolved
    result = resolve([node("user_id:undefined", 0)], edges, CONFIG)
    # Then the placeholders have no profile, are reported, and their edges are refused
    assert result.blocked == [("user_id", "   "), ("user_id", "0"), ("user_id", "Anonymous"), ("user_id", "null"),
                              ("user_id", "undefined")]
    assert all(("user_id", v) not in result.assignments for _, v in result.blocked)
    assert [reason for _, reason in result.rejected_edges[:2]] == [
        "blocked value user_id:'0' (matches ^[0-]*$)",
        "blocked value user_id:'null' (matches ^(null|none|nil|undefined|anonymous|unknown)$)",
    ]
    assert "(empty)" in result.rejected_edges[3][1]
    # And the devices are not glued together through a placeholder (only the real alias joins a1 and a2)
    assert groups(result) == {frozenset({"anonymous_id:a1", "anonymous_id:a2"}), frozenset({"anonymous_id:a3"}),
                              frozenset({"anonymous_id:a4"})}


# -- determinism and stable ids -------------------------------------------------------------------------------


def journeys() -> tuple[list[Node], list[Edge]]:
    """A small but varied graph: devices, users, emails, records, a shared device, placeholders."""
    nodes = [node(f"anonymous_id:a{k}", k) for k in range(12)] + [node("anonymous_id:lurker", 3)]
    edges = [
        edge("anonymous_id:a0", "user_id:u0", 10), edge("anonymous_id:a1", "user_id:u0", 11),
        edge("anonymous_id:a2", "user_id:u1", 12), edge("user_id:u1", "email:u1@example.com", 12),
        edge("anonymous_id:a3", "email:u1@example.com", 13), edge("crm_id:c1", "email:u1@example.com", 14,
                                                                 "record:crm_contacts"),
        edge("anonymous_id:a4", "user_id:u2", 15), edge("anonymous_id:a4", "user_id:u3", 16),
        edge("anonymous_id:a5", "user_id:null", 17), edge("anonymous_id:a6", "anonymous_id:a7", 18, "event:alias"),
        edge("anonymous_id:a7", "user_id:u4", 18), edge("anonymous_id:a8", "user_id:u4", 18),
        edge("anonymous_id:a9", "email:u1@example.com", 19), edge("user_id:u3", "email:u3@example.com", 20),
        edge("crm_id:c1", "user_id:u5", 21, "record:crm_contacts"),
    ]
    return nodes, edges


def test_the_same_input_twice_gives_the_same_ids() -> None:
    # Given one input
    nodes, edges = journeys()
    # When resolved twice from scratch
    first, second = resolve(nodes, edges, CONFIG), resolve(nodes, edges, CONFIG)
    # Then everything is identical, and new ids derive from each profile's first identifier
    assert fingerprint(first) == fingerprint(second)
    assert pid(first, "user_id:u1") == profile_id_for("anonymous_id", "a2")


def test_input_order_duplicates_and_batches_do_not_change_the_result() -> None:
    # Given the same edges shuffled, repeated (later and in the other orientation) and split into batches
    nodes, edges = journeys()
    expected = resolve(nodes, edges, CONFIG)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = edges + [Edge(e.b_type, e.b_value, e.a_type, e.a_value, e.first_seen + timedelta(hours=1),
                                 e.source) for e in rng.sample(edges, 5)]
        rng.shuffle(shuffled)
        cut = rng.randrange(1, len(shuffled))
        batches = [edges_from_arrow(table_of_edges(shuffled[:cut])), edges_from_arrow(table_of_edges(shuffled[cut:]))]
        # When resolved (batches concatenated)
        table = pa.concat_tables([b.table for b in batches])
        result = resolve(rng.sample(nodes, len(nodes)), edges_from_arrow(table), CONFIG)
        # Then the result is the same, down to the reasons (the repeats only add to the sightings count)
        assert fingerprint(result)[:2] == fingerprint(expected)[:2]
        assert [e for e, _ in result.rejected_edges] == [e for e, _ in expected.rejected_edges]
        assert [SEEN.sub("", r) for _, r in result.rejected_edges] == [
            SEEN.sub("", r) for _, r in expected.rejected_edges]
        assert result.blocked == expected.blocked and result.profile_first_seen == expected.profile_first_seen


def test_building_in_time_batches_matches_building_from_scratch() -> None:
    # Given the edges split by time into three builds, each fed the previous build's graph
    nodes, edges = journeys()
    scratch = resolve(nodes, edges, CONFIG)
    previous = None
    for until in (12.5, 16.5, 99):
        batch_nodes = [n for n in nodes if n.first_seen <= at(until)]
        batch_edges = [e for e in edges if e.first_seen <= at(until)]
        # When each build resolves everything seen so far
        result = resolve(batch_nodes, batch_edges, CONFIG, previous)
        previous = result_to_arrow(result)
    # Then the last build equals the build from scratch (ids included)
    assert result.assignments == scratch.assignments
    assert result.profile_first_seen == scratch.profile_first_seen
    assert [e for e, _ in result.rejected_edges] == [e for e, _ in scratch.rejected_edges]


def test_a_profile_that_grows_keeps_its_id() -> None:
    # Given a previous build with the profile {a1, u1}
    before = resolve([node("anonymous_id:a1", 0)], [edge("anonymous_id:a1", "user_id:u1", 5)], CONFIG)
    old_id = pid(before, "user_id:u1")
    # When a new device of u1 shows up, even one first seen earlier than the profile
    after = resolve([node("anonymous_id:a2", -100)], [edge("anonymous_id:a2", "user_id:u1", 90)], CONFIG,
                    previous_from_arrow(result_to_arrow(before)))
    # Then the profile keeps its id and the device explains how it joined
    assert pid(after, "anonymous_id:a2") == pid(after, "anonymous_id:a1") == old_id
    assert why(after, "user_id:u1") == "kept from previous build"
    assert why(after, "anonymous_id:a2") == "edge event:identify with user_id:u1 at 2026-01-05T10:30:00Z"
    assert after.merged == {}
    assert after.profile_first_seen[old_id] == at(-100)


def test_an_edge_between_two_existing_profiles_merges_them_and_the_older_id_survives() -> None:
    # Given two profiles from a previous build: a device with an email (older) and a signed-in user
    before = resolve([node("anonymous_id:a1", 0), node("user_id:u1", 30)],
                     [edge("anonymous_id:a1", "email:ada@example.com", 1)], CONFIG)
    older, newer = pid(before, "anonymous_id:a1"), pid(before, "user_id:u1")
    # When an identify links the user and the email
    after = resolve([], [edge("user_id:u1", "email:ada@example.com", 60)], CONFIG, result_to_arrow(before))
    # Then the older id survives and the merge is reported
    assert pid(after, "user_id:u1") == pid(after, "anonymous_id:a1") == older
    assert after.merged == {newer: older}
    assert why(after, "user_id:u1") == (f"kept from previous build (was {newer}; merged by edge event:identify "
                                        f"user_id:u1 ↔ email:ada@example.com at 2026-01-05T10:00:00Z)")
    assert why(after, "anonymous_id:a1") == "kept from previous build"


def test_at_equal_first_seen_the_profile_a_scratch_build_would_name_survives() -> None:
    # Given two previous profiles first seen at the same time
    previous = {("email", "b@example.com"): PreviousProfile("p_a", at(0)),
                ("email", "a@example.com"): PreviousProfile("p_b", at(0))}
    # When an edge links them
    result = resolve([], [edge("email:b@example.com", "email:a@example.com", 9)], CONFIG, previous)
    # Then the one whose first identifier ranks first by (priority, type, value) survives, not the smaller id
    assert result.merged == {"p_a": "p_b"}


def test_a_previous_profile_over_a_lowered_limit_is_kept_as_it_is() -> None:
    # Given a previous profile holding two user ids (the limit was 2 then, it is 1 now)
    previous = {("user_id", "u1"): PreviousProfile("p_old", at(0)), ("user_id", "u2"): PreviousProfile("p_old", at(0))}
    # When a device of u1 and a third user id arrive
    result = resolve([], [edge("anonymous_id:a1", "user_id:u1", 5), edge("user_id:u3", "user_id:u2", 6)],
                     CONFIG, previous)
    # Then the profile keeps both users and takes the device, but refuses a third user id
    assert pid(result, "user_id:u1") == pid(result, "user_id:u2") == pid(result, "anonymous_id:a1") == "p_old"
    assert pid(result, "user_id:u3") != "p_old"
    assert result.rejected_edges[0][1].startswith("user_id limit 1: profile ")


def test_identifiers_only_in_the_previous_build_are_kept() -> None:
    # Given a previous graph with an identifier absent from this build's input
    previous = {("crm_id", "c9"): PreviousProfile("p_crm", at(-1000))}
    # When resolved
    result = resolve([], [], CONFIG, previous)
    # Then it keeps its profile
    assert result.assignments == {("crm_id", "c9"): "p_crm"}
    assert result.profile_first_seen == {"p_crm": at(-1000)}


# -- Arrow in and out -----------------------------------------------------------------------------------------


def table_of_edges(edges: list[Edge]) -> pa.Table:
    return pa.Table.from_pylist([e.__dict__ for e in edges], schema=pa.schema([
        ("a_type", pa.string()), ("a_value", pa.string()), ("b_type", pa.string()), ("b_value", pa.string()),
        ("first_seen", pa.timestamp("us", tz="UTC")), ("source", pa.string())]))


def test_arrow_tables_in_and_out() -> None:
    # Given nodes and edges as Arrow tables (what DuckDB hands over)
    nodes, edges = journeys()
    node_table = pa.Table.from_pylist([n.__dict__ for n in nodes])
    edge_view = edges_from_arrow(table_of_edges(edges))
    # When resolved
    result = resolve(nodes_from_arrow(node_table), edge_view, CONFIG)
    # Then it matches the objects' result, and the views iterate as dataclasses
    assert fingerprint(result) == fingerprint(resolve(nodes, edges, CONFIG))
    assert isinstance(edge_view, EdgeTable) and list(edge_view) == edges
    # And the graph table has the documented schema and feeds the next build
    graph = result_to_arrow(result)
    assert graph.schema == pa.schema([("identifier_type", pa.string()), ("identifier_value", pa.string()),
                                      ("profile_id", pa.string()), ("joined_via", pa.string()),
                                      ("profile_first_seen", pa.timestamp("us", tz="UTC")),
                                      ("first_seen", pa.timestamp("us", tz="UTC"))])
    assert graph.num_rows == len(result.assignments)
    again = resolve(nodes, edges, CONFIG, graph)
    assert again.assignments == result.assignments and again.merged == {}
    # And a table rebuilt from the (edited) dicts follows the edit
    result.assignments[("user_id", "u0")] = "p_edited"
    assert "p_edited" in result_to_arrow(result)["profile_id"].to_pylist()


def test_incomplete_rows_are_refused_or_ignored() -> None:
    # Given an edge with a missing value and a node with a missing time, next to good rows
    edges = table_of_edges([edge("anonymous_id:a1", "user_id:u1", 1)])
    edges = pa.concat_tables([edges, pa.Table.from_pylist(
        [{"a_type": "anonymous_id", "a_value": None, "b_type": "user_id", "b_value": "u1", "first_seen": at(2),
          "source": "event:identify"}], schema=edges.schema)])
    nodes = pa.Table.from_pylist([{"type": "anonymous_id", "value": "a9", "first_seen": None}],
                                 schema=pa.schema([("type", pa.string()), ("value", pa.string()),
                                                   ("first_seen", pa.timestamp("us", tz="UTC"))]))
    # When resolved
    result = resolve(nodes, edges, CONFIG)
    # Then the edge is refused with the missing column named, the node is ignored, the rest resolves
    assert [reason for _, reason in result.rejected_edges] == ["incomplete edge: missing a_value"]
    assert groups(result) == {frozenset({"anonymous_id:a1", "user_id:u1"})}


def test_naive_timestamps_are_utc() -> None:
    naive = resolve([Node("anonymous_id", "a", datetime(2026, 1, 5, 9, 0))], [], CONFIG)
    assert naive.profile_first_seen == {profile_id_for("anonymous_id", "a"): T0}


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="describes type"):
        IdentityConfig(rules={"email": IdentifierRule("user_id", 1, 1)})
    with pytest.raises(ValueError, match="invalid regex"):
        IdentityConfig(rules={}, blocked_values=("(",))
    with pytest.raises(ValueError, match="limit must be >= 1"):
        IdentifierRule("email", 2, 0)
    assert CONFIG.rule("phone") == IdentifierRule("phone", 100, 100)


# -- property: random graphs ----------------------------------------------------------------------------------

RANDOM_CONFIG = IdentityConfig(
    rules={"user_id": IdentifierRule("user_id", 1, 1), "email": IdentifierRule("email", 2, 2),
           "crm_id": IdentifierRule("crm_id", 4, 1), "anonymous_id": IdentifierRule("anonymous_id", 10, 3)},
    max_identifiers_per_profile=6,
    default_limit=2,
)


def random_graph(rng: random.Random) -> tuple[list[Node], list[Edge]]:
    types = ["user_id", "email", "crm_id", "anonymous_id", "anonymous_id", "phone"]
    pool = [(rng.choice(types), rng.choice(["null", "0"]) if rng.random() < 0.05 else f"v{rng.randrange(30)}")
            for _ in range(rng.randrange(5, 60))]
    nodes = [Node(t, v, at(rng.randrange(40))) for t, v in rng.sample(pool, len(pool) // 2)]
    edges = []
    for _ in range(rng.randrange(1, 120)):
        (at_, av), (bt, bv) = rng.choice(pool), rng.choice(pool)
        edges.append(Edge(at_, av, bt, bv, at(rng.randrange(40)), rng.choice(["event:identify", "event:alias",
                                                                                "record:crm"])))
    return nodes, edges


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_respect_every_limit_and_are_order_independent(seed: int) -> None:
    # Given a random graph
    rng = random.Random(seed)
    nodes, edges = random_graph(rng)
    # When resolved
    result = resolve(nodes, edges, RANDOM_CONFIG)
    # Then every identifier but the blocked ones has a profile
    seen = {(n.type, n.value) for n in nodes} | {(e.a_type, e.a_value) for e in edges} | {
        (e.b_type, e.b_value) for e in edges}
    assert set(result.assignments) | set(result.blocked) == seen
    # And no profile exceeds a type limit or the cap
    by_profile: dict[str, Counter[str]] = defaultdict(Counter)
    for (type_, _), profile in result.assignments.items():
        by_profile[profile][type_] += 1
    for counts in by_profile.values():
        assert sum(counts.values()) <= RANDOM_CONFIG.max_identifiers_per_profile
        assert all(k <= RANDOM_CONFIG.rule(t).limit for t, k in counts.items())
    # And every edge is either inside one profile or refused (then across two profiles or blocked)
    refused = {frozenset({(e.a_type, e.a_value), (e.b_type, e.b_value)}) for e, _ in result.rejected_edges}
    for e in edges:
        a, b = (e.a_type, e.a_value), (e.b_type, e.b_value)
        if a == b:  # a self-loop only says the identifier exists
            continue
        if frozenset({a, b}) in refused:
            assert a in result.blocked or b in result.blocked or result.assignments[a] != result.assignments[b]
        else:
            assert result.assignments[a] == result.assignments[b]
    # And shuffling the input changes nothing
    assert fingerprint(resolve(rng.sample(nodes, len(nodes)), rng.sample(edges, len(edges)), RANDOM_CONFIG)) == (
        fingerprint(result))
    # And rebuilding on top of this result changes nothing either
    again = resolve(nodes, edges, RANDOM_CONFIG, result_to_arrow(result))
    assert again.assignments == result.assignments and again.merged == {}


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_built_in_time_batches_match_a_build_from_scratch(seed: int) -> None:
    # Given a random graph, and the same input fed to three builds cut by time, each on top of the last
    rng = random.Random(1000 + seed)
    nodes, edges = random_graph(rng)
    scratch = resolve(nodes, edges, RANDOM_CONFIG)
    previous = None
    for cut in sorted(rng.sample(range(40), 2)) + [40]:
        # When each build resolves everything seen so far
        result = resolve([n for n in nodes if n.first_seen < at(cut)], [e for e in edges if e.first_seen < at(cut)],
                         RANDOM_CONFIG, previous)
        previous = result_to_arrow(result)
    # Then the profiles, their ids and the refusals are those of a build from scratch
    assert result.assignments == scratch.assignments
    assert [e for e, _ in result.rejected_edges] == [e for e, _ in scratch.rejected_edges]
    assert sorted(result.profile_first_seen.values()) == sorted(scratch.profile_first_seen.values())
