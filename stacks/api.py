"""The HTTP API (REST, IAM-authorized, proxying to the API function) and the WebSocket API for job updates."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

STAGE = "prod"
WEBSOCKET_ROUTES = ("subscribe", "unsubscribe", "$default")  # ($default: any other message, told the usage)


class RestApi(Construct):
    """``ANY /`` and ``ANY /{proxy+}`` to the API function; IAM auth, throttling and access logs on the stage."""

    def __init__(self, scope: Construct, construct_id: str, *, handler: lambda_.IFunction, throttle_rate: float,
                 throttle_burst: int, api_keys: bool, cloudwatch_role: bool) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH,
                                         removal_policy=RemovalPolicy.DESTROY)
        self.api = apigw.RestApi(
            self, "Api",
            description="dcc job API",
            # API Gateway writes access and execution logs through one role set per account and region.
            cloud_watch_role=cloudwatch_role,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if cloudwatch_role else None,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # logs and output files are bytes, sent base64 by the function: every type, so that API Gateway decodes
            # them whatever the client's Accept says (request bodies then reach the function in base64 too)
            binary_media_types=["*/*"],
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM, api_key_required=api_keys),
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                throttling_rate_limit=throttle_rate,
                throttling_burst_limit=throttle_burst,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True),
            ),
        )
        integration = apigw.LambdaIntegration(handler, proxy=True)
        self.api.root.add_method("ANY", integration)
        self.api.root.add_proxy(default_integration=integration, any_method=True)
        self.usage_plan: apigw.UsagePlan | None = None
        self.api_key: apigw.IApiKey | None = None
        if api_keys:
            self.usage_plan = self.api.add_usage_plan(
                "UsagePlan", name=None,
                throttle=apigw.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst))
            self.usage_plan.add_api_stage(stage=self.api.deployment_stage)
            self.api_key = self.api.add_api_key("Key")
            self.usage_plan.add_api_key(self.api_key)
        self.url = self.api.url


class WebSocketApi(Construct):
    """``$connect`` (IAM-authorized), ``$disconnect``, ``subscribe``, ``unsubscribe`` and ``$default`` to the
    websocket function."""

    def __init__(self, scope: Construct, construct_id: str, *, handler: lambda_.IFunction, throttle_rate: float,
                 throttle_burst: int) -> None:
        super().__init__(scope, construct_id)
        integration = integrations.WebSocketLambdaIntegration("Handler", handler)
        self.api = apigwv2.WebSocketApi(
            self, "Api",
            description="dcc job updates",
            connect_route_options=apigwv2.WebSocketRouteOptions(
                integration=integration, authorizer=authorizers.WebSocketIamAuthorizer()),
            disconnect_route_options=apigwv2.WebSocketRouteOptions(integration=integration),
        )
        for route in WEBSOCKET_ROUTES:
            self.api.add_route(route, integration=integration)
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH,
                                         removal_policy=RemovalPolicy.DESTROY)
        self.stage = apigwv2.WebSocketStage(
            self, "Stage", web_socket_api=self.api, stage_name=STAGE, auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst))
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=('{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                    '"caller":"$context.identity.caller","user":"$context.identity.user",'
                    '"requestTime":"$context.requestTime","eventType":"$context.eventType",'
                    '"routeKey":"$context.routeKey","status":"$context.status",'
                    '"connectionId":"$context.connectionId"}'),
        )
        self.url = self.stage.url
        self.callback_url = self.stage.callback_url

    def grant_manage_connections(self, grantee: iam.IGrantable) -> None:
        """Let ``grantee`` post to, read and close this API's connections (execute-api:ManageConnections)."""
        self.api.grant_manage_connections(grantee)
