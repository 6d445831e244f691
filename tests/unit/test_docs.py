"""The README stays true: every setting, CLI command and Make target it must mention is there."""

from __future__ import annotations

import re

import pytest
from customer_context.cli import build_parser
from customer_context.config import ENV_PREFIX, Settings

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [ENV_PREFIX + name.upper() for name in Settings.model_fields if ENV_PREFIX + name.upper() not in README]
    assert not missing, f"README lacks settings: {missing}"


def test_every_cli_command_is_documented() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [c for c in commands if f"customer-context {c}" not in README]
    assert not missing, f"README lacks commands: {missing}"


def test_the_two_commands_and_deploy_are_documented() -> None:
    for text in ("make demo", "make test", "sam build", "sam deploy --guided"):
        assert text in README, text
    assert "BENCH_TABLE" not in README, "the benchmark table placeholder was never filled"


def test_every_template_parameter_is_documented() -> None:
    template = (REPO / "template.yaml").read_text()
    block = template.split("\nParameters:\n", 1)[1].split("\nConditions:\n", 1)[0]
    params = re.findall(r"^  (\w+):$", block, flags=re.MULTILINE)
    missing = [p for p in params if f"`{p}`" not in README]
    assert not missing, f"README lacks template parameters: {missing}"


@pytest.mark.parametrize("function", ["collect", "fetch_context", "query_context", "regulate"])
def test_openapi_documents_are_current(function: str) -> None:
    import json

    from customer_context.local import lambda_runtime

    live = json.loads(lambda_runtime.load_module(function).app.get_openapi_json_schema())
    committed = json.loads((REPO / "docs" / "openapi" / f"{function}.json").read_text())
    assert committed == live, f"docs/openapi/{function}.json is stale: run `make openapi`"


def test_collect_openapi_lists_every_sdk_route() -> None:
    import json

    live = json.loads((REPO / "docs" / "openapi" / "collect.json").read_text())
    assert {"/v1/batch", "/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
            "/v1/import"} <= set(live["paths"])
    assert "401" in live["paths"]["/v1/batch"]["post"]["responses"]
