"""The real browser SDKs, unchanged, in Debian's Chromium, against the local stack from another origin.

RudderStack's JavaScript SDK v3 and Segment's Analytics.js 2.0, installed from npm at pinned versions
(package-lock.json here), bundled by esbuild from the README's own snippets (and a few variants of their
options), served from a second loopback origin: CORS is the browser's own, nothing is stubbed or routed
(Playwright's request routing would answer preflights itself, so none is used; the one failure on purpose
comes from a forwarding proxy). Every event must land in ``events`` with its fields, and nothing may leave
127.0.0.1. Needs Chromium at /usr/bin/chromium and ``npm ci`` here: ``make test`` does both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from customer_context import wiring
from customer_context.collect.sdk_settings import rudderstack_source_config, segment_settings
from customer_context.stores.sql import query
from customer_context_devtools.local.template import resource_properties

from tests.browser.sdk_page import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ESBUILD,
    Forwarder,
    build_pages,
    configured,
    readme_snippet,
    serve_folder,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITE_KEY = "wk_web"
SOURCE = "web"
PINNED = json.loads((Path(__file__).with_name("package.json")).read_text())["devDependencies"]
# what each SDK says it is in context.library: the pinned versions prove the events came from them
LIBRARY = {"rudderstack": ("RudderLabs JavaScript SDK", PINNED["@rudderstack/analytics-js"]),
           "segment": ("analytics.js", f"npm:next-{PINNED['@segment/analytics-next']}")}
EXPECTED_TYPES = ["alias", "group", "identify", "page", "track", "track"]

# What each page does once its SDK is ready, as a site does: the anonymous page view and action before sign-up,
# the alias of the visitor to their new user id, identify, a purchase and the account. Both SDKs share these
# signatures. (Segment's SDK fills in the current user id when it sends, so each call is sent before the next.)
CALLS = """async ({user, account}) => {
  const sdk = window.sdk;
  await Promise.race([new Promise((resolve) => sdk.ready(resolve)), new Promise((_, reject) => setTimeout(
    () => reject(new Error('the SDK was not ready after 30 s')), 30000))]);
  await sdk.page('Docs', 'Pricing', {plan: 'pro'});
  await sdk.track('Viewed Pricing', {tier: 'pro'});
  await sdk.alias(user);
  await sdk.identify(user, {email: 'ada@example.com', plan: 'pro'});
  await sdk.track('Order Completed', {revenue: 42.5, currency: 'USD'});
  await sdk.group(account, {name: 'Acme'});
  return sdk.getAnonymousId ? sdk.getAnonymousId() : (await sdk.user()).anonymousId();
}"""


@dataclass
class Variant:
    """One page: which SDK, its snippet, and what to expect of it."""

    sdk: str
    snippet: str
    api: str  # the base URL the snippet sends to
    beacon: bool = False
    expect_events: bool = True
    copies: int = 6  # rows expected in events (a retry of what landed adds one)


@dataclass
class Run:
    """What one page did: the requests the browser sent and what landed."""

    name: str
    variant: Variant
    page_url: str
    user: str
    started: datetime
    ended: datetime = field(default_factory=lambda: datetime.now(UTC))
    anonymous_id: str = ""
    requests: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)  # method, url, headers, body
    beacons: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)  # as the proxy saw them
    failed: list[tuple[str, str]] = field(default_factory=list)  # url, failure
    console: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # events_unique rows of its anonymous id
    copies: int = 0  # rows in events (duplicates included)

    def row(self, kind: str, event: str | None = None) -> dict[str, Any]:
        """The landed event of that type (and name)."""
        found = [r for r in self.rows if r["type"] == kind and (event is None or r["event"] == event)]
        assert len(found) == 1, (kind, event, self.rows)
        return found[0]


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Overrides the conftest's per-test reset: one stack serves the whole module."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from customer_context_devtools.local.stack import LocalStack

    if not CHROMIUM.is_file() or not ESBUILD.is_file():
        pytest.fail(f"the browser tests need {CHROMIUM} and tests/browser/node_modules: run `make test` "
                    "(it installs Debian's chromium and runs `npm ci` in tests/browser)")
    with LocalStack(tmp_path_factory.mktemp("browser-stack"), write_keys={WRITE_KEY: SOURCE},
                    batch_window=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def proxies(stack: Any) -> Iterator[dict[str, Forwarder]]:
    """Proxies in front of the stack: one failing once per SDK, and one that records the beacons (sent as the page
    goes away, which Playwright does not report)."""
    made = {**{sdk: Forwarder(stack.url, fail_first_post=True) for sdk in LIBRARY}, "beacon": Forwarder(stack.url)}
    yield made
    for proxy in made.values():
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture(scope="module")
def foreign_api(stack: Any) -> Iterator[str]:
    """A second front of the same handlers whose CORS allows another origin only (as `CorsAllowOrigins` would)."""
    import threading

    from customer_context_devtools.local.cors import Cors
    from customer_context_devtools.local.http_server import LocalHttpApi

    api = LocalHttpApi(cors=Cors.from_template("https://www.example.com"))
    threading.Thread(target=api.serve_forever, daemon=True).start()
    yield api.url
    api.shutdown()
    api.server_close()


def _variants(api: str, proxies: dict[str, Forwarder], foreign: str) -> dict[str, Variant]:
    rudderstack, segment = readme_snippet("rudderstack"), readme_snippet("segment")
    inline_source = json.dumps(rudderstack_source_config(WRITE_KEY, SOURCE))
    inline_settings = json.dumps(segment_settings(WRITE_KEY, f"{urlsplit(api).netloc}/v1", "http"))

    def rs(options: str, url: str = api) -> str:
        return (f"import {{ RudderAnalytics }} from '@rudderstack/analytics-js/bundled';\n"
                f"export const rudderanalytics = new RudderAnalytics();\n"
                f"rudderanalytics.load('{WRITE_KEY}', '{url}', {options});\n")

    beacon = proxies["beacon"].url

    return {
        # the README's snippets as they are: settings from this API, one request per call
        "rs-readme": Variant("rudderstack", configured(rudderstack, api, WRITE_KEY), api),
        "sg-readme": Variant("segment", configured(segment, api, WRITE_KEY), api),
        # inline configuration instead of the settings endpoints, batching on
        "rs-batching": Variant("rudderstack", rs(
            f"{{getSourceConfig: () => ({inline_source}), queueOptions: {{batch: {{enabled: true, maxItems: 6, "
            f"flushInterval: 200}}}}}}"), api),
        "sg-batching": Variant("segment", (
            "import { AnalyticsBrowser } from '@segment/analytics-next';\n"
            f"export const analytics = AnalyticsBrowser.load({{writeKey: '{WRITE_KEY}', cdnSettings: "
            f"{inline_settings}}}, {{integrations: {{'Segment.io': {{deliveryStrategy: {{strategy: 'batching', "
            "config: {size: 6, timeout: 200}}}}});\n"), api),
        # RudderStack's beacon queue: flushed when the page goes away
        "rs-beacon": Variant("rudderstack", rs(f"{{configUrl: '{beacon}/sourceConfig', useBeacon: true}}", beacon),
                             beacon, beacon=True),
        # the README's snippets through a proxy that fails their first request after it landed
        "rs-retry": Variant("rudderstack", configured(rudderstack, proxies["rudderstack"].url, WRITE_KEY),
                            proxies["rudderstack"].url, copies=7),
        "sg-retry": Variant("segment", configured(segment, proxies["segment"].url, WRITE_KEY),
                            proxies["segment"].url, copies=7),
        # refusals the SDKs must report: a key the API does not know, a page origin the API does not allow
        "rs-unknown-key": Variant("rudderstack", configured(rudderstack, api, "wk_unknown"), api,
                                  expect_events=False),
        "sg-unknown-key": Variant("segment", configured(segment, api, "wk_unknown"), api, expect_events=False),
        "rs-foreign-origin": Variant("rudderstack", configured(rudderstack, foreign, WRITE_KEY), foreign,
                                     expect_events=False),
    }


class Runs:
    """Runs each page once, on first use, in its own browser context (its own storage and preflight cache)."""

    def __init__(self, browser: Any, site: str, variants: dict[str, Variant], stack: Any, beacon_proxy: Any) -> None:
        self.browser, self.site, self.variants, self.stack = browser, site, variants, stack
        self.beacon_proxy = beacon_proxy
        self.done: dict[str, Run] = {}

    def __getitem__(self, name: str) -> Run:
        if name not in self.done:
            self.done[name] = self._run(name)
        return self.done[name]

    def all(self) -> list[Run]:
        return [self[name] for name in self.variants]

    def _run(self, name: str) -> Run:
        variant = self.variants[name]
        run = Run(name, variant, f"{self.site}/{name}/index.html", user=f"{name}-user",
                  started=datetime.now(UTC))
        requests: list[Any] = []
        context = self.browser.new_context()
        try:
            context.on("request", lambda request: requests.append(request))
            context.on("requestfailed", lambda r: run.failed.append((r.url, r.failure or "")))
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("console", lambda message: run.console.append(message.text))
            page.goto(run.page_url)
            if variant.expect_events:
                run.anonymous_id = page.evaluate(CALLS, {"user": run.user, "account": f"{name}-acct"})
                if variant.beacon:
                    page.goto("about:blank")  # the page goes away: the beacon queue flushes
                self._wait_for_landing(run)
            else:
                self._wait_for_refusal(page, run)
            run.ended = datetime.now(UTC)
            run.requests = [(r.method, r.url, r.all_headers(), r.post_data or "") for r in requests]
            if variant.beacon:
                run.beacons = list(self.beacon_proxy.seen)
        finally:
            context.close()
        return run

    def _wait_for_landing(self, run: Run, timeout: float = 90.0) -> None:
        """Until the page's events are in ``events`` (or the time is up; the test then says what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            self.stack.wait_for_ingest(30)
            lakehouse = wiring.lakehouse()
            if "events" in lakehouse.table_names():
                aid = run.anonymous_id.replace("'", "''")
                columns, rows = query(lakehouse, f"select * from events_unique where anonymous_id = '{aid}'")
                run.rows = [dict(zip(columns, r, strict=True)) for r in rows]
                run.copies = query(lakehouse, f"select count(*) from events where anonymous_id = '{aid}'")[1][0][0]
            if run.copies >= run.variant.copies or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    @staticmethod
    def _wait_for_refusal(page: Any, run: Run) -> None:
        """Until the SDK has given up: its settings request answered 401 or blocked by CORS."""
        page.wait_for_function("() => window.sdk !== undefined")
        deadline = time.monotonic() + 30
        while not any("settings" in url or "sourceConfig" in url for url, _ in run.failed) and not any(
                "Invalid write key" in text or "source config" in text.lower() for text in run.console):
            assert time.monotonic() < deadline, f"the SDK neither failed nor logged: {run.console}"
            page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def runs(stack: Any, proxies: dict[str, Forwarder], foreign_api: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    from playwright.sync_api import sync_playwright

    variants = _variants(stack.url, proxies, foreign_api)
    root = tmp_path_factory.mktemp("site")
    build_pages(root, {name: (v.sdk, v.snippet) for name, v in variants.items()})
    server, site = serve_folder(Path(root))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield Runs(browser, site, variants, stack, proxies["beacon"])
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------- landing

def _sent(run: Run) -> dict[str, dict[str, Any]]:
    """The events the page sent, by messageId (a retry's copy counts once), from the request bodies."""
    bodies = [body for method, _, _, body in run.requests if method == "POST" and body]
    bodies += [body.decode() for method, _, _, body in run.beacons if method == "POST"]
    sent: dict[str, dict[str, Any]] = {}
    for body in bodies:
        data = json.loads(body)
        for event in data.get("batch", [data]):
            sent.setdefault(event["messageId"], event)
    return sent


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _check_landed(run: Run) -> None:
    """The six calls landed once each, as the SDK sent them, with times that agree."""
    sdk = run.variant.sdk
    assert sorted(r["type"] for r in run.rows) == EXPECTED_TYPES, (run.rows, run.console)
    # each row holds what the SDK sent (a blank id is absent)
    sent = _sent(run)
    assert {r["message_id"] for r in run.rows} == set(sent)
    for row in run.rows:
        event = sent[row["message_id"]]
        assert row["type"] == event["type"]
        assert row["user_id"] == (event.get("userId") or None) and row["anonymous_id"] == event["anonymousId"]
        assert row["event"] == event.get("event") and row["previous_id"] == event.get("previousId")
        assert json.loads(row["properties"] or "null") == event.get("properties")
        traits = event.get("traits") or event.get("context", {}).get("traits") if row["type"] in (
            "identify", "group") else event.get("traits")
        assert json.loads(row["traits"] or "null") == traits
        assert row["original_timestamp"] == _when(event.get("originalTimestamp") or event["timestamp"])
    # and means what the page did: before sign-up, no user id (RudderStack sends "userId": "")
    for row in (run.row("page"), run.row("track", "Viewed Pricing")):
        assert row["user_id"] is None and row["anonymous_id"] == run.anonymous_id
    page = run.row("page")
    assert (page["name"], page["category"], page["page_title"]) == ("Pricing", "Docs", "Pricing")
    assert (page["page_url"], page["page_path"]) == (run.page_url, urlsplit(run.page_url).path)
    assert json.loads(page["properties"])["plan"] == "pro"
    assert json.loads(run.row("track", "Viewed Pricing")["properties"])["tier"] == "pro"
    alias = run.row("alias")
    assert (alias["user_id"], alias["previous_id"]) == (run.user, run.anonymous_id)
    identify = run.row("identify")
    assert identify["user_id"] == run.user and json.loads(identify["traits"])["email"] == "ada@example.com"
    order = run.row("track", "Order Completed")
    assert order["user_id"] == run.user
    assert json.loads(order["properties"]) == {"revenue": 42.5, "currency": "USD"}
    group = run.row("group")
    assert (group["user_id"], group["group_id"]) == (run.user, f"{run.name}-acct")
    assert json.loads(group["traits"])["name"] == "Acme"
    slack = timedelta(seconds=1)  # the browser's clock is this machine's; its times are in milliseconds
    for row in run.rows:
        assert row["source_id"] == SOURCE and row["ip"] == "127.0.0.1"
        assert (row["library_name"], row["library_version"]) == LIBRARY[sdk]
        assert run.started - slack <= row["original_timestamp"] <= row["sent_at"] <= row["received_at"] + slack
        assert row["received_at"] <= run.ended + slack
        # timestamp = receivedAt − (sentAt − originalTimestamp), to the millisecond
        expected = row["received_at"] - (row["sent_at"] - row["original_timestamp"])
        assert abs(row["timestamp"] - expected) <= timedelta(milliseconds=2)


def _posts(run: Run) -> list[str]:
    """The paths (and queries) the page posted to."""
    return [urlsplit(url).path + (f"?{urlsplit(url).query}" if urlsplit(url).query else "")
            for method, url, _, _ in run.requests if method == "POST"]


def test_rudderstack_readme_snippet_sends_each_call_to_its_path(runs: Runs) -> None:
    run = runs["rs-readme"]
    _check_landed(run)
    assert run.copies == 6
    assert sorted(_posts(run)) == ["/v1/alias", "/v1/group", "/v1/identify", "/v1/page", "/v1/track", "/v1/track"]
    assert any(urlsplit(url).path == "/sourceConfig" for _, url, _, _ in run.requests)


def test_segment_readme_snippet_sends_to_its_short_paths(runs: Runs) -> None:
    run = runs["sg-readme"]
    _check_landed(run)
    assert run.copies == 6
    assert sorted(_posts(run)) == ["/v1/a", "/v1/g", "/v1/i", "/v1/p", "/v1/t", "/v1/t"]
    assert any(urlsplit(url).path == f"/v1/projects/{WRITE_KEY}/settings" for _, url, _, _ in run.requests)


@pytest.mark.parametrize(("name", "path"), [("rs-batching", "/v1/batch"), ("sg-batching", "/v1/b")])
def test_inline_configuration_and_batching(runs: Runs, name: str, path: str) -> None:
    run = runs[name]
    _check_landed(run)
    posts = _posts(run)
    assert posts and set(posts) == {path} and len(posts) < 6  # batched
    assert not any("sourceConfig" in url or "/settings" in url for _, url, _, _ in run.requests)


def test_rudderstack_beacon_flushed_as_the_page_goes_away(runs: Runs) -> None:
    run = runs["rs-beacon"]
    _check_landed(run)
    # (what the page posted, as the proxy in front of the API received it)
    assert not _posts(run)  # no XHR
    beacons = [(path, headers) for method, path, headers, _ in run.beacons if method == "POST"]
    assert beacons and {path for path, _ in beacons} == {f"/beacon/v1/batch?writeKey={WRITE_KEY}"}
    assert all(headers["content-type"].startswith("text/plain") and "authorization" not in headers
               for _, headers in beacons)


@pytest.mark.parametrize(("name", "retry_header"), [("rs-retry", "rsa-retry-attempt"), ("sg-retry", "x-retry-count")])
def test_a_retried_request_lands_once(runs: Runs, proxies: dict[str, Forwarder], name: str,
                                      retry_header: str) -> None:
    # Given a proxy that answered the first request 503 after it had landed
    run = runs[name]
    assert len(proxies[run.variant.sdk].failed) == 1
    # Then the SDK sent it again, saying so, and both copies landed with one messageId
    assert any(retry_header in headers for method, _, headers, _ in run.requests if method == "POST")
    assert run.copies == 7
    # and reading by message_id (events_unique) yields each call once, with its fields
    _check_landed(run)


def test_an_unknown_write_key_is_reported_by_the_sdks(runs: Runs) -> None:
    for name in ("rs-unknown-key", "sg-unknown-key"):
        run = runs[name]
        assert any("Invalid write key" in text for text in run.console), (name, run.console)
        assert not [m for m, _, _, _ in run.requests if m == "POST"], name


def test_a_page_origin_the_api_does_not_allow_is_refused_by_the_browser(runs: Runs) -> None:
    # Given an API whose CORS allows https://www.example.com only: the browser refuses its answers (CORS error)
    run = runs["rs-foreign-origin"]
    assert any("sourceConfig" in url for url, _ in run.failed), run.failed
    assert not [m for m, _, _, _ in run.requests if m == "POST"]


# ---------------------------------------------------------------------------------------------------- network

# Headers the browser sets itself (forbidden to page scripts, or added by the network stack) and the
# CORS-safelisted ones: neither needs the API's permission.
_BROWSER_SET = {"accept-encoding", "accept-language", "connection", "content-length", "cookie", "host", "origin",
                "referer", "user-agent", "priority"}
_SAFELISTED = {"accept", "accept-language", "content-language"}
_SAFE_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _needs_permission(name: str, value: str) -> bool:
    """Whether a request header is one CORS makes the API allow (Fetch standard's safelist)."""
    if name in _BROWSER_SET or name.startswith(("sec-", "proxy-", "access-control-")) or name in _SAFELISTED:
        return False
    return not (name == "content-type" and value.split(";")[0].strip().lower() in _SAFE_CONTENT_TYPES)


def test_template_cors_allows_every_header_and_method_the_browsers_sent(runs: Runs) -> None:
    # Given every request the SDKs' pages sent to an API
    config = resource_properties("HttpApi")["CorsConfiguration"]
    allowed_headers = {h.lower() for h in config["AllowHeaders"]}
    allowed_methods = {m.upper() for m in config["AllowMethods"]}
    apis = {urlsplit(run.variant.api).netloc for run in runs.all()}
    sent: dict[str, set[str]] = {}
    methods: set[str] = set()
    for run in runs.all():
        beacons = [(method, run.variant.api + path, headers, "") for method, path, headers, _ in run.beacons]
        for method, url, headers, _ in run.requests + beacons:
            if urlsplit(url).netloc in apis:
                methods.add(method)
                for name, value in headers.items():
                    if _needs_permission(name, value):
                        sent.setdefault(name, set()).add(run.name)
    # (the runs sent what the SDKs send, retries included)
    assert {"authorization", "content-type", "anonymousid", "sentat", "rsa-retry-attempt", "x-retry-count"} <= set(
        sent), sent
    # Then template.yaml's CorsConfiguration allows each of them, and each method
    assert not set(sent) - allowed_headers, {h: sent[h] for h in set(sent) - allowed_headers}
    assert methods <= allowed_methods, methods - allowed_methods


def test_nothing_left_loopback(runs: Runs) -> None:
    hosts = {urlsplit(url).hostname for run in runs.all() for _, url, _, _ in run.requests}
    hosts |= {urlsplit(url).hostname for run in runs.all() for url, _ in run.failed}
    assert hosts <= {"127.0.0.1"}, hosts
