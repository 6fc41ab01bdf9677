"""The job store: an ElastiCache (Redis OSS) replication group, TLS and AUTH, reachable from dcc's SGs only."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

REDIS_PORT = 6379


class RedisCache(Construct):
    """A Multi-AZ Redis whose AUTH token lives in Secrets Manager; clients read it at run time."""

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, subnets: ec2.SubnetSelection,
                 node_type: str, replicas: int) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self, "AuthToken",
            description="AUTH token of dcc's Redis (the whole secret string is the token)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False),
        )
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
            description="dcc Redis: 6379 from the dcc functions and workers only")
        subnet_group = elasticache.CfnSubnetGroup(
            self, "Subnets", description="dcc Redis subnets",
            subnet_ids=vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids)
        # A job store refuses writes when full (503s, waited out by workers) rather than evicting: the default policy,
        # volatile-lru, would drop finished jobs' records (they carry a TTL), and fast jobs' results with them.
        self.parameters = elasticache.CfnParameterGroup(
            self, "Parameters", cache_parameter_group_family="redis7", description="dcc job store: no eviction",
            properties={"maxmemory-policy": "noeviction"})
        self.replication_group = elasticache.CfnReplicationGroup(
            self, "ReplicationGroup",
            replication_group_description="dcc job store",
            engine="redis",
            engine_version="7.1",
            cache_node_type=node_type,
            num_cache_clusters=replicas + 1,
            automatic_failover_enabled=replicas > 0,
            multi_az_enabled=replicas > 0,
            port=REDIS_PORT,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            # A dynamic reference: CloudFormation resolves it at deploy time, the template never holds the token.
            auth_token=self.secret.secret_value.unsafe_unwrap(),
            cache_subnet_group_name=subnet_group.ref,
            cache_parameter_group_name=self.parameters.ref,
            security_group_ids=[self.security_group.security_group_id],
            snapshot_retention_limit=1,
        )
        self.replication_group.apply_removal_policy(RemovalPolicy.DESTROY)
        self.host = self.replication_group.attr_primary_end_point_address
        self.port = self.replication_group.attr_primary_end_point_port
        self.url = f"rediss://{self.host}:{self.port}/0"

    def allow_from(self, peer: ec2.ISecurityGroup, description: str) -> None:
        """Let ``peer`` (and only it) reach Redis on 6379; the peer gets the matching egress rule."""
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(REDIS_PORT), description)
        peer.add_egress_rule(self.security_group, ec2.Port.tcp(REDIS_PORT), f"to Redis: {description}")
