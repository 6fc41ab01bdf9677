"""The worker fleets: a CPU and a GPU Auto Scaling group whose instances run ``python3 -m worker_agent``.

The groups have no desired capacity: the scaler function owns it. Each instance bootstraps from
``deploy/worker-bootstrap.sh``, rendered here, and installs this repository's code from a versioned S3 asset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.scaler import group_arn
from stacks.storage import TES_PREFIX, grant_input_buckets, grant_job_data

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = REPO_ROOT / "deploy" / "worker-bootstrap.sh"
GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
ROOT_DEVICE = "/dev/xvda"  # Amazon Linux 2023 and its ECS-optimized images
# What the workers' code asset leaves out: tooling, tests, benchmarks and the infrastructure code itself
# (so that a change to the stack alone does not roll the fleet).
ASSET_EXCLUDES = [
    ".venv", ".git", ".gitignore", "cdk.out", "tests", "bench", ".benchmarks", "**/__pycache__", "*.pyc",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info", "build", ".dcc-try*", "node_modules",
    "stacks", "app.py", "cdk.json", "cdk.context.json", "requirements-cdk.txt", "deploy", ".ci", "scripts",
]


@dataclass(frozen=True)
class FleetSpec:
    """One worker class: its instance type, image and group bounds."""

    name: str  # "cpu" or "gpu": the queue class the workers serve
    instance_type: str
    machine_image: ec2.IMachineImage
    min_capacity: int
    max_capacity: int
    gpu_runtime: str = ""
    """A Docker runtime GPU jobs also run with (the legacy ``nvidia`` runtime); empty: device requests alone."""


def render_bootstrap(values: dict[str, str], template: str | None = None) -> str:
    """The bootstrap script with each ``__DCC_<KEY>__`` placeholder replaced (values may be CDK tokens)."""
    script = BOOTSTRAP.read_text() if template is None else template
    for key, value in values.items():
        placeholder = f"__DCC_{key}__"
        if placeholder not in script:
            raise KeyError(f"{placeholder} is not in the bootstrap script")
        script = script.replace(placeholder, value)
    return script


class WorkerFleets(Construct):
    """The shared instance role and security group, the code asset, and one launch template + group per spec."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, subnets: ec2.SubnetSelection,
                 specs: list[FleetSpec], bucket: s3.IBucket, storage_url: str, redis_host: str, redis_port: str,
                 redis_secret: secretsmanager.ISecret, allowed_buckets: str, tes_url: str,
                 input_buckets: tuple[str, ...], volume_gib: int, ssm: bool,
                 log_level: str, websocket_endpoint: str) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.group_names = {spec.name: f"{stack.stack_name}-workers-{spec.name}" for spec in specs}
        self.code = s3_assets.Asset(self, "Code", path=str(REPO_ROOT), exclude=ASSET_EXCLUDES)

        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
                             description="dcc worker instances")
        grant_job_data(self.role, bucket)
        grant_job_data(self.role, bucket, TES_PREFIX)  # GA4GH TES tasks' inputs and outputs
        grant_input_buckets(self.role, input_buckets)
        redis_secret.grant_read(self.role)
        # Just the one object: the versioned code asset (grant_read would allow the whole assets bucket).
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[self.code.bucket.arn_for_objects(self.code.s3_object_key)]))
        # ECR pulls: the token call has no resource-level permissions (AWS requires "*"); the image reads are
        # limited to this account's and region's repositories.
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            resources=[stack.format_arn(service="ecr", resource="repository", resource_name="*")]))
        # Scale-in protection: the scaler sets it on busy workers each pass; an instance may set its own too, in its
        # own groups only. The worker agent does not: the scaler's own removals check the leases in one Redis step
        # with the claims (one that just claimed is kept), and what the group might do by itself (a rebalance, a
        # lower maximum) can reach a worker that claimed since the last pass, for up to a minute.
        self.group_arns = [group_arn(self, name) for name in self.group_names.values()]
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["autoscaling:SetInstanceProtection"], resources=self.group_arns))
        if ssm:
            self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(
                "AmazonSSMManagedInstanceCore"))

        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
                                                description="dcc workers: no ingress")
        # Workers pull images and fetch https:// inputs from anywhere, and reach AWS APIs.
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS out")
        self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "HTTP out (package mirrors)")

        self.groups: dict[str, autoscaling.AutoScalingGroup] = {}
        self.launch_templates: dict[str, ec2.LaunchTemplate] = {}
        for spec in specs:
            script = render_bootstrap({
                "CLASS": spec.name,
                "REGION": stack.region,
                "REDIS_HOST": redis_host,
                "REDIS_PORT": redis_port,
                "REDIS_SECRET_ARN": redis_secret.secret_arn,
                "BUCKET": bucket.bucket_name,
                "STORAGE_URL": storage_url,
                "ALLOWED_BUCKETS": allowed_buckets,
                "TES_LOCATIONS": tes_url,
                "ASSET_URL": self.code.s3_object_url,
                "GROUP_NAME": self.group_names[spec.name],
                "LOG_LEVEL": log_level,
                "WEBSOCKET_ENDPOINT": websocket_endpoint,
                "GPU_RUNTIME": spec.gpu_runtime,
            })
            template = ec2.LaunchTemplate(
                self, f"{spec.name.capitalize()}Template",
                instance_type=ec2.InstanceType(spec.instance_type),
                machine_image=spec.machine_image,
                role=self.role,
                security_group=self.security_group,
                user_data=ec2.UserData.custom(script),
                require_imdsv2=True,
                http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
                http_put_response_hop_limit=1,
                http_endpoint=True,
                detailed_monitoring=True,
                block_devices=[ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(volume_gib, encrypted=True, delete_on_termination=True,
                                                     volume_type=ec2.EbsDeviceVolumeType.GP3))],
            )
            group = autoscaling.AutoScalingGroup(
                self, f"{spec.name.capitalize()}Group",
                auto_scaling_group_name=self.group_names[spec.name],
                vpc=vpc,
                vpc_subnets=subnets,
                launch_template=template,
                min_capacity=spec.min_capacity,
                max_capacity=spec.max_capacity,
                # desired_capacity stays unset: the scaler sets it, and a deploy must not reset it.
                termination_policies=[autoscaling.TerminationPolicy.OLDEST_LAUNCH_TEMPLATE],
            )
            self.launch_templates[spec.name] = template
            self.groups[spec.name] = group
