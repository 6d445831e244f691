"""``make demo``: the main job end to end on the embedded local stack.

Starts the local stack, generates a synthetic dataset (customers browsing anonymously, signing
up, ordering, a few deliberately bad events), sends it through the HTTP API with the real
RudderStack Python SDK, waits for ingest, and prints what landed, checking that every event sent
is in ``events`` or ``rejected_events``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEMO_WRITE_KEY = "wk_demo_web"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _send_with_sdk(client: Any, event: dict[str, Any]) -> None:
    """One Segment-spec event → the matching RudderStack SDK call."""
    kind = event["type"]
    common = {
        "context": dict(event.get("context") or {}),
        "timestamp": datetime.fromisoformat(event["timestamp"]),
        "message_id": event["messageId"],
        "integrations": event.get("integrations"),
    }
    if kind == "alias":
        client.alias(event["previousId"], event["userId"], **common)
        return
    who = {"user_id": event.get("userId"), "anonymous_id": event.get("anonymousId")}
    if kind == "track":
        client.track(event=event["event"], properties=event.get("properties"), **who, **common)
    elif kind == "identify":
        client.identify(traits=event.get("traits"), **who, **common)
    elif kind in ("page", "screen"):
        getattr(client, kind)(category=event.get("category"), name=event.get("name"),
                              properties=event.get("properties"), **who, **common)
    elif kind == "group":
        client.group(group_id=event["groupId"], traits=event.get("traits"), **who, **common)
    else:
        raise ValueError(f"unknown event type {kind!r}")


def run_demo(data_dir: Path, customers: int = 3000, seed: int = 7, keep: bool = False) -> int:
    """Run the demo; returns the process exit code (0 when everything sent is accounted for)."""
    import requests
    from customer_context import wiring
    from customer_context.stores.sql import query
    from rudderstack.analytics.client import Client

    from customer_context_devtools.demo.generate import DemoConfig, generate_events
    from customer_context_devtools.demo.records import DemoRecords
    from customer_context_devtools.local.stack import LocalStack

    data_dir = Path(data_dir).resolve()
    if data_dir.exists() and not keep:
        shutil.rmtree(data_dir)
    started = time.monotonic()
    _say(f"▶ starting the local stack (data in {data_dir}) …")
    stack = LocalStack(data_dir, write_keys={DEMO_WRITE_KEY: "web"})
    stack.start()
    try:
        _say(f"  HTTP API at {stack.url}, moto (SQS, S3, DynamoDB) at {stack.moto_url}")
        _say(f"▶ sending a synthetic dataset for {customers:,} customers over 90 days "
             "with the RudderStack Python SDK (gzip, batches of up to 250) …")
        errors: list[str] = []
        client = Client(DEMO_WRITE_KEY, host=stack.url, gzip=True, upload_size=250, upload_interval=0.2,
                        max_queue_size=1_000_000, on_error=lambda exc, batch: errors.append(str(exc)))
        sent_by_type: Counter[str] = Counter()
        bad: list[dict[str, Any]] = []
        bad_kinds: Counter[str] = Counter()
        t0 = time.monotonic()
        n = 0
        records = DemoRecords(seed)
        for event in generate_events(DemoConfig(customers=customers, seed=seed)):
            if "_bad" in event:
                bad_kinds[event.pop("_bad")] += 1
                bad.append(event)
                continue
            records.observe(event)
            _send_with_sdk(client, event)
            sent_by_type[event["type"]] += 1
            n += 1
            if n % 10_000 == 0:
                _say(f"  queued {n:,} events in the SDK ({n / (time.monotonic() - t0):,.0f}/s)")
        _say(f"  {n:,} valid events handed to the SDK; flushing …")
        client.flush()
        client.shutdown()
        _say(f"  SDK flushed in {time.monotonic() - t0:.1f}s ({n / (time.monotonic() - t0):,.0f} events/s)"
             + (f"; SDK errors: {errors[:3]}" if errors else ""))

        # The SDK refuses malformed events client-side, so the bad ones go over raw HTTP, as a
        # buggy or hand-rolled client would send them.
        rejected_in_responses = 0
        for start in range(0, len(bad), 100):
            response = requests.post(f"{stack.url}/v1/batch", json={"batch": bad[start:start + 100]},
                                     auth=(DEMO_WRITE_KEY, ""), timeout=30)
            response.raise_for_status()
            rejected_in_responses += len(response.json()["rejected"])
        _say(f"  {len(bad)} deliberately invalid events posted raw over HTTP "
             f"({rejected_in_responses} rejected in the responses, with reasons)")

        _say("▶ waiting for ingest (SQS → ingest → Iceberg) …")
        deadline = time.monotonic() + 600
        last = -1
        while time.monotonic() < deadline:
            pending = stack.trigger.pending()
            if pending == 0 and stack.wait_for_ingest(timeout=2):
                break
            if pending != last:
                _say(f"  {pending} queue messages still to ingest")
                last = pending
            time.sleep(1)
        else:
            _say("✗ ingest did not finish within 10 minutes")
            return 1

        lakehouse = wiring.lakehouse()
        _say("\n▶ what landed in the lakehouse (events deduplicated by message_id):")
        _, rows = query(lakehouse, "select type, count(*) from events_unique group by 1 order by 2 desc")
        for kind, count in rows:
            _say(f"  {kind:<9} {count:>8,}")
        _, [(stored, unique)] = query(lakehouse, "select count(*), count(distinct message_id) from events")
        _, [(customers_seen, users)] = query(
            lakehouse, "select count(distinct anonymous_id), count(distinct user_id) from events_unique")
        _say(f"  {'total':<9} {unique:>8,}   ({stored:,} rows stored; {customers_seen:,} anonymous ids, "
             f"{users:,} user ids)")
        _, rejected = query(lakehouse, "select reason, count(*) from rejected_events_unique group by 1 order by 2 desc")
        rejected_total = sum(c for _, c in rejected)
        _say(f"\n▶ rejected_events: {rejected_total} (kinds generated: {dict(bad_kinds)})")
        for reason, count in rejected[:10]:
            _say(f"  {count:>5} × {reason}")
        _, [(revenue, orders)] = query(
            lakehouse,
            "select round(sum(cast(json_extract(properties, '$.revenue') as double)), 2), count(*) "
            "from events_unique where event = 'Order Completed'")
        _say(f"\n▶ orders: {orders:,} worth ${revenue:,.2f}")

        expected = n + len(bad)
        accounted = unique + rejected_total
        ok = accounted == expected and unique == n and rejected_total == len(bad)
        _say(f"\n{'✓' if ok else '✗'} accounting: sent {expected:,} = {unique:,} in events + "
             f"{rejected_total:,} in rejected_events"
             + ("" if ok else f" — MISMATCH ({accounted:,} accounted)"))
        if stack.dlq_depth():
            _say(f"✗ {stack.dlq_depth()} messages in the dead-letter queue")
            ok = False

        built, email, first = _assemble(stack, records)
        ok = built and ok
        if email:
            ok = _serve(stack, email) and ok
            ok = _build_again(stack, first) and ok
        _say(f"\n{'✓' if ok else '✗'} demo finished in {time.monotonic() - started:.0f}s. Explore it:")
        _say(f"  customer-context sql \"select event, count(*) from events_unique group by 1\" --data-dir {data_dir}")
        _say(f"  customer-context sql \"select * from identity_graph where profile_id = '<id>'\" --data-dir {data_dir}")
        return 0 if ok else 1
    finally:
        stack.stop()


def _assemble(stack: Any, records: Any) -> tuple[bool, str | None, dict[str, Any]]:
    """Drop the record files, build, and show one customer's context.

    Returns:
        Whether all went as expected, the email of the customer shown, and the build's report.
    """
    from customer_context import wiring

    _say("\n▶ dropping record files into s3://…/imports/ (S3 notification → load_records → Iceberg upsert)")
    for table, name, data in (("crm_contacts", "crm_export.csv", records.crm_csv()),
                              ("support_tickets", "tickets.jsonl", records.tickets_jsonl())):
        for report in stack.load_records(table, name, data)["files"]:
            _say(f"  {table:<16} {report['loaded']:>6,} rows upserted, {report['rejected']} rejected"
                 + (f": {'; '.join(report['reasons'][:2])}" if report["rejected"] else ""))

    _say("\n▶ building context (build_context, invoked as the EventBridge schedule does)")
    report = stack.build()
    for stage, seconds in report["timings_s"].items():
        _say(f"  {stage:<10} {seconds:>6.2f}s")
    _say(f"  {report['profiles']:,} profiles from {report['events']:,} events; {report['identifiers']:,} identifiers; "
         f"{report['rejected_edges']:,} identity edges refused by merge protection")
    scores = report["scores"]
    if "bgnbd" in scores:
        bg = scores["bgnbd"]
        _say(f"  BG/NBD fitted on {scores['buyers']:,} buyers: r={bg['r']:.3f} α={bg['alpha']:.3f} "
             f"a={bg['a']:.3f} b={bg['b']:.3f}")
    else:
        _say(f"  scores: {scores.get('skipped')}")
    _say(f"  {report['items_written']:,} DynamoDB items written ({report['changed_profiles']:,} snapshots + aliases)")

    store = wiring.context_store()
    open_tickets = [t for t in records.tickets if t["status"] == "open"]
    profile = store.resolve("email", open_tickets[0]["requester_email"].strip().lower()) if open_tickets else None
    if profile is None:
        _say("✗ no customer with an open ticket resolved")
        return False, None, report
    snapshot = store.get_snapshot(profile)
    if snapshot is None:
        _say(f"✗ no snapshot for {profile}")
        return False, None, report
    doc = json.loads(snapshot["doc"])
    doc["recent_events"] = doc.get("recent_events", [])[:3]
    _say(f"\n▶ one customer's assembled context (email {open_tickets[0]['requester_email'].strip().lower()}, "
         "recent events cut to 3 here):")
    _say(json.dumps(doc, indent=2, default=str))

    again = stack.build()
    plan = again.get("plan", {})
    nothing_new = plan.get("mode") == "nothing_new"
    _say(f"\n▶ rebuilding with no new data: {again['items_written']} DynamoDB items written "
         f"(only changed snapshots land)")
    unchanged = [name for name, change in plan.get("tables", {}).items() if change["change"] == "nothing"]
    _say(f"  plan: {'incremental build: nothing new since the last build' if nothing_new else 'full build'} "
         f"({'; '.join(plan.get('reasons', []))}; unchanged: {', '.join(unchanged) or 'none'}), "
         f"{sum(again['timings_s'].values()):.2f}s instead of {sum(report['timings_s'].values()):.2f}s")
    return (bool(report["profiles"]) and again["items_written"] == 0 and nothing_new,
            open_tickets[0]["requester_email"].strip().lower(), report)


def _build_again(stack: Any, first: dict[str, Any]) -> bool:
    """More events (20 new visitors, besides the chat event just sent), then a build: an incremental one that
    reads only the new events and computes only the profiles they touch."""
    import requests

    visits = [{"type": "page", "anonymousId": f"demo-visitor-{i}", "name": "Pricing",
               "properties": {"path": "/pricing"}} for i in range(20)]
    requests.post(f"{stack.url}/v1/batch", json={"batch": visits}, auth=(DEMO_WRITE_KEY, ""),
                  timeout=30).raise_for_status()
    stack.wait_for_ingest(timeout=60)
    report = stack.build()
    plan = report.get("plan", {})
    took, before = sum(report["timings_s"].values()), sum(first["timings_s"].values())
    _say(f"\n▶ building again after 21 more events: {plan.get('mode')} build ({'; '.join(plan.get('reasons', []))})")
    if plan.get("mode") == "incremental":
        _say(f"  read {plan['tables']['events'].get('added_rows', 0):,} new events and the earlier events of the "
             f"{plan.get('touched_profiles', 0):,} profiles they touch (of {report['profiles']:,}); "
             f"{report['changed_profiles']:,} snapshots changed, {report['items_written']:,} DynamoDB items written; "
             f"{took:.2f}s instead of {before:.2f}s")
        return report["changed_profiles"] >= 21
    # the new events' hour is past the first build's: time moved, which a full build recomputes
    _say(f"  {took:.2f}s ({before:.2f}s the first build)")
    return "clock" in " ".join(plan.get("reasons", []))


def _serve(stack: Any, email: str) -> bool:
    """Serve that customer as an agent would; True when each answer is what it should be."""
    import requests

    auth = {"authorization": f"Bearer {stack.consumer_key}"}
    base = f"{stack.url}/v1/context/email/{email}"
    _say(f"\n▶ serving (GET {stack.url}/v1/context/email/{email}, consumer key from {stack.data_dir}/consumer.key)")
    answer = requests.get(base, params={"fields": "traits.orders_90d,traits.lifetime_revenue,scores.churn_risk,"
                                                  "traits.open_tickets"}, headers=auth, timeout=10)
    _say("  JSON, field by field (?fields=traits.orders_90d,traits.lifetime_revenue,scores.churn_risk,…):")
    _say("  " + json.dumps(answer.json(), default=str))
    text = requests.get(base, params={"format": "text", "max_tokens": "400"}, headers=auth, timeout=10)
    _say(f"\n  prompt text under a 400-token budget (~{text.headers.get('x-context-tokens')} tokens estimated):")
    for line in text.text.splitlines():
        _say(f"    {line}")
    call = requests.post(f"{stack.url}/mcp", headers=auth, timeout=10, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_customer_context", "arguments": {
            "identifier_type": "email", "identifier_value": email, "fields": ["scores.churn_risk"],
            "format": "json"}}}).json()
    _say("\n  MCP tools/call get_customer_context(fields=[scores.churn_risk]) →")
    _say("    " + call["result"]["content"][0]["text"][:300])
    event: dict[str, Any] = {"event": "Support Chat Opened", "properties": {"topic": "refund"}}
    doc = requests.get(base, params={"fields": "profile.identifiers.user_id,profile.identifiers.anonymous_id"},
                       headers=auth, timeout=10).json()["context"]["profile"]["identifiers"]
    event["userId"] = (doc.get("user_id") or [None])[0]
    event["anonymousId"] = (doc.get("anonymous_id") or [None])[0]
    sent = time.monotonic()
    requests.post(f"{stack.url}/v1/track", json={k: v for k, v in event.items() if v is not None},
                  auth=(next(iter(stack.write_keys)), ""), timeout=10).raise_for_status()
    recent = requests.get(base, params={"sections": "recent_events"}, headers=auth, timeout=10).json()
    first = recent["context"]["recent_events"][0]
    seen = time.monotonic() - sent
    ok = first.get("event") == "Support Chat Opened" and first.get("source") == "live"
    _say(f"\n{'✓' if ok else '✗'} an event sent {seen:.2f}s ago shows in recent_events before any build: "
         f"{json.dumps(first)}  (sources: {recent['sources'].get('recent_events')})")
    link = f"explorer#email:{quote(email, safe='')}"
    _say(f"\n▶ see this customer as the agent does (identity graph, history, audit): {stack.url}/{link}")
    _say(f"  (key in {stack.data_dir}/consumer.key; once the demo has stopped: customer-context serve --data-dir "
         f"{stack.data_dir}, then http://127.0.0.1:8080/{link})")
    return ok and answer.status_code == 200 and text.status_code == 200 and not call["result"]["isError"]


if __name__ == "__main__":
    sys.exit(run_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".customer-context/demo")))
