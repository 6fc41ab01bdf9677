"""The Lambda bundle ships bytecode of the runtime's Python that is used even though the zip loses mtimes."""

from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stacks import bundling

ZIP_EPOCH = 315532800  # 1980-01-01: the time stamp every file of a deterministic asset zip carries

needs_lambda_python = pytest.mark.skipif(bundling.lambda_python() is None,
                                         reason=f"no Python {bundling.PYTHON_VERSION} on this machine")


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_only_an_interpreter_that_runs_and_reports_the_runtime_version_counts(tmp_path: Path) -> None:
    assert bundling._is_lambda_python(_script(tmp_path / "right", f"echo {bundling.PYTHON_VERSION}"))
    assert not bundling._is_lambda_python(_script(tmp_path / "older", "echo 3.11"))
    # a pyenv shim for a version that is installed but not selected fails like this
    assert not bundling._is_lambda_python(_script(tmp_path / "shim", f"echo {bundling.PYTHON_VERSION}; exit 127"))
    assert not bundling._is_lambda_python(str(tmp_path / "missing"))


def _loads_from_bytecode(python: str, folder: Path) -> bool:
    """Whether ``python`` imports ``mod`` from its ``.pyc`` (not recompiling the source) in ``folder``."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-v", "-c", "import mod; assert mod.VALUE == 42"], cwd=folder, env=env,
                         capture_output=True, text=True, check=True)
    tag = f"cpython-{bundling.PYTHON_VERSION.replace('.', '')}"
    return any(line.startswith("# code object from") and line.endswith(f"__pycache__/mod.{tag}.pyc'")
               for line in out.stderr.splitlines())


@needs_lambda_python
@pytest.mark.parametrize("hashed", [True, False], ids=["unchecked-hash", "timestamp"])
def test_bytecode_is_used_after_the_zip_resets_source_times(tmp_path: Path, hashed: bool) -> None:
    python = bundling.lambda_python()
    assert python is not None
    (tmp_path / "mod.py").write_text("VALUE = 42\n")
    if hashed:
        bundling.compile_bytecode(tmp_path, python)
    else:  # compileall's default: a pyc that is valid only for the source's recorded mtime
        subprocess.run([python, "-m", "compileall", "-q", str(tmp_path)], check=True)
    assert list((tmp_path / "__pycache__").glob(f"mod.cpython-{bundling.PYTHON_VERSION.replace('.', '')}.pyc"))
    os.utime(tmp_path / "mod.py", (ZIP_EPOCH, ZIP_EPOCH))
    # only the hash-based, unchecked pyc survives the lost mtime; the timestamp one is silently recompiled
    assert _loads_from_bytecode(python, tmp_path) is hashed


@needs_lambda_python
def test_a_module_that_does_not_compile_fails_the_build_naming_it(tmp_path: Path) -> None:
    python = bundling.lambda_python()
    assert python is not None
    (tmp_path / "fine.py").write_text("VALUE = 1\n")
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(RuntimeError, match=r"(?s)compiling the Lambda bundle.*broken\.py"):
        bundling.compile_bytecode(tmp_path, python)


def _api_asset(synth: Any) -> Path:
    """The staged folder of the API function's code asset (the worker's source asset holds the same files)."""
    functions = synth.template.find_resources("AWS::Lambda::Function")
    key = next(f["Properties"]["Code"]["S3Key"] for f in functions.values()
               if f["Properties"].get("Handler") == "functions.api.handler.lambda_handler")
    asset = Path(synth.template_file).parent / f"asset.{key.removesuffix('.zip')}"
    assert (asset / "functions" / "api" / "handler.py").is_file()
    return asset


@needs_lambda_python
def test_the_synthesized_bundle_has_bytecode_for_every_module(synth: Any) -> None:
    asset = _api_asset(synth)
    tag = f"cpython-{bundling.PYTHON_VERSION.replace('.', '')}"
    sources = [p for p in asset.rglob("*.py") if "__pycache__" not in p.parts]
    missing = [str(p.relative_to(asset)) for p in sources
               if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").is_file()]
    assert len(sources) > 500 and missing == []
    header = (asset / "functions" / "api" / "__pycache__" / f"handler.{tag}.pyc").read_bytes()[4:8]
    assert int.from_bytes(header, "little") == 0b01  # PEP 552 flags: hash-based, source not checked


def test_every_library_in_the_bundle_is_at_the_version_the_tests_ran_against(synth: Any) -> None:
    import re

    pins = dict(line.split("==") for line in bundling.CONSTRAINTS.read_text().splitlines()
                if line and not line.startswith("#"))
    found = {}
    for info in _api_asset(synth).glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert {"pydantic", "pydantic-core", "redis", "typing-extensions"} <= set(found)  # (dependencies of dependencies)
    assert {name: version for name, version in found.items() if pins.get(name) != version} == {}


def test_the_zipped_bundle_stays_under_10_mib(synth: Any, tmp_path: Path) -> None:
    asset = _api_asset(synth)
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(asset.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(asset))
    assert archive.stat().st_size <= 10 * 1024 * 1024
