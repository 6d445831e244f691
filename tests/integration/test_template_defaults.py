"""The template's production defaults, on moto: every function runs with the environment template.yaml gives it
(default parameters: the Glue catalog over an S3 warehouse, write keys from SSM Parameter Store, the deletion
job as an asynchronous Lambda invocation, EventBridge Scheduler for build and maintain), against moto's Glue,
S3, SSM, SQS, DynamoDB and Lambda over HTTP, with the event shapes of events/.

The one difference from AWS: pyarrow's S3 client (under pyiceberg) does not follow ``AWS_ENDPOINT_URL``, so
the catalog properties name an endpoint for it (``s3.endpoint``; on AWS it is S3's own): a loopback proxy in
front of moto that counts every request, so a test sees which warehouse calls honour the catalog's endpoint.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from customer_context import wiring
from customer_context_devtools.local import lambda_runtime

from tests.conftest import load_event
from tests.helpers.faults import FaultProxy
from tests.helpers.logs import every_log_record
from tests.helpers.template_env import ACCOUNT, REGION, STACK, Resolver
from tests.integration.test_handlers_with_aws_events import _drain

STAGE = "dev"
WRITE_KEY = "wk_sample"  # the collect samples' Basic auth
FUNCTIONS = {"CollectFunction": "collect", "IngestFunction": "ingest", "LoadRecordsFunction": "load_records",
             "BuildContextFunction": "build_context", "FetchContextFunction": "fetch_context",
             "RegulateFunction": "regulate", "MaintainFunction": "maintain"}


@dataclass
class Deployment:
    """The template's resources on moto, and a way to invoke each function as deployed."""

    resolver: Resolver
    s3_endpoint: FaultProxy
    monkeypatch: pytest.MonkeyPatch
    invocations: list[dict[str, Any]]

    def environment(self, function: str) -> dict[str, str]:
        env = self.resolver.environment(function)
        # pyarrow's S3 client ignores AWS_ENDPOINT_URL: name the proxy in front of moto (the only change)
        assert env["CUSTOMER_CONTEXT_CATALOG_PROPERTIES"] == ""
        env["CUSTOMER_CONTEXT_CATALOG_PROPERTIES"] = json.dumps({"s3.endpoint": self.s3_endpoint.url,
                                                                 "s3.region": REGION})
        return env

    def invoke(self, function: str, event: dict[str, Any], before: Callable[[], None] | None = None) -> Any:
        """Invoke a function's handler with its deployed environment, as a fresh container."""
        for name in [n for n in os.environ if n.startswith("CUSTOMER_CONTEXT_")]:
            self.monkeypatch.delenv(name)
        for name, value in self.environment(function).items():
            self.monkeypatch.setenv(name, value)
        wiring.reload_from_environment()
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        if before:
            before()
        return lambda_runtime.invoke(FUNCTIONS[function], event, timeout_s=900)

    def http(self, function: str, event: dict[str, Any]) -> tuple[int, Any]:
        response = self.invoke(function, event)
        return response["statusCode"], json.loads(response["body"])


def _api_event(sample: str, **changes: Any) -> dict[str, Any]:
    event = load_event(sample)
    event.update(changes)
    return event


