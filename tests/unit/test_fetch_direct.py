"""``GET /v1/context/…`` answered without the resolver's machinery (functions/fetch_context/app.py,
``_direct_context``) gives exactly the response the resolver gives: status, headers, body bytes, ETag / 304,
errors and their one-line messages, and the same audit records — for generated requests of both event shapes
(the HTTP API's and the function URL's), plain and odd ones alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from customer_context import wiring
from customer_context.serve.consumers import consumer_item, hash_key
from customer_context.stores.context_store import MemoryContextStore, SnapshotItem
from customer_context_devtools.local.lambda_runtime import LocalLambdaContext, load_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import load_event

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
KEYS = {"ck_full": consumer_item("full", ["*"], []), "ck_sample_consumer_key": consumer_item("sample", ["*"], []),
        "ck_scoped": consumer_item("scoped", ["scores"], ["traits.orders_90d", "profile.identifiers.email"]),
        "ck_admin": consumer_item("dpo", [], [], admin=True)}


def _doc(pid: str, orders: int) -> str:
    return json.dumps({
        "profile_id": pid, "profile": {"identifiers": {"email": ["ada@example.com"], "user_id": ["u_000001"]},
                                       "consent": {}},
        "traits": {"orders_90d": orders, "lifetime_revenue": 512.4, "plan": "pro", "name": "Ådä \u2603"},
        "scores": {"churn_risk": 0.12, "p_alive": 0.88},
        "records": {"crm_contacts": {"contact_id": "C-1", "lifecycle_stage": "customer"}},
        "interactions": [{"table": "support_tickets", "channel": "chat", "subject": "Refund"}],
        "recent_events": [{"type": "track", "event": "Product Viewed", "timestamp": "2026-11-24T10:00:00Z"}],
        "built_at": "2026-11-24T12:00:00+00:00", "data_as_of": "2026-11-24T11:59:00+00:00"})


@pytest.fixture(scope="module")
def fetch_app() -> Iterator[Any]:
    """The fetch handler over an in-memory store: two customers, a live event for one, the keys above, a write
    key; a fixed clock; the serving audit kept in memory."""
    import os

    store = MemoryContextStore()
    for key, item in KEYS.items():
        store.put_consumer(hash_key(key), item)
    store.put_snapshots([SnapshotItem("p1", _doc("p1", 2), "h1", 1, "2026-11-24T12:00:00+00:00",
                                      "2026-11-24T11:59:00+00:00"),
                         SnapshotItem("p2", _doc("p2", 5), "h2", 3, "2026-11-24T12:00:00+00:00",
                                      "2026-11-24T11:59:00+00:00")])
    store.put_aliases([("email", "ada@example.com", "p1"), ("user_id", "u_000001", "p1"), ("user_id", "u2", "p2")])
    saved = wiring.context_store, os.environ.get("CUSTOMER_CONTEXT_WRITE_KEYS")
    os.environ["CUSTOMER_CONTEXT_WRITE_KEYS"] = "wk_sample=sample"
    wiring.reload_from_environment()
    wiring.context_store = lambda: store  # type: ignore[assignment]
    try:
        app = load_module("fetch_context")
        wiring.context_service().clock = lambda: NOW
        yield app
    finally:
        wiring.context_store = saved[0]  # type: ignore[assignment]
        if saved[1] is None:
            os.environ.pop("CUSTOMER_CONTEXT_WRITE_KEYS", None)
        else:
            os.environ["CUSTOMER_CONTEXT_WRITE_KEYS"] = saved[1]
        wiring.reload_from_environment()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """The module's handler keeps its cached service and store across examples (overrides conftest's reset)."""
    yield


def _event(shape: str, stage: str, method: str, id_type: str, id_value: str, pairs: list[tuple[str, str]],
           headers: dict[str, str]) -> dict[str, Any]:
    """An event as API Gateway (or a function URL) sends it: the raw path percent-encoded, the query string as
    sent and its parameters joined by commas when repeated."""
    event = load_event("fetch_context_get.json" if shape == "api" else "fetch_context_function_url.json")
    path = f"/v1/context/{quote(id_type, safe='')}/{quote(id_value, safe='@+:')}"
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = raw_path
    event["requestContext"]["stage"] = stage
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = urlencode(pairs)
    query: dict[str, str] = {}
    for name, value in pairs:
        query[name] = f"{query[name]},{value}" if name in query else value
    if query:
        event["queryStringParameters"] = query
    else:
        event.pop("queryStringParameters", None)
    if shape == "api":
        event["pathParameters"] = {"identifier_type": id_type, "identifier_value": id_value}
    event["headers"] = {k: v for k, v in event["headers"].items() if k not in ("authorization",)} | headers
    return event


FIELDS = ["traits.orders_90d", "scores.churn_risk", "traits", "interactions", "traits.nope", "records.crm_contacts",
          "profile.identifiers.email", " traits.plan ", "", "traits..plan", "scores"]
SECTIONS = ["traits", "scores", "recent_events", "records", "nope", "", " scores", "profile"]
# valid values first: most requests should be served, the rest refused in every way
VALUES = {"format": ["json", "text", "json", "text", "JSON", "xml", ""],
          "max_tokens": ["400", "50", "100000", "0100", "49", "100001", " 100", "1e3", "lots", "-5", "99999999"],
          "verbose": ["true", "false", "1", "0", "yes", "TRUE", "maybe", ""],
          "other": ["1", "x,y"]}


@st.composite
def requests_(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A request event, and whether it should carry the ETag its plain form gets (If-None-Match)."""
    known = st.sampled_from([("email", "ada@example.com"), ("email", "Ada@Example.com"), ("user_id", "u_000001"),
                             ("user_id", "u2"), ("profile_id", "p1"), ("profile_id", "p2")])
    odd = st.tuples(st.sampled_from(["email", "user_id", "profile_id", "anonymous_id", "phone", "EMAIL", "nope"]),
                    st.one_of(st.sampled_from([" ADA@example.com ", "nobody", "%", "%zz", "a/b", "x" * 1100, "ü" * 300,
                                               "+1 (555) 010-0001", "\u2603"]), st.text(min_size=1, max_size=12)))
    id_type, id_value = draw(st.one_of(known, known, odd))
    pairs: list[tuple[str, str]] = []
    for name in draw(st.lists(st.sampled_from(["fields", "sections", "format", "max_tokens", "verbose", "other"]),
                              max_size=4)):
        if name == "fields":
            value = ",".join(draw(st.lists(st.sampled_from(FIELDS[:4] if draw(st.booleans()) else FIELDS),
                                           min_size=1, max_size=4)))
        elif name == "sections":
            value = ",".join(draw(st.lists(st.sampled_from(SECTIONS[:4] if draw(st.booleans()) else SECTIONS),
                                           min_size=1, max_size=3)))
        else:
            value = draw(st.sampled_from(VALUES[name]))
        pairs.append((name, value))
    key = draw(st.sampled_from(["ck_full"] * 6 + ["ck_scoped"] * 2 + ["ck_admin", "ck_unknown", "wk_sample", None]))
    headers: dict[str, str] = {}
    if key is not None:
        headers.update({"authorization": f"Bearer {key}"} if draw(st.booleans()) else {"x-api-key": key})
    etag = draw(st.sampled_from(["none", "none", "current", "star", "other"]))
    header = draw(st.sampled_from(["if-none-match", "If-None-Match"]))
    if etag == "star":
        headers[header] = "*"
    elif etag == "other":
        headers[header] = 'W/"0123", W/"4567"'
    elif etag == "current":  # the ETag the same request gets now, filled in by the test
        headers[header] = ""
    event = _event(draw(st.sampled_from(["api", "url"])), draw(st.sampled_from(["$default", "$default", "prod"])),
                   draw(st.sampled_from(["GET"] * 6 + ["get", "POST"])), id_type, id_value, pairs, headers)
    return event, etag == "current"


