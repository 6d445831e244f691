"""Hostile input to collect, end to end over HTTP on the local stack: never a 5xx, always a reason, nothing lost.

Each case either is refused whole (4xx with a JSON reason; nothing is queued, except a single call's invalid event,
which is kept in ``rejected_events``) or is answered 200 with per-event rejections. The last test drains the queue
through ingest and checks the accounting invariant over everything this module sent: every acknowledged event is in
``events`` (the odd-but-valid ones byte for byte) and every rejected one in ``rejected_events`` with its reason.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from customer_context import wiring

from tests.helpers.accounting import assert_accounted, landed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024


@dataclass
class Ledger:
    """What this module's requests were told: accepted message ids, rejections, values to find unchanged."""

    accepted: set[str] = field(default_factory=set)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Overrides the conftest's per-test reset: one stack serves the whole module, and its handlers' clients
    stay warm between cases (the stack resets the caches when it starts)."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("hostile-collect"), write_keys={"wk_hostile": "hostile"},
                    batch_window=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


def _post(stack: Any, endpoint: str, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    merged = {"content-type": "application/json", **(headers or {})}
    return requests.post(f"{stack.url}/v1/{endpoint}", data=body, headers=merged, auth=("wk_hostile", ""),
                         timeout=120)


def _refused(answer: requests.Response, status: int | tuple[int, ...], reason: str = "") -> str:
    """The request was refused whole with a 4xx saying why (in JSON, as the SDKs read it)."""
    statuses = (status,) if isinstance(status, int) else status
    assert answer.status_code in statuses, (answer.status_code, answer.text[:300])
    message = answer.json()["message"]
    assert message and reason.lower() in message.lower(), message
    return str(message)


def _batch(stack: Any, ledger: Ledger, events: list[dict[str, Any]], rejected: dict[int, str],
           **envelope: Any) -> dict[str, Any]:
    """Send a batch; exactly the events at ``rejected`` (index → part of the reason) are refused, the rest are
    acknowledged and recorded in the ledger."""
    answer = _post(stack, "batch", json.dumps({"batch": events, **envelope}).encode())
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    got = {r["index"]: r["reason"] for r in body["rejected"]}
    assert got.keys() == rejected.keys(), got
    for index, part in rejected.items():
        assert part.lower() in got[index].lower(), (index, got[index])
    assert body["accepted"] == len(events) - len(rejected)
    ledger.accepted |= {e["messageId"] for i, e in enumerate(events) if i not in rejected}
    ledger.rejected += len(rejected)
    ledger.reasons += list(got.values())
    return body


def _batch_text(stack: Any, ledger: Ledger, text: str, accepted: list[str]) -> None:
    """Send a batch written as JSON text; all of its events are acknowledged."""
    answer = _post(stack, "batch", text.encode())
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json() == {"success": True, "accepted": len(accepted), "rejected": []}
    ledger.accepted |= set(accepted)


def _track(mid: str, **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Hostile", "userId": "hostile-user", "messageId": mid, **fields}


# -- refused whole ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "reason"), [
    (b'{"batch": [', "invalid JSON"), (b"{", "invalid JSON"), (b"nul", "invalid JSON"), (b"", "empty"),
    (b"   ", "empty"), (b'{"batch": [}', "line 1 column"), (b"[]", "expected a JSON object"),
    (b'"batch"', "expected a JSON object"), (b'{"batch": {"type": "track"}}', "expected an array"),
    (b'{"batch": [], "sentAt": "yesterday"}', "sentAt"), (b"\xef\xbb\xbf{}", "invalid JSON"),
], ids=range(11))
def test_unreadable_json_is_400(stack: Any, body: bytes, reason: str) -> None:
    _refused(_post(stack, "batch", body), 400, reason)


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"type=track&event=x&userId=u"),
    ("multipart/form-data; boundary=xx", b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--xx--\r\n'),
    ("application/xml", b"<batch><event/></batch>"),
    ("application/octet-stream", b"\x00\x01\x02\x03"),
    ("image/png", b"\x89PNG\r\n\x1a\n"),
], ids=["form", "multipart", "xml", "octets", "png"])
def test_bodies_that_are_not_json_are_400_whatever_the_content_type(stack: Any, content_type: str,
                                                                    body: bytes) -> None:
    for endpoint in ("batch", "track"):
        _refused(_post(stack, endpoint, body, {"content-type": content_type}), 400, "body")


