"""Every log record of a run, captured at DEBUG and formatted as the functions print them on AWS.

The suite runs with ``POWERTOOLS_LOG_LEVEL=WARNING`` while the template deploys ``INFO`` (and allows
``DEBUG``): a capture that kept that level would never see the records most likely to leak. So the
service's Powertools logger, the root logger and the capturing handler are all set to DEBUG for the
capture. Each record is rendered with the service logger's own formatter, so its ``extra`` fields
and exception tracebacks are searched too, not only the message.

Wire-level libraries (botocore, urllib3, moto, werkzeug …) print whole request bodies at DEBUG by
design; they stay at WARNING here, their level on Lambda, where the root logger is at WARNING and the
template's ``LogLevel`` sets only the service's logger. Powertools' own package logger is DEBUG only
with ``POWERTOOLS_DEBUG``, a developer switch, and stays at WARNING too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug", "moto", "aws_lambda_powertools")


@dataclass
class CapturedLogs:
    """What was logged: the records, and each one as the service's formatter prints it."""

    records: list[logging.LogRecord] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Every formatted record, one per line."""
        return "\n".join(self.lines)

    def messages(self, level: int) -> set[str]:
        """The messages the service's logger wrote at exactly ``level``."""
        return {r.getMessage() for r in self.records if r.levelno == level and r.name.startswith("customer-context")}


class _Collector(logging.Handler):
    def __init__(self, into: CapturedLogs) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.records.append(record)
        self.into.lines.append(self.format(record))


@contextmanager
def every_log_record() -> Iterator[CapturedLogs]:
    """Capture every record the service logs (DEBUG and up) while the block runs."""
    from customer_context.observability import logger as service_logger

    captured = CapturedLogs()
    handler = _Collector(captured)
    handler.setFormatter(service_logger.registered_formatter)
    root = logging.getLogger()
    service = logging.getLogger(service_logger.service)
    saved = {"": root.level, service.name: service.level}
    saved.update({name: logging.getLogger(name).level for name in WIRE_LOGGERS})
    root.setLevel(logging.DEBUG)
    service_logger.setLevel(logging.DEBUG)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        assert service.isEnabledFor(logging.DEBUG), "the service's logger must emit DEBUG during the capture"
        yield captured
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name or None).setLevel(level)
