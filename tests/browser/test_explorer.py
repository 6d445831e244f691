"""The profile explorer in Debian's Chromium, against the local stack: a customer found by any identifier, the
identity graph with a refused edge, the history diff, the serving audit of a fetch made here, a scoped key's
view, and no request leaving 127.0.0.1. Screenshots are kept under ``.customer-context/artifacts/explorer``
(git-ignored; the path is printed). Needs Chromium at /usr/bin/chromium (``make browser-deps``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from customer_context import wiring
from customer_context.serve.consumers import consumer_item, hash_key, new_key

from tests.browser.sdk_page import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITE_KEY = "wk_explorer"
ARTIFACTS = Path(os.environ.get("CUSTOMER_CONTEXT_ARTIFACTS", REPO / ".customer-context" / "artifacts")) / "explorer"


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Overrides the conftest's per-test reset: one stack serves the whole module."""
    yield


def _send(stack: Any, *events: dict[str, Any]) -> None:
    response = requests.post(f"{stack.url}/v1/batch", json={"batch": list(events)}, auth=(WRITE_KEY, ""), timeout=10)
    assert response.status_code == 200, response.text
    assert stack.wait_for_ingest(60)


def _order(user: str, order_id: str, revenue: float) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Order Completed",
            "properties": {"order_id": order_id, "revenue": revenue}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Ada on her phone, signed in with her email; bob signing in on her phone later (refused: one user id per
    profile); two builds, ada's second order between them; a scoped key that reads one trait."""
    from customer_context_devtools.local.stack import LocalStack

    if not CHROMIUM.is_file():
        pytest.fail(f"the browser tests need {CHROMIUM}: run `make browser-deps` (Debian's chromium)")
    with LocalStack(tmp_path_factory.mktemp("explorer-stack"), write_keys={WRITE_KEY: "web"},
                    batch_window=0.2) as stack:
        _send(stack, {"type": "identify", "userId": "ada", "anonymousId": "ada-phone",
                      "traits": {"email": "Ada@Example.com", "plan": "pro"}},
              {"type": "page", "anonymousId": "ada-phone", "name": "Pricing"},
              _order("ada", "A1", 30))
        _send(stack, {"type": "identify", "userId": "bob", "anonymousId": "ada-phone"})
        stack.build()
        _send(stack, _order("ada", "A2", 45))
        stack.build()
        _send(stack, {"type": "track", "userId": "ada", "event": "Viewed Help"})  # after the build: live
        scoped = new_key()
        wiring.context_store().put_consumer(hash_key(scoped), consumer_item("support", [], ["traits.orders_90d"]))
        agent = new_key()
        wiring.context_store().put_consumer(hash_key(agent), consumer_item("agent-under-test", ["*"], []))
        yield {"stack": stack, "scoped": scoped, "agent": agent}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Explorer:
    """One tab of the explorer, every request checked to stay on 127.0.0.1."""

    def __init__(self, browser: Any, url: str, name: str) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.name = name
        self.hosts: list[str] = []
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.context.route("**/*", self._only_loopback)
        self.page.goto(f"{url}/explorer")

    def _only_loopback(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        self.hosts.append(host)
        if host != "127.0.0.1":
            route.abort()
            return
        route.continue_()

    def use_key(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#key-form button[type=submit]")

    def find(self, id_type: str, value: str) -> str:
        self.page.fill("#id-type", id_type)
        self.page.fill("#id-value", value)
        self.page.click("#search button[type=submit]")
        # (selectors, not wait_for_function: the page's Content-Security-Policy forbids eval)
        self.page.wait_for_selector(f"#status.error, #status:text-matches('^showing .* by {id_type} ')", timeout=30_000)
        return str(self.page.text_content("#profile-id"))

    def shot(self, what: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")

    def close(self) -> None:
        assert set(self.hosts) == {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(set(self.hosts))}"
        assert not self.errors, self.errors
        self.context.close()


def test_any_identifier_reaches_the_same_profile_with_its_graph_and_history(world: dict[str, Any],
                                                                            browser: Any) -> None:
    stack = world["stack"]
    tab = Explorer(browser, stack.url, "operator")
    tab.use_key(stack.consumer_key)
    # the key stays in the tab's session storage, nowhere else
    assert tab.page.evaluate("Object.keys(localStorage).length") == 0
    assert tab.page.evaluate("sessionStorage.getItem('customer-context-explorer-key')") == stack.consumer_key
    by_email = tab.find("email", "ada@example.com")
    assert by_email.startswith("p_")
    assert tab.find("anonymous_id", "ada-phone") == by_email
    assert tab.find("user_id", "ada") == by_email
    # the identity graph: ada's three identifiers, and bob's sign-in on her phone refused with its rule
    nodes = set(tab.page.eval_on_selector_all("#graph g.node", "gs => gs.map(g => g.dataset.id)"))
    assert nodes == {"user_id:ada", "anonymous_id:ada-phone", "email:ada@example.com"}
    edges = tab.page.eval_on_selector_all("#graph g.edge", "gs => gs.map(g => g.dataset.source)")
    assert edges and all(e.startswith("event:") for e in edges)
    refused = tab.page.eval_on_selector_all("#graph g.refused", "gs => gs.map(g => [g.dataset.b, g.dataset.reason])")
    assert len(refused) == 1 and refused[0][0] == "user_id:bob" and "user_id limit" in refused[0][1], refused
    # traits with their descriptions; the event received after the build is marked live
    assert "Orders completed" in str(tab.page.text_content("#traits tr[data-field='traits.orders_90d']"))
    assert tab.page.locator("#timeline tr[data-source='live']").count() == 1
    assert tab.page.locator("#timeline tr[data-source='snapshot']").count() >= 2
    # the prompt text at a small budget says what it left out
    tab.page.fill("#budget", "120")
    tab.page.click("#prompt-form button")
    tab.page.wait_for_selector("#omitted:text-matches('left out: .*lines')")
    # the history: two versions, and the diff names the trait the second order changed
    assert tab.page.locator("#history tr[data-version]").count() == 2
    assert tab.page.locator("#history-plot svg[data-series='traits.orders_90d']").count() == 1
    tab.page.select_option("#diff-a", "1")
    tab.page.select_option("#diff-b", "2")
    tab.page.click("#diff-form button")
    tab.page.wait_for_selector("#diff tr[data-path='traits.orders_90d']")
    diffed = tab.page.eval_on_selector_all("#diff tr[data-path]", "rs => rs.map(r => r.dataset.path)")
    assert "traits.plan" not in diffed
    tab.shot("profile")
    tab.close()


def test_the_audit_lists_a_fetch_made_here_with_the_version_it_served(world: dict[str, Any], browser: Any) -> None:
    stack = world["stack"]
    answered = requests.get(f"{stack.url}/v1/context/user_id/ada", timeout=10,
                            headers={"authorization": f"Bearer {world['agent']}"})
    assert answered.status_code == 200
    # the audit reaches the lakehouse through the queue and ingest
    wiring.audit_log().wait_flushed()
    assert stack.wait_for_ingest(60)
    tab = Explorer(browser, stack.url, "audit")
    tab.use_key(stack.consumer_key)
    tab.find("user_id", "ada")
    row = tab.page.locator("#audit tr[data-via='fetch']", has_text="agent-under-test")
    assert row.count() == 1, tab.page.text_content("#audit")
    assert row.get_attribute("data-version") == "2"
    tab.shot("audit")
    tab.close()


def test_a_scoped_key_sees_only_its_fields(world: dict[str, Any], browser: Any) -> None:
    tab = Explorer(browser, world["stack"].url, "scoped")
    tab.use_key(world["scoped"])
    assert tab.find("user_id", "ada").startswith("p_")
    fields = tab.page.eval_on_selector_all("#traits tr[data-field]", "rs => rs.map(r => r.dataset.field)")
    assert fields == ["traits.orders_90d"]
    assert tab.page.locator("#scores tr[data-field]").count() == 0
    assert tab.page.locator("#timeline tr[data-source]").count() == 0
    assert tab.page.locator("#graph g.node").count() == 0
    assert "outside the scope" in str(tab.page.text_content("#refused"))
    assert "--audit" in str(tab.page.text_content("#audit"))
    changed = tab.page.eval_on_selector_all("#history tr[data-version]", "rs => rs.map(r => r.textContent)")
    assert changed and all("traits.plan" not in c and "profile.identifiers" not in c for c in changed)
    tab.shot("scoped")
    tab.close()


def test_hostile_values_are_shown_as_text_and_a_broken_link_is_said(world: dict[str, Any], browser: Any) -> None:
    """Identifiers, traits and event names written as markup render as text (no element, no script runs); a
    link whose identifier is not valid URL encoding says so instead of stopping the page's script."""
    stack = world["stack"]
    hostile = "<img src=x onerror=alert(1)>"
    _send(stack, {"type": "identify", "userId": hostile, "anonymousId": '"><svg onload=alert(2)>',
                  "traits": {"name": "<script>alert(3)</script>", "plan": hostile}},
          {"type": "track", "userId": hostile, "event": hostile, "properties": {"note": "<b>bold</b>"}})
    stack.build()
    tab = Explorer(browser, stack.url, "hostile")
    dialogs: list[str] = []
    tab.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.use_key(stack.consumer_key)
    assert tab.find("user_id", hostile).startswith("p_")
    tab.page.wait_for_selector("#graph g.node")
    assert tab.page.locator("#profile img, #profile script, #profile b, #profile svg[onload]").count() == 0
    assert hostile in str(tab.page.text_content("#timeline")) and hostile in str(tab.page.text_content("#graph"))
    assert not dialogs
    tab.close()
    broken = Explorer(browser, stack.url, "broken-link")
    broken.use_key(stack.consumer_key)
    broken.page.goto("about:blank")  # a fresh load (a change of the hash alone runs nothing)
    broken.page.goto(f"{stack.url}/explorer#user_id:%E0%A4%A")
    broken.page.wait_for_selector("#status.error")
    assert "not valid" in str(broken.page.text_content("#status"))
    broken.close()
