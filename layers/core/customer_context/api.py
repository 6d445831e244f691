"""Shared glue for the HTTP functions: error mapping in one place, and reading raw bodies.

Only Powertools' event handler is imported here, never boto3 or the analytics stack.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from customer_context import strict_json
from customer_context.errors import CustomerContextError, InvalidRequest
from customer_context.observability import logger

if TYPE_CHECKING:
    from customer_context.serve.fetch import FetchResult


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON response: strict JSON (a non-finite number, which no stored value should hold, is written as null)."""
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=strict_json.dumps(body, separators=(",", ":")),
        headers=headers,
    )


def context_response(result: FetchResult) -> Response:
    """A fetched (or replayed) context as its response: 304 without a body, prompt text, or JSON."""
    if result.status == 304:
        return Response(status_code=304, body="", headers=result.headers)
    if result.is_text:
        return Response(status_code=200, content_type="text/plain; charset=utf-8", body=result.body,
                        headers=result.headers)
    return json_response(200, result.body, result.headers)  # type: ignore[arg-type]


def log_error(message: str, exc: CustomerContextError) -> None:
    """Log an error answered to a caller: a 5xx at ERROR with its reason (the server's side of things); a
    4xx at INFO by status and code only — its reason may quote what the caller sent (an identifier such
    as an email, a key, a parameter name) and the caller has it in the response anyway."""
    if exc.status >= 500:
        logger.error(message, extra={"status": exc.status, "code": exc.code, "reason": exc.message})
    else:
        logger.info(message, extra={"status": exc.status, "code": exc.code})


def _remember_scalar_parameters() -> None:
    """Powertools' request validation asks, for each query and header parameter of every request, whether
    the parameter's declared type is a scalar, walking the annotation each time (about a third of the fetch
    handler's own time). The answer is fixed once the route is declared: remember it per parameter. The
    same check decides, and every value is still validated as before."""
    from aws_lambda_powertools.event_handler.middlewares import openapi_validation

    check = openapi_validation.is_scalar_field
    if getattr(check, "remembered", False):
        return
    known: dict[int, tuple[Any, bool]] = {}  # id(parameter) → (parameter, answer): routes live as long as the app

    def is_scalar_field(field: Any) -> bool:
        hit = known.get(id(field))
        if hit is None or hit[0] is not field:
            hit = known[id(field)] = (field, check(field))
        return hit[1]

    is_scalar_field.remembered = True  # type: ignore[attr-defined]
    openapi_validation.is_scalar_field = is_scalar_field


def register_error_handlers(app: APIGatewayHttpResolver) -> None:
    """Map every error to a JSON body ``{"code", "message"[, "errors"]}`` with the right status.

    The ``code`` / ``message`` pair is what the RudderStack and Segment SDKs read from errors; 5xx
    and 429 make them retry, other 4xx make them give up.
    """
    _remember_scalar_parameters()

    @app.exception_handler(CustomerContextError)
    def _known(exc: CustomerContextError) -> Response:
        log_error("request failed", exc)
        return json_response(exc.status, exc.to_body())

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body", "reason": err.get("msg")}
            for err in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return json_response(400, {"code": "invalid_request", "message": message, "errors": errors})

    @app.exception_handler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # json.loads of a body nested thousands of levels deep (request validation parses it)
        return json_response(400, {"code": "invalid_request", "message": "body: JSON nested too deeply"})

    @app.not_found
    def _no_route(exc: NotFoundError) -> Response:
        # A Lambda function URL forwards any method and path (API Gateway only the declared routes); without
        # this the catch-all below would answer a request for no route with a 500
        event = app.current_event
        return json_response(404, {"code": "not_found",
                                   "message": f"no route {event.http_method} {event.path}"})

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error")
        return json_response(500, {"code": "internal_error", "message": "internal error; retry later"})


def docs_on_demand(app: APIGatewayHttpResolver, path: str) -> Callable[[dict[str, Any]], None]:
    """A function to call with each event before resolving it: it declares the Swagger UI route at ``path``
    the first time a request asks for it. Declaring it imports Powertools' OpenAPI models (~35 ms), which
    only the documentation needs, not the function's cold start."""
    declared: list[bool] = []

    def before(event: dict[str, Any]) -> None:
        if not declared and str(event.get("rawPath") or "").startswith(path):
            app.enable_swagger(path=path)
            declared.append(True)

    return before


# as plain data, read when the document is generated: Powertools' OpenAPI models take ~35 ms to import, which no
# request needs (a tenth of the fetch function's cold start); Powertools types the argument with those models
_SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Consumer key (`customer-context keys create`)"},
    "apiKey": {"type": "apiKey", "name": "x-api-key", "in": "header", "description": "Consumer key, as a header"},
}


