-- The per-customer feature rows Feast materializes, computed by DuckDB from the same events Parquet
-- our build reads. Feast has no aggregation step of its own in `materialize` (it copies the latest
-- precomputed row per entity into the online store) and no identity stitching, so this is the SQL a
-- data team writes in front of it. The customer key is the user id, else the device's anonymous id:
-- one person's devices before sign-in are separate "customers" here (our build stitches them).
--
-- $files: the events Parquet files. $features_path: the output. Windows are relative to the newest
-- event rounded down to the hour, as our build's clock (snapshot.clock_resolution: 1h).
COPY (
  WITH ev AS (
    SELECT coalesce(user_id, anonymous_id) AS customer_id, type, event, timestamp,
           CASE WHEN type = 'track' AND event = 'Order Completed'
                THEN TRY_CAST(json_extract_string(properties, '$.revenue') AS DOUBLE) END AS revenue,
           CASE WHEN type = 'track' AND event = 'Product Viewed'
                THEN json_extract_string(properties, '$.category') END AS category,
           CASE WHEN type = 'identify' THEN json_extract_string(traits, '$.plan') END AS plan,
           CASE WHEN type = 'identify' THEN json_extract_string(traits, '$.name') END AS name
    FROM read_parquet($files)
    WHERE coalesce(user_id, anonymous_id) IS NOT NULL
  ),
  clock AS (SELECT date_trunc('hour', max(timestamp)) AS as_of FROM ev),
  favourite AS (  -- most frequent category viewed at least twice in 90 days; ties → alphabetical
    SELECT customer_id, arg_min(category, (-n, category)) AS favourite_category FROM (
      SELECT customer_id, category, count(*) AS n FROM ev, clock
      WHERE type = 'track' AND event = 'Product Viewed' AND category IS NOT NULL
        AND timestamp >= as_of - INTERVAL 90 DAY
      GROUP BY ALL HAVING count(*) >= 2
    ) GROUP BY customer_id
  ),
  agg AS (
    SELECT customer_id, any_value(as_of) AS event_timestamp,
      count(*) FILTER (WHERE event = 'Order Completed' AND timestamp >= as_of - INTERVAL 90 DAY) AS orders_90d,
      round(sum(revenue) FILTER (WHERE timestamp >= as_of - INTERVAL 90 DAY), 4) AS revenue_90d,
      round(sum(revenue), 4) AS lifetime_revenue,
      round(avg(revenue), 4) AS average_order_value,
      round(max(revenue), 4) AS largest_order,
      max(timestamp) FILTER (WHERE event = 'Order Completed' AND type = 'track') AS last_order_at,
      min(timestamp) AS first_seen_at,
      max(timestamp) AS last_seen_at,
      arg_max(plan, timestamp) FILTER (WHERE plan IS NOT NULL) AS plan,
      arg_max(name, timestamp) FILTER (WHERE name IS NOT NULL) AS name,
      coalesce(list_slice(list_sort(list_distinct(list(category) FILTER (
        WHERE category IS NOT NULL AND timestamp >= as_of - INTERVAL 30 DAY))), 1, 5), []) AS categories_viewed_30d,
      count(*) FILTER (WHERE type = 'track' AND event = 'Product Viewed'
                       AND timestamp >= as_of - INTERVAL 7 DAY) AS products_viewed_7d,
      count(*) FILTER (WHERE type = 'track' AND event = 'Checkout Started'
                       AND timestamp >= as_of - INTERVAL 30 DAY) AS carts_abandoned_30d,
      count(*) FILTER (WHERE revenue > 150) AS big_spender_orders,
      count(*) FILTER (WHERE type = 'screen') > 0 AS uses_mobile_app,
      date_diff('day', max(timestamp) FILTER (WHERE event = 'Order Completed' AND type = 'track'),
                any_value(as_of)) AS days_since_last_order
    FROM ev, clock GROUP BY customer_id
  )
  SELECT agg.*, favourite.favourite_category FROM agg LEFT JOIN favourite USING (customer_id)
) TO $features_path (FORMAT parquet);
