"""template.yaml operates: alarms on what loses or delays data, their topic, the dashboard, log retention, API
access logs without identifiers, the Athena workgroup, and physical names that two stacks never share."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers.template_env import Resolver
from tests.template.test_template import _resources, _template

FUNCTIONS = ("Collect", "Ingest", "LoadRecords", "BuildContext", "FetchContext", "QueryContext", "Regulate",
             "Maintain")
# properties that give a resource its physical name (an unnamed resource gets a generated one)
NAME_KEYS = ("BucketName", "QueueName", "FunctionName", "LayerName", "TableName", "TopicName", "AlarmName",
             "DashboardName", "LogGroupName", "TableBucketName", "Name")


def _alarms() -> dict[str, dict[str, Any]]:
    return {name: res["Properties"] for name, res in _resources("AWS::CloudWatch::Alarm").items()}


def _watched(alarm: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(namespace, metric, the dimension's value as written) of every metric an alarm reads."""
    if "MetricName" in alarm:
        stats = [{"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"],
                  "Dimensions": alarm["Dimensions"]}]
    else:
        stats = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    return {(s["Namespace"], s["MetricName"], json.dumps(s["Dimensions"][0]["Value"])) for s in stats}


@pytest.mark.parametrize(("namespace", "metric", "target"), [
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": ["EventsDLQ", "QueueName"]}),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": ["LoadRecordsFailures", "QueueName"]}),
    ("AWS/Lambda", "Errors", {"Ref": "IngestFunction"}),
    ("AWS/Lambda", "Errors", {"Ref": "BuildContextFunction"}),
    ("AWS/Lambda", "Duration", {"Ref": "BuildContextFunction"}),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": ["EventsQueue", "QueueName"]}),
    ("AWS/DynamoDB", "ReadThrottleEvents",
     {"Fn::If": ["CreateContextTable", {"Ref": "ContextTable"}, {"Ref": "ExistingContextTableName"}]}),
    ("AWS/DynamoDB", "WriteThrottleEvents",
     {"Fn::If": ["CreateContextTable", {"Ref": "ContextTable"}, {"Ref": "ExistingContextTableName"}]}),
    ("AWS/ApiGateway", "5xx", {"Ref": "HttpApi"}),
])
def test_an_alarm_watches(namespace: str, metric: str, target: dict[str, Any]) -> None:
    watching = [name for name, alarm in _alarms().items()
                if (namespace, metric, json.dumps(target)) in _watched(alarm)]
    assert watching, f"no alarm on {namespace} {metric} of {target}"


def test_every_alarm_notifies_the_topic_and_fires_on_what_it_names() -> None:
    alarms = _alarms()
    assert len(alarms) >= 8
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}] == alarm["OKActions"], name
        assert alarm["TreatMissingData"] == "notBreaching", name  # no data (no traffic) is not an outage
    # a dead letter, an error, a throttle, a 5xx: the first one alarms
    for name in ("EventsDeadLetterAlarm", "IngestErrorsAlarm", "BuildErrorsAlarm", "ApiServerErrorsAlarm",
                 "ContextTableThrottleAlarm", "LoadRecordsFailuresAlarm"):
        assert alarms[name]["Threshold"] == 0 and alarms[name]["ComparisonOperator"] == "GreaterThanThreshold"
    timeout_ms = _template()["Resources"]["BuildContextFunction"]["Properties"]["Timeout"] * 1000
    assert 0.5 * timeout_ms <= alarms["BuildDurationAlarm"]["Threshold"] < timeout_ms


def test_the_alarm_email_is_optional() -> None:
    template = _template()
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "EmailAlarms"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}
    assert Resolver({}).condition("EmailAlarms") is False
    assert Resolver({"AlarmEmail": "ops@example.com"}).condition("EmailAlarms") is True


def _dashboard() -> dict[str, Any]:
    physical = {"EventsQueue.QueueName": "q", "EventsDLQ.QueueName": "dlq", "BuildContextFunction": "build",
                "FetchContextFunction": "fetch", "HttpApi": "api"}
    return json.loads(Resolver(physical).properties("Dashboard", "DashboardBody"))  # type: ignore[no-any-return]


