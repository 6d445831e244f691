"""Replay on a real lakehouse and the real build: after three builds, each version is answered exactly as fetch
answered at the time; the history names the fields that changed; the audit trail joins each record to the
version it served; the identity graph shows its edges and refusals; a deletion leaves no history or audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.collect.ingest import Rows, audit_row, write_rows
from customer_context.errors import Forbidden, InvalidRequest, NotFound
from customer_context.govern.regulations import new_regulation, run_job, suppress
from customer_context.pii import PiiPolicy
from customer_context.serve import replay
from customer_context.serve.audit import AuditLog
from customer_context.serve.consumers import Consumer
from customer_context.serve.fetch import ContextService
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, order, write_events

KEY = "replay-test-key"
SPEC = parse_spec(DEFAULT_SPEC.read_text())
EVERYTHING = Consumer("agent", sections=frozenset({"*"}))
AUDITOR = Consumer("auditor", sections=frozenset({"*"}), audit=True)
TRAITS_ONLY = Consumer("traits-only", fields=frozenset({"traits.orders_90d", "profile.identifiers"}))


class Clock:
    """A clock the test moves (fetch's and replay's "now")."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _three_builds(lakehouse: Any) -> tuple[MemoryContextStore, ContextService, Clock, list[dict[str, Any]]]:
    """Three builds, ada's context changing between them; after each, what fetch answered (JSON and text)."""
    store, clock = MemoryContextStore(), Clock()
    audit = AuditLog(None, pii=PiiPolicy(SPEC, KEY))
    service = ContextService(store, SPEC, clock=clock, pii=PiiPolicy(SPEC, KEY), audit=audit)
    rounds = [
        [ev("identify", 20, userId="ada", anonymousId="dev-1", traits={"email": "ada@example.com", "plan": "free"}),
         order("ada", 10, 30)],
        [order("ada", 5, 45)],
        [ev("identify", 1, userId="ada", traits={"plan": "pro"})],
    ]
    answered = []
    for n, events in enumerate(rounds):
        write_events(lakehouse, [*events, order(f"crowd{n}", 3, 5)])
        build_context(lakehouse, store, SPEC, as_of=AS_OF + timedelta(days=n), pii_key=KEY)
        clock.now = datetime.now(UTC)
        answered.append({
            "at": clock.now,
            "json": service.fetch("email", "ada@example.com", EVERYTHING).body,
            "text": service.fetch("email", "ada@example.com", EVERYTHING, fmt="text", max_tokens=300).body,
            "scoped": service.fetch("user_id", "ada", TRAITS_ONLY).body,
        })
    return store, service, clock, answered


def test_as_of_answers_each_version_exactly_as_fetch_did(lakehouse: Any) -> None:
    store, service, clock, answered = _three_builds(lakehouse)
    clock.now += timedelta(days=3)  # replayed later: the answers must not depend on today
    for n, then in enumerate(answered):
        again = replay.replay(service, lakehouse, EVERYTHING, "email", "ada@example.com", at=then["at"])
        assert again.body == then["json"], f"build {n + 1}"
        assert again.headers["X-Context-Version"] == str(n + 1)
        text = replay.replay(service, lakehouse, EVERYTHING, "anonymous_id", "dev-1", at=then["at"], fmt="text",
                             max_tokens=300)
        assert text.body == then["text"], f"build {n + 1}"
        scoped = replay.replay(service, lakehouse, TRAITS_ONLY, "user_id", "ada", at=then["at"])
        assert scoped.body == then["scoped"] and set(scoped.body["context"]) == {"traits", "profile"}
    # before the first build nothing was known; a version can be asked for by number
    with pytest.raises(NotFound, match="at or before"):
        replay.replay(service, lakehouse, EVERYTHING, "user_id", "ada", at=answered[0]["at"] - timedelta(days=1))
    assert replay.replay(service, lakehouse, EVERYTHING, "email", "ada@example.com", version=2,
                         at=answered[1]["at"]).body == answered[1]["json"]


