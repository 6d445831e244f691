"""PII policy end to end: hashed emails still stitch, dropped fields are nowhere, raw values never logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.spec import DEFAULT_SPEC

from tests.helpers.logs import every_log_record

pytestmark = pytest.mark.e2e

POLICY = """
pii:
  - {path: traits.email, action: hash}
  - {path: properties.card_number, action: drop}
  - {path: context.ip, action: mask}
  - {path: traits.phone, action: mask}
"""
RAW_EMAIL = "Ann.Lee@Example.com"
UNKNOWN_EMAIL = "Zed.Unknown@Example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    spec = tmp_path_factory.mktemp("spec") / "context.yaml"
    text = DEFAULT_SPEC.read_text()
    crm = "    identifiers:\n      crm_id: contact_id\n      email: email\n"
    assert crm in text
    spec.write_text(text.replace(crm, crm + "    pii: {email: hash, full_name: drop}\n", 1) + POLICY)
    with LocalStack(tmp_path_factory.mktemp("pii"), write_keys={"wk": "web"}, batch_window=0.2,
                    environ={"CUSTOMER_CONTEXT_SPEC_PATH": str(spec)}) as running:
        yield running


def test_hashed_email_stitches_dropped_fields_are_gone_and_logs_are_clean(stack: Any) -> None:
    # Every log record of the run is captured at DEBUG, as the functions print them
    with every_log_record() as logs:
        # Given a visitor on one device and the same person signed in elsewhere, known only by email
        batch = [
            {"type": "identify", "anonymousId": "device-1", "traits": {"email": RAW_EMAIL, "phone": "+1 555 0100"},
             "context": {"ip": "203.0.113.77"}},
            {"type": "track", "anonymousId": "device-1", "event": "Order Completed",
             "properties": {"revenue": 12.5, "card_number": "4111111111111111"}},
            {"type": "identify", "userId": "ann", "traits": {"email": " ann.lee@example.COM "}},
            {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"revenue": 7.5}},
            {"type": "identify", "traits": {"email": RAW_EMAIL}},  # invalid (no id): rejected, policy applied too
        ]
        answer = requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=("wk", ""), timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == 4
        assert stack.wait_for_ingest(60)
        # and a CRM export naming her by the same email, in another case, with her full name
        stack.load_records("crm_contacts", "crm.csv", (
            b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
            b"C-77,ANN.LEE@example.com,Ann Marie Lee,vip,Tom,2026-11-01T00:00:00Z\n"))
        stack.build()
        # Then both devices are one customer, found by the raw email in any case
        headers = {"authorization": f"Bearer {stack.consumer_key}"}
        context = requests.get(f"{stack.url}/v1/context/email/ANN.LEE@example.com", headers=headers,
                               timeout=10).json()
        assert context["context"]["traits"]["orders_90d"] == 2
        identifiers = context["context"]["profile"]["identifiers"]
        assert identifiers["user_id"] == ["ann"] and identifiers["anonymous_id"] == ["device-1"]
        assert identifiers["crm_id"] == ["C-77"]  # the record joined through the hashed email
        assert context["context"]["records"]["crm_contacts"]["full_name"] is None
        assert [e.startswith("h_") for e in identifiers["email"]] == [True]
        # and a lookup by the raw email of someone unknown is a 404
        missing = requests.get(f"{stack.url}/v1/context/email/{UNKNOWN_EMAIL}", headers=headers, timeout=10)
        assert missing.status_code == 404
        stack.wait_for_ingest(60)  # the serving audit's records go through ingest too
    # (the capture saw the service's INFO records: it ran at the production level and below)
    assert {"collected", "ingested", "records loaded", "request failed"} <= logs.messages(logging.INFO)
    # And no table holds the raw email, the card number or the full IP address
    lakehouse = wiring.lakehouse()
    for table in lakehouse.table_names():
        text = json.dumps(lakehouse.scan(table).to_pylist(), default=str).lower()
        assert "ann.lee@example.com" not in text, table
        assert "4111111111111111" not in text and "card_number" not in text, table
        assert "203.0.113.77" not in text and "555 0100" not in text, table
        assert "ann marie lee" not in text, table
    events = lakehouse.scan("events").to_pylist()
    assert {e["ip"] for e in events if e["anonymous_id"] == "device-1" and e["type"] == "identify"} == {"203.0.113.0"}
    assert {e["ip"] for e in events if e["type"] == "track"} == {"127.0.0.0"}  # the request address, masked too
    # And the logs of the whole run never show an email, raw or as its hash token, nor the card or the IP
    text = logs.text.lower()
    policy = wiring.pii_policy()
    for value in ("ann.lee@example.com", UNKNOWN_EMAIL.lower(), policy.hash("ann.lee@example.com").lower(),
                  policy.hash(UNKNOWN_EMAIL).lower(), "4111111111111111", "203.0.113.77", "555 0100"):
        assert value not in text, value


def test_a_policy_that_hashes_needs_a_key(tmp_path: Path) -> None:
    from customer_context.errors import ConfigError
    from customer_context.pii import PiiPolicy
    from customer_context.spec import parse_spec

    with pytest.raises(ConfigError, match="CUSTOMER_CONTEXT_PII_HASH_KEY"):
        PiiPolicy(parse_spec(DEFAULT_SPEC.read_text() + POLICY), "")
    policy = PiiPolicy(parse_spec(DEFAULT_SPEC.read_text() + POLICY), "k")
    assert policy.hash(" A@B.io", "email") == policy.hash("a@b.io", "email") != PiiPolicy(
        parse_spec(DEFAULT_SPEC.read_text() + POLICY), "other").hash("a@b.io", "email")


def test_hashing_normalises_identifiers_as_lookups_do_and_never_hashes_a_blank() -> None:
    from customer_context.pii import PiiPolicy
    from customer_context.spec import parse_spec

    policy = PiiPolicy(parse_spec(DEFAULT_SPEC.read_text() + POLICY), "k")
    # an email is hashed after the email type's normalisation (Unicode spaces, case, NFC / NFD)
    assert policy.hash("\u3000JOSE\u0301@X.COM\u2003", "email") == policy.hash("jos\u00e9@x.com", "email")
    # and a blank one identifies nobody: no token shared by every customer who sent one
    event = {"type": "identify", "anonymousId": "d", "traits": {"email": " \u3000 "}}
    assert policy.apply(event)["traits"]["email"] is None
