"""The only Logger, Tracer and Metrics instances of the package.

Powertools reads its settings (``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL``,
``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_TRACE_DISABLED`` …) from the environment when these
objects are created; creating them touches no AWS service.

``tracer`` is created on first use: a Powertools Tracer loads the X-Ray SDK (~0.15-0.3 s of cold
start even when tracing is disabled), so the latency-critical fetch function does not import it
and relies on Lambda's active tracing for its invocation segments.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

    tracer: Tracer

# the service: the stack's name on AWS (template.yaml), so two stacks' metrics and dashboards never mix
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "customer-context"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="CustomerContext", service=SERVICE)
_tracer: Any = None


def __getattr__(name: str) -> Any:
    if name == "tracer":
        global _tracer
        if _tracer is None:
            from aws_lambda_powertools import Tracer

            _tracer = Tracer(service=SERVICE)
        return _tracer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
