"""API Gateway HTTP API (payload format 2.0) events and responses, exactly as AWS shapes them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded", "application/graphql")


def is_text_body(headers: dict[str, str]) -> bool:
    """API Gateway passes text bodies as is and base64-encodes the others (and any encoded body)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        return False
    content_type = headers.get("content-type", "").lower()
    return not content_type or any(content_type.startswith(t) for t in _TEXT_TYPES)


def http_api_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    route_key: str,
    path_parameters: dict[str, str] | None = None,
    stage: str = "$default",
    domain: str = "localhost",
) -> dict[str, Any]:
    """Build the event API Gateway sends a Lambda integration for one request."""
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[lname] = f"{merged[lname]},{value}" if lname in merged else value
    query_params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        query_params[key] = f"{query_params[key]},{value}" if key in query_params else value
    now = datetime.now(UTC)
    text = is_text_body(merged)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": base64.b32encode(uuid.uuid4().bytes)[:16].decode(),
            "routeKey": route_key,
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": not text and bool(body),
    }
    if cookies:
        event["cookies"] = cookies
    if query_params:
        event["queryStringParameters"] = query_params
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        event["body"] = body.decode("utf-8", errors="replace") if text else base64.b64encode(body).decode()
    return event


def http_api_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Turn a handler's return value into status, headers and body, as API Gateway does.

    A dict without ``statusCode`` (or any other value) is a 200 JSON body, per the 2.0 format rules.
    """
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(str(v) for v in values)
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    if result.get("cookies"):
        headers["set-cookie"] = "; ".join(result["cookies"])
    return int(result["statusCode"]), headers, data
