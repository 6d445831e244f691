"""The local stack runs load_records (S3 notification shape) and build_context (schedule shape)
end to end: events over HTTP, records dropped in S3, snapshots and aliases in DynamoDB (moto)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from customer_context.stores import factory

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
    store = factory.context_store()
    profile = store.resolve("email", "zoe@example.com")
    assert profile is not None
    for id_type, value in (("user_id", "cust-1"), ("anonymous_id", "dev-1"), ("crm_id", "C-9")):
        assert store.resolve(id_type, value) == profile
    doc = json.loads(store.get_snapshot(profile)["doc"])
    assert doc["traits"]["lifetime_revenue"] == 99.5 and doc["records"]["crm_contacts"]["lifecycle_stage"] == "vip"
    assert report["profiles"] == 1 and report["items_written"] == 1 + 4
    # and a second run lands nothing
    assert local_stack.build()["items_written"] == 0
