"""Athena over the deployed lakehouse: the same SQL as ``customer-context sql`` runs locally, asked in the account.

The Iceberg tables are in the stack's Glue database (named after the stack, dashes as underscores); queries run
in the stack's workgroup, which holds the results location. ``events_unique`` and ``rejected_events_unique``
(the deduplicated views of :mod:`customer_context.stores.sql`) become ``WITH`` clauses over the tables, so a
query reads the same both ways.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from customer_context.errors import ConfigError, InvalidRequest
from customer_context.stores.sql import DEDUPED_VIEWS, _mentions

DEFAULT_STACK = "customer-context"  # samconfig.toml's default stack name


@dataclass(frozen=True)
class AthenaTarget:
    """Where a query runs: the stack's workgroup and Glue database."""

    workgroup: str
    database: str
    catalog: str = "AwsDataCatalog"

    @classmethod
    def for_stack(cls, stack: str, workgroup: str | None = None, database: str | None = None,
                  catalog: str | None = None) -> AthenaTarget:
        """The workgroup and database template.yaml names after the stack, unless given."""
        return cls(workgroup or stack, database or stack.replace("-", "_"), catalog or "AwsDataCatalog")


def with_views(sql: str) -> str:
    """``sql`` with the deduplicated views it names defined in front of it (Athena has no such views)."""
    from customer_context.stores.tables import TABLES

    clauses = []
    for view, (table, key) in DEDUPED_VIEWS.items():
        if _mentions(sql, view):
            columns = ", ".join(f'"{f.name}"' for f in TABLES[table].schema.fields)
            clauses.append(f"{view} AS (SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY {key} "
                           f"ORDER BY received_at) AS _copy FROM {table}) WHERE _copy = 1)")
    if not clauses:
        return sql
    body = sql.lstrip()
    if body[:4].lower() == "with":  # the query's own WITH: ours go first in the same list
        return f"WITH {', '.join(clauses)}, {body[4:].lstrip()}"
    return f"WITH {', '.join(clauses)} {body}"


_NUMBERS = {"tinyint": int, "smallint": int, "integer": int, "bigint": int, "double": float, "float": float,
            "real": float, "decimal": Decimal}


def _value(text: str | None, kind: str) -> Any:
    if text is None:
        return None
    kind = kind.lower()
    if kind == "boolean":
        return text == "true"
    convert = _NUMBERS.get(kind.split("(")[0])
    return convert(text) if convert else text


def query(sql: str, target: AthenaTarget, client: Any = None, poll_seconds: float = 0.5,
          timeout_seconds: float = 600) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one query in Athena and wait for it; returns column names and rows (numbers and booleans typed).

    Raises:
        InvalidRequest: Athena failed, cancelled or refused the query (the reason is Athena's).
        ConfigError: No region or credentials (see :func:`customer_context.stores.aws.explain_aws_problem`).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from customer_context.stores import aws

    try:
        try:
            athena = client or aws.boto_client("athena")
        except ValueError as exc:  # an empty or malformed region: botocore builds no endpoint from it
            raise ConfigError(f"{aws.explain_aws_problem(exc)} (set AWS_DEFAULT_REGION to a region such as "
                              "eu-west-1)") from None
        started = athena.start_query_execution(
            QueryString=with_views(sql), WorkGroup=target.workgroup,
            QueryExecutionContext={"Database": target.database, "Catalog": target.catalog})
        execution_id = started["QueryExecutionId"]
        deadline = time.monotonic() + timeout_seconds
        while True:
            status = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                break
            if status["State"] in ("FAILED", "CANCELLED"):
                raise InvalidRequest(f"Athena {status['State'].lower()} the query "
                                        f"({execution_id}): {status.get('StateChangeReason', 'no reason given')}")
            if time.monotonic() > deadline:
                athena.stop_query_execution(QueryExecutionId=execution_id)
                raise InvalidRequest(f"the query ({execution_id}) ran over {timeout_seconds:.0f}s: stopped")
            time.sleep(poll_seconds)
        columns: list[str] = []
        kinds: list[str] = []
        rows: list[tuple[Any, ...]] = []
        token: str | None = None
        first = True
        while True:
            page = athena.get_query_results(QueryExecutionId=execution_id, MaxResults=1000,
                                            **({"NextToken": token} if token else {}))
            info = page["ResultSet"].get("ResultSetMetadata", {}).get("ColumnInfo", [])
            if not columns and info:
                columns, kinds = [c["Name"] for c in info], [c.get("Type", "varchar") for c in info]
            data = page["ResultSet"].get("Rows", [])
            if first and data and columns and [d.get("VarCharValue") for d in data[0]["Data"]] == columns:
                data = data[1:]  # a SELECT's first row repeats the column names
            first = False
            for row in data:
                cells = [d.get("VarCharValue") for d in row["Data"]]
                rows.append(tuple(_value(c, k) for c, k in zip(cells, kinds or ["varchar"] * len(cells),
                                                                  strict=False)))
            token = page.get("NextToken")
            if not token:
                return columns, rows
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise InvalidRequest(f"Athena: {error.get('Code', 'error')}: {error.get('Message', exc)} "
                                f"(workgroup {target.workgroup}, database {target.database})") from exc
    except BotoCoreError as exc:
        raise ConfigError(aws.explain_aws_problem(exc)) from exc
