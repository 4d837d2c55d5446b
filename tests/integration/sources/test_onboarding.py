"""`esteira init` and `esteira check` on real files, and the settings the stack remembers."""

from __future__ import annotations

import pandas as pd
import pytest

from esteira.cli import main
from esteira.config import get_settings, get_usecase, remember_settings
from esteira.onboarding import OnboardingError, infer_grain


@pytest.fixture
def panel_file(settings, rows):
    path = settings.home / "export" / "panel.parquet"
    path.parent.mkdir(parents=True)
    rows[rows["person_id"] < 90].to_parquet(path, index=False)
    return path


def test_init_infers_the_schema_grain_and_problem_and_check_passes(settings, panel_file, capsys):
    assert main(["init", "panel", "--from", str(panel_file), "--entity", "person_id",
                 "--timestamp", "period", "--target", "wage"]) == 0
    uc = get_usecase("panel", settings)
    assert (uc.grain, uc.problem_type, uc.schedule) == ("month", "regression", "@monthly")
    assert uc.source.kind == "file" and uc.labels_from_events
    assert uc.schema_.columns["sector"].allowed == ["a", "b", "c"]
    hours = uc.schema_.columns["hours"]
    assert hours.min < 10 and hours.max > 60  # the sample's range with a margin
    assert {"wage_prev", "hours_mean_before"} <= set(uc.feature_names) and "wage" not in uc.feature_names
    assert "REVIEW" in (settings.usecases_dir / "panel.yaml").read_text()
    capsys.readouterr()
    assert main(["check", "panel"]) == 0
    out = capsys.readouterr().out
    assert "periods (grain month): 24, from 2024-01-01 to 2025-12-01" in out
    assert "feature wage_prev (lag, 1 periods): 96% present" in out
    assert uc.online is not None and uc.online.max_age is None  # served by key; REVIEW max_age
    assert "online store: the latest row of each person_id (" in out and "no max_age: never stale" in out
    assert not settings.data_dir.exists() or not any(settings.data_dir.iterdir())  # nothing written


def test_check_fails_naming_the_column_when_rows_break_the_schema(settings, panel_file, rows, capsys):
    main(["init", "panel", "--from", str(panel_file), "--entity", "person_id",
          "--timestamp", "period", "--target", "wage"])
    broken = rows[rows["person_id"] < 90].assign(sector="z")
    broken.to_parquet(panel_file, index=False)
    capsys.readouterr()
    assert main(["check", "panel"]) == 1
    out = capsys.readouterr().out
    assert "bad: 288 x sector: unknown category 'z'" in out
    assert "PROBLEM: 100.0% bad rows, above schema.max_bad_share; the columns: sector" in out


def test_init_refuses_a_column_that_is_not_there(settings, panel_file):
    with pytest.raises(OnboardingError, match=r"no column salary \(columns: person_id, period"):
        from esteira.onboarding import init_usecase

        init_usecase(settings, "panel", str(panel_file), "person_id", "period", "salary")


@pytest.mark.parametrize(("values", "grain"), [
    ([2019, 2020], "year"), (["2019-01", "2019-02"], "month"), (["2019-01-01", "2019-02-01"], "month"),
    (["2019-01-01", "2019-01-02"], "day"), (["2019-01-01 10:00", "2019-01-02"], "event"),
])
def test_the_grain_is_inferred_from_the_timestamps(values, grain):
    assert infer_grain(pd.Series(values)) == grain


def test_a_new_shell_sees_the_use_cases_the_stack_was_started_with(settings, monkeypatch):
    remember_settings(settings)
    monkeypatch.delenv("ESTEIRA_USECASES_DIR")
    monkeypatch.setenv("ESTEIRA_AIRFLOW_PORT", "8181")
    later = get_settings()
    assert later.usecases_dir == settings.usecases_dir
    assert later.airflow_port == 8181  # the environment still wins
