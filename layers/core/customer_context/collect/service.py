"""collect: authenticate, decode, validate and stamp tracking calls, and hand them to the queue.

Transport-neutral: the handler turns the API Gateway event into a :class:`TrackingRequest`; this
module never sees Lambda or boto3. The rules follow the Segment spec and what the RudderStack and
Segment SDKs send (see the README's "Tracking API" section):

* HTTP Basic auth with the write key as user name (Segment's ``writeKey`` body field also works, and the
  ``writeKey`` query parameter on RudderStack's beacon route);
* gzip bodies, decompressed with a bound (a gzip bomb is a 413, not an out-of-memory);
* per-event validation: a bad event is rejected with its reason, the others are kept (an event
  holding NaN or Infinity, which Python's ``json`` reads but JSON does not have, is a bad event);
* ``timestamp = receivedAt − (sentAt − originalTimestamp)`` corrects client clock skew;
* rejected events are queued too, so they land in ``rejected_events``: nothing acknowledged is lost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from customer_context import envelope, strict_json
from customer_context.collect.sdk_settings import source_of
from customer_context.errors import AuthenticationError, InvalidRequest, PayloadTooLarge
from customer_context.models.tracking import parse_timestamp, validate_event
from customer_context.ports import BlobStore, EventQueue, JsonObject, JsonValue, WriteKeyStore

if TYPE_CHECKING:
    from customer_context.collect.plans import TrackingPlans
    from customer_context.pii import PiiPolicy
    from customer_context.ports import SuppressionCheck, TailRecorder

BATCH_ENDPOINTS = frozenset({"batch", "import"})
_NAMESPACE = uuid.UUID("6f1c1f4e-9d43-4d9e-8d1e-3b4f2a9c7e11")


@dataclass(frozen=True)
class Limits:
    """Size limits of one request."""

    max_request_bytes: int
    max_event_bytes: int
    max_message_bytes: int


@dataclass
class TrackingRequest:
    """What collect needs of an HTTP request, independent of API Gateway."""

    endpoint: str  # "batch", "import", or an event type such as "track"
    body: bytes
    headers: dict[str, str]  # lower-case names
    source_ip: str | None = None
    request_id: str = ""
    received_at: datetime | None = None
    #: The ``writeKey`` query parameter, given on the beacon route only (a beacon cannot send headers).
    query_write_key: str | None = None


@dataclass
class Rejection:
    """One event that was not accepted, and why."""

    index: int
    reason: str
    message_id: str | None = None

    def to_dict(self) -> JsonObject:
        """The rejection as listed in the response."""
        out: dict[str, Any] = {"index": self.index, "reason": self.reason}
        if self.message_id:
            out["messageId"] = self.message_id
        return out


@dataclass
class CollectResult:
    """What happened to a request's events."""

    source_id: str
    accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    messages: int = 0
    spooled: int = 0
    recent: int = 0
    flagged: int = 0
    plan_violations: int = 0
    suppressed: int = 0

    def to_body(self) -> JsonObject:
        """The 200 response body: SDKs only look at the status; people read the rest."""
        return {
            "success": True,
            "accepted": self.accepted,
            "rejected": [r.to_dict() for r in self.rejections],
        }


