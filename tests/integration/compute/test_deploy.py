"""`esteira databricks deploy` against the Databricks emulator's Files API: the wheel, the
jobs and the use-case files go to content-addressed folders of a volume, once."""

from __future__ import annotations

import json
import shutil

import pytest

from esteira.config import ConfigError
from esteira.databricks import deploy, workspace
from tests.databricks_emulator.service import REPO, VOLUME

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return deploy.build_wheel(tmp_path_factory.mktemp("dist"))


def _usecases(tmp_path, text_of_churn: str | None = None):
    folder = tmp_path / "usecases"
    folder.mkdir(exist_ok=True)
    target = folder / "churn.yaml"
    if text_of_churn is None:
        shutil.copy2(REPO / "include/usecases/churn.yaml", target)
    else:
        target.write_text(text_of_churn)
    return [target]


def _puts(emulator) -> list[str]:
    return [r["path"] for r in emulator.requests() if r["method"] == "PUT"]


def test_deploy_uploads_once_and_skips_an_unchanged_wheel(emulator, wheel, tmp_path):
    client = workspace.client()
    files = _usecases(tmp_path)
    first = deploy.deploy(client, VOLUME, wheel, files)

    assert first.wheel.startswith(f"{VOLUME}/esteira/wheels/") and first.wheel.endswith(wheel.name)
    jobs = sorted(p.name for p in (REPO / "include/esteira/jobs").glob("*.py") if p.name != "__init__.py")
    assert {"feature_refresh.py", "train_candidate.py", "batch_inference.py"} <= set(jobs)
    assert sorted(first.uploaded) == sorted(
        [first.wheel, *(f"{first.jobs_path}/{name}" for name in jobs), f"{first.usecases_dir}/churn.yaml"]
    )
    assert client.files.download(first.wheel).contents.read() == wheel.read_bytes()
    assert json.loads(first.settings()["ESTEIRA_DATABRICKS_LIBRARIES_JSON"]) == [{"whl": first.wheel}]
    puts = _puts(emulator)

    rebuilt = deploy.build_wheel(tmp_path / "dist2")  # a new build of the same code: same members
    again = deploy.deploy(client, VOLUME, rebuilt, files)
    assert again.uploaded == [] and again.wheel == first.wheel
    assert _puts(emulator) == puts, "an unchanged deploy must not upload anything"

    original = files[0].read_bytes()
    edited = _usecases(tmp_path, (REPO / "include/usecases/churn.yaml").read_text() + "\n# edited\n")
    third = deploy.deploy(client, VOLUME, wheel, edited)
    assert third.uploaded == [f"{third.usecases_dir}/churn.yaml"]
    assert third.usecases_dir != first.usecases_dir and third.jobs_path == first.jobs_path
    assert client.files.download(f"{first.usecases_dir}/churn.yaml").contents.read() == original


def test_a_volume_that_does_not_exist_fails_with_the_workspace_error(emulator, wheel, tmp_path):
    from databricks.sdk.errors import NotFound

    with pytest.raises(NotFound, match="Volume 'main.esteira.missing' does not exist"):
        deploy.deploy(workspace.client(), "/Volumes/main/esteira/missing", wheel, _usecases(tmp_path))


@pytest.mark.parametrize("path", ["/dbfs/esteira", "/Volumes/main/esteira", "Volumes/main/esteira/artifacts"])
def test_a_path_that_is_not_a_volume_is_refused_before_any_call(path):
    with pytest.raises(ConfigError, match="--volume"):
        deploy.volume_root(path)


def test_the_emulator_files_api_answers_as_the_workspace_does(emulator):
    """The status codes databricks-sdk maps to its errors: 409 on overwrite=false, 404 on HEAD."""
    import io

    from databricks.sdk.errors import AlreadyExists, NotFound

    client = workspace.client()
    path = f"{VOLUME}/emulator-check/a.txt"
    client.files.upload(path, io.BytesIO(b"one"), overwrite=False)
    with pytest.raises(AlreadyExists, match="already exists"):
        client.files.upload(path, io.BytesIO(b"two"), overwrite=False)
    client.files.upload(path, io.BytesIO(b"three"), overwrite=True)
    assert client.files.get_metadata(path).content_length == 5
    with pytest.raises(NotFound):
        client.files.get_metadata(f"{VOLUME}/emulator-check/missing.txt")


