"""Regulations end to end: suppress_with_delete removes a customer from every copy; later events are dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.serve.consumers import consumer_item, hash_key

from tests.helpers.residue import search_dynamodb, search_files

pytestmark = pytest.mark.e2e

GONE = {"user_id": "gone-user", "anonymous_id": "gone-device", "email": "gone.person@example.com"}
NEEDLES = [v.encode() for v in GONE.values()] + [b"C-GONE"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("regulate"), write_keys={"wk": "web"}, batch_window=0.2) as running:
        yield running


def _send(stack: Any, batch: list[dict[str, Any]]) -> dict[str, Any]:
    answer = requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=("wk", ""), timeout=10)
    assert answer.status_code == 200, answer.text
    assert stack.wait_for_ingest(60)
    return answer.json()


def _files_mentioning(root: Path) -> list[str]:
    """Every file under ``root`` holding a needle, decoded (Parquet by value, Avro by record, the rest raw)."""
    return [str(h) for h in search_files(root, [n.decode() for n in NEEDLES])]


def _crowd(n: int) -> list[dict[str, Any]]:
    """Events of other customers: enough rows that data files compress (a byte search would find nothing)."""
    return [{"type": "track", "userId": f"crowd-{i:05d}", "event": "Product Viewed",
             "properties": {"sku": f"sku-{i:05d}", "note": f"viewed item {i} of the catalogue"}} for i in range(n)]


def test_suppress_with_delete_removes_the_customer_everywhere(stack: Any) -> None:
    store = wiring.context_store()
    store.put_consumer(hash_key("ck_admin"), consumer_item("dpo", [], [], admin=True))
    auth = {"authorization": f"Bearer {stack.consumer_key}"}
    # Given a customer known through events, a rejected event, a CRM row, two builds, a fetch and live events
    _send(stack, _crowd(1500))
    _send(stack, [
        *_crowd(1500)[:700],
        {"type": "identify", "anonymousId": GONE["anonymous_id"], "userId": GONE["user_id"],
         "traits": {"email": GONE["email"]}},
        {"type": "track", "userId": GONE["user_id"], "event": "Order Completed", "properties": {"revenue": 40}},
        {"type": "page", "anonymousId": GONE["anonymous_id"], "name": "Pricing"},
        {"type": "alias", "userId": GONE["user_id"]},  # rejected: no previousId; its raw text names the user
        {"type": "identify", "userId": "stays", "traits": {"email": "stays@example.com"}},
        {"type": "track", "userId": "stays", "event": "Order Completed", "properties": {"revenue": 5}},
    ])
    stack.load_records("crm_contacts", "crm.csv", (
        "contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
        f"C-GONE,{GONE['email']},Gone Person,vip,Tom,2026-11-01T00:00:00Z\n"
        "C-STAY,stays@example.com,Stay,lead,Tom,2026-11-01T00:00:00Z\n").encode())
    stack.build()
    _send(stack, [{"type": "track", "userId": GONE["user_id"], "event": "Cart Viewed"}])
    stack.build()
    assert requests.get(f"{stack.url}/v1/context/email/{GONE['email']}", headers=auth, timeout=10).status_code == 200
    assert wiring.audit_log().wait_flushed(10) and stack.wait_for_ingest(60)
    _send(stack, [{"type": "track", "anonymousId": GONE["anonymous_id"], "event": "Seen Again"}])  # live tail
    warehouse = stack.data_dir / "warehouse"
    assert _files_mentioning(warehouse), "the customer is in the lakehouse before the regulation"

    # When an admin files suppress_with_delete naming only the email
    filed = requests.post(f"{stack.url}/v1/regulations", headers={"authorization": "Bearer ck_admin"}, timeout=30,
                          json={"regulationType": "suppress_with_delete", "users": [{"email": GONE["email"]}]})
    assert filed.status_code == 202, filed.text
    regulation_id = filed.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        status = requests.get(f"{stack.url}/v1/regulations/{regulation_id}",
                              headers={"authorization": "Bearer ck_admin"}, timeout=10).json()
        if status["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Then the job is done, with counts per table
    assert status["status"] == "done", status
    assert status["counts"]["events"] >= 4 and status["counts"]["crm_contacts"] == 1
    assert status["counts"]["rejected_events"] == 1 and status["counts"]["context_snapshots"] >= 1
    # And no file of the warehouse (current or historic data, manifests) mentions any of their identifiers
    residue = _files_mentioning(warehouse)
    assert residue == [], "\n".join(residue)
    # And the DynamoDB table holds no item naming them (suppressions are kept as hashes)
    assert [str(h) for h in search_dynamodb(wiring.boto_client("dynamodb"), "customer-context-local",
                                            [n.decode() for n in NEEDLES])] == []
    assert requests.get(f"{stack.url}/v1/context/email/{GONE['email']}", headers=auth, timeout=10).status_code == 404
    # And the other customer is untouched
    assert requests.get(f"{stack.url}/v1/context/user_id/stays", headers=auth, timeout=10).status_code == 200

    # When they send events again, under any of their identifiers
    answer = _send(stack, [{"type": "track", "userId": GONE["user_id"], "event": "Back"},
                           {"type": "page", "anonymousId": GONE["anonymous_id"], "name": "Home"},
                           {"type": "track", "userId": "stays", "event": "Still Here"}])
    # Then collect acknowledges all (SDKs must not retry) but keeps only the other customer's
    assert answer["accepted"] == 3
    events = wiring.lakehouse().scan("events").to_pylist()
    assert {e["event"] for e in events if e["user_id"] == "stays"} >= {"Still Here"}
    assert not [e for e in events if e["user_id"] == GONE["user_id"] or e["anonymous_id"] == GONE["anonymous_id"]]


def test_regulations_need_an_admin_key(stack: Any) -> None:
    body = {"regulationType": "suppress", "users": [{"userId": "x"}]}
    assert requests.post(f"{stack.url}/v1/regulations", json=body, timeout=10).status_code == 401
    denied = requests.post(f"{stack.url}/v1/regulations", json=body, timeout=10,
                           headers={"authorization": f"Bearer {stack.consumer_key}"})
    assert denied.status_code == 403 and "admin" in denied.json()["message"]
    store = wiring.context_store()
    store.put_consumer(hash_key("ck_admin2"), consumer_item("dpo2", [], [], admin=True))
    bad = requests.post(f"{stack.url}/v1/regulations", json={"regulationType": "erase", "users": []}, timeout=10,
                        headers={"authorization": "Bearer ck_admin2"})
    assert bad.status_code == 400 and "regulationType" in bad.json()["message"]


def test_tracking_plans_endpoint_is_admin_only(stack: Any) -> None:
    store = wiring.context_store()
    store.put_consumer(hash_key("ck_admin3"), consumer_item("dpo3", [], [], admin=True))
    answer = requests.get(f"{stack.url}/v1/tracking-plans", headers={"authorization": "Bearer ck_admin3"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"plans": {}, "violations": []}  # the default spec plans nothing
    denied = requests.get(f"{stack.url}/v1/tracking-plans", headers={"authorization": f"Bearer {stack.consumer_key}"},
                          timeout=10)
    assert denied.status_code == 403
