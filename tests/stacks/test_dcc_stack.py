"""The synthesized dcc stack: security settings, IAM per role, APIs, workers, nag and cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def resources(synth: Any, kind: str) -> dict[str, dict[str, Any]]:
    return dict(synth.template.find_resources(kind))


def statements_of(synth: Any, role_prefix: str) -> list[dict[str, Any]]:
    """Every policy statement attached to the role whose logical id starts with ``role_prefix``."""
    found = []
    for policy in resources(synth, "AWS::IAM::Policy").values():
        roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    assert found, f"no policy for {role_prefix}"
    return found


def actions(statements: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for s in statements:
        acts = s["Action"]
        out.update([acts] if isinstance(acts, str) else acts)
    return out


# --- storage -------------------------------------------------------------------------------------------------

def test_bucket_is_encrypted_private_and_expires_job_data(synth: Any) -> None:
    synth.template.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "LifecycleConfiguration": {"Rules": Match.array_with([Match.object_like({
            "Id": "expire-job-data", "Prefix": "jobs-data/", "ExpirationInDays": 30, "Status": "Enabled"})])},
    })


def test_bucket_policy_denies_plain_http(synth: Any) -> None:
    synth.template.has_resource_properties("AWS::S3::BucketPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Action": "s3:*",
                           "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})


# --- Redis ---------------------------------------------------------------------------------------------------

def test_redis_encrypts_in_transit_and_at_rest_with_a_secret_token(synth: Any) -> None:
    groups = resources(synth, "AWS::ElastiCache::ReplicationGroup")
    assert len(groups) == 1
    props = next(iter(groups.values()))["Properties"]
    assert props["TransitEncryptionEnabled"] is True
    assert props["AtRestEncryptionEnabled"] is True
    assert props["Port"] == 6379
    token = json.dumps(props["AuthToken"])
    assert "{{resolve:secretsmanager:" in token  # a dynamic reference, never the token itself
    assert props["MultiAZEnabled"] is True and props["AutomaticFailoverEnabled"] is True
    # full: writes refused, records never evicted
    [(name, parameters)] = resources(synth, "AWS::ElastiCache::ParameterGroup").items()
    assert parameters["Properties"]["Properties"] == {"maxmemory-policy": "noeviction"}
    assert parameters["Properties"]["CacheParameterGroupFamily"] == "redis7" and props["EngineVersion"].startswith("7")
    assert props["CacheParameterGroupName"] == {"Ref": name}


def test_redis_port_open_only_to_functions_and_workers(synth: Any) -> None:
    redis_sg = [k for k in resources(synth, "AWS::EC2::SecurityGroup") if k.startswith("RedisSecurityGroup")]
    assert len(redis_sg) == 1
    ingress = resources(synth, "AWS::EC2::SecurityGroupIngress")
    to_redis = [r["Properties"] for r in ingress.values()
                if r["Properties"]["GroupId"] == {"Fn::GetAtt": [redis_sg[0], "GroupId"]}]
    sources = sorted(p["SourceSecurityGroupId"]["Fn::GetAtt"][0] for p in to_redis)
    assert all(p["FromPort"] == p["ToPort"] == 6379 and p["IpProtocol"] == "tcp" for p in to_redis)
    assert [s.split("SecurityGroup")[0] for s in sources] == [
        "ApiFunction", "ScalerFunction", "WebSocketFunction", "Workers"]
    sg = synth.template.to_json()["Resources"][redis_sg[0]]["Properties"]
    assert "SecurityGroupIngress" not in sg  # no inline (CIDR) rules


# --- workers -------------------------------------------------------------------------------------------------

def test_launch_templates_require_imdsv2_and_encrypt_the_root_volume(synth: Any) -> None:
    templates = resources(synth, "AWS::EC2::LaunchTemplate")
    assert len(templates) == 2
    for template in templates.values():
        data = template["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
        [device] = data["BlockDeviceMappings"]
        assert device["Ebs"] == {"Encrypted": True, "VolumeSize": 100, "VolumeType": "gp3",
                                 "DeleteOnTermination": True}
        assert "UserData" in data


def test_groups_leave_desired_capacity_to_the_scaler(synth: Any) -> None:
    groups = resources(synth, "AWS::AutoScaling::AutoScalingGroup")
    assert len(groups) == 2
    for group in groups.values():
        assert "DesiredCapacity" not in group["Properties"]
    gpu = next(g["Properties"] for k, g in groups.items() if k.startswith("WorkersGpuGroup"))
    assert gpu["MinSize"] == "0"


def test_gpu_image_is_the_ecs_gpu_al2023_parameter(synth: Any) -> None:
    params = synth.template.to_json()["Parameters"]
    assert any(p.get("Default") == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
               for p in params.values())


def test_worker_role_is_scoped(synth: Any) -> None:
    statements = statements_of(synth, "WorkersRole")
    acts = actions(statements)
    assert not any(a == "*" or a.endswith(":*") for a in acts)
    assert {"s3:GetObject", "s3:PutObject", "secretsmanager:GetSecretValue", "ecr:BatchGetImage",
            "autoscaling:SetInstanceProtection"} <= acts
    assert not any(a.startswith(("autoscaling:SetDesired", "iam:", "ec2:")) for a in acts)
    for s in statements:
        if s["Resource"] == "*":
            assert s["Action"] == "ecr:GetAuthorizationToken"  # the one action AWS allows only on "*"


def function_env(synth: Any, handler: str) -> dict[str, Any]:
    return next(f["Properties"]["Environment"]["Variables"] for f in resources(synth, "AWS::Lambda::Function").values()
                if f["Properties"].get("Handler") == handler)


def test_tes_tasks_use_their_own_prefix_of_the_bucket(synth: Any) -> None:
    # the API checks task URLs against DCC_TES_LOCATIONS; workers read and write only there (and job data)
    env = function_env(synth, "functions.api.handler.lambda_handler")
    assert json.dumps(env["DCC_TES_LOCATIONS"]).endswith('"/tes/"]]}')
    writes = [s for s in statements_of(synth, "WorkersRole") if "s3:PutObject" in s["Action"]]
    resources_text = json.dumps([s["Resource"] for s in writes])
    assert '"/jobs-data/*"' in resources_text and '"/tes/*"' in resources_text
    templates = resources(synth, "AWS::EC2::LaunchTemplate")
    assert all("DCC_TES_LOCATIONS=" in json.dumps(t["Properties"]["LaunchTemplateData"]["UserData"])
               for t in templates.values())


def test_the_api_refuses_jobs_asking_more_gpus_than_a_gpu_worker_has(synth: Any) -> None:
    for handler in ("functions.api.handler.lambda_handler", "functions.api.websocket.lambda_handler"):
        assert function_env(synth, handler)["DCC_MAX_GPUS_PER_WORKER"] == "1"  # g5.xlarge: one GPU


def test_worker_user_data_renders_the_bootstrap(synth: Any) -> None:
    templates = resources(synth, "AWS::EC2::LaunchTemplate")
    text = json.dumps([t["Properties"]["LaunchTemplateData"]["UserData"] for t in templates.values()])
    assert "__DCC_" not in text
    assert "python3 -m worker_agent" in text and "Restart=on-failure" in text


# --- functions and scaler ------------------------------------------------------------------------------------

def test_functions_run_python312_on_arm64_in_the_vpc(synth: Any) -> None:
    functions = {k: f for k, f in resources(synth, "AWS::Lambda::Function").items()
                 if f["Properties"]["Handler"].startswith("functions.")}  # not CDK's custom-resource providers
    handlers = sorted(f["Properties"]["Handler"] for f in functions.values())
    assert handlers == ["functions.api.handler.lambda_handler", "functions.api.websocket.lambda_handler",
                        "functions.scaler.handler.lambda_handler"]
    for f in functions.values():
        props = f["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]
        assert props["VpcConfig"]["SubnetIds"]
        env = props["Environment"]["Variables"]
        assert {"POWERTOOLS_SERVICE_NAME", "LOG_LEVEL", "POWERTOOLS_METRICS_NAMESPACE", "REDIS_URL",
                "DCC_REDIS_SECRET_ARN", "DCC_STORAGE", "DCC_ALLOWED_BUCKETS"} <= set(env)
        assert json.dumps(env["REDIS_URL"]).startswith('{"Fn::Join": ["", ["rediss://"')


def test_scaler_may_set_capacity_and_runs_every_minute(synth: Any) -> None:
    acts = actions(statements_of(synth, "ScalerFunctionRole"))
    assert {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
            "autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"} <= acts
    assert not any(a == "*" or a.endswith(":*") for a in acts)
    # until workers report their slots, the scaler sizes groups by the instance types' (m7g.large, g5.xlarge)
    env = function_env(synth, "functions.scaler.handler.lambda_handler")
    assert (env["DCC_CPU_SLOTS"], env["DCC_GPU_SLOTS"]) == ("2", "1")
    rules = resources(synth, "AWS::Events::Rule")
    [rule] = rules.values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0].startswith("ScalerFunction")


def test_websocket_function_manages_its_connections(synth: Any) -> None:
    statements = statements_of(synth, "WebSocketFunctionRole")
    manage = [s for s in statements if s["Action"] == "execute-api:ManageConnections"]
    assert manage and "@connections" in json.dumps(manage[0]["Resource"])
    assert "autoscaling:SetDesiredCapacity" not in actions(statements)
    # it reads a finished job's result.json once the record expired, and writes nothing there
    reads = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert reads and "/jobs-data/*" in json.dumps(reads[0]["Resource"])
    assert not {"s3:PutObject", "s3:DeleteObject"} & actions(statements)


def test_api_role_has_no_wildcard_actions(synth: Any) -> None:
    acts = actions(statements_of(synth, "ApiFunctionRole"))
    assert not any(a == "*" or a.endswith(":*") for a in acts)
    assert "s3:GetObject" in acts and "secretsmanager:GetSecretValue" in acts


# --- APIs ----------------------------------------------------------------------------------------------------

def test_rest_methods_use_iam(synth: Any) -> None:
    methods = resources(synth, "AWS::ApiGateway::Method")
    assert len(methods) == 2
    assert all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in methods.values())


def test_rest_api_returns_logs_and_files_as_binary(synth: Any) -> None:
    # the function sends bytes base64-encoded; API Gateway decodes them only for the binary media types
    synth.template.has_resource_properties("AWS::ApiGateway::RestApi", {"BinaryMediaTypes": ["*/*"]})
    # (so a request reaches the function base64-encoded: inline inputs are held to what fits in its payload)
    assert function_env(synth, "functions.api.handler.lambda_handler")["DCC_MAX_INLINE_BYTES"] == str(3 << 20)


def test_smoke_jobs_pull_from_ecr_public_not_docker_hub(synth: Any) -> None:
    assert function_env(synth, "functions.api.handler.lambda_handler")["DCC_SMOKE_IMAGE"].startswith("public.ecr.aws/")


def test_rest_stage_throttles_and_logs(synth: Any) -> None:
    synth.template.has_resource_properties("AWS::ApiGateway::Stage", {
        "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("requestId")},
        "MethodSettings": Match.array_with([Match.object_like({
            "ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100, "LoggingLevel": "ERROR"})]),
    })


def test_websocket_routes_and_stage(synth: Any) -> None:
    routes = resources(synth, "AWS::ApiGatewayV2::Route")
    keys = {r["Properties"]["RouteKey"]: r["Properties"] for r in routes.values()}
    assert set(keys) == {"$connect", "$disconnect", "subscribe", "unsubscribe", "$default"}
    assert keys["$connect"]["AuthorizationType"] == "AWS_IAM"
    synth.template.has_resource_properties("AWS::ApiGatewayV2::Stage", {
        "AccessLogSettings": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("requestId")},
        "DefaultRouteSettings": {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100},
    })
    # its access logs need the account's API Gateway logging role: created first (as the REST stage is)
    [stage] = resources(synth, "AWS::ApiGatewayV2::Stage").values()
    [account] = resources(synth, "AWS::ApiGateway::Account")
    assert account in stage.get("DependsOn", [])


def test_outputs(synth: Any) -> None:
    assert {"ApiUrl", "WebSocketUrl", "BucketName", "CpuGroupName", "GpuGroupName"} <= set(
        synth.template.to_json()["Outputs"])


# --- checks --------------------------------------------------------------------------------------------------

def test_cdk_nag_finds_nothing_unacknowledged(synth: Any) -> None:
    from cdk_nag import AwsSolutionsChecks

    report = AwsSolutionsChecks(synth.app).validate_scope(synth.stack)
    findings = [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
    assert findings == []
    annotations = Annotations.from_stack(synth.stack)
    assert annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*")) == []
    assert annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*")) == []


def test_cfn_lint_reports_no_errors(synth: Any) -> None:
    result = subprocess.run([sys.executable, "-m", "cfnlint", "--format", "json", str(synth.template_file)],
                            capture_output=True, text=True, check=False)
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], errors