def test_the_dashboard_shows_what_the_functions_emit() -> None:
    widgets = {w["properties"]["title"]: w["properties"] for w in _dashboard()["widgets"]}
    for title in ("Events in", "Rejected", "Ingest lag", "Build duration", "Fetch latency p99", "API 4xx / 5xx"):
        assert any(t.startswith(title) for t in widgets), title
    emitted = set()
    for path in [*REPO.glob("functions/*/app.py"), *REPO.glob("layers/core/customer_context/**/*.py")]:
        emitted |= set(re.findall(r'add_metric\(name="(\w+)"', path.read_text()))
    shown = {m[1] for w in widgets.values() for m in w["metrics"] if m[0] == "CustomerContext"}
    assert {"EventsAccepted", "EventsRejected", "EventsIngested", "SnapshotsChanged"} <= shown
    assert shown <= emitted, f"the dashboard shows metrics no code emits: {shown - emitted}"
    for widget in widgets.values():
        for metric in widget["metrics"]:
            if metric[0] == "CustomerContext":  # Powertools' dimension: the service, the stack's name
                assert metric[2:4] == ["service", "customer-context-dev"], metric
    fetch = widgets["Fetch latency p99 (ms)"]
    assert fetch["stat"] == "p99" and ["AWS/Lambda", "Duration", "FunctionName", "fetch"] in [
        m[:4] for m in fetch["metrics"]]
    api = {m[1] for m in widgets["API 4xx / 5xx"]["metrics"]}
    assert {"4xx", "5xx"} <= api


def test_the_metrics_service_is_the_stack_name() -> None:
    env = Resolver({"EventsQueue": "q", "ContextTable": "t", "PiiHashKeySecret": "s"}).environment(
        "CollectFunction")
    assert env["POWERTOOLS_SERVICE_NAME"] == "customer-context-dev"


