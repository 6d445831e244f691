"""The local stack's API Gateway emulation: event shape and routes."""

from __future__ import annotations

import base64
import gzip

from customer_context_devtools.local.apigw import http_api_event, http_api_response
from customer_context_devtools.local.routes import find_route


def test_gzip_body_is_base64_encoded_like_api_gateway() -> None:
    body = gzip.compress(b'{"batch":[]}')
    event = http_api_event(method="POST", path="/v1/batch", query="a=1&a=2",
                           headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                                    ("X-Dup", "1"), ("x-dup", "2"), ("Cookie", "a=1; b=2")],
                           body=body, source_ip="127.0.0.1", route_key="POST /v1/batch")
    assert event["version"] == "2.0" and event["routeKey"] == "POST /v1/batch"
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    assert event["headers"]["x-dup"] == "1,2" and event["cookies"] == ["a=1", "b=2"]
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"


def test_json_body_is_passed_as_text() -> None:
    event = http_api_event(method="POST", path="/v1/track", query="", headers=[("content-type", "application/json")],
                           body=b'{"a":1}', source_ip="127.0.0.1", route_key="POST /v1/track")
    assert event["isBase64Encoded"] is False and event["body"] == '{"a":1}'


def test_response_conversion() -> None:
    status, headers, body = http_api_response({"statusCode": 201, "headers": {"X-A": "b"}, "body": "hi"})
    assert (status, headers, body) == (201, {"x-a": "b"}, b"hi")
    assert http_api_response({"ok": True})[0] == 200


def test_routes() -> None:
    assert find_route("POST", "/v1/batch")[0].function == "collect"
    assert find_route("GET", "/v1/batch") is None
    assert find_route("POST", "/v1/nothing") is None
