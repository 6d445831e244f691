"""The deletion job on a real lakehouse and the real build: exactly the customer's rows go (attributed as the
build attributes them), other customers' rows keep their place without her values, nothing of her is left
in any file, and a build running at the same time never lands her again."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from customer_context.assemble.build import build_context
from customer_context.assemble.records import load_file
from customer_context.govern.regulations import new_regulation, run_job, suppress
from customer_context.pii import PiiPolicy
from customer_context.serve.fetch import ContextService
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events
from tests.helpers.residue import search_files

KEY = "deletion-test-key"
SPEC = parse_spec(DEFAULT_SPEC.read_text())
HERS = ["alice", "alice@example.com", "alice-phone", "alice-old-phone", "C-ALICE", "T-ALICE"]


def _world(lakehouse: Any, tmp_path: Path) -> None:
    events = [
        # alice signs up on her phone, then on the family laptop; her old phone is aliased to her
        ev("identify", 40, userId="alice", anonymousId="alice-phone", traits={"email": "alice@example.com"}),
        ev("track", 35, userId="alice", event="Order Completed", properties={"revenue": 10, "order_id": "A1"}),
        ev("page", 30, anonymousId="shared-laptop", name="Home", properties={"path": "/"}),
        ev("identify", 30, userId="alice", anonymousId="shared-laptop"),
        ev("alias", 29, previousId="alice-old-phone", userId="alice"),
        # bob uses the same laptop later, signed in: his orders are his
        *[ev("track", 5 - n, userId="bob", anonymousId="shared-laptop", event="Order Completed",
             properties={"revenue": 20 + n, "order_id": f"B{n}"}) for n in range(3)],
        ev("identify", 10, userId="bob", traits={"email": "bob@example.com", "name": "Bob"}),
        # dave's identify carries her address (he typed it into a referral form), and a note about her
        ev("identify", 8, userId="dave", traits={"email": "Alice@Example.com", "plan": "pro"}),
        ev("track", 7, userId="dave", event="Referral Sent",
           properties={"note": "invited ALICE@example.com to the shop", "order_id": "D1"}),
        # enough other customers that the data files compress
        *[ev("track", n % 30, userId=f"crowd-{n:04d}", event="Product Viewed",
             properties={"sku": f"sku-{n:04d}", "category": "shoes"}) for n in range(1500)],
    ]
    write_events(lakehouse, events)
    crm = ("contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
                   "C-ALICE,  ALICE@Example.COM ,Alice A,vip,Tom,2026-11-01T00:00:00Z\n"
                   "C-BOB,bob@example.com,Bob B,lead,Tom,2026-11-01T00:00:00Z\n")
    tickets = ("ticket_id,requester_email,channel,status,subject,body,created_at,updated_at\n"
                       "T-ALICE,Alice@Example.com,email,open,Refund,please refund,2026-11-20T00:00:00Z,"
                       "2026-11-20T00:00:00Z\n"
                       "T-BOB,bob@example.com,chat,open,Gift,bought a gift for alice@example.com,2026-11-21T00:00:00Z,"
                       "2026-11-21T00:00:00Z\n")
    assert not load_file(lakehouse, SPEC, "imports/crm_contacts/crm.csv", crm.encode()).reasons
    assert not load_file(lakehouse, SPEC, "imports/support_tickets/t.csv", tickets.encode()).reasons


def _contexts(store: MemoryContextStore, service: ContextService, users: list[str]) -> dict[str, Any]:
    out = {}
    for user in users:
        pid = store.resolve("user_id", user)
        out[user] = json.loads(store.get_snapshot(pid)["doc"]) if pid else None
    return out


def _file(store: MemoryContextStore, identifiers: list[tuple[str, str]]) -> dict[str, Any]:
    service = ContextService(store, SPEC, pii=PiiPolicy(SPEC, KEY))
    return suppress(store, service, new_regulation(store, "suppress_with_delete", identifiers, "dpo"), KEY)


def _rows(lakehouse: Any, table: str) -> dict[str, dict[str, Any]]:
    key = {"events": "message_id", "crm_contacts": "contact_id", "support_tickets": "ticket_id"}[table]
    return {r[key]: r for r in lakehouse.scan(table).to_pylist()}


def test_deleting_a_customer_takes_exactly_her_rows_and_scrubs_her_out_of_the_others(
        lakehouse: Any, tmp_path: Path) -> None:
    _world(lakehouse, tmp_path)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    service = ContextService(store, SPEC)
    before = _contexts(store, service, ["bob", "dave", "crowd-0001"])
    assert before["bob"]["traits"]["orders_90d"] == 3
    events_before, crm_before = _rows(lakehouse, "events"), _rows(lakehouse, "crm_contacts")
    # When alice is deleted, named by her email
    regulation = _file(store, [("email", "alice@example.com")])
    done = run_job(lakehouse, store, SPEC, regulation["id"], pii=PiiPolicy(SPEC, KEY))
    assert done["status"] == "done", done
    # Then her rows are gone: her events (the laptop's anonymous page included), her alias, her CRM row
    # matched by its normalised email, her ticket
    events_after = _rows(lakehouse, "events")
    gone = set(events_before) - set(events_after)
    assert {events_before[m]["type"] for m in gone} == {"identify", "track", "page", "alias"} and len(gone) == 5
    assert set(_rows(lakehouse, "crm_contacts")) == {"C-BOB"} and set(_rows(lakehouse, "support_tickets")) == {"T-BOB"}
    # And every other row is unchanged, except where it named her: bob's orders from the shared laptop lose
    # the laptop's id, dave's identify loses her address, dave's note and bob's ticket lose her name
    changed = {m for m in events_after if events_after[m] != events_before[m]}
    assert {events_after[m]["user_id"] for m in changed} == {"bob", "dave"} and len(changed) == 5
    for m in changed:
        assert events_after[m]["anonymous_id"] is None or events_after[m]["user_id"] == "dave"
    dave = next(events_after[m] for m in changed if events_after[m]["type"] == "identify")
    assert json.loads(dave["traits"]) == {"email": None, "plan": "pro"}
    note = next(events_after[m] for m in changed if events_after[m]["event"] == "Referral Sent")
    assert json.loads(note["properties"]) == {"note": "invited [deleted] to the shop", "order_id": "D1"}
    assert _rows(lakehouse, "support_tickets")["T-BOB"]["body"] == "bought a gift for [deleted]"
    assert _rows(lakehouse, "crm_contacts")["C-BOB"] == crm_before["C-BOB"]
    # And no file of the warehouse holds any of her values, read by value and by record
    warehouse = Path(lakehouse.table("events").location().removeprefix("file://")).parents[1]
    assert [str(h) for h in search_files(warehouse, HERS)] == []
    # And the next build serves everyone else as before: bob keeps his three orders, dave his plan
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    after = _contexts(store, service, ["bob", "dave", "crowd-0001", "alice"])
    assert after["alice"] is None and store.resolve("email", "alice@example.com") is None
    for user in ("bob", "dave", "crowd-0001"):
        assert after[user]["traits"] == before[user]["traits"], user
        assert after[user]["scores"] == before[user]["scores"], user
    assert "alice" not in json.dumps([after[u] for u in ("bob", "dave", "crowd-0001")]).lower()
    assert [str(h) for h in search_files(warehouse, HERS)] == []
    assert "alice" not in json.dumps(list(store.items.values())).lower()

    # When her address comes back by ways collect cannot stop: a CRM export naming her under a new contact
    # id, and dave's identify queued before the regulation and ingested after the job
    assert not load_file(lakehouse, SPEC, "imports/crm_contacts/late.csv", (
        b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
        b"C-LATE,alice@example.com,Alice A,vip,Tom,2026-11-23T00:00:00Z\n")).reasons
    write_events(lakehouse, [ev("identify", 0.5, userId="dave", traits={"email": "alice@example.com"})])
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    # Then her address joins nobody: no alias for it, the row whose most important identifier it is belongs
    # to nobody (no profile is made of its contact id), and dave is not served it
    assert store.resolve("email", "alice@example.com") is None and store.resolve("crm_id", "C-LATE") is None
    assert "alice" not in json.dumps(list(store.items.values())).lower()
    dave_now = _contexts(store, service, ["dave"])["dave"]
    assert dave_now["traits"]["plan"] == "pro" and dave_now["profile"]["identifiers"] == {"user_id": ["dave"]}


def _gate_after(stage: str) -> tuple[threading.Event, threading.Event, Any]:
    """A progress callback that stops the build after ``stage`` until released."""
    reached, release = threading.Event(), threading.Event()

    def progress(line: str) -> None:
        if line.startswith(stage):
            reached.set()
            assert release.wait(120), "the test never released the build"

    return reached, release, progress


def test_a_build_that_read_her_before_the_job_finished_builds_again_and_never_lands_her(
        lakehouse: Any, tmp_path: Path) -> None:
    _world(lakehouse, tmp_path)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    regulation = _file(store, [("user_id", "alice")])
    # Given a build that has read the lakehouse (her rows included) and stops before landing
    reached, release, progress = _gate_after("read")
    result: dict[str, Any] = {}
    build = threading.Thread(target=lambda: result.update(
        report=build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY, progress=progress)))
    build.start()
    assert reached.wait(120)
    # When the deletion job runs to its end meanwhile, and the build then goes on
    assert run_job(lakehouse, store, SPEC, regulation["id"], pii=PiiPolicy(SPEC, KEY))["status"] == "done"
    release.set()
    build.join(300)
    # Then the build noticed, read the lakehouse again, and landed nothing of her
    assert result["report"].profiles > 0
    assert store.resolve("user_id", "alice") is None and store.resolve("anonymous_id", "alice-phone") is None
    assert "alice" not in json.dumps(list(store.items.values())).lower()
    graph = lakehouse.scan("identity_graph").to_pylist()
    assert not [r for r in graph if r["identifier_value"] in HERS or "alice" in r["joined_via"]]
    warehouse = Path(lakehouse.table("events").location().removeprefix("file://")).parents[1]
    assert [str(h) for h in search_files(warehouse, HERS)] == []


def test_a_job_filed_while_a_build_lands_waits_for_it_then_removes_what_it_landed(
        lakehouse: Any, tmp_path: Path) -> None:
    _world(lakehouse, tmp_path)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    # Given a build stopped in the middle of landing (it holds the fence), with a new order of hers in its input
    write_events(lakehouse, [ev("track", 1, userId="alice", event="Order Completed", properties={"revenue": 5})])
    reached, release, progress = _gate_after("snapshots")
    build = threading.Thread(target=build_context, args=(lakehouse, store, SPEC),
                             kwargs={"as_of": AS_OF, "pii_key": KEY, "progress": progress})
    build.start()
    assert reached.wait(120)
    # When her deletion is filed and its job starts
    regulation = _file(store, [("user_id", "alice")])
    job: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: job.update(run_job(lakehouse, store, SPEC, regulation["id"],
                                                                pii=PiiPolicy(SPEC, KEY))))
    runner.start()
    # Then the job waits for the build (it says so on the regulation) …
    for _ in range(600):
        if store.get_regulation(regulation["id"]).get("step") == "waiting for a build to finish landing":
            break
        runner.join(0.1)
    assert store.get_regulation(regulation["id"])["step"] == "waiting for a build to finish landing"
    assert runner.is_alive()
    # … and once the build has landed and committed, removes what it landed
    release.set()
    build.join(300)
    runner.join(300)
    assert job["status"] == "done", job
    assert store.resolve("user_id", "alice") is None
    assert "alice" not in json.dumps(list(store.items.values())).lower()
    warehouse = Path(lakehouse.table("events").location().removeprefix("file://")).parents[1]
    assert [str(h) for h in search_files(warehouse, HERS)] == []
    # And a later build brings nothing of her back
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    assert store.resolve("user_id", "alice") is None and store.resolve("email", "alice@example.com") is None


def test_a_named_query_answers_nothing_from_its_cache_once_she_is_deleted(
        lakehouse: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from customer_context import wiring
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.serve.named_queries import clear_cache
    from customer_context_devtools.local import lambda_runtime

    from tests.conftest import load_event

    clear_cache()
    _world(lakehouse, tmp_path)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF, pii_key=KEY)
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    monkeypatch.setattr(wiring, "context_store", lambda: store)
    event = load_event("query_context_post.json")
    pid = store.resolve("user_id", "alice")
    path = f"/v1/context/profile_id/{pid}/queries/orders_in_period"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"identifier_type": "profile_id", "identifier_value": pid, "name": "orders_in_period"}
    # Given her orders answered (and cached) by the query route, by her profile id
    first = lambda_runtime.invoke("query_context", event)
    assert first["statusCode"] == 200 and [r["order_id"] for r in json.loads(first["body"])["rows"]] == ["A1"]
    # When she is deleted
    regulation = _file(store, [("user_id", "alice")])
    assert run_job(lakehouse, store, SPEC, regulation["id"], pii=PiiPolicy(SPEC, KEY))["status"] == "done"
    # Then the same call finds nobody, from no cache
    again = lambda_runtime.invoke("query_context", event)
    assert again["statusCode"] == 404, again["body"]
    assert "A1" not in again["body"]


def test_deletion_under_a_pii_policy_that_hashes_emails(lakehouse: Any, tmp_path: Path) -> None:
    # Given the email hashed by the PII policy everywhere (events and the CRM), as collect and load_records do
    spec = parse_spec(DEFAULT_SPEC.read_text().replace(
        "    identifiers:\n      crm_id: contact_id\n      email: email\n",
        "    identifiers:\n      crm_id: contact_id\n      email: email\n    pii: {email: hash}\n", 1)
        + "\npii:\n  - {path: traits.email, action: hash}\n")
    policy = PiiPolicy(spec, KEY)
    token = policy.hash("alice@example.com")
    events = [ev("identify", 9, userId="alice", traits={"email": "Alice@Example.com"}),
              ev("track", 8, userId="alice", event="Order Completed", properties={"revenue": 3}),
              ev("identify", 7, userId="dave", traits={"email": "alice@example.com", "plan": "pro"}),
              *[ev("track", 1, userId=f"crowd-{n}", event="Viewed") for n in range(300)]]
    write_events(lakehouse, [policy.apply(e) for e in events])
    assert not load_file(lakehouse, spec, "imports/crm_contacts/c.csv", (
        b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
        b"C-ALICE, ALICE@example.com ,Alice,vip,Tom,2026-11-01T00:00:00Z\n"), pii=policy).reasons
    store = MemoryContextStore()
    build_context(lakehouse, store, spec, as_of=AS_OF, pii_key=KEY)
    assert store.resolve("email", token) == store.resolve("crm_id", "C-ALICE") == store.resolve("user_id", "alice")
    # When she is deleted by the address she typed
    service = ContextService(store, spec, pii=policy)
    regulation = suppress(store, service, new_regulation(store, "suppress_with_delete",
                                                         [("email", "Alice@Example.com")], "dpo"), KEY)
    assert run_job(lakehouse, store, spec, regulation["id"], pii=policy)["status"] == "done"
    # Then neither her token nor her other identifiers are left, and dave keeps his row without her token
    warehouse = Path(lakehouse.table("events").location().removeprefix("file://")).parents[1]
    assert [str(h) for h in search_files(warehouse, [token, "alice", "C-ALICE"])] == []
    dave = [r for r in lakehouse.scan("events").to_pylist() if r["user_id"] == "dave"]
    assert [json.loads(r["traits"]) for r in dave] == [{"email": None, "plan": "pro"}]
    build_context(lakehouse, store, spec, as_of=AS_OF, pii_key=KEY)
    assert store.resolve("email", token) is None
    assert token not in json.dumps(list(store.items.values()))
