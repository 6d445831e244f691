"""Record drops for the demo: a CRM export (CSV) and help-desk tickets (JSON Lines), derived from
the generated events so they describe the same customers."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import datetime, timedelta
from typing import Any

STAGES = ("lead", "customer", "customer", "customer", "vip", "at-risk")
MANAGERS = ("Priya Shah", "Tom Becker", "Lucia Romero", None, None)
BODIES = {
    "Cannot log in": "I reset my password twice and still cannot log in from the app. Can you help?",
    "Where is my order?": "My order {order} has not arrived yet and the tracking page has not moved in days.",
    "Refund request": "The item from order {order} arrived damaged. I would like a refund, not a replacement.",
    "Change my plan": "Please move me to a different plan from next month; the current one is too expensive.",
}


class DemoRecords:
    """Collects what the records need while the events stream past, then renders the files."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.emails: dict[str, str] = {}
        self.first_seen: dict[str, datetime] = {}
        self.tickets: list[dict[str, Any]] = []

    def observe(self, event: dict[str, Any]) -> None:
        """Look at one generated event."""
        user = event.get("userId")
        if not user:
            return
        traits = event.get("traits") or {}
        if event.get("type") == "identify" and isinstance(traits.get("email"), str) and traits["email"].strip():
            self.emails.setdefault(user, traits["email"].strip())
            self.first_seen.setdefault(user, datetime.fromisoformat(event["timestamp"]))
        props = event.get("properties") or {}
        if event.get("event") == "Support Ticket Opened" and user in self.emails:
            created = datetime.fromisoformat(event["timestamp"])
            subject = str(props.get("subject") or "Question")
            body = BODIES.get(subject, f"{subject}: please look into order {{order}} for me.").format(
                order=props.get("order_id"))
            self.tickets.append({
                "ticket_id": props.get("ticket_id") or f"T-{len(self.tickets):06d}",
                "requester_email": self.emails[user].upper() if self.rng.random() < 0.2 else self.emails[user],
                "channel": props.get("channel") or "email",
                "status": "open" if self.rng.random() < 0.35 else "solved",
                "subject": subject,
                "body": body + " " + "Thanks in advance. " * self.rng.randint(0, 3),
                "created_at": created.isoformat(),
                "updated_at": (created + timedelta(hours=self.rng.randint(1, 72))).isoformat(),
            })

    def crm_csv(self) -> bytes:
        """The CRM export: most identified users, plus two malformed rows."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["contact_id", "email", "full_name", "lifecycle_stage",
                                                 "account_manager", "updated_at"])
        writer.writeheader()
        for n, (user, email) in enumerate(sorted(self.emails.items())):
            if self.rng.random() < 0.2:
                continue  # not every user is in the CRM
            name = email.split("@")[0].replace(".", " ").title()
            writer.writerow({
                "contact_id": f"C-{n:06d}", "email": f"  {email.upper()} " if n % 7 == 0 else email,
                "full_name": name, "lifecycle_stage": self.rng.choice(STAGES),
                "account_manager": self.rng.choice(MANAGERS) or "",
                "updated_at": (self.first_seen[user] + timedelta(days=self.rng.randint(0, 20))).isoformat(),
            })
        writer.writerow({"contact_id": "", "email": "nobody@example.com", "full_name": "No Id",
                         "lifecycle_stage": "lead", "account_manager": "", "updated_at": "2026-01-01T00:00:00Z"})
        writer.writerow({"contact_id": "C-BAD", "email": "bad@example.com", "full_name": "Bad Date",
                         "lifecycle_stage": "lead", "account_manager": "", "updated_at": "last week"})
        return out.getvalue().encode()

    def tickets_jsonl(self) -> bytes:
        """The help-desk export."""
        return "\n".join(json.dumps(t) for t in self.tickets).encode() + b"\n"
