"""The PII policy's gaps, closed: values that look like tokens, the request address, governed fields under
something that is not an object, suppression keys, suppress regulations, the serving audit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from customer_context import envelope
from customer_context.collect.service import collect
from customer_context.govern.regulations import new_regulation, suppress
from customer_context.govern.suppression import Suppressions, legacy_suppression_hash, suppression_hash
from customer_context.pii import PiiPolicy
from customer_context.serve.audit import AuditLog
from customer_context.serve.fetch import ContextService
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore, SnapshotItem, legacy_suppression_key
from customer_context.stores.queue import MemoryEventQueue

from tests.unit.test_collect_service import KEYS, LIMITS, request

KEY = "pii-secret"
SPEC = parse_spec(DEFAULT_SPEC.read_text() + """
pii:
  - {path: traits.email, action: hash}
  - {path: context.ip, action: mask}
""")


def _collect(batch: list[dict[str, Any]], suppressions: Any = None) -> tuple[Any, list[dict], list[dict]]:
    queue = MemoryEventQueue()
    result = collect(request({"batch": batch}), write_keys=KEYS, queue=queue, spool=None, limits=LIMITS,
                     pii=PiiPolicy(SPEC, KEY), suppressions=suppressions)
    events, rejected = [], []
    for body in queue.bodies:
        env = envelope.loads(body)
        events += env.events
        rejected += env.rejected
    return result, events, rejected


def test_a_value_that_looks_like_a_token_is_hashed_once_and_found_by_what_was_sent() -> None:
    policy = PiiPolicy(SPEC, KEY)
    # Given a client sending an email that already starts with h_, and an ordinary one
    _, events, _ = _collect([{"type": "identify", "userId": "u1", "traits": {"email": "h_0123abc"}},
                             {"type": "identify", "userId": "u2", "traits": {"email": "Ann@Example.com"}}])
    # Then both are stored as their token (each hashed exactly once), never raw
    assert [e["traits"]["email"] for e in events] == [policy.hash("h_0123abc"), policy.hash("ann@example.com")]
    # And a lookup by what was sent finds the stored token
    service = ContextService(MemoryContextStore(), SPEC, pii=policy)
    assert service.identifier("email", "h_0123abc") == ("email", events[0]["traits"]["email"])


def test_the_request_address_follows_the_context_ip_rule() -> None:
    _, events, _ = _collect([{"type": "track", "userId": "u1", "event": "E"}])
    # the stack stamps the request's address (198.51.100.1 in these requests) twice: both masked
    assert events[0]["context"]["ip"] == "198.51.100.0"
    assert events[0]["requestIp"] == "198.51.100.0"


def test_a_governed_field_under_something_that_is_not_an_object_is_not_kept_raw() -> None:
    # Given identifies whose traits are a string, and a list, holding the email
    result, events, rejected = _collect([
        {"type": "identify", "userId": "u1", "traits": "ann@example.com"},
        {"type": "identify", "userId": "u2", "context": {"traits": ["ann@example.com"]}, "traits": {}},
    ])
    # Then the first is rejected with its reason, and neither copy keeps the address in the clear
    assert len(result.rejections) == 1 and "traits" in result.rejections[0].reason
    assert "ann@example.com" not in json.dumps(rejected) + json.dumps(events)


def test_suppression_items_are_keyed_hashes_and_a_suppress_record_keeps_no_identifier() -> None:
    store = MemoryContextStore()
    policy = PiiPolicy(SPEC, KEY)
    service = ContextService(store, SPEC, pii=policy)
    # Given a known customer and a suppress regulation naming her email
    store.put_aliases([("email", policy.hash("gone@example.com"), "p1"), ("user_id", "gone", "p1")])
    store.put_snapshots([SnapshotItem("p1", json.dumps({"profile": {"identifiers": {
        "email": [policy.hash("gone@example.com")], "user_id": ["gone"]}}}), "h", 1, "t", None)])
    regulation = suppress(store, service, new_regulation(store, "suppress", [("email", "Gone@Example.com")], "dpo"),
                          KEY)
    # Then the stored keys cannot be matched by guessing an unkeyed SHA-256 of an identifier
    text = json.dumps(list(store.items.values()))
    for id_type, value in (("user_id", "gone"), ("email", policy.hash("gone@example.com"))):
        assert hashlib.sha256(f"{id_type}\x00{value}".encode()).hexdigest() not in text
        assert suppression_hash(KEY, id_type, value) in text
    # And neither the regulation's record nor its answer keeps the email or the user id
    assert "gone@example.com" not in text.lower() and '"gone"' not in text
    assert "gone@example.com" not in json.dumps(regulation).lower()
    assert regulation["status"] == "done" and regulation["suppressed"] == 2


def test_suppression_items_written_before_the_keyed_hash_still_hold() -> None:
    store = MemoryContextStore()
    legacy = legacy_suppression_key(legacy_suppression_hash("user_id", "old"))
    store.items[(legacy["pk"], legacy["sk"])] = {**legacy, "regulation_id": "reg_old"}
    result, events, _ = _collect([{"type": "track", "userId": "old", "event": "E"},
                                  {"type": "track", "userId": "kept", "event": "E"}],
                                 Suppressions(store, SPEC, KEY))
    assert result.accepted == 2 and result.suppressed == 1 and [e["userId"] for e in events] == ["kept"]


def test_the_serving_audit_keeps_the_keyed_token_of_identifiers() -> None:
    policy = PiiPolicy(SPEC, KEY)
    audit = AuditLog(None, pii=policy)
    audit.record(consumer="c", via="fetch", identifier=("user_id", "ann-42"), profile_id=None, status=404)
    audit.record(consumer="c", via="fetch", identifier=("profile_id", "p_1"), profile_id="p_1")
    first, second = audit.pending()
    assert first["identifier_value"] == policy.hash("ann-42") and "ann-42" not in json.dumps(first)
    assert second["identifier_value"] == "p_1"


def _suppressed(*identifiers: tuple[str, str]) -> Suppressions:
    store = MemoryContextStore()
    store.put_suppressions([suppression_hash(KEY, t, v) for t, v in identifiers], "reg_1", delete=True)
    return Suppressions(store, SPEC, KEY)


def test_suppression_reads_previous_id_every_identifier_path_and_the_rejected_events() -> None:
    policy = PiiPolicy(SPEC, KEY)
    her_email = policy.hash("her@example.com")
    suppressions = _suppressed(("user_id", "her"), ("anonymous_id", "her-phone"), ("email", her_email))
    result, events, rejected = _collect([
        {"type": "alias", "previousId": "her", "userId": "new-account"},             # joins her: dropped
        {"type": "alias", "previousId": "her-phone", "userId": "bob"},               # joins her device: dropped
        {"type": "identify", "traits": {"email": "her@example.com"}},                # invalid (no id), hers
        {"type": "identify", "anonymousId": "x", "context": {"traits": {"email": "HER@example.com"}}},  # hers
        {"type": "identify", "userId": "bob", "traits": {"email": "her@example.com", "plan": "pro"}},  # bob's
        {"type": "track", "userId": "bob", "anonymousId": "her-phone", "event": "Order Completed"},    # bob's
        {"type": "track", "userId": "bob", "event": "Viewed"},
    ], suppressions)
    # Then SDKs see every valid event accepted and the invalid one rejected as usual
    assert result.accepted == 6 and len(result.rejections) == 1 and result.suppressed == 4
    # And her events, valid or not, are stored nowhere; bob's keep their place without her values
    assert rejected == []
    assert [(e["type"], e.get("userId"), e.get("anonymousId")) for e in events] == [
        ("identify", "bob", None), ("track", "bob", None), ("track", "bob", None)]
    assert events[0]["traits"] == {"plan": "pro"}
    assert her_email not in json.dumps(events) and "her-phone" not in json.dumps(events)


def test_ingest_drops_events_collect_queued_before_the_suppression() -> None:
    from datetime import UTC, datetime, timedelta

    from customer_context.collect.ingest import IngestBatch
    from customer_context.collect.service import iso

    # Given events queued by collect before her regulation was filed (one of them an invalid event of hers),
    # and one of hers received long after (collect would have dropped it; here it shows the check is bounded)
    store = MemoryContextStore()
    store.put_suppressions([suppression_hash(KEY, "user_id", "her")], "reg_1", delete=True)
    now = datetime.now(UTC)
    store.note_suppression(now.isoformat())
    before, later = iso(now - timedelta(seconds=5)), iso(now + timedelta(days=1))
    body = envelope.body_of(
        [envelope.dumps({"type": "track", "userId": "her", "event": "E", "messageId": "m1", "receivedAt": before,
                         "timestamp": before, "sourceId": "web"}),
         envelope.dumps({"type": "track", "userId": "bob", "anonymousId": "x", "event": "E", "messageId": "m2",
                         "receivedAt": before, "timestamp": before, "sourceId": "web"}),
         envelope.dumps({"type": "track", "userId": "her", "event": "E", "messageId": "m3", "receivedAt": later,
                         "timestamp": later, "sourceId": "web"})],
        [envelope.dumps({"receivedAt": before, "sourceId": "web", "reason": "r", "stage": "collect",
                         "raw": json.dumps({"type": "alias", "userId": "her"})}),
         envelope.dumps({"receivedAt": before, "sourceId": "web", "reason": "r", "stage": "collect",
                         "raw": json.dumps({"type": "alias", "userId": "bob"})})])
    # When ingest reads them
    batch = IngestBatch(spool=None, suppressions=Suppressions(store, SPEC, KEY))
    batch.add(body)
    # Then hers received before the suppression are left out, the rest lands
    assert [v[0] for v in batch.events] == ["m2", "m3"]
    assert [json.loads(r["raw"])["userId"] for r in batch.others.rejected] == ["bob"]
