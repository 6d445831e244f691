"""collect's rules, transport-free: auth, decoding, limits, per-event rejection, stamping, queueing."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from customer_context import envelope
from customer_context.collect.service import Limits, TrackingRequest, collect
from customer_context.errors import AuthenticationError, InvalidRequest, PayloadTooLarge, QueueUnavailable
from customer_context.stores.blobs import MemoryBlobStore
from customer_context.stores.keys import StaticWriteKeys
from customer_context.stores.queue import MemoryEventQueue

KEYS = StaticWriteKeys({"wk_good": "web"})
LIMITS = Limits(max_request_bytes=1 << 20, max_event_bytes=64 * 1024, max_message_bytes=256 * 1024)
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def request(body: object, *, endpoint: str = "batch", key: str | None = "wk_good", gz: bool = False,
            raw: bytes | None = None, ip: str = "198.51.100.1") -> TrackingRequest:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = basic(key)
    if gz:
        data = gzip.compress(data)
        headers["content-encoding"] = "gzip"
    return TrackingRequest(endpoint, data, headers, ip, "req-1", NOW)


def run(req: TrackingRequest, queue: MemoryEventQueue | None = None, spool: MemoryBlobStore | None = None,
        limits: Limits = LIMITS):
    queue = queue if queue is not None else MemoryEventQueue()
    return collect(req, write_keys=KEYS, queue=queue, spool=spool, limits=limits), queue


def queued(queue: MemoryEventQueue) -> tuple[list[dict], list[dict]]:
    events, rejected = [], []
    for body in queue.bodies:
        env = envelope.loads(body)
        events += env.events
        rejected += env.rejected
    return events, rejected


def track(i: int, **extra: object) -> dict:
    return {"type": "track", "event": "Viewed", "userId": f"u{i}", "messageId": f"m{i}", **extra}


class TestAuthentication:
    def test_unknown_key_is_401(self) -> None:
        with pytest.raises(AuthenticationError, match="Invalid write key"):
            run(request({"batch": []}, key="wk_bad"))

    def test_missing_key_is_401(self) -> None:
        with pytest.raises(AuthenticationError, match="Missing write key"):
            run(request({"batch": [track(1)]}, key=None))

    def test_malformed_header_is_401(self) -> None:
        req = request({"batch": []})
        req.headers["authorization"] = "Bearer abc"
        with pytest.raises(AuthenticationError, match="Invalid Authorization Header"):
            run(req)

    def test_segment_body_write_key_is_accepted(self) -> None:
        # Given Segment's writeKey body field and no header
        result, queue = run(request({"batch": [track(1)], "writeKey": "wk_good"}, key=None))
        # Then the source is resolved and the key is not stored with the event
        assert result.source_id == "web" and result.accepted == 1
        events, _ = queued(queue)
        assert "writeKey" not in events[0]


class TestDecoding:
    def test_gzip_body(self) -> None:
        result, _ = run(request({"batch": [track(1), track(2)]}, gz=True))
        assert result.accepted == 2

    def test_gzip_bomb_is_413_not_memory(self) -> None:
        # Given 50 MB of zeros compressed to ~50 KB
        bomb = gzip.compress(b"0" * 50_000_000)
        assert len(bomb) < 100_000
        # When posted / Then refused by the decompressed-size bound
        with pytest.raises(PayloadTooLarge, match="once decompressed"):
            run(_gz_raw(bomb))

    def test_oversized_request_is_413(self) -> None:
        big = {"batch": [track(1, properties={"blob": "x" * (2 << 20)})]}
        with pytest.raises(PayloadTooLarge, match="Request size too large"):
            run(request(big))

    def test_invalid_json_is_400_with_position(self) -> None:
        with pytest.raises(InvalidRequest, match=r"body: invalid JSON: .* line 1 column"):
            run(request(None, raw=b'{"batch": [}'))

    def test_invalid_utf8_is_400(self) -> None:
        with pytest.raises(InvalidRequest, match="not valid UTF-8"):
            run(request(None, raw=b'{"batch": ["\xff"]}'))

    def test_corrupt_gzip_is_400(self) -> None:
        req = request(None, raw=b"not gzip at all")
        req.headers["content-encoding"] = "gzip"
        with pytest.raises(InvalidRequest, match="not valid gzip"):
            run(req)

    def test_batch_must_be_an_array(self) -> None:
        with pytest.raises(InvalidRequest, match="batch: expected an array"):
            run(request({"batch": {"type": "track"}}))


def _gz_raw(data: bytes) -> TrackingRequest:
    req = request(None, raw=data)
    req.headers["content-encoding"] = "gzip"
    return req


class TestPerEventRejection:
    def test_one_bad_event_of_ten_keeps_nine(self) -> None:
        # Given 10 events, the 4th missing its event name
        batch = [track(i) for i in range(10)]
        del batch[3]["event"]
        # When collected
        result, queue = run(request({"batch": batch}))
        # Then 9 are accepted, 1 rejected with its reason, and both kinds are queued
        assert result.accepted == 9
        assert [r.to_dict() for r in result.rejections] == [
            {"index": 3, "reason": "event: Field required", "messageId": "m3"}]
        events, rejected = queued(queue)
        assert sorted(e["messageId"] for e in events) == sorted(f"m{i}" for i in range(10) if i != 3)
        assert rejected[0]["reason"] == "event: Field required"
        assert json.loads(rejected[0]["raw"])["messageId"] == "m3"

    def test_single_call_invalid_is_400_and_still_kept(self) -> None:
        queue = MemoryEventQueue()
        with pytest.raises(InvalidRequest, match="groupId: Field required"):
            run(request({"userId": "u1"}, endpoint="group"), queue)
        _, rejected = queued(queue)
        assert len(rejected) == 1 and rejected[0]["stage"] == "collect"

    def test_blank_identifiers_are_absent(self) -> None:
        # Given RudderStack's browser SDK's anonymous page view ("userId": "") and blank ids of every kind
        batch = [{"type": "page", "userId": "", "anonymousId": "a1", "messageId": "m1"},
                 {"type": "track", "event": "Viewed", "userId": " \t", "anonymousId": "a2", "messageId": ""},
                 {"type": "identify", "userId": "u3", "anonymousId": "\u3000", "groupId": ""},
                 {"type": "track", "event": "Viewed", "userId": "", "anonymousId": " "},
                 {"type": "group", "userId": "u5", "groupId": " "}]
        # When collected
        result, queue = run(request({"batch": batch}))
        # Then a blank id is no identifier and no reason to refuse an event that has another one
        events, _ = queued(queue)
        assert result.accepted == 3 and [(e.get("userId"), e.get("anonymousId")) for e in events] == [
            (None, "a1"), (None, "a2"), ("u3", None)]
        assert all(e["messageId"] and "groupId" not in e for e in events)
        # and an event whose only identifiers are blank is refused for that
        assert [r.to_dict()["reason"] for r in result.rejections] == [
            "userId or anonymousId: at least one is required (userId, anonymousId: blank, so absent)",
            "groupId: Field required (groupId: blank, so absent)"]
        # kept as sent in rejected_events
        _, rejected = queued(queue)
        assert json.loads(rejected[1]["raw"])["groupId"] == " "

    def test_a_message_id_sent_twice_with_different_content_keeps_the_first_copy(self) -> None:
        # Given one batch carrying messageId m1 three times: the order, a copy saying something else, a retry
        first = track(1, properties={"revenue": 10})
        other = track(1, properties={"revenue": 99})
        result, queue = run(request({"batch": [first, other, dict(first)]}))
        # Then the first copy and its identical retry are accepted (the build keeps one), the other is refused
        # naming the first, and it is kept in rejected_events
        assert result.accepted == 2
        assert [r.to_dict() for r in result.rejections] == [{
            "index": 1, "messageId": "m1",
            "reason": "messageId: already used by event 0 of this request with different content; "
                      "the first copy is kept"}]
        events, rejected = queued(queue)
        assert [e["properties"]["revenue"] for e in events] == [10, 10]
        assert json.loads(rejected[0]["raw"])["properties"] == {"revenue": 99}

    def test_a_refused_first_copy_does_not_block_a_valid_one(self) -> None:
        bad = track(1)
        del bad["event"]
        result, _ = run(request({"batch": [bad, track(1, properties={"revenue": 5})]}))
        assert result.accepted == 1 and [r.index for r in result.rejections] == [0]

    def test_event_over_size_limit_is_rejected_alone(self) -> None:
        limits = Limits(1 << 20, 1024, 256 * 1024)
        batch = [track(1), track(2, properties={"blob": "x" * 2000})]
        result, _ = run(request({"batch": batch}), limits=limits)
        assert result.accepted == 1
        assert "per-event limit is 1024 bytes" in result.rejections[0].reason


class TestStamping:
    def test_clock_skew_is_corrected(self) -> None:
        # Given a client whose clock is 1 hour fast: it sent 10 s after the event happened
        client_now = NOW + timedelta(hours=1)
        event = track(1, timestamp=(client_now - timedelta(seconds=10)).isoformat())
        result, queue = run(request({"batch": [event], "sentAt": client_now.isoformat()}))
        stamped = queued(queue)[0][0]
        # Then timestamp = receivedAt - (sentAt - originalTimestamp) = NOW - 10 s
        assert stamped["timestamp"] == "2026-11-24T11:59:50.000Z"
        assert stamped["originalTimestamp"] == event["timestamp"]
        assert stamped["receivedAt"] == "2026-11-24T12:00:00.000Z"

    def test_without_sent_at_the_client_timestamp_is_kept(self) -> None:
        event = track(1, timestamp="2026-01-02T03:04:05Z")
        _, queue = run(request({"batch": [event]}))
        assert queued(queue)[0][0]["timestamp"] == "2026-01-02T03:04:05.000Z"

    def test_without_any_timestamp_received_at_is_used(self) -> None:
        _, queue = run(request({"batch": [track(1)]}))
        assert queued(queue)[0][0]["timestamp"] == "2026-11-24T12:00:00.000Z"

    def test_ip_source_and_message_id_are_stamped(self) -> None:
        event = {"type": "track", "event": "x", "userId": "u1"}
        _, queue = run(request({"batch": [dict(event)]}))
        _, queue2 = run(request({"batch": [dict(event)]}))
        stamped, again = queued(queue)[0][0], queued(queue2)[0][0]
        assert stamped["context"]["ip"] == "198.51.100.1" and stamped["sourceId"] == "web"
        # the derived messageId is stable, so an SDK retry of the same payload dedupes
        assert stamped["messageId"] == again["messageId"]

    def test_client_ip_is_not_overwritten(self) -> None:
        _, queue = run(request({"batch": [track(1, context={"ip": "192.0.2.9"})]}))
        assert queued(queue)[0][0]["context"]["ip"] == "192.0.2.9"

    def test_batch_context_and_integrations_are_merged_into_each_event(self) -> None:
        body = {"batch": [track(1, context={"locale": "fr-FR"}), track(2)],
                "context": {"library": {"name": "lib"}, "locale": "en-US"}, "integrations": {"All": False}}
        _, queue = run(request(body))
        first, second = queued(queue)[0]
        assert first["context"]["locale"] == "fr-FR" and first["context"]["library"] == {"name": "lib"}
        assert second["context"]["locale"] == "en-US" and second["integrations"] == {"All": False}


class TestQueueing:
    def test_events_are_packed_into_few_messages_under_the_limit(self) -> None:
        # Given ~600 KB of events and a 256 KB message limit
        batch = [track(i, properties={"pad": "p" * 1000}) for i in range(600)]
        result, queue = run(request({"batch": batch}))
        sizes = [len(b.encode()) for b in queue.bodies]
        item = max(len(envelope.dumps(e).encode()) for e in queued(queue)[0]) + 1
        # Then every message fits, and each but the last is full (the next event would not have fit)
        assert all(s <= LIMITS.max_message_bytes for s in sizes)
        assert all(s > LIMITS.max_message_bytes - item for s in sizes[:-1])
        assert len(sizes) == 3 and result.messages == 3 and result.accepted == 600

    def test_event_too_large_for_a_message_is_spooled(self) -> None:
        spool = MemoryBlobStore()
        limits = Limits(4 << 20, 1 << 20, 4096)
        result, queue = run(request({"batch": [track(1, properties={"blob": "x" * 10_000}), track(2)]}),
                            spool=spool, limits=limits)
        assert result.spooled == 1 and len(spool.objects) == 1
        pointers = [envelope.loads(b) for b in queue.bodies]
        key = next(p.spooled for p in pointers if p.spooled)
        assert envelope.loads(spool.get(key)).events[0]["messageId"] == "m1"

    def test_queue_failure_is_503_for_the_sdk_to_retry(self) -> None:
        queue = MemoryEventQueue()
        queue.fail = True
        with pytest.raises(QueueUnavailable):
            run(request({"batch": [track(1)]}), queue)
