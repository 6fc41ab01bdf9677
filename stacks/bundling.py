"""The Lambda bundle: platform wheels of ``lambda-requirements.txt`` plus ``dcc/`` and ``functions/``, built
without Docker (pip downloads manylinux aarch64 wheels) and cached by the hash of what goes in it.

The bundle ships bytecode compiled by a Python of the Lambda runtime's version. Lambda's code folder is
read-only, so without it every cold start compiles every module it imports (the API handler's import takes
~0.9 s instead of ~0.3 s). The ``.pyc`` files are *unchecked-hash* (PEP 552): Python uses them without
comparing source timestamps, which the asset's zip does not keep.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "lambda-requirements.txt"
CONSTRAINTS = REPO_ROOT / "worker-constraints.txt"
"""The versions the tests ran against: the bundle's dependencies of dependencies are held to them too."""
CODE_PACKAGES = ("dcc", "functions")
PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_aarch64"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
LAMBDA_PYTHON_ENV = "DCC_LAMBDA_PYTHON"  # an interpreter of PYTHON_VERSION to compile the bundle with


def _is_lambda_python(executable: str) -> bool:
    try:
        out = subprocess.run([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == PYTHON_VERSION


@functools.cache
def lambda_python() -> str | None:
    """A Python of the Lambda runtime's version on this machine, or None.

    Looked for in order: ``DCC_LAMBDA_PYTHON``, this interpreter, ``python3.12`` on the PATH, pyenv's
    versions. A candidate counts only if it runs and reports that version (a pyenv shim may not).
    """
    candidates = [os.environ.get(LAMBDA_PYTHON_ENV, ""), sys.executable,
                  shutil.which(f"python{PYTHON_VERSION}") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{PYTHON_VERSION}*", "bin",
                                                f"python{PYTHON_VERSION}")), reverse=True)
    return next((c for c in candidates if c and _is_lambda_python(c)), None)


def compile_bytecode(folder: Path, python: str) -> None:
    """Compile every module under ``folder`` with ``python`` into unchecked-hash ``.pyc`` files."""
    out = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                          str(folder)], capture_output=True, text=True, check=False)
    if out.returncode != 0:  # compileall names each file it could not compile on stdout
        raise RuntimeError(f"compiling the Lambda bundle with {python} failed:\n{(out.stdout + out.stderr)[-4000:]}")


def _code_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                files.append(path)
    return files


def bundle_hash(root: Path = REPO_ROOT, requirements: Path = REQUIREMENTS) -> str:
    """A hash of everything that goes into the bundle: the requirements, the target platform and the code."""
    digest = hashlib.sha256()
    digest.update(f"{PLATFORM} cp{PYTHON_VERSION} bytecode={lambda_python() is not None}\n".encode())
    digest.update(requirements.read_bytes())
    digest.update(CONSTRAINTS.read_bytes() if CONSTRAINTS.is_file() else b"")
    for path in _code_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where built bundles are kept between syntheses (``DCC_CDK_CACHE`` or ``~/.cache/dcc-cdk``)."""
    base = os.environ.get("DCC_CDK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcc-cdk")
    return Path(base)


def build_bundle(dest: Path, *, root: Path = REPO_ROOT, requirements: Path = REQUIREMENTS,
                 platform: str = PLATFORM) -> None:
    """Fill the empty folder ``dest`` with the Lambda bundle (pip must reach PyPI on a cache miss).

    ``platform`` is the wheels' platform tag; only the cold-import benchmark asks for another than Lambda's.
    """
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
         "--platform", platform, "--only-binary=:all:", "--python-version", PYTHON_VERSION,
         "--implementation", "cp", "--target", str(dest), "-r", str(requirements),
         *(["-c", str(CONSTRAINTS)] if CONSTRAINTS.is_file() else [])],
        check=True,
    )
    for package in CODE_PACKAGES:
        shutil.copytree(root / package, dest / package, ignore=_SKIP)
    python = lambda_python()
    if python is None:
        print(f"dcc: no Python {PYTHON_VERSION} found (set {LAMBDA_PYTHON_ENV}): the Lambda bundle ships "
              "without bytecode, and each cold start compiles what it imports (~0.6 s more)", file=sys.stderr)
    else:
        compile_bytecode(dest, python)


def cached_bundle(*, root: Path = REPO_ROOT, requirements: Path = REQUIREMENTS) -> Path:
    """The bundle folder for the current code and requirements, built once and then reused."""
    target = cache_dir() / f"lambda-{bundle_hash(root, requirements)[:16]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="lambda-", dir=target.parent))
        try:
            build_bundle(work, root=root, requirements=requirements)
            os.replace(work, target)  # atomic: a half-built bundle is never reused
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return target


@jsii.implements(ILocalBundling)
class PipLocalBundling:
    """Bundles on this machine (no Docker): copies the cached bundle into CDK's output folder."""

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        """Always succeeds or raises: pip's platform download needs no Docker."""
        shutil.copytree(cached_bundle(), output_dir, dirs_exist_ok=True)
        return True


def lambda_code() -> lambda_.Code:
    """The one asset all dcc functions share; Docker bundling is only a fallback CDK never reaches here."""
    return lambda_.Code.from_asset(
        str(REPO_ROOT),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=bundle_hash(),
        bundling=BundlingOptions(
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{PYTHON_VERSION}"),
            command=["bash", "-c",
                     "pip install --no-compile -r stacks/lambda-requirements.txt -t /asset-output"
                     " && cp -r dcc functions /asset-output/"],
            # jsii hands the options struct over positionally; the generated Protocol spells it as kwargs.
            local=PipLocalBundling(),  # type: ignore[arg-type]
        ),
    )
