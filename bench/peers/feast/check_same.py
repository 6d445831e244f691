"""Are the peer's features the same as ours? Our build's traits next to ``features.sql``'s rows, per trait.

    .venv/bin/python bench/peers/feast/check_same.py [--size S] [--sample 2000]

Generates events at ``--size`` into a temporary lakehouse, runs our build into an in-memory store and
``features.sql`` (the SQL whose rows Feast materializes) over the same Parquet files, then compares,
for a sample of signed-up customers (the peer's key is their user id), each of the 17 traits.
Empty values (null, 0, false, []) count as equal; numbers to 1e-6. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # bench/, for assemble.generate

TRAITS = ("orders_90d", "revenue_90d", "lifetime_revenue", "average_order_value", "largest_order", "last_order_at",
          "first_seen_at", "last_seen_at", "plan", "name", "favourite_category", "categories_viewed_30d",
          "products_viewed_7d", "carts_abandoned_30d", "big_spender_orders", "uses_mobile_app",
          "days_since_last_order")
EMPTY: tuple[Any, ...] = (None, 0, False, [])


def _same(ours: Any, peer: Any) -> bool:
    if isinstance(peer, datetime):  # our documents show times as ISO-8601 UTC with milliseconds
        peer = peer.strftime("%Y-%m-%dT%H:%M:%S.") + f"{peer.microsecond // 1000:03d}Z"
    if ours in EMPTY and peer in EMPTY:
        return True
    if isinstance(ours, float) or isinstance(peer, float):
        return ours is not None and peer is not None and math.isclose(float(ours), float(peer), abs_tol=1e-6)
    return bool(ours == peer)


def compare(lake: Path, sample: int) -> dict[str, Any]:
    import duckdb
    import pyarrow.parquet as pq
    from assemble import data_files
    from customer_context.assemble.build import build_context
    from customer_context.config import Settings
    from customer_context.spec import load_spec
    from customer_context.stores.context_store import MemoryContextStore
    from customer_context.stores.iceberg import Lakehouse

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(lake)}))
    store = MemoryContextStore()
    build_context(lakehouse, store, load_spec())
    out = lake.parent / "features.parquet"
    files = "[" + ", ".join(f"'{f}'" for f in data_files(lake)) + "]"
    con = duckdb.connect()
    con.execute((HERE / "features.sql").read_text().replace("$files", files).replace("$features_path", f"'{out}'"))
    table = pq.read_table(out)
    rows = {r["customer_id"]: r for r in table.to_pylist() if r["customer_id"].startswith("u_")}
    equal = dict.fromkeys(TRAITS, 0)
    checked = 0
    for user_id in random.Random(1).sample(sorted(rows), min(sample, len(rows))):
        profile_id = store.resolve("user_id", user_id)
        snapshot = store.get_snapshot(profile_id) if profile_id else None
        if snapshot is None:
            continue
        traits = json.loads(snapshot["doc"])["traits"]
        checked += 1
        for name in TRAITS:
            equal[name] += _same(traits.get(name), rows[user_id][name])
    return {"customers_compared": checked, "peer_keys": table.num_rows, "equal": equal}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="S", choices=["S", "M"])
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args()
    from assemble import generate

    work = Path(tempfile.mkdtemp(prefix="cc-feast-same-"))
    try:
        generate(work / "lake", args.size)
        print(json.dumps(compare(work / "lake", args.sample), indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
