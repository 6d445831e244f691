"""template.yaml: lints clean, matches the code (handlers, layers, routes, sample events), and builds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from customer_context_devtools.local.routes import ROUTES

from tests.conftest import EVENTS, REPO

TEMPLATE = REPO / "template.yaml"
SAM = REPO / ".venv-sam" / "bin" / "sam"


def _template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, matches = decode(str(TEMPLATE))
    assert not matches, matches
    return template


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in _template()["Resources"].items() if res["Type"] == kind}


def _python312_dir() -> str | None:
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.12*/bin")) + [Path("/usr/local/bin")]:
        if (candidate / "python3.12").exists():
            return str(candidate)
    return None


DEV_PACKAGE = "customer_context_devtools"
DEV_MODULES = sorted(p.relative_to(REPO / "devtools" / DEV_PACKAGE).as_posix()
                     for p in (REPO / "devtools" / DEV_PACKAGE).rglob("*.py") if p.name != "__init__.py")


def _dev_tools_in(tree: Path) -> list[str]:
    """What of the developer tools a deployed tree holds: their package, or any of their modules at the path it
    had inside ``customer_context`` (cli.py, local/stack.py, demo/run.py, …)."""
    found = [p.relative_to(tree).as_posix() for p in tree.rglob(DEV_PACKAGE)]
    return found + [f"customer_context/{m}" for m in DEV_MODULES if (tree / "customer_context" / m).exists()]


def _image_tree(tmp_path: Path) -> Path:
    """The analytics image's task root as its Dockerfile's COPY lines from the repository make it (without Docker:
    the pip-installed requirements are left out, they are third-party packages)."""
    root = tmp_path / "task_root"
    for line in (REPO / "layers" / "analytics" / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("/tmp/") for w in words[-1:]):
            continue
        *sources, target = words[1:]
        destination = root / target.replace("${LAMBDA_TASK_ROOT}", "").strip("/")
        for source in sources:
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, destination, dirs_exist_ok=True)
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, destination)
    return root


def test_the_analytics_image_holds_the_package_but_not_the_developer_tools(tmp_path: Path) -> None:
    image = _image_tree(tmp_path)
    assert (image / "customer_context" / "assemble" / "build.py").is_file()
    assert (image / "functions" / "build_context" / "app.py").is_file()
    assert _dev_tools_in(image) == []
    # the check can fail: a tree holding a developer module is reported
    shutil.copy(REPO / "devtools" / DEV_PACKAGE / "cli.py", image / "customer_context" / "cli.py")
    assert _dev_tools_in(image) == ["customer_context/cli.py"]


def _handler(props: dict[str, Any]) -> tuple[Path, str]:
    """The handler's file and function: from CodeUri + Handler (zip) or ImageConfig.Command (image, the path
    under the image's task root, which holds functions/ as in the repository)."""
    if props.get("PackageType") == "Image":
        module, _, attr = props["ImageConfig"]["Command"][0].rpartition(".")
        return REPO / f"{module.replace('.', '/')}.py", attr
    module, _, attr = props["Handler"].rpartition(".")
    return REPO / props["CodeUri"] / f"{module}.py", attr


