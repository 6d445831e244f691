"""Mapping stamped events to typed ``events`` rows, and queue messages to rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from customer_context import envelope
from customer_context.collect.ingest import event_to_row, rows_from_message
from customer_context.errors import PoisonMessage
from customer_context.stores.blobs import MemoryBlobStore

STAMPED = {"receivedAt": "2026-11-24T12:00:00.000Z", "sourceId": "web", "timestamp": "2026-11-24T11:59:50.000Z"}


def test_identify_from_rudderstack_keeps_traits_from_context() -> None:
    # Given an identify as the RudderStack SDK sends it (traits inside context.traits)
    event = {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
             "originalTimestamp": "2026-11-24T13:00:00+01:00", "sentAt": "2026-11-24T13:00:05+01:00",
             "context": {"traits": {"email": "a@b.c"}, "library": {"name": "analytics-python", "version": "2"},
                         "ip": "1.2.3.4", "userAgent": "ua", "locale": "en"},
             "requestIp": "5.6.7.8", "channel": "server", "vendorThing": [1], **STAMPED}
    row = event_to_row(event)
    # Then every typed column is filled, times are UTC-aware, unknown fields land in `extra`
    assert row["traits"] == '{"email":"a@b.c"}'
    assert row["library_name"] == "analytics-python" and row["library_version"] == "2"
    assert row["ip"] == "1.2.3.4" and row["request_ip"] == "5.6.7.8" and row["user_agent"] == "ua"
    assert row["original_timestamp"] == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert row["sent_at"] == datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC)
    assert row["timestamp"] == datetime(2026, 11, 24, 11, 59, 50, tzinfo=UTC)
    assert json.loads(row["extra"]) == {"vendorThing": [1]}
    assert json.loads(row["context"])["locale"] == "en"


def test_page_fields_come_from_properties_or_context_page() -> None:
    page = {"type": "page", "anonymousId": "a1", "messageId": "m1", "name": "Pricing",
            "properties": {"url": "https://x/pricing", "path": "/pricing"},
            "context": {"page": {"title": "Pricing", "referrer": "https://google"}}, **STAMPED}
    row = event_to_row(page)
    assert (row["page_url"], row["page_path"], row["page_title"], row["page_referrer"]) == (
        "https://x/pricing", "/pricing", "Pricing", "https://google")
    assert row["name"] == "Pricing"


def test_unstamped_event_cannot_become_a_row() -> None:
    with pytest.raises(ValueError, match="receivedAt: missing"):
        event_to_row({"type": "track", "event": "x", "userId": "u", "messageId": "m"})


def test_bad_event_in_a_message_goes_to_rejected_with_stage_ingest() -> None:
    # Given a message whose second event has a lone surrogate in its user id
    good = {"type": "track", "event": "x", "userId": "u1", "messageId": "m1", **STAMPED}
    bad = {"type": "track", "event": "x", "userId": "u\ud800", "messageId": "m2", **STAMPED}
    body = envelope.body_of([envelope.dumps(good), envelope.dumps(bad)], [])
    rows = rows_from_message(body, None)
    # Then the good one is a row and the bad one a rejection naming the field; nothing is dropped
    assert [r["message_id"] for r in rows.events] == ["m1"]
    assert rows.rejected[0]["stage"] == "ingest" and "userId: invalid Unicode" in rows.rejected[0]["reason"]
    assert rows.rejected[0]["message_id"] == "m2"


def test_rejections_have_a_stable_id() -> None:
    rec = {"receivedAt": "2026-11-24T12:00:00Z", "sourceId": "web", "reason": "event: Field required",
           "stage": "collect", "raw": '{"type":"track"}'}
    body = envelope.body_of([], [envelope.dumps(rec)])
    first, again = rows_from_message(body, None), rows_from_message(body, None)
    assert first.rejected[0]["rejection_id"] == again.rejected[0]["rejection_id"]


def test_spooled_message_is_read_from_the_spool() -> None:
    spool = MemoryBlobStore()
    event = {"type": "track", "event": "x", "userId": "u1", "messageId": "m1", **STAMPED}
    spool.put("spool/k.json", envelope.body_of([envelope.dumps(event)], []).encode())
    rows = rows_from_message(envelope.spooled_body("spool/k.json"), spool)
    assert rows.events[0]["message_id"] == "m1"


@pytest.mark.parametrize("body", ["not json", "[]", '{"v": 99}', '{"v": 1, "events": {}}', '{"v":1,"spooled":3}'])
def test_foreign_messages_are_poison(body: str) -> None:
    with pytest.raises(PoisonMessage):
        rows_from_message(body, MemoryBlobStore())
