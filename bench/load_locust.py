"""The locust user of ``bench/load.py``: SDK-shaped traffic to the collect API. Not imported by pytest.

Run only as ``python -m locust -f bench/load_locust.py ...`` by ``bench/load.py``, which passes
through the environment:

* ``LOAD_EVENTS``: a JSON-lines file of demo events (``customer_context_devtools.demo``), cycled through;
* ``LOAD_WRITE_KEY``, ``LOAD_RUN_ID`` (prefix of every messageId), ``LOAD_USER_RATE`` (requests
  per second of one user), ``LOAD_BATCH_SHARE`` (share of requests sent to ``/v1/batch``),
  ``LOAD_BATCH_EVENTS`` (events per batch: ``5-25`` or a fixed ``20``);
* ``LOAD_ACKED`` / ``LOAD_UNCERTAIN``: where the messageIds of acknowledged requests, and of
  requests whose answer never came or was an error, are written (a line per request: the time
  of the answer, then the messageIds).

Half the traffic (by default) is ``POST /v1/batch`` with 5-25 events, as the Segment and
RudderStack SDKs flush their queues; the rest is one event per call on ``POST /v1/<type>``.
Every event gets a new unique messageId. The target must be a loopback address.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import os
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment
from locust.exception import StopUser

RUN = os.environ.get("LOAD_RUN_ID", "load")
USER_RATE = float(os.environ.get("LOAD_USER_RATE", "2"))
BATCH_SHARE = float(os.environ.get("LOAD_BATCH_SHARE", "0.5"))
BATCH_EVENTS = tuple(int(n) for n in os.environ.get("LOAD_BATCH_EVENTS", "5-25").split("-"))  # "20" or "5-25"
AUTH = "Basic " + base64.b64encode(f"{os.environ.get('LOAD_WRITE_KEY', '')}:".encode()).decode()
LIBRARIES = ({"name": "analytics-python", "version": "2.3.4"}, {"name": "rudder-analytics-python", "version": "2.1.4"})

_pool: list[dict[str, Any]] = []
_cursor = itertools.count()
_ids = itertools.count()
_acked: Any = None
_uncertain: Any = None


def _loopback(url: str | None) -> bool:
    """Whether ``url`` names a loopback IP address (a host name is refused: it could resolve anywhere)."""
    try:
        return ipaddress.ip_address(urlsplit(url or "").hostname or "").is_loopback
    except ValueError:
        return False


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global _acked, _uncertain
    if not _loopback(environment.host):
        environment.process_exit_code = 2
        if environment.runner is not None:
            environment.runner.quit()
        return
    with open(os.environ["LOAD_EVENTS"]) as fh:
        _pool.extend(json.loads(line) for line in fh)
    _acked = open(os.environ["LOAD_ACKED"], "a")  # noqa: SIM115 - open for the whole run, closed at test_stop
    _uncertain = open(os.environ["LOAD_UNCERTAIN"], "a")  # noqa: SIM115


@events.test_stop.add_listener
def _stop(**_: Any) -> None:
    for fh in (_acked, _uncertain):
        if fh is not None:
            fh.close()


def _next_event() -> dict[str, Any]:
    event = json.loads(json.dumps(_pool[next(_cursor) % len(_pool)]))  # a fresh copy
    event["messageId"] = f"{RUN}-{next(_ids):08d}"
    return event


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CollectUser(FastHttpUser):
    """One SDK instance: paced to ``USER_RATE`` requests per second."""

    wait_time = constant_throughput(USER_RATE)
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        if not _loopback(self.host):
            raise StopUser()

    def _post(self, path: str, name: str, body: dict[str, Any], ids: list[str]) -> None:
        headers = {"authorization": AUTH, "content-type": "application/json"}
        with self.client.post(path, data=json.dumps(body), headers=headers, name=name,
                              catch_response=True) as response:
            ok = False
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            else:
                answer = response.json()
                if answer.get("accepted") != len(ids) or answer.get("rejected"):
                    response.failure(f"accepted {answer.get('accepted')} of {len(ids)}: {answer.get('rejected')}")
                else:
                    ok = True
            # one line per request: when it was answered, then its messageIds
            (_acked if ok else _uncertain).write(f"{time.time():.3f} {' '.join(ids)}\n")

    @task
    def send(self) -> None:
        library = random.choice(LIBRARIES)
        if random.random() < BATCH_SHARE:
            batch = [_next_event() for _ in range(random.randint(BATCH_EVENTS[0], BATCH_EVENTS[-1]))]
            sent_at = _now()
            for event in batch:
                event.setdefault("context", {})["library"] = library
            self._post("/v1/batch", "/v1/batch", {"batch": batch, "sentAt": sent_at}, [e["messageId"] for e in batch])
        else:
            event = _next_event()
            event.setdefault("context", {})["library"] = library
            event["sentAt"] = _now()
            self._post(f"/v1/{event['type']}", "/v1/<type>", event, [event["messageId"]])
