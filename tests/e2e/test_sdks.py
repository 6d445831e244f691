"""The real RudderStack and Segment Python SDKs against the local stack, over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.stores.sql import query

from tests.helpers.accounting import assert_accounted

pytestmark = pytest.mark.e2e

PAST = datetime(2026, 8, 1, 9, 30, tzinfo=UTC)


def _every_call(client: Any, prefix: str) -> list[str]:
    """Send one call of each type; returns their message ids."""
    ids = [f"{prefix}-{n}" for n in range(6)]
    client.identify(f"{prefix}-user", {"email": "Ada@Example.com", "plan": "pro"}, anonymous_id=f"{prefix}-anon",
                    message_id=ids[0], timestamp=PAST)
    client.track(f"{prefix}-user", "Order Completed", {"revenue": 42.5, "currency": "USD"}, message_id=ids[1])
    client.page(f"{prefix}-user", "Docs", "Pricing", {"url": "https://x/pricing", "path": "/pricing"},
                message_id=ids[2])
    client.screen(f"{prefix}-user", "App", "Cart", {"items": 2}, message_id=ids[3])
    client.group(f"{prefix}-user", f"{prefix}-acct", {"name": "Acme"}, message_id=ids[4])
    client.alias(f"{prefix}-old", f"{prefix}-user", message_id=ids[5])
    client.flush()
    return ids


def _check_landed(lakehouse: Any, prefix: str, source: str) -> None:
    rows = {r["message_id"]: r for r in lakehouse.scan("events").to_pylist() if r["message_id"].startswith(prefix)}
    assert len(rows) == 6
    by_type = {r["type"]: r for r in rows.values()}
    assert set(by_type) == {"identify", "track", "page", "screen", "group", "alias"}
    identify = by_type["identify"]
    assert identify["user_id"] == f"{prefix}-user" and identify["anonymous_id"] == f"{prefix}-anon"
    assert json.loads(identify["traits"])["email"] == "Ada@Example.com"
    # the client clock agrees with ours, so the corrected timestamp stays at the historical time
    assert abs(identify["timestamp"] - PAST) < timedelta(seconds=5)
    assert identify["original_timestamp"] == PAST
    assert by_type["track"]["event"] == "Order Completed"
    assert json.loads(by_type["track"]["properties"])["revenue"] == 42.5
    assert by_type["page"]["name"] == "Pricing" and by_type["page"]["page_url"] == "https://x/pricing"
    assert by_type["group"]["group_id"] == f"{prefix}-acct"
    assert by_type["alias"]["previous_id"] == f"{prefix}-old"
    for row in rows.values():
        assert row["source_id"] == source and row["ip"] == "127.0.0.1"
        assert row["library_name"] == "analytics-python"
        # timestamp = receivedAt - (sentAt - originalTimestamp), to the millisecond
        expected = row["received_at"] - (row["sent_at"] - row["original_timestamp"])
        assert abs(row["timestamp"] - expected) < timedelta(milliseconds=2)


@pytest.mark.parametrize(("module", "prefix"), [("rudderstack.analytics.client", "rs"),
                                                ("segment.analytics.client", "sg")])
def test_python_sdk_every_call_gzip(local_stack: Any, module: str, prefix: str) -> None:
    import importlib

    # Given the real SDK client pointed at the local stack, compressing its batches
    client = importlib.import_module(module).Client(local_stack.write_key, host=local_stack.url, gzip=True,
                                                    upload_interval=0.1)
    # When it sends one call of each type
    _every_call(client, prefix)
    client.shutdown()
    assert local_stack.wait_for_ingest(60)
    # Then each landed with its typed fields
    _check_landed(wiring.lakehouse(), prefix, "test")


def test_wrong_write_key_is_401_for_the_sdk(local_stack: Any) -> None:
    from rudderstack.analytics.request import APIError, post

    with pytest.raises(APIError) as info:
        post("wk_wrong", local_stack.url, gzip=True, batch=[{"type": "track", "event": "x", "userId": "u"}])
    assert info.value.status == 401 and info.value.code == "unauthorized"
    missing = requests.post(f"{local_stack.url}/v1/batch", json={"batch": []}, timeout=10)
    assert missing.status_code == 401 and "Missing write key" in missing.json()["message"]


def test_batch_with_one_invalid_event_of_ten(local_stack: Any) -> None:
    # Given 10 events, one without userId or anonymousId
    batch = [{"type": "track", "event": "Viewed", "userId": f"u{i}", "messageId": f"ten-{i}"} for i in range(10)]
    del batch[6]["userId"]
    response = requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch},
                             auth=(local_stack.write_key, ""), timeout=10)
    # Then the response lists the rejection, and after ingest 9 are in events and 1 in rejected_events
    assert response.status_code == 200
    assert response.json()["rejected"] == [
        {"index": 6, "reason": "userId or anonymousId: at least one is required", "messageId": "ten-6"}]
    assert local_stack.wait_for_ingest(60)
    lakehouse = wiring.lakehouse()
    assert_accounted(lakehouse, [f"ten-{i}" for i in range(10) if i != 6], rejected_count=1)
    rejected = lakehouse.scan("rejected_events").to_pylist()[0]
    assert rejected["reason"] == "userId or anonymousId: at least one is required"
    assert json.loads(rejected["raw"])["messageId"] == "ten-6"


def test_sdk_retry_of_the_same_batch_yields_no_duplicates_by_message_id(local_stack: Any) -> None:
    from rudderstack.analytics.request import post

    batch = [{"type": "track", "event": "Viewed", "userId": "u1", "messageId": f"retry-{i}"} for i in range(5)]
    # Given the SDK sent a batch and, not seeing the answer, sent it again
    for _ in range(2):
        post(local_stack.write_key, local_stack.url, gzip=True, batch=[dict(e) for e in batch])
    assert local_stack.wait_for_ingest(60)
    lakehouse = wiring.lakehouse()
    # Then both copies are stored, and reading by message_id yields each event once
    _, raw = query(lakehouse, "select count(*) from events where message_id like 'retry-%'")
    _, unique = query(lakehouse, "select count(*) from events_unique where message_id like 'retry-%'")
    assert raw == [(10,)] and unique == [(5,)]
