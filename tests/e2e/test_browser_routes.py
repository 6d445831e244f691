"""What the browser SDKs need of the HTTP API besides events, over HTTP on the local stack: CORS as template.yaml
configures it, Segment's short paths, RudderStack's beacon route, and the SDK settings routes.
(tests/browser runs the SDKs themselves in Chromium.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context.stores.sql import query
from customer_context_devtools.local.routes import ROUTES
from customer_context_devtools.local.template import resource_properties

pytestmark = pytest.mark.e2e

ORIGIN = "http://127.0.0.1:9"  # a page on another origin
CORS = resource_properties("HttpApi")["CorsConfiguration"]


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Overrides the conftest's per-test reset: one stack serves the whole module."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("browser-routes"), write_keys={"wk_web": "web"},
                    batch_window=0.2) as running:
        yield running


def _preflight(url: str, origin: str = ORIGIN, method: str = "POST") -> requests.Response:
    return requests.options(url, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                          "Access-Control-Request-Headers": "authorization,content-type,sentat"},
                            timeout=30)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.function == "collect"], ids=lambda r: r.route_key)
def test_every_collect_route_answers_preflights_as_the_template_configures(stack: Any, route: Any) -> None:
    # Given a page on another origin about to call a collect route
    answer = _preflight(stack.url + route.path.replace("{writeKey}", "wk_web"), method=route.method)
    # Then the local stack answers as API Gateway does with template.yaml's CorsConfiguration
    assert answer.status_code == 204
    headers = answer.headers
    assert headers["access-control-allow-origin"] == "*" and CORS["AllowOrigins"] == {"Ref": "CorsAllowOrigins"}
    assert headers["access-control-allow-methods"].split(",") == CORS["AllowMethods"]
    assert headers["access-control-allow-headers"].split(",") == CORS["AllowHeaders"]
    assert headers["access-control-max-age"] == str(CORS["MaxAge"])


def test_responses_carry_the_configured_cors_headers(stack: Any) -> None:
    ok = requests.post(f"{stack.url}/v1/t", data=json.dumps({"event": "x", "anonymousId": "cors-a"}),
                       headers={"Origin": ORIGIN, "Content-Type": "text/plain"}, auth=("wk_web", ""), timeout=30)
    refused = requests.post(f"{stack.url}/v1/t", data="{", headers={"Origin": ORIGIN}, timeout=30)
    unknown = requests.post(f"{stack.url}/v1/nothing", headers={"Origin": ORIGIN}, timeout=30)
    for answer, status in ((ok, 200), (refused, 400), (unknown, 404)):
        assert answer.status_code == status
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-expose-headers"].split(",") == CORS["ExposeHeaders"]
    # without an Origin (not a browser), nothing is added
    assert "access-control-allow-origin" not in requests.get(f"{stack.url}/docs/collect", timeout=30).headers


def test_allowed_origins_are_configurable(stack: Any) -> None:
    import threading

    from customer_context import wiring
    from customer_context_devtools.local.http_server import LocalHttpApi

    # Given the local HTTP API (in front of the same handlers) started with two allowed origins
    origins = "https://www.example.com, https://shop.example.com"
    wiring.configure(wiring.settings().model_copy(update={"cors_allow_origins": origins}))
    try:
        api = LocalHttpApi()
    finally:
        wiring.reload_from_environment()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        allowed = _preflight(f"{api.url}/v1/page", origin="https://shop.example.com")
        other = _preflight(f"{api.url}/v1/page")
        posted = requests.post(f"{api.url}/v1/page", json={"anonymousId": "a"}, auth=("wk_web", ""),
                               headers={"Origin": ORIGIN}, timeout=30)
    finally:
        api.shutdown()
        api.server_close()
    # Then an allowed origin is named (not *); another gets no CORS header, so its browser refuses the answer
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert other.status_code == 204 and not [h for h in other.headers if h.lower().startswith("access-control")]
    assert posted.status_code == 200 and "access-control-allow-origin" not in posted.headers


def test_segment_short_paths_are_the_long_ones(stack: Any) -> None:
    # Given one event on each of Segment's short paths, sent as its browser SDK sends them (text/plain,
    # the write key in the body too)
    calls = {"t": {"event": "Viewed"}, "i": {"traits": {"plan": "pro"}}, "p": {"name": "Pricing"},
             "s": {"name": "Cart"}, "g": {"groupId": "acct"}, "a": {"userId": "short-user", "previousId": "short-a"}}
    for short, fields in calls.items():
        body = {"anonymousId": "short-a", "messageId": f"short-{short}", "writeKey": "wk_web", **fields}
        answer = requests.post(f"{stack.url}/v1/{short}", data=json.dumps(body), timeout=30,
                               headers={"Content-Type": "text/plain", "Authorization": "Basic d2tfd2ViOg=="})
        assert answer.status_code == 200, (short, answer.text)
    batch = {"batch": [{"type": "track", "event": "Batched", "anonymousId": "short-a", "messageId": "short-b"}]}
    assert requests.post(f"{stack.url}/v1/b", json=batch, auth=("wk_web", ""), timeout=30).json()["accepted"] == 1
    # Then each landed as its long path's type
    assert stack.wait_for_ingest(60)
    _, rows = query(wiring.lakehouse(), "select message_id, type from events where message_id like 'short-%'")
    assert dict(rows) == {"short-t": "track", "short-i": "identify", "short-p": "page", "short-s": "screen",
                          "short-g": "group", "short-a": "alias", "short-b": "track"}


def test_the_beacon_route_alone_reads_the_write_key_from_the_query(stack: Any) -> None:
    body = json.dumps({"batch": [{"type": "track", "event": "Left", "anonymousId": "beacon-a",
                                  "messageId": "beacon-1"}], "sentAt": "2026-12-01T10:00:00.000Z"})
    beacon = requests.post(f"{stack.url}/beacon/v1/batch?writeKey=wk_web", data=body,
                           headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=30)
    assert beacon.status_code == 200 and beacon.json()["accepted"] == 1
    # an unknown key in the query is refused, whatever header comes with it
    assert requests.post(f"{stack.url}/beacon/v1/batch?writeKey=wk_nope", data=body, auth=("wk_web", ""),
                         timeout=30).status_code == 401
    # and on any other route the query is no place for a write key
    other = requests.post(f"{stack.url}/v1/batch?writeKey=wk_web", data=body, timeout=30)
    assert other.status_code == 401 and "Missing write key" in other.json()["message"]


def test_rudderstack_source_config(stack: Any) -> None:
    answer = requests.get(f"{stack.url}/sourceConfig?p=npm&v=3.34.1&writeKey=wk_web", auth=("wk_web", ""),
                          headers={"Origin": ORIGIN}, timeout=30)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    source = answer.json()["source"]
    assert (source["id"], source["writeKey"], source["enabled"], source["destinations"]) == ("web", "wk_web", True, [])
    assert source["config"]["statsCollection"] == {"errors": {"enabled": False}, "metrics": {"enabled": False}}
    for auth, query_key in ((("wk_nope", ""), "wk_web"), (None, "wk_nope")):
        refused = requests.get(f"{stack.url}/sourceConfig?writeKey={query_key}", auth=auth, timeout=30)
        assert refused.status_code == 401 and refused.json()["message"] == "Invalid write key"


def test_segment_settings_send_to_the_host_that_asked(stack: Any) -> None:
    answer = requests.get(f"{stack.url}/v1/projects/wk_web/settings", timeout=30,
                          headers={"Origin": ORIGIN, "Host": "collect.example.com"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
    assert answer.json() == {
        "integrations": {"Segment.io": {"apiKey": "wk_web", "apiHost": "collect.example.com/v1", "protocol": "http"}},
        "metrics": {"sampleRate": 0}, "remotePlugins": []}
    refused = requests.get(f"{stack.url}/v1/projects/wk_nope/settings", timeout=30)
    assert refused.status_code == 401 and refused.json()["message"] == "Invalid write key"
