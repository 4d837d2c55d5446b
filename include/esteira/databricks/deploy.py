"""Ship the code a Databricks run needs to a Unity Catalog volume (``esteira databricks deploy``).

Three things go up through the Files API: the ``esteira`` wheel (the cluster's library),
``esteira/jobs`` (each step's ``spark_python_task`` file) and the use-case YAML files.
Each goes to a folder named after a digest of its content, so a path never changes
meaning: a deploy of unchanged code uploads nothing, a run that started on an older
deploy keeps reading the files it started with, and two deploys cannot interleave.
The wheel's digest is over its members (names and bytes), not the zip file, whose
timestamps change with every build.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from esteira.config import ConfigError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

_PACKAGE = Path(__file__).resolve().parents[1]
_SOURCE = _PACKAGE.parents[1]
JOBS_DIR = _PACKAGE / "jobs"
_DIGEST_CHARS = 16


@dataclass(frozen=True)
class Deployment:
    """Where the code is on the volume, and what this deploy had to upload."""

    wheel: str
    jobs_path: str
    usecases_dir: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def settings(self, cluster_json: str | None = None) -> dict[str, str]:
        """The settings of the Airflow workers that make the runs use this deploy.

        Given the workers' ESTEIRA_DATABRICKS_CLUSTER_JSON, it comes back with
        :meth:`cluster_env` added to its ``spark_env_vars``. ESTEIRA_USECASES_DIR itself is
        never one of these: on the workers it must stay the folder their DAG files read.
        """
        settings = {
            "ESTEIRA_DATABRICKS_LIBRARIES_JSON": json.dumps([{"whl": self.wheel}]),
            "ESTEIRA_DATABRICKS_JOBS_PATH": self.jobs_path,
        }
        if cluster_json:
            try:
                cluster = json.loads(cluster_json)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable ESTEIRA_DATABRICKS_CLUSTER_JSON is not valid JSON: {exc}") from None
            if not isinstance(cluster, dict):
                raise ConfigError("environment variable ESTEIRA_DATABRICKS_CLUSTER_JSON must hold a JSON object")
            cluster["spark_env_vars"] = {**(cluster.get("spark_env_vars") or {}), **self.cluster_env()}
            settings["ESTEIRA_DATABRICKS_CLUSTER_JSON"] = json.dumps(cluster)
        return settings

    def cluster_env(self) -> dict[str, str]:
        """What the cluster's environment needs: where the deployed use-case files are."""
        return {"ESTEIRA_USECASES_DIR": self.usecases_dir}


def volume_root(path: str) -> str:
    """``/Volumes/<catalog>/<schema>/<volume>[/<folder>...]``, without a trailing slash."""
    parts = path.strip().rstrip("/").split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] != "Volumes" or not all(parts[2:5]):
        raise ConfigError(
            f"--volume {path!r}: use a Unity Catalog volume path, /Volumes/<catalog>/<schema>/<volume>[/<folder>]"
        )
    return "/".join(parts)


def build_wheel(out_dir: Path) -> Path:
    """Build the ``esteira`` wheel from this source checkout with ``uv build``.

    The build reads a copy of the package, so it leaves no ``build/`` or egg-info in the
    checkout another process may be using.
    """
    if not (_SOURCE / "pyproject.toml").is_file():
        raise ConfigError(f"no pyproject.toml in {_SOURCE}: deploy builds from a source checkout; pass --wheel")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise ConfigError("deploy builds the wheel with uv (uv build --wheel): install uv, or pass --wheel")
    with tempfile.TemporaryDirectory(prefix="esteira-wheel-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(_SOURCE / name, source / name)
        shutil.copytree(_PACKAGE, source / "include" / "esteira",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        done = subprocess.run([uv, "build", "--wheel", "--out-dir", str(out_dir), str(source)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"uv build --wheel failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    wheels = sorted(out_dir.glob("esteira-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"uv build left {len(wheels)} esteira wheels in {out_dir}; expected one")
    return wheels[0]


def wheel_digest(wheel: Path) -> str:
    """A digest of the wheel's members, blind to the zip's timestamps and member order."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()[:_DIGEST_CHARS]


def files_digest(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:_DIGEST_CHARS]


def _exists(workspace: WorkspaceClient, path: str) -> bool:
    from databricks.sdk.errors import NotFound

    try:
        workspace.files.get_metadata(path)
    except NotFound:
        return False
    return True


def _upload(workspace: WorkspaceClient, path: str, data: bytes, result: Deployment) -> None:
    """Upload unless the content-addressed path is there already (then it holds these bytes)."""
    from databricks.sdk.errors import AlreadyExists

    if _exists(workspace, path):
        result.skipped.append(path)
        return
    try:
        workspace.files.upload(path, io.BytesIO(data), overwrite=False)
    except AlreadyExists:  # a concurrent deploy of the same content got there first
        result.skipped.append(path)
        return
    result.uploaded.append(path)


def deploy(workspace: WorkspaceClient, volume: str, wheel: Path, usecase_files: list[Path]) -> Deployment:
    """Upload the wheel, the jobs and the use-case files under ``<volume>/esteira/``."""
    root = f"{volume_root(volume)}/esteira"
    if not usecase_files:
        raise ConfigError("no use-case YAML files to deploy (ESTEIRA_USECASES_DIR has no *.yaml)")
    jobs = sorted(p for p in JOBS_DIR.glob("*.py") if p.name != "__init__.py")
    jobs_path = f"{root}/jobs/{files_digest(jobs)}"
    usecases_dir = f"{root}/usecases/{files_digest(usecase_files)}"
    result = Deployment(wheel=f"{root}/wheels/{wheel_digest(wheel)}/{wheel.name}",
                        jobs_path=jobs_path, usecases_dir=usecases_dir)
    _upload(workspace, result.wheel, wheel.read_bytes(), result)
    for path in jobs:
        _upload(workspace, f"{jobs_path}/{path.name}", path.read_bytes(), result)
    for path in sorted(usecase_files, key=lambda p: p.name):
        _upload(workspace, f"{usecases_dir}/{path.name}", path.read_bytes(), result)
    return result
