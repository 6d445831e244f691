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
from customer_context_devtools.cli import main

from tests.e2e.test_cli import _run, served  # noqa: F401 - served: the fixture, used by name

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "customer_context_devtools.cli"]
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
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from customer_context import wiring

    # the local stack's moto is a process of its own, not this test's (Athena's): its handlers use it
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_stack.moto_url)
    wiring.reload_from_environment()
    batch = [{"type": "track", "event": "Viewed", "userId": "u1", "messageId": f"ath-{i % 3}"} for i in range(5)]
    batch.append({"type": "identify", "anonymousId": "a1", "messageId": "ath-id"})
    requests.post(f"{local_stack.url}/v1/batch", json={"batch": batch}, auth=(local_stack.write_key, ""),
                  timeout=10)
    assert local_stack.wait_for_ingest(60)
    query = "select type, count(*) n from events_unique group by 1 order by 1"
    assert main(["sql", query, "--json", "--data-dir", str(local_stack.data_dir)]) == 0
    local = json.loads(capsys.readouterr().out)
    assert local == [{"type": "identify", "n": 1}, {"type": "track", "n": 3}]

    monkeypatch.setenv("AWS_ENDPOINT_URL", athena)
    wiring.reload_from_environment()
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
    assert asked["QueryExecutionContext"] == {"Database": "customer_context_dev", "Catalog": "AwsDataCatalog"}
    # Athena has no events_unique view: the query defines it over events, deduplicated by message_id
    assert asked["Query"].startswith("WITH events_unique AS (SELECT ") and asked["Query"].endswith(query)
    assert "PARTITION BY message_id" in asked["Query"] and "rejected_events_unique AS" not in asked["Query"]


