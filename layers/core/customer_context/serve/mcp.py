"""A Model Context Protocol server over Streamable HTTP, stateless: each POST carries JSON-RPC
(one message or a batch of at most :data:`MAX_MESSAGES`) and gets the JSON answer; no session, no
server-initiated stream.

Methods: ``initialize`` (protocol versions of the initialize handshake), ``ping``, ``tools/list``
and ``tools/call`` with the tools of :mod:`customer_context.serve.tools`. Notifications are
accepted with 202. A tool that fails (unknown customer, a field out of scope, arguments that do not
fit the tool's input schema …) answers a result with ``isError: true`` and the reason, so the model
can read it and recover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from customer_context import __version__, strict_json
from customer_context.errors import CustomerContextError
from customer_context.ports import JsonObject, JsonValue

if TYPE_CHECKING:
    from customer_context.serve.consumers import Consumer
    from customer_context.serve.fetch import ContextService

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
# JSON-RPC messages one POST may carry (a batch): each tool call may run a named query for seconds
MAX_MESSAGES = 10
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
INSTRUCTIONS = ("Customer context for the person you are serving. Call get_customer_context with whatever "
                "identifier you have (email, user id …) and only the fields the current step needs.")


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def _result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _dispatch(message: Any, consumer: Consumer, auth_headers: dict[str, str], base_url: str | None,
              context_service: Callable[[], ContextService]) -> dict[str, Any] | None:
    from customer_context.serve.tools import call_tool, tool_definitions

    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        return _error(message.get("id") if isinstance(message, dict) else None, INVALID_REQUEST,
                      "expected a JSON-RPC 2.0 request with a method")
    method, msg_id, params = message["method"], message.get("id"), message.get("params") or {}
    if "id" not in message:  # a notification: nothing to answer
        return None
    service = context_service()
    if method == "initialize":
        asked = params.get("protocolVersion") if isinstance(params, dict) else None
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        return _result(msg_id, {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                                "serverInfo": {"name": "customer-context", "version": __version__},
                                "instructions": INSTRUCTIONS})
    if method == "ping":
        return _result(msg_id, {})
    if method == "tools/list":
        return _result(msg_id, {"tools": tool_definitions(service.spec, consumer, "mcp")["tools"]})
    if method == "tools/call":
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return _error(msg_id, INVALID_PARAMS, "params.name: required, the tool's name")
        try:
            value = call_tool(params["name"], params.get("arguments") or {}, consumer, service,
                              base_url=base_url, auth_headers=auth_headers)
        except CustomerContextError as exc:
            return _result(msg_id, {"content": [{"type": "text", "text": f"{exc.code}: {exc.message}"}],
                                    "isError": True})
        if isinstance(value, str):
            return _result(msg_id, {"content": [{"type": "text", "text": value}], "isError": False})
        text = strict_json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return _result(msg_id, {"content": [{"type": "text", "text": text}], "structuredContent": value,
                                "isError": False})
    return _error(msg_id, METHOD_NOT_FOUND, f"method {method!r} is not supported by this server")


def handle_mcp(body: bytes, headers: dict[str, str], consumer: Consumer, *,
               context_service: Callable[[], ContextService], base_url: str | None = None
               ) -> tuple[int, JsonObject | list[JsonValue] | None, dict[str, str]]:
    """Answer one MCP POST from an authenticated consumer: (HTTP status, JSON body or None, headers).
    ``context_service`` gives the fetch service, asked for only when a message needs it."""
    auth = {k: v for k, v in headers.items() if k in ("authorization", "x-api-key")}
    try:
        message = strict_json.loads(body or b"null")
    except ValueError as exc:
        return 400, _error(None, PARSE_ERROR, f"invalid JSON: {exc}"), {}
    if isinstance(message, list):
        if len(message) > MAX_MESSAGES:
            return 400, _error(None, INVALID_REQUEST, f"a batch carries at most {MAX_MESSAGES} messages, got "
                                                      f"{len(message)}: send the rest in other requests"), {}
        answers = [a for m in message if (a := _dispatch(m, consumer, auth, base_url, context_service)) is not None]
        return (200, answers, {}) if answers else (202, None, {})
    answer = _dispatch(message, consumer, auth, base_url, context_service)
    return (200, answer, {}) if answer is not None else (202, None, {})
