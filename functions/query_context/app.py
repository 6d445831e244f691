"""query_context: named, parameterised queries over one customer's lakehouse rows (API Gateway → Lambda).

Glue only: authenticate the consumer key, resolve the identifier to its profile, call
``customer_context.serve.named_queries.run_named_query``. duckdb, pyarrow and pyiceberg are loaded
on the first query (this function runs in the analytics image), not at import.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import strict_json
from customer_context.api import authenticate_consumer, consumer_api, json_response, raw_body
from customer_context.config import get_settings
from customer_context.errors import Forbidden, InvalidRequest, NotFound
from customer_context.observability import logger, metrics
from customer_context.stores import factory

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
    service = factory.context_service()
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
    result = run_named_query(factory.lakehouse(), service.spec, name, profile_id, params, budget,
                             snapshot_identifiers(snapshot), generation=service.store.deletion_generation())
    factory.audit_log().record(consumer=consumer.name, via=f"query:{name}",
                               identifier=service.identifier(unquote(identifier_type), unquote(identifier_value)),
                               profile_id=profile_id,
                               fields=[f"param:{p}" for p in sorted(params)] if isinstance(params, dict) else [],
                               status=200)
    logger.info("named query", extra={"query": name, "consumer": consumer.name, "rows": result["row_count"],
                                      "cached": result["cached"], "elapsed_ms": result["elapsed_ms"]})
    return json_response(200, result)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) entry point."""
    refused = authenticate_consumer(app, event)
    return refused if refused is not None else app.resolve(event, context)