def test_sql_athena_prints_a_table_with_nulls(athena: str, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    query = ["sql", "select event, revenue from events", "--athena", "--workgroup", "wg-nulls", "--database", "db",
             "--catalog", "s3tablescatalog/cc-prod"]
    assert main(query) == 2  # a stack not deployed (or another region): Athena's reason, in one line
    err = capsys.readouterr().err
    assert err == "error: Athena: InvalidRequestException: WorkGroup does not exist (workgroup wg-nulls, " \
                  "database db)\n"
    boto3.session.Session().client("athena").create_work_group(Name="wg-nulls", Configuration={})
    _athena_answers(athena, [("event", "varchar"), ("revenue", "double")], [["Order Completed", 12.5], [None, None]])
    assert main(query) == 0
    out = capsys.readouterr().out
    assert "Order Completed" in out and "12.5" in out and "(2 rows)" in out
    client = boto3.session.Session().client("athena")
    contexts = [client.get_query_execution(QueryExecutionId=i)["QueryExecution"]["QueryExecutionContext"]
                for i in client.list_query_executions()["QueryExecutionIds"]]
    assert {"Database": "db", "Catalog": "s3tablescatalog/cc-prod"} in contexts


def test_sql_athena_without_region_or_credentials_says_what_to_set(tmp_path: Path) -> None:
    no_region = subprocess.run([*CLI, "sql", "select 1", "--athena"], capture_output=True, text=True,
                               env=_no_aws_env(tmp_path), timeout=60)
    assert no_region.returncode == 2 and "Traceback" not in no_region.stderr
    assert no_region.stderr.startswith("error: no AWS region: set AWS_DEFAULT_REGION"), no_region.stderr
    no_credentials = subprocess.run([*CLI, "sql", "select 1", "--athena"], capture_output=True, text=True,
                                    env=_no_aws_env(tmp_path, AWS_DEFAULT_REGION="eu-west-1"), timeout=60)
    assert no_credentials.returncode == 2 and "Traceback" not in no_credentials.stderr
    assert no_credentials.stderr.startswith("error: no AWS credentials"), no_credentials.stderr
    # AWS_DEFAULT_REGION set but empty (`export AWS_DEFAULT_REGION=`): botocore builds no endpoint from it
    for command in (["sql", "select 1", "--athena"], ["keys", "list", "--table", "cc-context"]):
        empty = subprocess.run([*CLI, *command], capture_output=True, text=True,
                               env=_no_aws_env(tmp_path, AWS_DEFAULT_REGION=""), timeout=60)
        assert empty.returncode == 2 and len(empty.stderr.splitlines()) == 1, empty.stderr
        assert empty.stderr.startswith("error: ") and "set AWS_DEFAULT_REGION to a region" in empty.stderr


def test_version_and_an_example_in_every_help() -> None:
    from customer_context_devtools.cli import build_parser

    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == "customer-context 0.1.0"
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        text = command.format_help()
        assert "examples:\n  customer-context " + name in text, name


def test_serve_port_is_validated(tmp_path: Path) -> None:
    for port, reason in (("70000", "70000 is out of range"), ("http", "'http' is not a number")):
        proc = subprocess.run([*CLI, "serve", "--port", port, "--data-dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and f"argument --port: {reason}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_second_serve_on_a_served_data_dir_is_refused_with_the_others_url(served: Any) -> None:  # noqa: F811
    url, _, data_dir = served
    proc = subprocess.run([*CLI, "serve", "--port", "0", "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {data_dir} is already served at {url} (pid ")


def test_load_refuses_a_missing_data_dir_and_fails_when_rows_are_rejected(
        served: Any, tmp_path: Path) -> None:  # noqa: F811
    _, _, data_dir = served
    crm = tmp_path / "crm.csv"
    crm.write_text("contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
                   "C-1,c1@example.com,Una One,vip,Tom,2026-11-01T00:00:00Z\n"
                   "C-2,c2@example.com,Two,lead,Tom,not a time\n"
                   "C-3,c3@example.com,Three,lead,Ann,2026-11-02T00:00:00Z\n")
    missing = _run("load", str(crm), "--table", "crm_contacts", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: no data dir at {tmp_path / 'nowhere'}")
    assert not (tmp_path / "nowhere").exists()
    partial = _run("load", str(crm), "--table", "crm_contacts", "--partial", "--data-dir", str(data_dir))
    assert partial.returncode == 1, partial.stderr
    assert json.loads(partial.stdout)["loaded"] == 2
    assert "error: 1 of 3 rows rejected (2 loaded)" in partial.stderr and "Traceback" not in partial.stderr
    clean = tmp_path / "clean.csv"
    clean.write_text(crm.read_text().replace("not a time", "2026-11-03T00:00:00Z").replace("C-", "D-"))
    ok = _run("load", str(clean), "--table", "crm_contacts", "--data-dir", str(data_dir))
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    # a build overwrites tables that may be empty: pyiceberg's warning that the delete matched nothing is not
    # the user's business
    for _ in range(2):
        built = _run("build", "--data-dir", str(data_dir))
        assert built.returncode == 0 and "Delete operation did not match" not in built.stderr, built.stderr


def test_fit_scores_on_a_binary_file_is_one_line(tmp_path: Path) -> None:
    for name, content in (("photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), ("latin1.csv", "frequency,r\xe9\n"
                                                                                   .encode("latin-1"))):
        (tmp_path / name).write_bytes(content)
        proc = _run("fit-scores", str(tmp_path / name))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(f"error: {tmp_path / name}: ")


def test_keys_validate_queries_list_them_and_refuse_to_revoke_an_unknown_key(tmp_path: Path) -> None:
    data_dir = str(tmp_path)
    unknown = _run("keys", "create", "--sections", "traits", "--queries", "orders_in_period,nope",
                   "--data-dir", data_dir)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("error: --queries: unknown named query 'nope'; the spec has: open_tickets, "
                                     "orders_in_period, recent_pages")
    created = _run("keys", "create", "--consumer", "agent", "--sections", "traits", "--queries", "orders_in_period",
                   "--data-dir", data_dir)
    admin = _run("keys", "create", "--consumer", "dpo", "--admin", "--data-dir", data_dir)
    assert created.returncode == 0 and admin.returncode == 0, created.stderr + admin.stderr
    listed = {k["consumer"]: k for k in map(json.loads, _run("keys", "list", "--data-dir", data_dir).stdout.split(
        "\n")[:-1])}
    assert listed["agent"]["queries"] == ["orders_in_period"] and listed["agent"]["admin"] is False
    assert listed["dpo"]["admin"] is True and listed["dpo"]["queries"] == []
    bogus = _run("keys", "revoke", "--key", "ck_not_a_key", "--data-dir", data_dir)
    assert bogus.returncode == 2 and bogus.stderr.startswith("error: no consumer key with SHA-256 ")
    assert _run("keys", "revoke", "--key-sha256", listed["dpo"]["key_sha256"], "--data-dir", data_dir).returncode == 0
    again = _run("keys", "revoke", "--key-sha256", listed["dpo"]["key_sha256"], "--data-dir", data_dir)
    assert again.returncode == 2, "revoking twice is an error: the key is unknown now"


def test_keys_on_an_aws_table(aws: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from tests.helpers.template_env import Resolver

    table = f"ctx-{tmp_path.name}"[:200]
    # `keys --table` points the process at the table (CUSTOMER_CONTEXT_CONTEXT_TABLE): undone after the test
    monkeypatch.setenv("CUSTOMER_CONTEXT_CONTEXT_TABLE", "")
    schema = Resolver({}).properties("ContextTable")
    boto3.session.Session().client("dynamodb").create_table(
        TableName=table, KeySchema=schema["KeySchema"], AttributeDefinitions=schema["AttributeDefinitions"],
        BillingMode=schema["BillingMode"])
    assert main(["keys", "create", "--table", table, "--consumer", "web", "--sections", "traits"]) == 0
    key = json.loads(capsys.readouterr().out)["key"]
    assert main(["keys", "list", "--table", table]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["consumer"] == "web" and listed["queries"] == [] and listed["admin"] is False
    assert main(["keys", "revoke", "--table", table, "--key", "ck_unknown"]) == 2
    assert "no consumer key with SHA-256" in capsys.readouterr().err
    assert main(["keys", "revoke", "--table", table, "--key", key]) == 0
    capsys.readouterr()
    # a table that is not there, no region, no credentials: one line saying what to fix
    assert main(["keys", "list", "--table", "no-such-table"]) == 2
    assert capsys.readouterr().err == ("error: --table no-such-table: no such table in us-east-1 (the stack's "
                                       "ContextTableName output names it)\n")
    for env, reason in ((_no_aws_env(tmp_path), "no AWS region"),
                        (_no_aws_env(tmp_path, AWS_DEFAULT_REGION="eu-west-1"), "no AWS credentials")):
        proc = subprocess.run([*CLI, "keys", "create", "--table", table, "--sections", "traits"], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: --table {table}: {reason}"), proc.stderr


def test_a_missing_lakehouse_is_exit_status_2_and_a_nameless_key_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/local-stack.md: a data dir that does not exist is bad input (2), said in one line; a key made with
    an empty --consumer would be served and audited under no name; `keys create` says which keys read the audit."""
    for command in (["sql", "select 1"], ["replay", "--identifier", "user_id:u1"], ["plans", "report"]):
        assert main([*command, "--data-dir", str(tmp_path / "nothing")]) == 2, command
        assert capsys.readouterr().err == (f"error: no lakehouse at {tmp_path / 'nothing'} yet: start "
                                           "`customer-context serve` and send events, or pass --data-dir\n")
    assert main(["keys", "create", "--consumer", " ", "--sections", "traits", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --consumer: empty")
    assert not (tmp_path / "config.toml").exists()
    assert main(["keys", "create", "--consumer", "ops", "--sections", "*", "--audit", "--data-dir",
                 str(tmp_path)]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["audit"] is True and created["admin"] is False


def test_every_help_example_parses_and_names_what_the_packaged_spec_has(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A user copies the examples --help ends with: each must be accepted as written (`maintain --retain 0` was
    refused when run, below the one-hour floor) and `load` must name a record table the packaged spec declares."""
    import re
    import shlex

    from customer_context.spec import load_spec
    from customer_context_devtools.cli import EXAMPLES, build_parser

    for name, lines in EXAMPLES.items():
        for line in lines:
            argv = shlex.split(re.sub(r"<[^>]+>", "PLACEHOLDER", line.split(" > ")[0]))[1:]
            args = build_parser().parse_args(argv)
            if name == "load":
                assert args.table in load_spec().record_tables, line
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["maintain", "--retain", "0"])
    assert refused.value.code == 2
    assert "argument --retain: 0 is below the floor of 3600 seconds" in capsys.readouterr().err


def test_audit_of_an_unknown_identifier_type_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit --identifier emial:ada@example.com` answered "nothing served about …" (exit 0): a typo read as a
    customer nobody was served about."""
    assert main(["audit", "--identifier", "emial:ada@example.com", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --identifier: unknown type 'emial'; valid: user_id, email, phone, "
                                       "crm_id, anonymous_id, profile_id\n")
