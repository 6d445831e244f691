"""An agent loop that gives an LLM our customer-context tools and runs the calls it makes.

    export CUSTOMER_CONTEXT_URL=http://127.0.0.1:8080 CUSTOMER_CONTEXT_KEY=ck_…   # a consumer key
    export OPENAI_API_KEY=…                                                      # any OpenAI-compatible API
    python examples/python_agent/agent.py "ada@example.com" "Why was my last order late?"

The tool definitions come from ``GET /v1/tools?style=openai`` (generated from context.yaml and the
key's scope), so adding a trait or a named query to the spec reaches the model with no code change.
Only the LLM call needs the ``openai`` package; fetching the tools and executing the model's tool
calls use the standard library (and run in the test suite against the local stack).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

SYSTEM = ("You are a support assistant. Before answering, look up the customer with the tools, asking only "
          "for the fields you need. Never invent facts about the customer.")


class ContextTools:
    """Our API as tools: definitions for the model, execution of its calls."""

    def __init__(self, base_url: str, key: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - configured URL
                raw = answer.read().decode()
                return json.loads(raw) if answer.headers.get_content_type() == "application/json" else raw
        except urllib.error.HTTPError as exc:
            # the model reads the reason and can recover (another identifier, fewer fields …)
            return {"error": exc.code, **json.loads(exc.read() or b"{}")}

    def definitions(self) -> list[dict[str, Any]]:
        """Tool definitions in the OpenAI Chat Completions shape."""
        return list(self._request("GET", "/v1/tools?style=openai")["tools"])

    def execute(self, name: str, arguments: str | dict[str, Any]) -> str:
        """Run one tool call the model made; returns the text to send back as the tool result."""
        args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        id_type = urllib.parse.quote(str(args.pop("identifier_type", "")), safe="")
        id_value = urllib.parse.quote(str(args.pop("identifier_value", "")), safe="")
        if name == "get_customer_context":
            query = {k: ",".join(v) if isinstance(v, list) else v for k, v in args.items()}
            query.setdefault("format", "text")
            result = self._request("GET", f"/v1/context/{id_type}/{id_value}?{urllib.parse.urlencode(query)}")
        elif name.startswith("query_"):
            result = self._request("POST", f"/v1/context/{id_type}/{id_value}/queries/{name[6:]}", args)
        else:
            result = {"error": f"unknown tool {name}"}
        return result if isinstance(result, str) else json.dumps(result)

    def run_tool_calls(self, tool_calls: list[Any]) -> list[dict[str, Any]]:
        """The ``tool`` messages answering an assistant message's ``tool_calls``."""
        return [{"role": "tool", "tool_call_id": call.id,
                 "content": self.execute(call.function.name, call.function.arguments)} for call in tool_calls]


def run_agent(client: Any, model: str, tools: ContextTools, who: str, question: str, max_steps: int = 5) -> str:
    """The loop: the model answers, or calls tools whose results go back to it."""
    messages: list[Any] = [{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": f"(customer: {who}) {question}"}]
    definitions = tools.definitions()
    for _ in range(max_steps):
        reply = client.chat.completions.create(model=model, messages=messages, tools=definitions).choices[0].message
        if not reply.tool_calls:
            return str(reply.content)
        messages.append(reply)
        messages.extend(tools.run_tool_calls(reply.tool_calls))
    return "(no answer within the step limit)"


def main() -> int:
    from openai import OpenAI  # the only third-party import, for the LLM call itself

    tools = ContextTools(os.environ.get("CUSTOMER_CONTEXT_URL", "http://127.0.0.1:8080"),
                         os.environ["CUSTOMER_CONTEXT_KEY"])
    print(run_agent(OpenAI(), os.environ.get("MODEL", "gpt-4o-mini"), tools, sys.argv[1], sys.argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