def test_nan_and_infinity_are_rejected_with_the_field(stack: Any, ledger: Ledger) -> None:
    # not JSON, but Python's json (and the Python SDKs with its defaults) write them, and it reads 1e400 as
    # Infinity: such an event is rejected naming the field (nothing downstream may store or serve a non-JSON
    # number), the others in the batch are kept
    text = ('{"batch": [{"type": "track", "event": "x", "userId": "u", "messageId": "nan-1", '
            '"properties": {"v": NaN, "w": -Infinity}}, {"type": "track", "event": "x", "userId": "u", '
            '"messageId": "nan-2", "properties": {"w": 1e400}}, {"type": "track", "event": "x", "userId": "u", '
            '"messageId": "nan-3", "properties": {"v": 1.5e300, "s": "NaN"}}]}')
    answer = _post(stack, "batch", text.encode())
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    got = {r["index"]: r["reason"] for r in body["rejected"]}
    assert got.keys() == {0, 1} and body["accepted"] == 1
    assert got[0].startswith("properties.v: NaN is not a JSON number")
    assert got[1].startswith("properties.w: Infinity is not a JSON number")
    ledger.accepted.add("nan-3")
    ledger.rejected += 2
    ledger.reasons += list(got.values())


def test_json_sent_as_text_plain_is_accepted(stack: Any, ledger: Ledger) -> None:
    # navigator.sendBeacon can only send text/plain: the body is what counts, not the label
    answer = _post(stack, "track", json.dumps(_track("ct-text-plain")).encode(), {"content-type": "text/plain"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    ledger.accepted.add("ct-text-plain")


def _bomb(decompressed: int, wbits: int = 16 + zlib.MAX_WBITS) -> bytes:
    """``decompressed`` zero bytes compressed, without holding them in memory."""
    out = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunk = b"\0" * MiB
    parts = [out.compress(chunk) for _ in range(decompressed // MiB)]
    return b"".join(parts) + out.flush()


COMPRESSED = {  # built when the test runs, not at collection
    "gzip-bomb-64MiB": ("gzip", lambda: _bomb(64 * MiB), 413, "once decompressed"),
    "deflate-bomb-32MiB": ("deflate", lambda: _bomb(32 * MiB, zlib.MAX_WBITS), 413, "once decompressed"),
    "json-bomb-11MiB": ("gzip", lambda: gzip.compress(b'{"batch": [' + b" " * (11 * MiB) + b"]}"), 413,
                        "once decompressed"),
    "not-gzip": ("gzip", lambda: b"not gzip at all", 400, "not valid gzip"),
    "truncated": ("gzip", lambda: gzip.compress(b'{"batch": []}')[:-12], 400, "truncated"),
    "brotli": ("br", lambda: b"\x0b\x02\x80{}\x03", 400, "unsupported"),
    "stacked": ("gzip, gzip", lambda: gzip.compress(gzip.compress(b'{"batch": []}')), 400, "unsupported"),
}


@pytest.mark.parametrize("case", COMPRESSED)
def test_compression_attacks_are_refused(stack: Any, case: str) -> None:
    encoding, make, status, reason = COMPRESSED[case]
    body = make()
    assert len(body) < MiB, "the bomb is small on the wire"
    _refused(_post(stack, "batch", body, {"content-encoding": encoding}), status, reason)


def test_body_over_10_mb_is_413_at_the_gateway(stack: Any) -> None:
    body = b'{"batch": [' + b" " * (10 * MiB) + b"]}"
    _refused(_post(stack, "batch", body), 413, "too large")


def test_invalid_utf8_is_400(stack: Any) -> None:
    raw = b'{"batch": [{"type": "track", "event": "\xff\xfe", "userId": "u", "messageId": "utf8-1"}]}'
    # as bytes API Gateway passes on base64-encoded (a binary content type, or a compressed body)
    _refused(_post(stack, "batch", raw, {"content-type": "application/octet-stream"}), 400, "not valid UTF-8")
    _refused(_post(stack, "batch", gzip.compress(raw), {"content-encoding": "gzip"}), 400, "not valid UTF-8")
    _refused(_post(stack, "batch", b"\xc0\xaf" + raw), 400, "")


def test_deep_nesting_past_the_parser_is_400(stack: Any) -> None:
    deep = b'{"batch": [{"type": "track", "event": "x", "userId": "u", "properties": ' + b'{"a": ' * 100_000
    body = deep + b"1" + b"}" * 100_000 + b"}]}"
    _refused(_post(stack, "batch", body), 400, "nested too deeply")
    _refused(_post(stack, "track", b"[" * 200_000 + b"]" * 200_000), 400, "")


# -- answered per event -------------------------------------------------------------------------------------------

def _nested(depth: int) -> str:
    """JSON text of an object ``depth`` levels deep (built as text: json.dumps itself gives up near 1,000)."""
    return '{"a": ' * (depth - 1) + '{"leaf": true}' + "}" * (depth - 1)


def test_deep_properties(stack: Any, ledger: Ledger) -> None:
    # 200 levels are kept and land
    deep = json.dumps(_track("deep-200", properties="@")).replace('"@"', _nested(200))
    _batch_text(stack, ledger, f'{{"batch": [{deep}]}}', ["deep-200"])
    # 1,000 levels: Python 3.11 gives up parsing them inside the handler (400 with the reason, nothing queued);
    # a runtime that parses them must keep them or reject them with a reason, never fail
    deep = json.dumps(_track("deep-1000", properties="@")).replace('"@"', _nested(1000))
    answer = _post(stack, "batch", f'{{"batch": [{deep}, {json.dumps(_track("deep-neighbour"))}]}}'.encode())
    assert answer.status_code in (200, 400), answer.text[:300]
    if answer.status_code == 400:
        assert "nested too deeply" in answer.json()["message"]
        return
    body = answer.json()
    rejected = {r["index"] for r in body["rejected"]}
    ledger.accepted |= {m for i, m in enumerate(("deep-1000", "deep-neighbour")) if i not in rejected}
    ledger.rejected += len(rejected)
    ledger.reasons += [r["reason"] for r in body["rejected"]]


@pytest.mark.parametrize("field_name", ["userId", "anonymousId", "messageId", "event"])
def test_100_kb_strings(stack: Any, ledger: Ledger, field_name: str) -> None:
    event = _track(f"huge-{field_name}", **{field_name: "x" * 100_000})
    if field_name == "messageId":
        # the id itself is refused: the rejection is recorded without a usable id
        _batch(stack, ledger, [event], {0: "the limit is 1,024 bytes"})
    elif field_name == "event":
        # an event name has no length limit of its own: 100 kB is under the 4 MB event limit, and kept
        _batch(stack, ledger, [event], {})
    else:
        _batch(stack, ledger, [event], {0: "the limit is 1,024 bytes"})
    # a single call with the same event: 400 with the reason, kept in rejected_events
    if field_name != "event":
        single = dict(event, messageId=f"huge-single-{field_name}") if field_name != "messageId" else dict(
            event, messageId="y" * 100_000)
        _refused(_post(stack, "track", json.dumps(single).encode()), 400, "the limit is 1,024 bytes")
        ledger.rejected += 1


def test_10_mb_of_events_are_spooled_and_kept(stack: Any, ledger: Ledger) -> None:
    # three 3 MB events (each under the 4 MB event limit, each over one queue message): about 9.5 MB in one request
    events = [_track(f"big-{i}", properties={"blob": chr(65 + i) * (3 * MiB)}) for i in range(3)]
    body = json.dumps({"batch": events}).encode()
    assert 9 * MiB < len(body) <= 10 * MiB
    _batch(stack, ledger, events, {})


def test_event_over_the_event_limit_is_rejected_alone(stack: Any, ledger: Ledger) -> None:
    _batch(stack, ledger, [_track("big-over", properties={"blob": "z" * (5 * MiB)}), _track("big-small")],
           {0: "per-event limit"})


FUTURE_AND_PAST = [
    ("ts-9999", {"timestamp": "9999-12-31T23:59:59.999Z"}, None),
    ("ts-0001", {"timestamp": "0001-01-01T00:00:00Z"}, None),
    ("ts-0001-east", {"timestamp": "0001-01-01T00:30:00+01:00"}, "out of range once in UTC"),
    ("ts-9999-west", {"timestamp": "9999-12-31T23:30:00-01:00"}, "out of range once in UTC"),
    ("ts-skew-far", {"originalTimestamp": "9999-12-31T23:59:59Z", "sentAt": "0001-01-01T00:00:00Z"}, None),
    ("ts-skew-back", {"originalTimestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"}, None),
    ("ts-neg-epoch", {"timestamp": -1}, "timestamp"),
    ("ts-neg-epoch-str", {"timestamp": "-62135596800"}, "timestamp"),
    ("ts-epoch-ms", {"timestamp": 1764547200000}, "timestamp"),
    ("ts-garbage", {"timestamp": "yesterday"}, "timestamp"),
    ("ts-bad-date", {"timestamp": "2026-13-45T99:99:99Z"}, "timestamp"),
    ("ts-year-0", {"timestamp": "0000-01-01T00:00:00Z"}, "timestamp"),
    ("ts-year-10000", {"timestamp": "+10000-01-01T00:00:00Z"}, "timestamp"),
    ("ts-object", {"timestamp": {"$date": 0}}, "timestamp"),
]


def test_timestamps_far_in_the_future_and_past(stack: Any, ledger: Ledger) -> None:
    events = [_track(mid, **fields) for mid, fields, _ in FUTURE_AND_PAST]
    rejected = {i: reason for i, (_, _, reason) in enumerate(FUTURE_AND_PAST) if reason is not None}
    _batch(stack, ledger, events, rejected)
    # each alone too: the single-call path stamps the same way
    for mid, fields, reason in FUTURE_AND_PAST:
        answer = _post(stack, "track", json.dumps(_track(f"{mid}-single", **fields)).encode())
        if reason is None:
            assert answer.status_code == 200, (mid, answer.text[:300])
            ledger.accepted.add(f"{mid}-single")
        else:
            _refused(answer, 400, reason)
            ledger.rejected += 1


def test_sent_at_far_away_on_the_batch(stack: Any, ledger: Ledger) -> None:
    # skew correction would move the event off the calendar: the client's own timestamp is kept
    _batch(stack, ledger, [_track("sent-9999", timestamp="2026-01-01T00:00:00Z")], {},
           sentAt="9999-12-31T23:59:59Z")
    _batch(stack, ledger, [_track("sent-0001", timestamp="2026-01-01T00:00:00Z")], {},
           sentAt="0001-01-01T00:00:00Z")
    _refused(_post(stack, "batch", json.dumps({"batch": [_track("sent-east")],
                                               "sentAt": "0001-01-01T00:30:00+01:00"}).encode()), 400, "sentAt")


ODD_IDS = {
    "path": "../../../etc/passwd",
    "windows-path": "..\\..\\windows\\system32",
    "sql": "'; DROP TABLE events;--",
    "sql-or": "\" OR 1=1 --",
    "nul": "before\u0000after",
    "rtl": "user\u202egnp.exe",
    "zero-width": "a\u200bb\ufeff",
    "emoji": "\U0001f600\U0001f4a9",
    "percent": "%2e%2e%2f%00",
    "shell": "$(rm -rf /)`id`",
    "template": "{{7*7}}${7*7}",
    "newline": "line1\r\nline2",
    "key-shape": "id#user_id#victim",
    "padded": "  u  ",
    "json": '{"userId": "other"}',
}


def test_identifiers_with_metacharacters_round_trip(stack: Any, ledger: Ledger) -> None:
    events = []
    for name, value in ODD_IDS.items():
        events.append(_track(f"odd-user-{name}", userId=value))
        events.append({"type": "identify", "anonymousId": value, "messageId": f"odd-anon-{name}",
                       "traits": {"email": f"{name}@example.com"}})
        events.append(_track(f"odd-mid-{value}", userId=f"odd-mid-owner-{name}"))
        ledger.values[f"odd-user-{name}"] = {"user_id": value}
        ledger.values[f"odd-anon-{name}"] = {"anonymous_id": value}
        ledger.values[f"odd-mid-{value}"] = {"user_id": f"odd-mid-owner-{name}"}
    _batch(stack, ledger, events, {})
    # and through a single-call endpoint, where the value is also the group id
    for name, value in ODD_IDS.items():
        answer = _post(stack, "group", json.dumps({"userId": value, "groupId": value,
                                                   "messageId": f"odd-group-{name}"}).encode())
        assert answer.status_code == 200, (name, answer.text[:300])
        ledger.accepted.add(f"odd-group-{name}")
        ledger.values[f"odd-group-{name}"] = {"user_id": value, "group_id": value}


def test_blank_identifiers_are_absent(stack: Any, ledger: Ledger) -> None:
    # a blank id is no identifier: the event keeps its other one, or is refused for having none
    blanks = ["", "   ", "\t\n", "\u3000\u2003"]
    events = [_track(f"blank-user-{i}", userId=b, anonymousId=f"blank-anon-{i}") for i, b in enumerate(blanks)]
    events += [_track(f"blank-only-{i}", userId=b, anonymousId=" ") for i, b in enumerate(blanks)]
    for i in range(len(blanks)):
        ledger.values[f"blank-user-{i}"] = {"user_id": None, "anonymous_id": f"blank-anon-{i}"}
    _batch(stack, ledger, events, {len(blanks) + i: "at least one is required" for i in range(len(blanks))})
    # and a required one (a group's groupId) that is blank is missing
    _refused(_post(stack, "group", json.dumps({"userId": "u", "groupId": " "}).encode()), 400, "groupId")
    ledger.rejected += 1


def test_lone_surrogates(stack: Any, ledger: Ledger) -> None:
    # "\ud800" is valid JSON text but no Unicode a text column, a hash or DynamoDB takes: in a field stored as
    # text the event is refused with a reason the client sees (not accepted and then dropped by ingest) ...
    events = [_track("surrogate-user", userId="\ud800"), _track("surrogate-event", event="x\udfff"),
              _track("surrogate-anon", anonymousId="a\udc00b"),
              _track("surrogate-ip", context={"ip": "\ud800"}),
              # ... inside properties or traits (stored as JSON text, escaped) it is kept, and an email identifier
              # holding one is still checked against suppressions without failing
              _track("surrogate-props", properties={"k\ud800": "v\udfff"}),
              {"type": "identify", "userId": "surrogate-trait-user", "messageId": "surrogate-traits",
               "traits": {"email": "\ud800@example.com", "name": "\udfff"}}]
    _batch(stack, ledger, events, {0: "unicode", 1: "unicode", 2: "unicode", 3: "context.ip: invalid Unicode"})
    _refused(_post(stack, "identify", json.dumps({"userId": "\udbff", "messageId": "surrogate-single"}).encode()),
             400, "unpaired surrogate")
    ledger.rejected += 1


def test_everything_acknowledged_is_accounted_for(stack: Any, ledger: Ledger) -> None:
    # When the queue is drained through ingest
    assert stack.wait_for_ingest(180), "ingest did not finish"
    assert stack.dlq_depth() == 0, "a message went to the dead-letter queue"
    lakehouse = wiring.lakehouse()
    # Then every acknowledged event is in events once, every rejection in rejected_events with its reason
    assert_accounted(lakehouse, ledger.accepted, ledger.rejected)
    events, rejected = landed(lakehouse)
    # and the odd identifiers came back byte for byte
    for message_id, expected in ledger.values.items():
        row = events[message_id]
        for column, value in expected.items():
            assert row[column] == value, (message_id, column, row[column])
    assert {r["reason"] for r in rejected} >= set(ledger.reasons)
    assert len(ledger.accepted) > 50 and ledger.rejected > 10, "the cases above ran"