def test_history_names_the_fields_each_build_changed(lakehouse: Any) -> None:
    _, service, _, answered = _three_builds(lakehouse)
    found = replay.history(service, lakehouse, EVERYTHING, "user_id", "ada")
    assert [v["version"] for v in found["versions"]] == [3, 2, 1]
    newest, middle, first = found["versions"]
    assert "traits.plan" in newest["changed"] and "traits.orders_90d" not in newest["changed"]
    assert "traits.orders_90d" in middle["changed"] and "traits.plan" not in middle["changed"]
    assert "traits.plan" in first["changed"] and "profile.identifiers" in first["changed"]
    assert first["built_at"] == answered[0]["json"]["freshness"]["built_at"]
    assert found["last_changed"]["traits.plan"]["version"] == 3
    assert found["last_changed"]["traits.orders_90d"]["version"] == 2
    # a scoped key learns only of its own fields
    scoped = replay.history(service, lakehouse, TRAITS_ONLY, "user_id", "ada")
    assert {p for v in scoped["versions"] for p in v["changed"]} == {"traits.orders_90d", "profile.identifiers"}


def test_audit_trail_joins_each_record_to_the_version_it_served(lakehouse: Any) -> None:
    _, service, _, answered = _three_builds(lakehouse)
    records = service.audit.pending()
    assert len(records) == 9
    write_rows(lakehouse, Rows(audit=[audit_row(r) for r in records]))
    with pytest.raises(Forbidden, match="--audit"):
        replay.audit_trail(service, lakehouse, EVERYTHING, "user_id", "ada")
    trail = replay.audit_trail(service, lakehouse, AUDITOR, "user_id", "ada")["records"]
    assert sorted(r["snapshot_version"] for r in trail) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    scoped = [r for r in trail if r["consumer"] == "traits-only"]
    assert all(r["fields"] == ["traits.orders_90d"] and r["sections"] == [] or "profile" in str(r) for r in scoped)
    third = next(r for r in trail if r["snapshot_version"] == 3)
    assert third["served"]["built_at"] == answered[2]["json"]["freshness"]["built_at"]


def test_reads_through_replay_are_in_the_serving_audit(lakehouse: Any) -> None:
    """History, replay and identity hand out what fetch does (values, identifiers): a key must not be able to
    read a customer through them without leaving an audit record, or the audit no longer says who saw what."""
    _, service, _, _ = _three_builds(lakehouse)
    before = len(service.audit.pending())  # the fetches made after each build
    replay.replay(service, lakehouse, TRAITS_ONLY, "user_id", "ada", version=2)
    replay.history(service, lakehouse, TRAITS_ONLY, "email", "ada@example.com")
    replay.identity(service, lakehouse, TRAITS_ONLY, "user_id", "ada")
    records = {r["via"]: r for r in service.audit.pending()[before:]}
    assert set(records) == {"replay", "history", "identity"}, records
    assert all(r["consumer"] == "traits-only" and r["profile_id"] == records["replay"]["profile_id"]
               for r in records.values())
    assert records["replay"]["snapshot_version"] == 2
    assert "traits.orders_90d" in records["replay"]["fields"] and records["history"]["fields"] == ["traits.orders_90d"]
    # the identifiers are the whole of `profile` in this spec: recorded as fetch records them
    assert (records["identity"]["sections"], records["identity"]["fields"]) in (([], ["profile.identifiers"]),
                                                                                (["profile"], []))
    assert "ada" not in json.dumps(list(records.values()))  # names and keyed tokens, never values
    # nothing served, nothing recorded: a profile id with no history (never built, or deleted)
    replay.history(service, lakehouse, TRAITS_ONLY, "profile_id", "p_nobody")
    replay.identity(service, lakehouse, TRAITS_ONLY, "profile_id", "p_nobody")
    assert "p_nobody" not in json.dumps(service.audit.pending())


def test_odd_times_are_one_line_requests_errors() -> None:
    """`at` as users write it: far past and future and offsets parse; garbage is a 400 naming `at`; an offset
    whose '+' the URL turned into a space says how to write it."""
    assert replay.parse_at("0001-01-01T00:00:00+14:00") == datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    assert replay.parse_at("9999-12-31T23:59:59-14:00") is not None and replay.parse_at("") is None
    for garbage in ("yesterday", "2026-13-01", "2026-11-24T12:00:00+24:00", "\x00", "1e10"):
        with pytest.raises(InvalidRequest, match="^at: expected an ISO-8601 time") as err:
            replay.parse_at(garbage)
        assert "%2B" not in err.value.message
    with pytest.raises(InvalidRequest) as err:
        replay.parse_at("2026-11-24T12:00:00 01:00")
    assert err.value.message.endswith("(a '+' in a URL query is a space: write 2026-11-24T12:00:00%2B01:00, or the "
                                      "time in UTC with Z)")


