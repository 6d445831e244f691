"""query_context: named, parameterised queries over one customer's lakehouse rows (API Gateway → Lambda).

Glue only: authenticate the consumer key, resolve the identifier to its profile, call
``customer_context.serve.named_queries.run_named_query``; the replay routes (history, replay, audit,
identity) call ``customer_context.serve.replay`` under the same budgets, and ``/explorer`` serves the
profile explorer's static page (no key: the page asks for one). duckdb, pyarrow and pyiceberg are loaded
on the first query (this function runs in the analytics image), not at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import strict_json, wiring
from customer_context.api import authenticate_consumer, consumer_api, context_response, json_response, raw_body
from customer_context.config import get_settings
from customer_context.errors import Forbidden, InvalidRequest, NotFound
from customer_context.observability import logger, metrics

app = consumer_api("customer-context query API",
                   "Named, parameterised queries over one customer's lakehouse rows, under budgets")


@app.post(
    "/v1/context/<identifier_type>/<identifier_value>/queries/<name>",
    summary="Run a named query from context.yaml for one customer",
    description="The body is a JSON object of the query's parameters. The query sees only this customer's rows; "
    "it is refused before reading when its planned scan is above the byte budget, stopped at the time budget, and "
    "its rows are cut at the row budget (`truncated: true`). Identical calls are cached for a few seconds "
    "(`cached: true`). A query declared with `consent:` sees only events sent with that consent and answers no "
    "rows, with `withheld` naming the category, while the customer's latest consent denies it.",
    responses={400: {"description": "Bad parameter (named) or unknown identifier type"},
               401: {"description": "No consumer key, or an unknown one"},
               403: {"description": "The consumer may not run this query"},
               404: {"description": "Unknown query or customer"},
               422: {"description": "A budget would be exceeded (which one, and the numbers)"},
               500: {"description": "The query in context.yaml cannot run (names what is wrong)"}},
    tags=["agents"],
)
def run_query(  # noqa: ANN201 - Powertools reads return annotations as response models
    identifier_type: Annotated[str, Path(description="user_id, email, … or profile_id")],
    identifier_value: Annotated[str, Path(description="The identifier")],
    name: Annotated[str, Path(description="A query declared under `queries:` in context.yaml")],
):
    from customer_context.serve.named_queries import QueryBudget, query_reveals, run_named_query, snapshot_identifiers

    consumer = app.context["consumer"]
    service = wiring.context_service()
    query = service.spec.queries.get(name)
    if query is not None and not consumer.allows_query(name, query_reveals(service.spec, query)):
        raise Forbidden(f"query {name!r} is outside the scope of consumer {consumer.name!r}: it reveals "
                        f"{', '.join(query_reveals(service.spec, query))}")
    body = raw_body(app.current_event.raw_event)
    try:
        params = strict_json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc}") from None
    profile_id = service.resolve_profile(unquote(identifier_type), unquote(identifier_value))
    settings = get_settings()
    budget = QueryBudget(settings.query_max_seconds, settings.query_max_rows, settings.query_max_scan_bytes,
                         settings.query_cache_seconds)
    # the customer's identifiers from their snapshot (one GetItem), not a scan of the identity graph; no
    # snapshot (a deleted customer, or one not built yet): nothing to query
    snapshot = service.store.get_snapshot(profile_id)
    if snapshot is None:
        raise NotFound(f"profile {profile_id!r} has no built context: nothing to query")
    result = run_named_query(wiring.lakehouse(), service.spec, name, profile_id, params, budget,
                             snapshot_identifiers(snapshot), generation=service.store.deletion_generation())
    wiring.audit_log().record(consumer=consumer.name, via=f"query:{name}",
                               identifier=service.identifier(unquote(identifier_type), unquote(identifier_value)),
                               profile_id=profile_id,
                               fields=[f"param:{p}" for p in sorted(params)] if isinstance(params, dict) else [],
                               status=200)
    logger.info("named query", extra={"query": name, "consumer": consumer.name, "rows": result["row_count"],
                                      "cached": result["cached"], "elapsed_ms": result["elapsed_ms"]})
    return json_response(200, result)


def _budget() -> Any:
    from customer_context.serve.named_queries import QueryBudget

    settings = get_settings()
    return QueryBudget(settings.query_max_seconds, settings.query_max_rows, settings.query_max_scan_bytes,
                       settings.query_cache_seconds)


_REPLAY_ERRORS = {400: {"description": "Unknown identifier type, field, section or format, or a bad time (named)"},
                  401: {"description": "No consumer key, or an unknown one"},
                  403: {"description": "Outside the consumer's scope (named)"},
                  404: {"description": "Nobody known by this identifier, or no version at that time"},
                  422: {"description": "A budget would be exceeded (which one, and the numbers)"}}
_TYPE = Annotated[str, Path(description="user_id, email, anonymous_id, … or profile_id")]
_VALUE = Annotated[str, Path(description="The identifier")]


def _replay_read(read: Callable[..., dict[str, Any]], identifier_type: str, identifier_value: str) -> Response:
    """One of serve.replay's reads (history, audit_trail, identity) for the customer in the path, as JSON."""
    return json_response(200, read(wiring.context_service(), wiring.lakehouse(), app.context["consumer"],
                                   unquote(identifier_type), unquote(identifier_value), _budget()))


