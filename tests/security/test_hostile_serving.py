"""Hostile input to the serving APIs: never a 5xx, always a reason, never another customer's data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("hostile"), write_keys={"wk": "test"}, batch_window=0.2) as running:
        batch = [{"type": "identify", "userId": "victim", "traits": {"email": "victim@example.com"}},
                 {"type": "track", "userId": "victim", "event": "Order Completed", "properties": {"revenue": 5}}]
        assert requests.post(f"{running.url}/v1/batch", json={"batch": batch}, auth=("wk", ""),
                             timeout=10).status_code == 200
        assert running.wait_for_ingest(60)
        running.build()
        yield running


VALUES = ["' OR '1'='1", "victim' --", "../../etc/passwd", "%00", "a" * 5000, "ü" * 600, "*", "victim%",
          "id#user_id#victim", "profile#x", "{{7*7}}", "$(reboot)", "\\u0000"]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_identifier_values_with_metacharacters(stack: Any, value: str) -> None:
    headers = {"authorization": f"Bearer {stack.consumer_key}"}
    for id_type in ("user_id", "email", "profile_id", "crm_id"):
        answer = requests.get(f"{stack.url}/v1/context/{id_type}/{quote(value, safe='')}", headers=headers,
                              timeout=10)
        assert answer.status_code in (400, 404), (id_type, value[:20], answer.status_code, answer.text[:200])
        assert answer.json()["message"]
        assert "victim@example.com" not in answer.text


@pytest.mark.parametrize("params", [
    {"max_tokens": "lots"}, {"max_tokens": "-5"}, {"max_tokens": "99999999"}, {"format": "xml"},
    {"fields": ",".join(["traits.nope"] * 2000)}, {"fields": "traits..orders_90d"}, {"sections": "../records"},
])
def test_bad_query_parameters_are_400_with_a_reason(stack: Any, params: dict[str, str]) -> None:
    answer = requests.get(f"{stack.url}/v1/context/user_id/victim", params=params,
                          headers={"authorization": f"Bearer {stack.consumer_key}"}, timeout=10)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["message"]


TOO_MANY = b'{"identifiers": [' + b'{"type":"user_id","value":"v"},' * 200 + b"{}]}"


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"identifiers": "x"}', b'{"identifiers": [{"type": 1}]}',
                                  b"\xff\xfe", TOO_MANY, b"[" * 100_000 + b"]" * 100_000])
def test_batch_bodies_that_are_wrong(stack: Any, body: bytes) -> None:
    answer = requests.post(f"{stack.url}/v1/context:batch", data=body, timeout=10,
                           headers={"authorization": f"Bearer {stack.consumer_key}",
                                    "content-type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["message"]


@pytest.mark.parametrize("body", [b"{", b'{"since": {"$gt": ""}}', b'{"since": "2020-01-01", "until": 1e400}',
                                  b'{"since": "2020-01-01T00:00:00Z", "extra": "x"}', b"[1]"])
def test_named_query_bodies_that_are_wrong(stack: Any, body: bytes) -> None:
    answer = requests.post(f"{stack.url}/v1/context/user_id/victim/queries/orders_in_period", data=body, timeout=30,
                           headers={"authorization": f"Bearer {stack.consumer_key}",
                                    "content-type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["message"]


def _mcp(stack: Any, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{stack.url}/mcp", json=body, timeout=60,
                         headers={"authorization": f"Bearer {stack.consumer_key}", **(headers or {})})


@pytest.mark.parametrize("arguments, reason", [
    ({"fields": 5}, "arguments.fields must be array"),
    ({"max_tokens": "abc"}, "arguments.max_tokens must be integer"),
    ({"max_tokens": [1]}, "arguments.max_tokens must be integer"),
    ({"sections": [{"$ne": 1}]}, "arguments.sections"),
    ({"format": 7}, "arguments.format"),
    ({"max_tokens": 10}, "arguments.max_tokens must be bigger than or equal to 50"),
])
def test_mcp_tool_arguments_of_the_wrong_type_are_tool_errors(stack: Any, arguments: dict[str, Any],
                                                             reason: str) -> None:
    answer = _mcp(stack, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "get_customer_context", "arguments": {"identifier_type": "user_id", "identifier_value": "victim",
                                                      **arguments}}})
    assert answer.status_code == 200, answer.text[:300]
    result = answer.json()["result"]
    assert result["isError"] is True and reason in result["content"][0]["text"], result


def test_a_named_query_parameter_out_of_its_range_is_400(stack: Any) -> None:
    for transport in ("http", "mcp"):
        if transport == "http":
            answer = requests.post(f"{stack.url}/v1/context/user_id/victim/queries/recent_pages", json={"limit": -1},
                                   headers={"authorization": f"Bearer {stack.consumer_key}"}, timeout=30)
            assert answer.status_code == 400 and "params.limit: expected at least 0" in answer.json()["message"]
        else:
            result = _mcp(stack, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "query_recent_pages", "arguments": {"identifier_type": "user_id", "identifier_value": "victim",
                                                            "limit": -1}}}).json()["result"]
            assert result["isError"] is True and "arguments.limit" in result["content"][0]["text"]


def test_an_mcp_request_carries_a_bounded_number_of_calls(stack: Any) -> None:
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {
        "name": "get_customer_context", "arguments": {"identifier_type": "user_id", "identifier_value": "victim"}}}
    answer = _mcp(stack, [{**call, "id": n} for n in range(300)])
    assert answer.status_code == 400 and "at most 10 messages" in answer.json()["error"]["message"]
    assert len(_mcp(stack, [{**call, "id": n} for n in range(10)]).json()) == 10


def test_mcp_query_tools_call_this_api_whatever_the_host_header_says(stack: Any) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Catch(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    # Given a server of the attacker's, named in the Host header of an MCP call
    catcher = ThreadingHTTPServer(("127.0.0.1", 0), Catch)
    threading.Thread(target=catcher.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{catcher.server_address[1]}"
        result = _mcp(stack, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "query_recent_pages", "arguments": {"identifier_type": "user_id", "identifier_value": "victim"}}},
            headers={"host": host}).json()["result"]
    finally:
        catcher.shutdown()
    # Then the query ran against this API, and the caller's key went nowhere else
    assert result["isError"] is False, result
    assert seen == []


def test_the_local_server_refuses_a_negative_content_length(stack: Any) -> None:
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                answer.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]):
            chunk = sock.recv(4096)  # the head and the body may come in separate segments
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer.split(b"\r\n\r\n", 1)[1], answer[:300]


def test_the_stack_state_file_is_readable_by_its_owner_only(stack: Any) -> None:
    import stat

    mode = stat.S_IMODE((stack.data_dir / "stack.json").stat().st_mode)
    assert mode == 0o600, oct(mode)
