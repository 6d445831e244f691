"""Access: every route needs its kind of key; write keys never read; scopes hold; keys never reach the logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from customer_context_devtools.local.routes import ROUTES

from tests.helpers.logs import every_log_record

pytestmark = pytest.mark.e2e

# The Swagger UI and the explorer's page and assets are public: static files with no customer data (the explorer
# asks for a consumer key and sends it with each API call it makes).
READ_ROUTES = [r for r in ROUTES if r.function in ("fetch_context", "query_context")
               and not r.path.startswith(("/docs", "/explorer"))]
WRITE_ROUTES = [r for r in ROUTES if r.function == "collect" and r.method == "POST"]
ADMIN_ROUTES = [r for r in ROUTES if r.function == "regulate"]


def _path(route: Any) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"identifier_type": "user_id", "name": "orders_in_period",
                                             "regulation_id": "reg_0"}.get(
        m.group(1), "u1"), route.path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("access"), write_keys={"wk_secret_write": "test"},
                    batch_window=0.2) as running:
        yield running


@pytest.mark.parametrize("route", READ_ROUTES, ids=lambda r: r.route_key)
def test_read_routes_need_a_consumer_key(stack: Any, route: Any) -> None:
    url = stack.url + _path(route)
    # no key, an unknown key, and a write key presented as Basic auth or as a bearer token
    attempts = (({}, 401), ({"authorization": "Bearer ck_wrong"}, 401), ({"x-api-key": "wk_secret_write"}, 403),
                ({"authorization": "Bearer wk_secret_write"}, 403))
    for headers, status in attempts:
        answer = requests.request(route.method, url, headers=headers, json={} if route.method == "POST" else None,
                                  timeout=30)
        assert answer.status_code == status, (route.route_key, headers, answer.text)
        assert answer.json()["message"], "every refusal says why"


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=lambda r: r.route_key)
def test_write_routes_need_a_write_key(stack: Any, route: Any) -> None:
    event = {"userId": "u1", "event": "x", "type": "track", "batch": [{"type": "track", "userId": "u1", "event": "x"}]}
    assert requests.post(stack.url + route.path, json=event, timeout=10).status_code == 401
    consumer = requests.post(stack.url + route.path, json=event, auth=(stack.consumer_key, ""), timeout=10)
    assert consumer.status_code == 401, "a consumer key cannot write events"


def test_admin_routes_refuse_every_other_key(stack: Any) -> None:
    assert {r.path for r in ADMIN_ROUTES} >= {"/v1/regulations", "/v1/tracking-plans"}
    for route in ADMIN_ROUTES:
        url = stack.url + _path(route)
        body = {"regulationType": "suppress", "users": [{"userId": "u1"}]} if route.method == "POST" else None
        # no key, an unknown key, a write key, and the (non-admin) consumer key
        attempts = (({}, 401), ({"authorization": "Bearer ck_wrong"}, 401), ({"x-api-key": "wk_secret_write"}, 403),
                    ({"authorization": "Bearer wk_secret_write"}, 403),
                    ({"authorization": f"Bearer {stack.consumer_key}"}, 403))
        for headers, status in attempts:
            answer = requests.request(route.method, url, headers=headers, json=body, timeout=30)
            assert answer.status_code == status, (route.route_key, headers, answer.text)
            assert answer.json()["message"], "every refusal says why"


def test_keys_and_identifiers_never_reach_the_logs(stack: Any) -> None:
    # Given every log record of a run captured at DEBUG, as the functions print them
    with every_log_record() as logs:
        # When requests carry good and bad keys of both kinds, in every place a key can be sent
        requests.post(f"{stack.url}/v1/track", json={"userId": "u1", "event": "x"}, auth=("wk_secret_write", ""),
                      timeout=10)
        requests.post(f"{stack.url}/v1/track", json={"userId": "u1", "event": "x", "writeKey": "wk_secret_body"},
                      timeout=10)
        requests.post(f"{stack.url}/v1/track", json={"userId": "u1"}, auth=("wk_wrong_secret", ""), timeout=10)
        for key in (stack.consumer_key, "ck_wrong_secret_key"):
            requests.get(f"{stack.url}/v1/context/user_id/nobody", headers={"authorization": f"Bearer {key}"},
                         timeout=10)
        # and a customer nobody knows is looked up by their raw email (a 404 whose reason names it)
        missing = requests.get(f"{stack.url}/v1/context/email/Nobody.Secret@Example.com",
                               headers={"authorization": f"Bearer {stack.consumer_key}"}, timeout=10)
        assert missing.status_code == 404 and "nobody.secret@example.com" in missing.json()["message"]
        stack.wait_for_ingest(60)
    # Then the capture really ran at the service's production level and below: its INFO records are there
    assert {"collected", "request refused", "request failed"} <= logs.messages(logging.INFO), logs.text[:2000]
    # And no key and no identifier appears anywhere in them, in a message, an extra field or a traceback
    text = logs.text.lower()
    for secret in ("wk_secret_write", "wk_secret_body", "wk_wrong_secret", stack.consumer_key, "ck_wrong_secret_key",
                   "nobody.secret@example.com", "nobody"):
        assert secret.lower() not in text, secret
