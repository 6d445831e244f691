"""fetch_context: the context API customer-facing AI calls (API Gateway HTTP API → Lambda).

Glue only: authenticate the consumer key, call ``customer_context.serve`` and respond. Routes:
``GET /v1/context/{identifier_type}/{identifier_value}``, ``POST /v1/context:batch``,
``GET /v1/tools``, ``POST /mcp`` and the Swagger UI at ``/docs/context``.
Imports neither pyarrow, duckdb nor pyiceberg (cold start; a test checks it).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import api, wiring
from customer_context.api import (
    authenticate_consumer,
    consumer_api,
    context_response,
    docs_on_demand,
    json_response,
    raw_body,
)
from customer_context.observability import logger, metrics
from customer_context.serve import models
from pydantic import ConfigDict, Field

app = consumer_api("customer-context fetch API",
                   "Customer context for AI: any identifier → snapshot + live events, JSON or prompt text; agent tools")
_docs = docs_on_demand(app, "/docs/context")


@functools.cache
def _vocabulary() -> tuple[list[str], list[str], list[str]]:
    """Identifier types, sections and fields of the deployed spec, for the OpenAPI document (the API checks them
    itself, with the valid ones in its 400s; the document lists them so clients and generated tests know).
    Read when the document is generated, not at import (the function's cold start)."""
    from customer_context.serve.catalog import LIST_SECTIONS, catalog
    from customer_context.serve.fetch import PROFILE_ID
    from customer_context.spec import load_spec

    spec = load_spec()
    cat = catalog(spec)
    fields = [*cat.fields, *(s for s in cat.sections if s in LIST_SECTIONS)]
    return [*spec.identifiers.types, PROFILE_ID], list(cat.sections), list(dict.fromkeys([*fields, *cat.sections]))


def _names_pattern(names: list[str]) -> str:
    """Comma-separated names, blanks around them and empty items ignored (as the API splits them)."""
    one = "|".join(re.escape(n) for n in names)
    return rf"^\s*(?:(?:{one})\s*)?(?:,\s*(?:(?:{one})\s*)?)*$"


def _id_types_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = _vocabulary()[0]


def _fields_pattern(schema: dict[str, Any]) -> None:
    schema["pattern"] = _names_pattern(_vocabulary()[2])


def _sections_pattern(schema: dict[str, Any]) -> None:
    schema["pattern"] = _names_pattern(_vocabulary()[1])


def _enum_items(schema: dict[str, Any], names: dict[str, list[str]]) -> None:
    for prop, values in names.items():
        for option in schema["properties"][prop].get("anyOf", [schema["properties"][prop]]):
            if option.get("type") == "array":
                option["items"]["enum"] = values
            elif option.get("type") == "string":
                option["enum"] = values


class IdentifierRef(models.IdentifierRef):
    """One identifier of a customer (its type one of the spec's)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda s: _enum_items(s, {"type": _vocabulary()[0]}))


class BatchRequest(models.BatchRequest):
    """``POST /v1/context:batch`` (validated as :class:`customer_context.serve.models.BatchRequest`; the spec's
    identifier types, fields and sections are listed for the OpenAPI document)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda s: _enum_items(
        s, {"fields": _vocabulary()[2], "sections": _vocabulary()[1]}))
    identifiers: list[IdentifierRef] = Field(min_length=1, max_length=100,  # type: ignore[assignment]
                                             description="Up to 100 identifiers (DynamoDB BatchGetItem's limit)")


BatchRequest.model_rebuild(_types_namespace={"IdentifierRef": IdentifierRef})  # loaded by path: resolve it here

_ERRORS = {400: {"description": "Unknown identifier type, field, section or format (the reason lists the valid ones)"},
           401: {"description": "No consumer key, or an unknown one"},
           403: {"description": "A field or section outside the consumer's scope (named), or a write key"},
           404: {"description": "No customer is known by this identifier"}}


def _headers() -> dict[str, str]:
    return {k.lower(): v for k, v in (app.current_event.headers or {}).items()}


