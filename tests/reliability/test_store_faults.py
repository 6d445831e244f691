"""Stores under faults: S3 ``SlowDown`` / 503 / ``InternalError`` and DynamoDB throttling.

The errors are injected at the store boundary — answered to botocore's ``before-send`` (so its real
standard-mode retry handler classifies them and backs off), or by a fault proxy on loopback in front
of moto's server for pyarrow's S3 client under pyiceberg. Each case shows: retried with backoff
(attempts counted), nothing lost (the accounting invariant), and when the fault outlasts the
retries, a clear error with no partial state, then convergence once it clears.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.endpoint
import pytest
from customer_context import envelope, wiring
from customer_context.errors import StoreUnavailable
from customer_context.stores import context_store as context_store_module
from customer_context_devtools.local import lambda_runtime
from customer_context_devtools.local.sqs_trigger import sqs_event

from tests.conftest import load_event
from tests.helpers.accounting import assert_accounted, landed
from tests.helpers.faults import (
    DDB_THROTTLING,
    DDB_THROUGHPUT,
    S3_INTERNAL,
    S3_SLOW_DOWN,
    S3_UNAVAILABLE,
    BotoFaults,
    FaultProxy,
    leave_reads_unprocessed,
    leave_writes_unprocessed,
    record_sleeps,
)

STAMP = {"timestamp": "2026-11-24T11:59:00.000Z"}
ARN = "arn:aws:sqs:us-east-1:123456789012:q"
# botocore's ``max_attempts`` counts retries: the first attempt comes on top
BOTOCORE_MAX_ATTEMPTS = 5 + 1  # wiring.boto_client: standard mode, max_attempts 5
DYNAMODB_MAX_ATTEMPTS = 8 + 1  # wiring.context_store: standard mode, max_attempts 8


# --------------------------------------------------------------------------- S3 through botocore: the spool


@pytest.fixture
def spool(aws: str, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """collect with a queue and a spool bucket on moto; queue messages of at most 2 KiB, so big events spool."""
    sqs, s3 = wiring.boto_client("sqs"), wiring.boto_client("s3")
    url = sqs.create_queue(QueueName=f"faults-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    bucket = f"spool-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for name, value in {"QUEUE_URL": url, "WRITE_KEYS": "wk_faults=faults", "SPOOL_BUCKET": bucket,
                        "QUEUE_MAX_MESSAGE_BYTES": "2048", "RECENT_EVENTS_TTL_SECONDS": "0"}.items():
        monkeypatch.setenv(f"CUSTOMER_CONTEXT_{name}", value)
    wiring.reload_from_environment()
    return {"queue_url": url, "bucket": bucket}


def _batch(prefix: str, small: int, big: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``small`` events that fit a queue message and ``big`` ones (3 KB) that must be spooled to S3."""
    events = [{"type": "track", "event": "Viewed", "userId": f"u{i}", "messageId": f"{prefix}-s{i}", **STAMP}
              for i in range(small)]
    events += [{"type": "track", "event": "Uploaded", "userId": f"u{i}", "messageId": f"{prefix}-b{i}",
                "properties": {"blob": "x" * 3000}, **STAMP} for i in range(big)]
    return events, [e["messageId"] for e in events]


def _collect(events: list[dict[str, Any]]) -> dict[str, Any]:
    request = load_event("collect_batch.json")
    request["body"] = json.dumps({"batch": events})
    request["headers"]["authorization"] = "Basic " + base64.b64encode(b"wk_faults:").decode()
    request["headers"].pop("content-length", None)
    return lambda_runtime.invoke("collect", request)


def _drain(url: str) -> list[dict[str, Any]]:
    sqs = wiring.boto_client("sqs")
    messages: list[dict[str, Any]] = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                     VisibilityTimeout=0).get("Messages", []):
        messages += got
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return messages


