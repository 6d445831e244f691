"""Feast definitions of the same per-customer features as our context.yaml's event traits.

One Entity keyed by the customer id, one FeatureView over a FileSource of the feature rows that
``features.sql`` computes with DuckDB from the events Parquet (Feast materializes precomputed
rows; it does not aggregate events). The Parquet location comes from ``FEAST_PEER_FEATURES``
(peer.py sets it). Three traits of our spec are left out: crm_stage, account_manager and
open_tickets read record tables the benchmark's generated data does not have.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float64, Int64, String, UnixTimestamp

FEATURES_PATH = os.environ.get("FEAST_PEER_FEATURES", str(Path(__file__).parent / "data" / "customer_features.parquet"))

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="user id, else anonymous id (Feast does not stitch identities)",
)

customer_features_source = FileSource(
    name="customer_features_source",
    path=FEATURES_PATH,
    timestamp_field="event_timestamp",
)

# name → Feast type, in context.yaml's order (the same names, so `fields=traits.<name>` and
# `customer_traits:<name>` ask for the same thing)
FEATURES = {
    "orders_90d": Int64,
    "revenue_90d": Float64,
    "lifetime_revenue": Float64,
    "average_order_value": Float64,
    "largest_order": Float64,
    "last_order_at": UnixTimestamp,
    "first_seen_at": UnixTimestamp,
    "last_seen_at": UnixTimestamp,
    "plan": String,
    "name": String,
    "favourite_category": String,
    "categories_viewed_30d": Array(String),
    "products_viewed_7d": Int64,
    "carts_abandoned_30d": Int64,
    "big_spender_orders": Int64,
    "uses_mobile_app": Bool,
    "days_since_last_order": Int64,
}

customer_traits = FeatureView(
    name="customer_traits",
    entities=[customer],
    ttl=timedelta(days=3650),
    schema=[Field(name=name, dtype=dtype) for name, dtype in FEATURES.items()],
    source=customer_features_source,
    online=True,
    description="The event traits of context.yaml, one row per customer id",
)