def test_identity_graph_shows_edges_and_a_refused_edge(lakehouse: Any) -> None:
    store = MemoryContextStore()
    write_events(lakehouse, [
        ev("identify", 9, userId="ada", anonymousId="shared", traits={"email": "ada@example.com"}),
        ev("alias", 8, previousId="old-dev", userId="ada"),
        ev("identify", 2, userId="bob", anonymousId="shared"),  # a second user on ada's device: refused
    ])
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    service = ContextService(store, SPEC, pii=PiiPolicy(SPEC, KEY))
    graph = replay.identity(service, lakehouse, EVERYTHING, "user_id", "ada")
    assert {(n["type"], n["value"]) for n in graph["nodes"]} >= {("user_id", "ada"), ("anonymous_id", "shared"),
                                                                  ("anonymous_id", "old-dev")}
    sources = {e["source"] for e in graph["edges"]}
    assert {"event:identify", "event:alias"} <= sources, graph["edges"]
    refused = graph["refused"]
    assert len(refused) == 1 and refused[0]["b"] == ["user_id", None] and refused[0]["reason"].startswith("user_id")
    shown = replay.identity(service, lakehouse, AUDITOR, "user_id", "ada")["refused"][0]
    assert shown["b"] == ["user_id", "bob"] and "bob" in shown["reason"]
    with pytest.raises(Forbidden):
        replay.identity(service, lakehouse, Consumer("t", fields=frozenset({"traits.plan"})), "user_id", "ada")
    # a later build keeps ada's identifiers ("kept from previous build"): their edges come from the table's history
    write_events(lakehouse, [order("ada", 1, 20)])
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    later = replay.identity(service, lakehouse, EVERYTHING, "user_id", "ada")
    assert all(n["joined_via"].startswith(("kept", "first")) for n in later["nodes"])
    assert later["edges"] == graph["edges"] and later["refused"] == graph["refused"]


def test_deletion_removes_the_history_and_the_audit(lakehouse: Any) -> None:
    store, service, _, _ = _three_builds(lakehouse)
    service.fetch("user_id", "crowd0", EVERYTHING)
    write_rows(lakehouse, Rows(audit=[audit_row(r) for r in service.audit.pending()]))
    pid = store.resolve("user_id", "ada")
    assert len(replay.snapshot_versions(lakehouse, pid)) == 3
    regulation = suppress(store, service, new_regulation(store, "suppress_with_delete",
                                                         [("email", "ada@example.com")], "dpo"), KEY)
    assert run_job(lakehouse, store, SPEC, regulation["id"], pii=PiiPolicy(SPEC, KEY))["status"] == "done"
    assert replay.snapshot_versions(lakehouse, pid) == []
    audit_rows = lakehouse.scan("serving_audit").to_pylist()
    assert audit_rows and all(r["profile_id"] != pid for r in audit_rows)  # the crowd's records stay
    with pytest.raises(NotFound):
        replay.history(service, lakehouse, EVERYTHING, "user_id", "ada")
    assert "ada" not in json.dumps(replay.snapshot_versions(lakehouse, store.resolve("user_id", "crowd0") or ""))


