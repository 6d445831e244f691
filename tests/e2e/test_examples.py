"""The examples' tool-execution halves, run against the local stack (no LLM call needed for that part)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture
def customer(local_stack: Any) -> Any:
    batch = [{"type": "identify", "userId": "u-ex", "traits": {"email": "ex@example.com"}},
             {"type": "track", "userId": "u-ex", "event": "Order Completed", "properties": {"revenue": 30}}]
    assert requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=("wk_test", ""),
                         timeout=10).status_code == 200
    assert local_stack.wait_for_ingest(60)
    local_stack.build()
    return local_stack


def _agent_module() -> Any:
    spec = importlib.util.spec_from_file_location("agent", REPO / "examples" / "python_agent" / "agent.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_agent_executes_the_models_tool_calls(customer: Any) -> None:
    agent = _agent_module()
    tools = agent.ContextTools(customer.url, customer.consumer_key)
    # Given the tool definitions the agent passes to the LLM client
    definitions = tools.definitions()
    assert definitions[0]["function"]["name"] == "get_customer_context"
    # When the model answers with tool calls shaped as the OpenAI client returns them
    calls = [SimpleNamespace(id="call_1", function=SimpleNamespace(name="get_customer_context", arguments=json.dumps(
                 {"identifier_type": "email", "identifier_value": "ex@example.com", "fields": ["traits.orders_90d"],
                  "format": "json"}))),
             SimpleNamespace(id="call_2", function=SimpleNamespace(name="get_customer_context", arguments=json.dumps(
                 {"identifier_type": "email", "identifier_value": "nobody@example.com"})))]
    messages = tools.run_tool_calls(calls)
    # Then each gets a tool message: the context, or the reason it failed, for the model to read
    assert [m["tool_call_id"] for m in messages] == ["call_1", "call_2"]
    assert json.loads(messages[0]["content"])["context"] == {"traits": {"orders_90d": 1}}
    assert json.loads(messages[1]["content"])["error"] == 404


def test_python_agent_loop_with_a_scripted_model(customer: Any) -> None:
    agent = _agent_module()
    tools = agent.ContextTools(customer.url, customer.consumer_key)
    seen: list[Any] = []

    class Completions:
        def create(self, model: str, messages: list[Any], tools: list[Any]) -> Any:
            seen.append(messages[-1])
            if len(seen) == 1:  # first turn: look the customer up
                arguments = json.dumps({"identifier_type": "user_id", "identifier_value": "u-ex", "max_tokens": 300})
                call = SimpleNamespace(id="c1", function=SimpleNamespace(name="get_customer_context",
                                                                         arguments=arguments))
                message = SimpleNamespace(tool_calls=[call], content=None)
            else:  # second turn: answer from the tool result
                message = SimpleNamespace(tool_calls=None, content="answered: " + messages[-1]["content"][:40])
            return SimpleNamespace(choices=[SimpleNamespace(message=message)])

    client = SimpleNamespace(chat=SimpleNamespace(completions=Completions()))
    answer = agent.run_agent(client, "scripted", tools, "u-ex", "How many orders did I place?")
    assert answer.startswith("answered: # Customer ")
    assert seen[1]["role"] == "tool" and "orders_90d: 1" in seen[1]["content"]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed on this machine")
def test_vercel_ai_sdk_tool_execution_runs_in_node(customer: Any) -> None:
    client = REPO / "examples" / "vercel_ai_sdk" / "context-client.mjs"
    options = json.dumps({"baseUrl": customer.url, "apiKey": customer.consumer_key})
    script = (f"import {{ getCustomerContext, listTools }} from {json.dumps(client.as_uri())};\n"
              f"const options = {options};\n"
              "const tools = await listTools(options);\n"
              "const json = await getCustomerContext({ identifier_type: 'email', identifier_value: 'EX@example.com',"
              " fields: ['traits.orders_90d'], format: 'json' }, options);\n"
              "const text = await getCustomerContext({ identifier_type: 'user_id', identifier_value: 'u-ex',"
              " max_tokens: 120 }, options);\n"
              "const missing = await getCustomerContext({ identifier_type: 'email', identifier_value: 'no@x.io' },"
              " options);\n"
              "console.log(JSON.stringify({ names: tools.map(t => t.function.name), json, text, missing }));\n")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "get_customer_context" in result["names"]
    assert result["json"]["context"] == {"traits": {"orders_90d": 1}}
    assert result["text"].startswith("# Customer ")
    assert result["missing"]["error"] == 404
