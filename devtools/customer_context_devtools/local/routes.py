"""The HTTP API's routes, as the template declares them: method, path template, function.

A test checks this table against ``template.yaml`` so the local stack and AWS route alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from customer_context.collect.openapi import ENDPOINTS as COLLECT_ENDPOINTS
from customer_context.collect.openapi import SEGMENT_SETTINGS_PATH, SOURCE_CONFIG_PATH


@dataclass(frozen=True)
class Route:
    """One HTTP API route."""

    method: str
    path: str
    function: str

    @property
    def route_key(self) -> str:
        """API Gateway's ``routeKey``."""
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters when ``method`` and ``path`` match this route, else ``None``."""
        if method != self.method:
            return None
        pattern = "^" + re.sub(r"\\\{([a-zA-Z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


ROUTES: tuple[Route, ...] = (
    *(Route("POST", path, "collect") for path in COLLECT_ENDPOINTS),
    Route("GET", SOURCE_CONFIG_PATH, "collect"),
    Route("GET", SEGMENT_SETTINGS_PATH, "collect"),
    Route("GET", "/docs/collect", "collect"),
    Route("GET", "/v1/context/{identifier_type}/{identifier_value}", "fetch_context"),
    Route("POST", "/v1/context:batch", "fetch_context"),
    Route("GET", "/v1/tools", "fetch_context"),
    Route("POST", "/mcp", "fetch_context"),
    Route("GET", "/mcp", "fetch_context"),
    Route("GET", "/docs/context", "fetch_context"),
    Route("POST", "/v1/context/{identifier_type}/{identifier_value}/queries/{name}", "query_context"),
    *(Route("GET", f"/v1/context/{{identifier_type}}/{{identifier_value}}/{what}", "query_context")
      for what in ("history", "replay", "audit", "identity")),
    Route("GET", "/explorer", "query_context"),
    Route("GET", "/explorer/{name}", "query_context"),
    Route("POST", "/v1/regulations", "regulate"),
    Route("GET", "/v1/regulations/{regulation_id}", "regulate"),
    Route("GET", "/v1/tracking-plans", "regulate"),
)


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving a request, with its path parameters."""
    for route in ROUTES:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None
