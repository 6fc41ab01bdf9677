"""The dcc stack, synthesized once per test session (with the nag pack attached, as app.py does)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Synth:
    """The app, the stack, its template (as assertions.Template and as written to disk)."""

    app: object
    stack: object
    template: object
    template_file: Path


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from app import build_app, file_context

    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = build_app(cdk.App(outdir=str(outdir), context=file_context()))
    app.synth()  # runs the cdk-nag plugin: raises on any unacknowledged finding
    yield Synth(app=app, stack=stack, template=Template.from_stack(stack),
                template_file=outdir / f"{stack.artifact_id}.template.json")
