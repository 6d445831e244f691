"""events/env.json, the file for `sam local invoke --env-vars`: it names only real settings the template declares
(sam local overrides nothing else), and with it the collect samples run without SSM and the fetch samples
authenticate with their documented key once it is stored by `customer-context keys create --key`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from customer_context.config import ENV_PREFIX, Settings

from tests.conftest import EVENTS, load_event
from tests.helpers.template_env import Resolver
from tests.integration.test_template_defaults import Deployment, deployed  # noqa: F401 - deployed: the fixture

ENV_FILE = json.loads((EVENTS / "env.json").read_text())
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def test_the_env_file_names_only_settings_the_template_declares() -> None:
    resolver = Resolver({"EventsQueue": "q", "ContextTable": "t", "PiiHashKeySecret": "s"})
    functions = {name for name, res in resolver.template["Resources"].items()
                 if res["Type"] == "AWS::Serverless::Function"}
    assert set(ENV_FILE) - {"Parameters"} <= functions
    for section, variables in ENV_FILE.items():
        for name in variables:
            assert name in SETTINGS or name.startswith("POWERTOOLS_"), f"{section}: {name} is no setting"
            declared = [f for f in functions if section in ("Parameters", f) and name in resolver.environment(f)]
            assert declared, f"{section}: {name} is declared for no function, so sam local would ignore it"


def test_the_samples_run_with_the_env_file_and_no_ssm(deployed: Deployment,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context import wiring
    from customer_context_devtools.cli import main

    deployed_environment = deployed.environment

    def with_env_file(function: str) -> dict[str, str]:
        env = deployed_environment(function)
        for section in ("Parameters", function):
            for name, value in ENV_FILE.get(section, {}).items():
                if name in env:  # what sam local does: only declared variables are overridden
                    env[name] = value
        return env

    monkeypatch.setattr(deployed, "environment", with_env_file)
    # no write keys in SSM for this stack
    parameter = deployed_environment("CollectFunction")["CUSTOMER_CONTEXT_WRITE_KEYS_PARAMETER"]
    wiring.boto_client("ssm").delete_parameter(Name=parameter)
    status, body = deployed.http("CollectFunction", load_event("collect_batch.json"))
    assert status == 200 and body["accepted"] == 3, body

    # the fetch samples' key, stored as the README says
    table = deployed.resolver.names["ContextTable"]
    monkeypatch.setenv("CUSTOMER_CONTEXT_CONTEXT_TABLE", table)
    assert main(["keys", "create", "--table", table, "--key", "ck_sample_consumer_key", "--consumer", "sample",
                 "--sections", "*"]) == 0
    status, served = deployed.http("FetchContextFunction", load_event("fetch_context_get.json"))
    _assert_served_or_unknown(status, served)


def _assert_served_or_unknown(status: int, served: Any) -> None:
    # nobody is built yet: the key is accepted and the customer unknown
    assert status == 404 and served["code"] == "not_found", (status, served)
