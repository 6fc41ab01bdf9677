"""The context options (API keys, access logs, input buckets, x86 CPU workers, no SSM) synthesize nag-clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dcc.scaling import Config
from functions.scaler.handler import config_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPTIONS = {"apiKeys": True, "bucketAccessLogs": True, "workerSsm": False, "apiCloudWatchRole": False,
           "allowedBuckets": "in-a,in-b", "cpuArch": "x86_64", "cpuInstanceType": "m7i.4xlarge",
           "gpuInstanceType": "g6.12xlarge",
           "jobDataRetentionDays": 7, "account": "123456789012", "region": "eu-west-1",
           "cpuIdleSeconds": 300, "gpuIdleSeconds": "120", "scaleDownInterval": 0, "drain": "false",
           "gpuDockerRuntime": "nvidia"}


def test_every_option_on(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk.assertions import Match, Template

    from app import build_app, file_context

    app, stack = build_app(cdk.App(outdir=str(tmp_path), context={**file_context(), **OPTIONS}))
    app.synth()  # raises if cdk-nag finds anything unacknowledged
    template: Any = Template.from_stack(stack)
    template.resource_count_is("AWS::ApiGateway::UsagePlan", 1)
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    [key] = template.find_resources("AWS::ApiGateway::ApiKey")
    assert template.to_json()["Outputs"]["ApiKeyId"]["Value"] == {"Ref": key}  # what get-api-key needs
    template.has_resource_properties("AWS::ApiGateway::Method", {"ApiKeyRequired": True,
                                                                  "AuthorizationType": "AWS_IAM"})
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    template.has_resource_properties("AWS::S3::Bucket", {
        "LoggingConfiguration": Match.object_like({"LogFilePrefix": "jobs/"}),
        "LifecycleConfiguration": {"Rules": Match.array_with([Match.object_like({"ExpirationInDays": 7})])}})
    template.has_resource_properties("AWS::IAM::Policy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Action": "s3:GetObject", "Resource": Match.array_with([
            {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::in-a/*"]]}])})])}})
    # the instance types' counts reach the API (GPU limit) and the scaler (slots before workers report)
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "functions.api.handler.lambda_handler",
        "Environment": {"Variables": Match.object_like({"DCC_MAX_GPUS_PER_WORKER": "4"})}})
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "functions.scaler.handler.lambda_handler",
        "Environment": {"Variables": Match.object_like({"DCC_CPU_SLOTS": "16", "DCC_GPU_SLOTS": "4"})}})
    template.has_resource_properties("AWS::EC2::LaunchTemplate", {
        "LaunchTemplateData": Match.object_like({"InstanceType": "g6.12xlarge"})})
    # the legacy nvidia runtime reaches the GPU workers' environment, and only theirs
    data = {t["Properties"]["LaunchTemplateData"]["InstanceType"]: json.dumps(t["Properties"]["LaunchTemplateData"])
            for t in template.find_resources("AWS::EC2::LaunchTemplate").values()}
    assert 'DCC_GPU_RUNTIME=\\"nvidia\\"' in data["g6.12xlarge"] and 'DCC_GPU_RUNTIME=\\"\\"' in data["m7i.4xlarge"]
    # the scaler's knobs, as its handler reads them; those not given keep the policy's defaults
    [scaler] = [f for f in template.find_resources("AWS::Lambda::Function").values()
                if f["Properties"]["Handler"] == "functions.scaler.handler.lambda_handler"]
    env = {k: v for k, v in scaler["Properties"]["Environment"]["Variables"].items() if isinstance(v, str)}
    cpu, gpu = config_for("cpu", env), config_for("gpu", env)
    assert (cpu.idle_seconds, gpu.idle_seconds, cpu.scale_down_interval, cpu.drain) == (300, 120, 0, False)
    assert (cpu.health_grace_seconds, cpu.drain_age_seconds) == (Config().health_grace_seconds, 0)


@pytest.mark.parametrize(("key", "value"), [("cpuIdleSeconds", -5), ("drainAgeSeconds", "soon"),
                                            ("gpuIdleSeconds", "nan"), ("drain", "maybe"),
                                            ("gpuDockerRuntime", "nvidia; reboot")])
def test_a_bad_option_names_its_context_key(tmp_path: Path, key: str, value: Any) -> None:
    import aws_cdk as cdk

    from app import build_app, file_context

    with pytest.raises(ValueError, match=key):
        build_app(cdk.App(outdir=str(tmp_path), context={**file_context(), key: value}))


def test_a_worker_type_whose_counts_are_unknown_names_the_context_key(tmp_path: Path) -> None:
    import aws_cdk as cdk

    from app import build_app, file_context

    with pytest.raises(ValueError, match="cpuVcpus"):
        build_app(cdk.App(outdir=str(tmp_path), context={**file_context(), "cpuInstanceType": "t4g.large"}))
