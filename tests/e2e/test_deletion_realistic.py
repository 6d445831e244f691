"""Deleting one customer from a realistic lake, end to end over the local stack: shared devices, record rows
in another case and padding, other users naming her, an oversized (spooled) event, aliases, a live tail,
named queries and the serving audit, a build running at the same time, rebuilds after the job. Afterwards
nothing of her is anywhere — every file decoded (Parquet by value, Avro by record, the rest raw, the
stack's own journal included), every DynamoDB item, every S3 object — and every other customer's rows and
traits are as they were, but for her values cut out of them."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.serve.consumers import consumer_item, hash_key

from tests.helpers.residue import search_dynamodb, search_files, search_s3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WK = "wk_real"
EMAIL = "Alice.Smith@Example.com"
HERS = ["alice.smith@example.com", "u-alice", "alice-phone", "alice-old-phone", "C-ALICE", "T-ALICE", "blob-of-alice"]
OTHERS = ["u-bob", "u-dave", "crowd-0007"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("realistic"), write_keys={WK: "web"}, batch_window=0.2) as running:
        yield running


def _send(stack: Any, batch: list[dict[str, Any]]) -> dict[str, Any]:
    answer = requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=(WK, ""), timeout=60)
    assert answer.status_code == 200, answer.text
    assert stack.wait_for_ingest(120)
    return answer.json()  # type: ignore[no-any-return]


def _get(stack: Any, path: str, key: str | None = None) -> requests.Response:
    return requests.get(f"{stack.url}{path}", headers={"authorization": f"Bearer {key or stack.consumer_key}"},
                        timeout=30)


def _everywhere(stack: Any, values: list[str]) -> list[str]:
    """Every place a value is found: every file of the data dir, decoded, every item, every object."""
    from customer_context_devtools.local.stack import CONTEXT_TABLE, SPOOL_BUCKET

    assert wiring.audit_log().wait_flushed(30) and stack.wait_for_ingest(120)
    return ([str(h) for h in search_files(stack.data_dir, values)]
            + [str(h) for h in search_dynamodb(wiring.boto_client("dynamodb"), CONTEXT_TABLE, values)]
            + [str(h) for h in search_s3(wiring.boto_client("s3"), SPOOL_BUCKET, values)])


def _world(stack: Any) -> None:
    crowd = [{"type": "track", "userId": f"crowd-{n:04d}", "event": "Product Viewed", "messageId": f"c-{n}",
              "properties": {"sku": f"sku-{n:04d}", "category": "shoes"}} for n in range(1500)]
    _send(stack, crowd[:750])
    _send(stack, [
        *crowd[750:],
        # alice: her phone, then the family laptop (anonymously first), an old phone aliased to her
        {"type": "identify", "userId": "u-alice", "anonymousId": "alice-phone", "traits": {"email": EMAIL},
         "messageId": "a-1"},
        {"type": "track", "userId": "u-alice", "event": "Order Completed", "messageId": "a-2",
         "properties": {"revenue": 30, "order_id": "A-1"}},
        {"type": "page", "anonymousId": "shared-laptop", "name": "Home", "messageId": "a-3"},
        {"type": "identify", "userId": "u-alice", "anonymousId": "shared-laptop", "messageId": "a-4"},
        {"type": "alias", "previousId": "alice-old-phone", "userId": "u-alice", "messageId": "a-5"},
        {"type": "alias", "userId": "u-alice", "messageId": "a-6"},  # invalid (no previousId): rejected, hers
        # bob on the same laptop, signed in: three orders, and a note naming her
        *[{"type": "track", "userId": "u-bob", "anonymousId": "shared-laptop", "event": "Order Completed",
           "messageId": f"b-{n}", "properties": {"revenue": 10 + n, "order_id": f"B-{n}"}} for n in range(3)],
        {"type": "identify", "userId": "u-bob", "traits": {"email": "bob@example.com", "plan": "basic"},
         "messageId": "b-9"},
        {"type": "track", "userId": "u-bob", "event": "Gift Sent", "messageId": "b-10",
         "properties": {"note": f"a gift for {EMAIL.upper()} from bob"}},
        # dave typed her address into his profile
        {"type": "identify", "userId": "u-dave", "traits": {"email": EMAIL.lower(), "plan": "pro"},
         "messageId": "d-1"},
    ])
    # her oversized event (spooled to S3 as a claim check)
    _send(stack, [{"type": "track", "userId": "u-alice", "event": "Big", "messageId": "a-7",
                   "properties": {"blob": "blob-of-alice " + "x" * 300_000}}])
    stack.load_records("crm_contacts", "crm.csv", (
        "contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
        f"C-ALICE,  {EMAIL.upper()} ,Alice Smith,vip,Tom,2026-11-01T00:00:00Z\n"
        "C-BOB,bob@example.com,Bob B,lead,Tom,2026-11-01T00:00:00Z\n").encode())
    stack.load_records("support_tickets", "tickets.csv", (
        "ticket_id,requester_email,channel,status,subject,body,created_at,updated_at\n"
        f"T-ALICE,{EMAIL},email,open,Refund,please refund,2026-11-20T00:00:00Z,2026-11-20T00:00:00Z\n"
        f"T-BOB,bob@example.com,chat,open,Gift,the gift is for {EMAIL},2026-11-21T00:00:00Z,"
        "2026-11-21T00:00:00Z\n").encode())


def _state(stack: Any) -> dict[str, Any]:
    """Everything the test compares before and after: other customers' contexts, and every events row."""
    contexts = {u: _get(stack, f"/v1/context/user_id/{u}").json()["context"] for u in OTHERS}
    rows = {r["message_id"]: r for r in wiring.lakehouse().scan("events").to_pylist()}
    return {"contexts": contexts, "rows": rows}


