#!/usr/bin/env python3
"""The dcc CDK app: ``python app.py`` (or ``cdk synth``) writes the template to cdk.out.

Account and region come from context (``-c account=… -c region=…``) or CDK_DEFAULT_*; without either the
stack is environment-agnostic and synthesizes with no AWS credentials. cdk-nag's AwsSolutions pack runs as a
policy validation plugin: an unacknowledged finding fails the synthesis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402  (the variable above must be set before jsii starts)
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from stacks.dcc_stack import DccStack  # noqa: E402

HERE = Path(__file__).resolve().parent


def file_context() -> dict[str, object]:
    """The context of cdk.json (the CLI reads it itself; ``python app.py`` and tests need it read for them)."""
    return dict(json.loads((HERE / "cdk.json").read_text()).get("context", {}))


def build_app(app: cdk.App | None = None) -> tuple[cdk.App, DccStack]:
    """The app with the dcc stack and the nag pack attached."""
    if app is None:
        # `cdk synth` passes CDK_OUTDIR; `python app.py` writes next to this file, like the CLI would.
        app = cdk.App() if os.environ.get("CDK_OUTDIR") else cdk.App(outdir=str(HERE / "cdk.out"),
                                                                      context=file_context())
    account = app.node.try_get_context("account") or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = app.node.try_get_context("region") or os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=account, region=region) if account and region else None
    stack = DccStack(app, app.node.try_get_context("stackName") or "Dcc", env=env,
                     description="dcc: run container images as jobs")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


if __name__ == "__main__":
    build_app()[0].synth()
