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
    from customer_context.local.stack import LocalStack

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
