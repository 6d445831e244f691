"""The CLI as an operator uses it: `sql --athena` against a deployed stack (moto's Athena over HTTP), keys on AWS,
and the one-line errors and refusals of every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from customer_context.cli import main

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "customer_context.cli"]
STACK = "customer-context-dev"


def _no_aws_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment where boto3 finds no region and no credentials (no profile files, no instance metadata)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "no-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-creds"),
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


@pytest.fixture
def athena(aws: str) -> str:
    """moto's Athena over HTTP (tests/helpers/moto_athena.py). No reset: moto's state is the whole process's,
    the local stack's too."""
    from tests.helpers.moto_athena import route_every_athena_path

    route_every_athena_path()
    return aws


def _athena_answers(moto_url: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
    """Queue the result Athena would return for the next query: every value a string, the names as first row.
    (moto's Athena records queries but does not run them.)"""
    def row(values: list[Any]) -> dict[str, Any]:
        return {"Data": [{} if v is None else {"VarCharValue": str(v)} for v in values]}

    result = {"rows": [row([name for name, _ in columns]), *[row(r) for r in rows]],
              "column_info": [{"Name": name, "Label": name, "Type": kind, "Nullable": "UNKNOWN"}
                              for name, kind in columns]}
    requests.post(f"{moto_url}/moto-api/static/athena/query-results", json={"results": [result]},
                  timeout=10).raise_for_status()


def test_sql_athena_asks_the_stacks_workgroup_the_local_query(local_stack: Any, athena: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    batch = [{"type": "track", "event": "Viewed", "userId": "u1", "messageId": f"ath-{i % 3}"} for i in range(5)]
    batch.append({"type": "identify", "anonymousId": "a1", "messageId": "ath-id"})
    requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=(local_stack.write_key, ""),
                  timeout=10)
    assert local_stack.wait_for_ingest(60)
    query = "select type, count(*) n from events_unique group by 1 order by 1"
    assert main(["sql", query, "--json", "--data-dir", str(local_stack.data_dir)]) == 0
    local = json.loads(capsys.readouterr().out)
    assert local == [{"type": "identify", "n": 1}, {"type": "track", "n": 3}]

    client = boto3.session.Session().client("athena")
    if STACK not in [w["Name"] for w in client.list_work_groups()["WorkGroups"]]:
        client.create_work_group(Name=STACK, Configuration={
            "ResultConfiguration": {"OutputLocation": "s3://results-bucket/results/"}})
    before = set(client.list_query_executions()["QueryExecutionIds"])
    _athena_answers(athena, [("type", "varchar"), ("n", "bigint")], [[r["type"], r["n"]] for r in local])
    assert main(["sql", query, "--json", "--athena", "--stack", STACK]) == 0
    assert json.loads(capsys.readouterr().out) == local  # typed back: n is a number again

    [execution_id] = set(client.list_query_executions()["QueryExecutionIds"]) - before
    asked = client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert asked["WorkGroup"] == STACK
    assert asked["QueryExecutionContext"]["Database"] == "customer_context_dev"
    # Athena has no events_unique view: the query defines it over events, deduplicated by message_id
    assert asked["Query"].startswith("WITH events_unique AS (SELECT ") and asked["Query"].endswith(query)
    assert "PARTITION BY message_id" in asked["Query"] and "rejected_events_unique AS" not in asked["Query"]


def test_sql_athena_prints_a_table_with_nulls(athena: str, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    query = ["sql", "select event, revenue from events", "--athena", "--workgroup", "wg-nulls", "--database", "db"]
    assert main(query) == 2  # a stack not deployed (or another region): Athena's reason, in one line
    err = capsys.readouterr().err
    assert err == "error: Athena: InvalidRequestException: WorkGroup does not exist (workgroup wg-nulls, " \
                  "database db)\n"
    boto3.session.Session().client("athena").create_work_group(Name="wg-nulls", Configuration={})
    _athena_answers(athena, [("event", "varchar"), ("revenue", "double")], [["Order Completed", 12.5], [None, None]])
    assert main(query) == 0
    out = capsys.readouterr().out
    assert "Order Completed" in out and "12.5" in out and "(2 rows)" in out


def test_sql_athena_without_region_or_credentials_says_what_to_set(tmp_path: Path) -> None:
    no_region = subprocess.run([*CLI, "sql", "select 1", "--athena"], capture_output=True, text=True,
                               env=_no_aws_env(tmp_path), timeout=60)
    assert no_region.returncode == 2 and "Traceback" not in no_region.stderr
    assert no_region.stderr.startswith("error: no AWS region: set AWS_DEFAULT_REGION"), no_region.stderr
    no_credentials = subprocess.run([*CLI, "sql", "select 1", "--athena"], capture_output=True, text=True,
                                    env=_no_aws_env(tmp_path, AWS_DEFAULT_REGION="eu-west-1"), timeout=60)
    assert no_credentials.returncode == 2 and "Traceback" not in no_credentials.stderr
    assert no_credentials.stderr.startswith("error: no AWS credentials"), no_credentials.stderr