def consumer_api(title: str, summary: str) -> APIGatewayHttpResolver:
    """A resolver for an API read with consumer keys: validation on, OpenAPI security schemes
    (bearer token or ``x-api-key``) declared, errors mapped."""
    app = APIGatewayHttpResolver(enable_validation=True)
    app.configure_openapi(
        title=title,
        version="1",
        summary=summary,
        security_schemes=cast(Any, _SECURITY_SCHEMES),
        security=[{"bearer": []}, {"apiKey": []}],
    )
    register_error_handlers(app)
    return app


def authenticate_consumer(app: APIGatewayHttpResolver, event: dict[str, Any]) -> dict[str, Any] | None:
    """Check the consumer key before anything else reads the request (validation included, so a
    caller without a key learns nothing about the API); keeps the consumer in ``app.context``.

    Returns:
        ``None`` when the caller may go on, else the API Gateway response refusing it.
    """
    path = event.get("rawPath") or ""
    if path.startswith(("/docs", "/explorer")):  # the explorer's page is static: it asks for a key itself
        return None
    from customer_context import wiring

    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        app.append_context(consumer=wiring.consumers().authenticate(headers))
    except CustomerContextError as exc:
        log_error("request refused", exc)
        return {"statusCode": exc.status, "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": json.dumps(exc.to_body(), separators=(",", ":")), "isBase64Encoded": False}
    return None


def raw_body(event: dict[str, Any]) -> bytes:
    """The request body as bytes, undoing API Gateway's base64 encoding.

    Raises:
        InvalidRequest: ``isBase64Encoded`` is set but the body is not base64.
    """
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            raise InvalidRequest("body: marked base64-encoded but is not base64") from None
    return body.encode("utf-8", errors="surrogateescape")


# --- routes answered without the resolver (its per-request routing, middleware chain and pydantic validation
# cost about as much as the request itself); each caller checks that both give the same responses ---

def route_of(app: APIGatewayHttpResolver, event: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, str]] | None:
    """The function ``app`` would route an HTTP API event to, with its raw path arguments, found as the resolver
    finds it (its own patterns, in its order, on the path without the stage); ``None`` for an event the
    resolver alone should answer: no route, or no plain method, stage and path."""
    context = event.get("requestContext")
    if not isinstance(context, dict) or app._strip_prefixes:
        return None
    http, stage, path = context.get("http"), context.get("stage"), event.get("rawPath")
    method = http.get("method") if isinstance(http, dict) else None
    if not (isinstance(method, str) and isinstance(stage, str) and isinstance(path, str)):
        return None
    if stage != "$default":
        path = path[len(stage) + 1:]
    method = method.upper()
    for route in (*app._static_routes, *app._dynamic_routes):
        if route.method == method and (match := route.rule.match(path)):
            return route.func, match.groupdict()
    return None


def plain_query(event: dict[str, Any], names: tuple[str, ...]) -> dict[str, str] | None:
    """The query parameters ``names`` of an HTTP API event, as the resolver's validation receives them, when
    the request is plain: string query values and headers, string cookies, no multi-value fields, none of
    ``names`` repeated (the resolver hands a repeated one over as a list). ``None`` otherwise: the resolver
    answers such a request."""
    from urllib.parse import parse_qs

    query = event.get("queryStringParameters") or {}
    raw = event.get("rawQueryString")
    headers = event.get("headers")
    cookies = event.get("cookies") or []
    if (not isinstance(query, dict) or not isinstance(headers, dict) or not isinstance(cookies, list)
            or event.get("multiValueQueryStringParameters") or event.get("multiValueHeaders")
            or (raw and not isinstance(raw, str))):
        return None
    for values in (query.values(), headers.values(), cookies):
        if not all(isinstance(v, str) for v in values):
            return None
    if raw:
        given = [pair.partition("=")[0] for pair in raw.split("&") if pair]
        if len(set(given)) != len(given) or any("%" in n or "+" in n for n in given):  # as the resolver parses it
            repeated = {n for n, v in parse_qs(raw, keep_blank_values=True).items() if len(v) > 1}
            if not repeated.isdisjoint(names):
                return None
    return {name: query[name] for name in names if name in query}


def handled_error(app: APIGatewayHttpResolver, exc: Exception) -> Response:
    """The response ``app``'s registered error handlers give ``exc`` (re-raised when none does)."""
    handler = app.exception_handler_manager.lookup_exception_handler(type(exc))
    if handler is None:
        raise exc
    return handler(exc)  # type: ignore[no-any-return]


def http_api_response(response: Response) -> dict[str, Any]:
    """The payload 2.0 response the resolver builds from ``response`` on a route without CORS, compression or
    cache-control settings (what Powertools' ``ResponseBuilder.build`` then does)."""
    body: Any = response.body
    if isinstance(body, bytes):
        response.base64_encoded, body = True, base64.b64encode(body).decode()
    headers = {k: v if isinstance(v, str) else ", ".join(v) for k, v in response.headers.items() if v is not None}
    return {"statusCode": response.status_code, "body": body, "isBase64Encoded": response.base64_encoded,
            "headers": headers, "cookies": [str(c) for c in response.cookies]}