def test_replay_routes_with_the_api_gateway_samples(lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context import wiring
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context_devtools.local import lambda_runtime

    from tests.conftest import load_event

    store, service, _, answered = _three_builds(lakehouse)
    write_rows(lakehouse, Rows(audit=[audit_row(r) for r in service.audit.pending()]))
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], [], audit=True))
    monkeypatch.setenv("CUSTOMER_CONTEXT_PII_HASH_KEY", KEY)
    monkeypatch.setattr(wiring, "context_store", lambda: store)

    def invoke(name: str, **query: str) -> dict[str, Any]:
        event = load_event(f"query_context_{name}.json")
        if query:
            event["queryStringParameters"].update(query)
            event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in event["queryStringParameters"].items())
        return lambda_runtime.invoke("query_context", event)  # type: ignore[no-any-return]

    history = invoke("history")
    assert history["statusCode"] == 200, history["body"]
    assert [v["version"] for v in json.loads(history["body"])["versions"]] == [3, 2, 1]
    text = invoke("replay", at=answered[1]["at"].isoformat())
    assert text["statusCode"] == 200 and text["headers"]["X-Context-Version"] == "2", text
    assert text["body"] == answered[1]["text"]  # the sample asks for text at 300 tokens, as fetch was asked
    trail = invoke("audit")
    assert trail["statusCode"] == 200 and len(json.loads(trail["body"])["records"]) == 9
    graph = invoke("identity")
    assert graph["statusCode"] == 200 and {"user_id", "email", "anonymous_id"} <= {
        n["type"] for n in json.loads(graph["body"])["nodes"]}
    page = lambda_runtime.invoke("query_context", load_event("query_context_explorer.json"))
    assert page["statusCode"] == 200 and page["headers"]["Content-Type"].startswith("text/html")
    assert "/explorer/explorer.js" in page["body"] and "http" not in page["body"].split("<body>")[1]


