"""CORS as API Gateway answers it, from the template's own ``HttpApi`` ``CorsConfiguration``.

The local HTTP API reads the configuration template.yaml deploys (so the two cannot drift) and behaves as
API Gateway does with it: it answers preflights itself (an ``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``, whatever the route), and adds the configured headers to every response to
an allowed origin, replacing any CORS header a function set. The browser then enforces the lists, as it does on
AWS. The allowed origins are the template's ``CorsAllowOrigins`` parameter on AWS and the
``cors_allow_origins`` setting locally (both ``*`` by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from customer_context_devtools.local.template import resource_properties

ORIGINS_PARAMETER = "CorsAllowOrigins"


@dataclass(frozen=True)
class Cors:
    """One CORS configuration (API Gateway's ``CorsConfiguration`` fields, lower-cased lists)."""

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    @classmethod
    def from_template(cls, allow_origins: str) -> Cors:
        """The template's configuration, with the ``CorsAllowOrigins`` parameter set to ``allow_origins``
        (comma-separated, as CloudFormation splits a ``CommaDelimitedList``)."""
        return cls.from_configuration(resource_properties("HttpApi")["CorsConfiguration"],
                                      {ORIGINS_PARAMETER: allow_origins})

    @classmethod
    def from_configuration(cls, config: Mapping[str, Any], parameters: Mapping[str, str]) -> Cors:
        """A ``CorsConfiguration`` as read from the template (``!Ref`` of a parameter resolved from ``parameters``)."""

        def values(name: str) -> tuple[str, ...]:
            value = config.get(name, [])
            if isinstance(value, dict) and set(value) == {"Ref"}:
                value = parameters[value["Ref"]].split(",")
            return tuple(str(v).strip() for v in value)

        max_age = config.get("MaxAge")
        return cls(
            allow_origins=values("AllowOrigins"),
            allow_methods=tuple(m.upper() for m in values("AllowMethods")),
            allow_headers=tuple(h.lower() for h in values("AllowHeaders")),
            expose_headers=tuple(h.lower() for h in values("ExposeHeaders")),
            max_age=int(max_age) if max_age is not None else None,
            allow_credentials=bool(config.get("AllowCredentials", False)),
        )

    def allowed_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin`` (``None``: not allowed)."""
        if not origin:
            return None
        if "*" in self.allow_origins:
            return "*"
        return origin if origin in self.allow_origins else None

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        """An ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method`` (lower-case header names)."""
        return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers

    def preflight(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers of the 204 answering a preflight (none for an origin not allowed: the browser refuses)."""
        origin = self.allowed_origin(headers.get("origin"))
        if origin is None:
            return {}
        out = {"access-control-allow-origin": origin,
               "access-control-allow-methods": ",".join(self.allow_methods),
               "access-control-allow-headers": ",".join(self.allow_headers)}
        if self.max_age is not None:
            out["access-control-max-age"] = str(self.max_age)
        if self.allow_credentials:
            out["access-control-allow-credentials"] = "true"
        return out

    def response_headers(self, request_headers: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` of a response without the function's CORS headers, plus the configured ones for an
        allowed origin."""
        out = {k: v for k, v in headers.items() if not k.lower().startswith("access-control-")}
        origin = self.allowed_origin(request_headers.get("origin"))
        if origin is not None:
            out["access-control-allow-origin"] = origin
            if self.expose_headers:
                out["access-control-expose-headers"] = ",".join(self.expose_headers)
            if self.allow_credentials:
                out["access-control-allow-credentials"] = "true"
        return out