def iso(ts: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``, the way Segment writes timestamps."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_key_from_header(authorization: str | None) -> str | None:
    """The write key of an HTTP Basic ``Authorization`` header (user name, empty password).

    Raises:
        AuthenticationError: The header is present but not HTTP Basic.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthenticationError("Invalid Authorization Header: expected HTTP Basic with the write key as user name")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("Invalid Authorization Header: not valid base64 of `writeKey:`") from None
    return decoded.partition(":")[0] or None


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` with a bound on the decompressed size.

    Raises:
        PayloadTooLarge: The body, before or after decompression, is above ``limit``.
        InvalidRequest: The encoding is unsupported or the data is corrupt.
    """
    if len(body) > limit:
        raise PayloadTooLarge(f"Request size too large: {len(body)} bytes; the limit is {limit} bytes")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InvalidRequest(f"Content-Encoding: unsupported {encoding!r}; send gzip or no encoding")
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"Content-Encoding {encoding}: body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"Request size too large: more than {limit} bytes once decompressed")
    if not inflater.eof:
        raise InvalidRequest(f"Content-Encoding {encoding}: body is truncated")
    return out


def parse_json(data: bytes) -> JsonValue:
    """Decode the JSON body with a reason a person can act on.

    Raises:
        InvalidRequest: Not UTF-8, not JSON, or nested too deeply.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body: not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise InvalidRequest("body: empty; expected a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None


def _message_id(source_id: str, item: dict[str, Any]) -> str:
    """A messageId for an event that has none: derived from its content, so a retry of the same
    payload gets the same id and is removed by the read-time dedupe."""
    digest = hashlib.sha256((source_id + envelope.dumps(item)).encode()).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, digest))


def stamp(
    item: JsonObject,
    *,
    source_id: str,
    received_at: datetime,
    batch_sent_at: str | None,
    source_ip: str | None,
) -> JsonObject:
    """Add the server-side fields to a valid event (in place) and return it.

    ``receivedAt``, ``sourceId``, ``requestIp``; ``messageId`` when absent; ``originalTimestamp``
    (the client's timestamp) and ``timestamp`` corrected for clock skew:
    ``receivedAt − (sentAt − originalTimestamp)`` when both client times are known, else the
    client's timestamp, else ``receivedAt``; ``context.ip`` from the request when absent.
    """
    if not item.get("messageId"):
        item["messageId"] = _message_id(source_id, item)
    original = item.get("originalTimestamp") or item.get("timestamp")
    sent = item.get("sentAt") or batch_sent_at
    if original and sent:
        try:
            item["timestamp"] = iso(received_at - (parse_timestamp(sent) - parse_timestamp(original)))
        except OverflowError:  # skew correction pushed the date off the calendar
            item["timestamp"] = iso(parse_timestamp(original))
    elif original:
        item["timestamp"] = iso(parse_timestamp(original))
    else:
        item["timestamp"] = iso(received_at)
    if original:
        item["originalTimestamp"] = original
    if sent:
        item["sentAt"] = sent
    item["receivedAt"] = iso(received_at)
    item["sourceId"] = source_id
    if source_ip:
        item["requestIp"] = source_ip
        context = item.get("context")
        if context is None:
            item["context"] = context = {}
        context.setdefault("ip", source_ip)
    return item


def _rejection_record(raw: Any, reason: str, source_id: str, received_at: datetime, request_id: str) -> str:
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    return envelope.dumps(
        {
            "receivedAt": iso(received_at),
            "sourceId": source_id,
            "reason": reason,
            "stage": "collect",
            "requestId": request_id,
            "messageId": str(message_id) if message_id is not None else None,
            "raw": envelope.dumps(raw),
        }
    )


def _conflict(contents: dict[str, tuple[int, str]], index: int, item: dict[str, Any]) -> str | None:
    """Why a copy of an already accepted messageId is refused: it says something else (the first received copy is
    the event; an identical copy is a harmless retry, removed when the build reads the events)."""
    key = str(item["messageId"])
    content = envelope.dumps(item)
    first = contents.setdefault(key, (index, content))
    if first[1] == content:
        return None
    return (f"messageId: already used by event {first[0]} of this request with different content; "
            "the first copy is kept")


def _merge(shared: dict[str, Any] | None, own: Any) -> Any:
    if not shared:
        return own
    if own is None:
        return dict(shared)
    if isinstance(own, dict):
        return {**shared, **own}
    return own  # not an object: left as is, validation names it


def collect(
    request: TrackingRequest,
    *,
    write_keys: WriteKeyStore,
    queue: EventQueue,
    spool: BlobStore | None,
    limits: Limits,
    spool_prefix: str = "spool/",
    recent: TailRecorder | None = None,
    plans: TrackingPlans | None = None,
    pii: PiiPolicy | None = None,
    suppressions: SuppressionCheck | None = None,
) -> CollectResult:
    """Accept one tracking request.

    Args:
        request: The request.
        write_keys: Resolves the write key to a source id.
        queue: Where accepted and rejected events go.
        spool: Where events too large for one queue message go (``None``: such events are rejected).
        limits: Size limits.
        spool_prefix: Key prefix of spooled objects.
        recent: The live tail (:class:`customer_context.serve.recent.RecentTail`) told about the
            accepted events once they are queued; best effort: its failure is logged, not raised,
            since the events are safely queued and a retry would only duplicate them.
        plans: The sources' tracking plans (:class:`customer_context.collect.plans.TrackingPlans`):
            a violation rejects the event with the schema error, or flags it in ``context.violationErrors``.
        pii: The PII policy (:class:`customer_context.pii.PiiPolicy`), applied to every event,
            accepted or rejected, before it is queued.
        suppressions: Suppressed identifiers (:class:`customer_context.govern.suppression.Suppressions`):
            their events are acknowledged like the others and dropped before queueing.

    Returns:
        Counts and per-event rejections (a single call's rejection raises instead).

    Raises:
        AuthenticationError: No write key, or an unknown one (401).
        PayloadTooLarge: Request above the limit (413).
        InvalidRequest: Unreadable request, or the one event of a single call is invalid (400).
        QueueUnavailable: The queue did not take the events; the client must retry (503).
    """
    received_at = request.received_at or datetime.now(UTC)
    header_key = write_key_from_header(request.headers.get("authorization"))
    if header_key is not None and write_keys.source_for(header_key) is None:
        raise AuthenticationError("Invalid write key")

    body = decode_body(request.body, request.headers.get("content-encoding"), limits.max_request_bytes)
    data = parse_json(body)
    # Python's json reads NaN, Infinity and numbers beyond a double as non-finite floats: such an event is
    # rejected (the others are kept), so nothing downstream stores or serves a non-JSON number
    may_hold_non_finite = strict_json.may_hold_non_finite(body)
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {type(data).__name__}")

    # the beacon route's query parameter, when given, is its key (a beacon sends no header)
    key = request.query_write_key if request.query_write_key is not None else header_key
    if key is None:
        body_key = data.get("writeKey")
        key = body_key if isinstance(body_key, str) and body_key else None
    source_id = source_of(write_keys, key)

    single = request.endpoint not in BATCH_ENDPOINTS
    if single:
        items: list[Any] = [data]
        shared_context = shared_integrations = None
        batch_sent_at = None
    else:
        batch = data.get("batch")
        if not isinstance(batch, list):
            raise InvalidRequest("batch: expected an array of events")
        items = batch
        shared_context = data.get("context") if isinstance(data.get("context"), dict) else None
        shared_integrations = data.get("integrations") if isinstance(data.get("integrations"), dict) else None
        batch_sent_at = data.get("sentAt") if isinstance(data.get("sentAt"), str) else None
        if batch_sent_at is not None:
            try:
                parse_timestamp(batch_sent_at)
            except ValueError as exc:
                raise InvalidRequest(f"sentAt: {exc}") from None

    result = CollectResult(source_id=source_id)
    accepted_items: list[dict[str, Any]] = []
    rejected_items: list[tuple[Any, str]] = []
    check_sizes = len(request.body) > limits.max_event_bytes or request.headers.get("content-encoding")
    forced_type = request.endpoint if single else None
    contents: dict[str, tuple[int, str]] = {}  # messageId → (index, content) of the first accepted copy
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item.pop("writeKey", None)
            if shared_context is not None:
                item["context"] = _merge(shared_context, item.get("context"))
            if shared_integrations is not None:
                item["integrations"] = _merge(shared_integrations, item.get("integrations"))
        reason = validate_event(item, forced_type)
        if reason is None and may_hold_non_finite:
            reason = strict_json.non_finite(item)
        if pii:
            pii.apply(item)
        if reason is None and check_sizes:
            size = len(envelope.dumps(item).encode())
            if size > limits.max_event_bytes:
                reason = f"event: {size} bytes; the per-event limit is {limits.max_event_bytes} bytes"
        if reason is None and plans:
            verdict = plans.check(source_id, item)
            reason = verdict.reject
            result.plan_violations += bool(verdict.reject or verdict.flags)
            if verdict.flags and reason is None:
                context = item.get("context") if isinstance(item.get("context"), dict) else None
                if context is None:
                    item["context"] = context = {}
                context["violationErrors"] = verdict.flags
                result.flagged += 1
        if reason is None and item.get("messageId"):
            reason = _conflict(contents, index, item)
        if reason is not None:
            mid = item.get("messageId") if isinstance(item, dict) else None
            result.rejections.append(Rejection(index, reason, str(mid) if mid is not None else None))
            rejected_items.append((item, reason))
            continue
        context = item.get("context")
        had_ip = isinstance(context, dict) and "ip" in context
        stamp(item, source_id=source_id, received_at=received_at, batch_sent_at=batch_sent_at,
              source_ip=request.source_ip)
        if pii:  # the fields stamping added (the policy hashes a value once: never a token again)
            pii.apply(item, only={"requestIp"} if had_ip else {"requestIp", "context.ip"})
        accepted_items.append(item)
    result.accepted = len(accepted_items)
    if suppressions is not None and (accepted_items or rejected_items):
        # the suppressed customers' events, valid or not, are acknowledged and never stored; other events
        # lose the suppressed values they carry
        kept = suppressions.apply([*accepted_items, *(item for item, _ in rejected_items)])
        n = len(accepted_items)
        result.suppressed = kept.count(False)
        accepted_items = [i for i, k in zip(accepted_items, kept[:n], strict=True) if k]
        rejected_items = [r for r, k in zip(rejected_items, kept[n:], strict=True) if k]
    accepted = [envelope.dumps(item) for item in accepted_items]
    rejected = [_rejection_record(item, reason, source_id, received_at, request.request_id)
                for item, reason in rejected_items]

    bodies, oversized = envelope.pack(accepted, rejected, limits.max_message_bytes)
    for kind, item in oversized:
        if spool is None:
            # Cannot happen with rejections (their raw text is bounded by the event limit, which
            # the deployment keeps below the message size when it runs without a spool).
            raise PayloadTooLarge("event larger than one queue message, and no spool bucket is configured")
        key = f"{spool_prefix}{received_at:%Y/%m/%d}/{uuid.uuid4()}.json"
        spool.put(key, (envelope.body_of([item], []) if kind == "events" else envelope.body_of([], [item])).encode())
        bodies.append(envelope.spooled_body(key))
        result.spooled += 1
    if bodies:
        queue.send(bodies)
    result.messages = len(bodies)
    if recent is not None and accepted_items:
        try:
            result.recent = recent.record(accepted_items)
        except Exception:  # noqa: BLE001 - the events are queued; the tail is a best-effort cache
            from customer_context.observability import logger

            logger.exception("recording the live tail failed; events are queued and will be built")

    if single and result.rejections:
        raise InvalidRequest(result.rejections[0].reason)
    return result