def test_cli_replay_prints_the_history_and_a_past_answer(lakehouse: Any, tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from customer_context_devtools.cli import main

    _, _, _, answered = _three_builds(lakehouse)
    monkeypatch.setenv("CUSTOMER_CONTEXT_PII_HASH_KEY", KEY)
    data_dir = str(tmp_path / "data")
    assert main(["replay", "--identifier", "anonymous_id:dev-1", "--data-dir", data_dir]) == 0
    table = capsys.readouterr().out
    assert "traits.plan" in table and "(3 rows)" in table
    assert main(["replay", "--identifier", "email:ada@example.com", "--at", answered[0]["at"].isoformat(),
                 "--data-dir", data_dir]) == 0
    assert json.loads(capsys.readouterr().out) == answered[0]["json"]
    assert main(["replay", "--identifier", "email", "--data-dir", data_dir]) == 2
    assert main(["replay", "--identifier", "email:nobody@example.com", "--data-dir", data_dir]) == 2
    assert "no customer is known by email" in capsys.readouterr().err


def test_verbose_fetch_says_where_each_value_came_from(lakehouse: Any) -> None:
    from customer_context.assemble.records import load_file

    crm = ("contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
           "C-ADA,ada@example.com,Ada L,vip,Tom,2026-11-01T00:00:00Z\n")
    assert not load_file(lakehouse, SPEC, "imports/crm_contacts/crm.csv", crm.encode()).reasons
    store, service, _, answered = _three_builds(lakehouse)
    plain = service.fetch("user_id", "ada", EVERYTHING)
    verbose = service.fetch("user_id", "ada", EVERYTHING, verbose=True)
    assert "provenance" not in plain.body and verbose.etag != plain.etag  # type: ignore[operator]
    found = verbose.body["provenance"]  # type: ignore[index]
    assert found["built_at"] == answered[2]["json"]["freshness"]["built_at"]
    fields = found["fields"]
    assert fields["traits.orders_90d"]["definition"]["kind"] == "count"
    assert fields["traits.orders_90d"]["definition"]["where"]["event"] == ["Order Completed"]
    assert fields["records.crm_contacts"] == {"from": "record", "table": "crm_contacts",
                                              "key": {"contact_id": "C-ADA"}, "updated_at": "2026-11-01T00:00:00.000Z",
                                              "last_changed": answered[0]["json"]["freshness"]["built_at"]}
    assert fields["profile.identifiers"]["from"] == "identity"
    assert fields["recent_events[0]"]["from"] == "event" and fields["recent_events[0]"]["event"] == "Order Completed"
    # a scoped key learns the provenance of its own fields only
    scoped = service.fetch("user_id", "ada", TRAITS_ONLY, verbose=True).body["provenance"]["fields"]  # type: ignore[index]
    assert set(scoped) == {"traits.orders_90d", "profile.identifiers"}


class CountingStore(MemoryContextStore):
    """The memory store, counting the reads fetch makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_snapshot(self, profile_id: str) -> dict[str, Any] | None:  # noqa: D102
        self.reads += 1
        return super().get_snapshot(profile_id)

    def resolve(self, id_type: str, id_value: str) -> str | None:  # noqa: D102
        self.reads += 1
        return super().resolve(id_type, id_value)

    def recent(self, owner: Any, after: str | None, limit: int) -> list[dict[str, Any]]:  # noqa: D102
        self.reads += 1
        return super().recent(owner, after, limit)


def test_verbose_fetch_says_when_each_value_last_changed_as_the_history_does(lakehouse: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.integration.test_replay.MemoryContextStore", CountingStore)
    store, service, _, answered = _three_builds(lakehouse)
    built = [a["json"]["freshness"]["built_at"] for a in answered]
    assert isinstance(store, CountingStore)
    before = store.reads
    plain = service.fetch("user_id", "ada", EVERYTHING)
    plain_reads = store.reads - before
    verbose = service.fetch("user_id", "ada", EVERYTHING, verbose=True)
    assert store.reads - before == 2 * plain_reads  # the same reads as without verbose: nothing more
    assert verbose.body["context"] == plain.body["context"]  # type: ignore[index]
    fields = verbose.body["provenance"]["fields"]  # type: ignore[index]
    # each build changed different fields; one the later builds left alone keeps the first build's time
    assert fields["traits.plan"]["last_changed"] == built[2]
    assert fields["traits.orders_90d"]["last_changed"] == built[1]
    assert fields["profile.identifiers"]["last_changed"] == built[0]
    assert fields["recent_events[0]"]["last_changed"] == built[1]  # the list changed with the second order
    # the same answer as the history route, which works it out from every version
    history = replay.history(service, lakehouse, EVERYTHING, "user_id", "ada")["last_changed"]
    compared = {path: origin["last_changed"] for path, origin in fields.items()}
    # (a field that was always null never changed: neither has a time for it)
    assert compared == {path: (history.get(path.split("[", 1)[0]) or {}).get("built_at") for path in fields}
    assert set(compared.values()) - {None} == set(built)
    # a build that changes nothing lands nothing and keeps every time
    writes = store.writes
    build_context(lakehouse, store, SPEC, as_of=AS_OF + timedelta(days=2), pii_key=KEY)
    assert store.writes == writes
    again = service.fetch("user_id", "ada", EVERYTHING, verbose=True)
    assert again.body["provenance"]["fields"] == fields and again.etag == verbose.etag  # type: ignore[index]


def test_a_state_table_from_before_field_times_is_evolved(lakehouse: Any) -> None:
    """A lakehouse whose profile_state has no field columns (made by an earlier release) keeps building: the
    columns are added, times unknown until a field changes, then tracked."""
    store = MemoryContextStore()
    service = ContextService(store, SPEC, pii=PiiPolicy(SPEC, KEY))
    write_events(lakehouse, [ev("identify", 20, userId="ada", traits={"email": "ada@example.com", "plan": "free"})])
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)

    def drop(table: Any) -> None:
        with table.update_schema() as update:
            update.delete_column("field_hashes")
            update.delete_column("changed_at")

    lakehouse.update("profile_state", drop)
    for item in store.items.values():  # items landed by the earlier release had no field times
        item.pop("changed_at", None)
    assert "changed_at" not in lakehouse.columns("profile_state")
    write_events(lakehouse, [ev("identify", 1, userId="ada", traits={"plan": "pro"})])
    build_context(lakehouse, store, SPEC, as_of=AS_OF + timedelta(days=1), pii_key=KEY)
    assert {"field_hashes", "changed_at"} <= set(lakehouse.columns("profile_state"))
    fields = service.fetch("user_id", "ada", EVERYTHING, verbose=True).body["provenance"]["fields"]  # type: ignore[index]
    assert fields["traits.plan"]["last_changed"] is None  # changed, but which fields did is not known here
    write_events(lakehouse, [ev("identify", 0.5, userId="ada", traits={"plan": "team"})])
    third = build_context(lakehouse, store, SPEC, as_of=AS_OF + timedelta(days=2), pii_key=KEY)
    fields = service.fetch("user_id", "ada", EVERYTHING, verbose=True).body["provenance"]["fields"]  # type: ignore[index]
    assert fields["traits.plan"]["last_changed"] == third.built_at
    assert fields["profile.identifiers"]["last_changed"] is None