@pytest.fixture
def deployed(aws: str, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """The resources template.yaml creates for the dev stage, named as it names them, on a clean moto."""
    import boto3

    # fixed names, as the template gives them: moto starts clean (its server lives for the whole session)
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    # moto runs Lambda functions in Docker unless told not to; the deletion job is run by the test itself
    requests.post(f"{moto_url}/moto-api/config", json={"lambda": {"use_docker": False}}, timeout=10).raise_for_status()
    session = boto3.session.Session()
    queue = session.client("sqs").create_queue(QueueName=f"{STACK}-events")["QueueUrl"]
    # the PII hash key the template generates in Secrets Manager when the PiiHashKey parameter is left empty
    secret_arn = session.client("secretsmanager").create_secret(
        Name=Resolver({}).properties("PiiHashKeySecret", "Name"),
        SecretString=os.urandom(32).hex())["ARN"]
    resolver = Resolver({"EventsQueue": queue, "ContextTable": f"customer-context-context-{STAGE}",
                         "PiiHashKeySecret": secret_arn})
    assert resolver.environment("RegulateFunction")["CUSTOMER_CONTEXT_PII_HASH_KEY_SECRET"] == secret_arn
    bucket = resolver.properties("WarehouseBucket", "BucketName")
    assert bucket == f"{STACK}-{ACCOUNT}-{REGION}"
    session.client("s3").create_bucket(Bucket=bucket)
    session.client("glue").create_database(DatabaseInput=resolver.properties("GlueDatabase", "DatabaseInput"))
    table = resolver.properties("ContextTable")
    session.client("dynamodb").create_table(
        TableName=resolver.names["ContextTable"], KeySchema=table["KeySchema"],
        AttributeDefinitions=table["AttributeDefinitions"], BillingMode=table["BillingMode"])
    # the write keys, as the README's deploy step stores them
    parameter = resolver.environment("CollectFunction")["CUSTOMER_CONTEXT_WRITE_KEYS_PARAMETER"]
    assert parameter == f"/{STACK}/write-keys"
    session.client("ssm").put_parameter(Name=parameter, Type="SecureString", Value=f"{WRITE_KEY}=sample")
    # the regulate function, which the regulation API invokes asynchronously for the deletion job
    role = session.client("iam").create_role(RoleName="regulate", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    session.client("lambda").create_function(
        FunctionName=resolver.properties("RegulateFunction", "FunctionName"), Runtime="python3.12", Role=role,
        Handler="app.lambda_handler", Code={"ZipFile": code.getvalue()})
    proxy = FaultProxy(moto_url).start()
    try:
        yield Deployment(resolver, proxy, monkeypatch, [])
    finally:
        proxy.stop()


def _ingest_queue(deployed: Deployment) -> None:
    from customer_context_devtools.local.sqs_trigger import sqs_event

    url = deployed.resolver.names["EventsQueue"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-events"
    messages = _drain(url)
    assert messages
    assert deployed.invoke("IngestFunction", sqs_event(messages, arn, REGION)) == {"batchItemFailures": []}


def _record_lambda_invocations(deployed: Deployment) -> Callable[[], None]:
    """Observe (not replace) the regulation API's calls to Lambda Invoke: the request still goes to moto."""
    def hook() -> None:
        def record(params: dict[str, Any], **_: Any) -> None:
            deployed.invocations.append(dict(params))

        wiring.boto_client("lambda").meta.events.register("provide-client-params.lambda.Invoke", record)

    return hook


def test_the_chain_runs_on_the_templates_defaults(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    with every_log_record() as logs:
        _the_chain(deployed, monkeypatch)
    # And no record the functions logged on the way, at any level, names the customer or a key
    assert {"collected", "ingested", "records loaded", "build finished", "regulation filed"} <= logs.messages(
        logging.INFO)
    text = logs.text.lower()
    for secret in ("ada@example.com", "u_000001", "6f2c8f7e-2f51-4b55-9d0a-0b8d4e0c1a11", "crm-7730", "wk_sample",
                   "ck_sample"):
        assert secret not in text, secret


def _the_chain(deployed: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_context.serve.consumers import consumer_item, hash_key

    from tests.reliability.test_kill_then_maintain import _clock_moved

    env = deployed.environment("IngestFunction")
    assert env["CUSTOMER_CONTEXT_CATALOG_TYPE"] == "glue" and env["CUSTOMER_CONTEXT_CATALOG_URI"] == ""
    assert env["CUSTOMER_CONTEXT_WAREHOUSE"] == f"s3://{STACK}-{ACCOUNT}-{REGION}/warehouse"
    # Given the collect sample, authenticated by a write key read from SSM Parameter Store
    status, body = deployed.http("CollectFunction", load_event("collect_batch.json"))
    assert status == 200 and body["accepted"] == 3
    # When ingest takes the queued messages: Iceberg tables in the Glue catalog, data files in S3
    _ingest_queue(deployed)
    lakehouse = wiring.lakehouse()
    assert type(lakehouse.catalog).__name__ == "GlueCatalog"
    glue_tables = wiring.boto_client("glue").get_tables(DatabaseName="customer_context_dev")["TableList"]
    assert {"events", "rejected_events"} <= {t["Name"] for t in glue_tables}
    events = lakehouse.table("events")
    assert events.location().startswith(f"s3://{STACK}-{ACCOUNT}-{REGION}/warehouse/")
    assert events.scan().to_arrow().num_rows == 3
    # And a CRM file dropped under imports/ is loaded from the S3 notification
    s3_event = load_event("load_records_s3.json")
    bucket = s3_event["Records"][0]["s3"]["bucket"]["name"] = f"{STACK}-{ACCOUNT}-{REGION}"
    wiring.boto_client("s3").put_object(
        Bucket=bucket, Key="imports/crm_contacts/crm export 2026-11-24.csv",
        Body=b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
             b"CRM-7730,ada@example.com,Ada,vip,,2026-11-01T00:00:00Z\n")
    assert deployed.invoke("LoadRecordsFunction", s3_event)["files"][0]["loaded"] == 1
    # When EventBridge Scheduler fires the build (its real event: source aws.scheduler, detail the string "{}")
    schedule = load_event("build_context_schedule.json")
    assert schedule["source"] == "aws.scheduler" and schedule["detail"] == "{}"
    report = deployed.invoke("BuildContextFunction", schedule)
    assert report["profiles"] == 1 and report["changed_profiles"] == 1  # the CRM row joined her by email
    # Then the customer is served by email through fetch_context
    wiring.context_store().put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("sample", ["*"], []))
    wiring.context_store().put_consumer(hash_key("ck_sample_admin_key"), consumer_item("dpo", [], [], admin=True))
    status, served = deployed.http("FetchContextFunction", load_event("fetch_context_get.json"))
    assert status == 200 and served["context"]["traits"]["orders_90d"] == 1
    status, records = deployed.http("FetchContextFunction", _api_event(
        "fetch_context_get.json", rawQueryString="sections=records", queryStringParameters={"sections": "records"}))
    assert status == 200 and records["context"]["records"]["crm_contacts"]["contact_id"] == "CRM-7730"
    profile = served["profile_id"]

    # When the customer's deletion is filed: the API invokes the regulate function asynchronously
    response = deployed.invoke("RegulateFunction", load_event("regulate_post.json"),
                               before=_record_lambda_invocations(deployed))
    filed = json.loads(response["body"])
    assert response["statusCode"] == 202 and filed["job"] == f"lambda:{STACK}-regulate"
    # Then that invocation is exactly what events/regulate_job.json shows: an Event invocation of the function
    [invocation] = deployed.invocations
    sample = load_event("regulate_job.json")
    payload = json.loads(invocation["Payload"])
    assert invocation["FunctionName"] == f"{STACK}-regulate"
    assert invocation["InvocationType"] == "Event"
    assert set(payload) == set(sample) and payload["regulation_id"] == filed["id"]
    assert re.fullmatch(r"reg_[0-9a-f]{20}", sample["regulation_id"]) and re.fullmatch(r"reg_[0-9a-f]{20}",
                                                                                      filed["id"])
    # When the function runs that job (the sample, for this regulation)
    done = deployed.invoke("RegulateFunction", {**sample, "regulation_id": filed["id"]})
    # Then it is done: no row of the customer is left in the lakehouse, nothing is served
    assert done["status"] == "done", done
    lakehouse = wiring.lakehouse()
    left = [r for r in lakehouse.scan("events").to_pylist() if r["user_id"] == "u_000001"]
    assert left == [] and lakehouse.scan("crm_contacts").num_rows == 0
    status, _ = deployed.http("FetchContextFunction", load_event("fetch_context_get.json"))
    assert status == 404
    assert wiring.context_store().get_snapshot(profile) is None
    status, state = deployed.http("RegulateFunction", _api_event("regulate_get.json",
                                                                rawPath=f"/v1/regulations/{filed['id']}"))
    assert status == 200 and state["status"] == "done"

    # Given a file in the events table's data folder that no snapshot references (a writer died before commit)
    location = wiring.lakehouse().table("events").location().removeprefix(f"s3://{bucket}/")
    wiring.boto_client("s3").put_object(Bucket=bucket, Key=f"{location}/data/stray.parquet", Body=b"orphan")
    before = sorted(r["message_id"] for r in wiring.lakehouse().scan("events").to_pylist())
    # When the Scheduler fires maintain more than the retention later
    schedule = load_event("maintain_schedule.json")
    assert schedule["source"] == "aws.scheduler" and schedule["detail"] == "{}"
    _clock_moved(monkeypatch, 8 * 86400)
    result = deployed.invoke("MaintainFunction", schedule)
    # Then every table was maintained on S3, the orphan is gone — deleted through the catalog's S3 endpoint,
    # like every other warehouse call — and no row is
    assert set(result["tables"]) == set(wiring.lakehouse().table_names())
    assert result["tables"]["events"]["orphans_removed"] >= 1
    assert deployed.s3_endpoint.count("DELETE", "/data/stray.parquet") == 1
    listed = wiring.boto_client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{location}/data/")
    assert f"{location}/data/stray.parquet" not in {o["Key"] for o in listed.get("Contents", [])}
    assert sorted(r["message_id"] for r in wiring.lakehouse().scan("events").to_pylist()) == before


def test_a_malformed_write_keys_parameter_is_a_reason_naming_the_parameter_never_a_key(
        deployed: Deployment) -> None:
    # Given the SSM parameter holding a key without its source
    parameter = f"/{STACK}/write-keys"
    wiring.boto_client("ssm").put_parameter(Name=parameter, Type="SecureString", Overwrite=True,
                                             Value=f"wk_live_ok=web,{WRITE_KEY}")
    # When an SDK sends events with that key
    with every_log_record() as logs:
        status, body = deployed.http("CollectFunction", load_event("collect_batch.json"))
    # Then the answer is a configuration error naming the parameter and the item, not the key
    assert status == 500 and body["code"] == "configuration_error"
    assert parameter in body["message"] and "item 2" in body["message"]
    for key in ("wk_live_ok", WRITE_KEY):
        assert key not in body["message"] and key not in logs.text
    assert base64.b64encode(f"{WRITE_KEY}:".encode()).decode() not in logs.text


def test_the_schedule_samples_are_what_the_templates_schedules_deliver() -> None:
    resolver = Resolver({})
    for function, sample in (("BuildContextFunction", "build_context_schedule.json"),
                             ("MaintainFunction", "maintain_schedule.json")):
        [schedule] = resolver.template["Resources"][function]["Properties"]["Events"].values()
        # an EventBridge Scheduler schedule without Input: Lambda gets the Scheduler's default notification
        assert schedule["Type"] == "ScheduleV2" and "Input" not in schedule["Properties"]
        name = resolver.resolve(schedule["Properties"]["Name"])
        event = load_event(sample)
        assert event["source"] == "aws.scheduler" and event["detail-type"] == "Scheduled Event"
        assert event["detail"] == "{}" and event["account"] == ACCOUNT and event["region"] == REGION
        assert event["resources"] == [f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{name}"]