def test_cfn_lint_passes() -> None:
    result = subprocess.run([Path(sys.executable).parent / "cfn-lint", str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not SAM.exists(), reason="the SAM CLI is installed by `make test` into .venv-sam; "
                                            "run through make to include this check")
def test_sam_validate_lint_passes() -> None:
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", AWS_DEFAULT_REGION="us-east-1")
    result = subprocess.run([str(SAM), "validate", "--lint", "-t", str(TEMPLATE)], capture_output=True, text=True,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_function_handler_exists_and_has_sample_events() -> None:
    functions = _resources("AWS::Serverless::Function")
    assert functions, "no functions declared"
    samples = {p.name for p in EVENTS.glob("*.json")}
    for name, res in functions.items():
        code, attr = _handler(res["Properties"])
        assert code.is_file(), f"{name}: handler file {code} missing"
        assert f"def {attr}(" in code.read_text(), f"{name}: {attr} not defined in {code}"
        short = code.parent.name
        assert any(s.startswith(short) for s in samples), f"{name}: no sample event events/{short}*.json"


def test_every_layer_has_a_build_method_and_requirements() -> None:
    layers = _resources("AWS::Serverless::LayerVersion")
    # the analytics dependencies do not fit a zip function: those functions are images (tests/template/test_package.py)
    assert set(layers) == {"CoreLayer"}
    for name, res in layers.items():
        assert res["Metadata"]["BuildMethod"] in res["Properties"]["CompatibleRuntimes"], name
        assert (REPO / res["Properties"]["ContentUri"] / "requirements.txt").is_file(), name


def test_serving_functions_get_only_the_core_layer() -> None:
    functions = _resources("AWS::Serverless::Function")
    for name in ("CollectFunction", "FetchContextFunction"):
        assert functions[name]["Properties"]["Layers"] == [{"Ref": "CoreLayer"}], name


def test_local_routes_match_the_template() -> None:
    declared = set()
    for res in _resources("AWS::Serverless::Function").values():
        function = _handler(res["Properties"])[0].parent.name
        for event in res["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                declared.add((event["Properties"]["Method"], event["Properties"]["Path"], function))
    assert declared == {(r.method, r.path, r.function) for r in ROUTES}


def test_cors_origins_are_one_parameter_defaulting_as_the_local_setting() -> None:
    from customer_context.config import Settings

    template = _template()
    parameter = template["Parameters"]["CorsAllowOrigins"]
    assert parameter["Type"] == "CommaDelimitedList"
    assert parameter["Default"] == Settings.model_fields["cors_allow_origins"].default == "*"
    cors = template["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]
    assert cors["AllowOrigins"] == {"Ref": "CorsAllowOrigins"}
    # every header named: a `*` would not cover authorization
    assert "*" not in cors["AllowHeaders"] and "authorization" in cors["AllowHeaders"]


def test_queue_has_a_dead_letter_queue_and_ingest_reports_item_failures() -> None:
    queue = _template()["Resources"]["EventsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
    ingest = _template()["Resources"]["IngestFunction"]["Properties"]["Events"]["Queue"]["Properties"]
    assert ingest["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_failed_record_drops_and_interrupted_uploads_are_not_left_behind() -> None:
    # load_records is invoked asynchronously by S3: what fails past its retries goes to a queue
    invoke = _template()["Resources"]["LoadRecordsFunction"]["Properties"]["EventInvokeConfig"]
    assert invoke["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    assert "LoadRecordsFailures" in str(invoke["DestinationConfig"]["OnFailure"]["Destination"])
    # multipart uploads of Iceberg files that never completed are aborted, not billed forever
    rules = _template()["Resources"]["WarehouseBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules)


def test_context_table_from_the_template_key_schema_works_in_moto(aws: str) -> None:
    # Given the DynamoDB table exactly as the template declares it
    props = _template()["Resources"]["ContextTable"]["Properties"]
    from customer_context import wiring

    ddb = wiring.boto_client("dynamodb")
    ddb.create_table(TableName="ctx-template-test", KeySchema=props["KeySchema"],
                     AttributeDefinitions=props["AttributeDefinitions"], BillingMode=props["BillingMode"])
    # Then items keyed by it can be written and read back
    ddb.put_item(TableName="ctx-template-test", Item={"pk": {"S": "profile#1"}, "sk": {"S": "snapshot"}})
    item = ddb.get_item(TableName="ctx-template-test", Key={"pk": {"S": "profile#1"}, "sk": {"S": "snapshot"}})
    assert item["Item"]["pk"]["S"] == "profile#1"
    assert props["TimeToLiveSpecification"]["Enabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


@pytest.mark.slow
@pytest.mark.skipif(not SAM.exists(), reason="the SAM CLI is installed by `make test` into .venv-sam")
@pytest.mark.skipif(_python312_dir() is None, reason="sam build without Docker needs a python3.12 interpreter, "
                                                     "and this machine has none")
def test_sam_build_of_the_collect_function_and_core_layer(tmp_path: Path) -> None:
    # Given the SAM CLI and the runtime's interpreter on PATH (no container)
    env = dict(os.environ, SAM_CLI_TELEMETRY="0", AWS_DEFAULT_REGION="us-east-1",
               PATH=f"{_python312_dir()}:{os.environ['PATH']}")
    build_dir = tmp_path / "build"
    # When the collect function is built with its layer
    result = subprocess.run([str(SAM), "build", "CollectFunction", "--build-dir", str(build_dir),
                             "--cache-dir", str(tmp_path / "cache"), "-t", str(TEMPLATE)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Then the handler and the package with its dependencies are where Lambda looks for them
    assert (build_dir / "CollectFunction" / "app.py").is_file()
    layer = build_dir / "CoreLayer" / "python"
    assert (layer / "customer_context" / "collect" / "service.py").is_file()
    assert (layer / "aws_lambda_powertools").is_dir() and (layer / "pydantic").is_dir()
    # and the developer tools (CLI, local stack, demo, cost model) are not deployed
    assert _dev_tools_in(layer) == []
    shutil.rmtree(build_dir, ignore_errors=True)
