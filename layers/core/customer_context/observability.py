"""The only Logger, Tracer and Metrics instances of the package.

Powertools reads its settings (``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL``,
``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_TRACE_DISABLED`` …) from the environment when these
objects are created; creating them touches no AWS service.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="customer-context")
tracer = Tracer(service="customer-context")
metrics = Metrics(namespace="CustomerContext", service="customer-context")
