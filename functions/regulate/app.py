"""regulate: suppress or delete a customer everywhere (API Gateway → Lambda; the deletion job is the
same function invoked asynchronously with ``{"regulation_id": …}``).

Glue only: the domain is ``customer_context.govern.regulations``. The HTTP part needs an admin
consumer key (``customer-context keys create --admin``); the job loads the lakehouse (analytics
layer) when it runs.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.api import authenticate_consumer, consumer_api, json_response, raw_body
from customer_context.errors import Forbidden, InvalidRequest, NotFound
from customer_context.observability import logger, metrics

app = consumer_api("customer-context regulation API",
                   "Suppress a customer's future events, or delete them everywhere (RudderStack-style regulations)")

def _request_body() -> dict[str, Any]:
    """The body's JSON Schema for the OpenAPI document (``parse_request`` checks it, naming the field)."""
    from customer_context.govern.regulations import REGULATION_TYPES, USER_KEYS
    from customer_context.spec import load_spec

    types = list(load_spec().identifiers.types)
    value = {"type": "string", "pattern": r"\S", "maxLength": 1024}
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["regulationType"],
        "properties": {
            "regulationType": {"type": "string", "enum": list(REGULATION_TYPES)},
            "users": {"type": "array", "maxItems": 1000, "description": "RudderStack's shape: identifiers by key",
                      "items": {"type": "object", "minProperties": 1, "additionalProperties": False,
                                "properties": {k: value for k in dict.fromkeys([*USER_KEYS, *types])}}},
            "identifiers": {"type": "array", "maxItems": 1000, "items": {
                "type": "object", "required": ["type", "value"],
                "properties": {"type": {"type": "string", "enum": [*types, "profile_id"]}, "value": value}}},
        },
        "anyOf": [{"required": ["users"], "properties": {"users": {"minItems": 1}}},
                  {"required": ["identifiers"], "properties": {"identifiers": {"minItems": 1}}}],
    }}}}


_ERRORS = {400: {"description": "Malformed request (the field and the reason)"},
           401: {"description": "No consumer key, or an unknown one"},
           403: {"description": "The key is not an admin key"}}


def _admin():  # type: ignore[no-untyped-def]
    consumer = app.context["consumer"]
    if not consumer.admin:
        raise Forbidden(f"consumer {consumer.name!r} is not an admin: regulations need a key made with "
                        "`customer-context keys create --admin`")
    return consumer


@app.post(
    "/v1/regulations",
    summary="File a regulation: suppress, or suppress_with_delete",
    description="Body: `{\"regulationType\": \"suppress\" | \"suppress_with_delete\", \"users\": [{\"userId\": …, "
    "\"email\": …, \"phone\": …, \"anonymousId\": …}]}` (RudderStack's shape; custom identifier types by name). "
    "The identifiers are expanded to the whole stitched customer and suppressed at once: collect accepts and drops "
    "their future events. `suppress_with_delete` then starts the deletion job: 202 with the regulation, whose "
    "status moves pending → running → done | failed (GET it).",
    responses={202: {"description": "The regulation, as filed"}, **_ERRORS},
    tags=["governance"],
    openapi_extensions={"requestBody": _request_body()},
)
def post_regulation():  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.govern.regulations import new_regulation, parse_request, suppress

    consumer = _admin()
    try:
        body = json.loads(raw_body(app.current_event.raw_event) or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc}") from None
    service = wiring.context_service()
    kind, identifiers = parse_request(body, service.spec)
    store = wiring.context_store()
    regulation = suppress(store, service, new_regulation(store, kind, identifiers, consumer.name),
                          wiring.pii_key())
    if kind == "suppress_with_delete":
        regulation["job"] = wiring.start_regulation_job(regulation["id"])
    profiles = regulation.get("profiles")
    logger.info("regulation filed", extra={"regulation_id": regulation["id"], "type": kind,
                                          "profiles": profiles if isinstance(profiles, int) else len(profiles or [])})
    return json_response(202, regulation, {"Location": f"/v1/regulations/{regulation['id']}"})


@app.get(
    "/v1/regulations/<regulation_id>",
    summary="A regulation's status, with counts per table once done",
    responses={200: {"description": "The regulation"}, 404: {"description": "No such regulation"}, **_ERRORS},
    tags=["governance"],
)
def get_regulation(  # noqa: ANN201 - Powertools reads return annotations as response models
    regulation_id: Annotated[str, Path(description="The id POST returned")],
):
    _admin()
    regulation = wiring.context_store().get_regulation(regulation_id)
    if regulation is None:
        raise NotFound(f"no regulation {regulation_id!r}")
    return json_response(200, regulation)


@app.get(
    "/v1/tracking-plans",
    summary="The tracking plans of every source, with violations counted from the lakehouse",
    description="Plans come from `tracking_plans` in context.yaml. `violations` counts, per source, event, kind "
    "(unplanned_event, invalid_properties, invalid_traits) and action (rejected, flagged), what collect found — the "
    "same report as `customer-context plans report`.",
    responses={200: {"description": "Plans and violation counts"}, **_ERRORS},
    tags=["governance"],
)
def get_tracking_plans():  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.govern.plans_report import violations

    _admin()
    spec = wiring.context_service().spec
    plans = {source: plan.model_dump(mode="json", exclude_defaults=True)
             for source, plan in spec.tracking_plans.items()}
    return json_response(200, {"plans": plans, "violations": violations(wiring.lakehouse())})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) requests, or ``{"regulation_id": …}`` to run a deletion job."""
    if "regulation_id" in event and "requestContext" not in event:
        from customer_context.govern.regulations import run_job
        from customer_context.spec import load_spec

        return run_job(wiring.lakehouse(), wiring.context_store(), load_spec(), str(event["regulation_id"]),
                       **wiring.regulation_job_options())
    refused = authenticate_consumer(app, event)
    return refused if refused is not None else app.resolve(event, context)
