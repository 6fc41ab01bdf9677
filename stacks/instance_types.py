"""What a worker instance type holds, known offline: its vCPUs and its NVIDIA GPUs.

Synthesis runs without AWS credentials, so the counts come from EC2's naming rule and a table of the NVIDIA
GPU families, not from ``DescribeInstanceTypes``. The stack passes them on: the scaler sizes a group from them
until its workers report their slots (the first scale-up from zero), and the API refuses a job asking for more
GPUs than a GPU worker has. A type the rule does not cover (``t*``, ``*.metal``) needs the count as context.
"""

from __future__ import annotations

import re

# vCPUs by size, for every family but the burstable t* ones, the HPC ones (hpc*: one vCPU a core) and bare
# metal: medium 1, large 2, xlarge 4, Nxlarge 4N (c7g.16xlarge: 64; p4d.24xlarge: 96); then the sizes that differ.
_SIZE = re.compile(r"^(?:(medium)|(large)|(\d*)xlarge)$")
_VCPUS = {"c4.8xlarge": 36, "d2.8xlarge": 36}

# NVIDIA GPUs per instance: the families' count for most sizes, then the sizes that differ.
_NVIDIA: dict[str, tuple[int, dict[str, int]]] = {
    "g4dn": (1, {"12xlarge": 4, "metal": 8}),
    "g5": (1, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g5g": (1, {"16xlarge": 2, "metal": 2}),
    "g6": (1, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}),
    "g6e": (1, {"12xlarge": 2, "24xlarge": 4, "48xlarge": 8}),
    "gr6": (1, {}),
    "p3": (1, {"8xlarge": 4, "16xlarge": 8}),
    "p3dn": (8, {}),
    "p4d": (8, {}),
    "p4de": (8, {}),
    "p5": (8, {"4xlarge": 1}),
    "p5e": (8, {}),
    "p5en": (8, {}),
}


def _split(instance_type: str) -> tuple[str, str]:
    family, _, size = instance_type.partition(".")
    if not family or not size:
        raise ValueError(f"{instance_type!r} is not an EC2 instance type (family.size)")
    return family, size


def vcpus(instance_type: str) -> int | None:
    """The type's vCPUs, or None where the naming rule does not say (burstable and metal types)."""
    family, size = _split(instance_type)
    if instance_type in _VCPUS:
        return _VCPUS[instance_type]
    match = _SIZE.match(size)
    if family.startswith(("t", "hpc")) or match is None:
        return None
    medium, large, n = match.groups()
    return 1 if medium else 2 if large else 4 * int(n or 1)


def nvidia_gpus(instance_type: str) -> int:
    """The type's NVIDIA GPUs: 0 for a family not in the table."""
    family, size = _split(instance_type)
    default, sizes = _NVIDIA.get(family, (0, {}))
    return sizes.get(size, default)


_FAMILY = re.compile(r"^([a-z]+)(\d+)([a-z-]*)$")


def architecture(instance_type: str) -> str | None:
    """``arm64`` for a Graviton type (a ``g`` among the attributes after the generation: m7g, c7gn, g5g, im4gn; and
    a1), ``x86_64`` for the other families the rule covers, None where it does not say (mac*, u-*)."""
    family, _ = _split(instance_type)
    match = _FAMILY.match(family)
    if match is None or family.startswith("mac"):
        return None
    return "arm64" if "g" in match.group(3) or family == "a1" else "x86_64"
