"""Benchmark: each Lambda handler's cold import, as Lambda runs it, with and without the bundle's bytecode.

    python bench/bench_cold_import.py [--runs 15]      # writes bench/results/cold_import.json

The Lambda bundle is built for arm64, which this machine may not run, so the benchmark builds the same
bundle (same pinned wheels, same code, same bytecode step) for this machine's platform, then imports each
function's handler module (API, websocket, scaler) in fresh processes of a Python of the Lambda runtime's
version the way Lambda does: no site-packages (``-S``), only the bundle and the runtime's SDK (boto3 and
its dependencies, compiled) on the path, and a read-only code folder (``PYTHONDONTWRITEBYTECODE``: nothing
compiled is kept between cold starts). Each variant is the median of ``--runs`` processes of
``-X importtime`` after one unmeasured run. The zipped size is that of the real (arm64) bundle, which all
three functions share.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from stacks import bundling  # noqa: E402

HANDLERS = ("functions.api.handler", "functions.api.websocket", "functions.scaler.handler")
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "dateutil", "urllib3", "six")  # what the Lambda runtime ships


def host_platform() -> str:
    return {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}[platform.machine()]


def runtime_sdk(dest: Path, python: str) -> Path:
    """A copy of this machine's boto3 and its dependencies, compiled by ``python``: the runtime's SDK.

    The Lambda runtime installs its SDK with pip, which compiles it, so its modules load from bytecode.
    """
    import importlib

    for name in RUNTIME_SDK:
        source = Path(importlib.import_module(name).__file__ or "")
        if source.name == "__init__.py":
            shutil.copytree(source.parent, dest / name, ignore=bundling._SKIP)
        else:
            shutil.copy2(source, dest / source.name)
    bundling.compile_bytecode(dest, python)
    return dest


def import_times(python: str, handler: str, path: list[Path], cwd: Path) -> dict[str, int]:
    """Cumulative microseconds of each module the handler's import loads, from one fresh process."""
    code = f"import sys; sys.path[:0] = {[str(p) for p in path]!r}; import {handler}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-S", "-X", "importtime", "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, check=True)
    times: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            self_us, cumulative, name = line.removeprefix("import time:").split("|")
            times[name.strip()] = int(cumulative)
            times["self:" + name.strip()] = int(self_us)
    return times


def by_library(times: dict[str, int]) -> dict[str, float]:
    """Self time in ms grouped by top-level package."""
    groups: Counter[str] = Counter()
    for key, us in times.items():
        if key.startswith("self:"):
            groups[key.removeprefix("self:").split(".")[0]] += us
    return {k: round(v / 1000, 1) for k, v in groups.most_common(8)}


def zipped_size(folder: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))
    return buf.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_import.json")
    args = parser.parse_args()
    python = bundling.lambda_python()
    if python is None:
        sys.exit(f"needs a Python {bundling.PYTHON_VERSION} (set {bundling.LAMBDA_PYTHON_ENV})")

    with tempfile.TemporaryDirectory(prefix="dcc-cold-") as tmp:
        work = Path(tmp)
        compiled = work / "bytecode"
        bundling.build_bundle(compiled, platform=host_platform())
        plain = work / "source-only"
        shutil.copytree(compiled, plain, ignore=shutil.ignore_patterns("__pycache__"))
        sdk = runtime_sdk(Path(tempfile.mkdtemp(dir=work)), python)
        samples: dict[tuple[str, str], list[dict[str, int]]] = {}
        for handler in HANDLERS:
            for name, folder in (("bytecode", compiled), ("source-only", plain)):
                # one unmeasured run warms the page cache: Lambda's code is on local disk too
                import_times(python, handler, [folder, sdk], cwd=work)
                samples[handler, name] = [import_times(python, handler, [folder, sdk], cwd=work)
                                          for _ in range(args.runs)]

    real = bundling.cached_bundle()
    result = {
        "python": subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                 text=True, check=True).stdout.strip(),
        "machine": platform.machine(),
        "runs": args.runs,
        "zipped_bundle_bytes": zipped_size(real),
        "bundle_platform": bundling.PLATFORM,
    }
    for (handler, name), runs in samples.items():
        total = [r[handler] / 1000 for r in runs]
        median_run = sorted(runs, key=lambda r: r[handler])[len(runs) // 2]
        result.setdefault(handler, {})[name] = {
            "median_ms": round(statistics.median(total), 1), "min_ms": round(min(total), 1),
            "max_ms": round(max(total), 1), "self_ms_by_library": by_library(median_run)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