@app.get(
    "/v1/context/<identifier_type>/<identifier_value>/history",
    summary="One customer's snapshot versions and the fields each build changed",
    description="Newest first: version, built_at, data_as_of and the fields that changed from the previous "
    "version (only fields the consumer may read are named); `last_changed` gives, per field, the version and time "
    "it last changed. Read from the `context_snapshots` Iceberg table under the named queries' budgets.",
    responses={200: {"description": "The versions"}, **_REPLAY_ERRORS},
    tags=["replay"],
)
def get_history(identifier_type: _TYPE, identifier_value: _VALUE):  # noqa: ANN201 - Powertools reads return annotations
    from customer_context.serve import replay

    return _replay_read(replay.history, identifier_type, identifier_value)


@app.get(
    "/v1/context/<identifier_type>/<identifier_value>/replay",
    summary="The customer's context as fetch answered it at a time (or from one version)",
    description="The newest snapshot version built at or before `at` (default: the newest), answered by the fetch "
    "code with its clock at `at`: the same JSON or prompt text fetch gave then, the consumer's scope applied. "
    "Events received after that build (the live tail) are not in the history. `X-Context-Version` names the "
    "version; text answers list what the budget left out in `X-Context-Omitted-Detail` (a JSON array).",
    responses={200: {"description": "The context (JSON) or its prompt text (`format=text`)"}, **_REPLAY_ERRORS},
    tags=["replay"],
)
def get_replay(  # noqa: ANN201 - Powertools reads return annotations as response models
    identifier_type: _TYPE,
    identifier_value: _VALUE,
    at: Annotated[str | None, Query(description="ISO-8601 time, e.g. 2026-11-24T12:00:00Z (no offset: UTC)")] = None,
    version: Annotated[int | None, Query(ge=1, description="A version instead of a time")] = None,
    fields: Annotated[str | None, Query(description="Comma-separated dotted paths, as for fetch")] = None,
    sections: Annotated[str | None, Query(description="Comma-separated whole sections, as for fetch")] = None,
    format: Annotated[Literal["json", "text"], Query(description="`json` or prompt-ready `text`")] = "json",  # noqa: A002
    max_tokens: Annotated[int | None, Query(ge=50, le=100_000, description="Token budget of `format=text`")] = None,
):
    from customer_context.serve import replay

    result = replay.replay(wiring.context_service(), wiring.lakehouse(), app.context["consumer"],
                           unquote(identifier_type), unquote(identifier_value), at=replay.parse_at(at),
                           version=version, fields=fields, sections=sections, fmt=format, max_tokens=max_tokens,
                           budget=_budget())
    return context_response(result)


@app.get(
    "/v1/context/<identifier_type>/<identifier_value>/audit",
    summary="Who was served what about the customer, each record joined to the version it served",
    description="Newest first: when, which consumer, how (fetch, batch, tool, query), the sections and fields "
    "returned (names, never values), the snapshot version and its build time. Needs an admin key or one made with "
    "`--audit`.",
    responses={200: {"description": "The audit records"}, **_REPLAY_ERRORS},
    tags=["replay"],
)
def get_audit(identifier_type: _TYPE, identifier_value: _VALUE):  # noqa: ANN201 - Powertools reads return annotations
    from customer_context.serve import replay

    return _replay_read(replay.audit_trail, identifier_type, identifier_value)


@app.get(
    "/v1/context/<identifier_type>/<identifier_value>/identity",
    summary="The customer's identity graph: identifiers, how they joined, and refused edges",
    description="Nodes are the customer's identifiers (from the last build's `identity_graph`), edges say how two "
    "joined (`event:identify`, `event:alias`, `record:<table>` …), `refused` lists edges touching the customer the "
    "build did not apply, with the rule (an admin or audit key also sees the other end and the full reason). "
    "Needs `profile` (or `profile.identifiers`) in scope.",
    responses={200: {"description": "The graph"}, **_REPLAY_ERRORS},
    tags=["replay"],
)
def get_identity(identifier_type: _TYPE, identifier_value: _VALUE):  # noqa: ANN201 - Powertools reads return annotations
    from customer_context.serve import replay

    return _replay_read(replay.identity, identifier_type, identifier_value)


@app.get("/explorer", include_in_schema=False)
def get_explorer():  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.explorer import asset

    return _asset(*asset("index.html"))


@app.get("/explorer/<name>", include_in_schema=False)
def get_explorer_asset(name: str):  # noqa: ANN201 - Powertools reads return annotations as response models
    from customer_context.explorer import asset

    return _asset(*asset(unquote(name)))


def _asset(content_type: str, body: str) -> Response:
    return Response(status_code=200, content_type=content_type, body=body, headers={
        "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                   "connect-src 'self'; frame-ancestors 'none'"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) entry point."""
    refused = authenticate_consumer(app, event)
    return refused if refused is not None else app.resolve(event, context)
