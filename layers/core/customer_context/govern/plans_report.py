"""Tracking-plan violations counted from the lakehouse (the CLI's `plans report` and GET /v1/tracking-plans)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from customer_context.ports import JsonObject

if TYPE_CHECKING:
    from customer_context.stores.iceberg import Lakehouse  # queried through stores.sql

PLAN_REPORT_SQL = """
SELECT source_id, event, kind, action, count(*) AS violations FROM (
  SELECT source_id, coalesce(json_extract_string(raw, '$.event'), json_extract_string(raw, '$.type')) AS event,
         CASE WHEN reason LIKE '%is not in the plan' THEN 'unplanned_event'
              WHEN reason LIKE '%: identify: %' THEN 'invalid_traits' ELSE 'invalid_properties' END AS kind,
         'rejected' AS action
  FROM rejected_events_unique WHERE reason LIKE 'tracking plan %'
  UNION ALL
  SELECT source_id, coalesce(event, type) AS event, json_extract_string(v, '$.type') AS kind, 'flagged' AS action
  FROM (SELECT source_id, event, type, unnest(json_extract(context, '$.violationErrors[*]')) AS v
        FROM events_unique WHERE json_exists(context, '$.violationErrors'))
) GROUP BY ALL ORDER BY violations DESC, source_id, event
"""


def violations(lakehouse: Lakehouse) -> list[JsonObject]:
    """Rows of ``source_id, event, kind, action, violations``, most first."""
    from customer_context.stores.sql import query

    names = lakehouse.table_names()
    if "events" not in names:
        return []
    sql = PLAN_REPORT_SQL
    if "rejected_events" not in names:
        sql = sql.replace("FROM rejected_events_unique WHERE", "FROM (SELECT NULL source_id, NULL raw, NULL reason) "
                                                              "WHERE FALSE AND")
    columns, rows = query(lakehouse, sql)
    return [dict(zip(columns, r, strict=True)) for r in rows]
