"""The local stack runs load_records (S3 notification shape) and build_context (schedule shape)
end to end: events over HTTP, records dropped in S3, snapshots and aliases in DynamoDB (moto)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from customer_context import wiring

pytestmark = pytest.mark.e2e


def test_records_and_build_land_snapshots_in_dynamodb(local_stack: Any) -> None:
    batch = [
        {"type": "identify", "anonymousId": "dev-1", "userId": "cust-1", "traits": {"email": "Zoe@Example.com"}},
        {"type": "track", "userId": "cust-1", "event": "Order Completed", "properties": {"revenue": 99.5}},
        {"type": "page", "anonymousId": "dev-1", "name": "Pricing"},
    ]
    assert requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=(local_stack.write_key, ""),
                         timeout=10).status_code == 200
    assert local_stack.wait_for_ingest(60)
    # Given a CRM export dropped in S3 with one bad row
    crm = (b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
           b"C-9,zoe@example.com,Zoe,vip,Tom,2026-11-01T00:00:00Z\n"
           b"C-10,x@example.com,X,lead,,not a time\n")
    loaded = local_stack.load_records("crm_contacts", "export.csv", crm)["files"][0]
    assert loaded["loaded"] == 1 and loaded["rejected"] == 1
    assert loaded["reasons"] == ["line 3: updated_at: expected an ISO-8601 date-time, got 'not a time'"]
    # When the schedule fires
    report = local_stack.build()
    # Then every identifier resolves to one snapshot in DynamoDB with the traits and the CRM row
    store = wiring.context_store()
    profile = store.resolve("email", "zoe@example.com")
    assert profile is not None
    for id_type, value in (("user_id", "cust-1"), ("anonymous_id", "dev-1"), ("crm_id", "C-9")):
        assert store.resolve(id_type, value) == profile
    doc = json.loads(store.get_snapshot(profile)["doc"])
    assert doc["traits"]["lifetime_revenue"] == 99.5 and doc["records"]["crm_contacts"]["lifecycle_stage"] == "vip"
    assert report["profiles"] == 1 and report["items_written"] == 1 + 4
    # and a second run lands nothing
    assert local_stack.build()["items_written"] == 0


def test_maintenance_beside_the_running_stack_does_not_stop_ingest(local_stack: Any, monkeypatch: Any) -> None:
    from customer_context.config import Settings
    from customer_context.govern.maintain import maintain
    from customer_context.stores.iceberg import Lakehouse

    from tests.reliability.test_kill_then_maintain import _clock_moved

    def send(user: str) -> None:
        batch = [{"type": "track", "userId": user, "event": "Viewed"}]
        assert requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=(local_stack.write_key, ""),
                             timeout=10).status_code == 200
        assert local_stack.wait_for_ingest(60)

    # Given a running stack whose ingest has committed a few batches
    for n in range(3):
        send(f"u{n}")
    # When `customer-context maintain` (another process: its own catalog) compacts, expires and removes the
    # files the ingest function's cached metadata points at (the clock moved past the retention)
    _clock_moved(monkeypatch, 8 * 86400)
    report = maintain(Lakehouse.from_settings(Settings.from_env()), min_files=2)
    assert report["events"]["partitions"] == 1 and report["events"]["orphans_removed"] >= 1
    # Then the next events still land, nothing goes to the dead-letter queue
    send("after")
    users = {r["user_id"] for r in wiring.lakehouse().scan("events", selected_fields=("user_id",)).to_pylist()}
    assert users == {"u0", "u1", "u2", "after"}
    assert local_stack.dlq_depth() == 0


def test_a_stack_whose_store_was_lost_serves_every_customer_again_after_the_next_build(tmp_path: Any) -> None:
    import shutil

    from customer_context_devtools.local.stack import LocalStack

    def stack() -> LocalStack:
        return LocalStack(tmp_path / "stack", write_keys={"wk_test": "test"}, batch_window=0.2)

    batch = [{"type": "identify", "userId": f"c{n}", "anonymousId": f"d{n}"} for n in range(5)]
    # Given a stack that collected, built and served five customers, then stopped
    with stack() as first:
        assert requests.post(f"{first.url}/v1/batch", json={"batch": batch}, auth=("wk_test", ""),
                             timeout=10).status_code == 200
        assert first.wait_for_ingest(60)
        assert first.build()["changed_profiles"] == 5
    # And its serving store lost (the journal that keeps moto's DynamoDB across restarts removed, as when a
    # lakehouse is moved to another machine; on AWS: a table restored from an older backup or recreated)
    shutil.rmtree(tmp_path / "stack" / "aws")
    # When it is started again on the same lakehouse and the next build runs, with no new data
    with stack() as second:
        headers = {"authorization": f"Bearer {second.consumer_key}"}
        assert requests.get(f"{second.url}/v1/context/anonymous_id/d0", headers=headers, timeout=10).status_code == 404
        report = second.build()
        # Then the build saw the store was not the one it landed in, and every customer is served again
        assert report["relanded"] and report["changed_profiles"] == 0
        for n in range(5):
            answer = requests.get(f"{second.url}/v1/context/anonymous_id/d{n}", headers=headers, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["context"]["profile"]["identifiers"]["user_id"] == [f"c{n}"]