def test_the_command_prints_the_settings_of_the_deploy(emulator, wheel, tmp_path, monkeypatch, capsys):
    from esteira import cli

    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(_usecases(tmp_path)[0].parent))
    assert cli.main(["databricks", "deploy", "--volume", VOLUME, "--wheel", str(wheel)]) == 0
    out = capsys.readouterr().out
    wheel_path = f"{VOLUME}/esteira/wheels/{deploy.wheel_digest(wheel)}/{wheel.name}"
    assert f"export ESTEIRA_DATABRICKS_LIBRARIES_JSON='[{{\"whl\": \"{wheel_path}\"}}]'" in out
    assert f"export ESTEIRA_DATABRICKS_JOBS_PATH={VOLUME}/esteira/jobs/" in out
    # The workers keep the use-case folder their DAG files read; the cluster gets the deployed one.
    assert "export ESTEIRA_USECASES_DIR" not in out
    assert f"spark_env_vars), not the workers': {{\"ESTEIRA_USECASES_DIR\": \"{VOLUME}/esteira/usecases/" in out


def test_the_command_adds_the_deployed_use_cases_to_the_workers_cluster_spec(emulator, wheel, tmp_path,
                                                                             monkeypatch, capsys):
    import shlex

    from esteira import cli

    monkeypatch.setenv("ESTEIRA_USECASES_DIR", str(_usecases(tmp_path)[0].parent))
    spec = {"spark_version": "15.4.x-scala2.12", "policy_id": "p-1", "spark_env_vars": {"ESTEIRA_HOME": "/x"}}
    monkeypatch.setenv("ESTEIRA_DATABRICKS_CLUSTER_JSON", json.dumps(spec))
    assert cli.main(["databricks", "deploy", "--volume", VOLUME, "--wheel", str(wheel)]) == 0
    exported = dict(shlex.split(line)[1].split("=", 1) for line in capsys.readouterr().out.splitlines()
                    if line.startswith("export "))
    cluster = json.loads(exported["ESTEIRA_DATABRICKS_CLUSTER_JSON"])
    usecases = cluster["spark_env_vars"].pop("ESTEIRA_USECASES_DIR")
    assert cluster == spec and usecases.startswith(f"{VOLUME}/esteira/usecases/")
    assert "ESTEIRA_USECASES_DIR" not in exported


def test_a_run_executes_the_deployed_job_file(emulator, wheel, tmp_path, monkeypatch):
    """The printed ESTEIRA_DATABRICKS_JOBS_PATH is what a run's spark_python_task reads: the
    emulated cluster runs the copy uploaded to the volume."""
    from esteira.compute.databricks import DatabricksBackend, DatabricksConfig
    from esteira.compute.job import StepJob
    from esteira.config import get_settings, load_usecase
    from esteira.features.generator import generate_landing
    from tests.databricks_emulator.service import cluster_env, small_churn

    usecases = tmp_path / "usecases"
    uc = load_usecase(small_churn(usecases, entities=100))
    home = tmp_path / "home"
    monkeypatch.setenv("ESTEIRA_HOME", str(home))
    generate_landing(uc, get_settings().landing_dir / uc.source.landing)
    deployed = deploy.deploy(workspace.client(), VOLUME, wheel, [usecases / "churn.yaml"])
    for key, value in cluster_env(home, deployed.usecases_dir, ESTEIRA_DATABRICKS_JOBS_PATH=deployed.jobs_path).items():
        monkeypatch.setenv(key, value)
    job = StepJob("feature_refresh", "churn", {"params": {"interval_start": "2026-01-01", "interval_end": "2026-01-08"},
                                               "airflow": {"run_id": "deployed"}})
    result = DatabricksBackend(DatabricksConfig.from_env()).run(job)
    assert result["rows_written"] > 0
    submitted = emulator.requests("/runs/submit")[-1]["params"]["tasks"][0]["spark_python_task"]["python_file"]
    assert submitted == f"{deployed.jobs_path}/feature_refresh.py"
