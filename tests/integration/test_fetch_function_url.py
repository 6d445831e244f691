"""fetch_context reached through a Lambda function URL (template parameter FetchEndpoint=both): the URL sends
the same payload format 2.0 as the HTTP API, with routeKey ``$default`` and no pathParameters, and the handler
authenticates the consumer key itself (the URL's AuthType is NONE)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from customer_context import wiring
from customer_context_devtools.local import lambda_runtime
from customer_context_devtools.local.template import resource_properties

from tests.conftest import load_event
from tests.helpers.lake import ev, write_events


@pytest.fixture
def served(aws: str, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A context table on moto (the template's key schema) holding Ada, built from the lakehouse, and the
    samples' consumer key."""
    from customer_context.assemble.build import build_context
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.spec import load_spec

    from tests.helpers.lake import AS_OF

    table = f"ctx-function-url-{uuid.uuid4().hex[:12]}"  # moto's server lives for the whole session
    props = resource_properties("ContextTable")
    wiring.boto_client("dynamodb").create_table(
        TableName=table, KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST")
    monkeypatch.setenv("CUSTOMER_CONTEXT_CONTEXT_TABLE", table)
    monkeypatch.setenv("CUSTOMER_CONTEXT_PII_HASH_KEY", "test-key")
    wiring.reload_from_environment()
    store = wiring.context_store()
    write_events(lakehouse, [
        ev("identify", 3, userId="u1", traits={"email": "ada@example.com"}),
        *(ev("track", 2, userId="u1", event="Order Completed", properties={"revenue": 20 + n}) for n in range(2)),
    ])
    build_context(lakehouse, store, load_spec(), as_of=AS_OF)
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    return store


def test_the_function_url_sample_is_served_as_through_the_http_api(served: Any) -> None:
    url_event = load_event("fetch_context_function_url.json")
    assert url_event["routeKey"] == "$default" and "pathParameters" not in url_event
    # When the handler gets the function URL's event and the HTTP API's for the same request
    through_url = lambda_runtime.invoke("fetch_context", url_event)
    through_api = lambda_runtime.invoke("fetch_context", load_event("fetch_context_get.json"))
    # Then both are served, with the same context
    assert through_url["statusCode"] == 200, through_url
    assert through_api["statusCode"] == 200, through_api
    url_body, api_body = json.loads(through_url["body"]), json.loads(through_api["body"])
    assert url_body["context"] == api_body["context"] and url_body["profile_id"] == api_body["profile_id"]
    assert url_body["context"]["traits"]["orders_90d"] == 2


def test_the_function_url_still_needs_a_consumer_key(served: Any) -> None:
    # Given the URL is public (AuthType NONE): the handler is the only check
    event = load_event("fetch_context_function_url.json")
    del event["headers"]["authorization"]
    assert lambda_runtime.invoke("fetch_context", event)["statusCode"] == 401
    event["headers"]["authorization"] = "Bearer ck_not_a_key"
    assert lambda_runtime.invoke("fetch_context", event)["statusCode"] == 401


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_through_the_function_url_are_refused_not_errors(served: Any, method: str) -> None:
    # The URL forwards any method (API Gateway routes only GET here): the handler must refuse it, not fail
    url_event = load_event("fetch_context_function_url.json")
    url_event["requestContext"]["http"]["method"] = method
    answer = lambda_runtime.invoke("fetch_context", url_event)
    assert answer["statusCode"] in (404, 405), answer
    assert json.loads(answer["body"])["message"]