def test_deleting_her_leaves_nothing_of_her_and_everyone_else_as_they_were(stack: Any) -> None:
    from customer_context.assemble.build import build_context
    from customer_context.config import get_settings
    from customer_context.spec import load_spec
    from customer_context.stores.iceberg import Lakehouse

    store = wiring.context_store()
    store.put_consumer(hash_key("ck_dpo"), consumer_item("dpo", [], [], admin=True))
    _world(stack)
    stack.build()
    # Given she is served, her live tail holds a fresh event, a named query ran for her and was audited
    assert _get(stack, f"/v1/context/email/{EMAIL}").status_code == 200
    _send(stack, [{"type": "track", "userId": "u-alice", "event": "Cart Viewed", "messageId": "a-8"}])
    ran = requests.post(f"{stack.url}/v1/context/user_id/u-alice/queries/orders_in_period", timeout=60,
                        json={"since": "2020-01-01T00:00:00Z"},
                        headers={"authorization": f"Bearer {stack.consumer_key}"})
    assert ran.status_code == 200 and ran.json()["row_count"] == 1
    stack.build()
    before = _state(stack)
    assert before["contexts"]["u-bob"]["traits"]["orders_90d"] == 3
    assert _everywhere(stack, HERS), "she is everywhere before the regulation"

    # When a build starts reading the lakehouse, and her deletion is filed and done while it computes
    gate, release = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("read") and not gate.is_set():
            gate.set()
            assert release.wait(300)

    def concurrent_build() -> None:
        lake = Lakehouse.from_settings(get_settings())
        # in full: with nothing new since the last build, its plan would not read at all
        result["report"] = build_context(lake, store, load_spec(), progress=progress, full=True,
                                         pii_key=get_settings().pii_hash_key)

    builder = threading.Thread(target=concurrent_build)
    builder.start()
    assert gate.wait(300)
    filed = requests.post(f"{stack.url}/v1/regulations", headers={"authorization": "Bearer ck_dpo"}, timeout=60,
                          json={"regulationType": "suppress_with_delete", "users": [{"email": EMAIL}]})
    assert filed.status_code == 202, filed.text
    deadline = time.monotonic() + 600
    while True:
        status = requests.get(f"{stack.url}/v1/regulations/{filed.json()['id']}", timeout=30,
                              headers={"authorization": "Bearer ck_dpo"}).json()
        if status["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status["status"] == "done", status
    release.set()
    builder.join(600)
    # the build noticed the deletion, read the lakehouse again and landed (nothing of her: see below)
    assert any("building again" in line for line in lines) and result["report"].profiles > 0
    # And the stack builds again, as its schedule would
    stack.build()

    # Then nothing of her is in any file, item or object
    residue = _everywhere(stack, HERS)
    assert residue == [], "\n".join(residue)
    # And every other customer is served as before, and their rows are those of before but for her values
    after = _state(stack)
    for user in OTHERS:
        was, now = before["contexts"][user], after["contexts"][user]
        for section in ("profile", "scores", "traits", "records"):
            assert now[section] == was[section], (user, section)
        # their recent events and support conversations are those of before, her address cut out of their texts
        cut = re.sub(re.escape(EMAIL), "[deleted]", json.dumps(was, sort_keys=True), flags=re.IGNORECASE)
        assert json.dumps(now, sort_keys=True) == cut, user
    gone = set(before["rows"]) - set(after["rows"])
    assert gone == {"a-1", "a-2", "a-3", "a-4", "a-5", "a-7", "a-8"}
    changed = {m for m in after["rows"] if after["rows"][m] != before["rows"][m]}
    assert changed == {"b-0", "b-1", "b-2", "b-10", "d-1"}
    for m in ("b-0", "b-1", "b-2"):  # the shared laptop's id is hers: gone from bob's orders, nothing else
        assert {**before["rows"][m], "anonymous_id": None} == after["rows"][m]
    assert json.loads(after["rows"]["d-1"]["traits"]) == {"email": None, "plan": "pro"}
    assert json.loads(after["rows"]["b-10"]["properties"]) == {"note": "a gift for [deleted] from bob"}

    # When she comes back by every way collect can see: her device aliased to a new account, an invalid event,
    # another user's identify carrying her address
    answer = _send(stack, [
        {"type": "alias", "previousId": "alice-phone", "userId": "u-new", "messageId": "n-1"},
        {"type": "identify", "traits": {"email": EMAIL}, "messageId": "n-2"},
        {"type": "identify", "userId": "u-dave", "traits": {"email": EMAIL, "plan": "pro"}, "messageId": "n-3"},
    ])
    assert answer["accepted"] == 2 and len(answer["rejected"]) == 1
    # and someone looks her up by her email (a 404, audited)
    assert _get(stack, f"/v1/context/email/{EMAIL}").status_code == 404
    stack.build()
    # Then still nothing of her anywhere: the alias and the invalid event were dropped, dave's identify kept
    # without her address, the audit keeps a keyed token of the lookup
    residue = _everywhere(stack, HERS)
    assert residue == [], "\n".join(residue)
    assert _get(stack, "/v1/context/user_id/u-dave").json()["context"]["traits"]["plan"] == "pro"