def _spooled_keys(bucket: str) -> list[str]:
    listing = wiring.boto_client("s3").list_objects_v2(Bucket=bucket, Prefix="spool/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_spool_writes_and_reads_through_s3_slowdown_are_retried_and_land_once(
        spool: dict[str, str], lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = record_sleeps(monkeypatch, botocore.endpoint)
    faults = BotoFaults(wiring.boto_client("s3"))
    # Given S3 answering SlowDown twice, then InternalError once, to the spool's PutObject
    faults.fail("PutObject", S3_SLOW_DOWN, failures=2)
    faults.fail("PutObject", S3_INTERNAL, failures=1)
    events, ids = _batch("slow", small=4, big=2)
    # When collect receives a batch with two events too big for a queue message
    response = _collect(events)
    # Then the first spool write took 4 attempts, with a backoff before each retry, and all is accepted
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["accepted"] == 6
    assert faults.injected["PutObject"] == 3 and faults.attempts["PutObject"] == 2 + 3
    assert len(sleeps.delays) == 3 and all(0 <= d <= 2 ** (n + 1) for n, d in enumerate(sleeps.delays))
    assert len(_spooled_keys(spool["bucket"])) == 2

    # When ingest reads the spooled objects while S3 answers 503 twice to GetObject
    faults.fail("GetObject", S3_UNAVAILABLE, failures=2)
    result = lambda_runtime.invoke("ingest", sqs_event(_drain(spool["queue_url"]), ARN, "us-east-1"))
    # Then the reads were retried, nothing failed, and every accepted event landed exactly once
    assert result == {"batchItemFailures": []}
    assert faults.injected["GetObject"] == 2 and faults.attempts["GetObject"] == 2 + 2
    assert_accounted(lakehouse, ids, rejected_count=0)


def test_collect_answers_503_and_keeps_nothing_when_s3_outlasts_the_retries(
        spool: dict[str, str], lakehouse: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    sleeps = record_sleeps(monkeypatch, botocore.endpoint)
    faults = BotoFaults(wiring.boto_client("s3"))
    faults.fail("PutObject", S3_SLOW_DOWN)  # for as long as it takes
    events, ids = _batch("down", small=3, big=1)
    # When collect cannot spool the big event
    response = _collect(events)
    # Then it answers 503 service_unavailable with a reason (SDKs retry 5xx), after every attempt
    body = json.loads(response["body"])
    assert response["statusCode"] == 503, response
    assert body["code"] == "service_unavailable"
    assert "S3" in body["message"] and "SlowDown" in body["message"] and "retry later" in body["message"]
    assert f"after {BOTOCORE_MAX_ATTEMPTS} attempts" in body["message"]
    assert faults.attempts["PutObject"] == BOTOCORE_MAX_ATTEMPTS == len(sleeps.delays) + 1
    # logged as an outage (status, code, reason), not as a crash with a stack trace
    assert any(getattr(r, "status", None) == 503 for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    # And nothing was acknowledged, so nothing was queued: not even the small events of the batch
    assert _drain(spool["queue_url"]) == [] and _spooled_keys(spool["bucket"]) == []

    # When S3 recovers and the SDK sends the same batch again
    faults.clear()
    assert _collect(events)["statusCode"] == 200
    result = lambda_runtime.invoke("ingest", sqs_event(_drain(spool["queue_url"]), ARN, "us-east-1"))
    # Then everything lands exactly once
    assert result == {"batchItemFailures": []}
    assert_accounted(lakehouse, ids, rejected_count=0)


def test_unreadable_spooled_message_is_a_batch_item_failure_and_lands_once_redelivered(
        spool: dict[str, str], lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    record_sleeps(monkeypatch, botocore.endpoint)
    events, ids = _batch("redeliver", small=5, big=1)
    assert _collect(events)["statusCode"] == 200
    messages = _drain(spool["queue_url"])
    spooled = [m for m in messages if envelope.loads(m["Body"]).spooled is not None]
    assert len(spooled) == 1 and len(messages) >= 2
    # Given S3 failing every GetObject while ingest handles the batch
    faults = BotoFaults(wiring.boto_client("s3"))
    faults.fail("GetObject", S3_INTERNAL)
    result = lambda_runtime.invoke("ingest", sqs_event(messages, ARN, "us-east-1"))
    # Then only the spooled message is reported failed (SQS will redeliver it); the rest of the batch landed
    assert result == {"batchItemFailures": [{"itemIdentifier": spooled[0]["MessageId"]}]}
    assert faults.attempts["GetObject"] == BOTOCORE_MAX_ATTEMPTS
    assert set(landed(lakehouse)[0]) == set(ids) - {"redeliver-b0"}
    # When S3 recovers and SQS redelivers the failed message
    faults.clear()
    again = lambda_runtime.invoke("ingest", sqs_event(spooled, ARN, "us-east-1"))
    # Then every accepted event is there exactly once
    assert again == {"batchItemFailures": []}
    assert_accounted(lakehouse, ids, rejected_count=0)


# --------------------------------------------------------------------------- the Iceberg warehouse on S3 (pyarrow)


@pytest.fixture
def s3_warehouse(aws: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FaultProxy]]:
    """A lakehouse whose warehouse is a bucket on moto, reached through a fault proxy on loopback."""
    bucket = f"warehouse-{uuid.uuid4().hex[:12]}"
    wiring.boto_client("s3").create_bucket(Bucket=bucket)
    proxy = FaultProxy(aws).start()
    monkeypatch.setenv("CUSTOMER_CONTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CUSTOMER_CONTEXT_CATALOG_TYPE", "sql")
    monkeypatch.setenv("CUSTOMER_CONTEXT_WAREHOUSE", f"s3://{bucket}/warehouse")
    monkeypatch.setenv("CUSTOMER_CONTEXT_CATALOG_PROPERTIES", json.dumps({
        "s3.endpoint": proxy.url, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
        "s3.region": "us-east-1", "s3.force-virtual-addressing": "false"}))
    wiring.reload_from_environment()
    lake = wiring.lakehouse()
    lake.table("events")  # the table exists before the faults, as in production
    try:
        yield lake, proxy
    finally:
        proxy.stop()


def _is_data_upload(method: str, path: str) -> bool:
    return method in ("PUT", "POST") and "/events/data/" in path


def test_ingest_to_an_s3_warehouse_retries_slowdown_and_lands_once(s3_warehouse: tuple[Any, FaultProxy]) -> None:
    from tests.reliability.test_ingest_faults import _sqs_event

    lake, proxy = s3_warehouse
    # Given S3 answering SlowDown to the first two uploads of a data file
    rule = proxy.fail(_is_data_upload, S3_SLOW_DOWN, failures=2)
    event, ids = _sqs_event("wh-slow", 120)
    # When ingest appends a batch
    assert lambda_runtime.invoke("ingest", event) == {"batchItemFailures": []}
    # Then pyarrow's S3 client retried the same upload (third attempt succeeded) and every event is there once
    uploads = [(m, p.split("?")[0], s) for m, p, s in proxy.requests if _is_data_upload(m, p)]
    assert rule.injected == 2 and [s for *_, s in uploads[:3]] == [503, 503, 200]
    assert len({p for _, p, _ in uploads[:3]}) == 1, "the retries are of the same object"
    assert_accounted(lake, ids, rejected_count=0)


def test_ingest_fails_whole_when_s3_outlasts_the_retries_and_redelivery_lands_once(
        s3_warehouse: tuple[Any, FaultProxy]) -> None:
    from tests.reliability.test_ingest_faults import _sqs_event

    lake, proxy = s3_warehouse
    # Given S3 answering 503 to every upload of a data file
    proxy.fail(_is_data_upload, S3_UNAVAILABLE)
    event, ids = _sqs_event("wh-down", 120)
    # When ingest appends a batch, the invocation fails (so SQS redelivers the whole batch) with S3's error
    with pytest.raises(OSError, match="SERVICE_UNAVAILABLE|ServiceUnavailable|503"):
        lambda_runtime.invoke("ingest", event)
    # after pyarrow's own retries (3 attempts of the upload)
    assert proxy.count("POST", "/events/data/", 503) + proxy.count("PUT", "/events/data/", 503) == 3
    # And nothing was committed: no snapshot, no row
    assert lake.catalog.load_table((lake.namespace, "events")).current_snapshot() is None
    assert landed(lake)[0] == {}
    # When S3 recovers and SQS redelivers the batch
    proxy.clear()
    assert lambda_runtime.invoke("ingest", event) == {"batchItemFailures": []}
    # Then every event is there exactly once
    assert_accounted(lake, ids, rejected_count=0)


# --------------------------------------------------------------------------- DynamoDB: landing and serving


def _table(name: str) -> Any:
    """A context table on moto with the template's key schema."""
    from customer_context_devtools.local.template import resource_properties

    props = resource_properties("ContextTable")
    wiring.boto_client("dynamodb").create_table(
        TableName=name, KeySchema=props["KeySchema"], AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST")
    return name


def _factory_store(monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    """The context store exactly as the functions build it (the composition root's retry configuration)."""
    monkeypatch.setenv("CUSTOMER_CONTEXT_CONTEXT_TABLE", _table(name))
    wiring.reload_from_environment()
    return wiring.context_store()


def _customers(prefix: str, users: range, orders: int = 1, days_ago: float = 3) -> list[dict[str, Any]]:
    from tests.helpers.lake import ev

    out = []
    for u in users:
        out.append(ev("identify", days_ago + 1, userId=f"{prefix}{u}", traits={"email": f"{prefix}{u}@example.com"}))
        out += [ev("track", days_ago, event="Order Completed", userId=f"{prefix}{u}",
                   properties={"revenue": 10 + u + n}) for n in range(orders)]
    return out


def _state(store: Any, with_docs: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the table; without the build times (``built_at``, and ``changed_at``: when each field last
    changed) and the landing marker's generation (a new id per build) (and, unless asked, the documents: their
    content is compared through ``content_hash``)."""
    drop = {"built_at", "changed_at", "generation"} | (set() if with_docs else {"doc"})
    items: dict[tuple[str, str], dict[str, Any]] = {}
    kwargs: dict[str, Any] = {}
    while True:
        page = store.table.scan(**kwargs)
        for item in page["Items"]:
            items[(item["pk"], item["sk"])] = item if with_docs else {k: v for k, v in item.items() if k not in drop}
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _unthrottled_reference(tmp_path: Any, batches: list[list[dict[str, Any]]]) -> dict[Any, Any]:
    """What builds after each batch land without any fault (another lakehouse, another table)."""
    import boto3
    from customer_context.assemble.build import build_context
    from customer_context.config import Settings
    from customer_context.spec import DEFAULT_SPEC, parse_spec
    from customer_context.stores.context_store import DynamoContextStore
    from customer_context.stores.iceberg import Lakehouse

    from tests.helpers.lake import AS_OF, write_events

    other = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path / "reference")}))
    store = DynamoContextStore(boto3.resource("dynamodb").Table(_table(f"ctx-reference-{uuid.uuid4().hex[:12]}")))
    spec = parse_spec(DEFAULT_SPEC.read_text())
    for batch in batches:
        write_events(other, batch)
        build_context(other, store, spec, as_of=AS_OF)
    return _state(store)


@pytest.mark.slow
def test_build_lands_through_throttling_and_unprocessed_items_like_an_unthrottled_build(
        aws: str, lakehouse: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.assemble.build import build_context
    from customer_context.spec import DEFAULT_SPEC, parse_spec

    from tests.helpers.lake import AS_OF, write_events

    customers = _customers("t", range(30))
    reference = _unthrottled_reference(tmp_path, [customers])
    store = _factory_store(monkeypatch, f"ctx-throttled-{uuid.uuid4().hex[:12]}")
    write_events(lakehouse, customers)
    botocore_sleeps = record_sleeps(monkeypatch, botocore.endpoint)
    store_sleeps = record_sleeps(monkeypatch, context_store_module)
    # Given DynamoDB refusing the first BatchWriteItem calls whole (provisioned throughput, throttling) …
    faults = BotoFaults(store.table.meta.client)
    faults.fail("BatchWriteItem", DDB_THROUGHPUT, failures=3)
    faults.fail("BatchWriteItem", DDB_THROTTLING, failures=2)
    # … and then taking only half of the items of the next three calls (UnprocessedItems)
    unprocessed = leave_writes_unprocessed(monkeypatch, store.table.meta.client, calls=3)
    # When the build lands
    report = build_context(lakehouse, store, parse_spec(DEFAULT_SPEC.read_text()), as_of=AS_OF)
    # Then botocore retried the refused calls with a backoff before each retry …
    assert faults.injected["BatchWriteItem"] == 5 and len(botocore_sleeps.delays) == 5
    # … the store resent what was left unprocessed, backing off exponentially (equal jitter: at least half)
    assert unprocessed.partial == 3 and unprocessed.returned > 0
    assert len(store_sleeps.delays) == 3
    assert all(d >= 0.05 * 2**n / 2 for n, d in enumerate(store_sleeps.delays)), store_sleeps.delays
    # … the build completed, and DynamoDB holds exactly what an unthrottled build lands
    assert report.changed_profiles == 30
    assert _state(store) == reference
    assert sum(1 for _, sk in reference if sk == "snapshot") == 30


@pytest.mark.slow
def test_build_fails_clearly_when_throttling_outlasts_the_retries_and_the_served_snapshots_stay(
        aws: str, lakehouse: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.assemble.build import build_context
    from customer_context.spec import DEFAULT_SPEC, parse_spec

    from tests.helpers.lake import AS_OF, write_events

    spec = parse_spec(DEFAULT_SPEC.read_text())
    first = _customers("o", range(30))
    second = _customers("o", range(0, 40, 2), orders=2, days_ago=1)  # new orders for half, 5 new customers
    reference = _unthrottled_reference(tmp_path, [first, second])
    store = _factory_store(monkeypatch, f"ctx-outlasted-{uuid.uuid4().hex[:12]}")
    record_sleeps(monkeypatch, botocore.endpoint)
    record_sleeps(monkeypatch, context_store_module)
    # Given a served build
    write_events(lakehouse, first)
    build_context(lakehouse, store, spec, as_of=AS_OF)
    served = _state(store, with_docs=True)
    # When new data arrives and the next build meets DynamoDB throttling every write, for longer than the retries
    write_events(lakehouse, second)
    faults = BotoFaults(store.table.meta.client)
    faults.fail("BatchWriteItem", DDB_THROUGHPUT)
    with pytest.raises(StoreUnavailable) as failure:
        build_context(lakehouse, store, spec, as_of=AS_OF)
    # Then the build fails with an error naming the store, the error and the attempts …
    assert "DynamoDB" in failure.value.message and "ProvisionedThroughputExceededException" in failure.value.message
    assert f"after {DYNAMODB_MAX_ATTEMPTS} attempts" in failure.value.message
    assert faults.attempts["BatchWriteItem"] == DYNAMODB_MAX_ATTEMPTS
    # … and the snapshots served before are all still there, unchanged and readable
    assert _state(store, with_docs=True) == served
    pid = store.resolve("user_id", "o4")
    assert pid and store.get_snapshot(pid) == served[("profile#" + pid, "snapshot")]
    # When the throttling is over and the next scheduled build runs
    faults.clear()
    build_context(lakehouse, store, spec, as_of=AS_OF)
    # Then it converges to what unthrottled builds land
    assert _state(store) == reference


@pytest.fixture
def serving(aws: str, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A context table with three customers and the sample consumer key."""
    from customer_context.assemble.build import build_context
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.spec import DEFAULT_SPEC, parse_spec

    from tests.helpers.lake import AS_OF, write_events

    store = _factory_store(monkeypatch, f"ctx-serving-{uuid.uuid4().hex[:12]}")
    write_events(lakehouse, _customers("f", range(3)))
    build_context(lakehouse, store, parse_spec(DEFAULT_SPEC.read_text()), as_of=AS_OF)
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    record_sleeps(monkeypatch, botocore.endpoint)
    record_sleeps(monkeypatch, context_store_module)
    return store


def _get(user: str) -> dict[str, Any]:
    request = load_event("fetch_context_get.json")
    request["rawPath"] = request["requestContext"]["http"]["path"] = f"/v1/context/user_id/{user}"
    request["pathParameters"] = {"identifier_type": "user_id", "identifier_value": user}
    request["rawQueryString"], request["queryStringParameters"] = "", {}
    return lambda_runtime.invoke("fetch_context", request)


def _assert_503(response: dict[str, Any], caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert response["statusCode"] == 503, response
    assert body["code"] == "service_unavailable" and "DynamoDB" in body["message"] and "retry later" in body["message"]
    assert not any(r.exc_info for r in caplog.records), "a throttled read was logged as a crash"
    return body


def test_fetch_answers_503_with_a_reason_when_dynamodb_throttles_reads(
        serving: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a warm container (the consumer key is cached)
    assert _get("f1")["statusCode"] == 200
    # When DynamoDB throttles every GetItem for longer than the retries
    faults = BotoFaults(serving.table.meta.client)
    faults.fail("GetItem", DDB_THROTTLING)
    # Then fetch answers 503 service_unavailable naming the cause, after every attempt, without a stack trace
    body = _assert_503(_get("f1"), caplog)
    assert "ThrottlingException" in body["message"]
    assert faults.attempts["GetItem"] == DYNAMODB_MAX_ATTEMPTS
    # And once it is over, the same request is served
    faults.clear()
    assert _get("f1")["statusCode"] == 200


def test_a_cold_container_answers_503_when_the_consumer_lookup_is_throttled(
        serving: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a cold container (nothing cached) and DynamoDB refusing reads for longer than the retries
    wiring.reload_from_environment()
    store = wiring.context_store()
    faults = BotoFaults(store.table.meta.client)
    faults.fail("GetItem", DDB_THROUGHPUT)
    # Then the key check itself answers 503 (not 401, not 500)
    _assert_503(_get("f0"), caplog)
    faults.clear()
    assert _get("f0")["statusCode"] == 200


def test_batch_fetch_answers_503_not_found_false_when_keys_stay_unprocessed(
        serving: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    request = load_event("fetch_context_batch.json")
    request["body"] = json.dumps({"identifiers": [{"type": "user_id", "value": f"f{u}"} for u in range(3)]})
    request["headers"].pop("content-length", None)
    ok = lambda_runtime.invoke("fetch_context", request)
    assert ok["statusCode"] == 200 and json.loads(ok["body"])["found"] == 3
    # When DynamoDB hands back every key unprocessed, call after call
    unprocessed = leave_reads_unprocessed(monkeypatch, serving.table.meta.client, forever=True)
    response = lambda_runtime.invoke("fetch_context", request)
    # Then the answer is 503 (retry later), never "these customers do not exist"
    _assert_503(response, caplog)
    assert unprocessed.partial == serving.attempts


@pytest.mark.slow
def test_a_commit_cut_short_by_s3_leaves_only_orphans_that_maintenance_removes(
        s3_warehouse: tuple[Any, FaultProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.govern.maintain import maintain

    from tests.reliability.test_ingest_faults import _sqs_event
    from tests.reliability.test_kill_then_maintain import WEEK, _clock_moved

    lake, proxy = s3_warehouse
    bucket = lake.table("events").location().split("/")[2]

    def data_files() -> set[str]:
        prefix = "warehouse/customer_context/events/data/"
        listing = wiring.boto_client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
        return {o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".parquet")}

    # Given S3 failing every manifest upload: the data file is written, the commit can never be
    proxy.fail(lambda m, p: m in ("PUT", "POST") and "/events/metadata/" in p and ".avro" in p, S3_INTERNAL)
    event, ids = _sqs_event("wh-orphan", 80)
    with pytest.raises(OSError, match="INTERNAL_FAILURE|InternalError|500"):
        lambda_runtime.invoke("ingest", event)
    orphans = data_files()
    assert orphans and lake.catalog.load_table((lake.namespace, "events")).current_snapshot() is None
    # When S3 recovers and SQS redelivers
    proxy.clear()
    assert lambda_runtime.invoke("ingest", event) == {"batchItemFailures": []}
    committed = data_files() - orphans
    assert committed
    # And maintenance runs once the orphans are past the retention
    _clock_moved(monkeypatch, 8 * 86400)
    report = maintain(lake, retain_seconds=WEEK)
    # Then the orphaned data file is gone from the bucket, the committed one stays, nothing is lost
    assert report["events"]["orphans_removed"] >= len(orphans)
    assert data_files() == committed
    assert_accounted(lake, ids, rejected_count=0)


def test_writes_go_in_groups_of_25_and_a_repeated_key_keeps_its_last_item(serving: Any) -> None:
    calls = BotoFaults(serving.table.meta.client)  # no fault: it only counts
    # 60 items, then the key of the 56th again: DynamoDB refuses a batch naming a key twice
    items = [{"pk": f"test#{n}", "sk": "x", "n": n} for n in range(60)] + [{"pk": "test#55", "sk": "x", "n": -1}]
    assert serving._write(puts=iter(items)) == 61
    assert calls.attempts["BatchWriteItem"] == 3  # 25 + 25 + 10: the repeated key replaced in its group
    assert serving.table.get_item(Key={"pk": "test#55", "sk": "x"})["Item"]["n"] == -1


@pytest.mark.slow
def test_a_deletion_job_throttled_past_the_retries_is_recorded_failed_and_its_rerun_completes(
        serving: Any, lakehouse: Any) -> None:
    from customer_context.govern.regulations import new_regulation, run_job, suppress
    from customer_context.spec import DEFAULT_SPEC, parse_spec

    spec = parse_spec(DEFAULT_SPEC.read_text())
    gone, stays = serving.resolve("user_id", "f1"), serving.resolve("user_id", "f2")
    assert gone and stays
    regulation = suppress(serving, wiring.context_service(),
                          new_regulation(serving, "suppress_with_delete", [("user_id", "f1")], "dpo"), "test-key")
    # Given DynamoDB throttling every BatchWriteItem while the deletion job runs
    faults = BotoFaults(serving.table.meta.client)
    faults.fail("BatchWriteItem", DDB_THROUGHPUT)
    failed = run_job(lakehouse, serving, spec, regulation["id"])
    # Then the regulation is recorded failed with the reason (GET /v1/regulations/{id} shows it)
    assert failed["status"] == "failed" and "StoreUnavailable" in failed["error"]
    assert "ProvisionedThroughputExceededException" in failed["error"]
    assert serving.get_regulation(regulation["id"])["status"] == "failed"
    # When the throttling is over and the job runs again
    faults.clear()
    done = run_job(lakehouse, serving, spec, regulation["id"])
    # Then it completes: the customer is gone from DynamoDB and from the events, the other one stays
    assert done["status"] == "done", done
    assert serving.resolve("user_id", "f1") is None and serving.get_snapshot(gone) is None
    assert serving.resolve("user_id", "f2") == stays and serving.get_snapshot(stays) is not None
    users = {r["user_id"] for r in lakehouse.scan("events", selected_fields=("user_id",)).to_pylist()}
    assert "f1" not in users and {"f0", "f2"} <= users
