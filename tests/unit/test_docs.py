"""The README and docs/ stay true: every setting, CLI command, template parameter and Make target they must
mention is there, every link between them resolves, and the README stays a short newcomer's page."""

from __future__ import annotations

import re

import pytest
from customer_context.config import ENV_PREFIX, Settings
from customer_context_devtools.cli import build_parser

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
# the README and the reference it links to (docs/*.md)
DOCS = "\n".join([README, *(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))])


def test_every_setting_is_documented() -> None:
    missing = [ENV_PREFIX + name.upper() for name in Settings.model_fields if ENV_PREFIX + name.upper() not in DOCS]
    assert not missing, f"the docs lack settings: {missing}"


def test_every_cli_command_is_documented() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [c for c in commands if f"customer-context {c}" not in DOCS]
    assert not missing, f"the docs lack commands: {missing}"


def test_the_two_commands_and_deploy_are_documented() -> None:
    for text in ("make demo", "make test", "sam build", "sam deploy --guided"):
        assert text in README, text
    assert "BENCH_TABLE" not in DOCS, "the benchmark table placeholder was never filled"


def test_every_template_parameter_is_documented() -> None:
    template = (REPO / "template.yaml").read_text()
    block = template.split("\nParameters:\n", 1)[1].split("\nConditions:\n", 1)[0]
    params = re.findall(r"^  (\w+):$", block, flags=re.MULTILINE)
    missing = [p for p in params if f"`{p}`" not in DOCS]
    assert not missing, f"the docs lack template parameters: {missing}"


def test_the_readme_is_short_and_links_every_reference_page() -> None:
    assert len(README.encode()) < 15_000, "the README is a newcomer's page: move reference material to docs/"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)[)#]", README))
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set(), f"docs/ pages the README does not link: {sorted(pages - linked)}"


def test_every_relative_link_resolves() -> None:
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\((?!https?:|mailto:|#)([^)\s#]+)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"


@pytest.mark.parametrize("function", ["collect", "fetch_context", "query_context", "regulate"])
def test_openapi_documents_are_current(function: str) -> None:
    import json

    from customer_context_devtools.local import lambda_runtime

    live = json.loads(lambda_runtime.load_module(function).app.get_openapi_json_schema())
    committed = json.loads((REPO / "docs" / "openapi" / f"{function}.json").read_text())
    assert committed == live, f"docs/openapi/{function}.json is stale: run `make openapi`"


def test_collect_openapi_lists_every_sdk_route() -> None:
    import json

    live = json.loads((REPO / "docs" / "openapi" / "collect.json").read_text())
    assert {"/v1/batch", "/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
            "/v1/import"} <= set(live["paths"])
    assert "401" in live["paths"]["/v1/batch"]["post"]["responses"]


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_anchor_link_names_a_heading() -> None:
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target, anchor in re.findall(r"\]\((?!https?:)([^)\s#]*)#([\w-]+)\)", page.read_text()):
            linked = page.parent / target if target else page
            assert anchor in _anchors(linked.read_text()), f"{page.relative_to(REPO)}: no heading #{anchor} in {target}"
