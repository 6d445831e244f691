"""The only Logger, Tracer and Metrics instances of the package.

Powertools reads its settings (``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL``,
``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_TRACE_DISABLED`` …) from the environment when these
objects are created; creating them touches no AWS service.

``tracer`` is created on first use: a Powertools Tracer loads the X-Ray SDK (~0.15-0.3 s of cold
start even when tracing is disabled), so the latency-critical fetch function does not import it
and relies on Lambda's active tracing for its invocation segments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

    tracer: Tracer

logger = Logger(service="customer-context")
metrics = Metrics(namespace="CustomerContext", service="customer-context")
_tracer: Any = None


def __getattr__(name: str) -> Any:
    if name == "tracer":
        global _tracer
        if _tracer is None:
            from aws_lambda_powertools import Tracer

            _tracer = Tracer(service="customer-context")
        return _tracer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
