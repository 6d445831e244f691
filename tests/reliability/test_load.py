"""Load on the collect API: bench/load.py held for 60 s on loopback, with every acknowledged event accounted for;
and concurrent requests, which the local runtime must serve one per container at a time (a function has one,
collect up to four: Lambda's concurrent instances), none lost."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context_devtools.local import lambda_runtime

from tests.helpers.accounting import assert_accounted

ROOT = Path(__file__).resolve().parents[2]


def _bench_load() -> Any:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_invocations_of_one_function_run_one_at_a_time_and_functions_overlap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given handlers that note how many invocations of their function run at once
    running = {"one": 0, "other": 0}
    most = {"one": 0, "other": 0}
    seen_by_other: list[int] = []
    guard = threading.Lock()
    first_inside, other_done = threading.Event(), threading.Event()

    def handler_of(name: str, container: int = 0) -> Any:
        def handler(event: dict[str, Any], context: Any) -> bool | None:
            with guard:
                running[name] += 1
                most[name] = max(most[name], running[name])
                if name == "other":
                    seen_by_other.append(running["one"])
            result = None
            if name == "other":
                other_done.set()
            elif event.get("first"):
                first_inside.set()
                result = other_done.wait(5)  # the other function runs while this one is inside
            else:
                time.sleep(0.01)
            with guard:
                running[name] -= 1
            return result
        return handler

    monkeypatch.setattr(lambda_runtime, "load_handler", handler_of)
    results: list[Any] = []

    def call(name: str, event: dict[str, Any]) -> None:
        results.append(lambda_runtime.invoke(name, event))

    # When one invocation is inside the function, seven more of it and one of another function arrive
    first = threading.Thread(target=call, args=("one", {"first": True}))
    first.start()
    assert first_inside.wait(5)
    threads = [threading.Thread(target=call, args=("one", {})) for _ in range(7)]
    threads.append(threading.Thread(target=call, args=("other", {})))
    for thread in threads:
        thread.start()
    for thread in [first, *threads]:
        thread.join(10)
    # Then the function never ran twice at once, and the other function ran beside it
    assert len(results) == 9
    assert most == {"one": 1, "other": 1}
    assert True in results and seen_by_other == [1]


@pytest.mark.e2e
def test_concurrent_collect_requests_each_get_their_own_answer(local_stack: Any) -> None:
    # Given eight SDKs sending at once, each its own batch size (the answer says how many were accepted)
    answers: list[tuple[int, int, int]] = []
    sent: list[str] = []
    lock = threading.Lock()

    def sdk(n: int) -> None:
        session = requests.Session()
        session.auth = (local_stack.write_key, "")
        for k in range(5):
            ids = [f"conc-{n}-{k}-{i}" for i in range(n + 1)]
            batch = [{"type": "track", "event": "Product Viewed", "userId": f"u{n}", "messageId": m,
                      "properties": {"sku": f"sku-{n}-{k}"}} for m in ids]
            response = session.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, timeout=60)
            accepted = response.json().get("accepted") if response.status_code == 200 else None
            with lock:
                answers.append((response.status_code, accepted, len(ids)))
                sent.extend(ids)

    threads = [threading.Thread(target=sdk, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Then every request was answered 200 for its own events, and exactly those landed
    assert len(answers) == 40
    assert all(status == 200 and accepted == size for status, accepted, size in answers), answers
    assert local_stack.wait_for_ingest(60)
    assert_accounted(wiring.lakehouse(), sent, rejected_count=0)


def test_the_load_driver_refuses_targets_that_are_not_loopback(tmp_path: Path) -> None:
    load = _bench_load()
    for url in ("http://127.0.0.1:8080", "http://127.5.6.7:1", "http://[::1]:8080"):
        load.assert_loopback(url)
    for url in ("http://10.0.0.1:80", "http://192.0.2.1:9", "http://localhost:8080", "https://example.com"):
        with pytest.raises(ValueError, match="loopback"):
            load.assert_loopback(url)
    # the driver refuses before it starts locust (192.0.2.0/24 is TEST-NET-1: nothing would answer anyway)
    with pytest.raises(ValueError, match="loopback"):
        load.drive("http://192.0.2.1:9", 1.0, 1.0, tmp_path, tmp_path / "none.jsonl", "refused")
    assert list(tmp_path.iterdir()) == []


def test_the_locustfile_itself_sends_nothing_to_a_host_name(tmp_path: Path) -> None:
    # Given the locustfile started directly (not through bench/load.py) at a host name; a name could
    # resolve anywhere, so it is refused like any address that is not loopback (this one is: no risk)
    (tmp_path / "events.jsonl").write_text('{"type": "track", "event": "x", "userId": "u"}\n')
    env = {"LOAD_EVENTS": str(tmp_path / "events.jsonl"), "LOAD_ACKED": str(tmp_path / "acked"),
           "LOAD_UNCERTAIN": str(tmp_path / "uncertain")}
    done = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "load_locust.py"), "--headless",
                           "--host", "http://localhost:9", "-u", "2", "-r", "2", "-t", "3s", "--only-summary",
                           "--json-file", str(tmp_path / "stats")],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False)
    # Then it stops with exit code 2 before a single request
    assert done.returncode == 2, done.stderr[-2000:]
    assert sum(entry["num_requests"] for entry in json.loads((tmp_path / "stats.json").read_text())) == 0
    assert not (tmp_path / "acked").exists() and not (tmp_path / "uncertain").exists()


def test_the_ramp_doubles_until_a_step_fails_then_bisects() -> None:
    load = _bench_load()
    inf = float("inf")
    assert load.next_rate(4.0, inf, 0.2) == 8.0
    assert load.next_rate(8.0, 16.0, 0.2) == 12.0
    assert load.next_rate(12.0, 16.0, 0.2) == 14.0
    assert load.next_rate(14.0, 16.0, 0.2) is None  # within 20 %
    assert load.next_rate(0.0, 4.0, 0.2) == 2.0  # the first step failed: halve
    assert load.next_rate(0.0, 1.0, 0.2) is None


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_load_at_the_sustainable_rate_loses_no_event(tmp_path: Path) -> None:
    # Given bench/load.py: a short ramp to the highest rate without errors, then 60 s at it (locust, on 127.0.0.1)
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--max-steps", "3", "--step-seconds", "5",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=270, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    held = result["hold"]
    # Then the hold ran its 60 s at the chosen rate without a single failed request
    assert result["rate_held_requests_per_s"] == held["target_requests_per_s"] > 0
    assert held["duration_s"] >= 60
    assert held["requests"] > 0 and held["errors"] == 0, held["failure_examples"]
    assert held["uncertain_events"] == 0
    # And after ingest drained, every acknowledged event is in events exactly once, nothing else, none lost
    assert held["drained"] and held["dlq_messages"] == 0
    assert held["accounting"] == "ok"
    assert held["acknowledged_events"] == held["accounted_events"] > held["requests"]
    assert held["events_lost"] == 0 and held["unexpected_events"] == 0 and held["rejected_events"] == 0


def test_a_function_with_four_containers_serves_four_invocations_at_once_and_loses_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a function allowed four containers, whose first four invocations each wait inside the handler until
    # all four are in it (they can only meet if the four run in parallel; the barrier breaks after 10 s if not)
    monkeypatch.setitem(lambda_runtime.CONCURRENCY, "wide", 4)
    monkeypatch.setattr(lambda_runtime, "_containers_of", {})
    together = threading.Barrier(4, timeout=10)
    running: dict[int, int] = {}
    most = {"all": 0, "one_container": 0}
    guard = threading.Lock()

    def handler_of(name: str, container: int = 0) -> Any:
        def handler(event: dict[str, Any], context: Any) -> tuple[int, int]:
            with guard:
                running[container] = running.get(container, 0) + 1
                most["all"] = max(most["all"], sum(running.values()))
                most["one_container"] = max(most["one_container"], running[container])
            if event["n"] < 4:
                together.wait()
            else:
                time.sleep(0.005)
            with guard:
                running[container] -= 1
            return event["n"], container
        return handler

    monkeypatch.setattr(lambda_runtime, "load_handler", handler_of)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            results.append(lambda_runtime.invoke("wide", {"n": n}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    # When sixteen invocations arrive at once
    threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then the first four met inside the function, no more than four ever ran, never two in one container,
    # and every invocation got its own answer
    assert errors == []
    assert most == {"all": 4, "one_container": 1}
    assert sorted(n for n, _ in results) == list(range(16))
    assert {container for _, container in results} == {0, 1, 2, 3}


def test_two_containers_handling_requests_at_once_each_read_their_own_request() -> None:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from customer_context_devtools.local.apigw import http_api_event

    # Given two resolvers (two containers' imports) whose route waits until both are inside it, then reads the
    # request it is handling (Powertools keeps it on a class all resolvers share, which the runtime makes per thread)
    lambda_runtime.per_thread_requests()
    both_inside = threading.Barrier(2, timeout=10)
    seen: dict[str, str] = {}

    def container(name: str) -> APIGatewayHttpResolver:
        app = APIGatewayHttpResolver()

        @app.post("/v1/<kind>")
        def route(kind: str) -> dict[str, str]:
            both_inside.wait()
            seen[name] = app.current_event.raw_event["rawPath"]
            return {}

        return app

    apps = {"a": container("a"), "b": container("b")}

    def call(name: str) -> None:
        event = http_api_event(method="POST", path=f"/v1/{name}", query="", headers=[], body=b"{}",
                               source_ip="127.0.0.1", route_key="POST /v1/{kind}", path_parameters={"kind": name},
                               domain="127.0.0.1")
        apps[name].resolve(event, lambda_runtime.LocalLambdaContext(function_name=name))

    # When both handle a request at once
    threads = [threading.Thread(target=call, args=(name,)) for name in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then each read its own request
    assert seen == {"a": "/v1/a", "b": "/v1/b"}