@app.get(
    "/v1/context/<identifier_type>/<identifier_value>",
    summary="One customer's context by any identifier",
    description="Resolves the identifier (user_id, anonymous_id, email, custom ids or profile_id) to the "
    "customer's snapshot, merges events received since the build into `recent_events`, keeps what the consumer "
    "may read and what `fields` / `sections` select, and answers JSON or prompt-ready text under `max_tokens`. "
    "Sends `ETag` and `Cache-Control`; `If-None-Match` with the current ETag gives 304.",
    responses={200: {"description": "The context (JSON) or its prompt text (`format=text`)"}, 304: {
        "description": "Not modified since the ETag sent in If-None-Match"}, **_ERRORS},
    tags=["context"],
)
def get_context(
    identifier_type: Annotated[str, Path(description="user_id, anonymous_id, email, phone, a custom id type, "
                                                     "or profile_id", json_schema_extra=_id_types_enum)],
    identifier_value: Annotated[str, Path(description="The identifier (normalised as the spec says: emails "
                                                      "trimmed and case-folded, phones in E.164 …)")],
    fields: Annotated[str | None, Query(description="Comma-separated dotted paths, e.g. "
                                                    "`traits.orders_90d,scores.churn_risk`",
                                        json_schema_extra=_fields_pattern)] = None,
    sections: Annotated[str | None, Query(description="Comma-separated whole sections, e.g. `traits,scores`",
                                          json_schema_extra=_sections_pattern)] = None,
    format: Annotated[Literal["json", "text"], Query(description="`json` or prompt-ready `text`")] = "json",  # noqa: A002
    max_tokens: Annotated[int | None, Query(ge=50, le=100_000, description="Token budget of `format=text`")] = None,
    verbose: Annotated[bool, Query(description="JSON only: add `provenance`, where each value came from (trait "
                                               "definition, record table and key, event) and when it last "
                                               "changed (`last_changed`)")] = False,
):  # noqa: ANN201 - Powertools reads return annotations as response models
    return _context_response(app.context["consumer"], identifier_type, identifier_value, fields, sections, format,
                             max_tokens, verbose, _headers().get("if-none-match"))


def _context_response(consumer: Any, identifier_type: str, identifier_value: str, fields: str | None,
                      sections: str | None, fmt: str, max_tokens: int | None, verbose: bool,
                      if_none_match: str | None) -> Response:
    """What ``GET /v1/context/…`` answers, whichever way it was reached (the resolver, or :func:`_direct_context`)."""
    # the route hands over the raw path segment: undo its percent-encoding once (Ada%40x.com → Ada@x.com)
    result = wiring.context_service().fetch(
        unquote(identifier_type), unquote(identifier_value), consumer, fields=fields, sections=sections, fmt=fmt,
        max_tokens=max_tokens, if_none_match=if_none_match, verbose=verbose)
    return context_response(result)


@app.post(
    "/v1/context:batch",
    summary="Up to 100 customers' contexts in one call",
    description="One BatchGetItem for the identifiers and one for the snapshots. Unknown customers are listed "
    "with `found: false`; the same `fields` / `sections` apply to every customer.",
    responses={200: {"description": "Each identifier with its context, or `found: false`"}, **_ERRORS},
    tags=["context"],
)
def batch_context(request: BatchRequest):  # noqa: ANN201 - Powertools reads return annotations as response models
    consumer = app.context["consumer"]
    body = wiring.context_service().fetch_many(
        [i.model_dump() for i in request.identifiers], consumer, fields=request.fields, sections=request.sections)
    return json_response(200, body)


@app.get(
    "/v1/tools",
    summary="Tool definitions for LLM APIs, generated from context.yaml",
    description="`style=openai` (Chat Completions / Responses `tools`), `anthropic` (Messages `tools`), `mcp` "
    "(MCP `tools/list`) or `all`. Only what the consumer may read is offered.",
    responses={200: {"description": "The tool definitions"}, 400: {"description": "Unknown style"},
               401: _ERRORS[401]},
    tags=["agents"],
)
def get_tools(
    style: Annotated[Literal["openai", "anthropic", "mcp", "all"], Query(description="Which API's shape")] = "all",
):  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.serve.tools import tool_definitions

    consumer = app.context["consumer"]
    return json_response(200, tool_definitions(wiring.context_service().spec, consumer, style))


