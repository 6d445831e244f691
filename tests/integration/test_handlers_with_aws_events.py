"""Every handler invoked with the exact event shape its AWS trigger sends (samples in events/)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context import wiring
from customer_context_devtools.local import lambda_runtime

from tests.conftest import load_event


@pytest.fixture
def queue_url(aws: str, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    sqs = wiring.boto_client("sqs")
    url = sqs.create_queue(QueueName=f"q-{id(monkeypatch)}")["QueueUrl"]
    monkeypatch.setenv("CUSTOMER_CONTEXT_QUEUE_URL", url)
    monkeypatch.setenv("CUSTOMER_CONTEXT_WRITE_KEYS", "wk_sample=sample")
    wiring.reload_from_environment()
    return url


def _drain(url: str) -> list[dict[str, Any]]:
    sqs = wiring.boto_client("sqs")
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not got:
            return messages
        messages += got


@pytest.mark.parametrize("sample", ["collect_batch.json", "collect_batch_gzip.json"])
def test_collect_batch_sample_then_ingest_lands_everything(sample: str, queue_url: str, lakehouse: Any) -> None:
    # Given the API Gateway HTTP API event of a batch with one invalid event (plain and gzip+base64)
    event = load_event(sample)
    # When collect handles it
    response = lambda_runtime.invoke("collect", event)
    body = json.loads(response["body"])
    # Then 3 are accepted and the invalid one is listed with its reason
    assert response["statusCode"] == 200
    assert body["accepted"] == 3 and body["rejected"][0]["reason"] == "event: Field required"

    # When ingest receives the queued messages as the SQS event source mapping delivers them
    from customer_context_devtools.local.sqs_trigger import sqs_event

    messages = _drain(queue_url)
    result = lambda_runtime.invoke("ingest", sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"))
    # Then nothing failed and everything is in Iceberg with typed fields
    assert result == {"batchItemFailures": []}
    events = {r["message_id"]: r for r in lakehouse.scan("events").to_pylist()}
    assert set(events) == {f"9b5a4c9e-1a2b-4c3d-8e9f-00000000000{i}" for i in (1, 2, 3)}
    order = events["9b5a4c9e-1a2b-4c3d-8e9f-000000000002"]
    assert order["event"] == "Order Completed" and json.loads(order["properties"])["revenue"] == 42.5
    assert order["source_id"] == "sample" and order["ip"] == "203.0.113.7"
    identify = events["9b5a4c9e-1a2b-4c3d-8e9f-000000000001"]
    assert json.loads(identify["traits"])["email"] == "ada@example.com"
    rejected = lakehouse.scan("rejected_events").to_pylist()
    assert [r["reason"] for r in rejected] == ["event: Field required"]


def test_collect_single_track_sample(queue_url: str) -> None:
    response = lambda_runtime.invoke("collect", load_event("collect_track.json"))
    assert response["statusCode"] == 200 and json.loads(response["body"])["accepted"] == 1
    stamped = json.loads(_drain(queue_url)[0]["Body"])["events"][0]
    assert stamped["type"] == "track" and stamped["originalTimestamp"] == "2026-11-24T11:59:00Z"


def test_collect_invalid_json_sample_is_400_with_reason(queue_url: str) -> None:
    response = lambda_runtime.invoke("collect", load_event("collect_invalid_json.json"))
    body = json.loads(response["body"])
    assert response["statusCode"] == 400
    assert body["code"] == "invalid_request" and body["message"].startswith("body: invalid JSON")


def test_collect_answers_503_when_sqs_is_down(queue_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a queue URL that does not exist (SQS answers an error for every send)
    monkeypatch.setenv("CUSTOMER_CONTEXT_QUEUE_URL", queue_url + "-gone")
    wiring.reload_from_environment()
    response = lambda_runtime.invoke("collect", load_event("collect_batch.json"))
    # Then the SDK is told to retry
    assert response["statusCode"] == 503 and json.loads(response["body"])["code"] == "service_unavailable"


def test_ingest_sample_reports_the_poison_message_and_lands_the_rest(lakehouse: Any, aws: str) -> None:
    # Given the SQS sample: one good envelope and one poison body
    event = load_event("ingest_sqs.json")
    # When ingest handles it
    result = lambda_runtime.invoke("ingest", event)
    # Then only the poison record is a batch item failure, and the good one landed
    assert result == {"batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]}
    assert lakehouse.scan("events").num_rows == 3
    assert lakehouse.scan("rejected_events").num_rows == 1


def test_load_records_then_build_context_samples(aws: str, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context_devtools.local.template import resource_properties

    # Given the bucket and object the S3 sample names (the key arrives URL-encoded) and the context table
    event = load_event("load_records_s3.json")
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    s3 = wiring.boto_client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="imports/crm_contacts/crm export 2026-11-24.csv",
                  Body=b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
                       b"C-1,ada@example.com,Ada,vip,,2026-11-01T00:00:00Z\n")
    props = resource_properties("ContextTable")
    wiring.boto_client("dynamodb").create_table(
        TableName="ctx-samples", KeySchema=props["KeySchema"], AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST")
    monkeypatch.setenv("CUSTOMER_CONTEXT_CONTEXT_TABLE", "ctx-samples")
    wiring.reload_from_environment()
    # When load_records handles the notification
    loaded = lambda_runtime.invoke("load_records", event)
    # Then the row is upserted
    assert loaded["files"][0]["loaded"] == 1 and loaded["files"][0]["table"] == "crm_contacts"
    # When the schedule fires build_context
    report = lambda_runtime.invoke("build_context", load_event("build_context_schedule.json"))
    # Then the record-only customer has a profile and a snapshot in DynamoDB
    assert report["profiles"] == 1 and report["items_written"] == 1 + 2
    profile = wiring.context_store().resolve("crm_id", "C-1")
    assert profile and wiring.context_store().resolve("email", "ada@example.com") == profile
