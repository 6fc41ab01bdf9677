"""The job data bucket: encrypted, private, TLS only, job data expiring after the retention."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

JOBS_PREFIX = "jobs-data"
TES_PREFIX = "tes"
"""Where GA4GH TES tasks read inputs and write outputs by default (``DCC_TES_LOCATIONS``); kept, not expired."""


class JobBucket(Construct):
    """Holds every job's inputs, outputs, logs and ``result.json`` under ``jobs-data/``."""

    def __init__(self, scope: Construct, construct_id: str, *, retention_days: int, access_logs: bool) -> None:
        super().__init__(scope, construct_id)
        self.log_bucket: s3.Bucket | None = None
        if access_logs:
            self.log_bucket = s3.Bucket(
                self, "AccessLogs",
                encryption=s3.BucketEncryption.S3_MANAGED,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
                lifecycle_rules=[s3.LifecycleRule(id="expire-logs", expiration=Duration.days(90))],
                removal_policy=RemovalPolicy.RETAIN,
            )
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=False,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="jobs/" if self.log_bucket else None,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-job-data", prefix=f"{JOBS_PREFIX}/",
                                 expiration=Duration.days(retention_days)),
                s3.LifecycleRule(id="abort-incomplete-uploads",
                                 abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.storage_url = f"s3://{self.bucket.bucket_name}/{JOBS_PREFIX}"
        self.tes_url = f"s3://{self.bucket.bucket_name}/{TES_PREFIX}/"


def grant_job_data(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str = JOBS_PREFIX) -> None:
    """Read, write, list and delete the objects under ``prefix/`` (what ``dcc.s3_storage`` calls), nothing else."""
    _grant_objects(grantee, bucket, prefix, ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                             "s3:AbortMultipartUpload"])


def grant_job_data_read(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str = JOBS_PREFIX) -> None:
    """Read and list the objects under ``prefix/`` (a finished job's ``result.json`` once its Redis record expired)."""
    _grant_objects(grantee, bucket, prefix, ["s3:GetObject"])


def _grant_objects(grantee: iam.IGrantable, bucket: s3.IBucket, prefix: str, actions: list[str]) -> None:
    """``actions`` on the objects under ``prefix/``, and listing them (so that a missing one is a 404, not a 403)."""
    grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
        actions=actions, resources=[bucket.arn_for_objects(f"{prefix}/*")]))
    grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
        actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
        conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}))


def grant_input_buckets(grantee: iam.IGrantable, buckets: tuple[str, ...]) -> None:
    """Read objects of the buckets ``s3://`` job inputs may name (``DCC_ALLOWED_BUCKETS``)."""
    if buckets:
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[input_bucket_objects(name) for name in buckets]))


def input_bucket_objects(name: str) -> str:
    """The ARN of every object in the input bucket ``name``."""
    return f"arn:{Aws.PARTITION}:s3:::{name}/*"
