"""Worker instance types: vCPUs and NVIDIA GPUs known offline, and the deployment parameters built on them."""

from __future__ import annotations

import pytest

from stacks.config import DccConfig
from stacks.instance_types import architecture, nvidia_gpus, vcpus


@pytest.mark.parametrize(("instance_type", "cpus", "gpus"), [
    ("m7g.large", 2, 0), ("c7g.medium", 1, 0), ("m7i.xlarge", 4, 0), ("c7g.16xlarge", 64, 0),
    ("g5.xlarge", 4, 1), ("g5.12xlarge", 48, 4), ("g5.48xlarge", 192, 8), ("g4dn.12xlarge", 48, 4),
    ("g4dn.16xlarge", 64, 1), ("g5g.16xlarge", 64, 2), ("g6e.2xlarge", 8, 1), ("g6e.12xlarge", 48, 2),
    ("p3.8xlarge", 32, 4), ("p4d.24xlarge", 96, 8), ("p5.4xlarge", 16, 1), ("p5.48xlarge", 192, 8),
    ("c4.8xlarge", 36, 0), ("hpc7g.16xlarge", None, 0),
    ("t4g.large", None, 0), ("m7g.metal", None, 0), ("g4dn.metal", None, 8), ("inf2.xlarge", 4, 0),
])
def test_counts_follow_ec2_names_and_the_gpu_table(instance_type: str, cpus: int | None, gpus: int) -> None:
    assert (vcpus(instance_type), nvidia_gpus(instance_type)) == (cpus, gpus)


def test_not_an_instance_type_is_refused() -> None:
    with pytest.raises(ValueError, match="not an EC2 instance type"):
        vcpus("m7glarge")


def test_slots_come_from_the_types_or_the_context() -> None:
    assert DccConfig().slots() == {"cpu": 2, "gpu": 1}  # m7g.large, g5.xlarge
    assert DccConfig(cpu_instance_type="c7g.4xlarge", gpu_instance_type="g5.12xlarge").slots() == {"cpu": 16, "gpu": 4}
    assert DccConfig(cpu_instance_type="t4g.xlarge", cpu_vcpus=4, gpu_count=2).slots() == {"cpu": 4, "gpu": 2}
    with pytest.raises(ValueError, match="cpuVcpus"):
        DccConfig(cpu_instance_type="t4g.xlarge").slots()
    with pytest.raises(ValueError, match="gpuCount"):
        DccConfig(gpu_instance_type="inf2.xlarge").slots()


@pytest.mark.parametrize(("instance_type", "arch"), [
    ("m7g.large", "arm64"), ("c7gn.xlarge", "arm64"), ("t4g.small", "arm64"), ("g5g.xlarge", "arm64"),
    ("im4gn.large", "arm64"), ("is4gen.large", "arm64"), ("x2gd.large", "arm64"), ("hpc7g.4xlarge", "arm64"),
    ("a1.large", "arm64"), ("m7i.large", "x86_64"), ("m7i-flex.large", "x86_64"), ("g5.xlarge", "x86_64"),
    ("g4ad.xlarge", "x86_64"), ("gr6.4xlarge", "x86_64"), ("p5en.48xlarge", "x86_64"), ("inf2.xlarge", "x86_64"),
    ("mac2.metal", None), ("u-6tb1.metal", None),
])
def test_architecture_follows_ec2_names(instance_type: str, arch: str | None) -> None:
    assert architecture(instance_type) == arch


def test_the_cpu_architecture_follows_the_type_and_a_mismatch_or_an_arm_gpu_type_stops_synthesis() -> None:
    import aws_cdk as cdk

    def config(**context: str) -> DccConfig:
        return DccConfig.from_context(cdk.App(context=context).node)

    assert config(cpuInstanceType="m7i.large").cpu_arch == "x86_64"        # (an image that boots on it)
    assert config().cpu_arch == "arm64" and config(cpuInstanceType="c7g.xlarge").cpu_arch == "arm64"
    assert config(cpuInstanceType="t3.large", cpuVcpus="2", cpuArch="x86_64").cpu_arch == "x86_64"
    with pytest.raises(ValueError, match="cpuInstanceType 'm7i.large' is x86_64 but cpuArch is arm64"):
        config(cpuInstanceType="m7i.large", cpuArch="arm64")
    with pytest.raises(ValueError, match="gpuInstanceType 'g5g.xlarge' is arm64"):
        config(gpuInstanceType="g5g.xlarge")