def test_every_function_logs_to_a_log_group_with_retention() -> None:
    template = _template()
    groups = _resources("AWS::Logs::LogGroup")
    for function in FUNCTIONS:
        props = template["Resources"][f"{function}Function"]["Properties"]
        group = props["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, function
    assert set(_resources("AWS::Serverless::Function")) == {f"{f}Function" for f in FUNCTIONS}
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_api_access_logs_name_the_route_never_the_path() -> None:
    settings = _template()["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(settings["Format"])
    assert fields["route"] == "$context.routeKey" and fields["status"] == "$context.status"
    # the path, query string and caller carry identifiers (/v1/context/email/…, ?writeKey=…, IP addresses)
    for leak in ("$context.path", "$context.identity", "$context.domainPrefix"):
        assert not any(leak in value for value in fields.values()), leak


def test_the_athena_workgroup_writes_results_to_an_expiring_bucket() -> None:
    template = _template()
    workgroup = template["Resources"]["AthenaWorkGroup"]["Properties"]
    config = workgroup["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["EngineVersion"]["SelectedEngineVersion"] == "Athena engine version 3"  # Iceberg tables
    assert "${AthenaResultsBucket}" in config["ResultConfiguration"]["OutputLocation"]["Fn::Sub"]
    rules = template["Resources"]["AthenaResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"Ref": "AthenaResultsDays"} in [r.get("ExpirationInDays") for r in rules]
    assert Resolver({}).properties("AthenaWorkGroup", "Name") == "customer-context-dev"


def _physical_names(stack: str) -> dict[str, str]:
    """Every physical name the template gives (resource → name), and the names of what it uses but does not
    create (the namespace, the write-keys parameter), for one stack name."""
    resolver = Resolver({"EventsQueue": "q", "ContextTable": "t", "PiiHashKeySecret": "s"}, stack=stack)
    names: dict[str, str] = {}
    for logical, res in resolver.template["Resources"].items():
        props = res.get("Properties", {})
        for key in NAME_KEYS:
            if key in props and isinstance(props[key], dict | str) and "Ref" not in props[key]:  # a Ref names another
                names[f"{logical}.{key}"] = str(resolver.resolve(props[key]))
        if "DatabaseInput" in props:
            names[f"{logical}.DatabaseInput.Name"] = resolver.resolve(props["DatabaseInput"]["Name"])
        for event_name, event in (props.get("Events") or {}).items():
            if "Name" in event.get("Properties", {}):
                names[f"{logical}.{event_name}"] = resolver.resolve(event["Properties"]["Name"])
    env = resolver.environment("CollectFunction")
    names["namespace"] = env["CUSTOMER_CONTEXT_NAMESPACE"]
    names["write keys"] = env["CUSTOMER_CONTEXT_WRITE_KEYS_PARAMETER"]
    return names


def test_two_stacks_share_no_physical_name() -> None:
    dev, prod = _physical_names("customer-context-dev"), _physical_names("customer-context-prod")
    assert dev.keys() == prod.keys()
    assert {"WarehouseBucket.BucketName", "EventsQueue.QueueName", "RegulateFunction.FunctionName",
            "AthenaWorkGroup.Name", "Dashboard.DashboardName", "AlarmTopic.TopicName", "namespace"} <= dev.keys()
    shared = set(dev.values()) & set(prod.values())
    assert not shared, f"both stacks would create {shared}"
    for what, name in dev.items():
        assert "customer-context-dev" in name or name == "customer_context_dev", (what, name)


def test_the_lakehouse_namespace_is_a_plain_sql_identifier() -> None:
    # Athena (and the sql command) name the Glue database unquoted: no dashes
    assert _physical_names("cc-team-a-prod")["namespace"] == "cc_team_a_prod"


def test_existing_bucket_table_and_database_can_be_reused() -> None:
    template = _template()
    assert template["Resources"]["ContextTable"]["Condition"] == "CreateContextTable"
    assert template["Resources"]["GlueDatabase"]["Condition"] == "CreateGlueDatabase"
    assert template["Resources"]["WarehouseBucket"]["Condition"] == "CreateWarehouseBucket"
    assert template["Resources"]["WarehouseBucketPolicy"]["Condition"] == "CreateWarehouseBucket"
    reused = Resolver({"ExistingContextTableName": "retained-table", "GlueDatabaseName": "analytics",
                       "ExistingWarehouseBucket": "retained-bucket", "EventsQueue": "q", "PiiHashKeySecret": "s",
                       "LoadRecordsFunction": "load-records", "EventsQueue.QueueName": "q",
                       "LoadRecordsFailures.Arn": "arn:aws:sqs:us-east-1:123456789012:f"})
    env = reused.environment("BuildContextFunction")
    assert env["CUSTOMER_CONTEXT_CONTEXT_TABLE"] == "retained-table"
    assert env["CUSTOMER_CONTEXT_NAMESPACE"] == "analytics"
    assert env["CUSTOMER_CONTEXT_WAREHOUSE"] == "s3://retained-bucket/warehouse"
    assert env["CUSTOMER_CONTEXT_SPOOL_BUCKET"] == "retained-bucket"
    # every policy naming the warehouse names the reused bucket, never the one the stack would have created
    for function in ("IngestFunction", "LoadRecordsFunction", "BuildContextFunction", "QueryContextFunction",
                     "RegulateFunction", "MaintainFunction", "CollectFunction"):
        text = json.dumps(reused.properties(function, "Policies"))
        assert "arn:aws:s3:::retained-bucket" in text and "customer-context-dev-1234" not in text, function
    assert reused.properties("LoadRecordsInvokedByS3", "SourceArn") == "arn:aws:s3:::retained-bucket"


def test_files_dropped_under_imports_invoke_load_records() -> None:
    template = _template()
    bucket = template["Resources"]["WarehouseBucket"]
    [notification] = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Function"] == {"Fn::GetAtt": ["LoadRecordsFunction", "Arn"]}
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "imports/"}]
    assert bucket["DependsOn"] == "LoadRecordsInvokedByS3"  # S3 refuses a destination it may not invoke
    permission = template["Resources"]["LoadRecordsInvokedByS3"]["Properties"]
    assert permission["Principal"] == "s3.amazonaws.com" and permission["FunctionName"] == {
        "Ref": "LoadRecordsFunction"}
    created = Resolver({"LoadRecordsFunction": "load-records"}).properties("LoadRecordsInvokedByS3", "SourceArn")
    assert created == "arn:aws:s3:::customer-context-dev-123456789012-us-east-1"


def test_samconfig_environments_differ() -> None:
    import tomllib

    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    dev, prod = config["dev"]["deploy"]["parameters"], config["prod"]["deploy"]["parameters"]
    assert dev["stack_name"] != prod["stack_name"]
    assert 'Stage="dev"' in dev["parameter_overrides"] and 'Stage="prod"' in prod["parameter_overrides"]


def test_make_build_without_docker_stops_and_says_where_to_build(tmp_path: Path) -> None:
    import subprocess
    import sys

    # a machine without Docker: `docker` on PATH fails as it does when no daemon runs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    venv = Path(sys.prefix)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(["make", "-C", str(REPO), "-o", f"{venv}/.installed", "-o", ".venv-sam/bin/sam", "build",
                           f"VENV={venv}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0, "a build without the analytics image must not pass for a full one"
    assert "make build: Docker is not running here" in proc.stdout
    assert "make build-zip" in proc.stdout and "sam deploy" in proc.stdout
    assert "Building codeuri" not in proc.stdout + proc.stderr  # nothing was half built
