"""Raw rows are judged by the schema in the use case; every broken rule is named."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from esteira.features.generator import generate_landing
from esteira.features.validation import SchemaMismatch, read_raw, validate
from tests.helpers import shrink

_GOOD = {
    "customer_id": "17",
    "event_ts": "2026-01-05T10:00:00",
    "plan": "basic",
    "region": "north",
    "device": "mobile",
    "monthly_charges": "29.9",
    "session_minutes": "12.5",
    "support_tickets": "0",
    "payment_delay_days": "3",
}


def _rows(*changes: dict) -> pd.DataFrame:
    rows = []
    for number, change in enumerate(changes):
        row = dict(_GOOD, event_ts=f"2026-01-05T10:00:{number:02d}")
        rows.append({**row, **change})
    return pd.DataFrame(rows, dtype=object)


def test_each_broken_rule_is_a_reason(churn_uc):
    raw = _rows(
        {},
        {"monthly_charges": "n/a"},
        {"customer_id": None},
        {"support_tickets": "999"},
        {"plan": "gold"},
        {"customer_id": "4.5", "monthly_charges": "-1", "device": None},
        {"event_ts": "yesterday"},
        {"session_minutes": None},
    )
    checked = validate(raw, churn_uc)
    assert list(checked.bad_index) == [1, 2, 3, 4, 5, 6]
    assert list(checked.bad["reason"]) == [
        "monthly_charges: not a number ('n/a')",
        "customer_id: missing value (not nullable)",
        "support_tickets: 999 above max 50",
        "plan: unknown category 'gold' (allowed: basic, standard, premium)",
        "customer_id: not an integer ('4.5'); monthly_charges: -1 below min 0",
        "event_ts: not a timestamp ('yesterday')",
    ]
    assert checked.bad.loc[0, "monthly_charges"] == "n/a"  # bad rows keep their raw text
    assert len(checked.good) == 2 and checked.good["session_minutes"].isna().tolist() == [False, True]


def test_good_rows_are_typed(churn_uc):
    good = validate(_rows({}, {"device": None}), churn_uc).good
    assert str(good["customer_id"].dtype) == "Int64"
    assert str(good["event_ts"].dtype) == "datetime64[us]"
    assert good["monthly_charges"].dtype == "float64"
    assert good["plan"].tolist() == ["basic", "basic"]
    assert good["device"].isna().tolist() == [False, True]


def test_repeated_keys_and_events_outside_the_files_day_are_bad(churn_uc):
    raw = _rows({}, {}, {"event_ts": "2026-01-06T00:00:00"})
    raw.loc[1, "event_ts"] = raw.loc[0, "event_ts"]
    checked = validate(raw, churn_uc, day=date(2026, 1, 5))
    assert list(checked.bad["reason"]) == [
        "duplicate key (customer_id, event_ts)",
        "event_ts: outside the file's day 2026-01-05",
    ]


def test_a_file_without_a_declared_column_is_refused(churn_uc, tmp_path):
    path = tmp_path / "events.csv"
    _rows({}).drop(columns=["plan"]).to_csv(path, index=False)
    with pytest.raises(SchemaMismatch, match="plan"):
        read_raw(path, list(churn_uc.schema_.columns))


def test_na_text_is_judged_not_taken_for_missing(churn_uc, tmp_path):
    path = tmp_path / "events.csv"
    _rows({"session_minutes": "NA"}, {"session_minutes": ""}).to_csv(path, index=False)
    checked = validate(read_raw(path, list(churn_uc.schema_.columns)), churn_uc)
    assert list(checked.bad["reason"]) == ["session_minutes: not a number ('NA')"]


def test_the_demand_use_case_validates_its_generated_data(demand_uc, tmp_path):
    uc = shrink(demand_uc, entities=40, days=3, bad_row_share=0.1)
    generate_landing(uc, tmp_path)
    path = tmp_path / "stores_2026-01-02.csv"
    checked = validate(read_raw(path, list(uc.schema_.columns)), uc, day=date(2026, 1, 2))
    assert len(checked.good) + len(checked.bad) == 40
    assert 0 < len(checked.bad) < 15
    assert checked.good["promo"].isin([0, 1]).all()
    assert checked.good["store_size"].isin(["small", "medium", "large"]).all()
    reasons = " ".join(checked.bad["reason"])
    assert any(word in reasons for word in ("not a number", "not an integer", "missing", "above", "unknown"))
