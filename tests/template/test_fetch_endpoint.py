"""FetchEndpoint: `api` (the default, today's HTTP API only) and `both` (also a Lambda function URL) both lint
and render; the URL exists only with `both`, is public (the handler checks consumer keys), and has CORS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

TEMPLATE = REPO / "template.yaml"
URL_RESOURCES = {"FetchContextUrl", "FetchContextUrlPermission", "FetchContextUrlInvokePermission"}


def _with_default(tmp_path: Path, value: str) -> Path:
    """template.yaml with FetchEndpoint defaulting to ``value`` (how a deployment with that setting renders)."""
    text = TEMPLATE.read_text()
    block = "  FetchEndpoint:\n    Type: String\n    Default: api\n"
    assert block in text
    path = tmp_path / f"template-{value}.yaml"
    path.write_text(text.replace(block, f"  FetchEndpoint:\n    Type: String\n    Default: {value}\n"))
    return path


SAM_PYTHON = REPO / ".venv-sam" / "bin" / "python"
RENDER = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class Policies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
# what `sam package` puts in place of the local code folders and images
for resource in template["Resources"].values():
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::Serverless::Function":
        if props.get("PackageType") == "Image":
            props["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/customer-context:latest"
        else:
            props["CodeUri"] = "s3://bucket/code.zip"
    elif resource["Type"] == "AWS::Serverless::LayerVersion":
        props["ContentUri"] = "s3://bucket/layer.zip"
print(json.dumps(transform(template, {"FetchEndpoint": sys.argv[2]}, Policies())))
"""


def _rendered(path: Path, value: str) -> dict[str, Any]:
    """The CloudFormation SAM renders (the SAM translator the SAM CLI uses), with the resources whose condition
    is false for ``value`` left out."""
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([str(SAM_PYTHON), "-c", RENDER, str(path), value], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    conditions = {name: cond["Fn::Equals"] for name, cond in rendered["Conditions"].items()
                  if "Fn::Equals" in cond and cond["Fn::Equals"][0] == {"Ref": "FetchEndpoint"}}
    kept = {name: res for name, res in rendered["Resources"].items()
            if res.get("Condition") not in conditions or conditions[res["Condition"]][1] == value}
    return rendered | {"Resources": kept}


@pytest.mark.skipif(not SAM_PYTHON.exists(), reason="the SAM CLI (and its translator) is installed by `make test` "
                                                   "into .venv-sam; run through make to include this check")
@pytest.mark.parametrize("value", ["api", "both"])
def test_each_setting_lints_and_renders(tmp_path: Path, value: str) -> None:
    path = _with_default(tmp_path, value)
    lint = subprocess.run([Path(sys.executable).parent / "cfn-lint", str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    resources = _rendered(path, value)["Resources"]
    # the HTTP API routes of fetch stay in both (an unused route costs nothing: HTTP APIs bill per request)
    assert "FetchContextFunctionContextPermission" in resources
    if value == "api":
        assert not URL_RESOURCES & set(resources)
    else:
        assert set(resources) >= URL_RESOURCES


def test_the_function_url_is_public_with_cors_and_both_permissions() -> None:
    from customer_context_devtools.local.template import template

    tpl = template()
    assert tpl["Parameters"]["FetchEndpoint"]["Default"] == "api"
    url = tpl["Resources"]["FetchContextUrl"]
    assert url["Condition"] == "FetchFunctionUrl"
    assert url["Properties"]["AuthType"] == "NONE"  # the handler authenticates every request
    assert url["Properties"]["TargetFunctionArn"] == {"GetAtt": "FetchContextFunction.Arn"}
    cors = url["Properties"]["Cors"]
    assert cors["AllowOrigins"] == {"Ref": "CorsAllowOrigins"} and "authorization" in cors["AllowHeaders"]
    permissions = {tpl["Resources"][name]["Properties"]["Action"] for name in URL_RESOURCES - {"FetchContextUrl"}}
    assert permissions == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert yaml.safe_dump(tpl["Outputs"]["ContextFunctionUrl"]["Value"]) == "GetAtt: FetchContextUrl.FunctionUrl\n"