def _call(app: Any, event: dict[str, Any], direct: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The handler's response (through the direct path when it takes the request, else forced through the
    resolver), and the audit records it left (without their random id and time)."""
    audit = wiring.context_service().audit
    audit.flush()
    before = len(audit.pending())
    original = app._direct_context
    if not direct:
        app._direct_context = lambda event: None
    try:
        response = app.lambda_handler(json.loads(json.dumps(event)), LocalLambdaContext("fetch_context"))
    finally:
        app._direct_context = original
    records = [{k: v for k, v in r.items() if k not in ("audit_id", "at")} for r in audit.pending()[before:]]
    return response, records


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests_())
def test_the_direct_path_answers_exactly_as_the_resolver(fetch_app: Any, request: tuple[dict[str, Any], bool]) -> None:
    event, with_etag = request
    if with_etag:  # the ETag the same request gets now, sent back
        plain, _ = _call(fetch_app, event, direct=False)
        header = next(k for k in event["headers"] if k.lower() == "if-none-match")
        event["headers"][header] = plain.get("headers", {}).get("ETag", 'W/"none"')
    # When the same event goes the direct way and through the resolver
    direct, direct_audit = _call(fetch_app, event, direct=True)
    resolved, resolved_audit = _call(fetch_app, event, direct=False)
    # Then the responses are the same, byte for byte, and so is what the audit recorded
    assert direct == resolved
    assert direct_audit == resolved_audit


@pytest.mark.parametrize("sample", ["fetch_context_get.json", "fetch_context_function_url.json",
                                    "fetch_context_text.json"])
def test_the_sample_events_take_the_direct_path(fetch_app: Any, sample: str) -> None:
    # Given a sample event of each shape, authenticated as the handler does first
    from customer_context.api import authenticate_consumer

    event = load_event(sample)
    assert authenticate_consumer(fetch_app.app, event) is None
    # Then the direct path answers it (so the property above compares two different ways) …
    answer = fetch_app._direct_context(event)
    assert answer is not None and answer["statusCode"] == 200, answer
    # … with the customer's context
    assert json.loads(answer["body"])["profile_id"] == "p1" if "json" in answer["headers"]["Content-Type"] else \
        answer["body"].startswith("# Customer p1")


@pytest.mark.parametrize("query", ["fields=traits.plan&fields=scores", "format=JSON", "max_tokens=1e3",
                                   "verbose=yes", "max_tokens=49"])
def test_requests_the_validation_reads_otherwise_go_to_the_resolver(fetch_app: Any, query: str) -> None:
    from urllib.parse import parse_qsl

    from customer_context.api import authenticate_consumer

    pairs = parse_qsl(query)
    event = _event("api", "$default", "GET", "user_id", "u_000001", pairs, {"authorization": "Bearer ck_full"})
    assert authenticate_consumer(fetch_app.app, event) is None
    assert fetch_app._direct_context(event) is None


@pytest.mark.parametrize("direct", [True, False])
def test_if_none_match_star_gives_304_for_a_known_customer(fetch_app: Any, direct: bool) -> None:
    # Given a request for a known customer with If-None-Match: * (any current representation, RFC 9110)
    event = _event("api", "$default", "GET", "user_id", "u_000001", [], {"authorization": "Bearer ck_full",
                                                                         "if-none-match": "*"})
    # Then it is not sent again, either way; an unknown customer is still 404
    assert _call(fetch_app, event, direct)[0]["statusCode"] == 304
    event = _event("api", "$default", "GET", "user_id", "nobody", [], {"authorization": "Bearer ck_full",
                                                                       "if-none-match": "*"})
    assert _call(fetch_app, event, direct)[0]["statusCode"] == 404
