"""The context options (API keys, access logs, input buckets, x86 CPU workers, no SSM) synthesize nag-clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPTIONS = {"apiKeys": True, "bucketAccessLogs": True, "workerSsm": False, "apiCloudWatchRole": False,
           "allowedBuckets": "in-a,in-b", "cpuArch": "x86_64", "cpuInstanceType": "m7i.large",
           "jobDataRetentionDays": 7, "account": "123456789012", "region": "eu-west-1"}


def test_every_option_on(tmp_path: Path) -> None:
    import aws_cdk as cdk
    from aws_cdk.assertions import Match, Template

    from app import build_app, file_context

    app, stack = build_app(cdk.App(outdir=str(tmp_path), context={**file_context(), **OPTIONS}))
    app.synth()  # raises if cdk-nag finds anything unacknowledged
    template: Any = Template.from_stack(stack)
    template.resource_count_is("AWS::ApiGateway::UsagePlan", 1)
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    template.has_resource_properties("AWS::ApiGateway::Method", {"ApiKeyRequired": True,
                                                                  "AuthorizationType": "AWS_IAM"})
    template.resource_count_is("AWS::ApiGateway::Account", 0)
    template.has_resource_properties("AWS::S3::Bucket", {
        "LoggingConfiguration": Match.object_like({"LogFilePrefix": "jobs/"}),
        "LifecycleConfiguration": {"Rules": Match.array_with([Match.object_like({"ExpirationInDays": 7})])}})
    template.has_resource_properties("AWS::IAM::Policy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Action": "s3:GetObject", "Resource": Match.array_with([
            {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::in-a/*"]]}])})])}})