@app.post(
    "/mcp",
    summary="Model Context Protocol endpoint (Streamable HTTP, stateless JSON-RPC)",
    description="initialize, ping, tools/list, tools/call; authenticated with a consumer key.",
    responses={200: {"description": "The JSON-RPC response (a failed call is a JSON-RPC error)"},
               202: {"description": "A notification, accepted (no body)"},
               400: {"description": "Not JSON (a JSON-RPC parse error)"}, 401: _ERRORS[401]},
    tags=["agents"],
)
def post_mcp():  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.serve.mcp import handle_mcp

    event = app.current_event
    status, body, headers = handle_mcp(raw_body(event.raw_event), _headers(), app.context["consumer"],
                                     context_service=wiring.context_service, base_url=_base_url())
    if body is None:
        return Response(status_code=status, body="", headers=headers)
    return json_response(status, body, headers)


@app.get("/mcp", include_in_schema=False)
def get_mcp():  # noqa: ANN201 - Powertools reads return annotations as response models
    # Stateless server: no server-initiated stream (the MCP spec's answer is 405).
    return json_response(405, {"code": "method_not_allowed", "message": "this MCP server is stateless: POST only"},
                         {"Allow": "POST"})


def _base_url() -> str:
    """This API's own base URL (for named queries run by query_context): the configured one, else the domain
    API Gateway received the request on — never the client's ``Host`` header, which would send the
    caller's key wherever it points."""
    from customer_context.config import get_settings

    configured = get_settings().api_url
    if configured:
        return configured.rstrip("/")
    context = app.current_event.request_context
    stage = context.stage
    prefix = "" if stage in ("$default", "", None) else f"/{stage}"
    return f"https://{context.domain_name}{prefix}"


_CONTEXT_QUERY = ("fields", "sections", "format", "max_tokens", "verbose")
_PLAIN_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _plain_tokens(value: str | None) -> bool:
    return value is None or (value.isascii() and value.isdigit() and len(value) <= 6 and 50 <= int(value) <= 100_000)


def _direct_context(event: dict[str, Any]) -> dict[str, Any] | None:
    """``GET /v1/context/…`` answered without the resolver's per-request machinery (matching every route,
    the middleware chain, pydantic validation of each parameter: about half of the handler's own time). The
    same route (found by the resolver's own patterns, in its order), the same parameters and defaults, the same
    :func:`_context_response`, error handlers and response. Only requests whose parameters are plainly valid
    take it; anything the validation would refuse or read otherwise (a repeated parameter, a format other than
    json or text, max_tokens not plain digits from 50 to 100000, verbose other than true/false/1/0 …) is left
    to the resolver, which answers it as before. ``None``: not such a request. tests/unit/test_fetch_direct.py
    checks both ways give the same responses."""
    routed = api.route_of(app, event)
    if routed is None or routed[0] is not get_context:
        return None
    query = api.plain_query(event, _CONTEXT_QUERY)
    if query is None:
        return None
    fmt, verbose, max_tokens = query.get("format", "json"), query.get("verbose", "false"), query.get("max_tokens")
    if fmt not in ("json", "text") or verbose not in _PLAIN_BOOLS or not _plain_tokens(max_tokens):
        return None
    if_none_match = {k.lower(): v for k, v in event["headers"].items()}.get("if-none-match")
    try:
        response = _context_response(app.context["consumer"], routed[1]["identifier_type"],
                                     routed[1]["identifier_value"], query.get("fields"), query.get("sections"), fmt,
                                     int(max_tokens) if max_tokens is not None else None, _PLAIN_BOOLS[verbose],
                                     if_none_match)
    except Exception as exc:  # noqa: BLE001 - answered by the handlers the resolver would call
        response = api.handled_error(app, exc)
    finally:
        app.clear_context()
    return api.http_api_response(response)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) entry point.

    No X-Ray SDK here (see ``customer_context.observability``): Lambda's active tracing still
    records each invocation.
    """
    _docs(event)
    refused = authenticate_consumer(app, event)
    if refused is not None:
        return refused
    direct = _direct_context(event)
    return direct if direct is not None else app.resolve(event, context)
