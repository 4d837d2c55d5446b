"""The online store's keys, its freshness rule, its YAML section and its setting."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from esteira.config import ConfigError, get_settings
from esteira.features.online import entity_key, is_stale
from esteira.usecase import OnlineSpec

_AT = dt.datetime(2026, 3, 10, 12)


def test_an_int_entity_takes_numbers_and_digit_strings_alike(churn_uc):
    assert entity_key(churn_uc, 123) == entity_key(churn_uc, "123") == entity_key(churn_uc, 123.0) == "123"
    for bad in ("abc", 1.5, None, True, [1]):
        with pytest.raises(ValueError, match="'customer_id' must be an integer"):
            entity_key(churn_uc, bad)


def test_features_older_than_max_age_are_stale(churn_uc):
    uc = churn_uc.model_copy(update={"online": OnlineSpec(max_age="2d")})
    assert not is_stale(uc, _AT - dt.timedelta(days=2), _AT)
    assert is_stale(uc, _AT - dt.timedelta(days=2, seconds=1), _AT)
    assert not is_stale(churn_uc.model_copy(update={"online": OnlineSpec()}), dt.datetime(2000, 1, 1), _AT)


def test_max_age_in_periods_counts_whole_periods_of_the_grain(churn_uc):
    monthly = churn_uc.model_copy(update={"grain": "month", "online": OnlineSpec(max_age="1 period")})
    assert not is_stale(monthly, dt.datetime(2026, 2, 1), _AT)  # February's row, any day of March
    assert not is_stale(monthly, dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 31, 23))
    assert is_stale(monthly, dt.datetime(2026, 1, 1), dt.datetime(2026, 3, 1))
    daily = churn_uc.model_copy(update={"grain": "day", "online": OnlineSpec(max_age="3 periods")})
    assert not is_stale(daily, dt.datetime(2026, 3, 7), _AT)  # 3 days before the 10th
    assert is_stale(daily, dt.datetime(2026, 3, 6), _AT)
    weekly = churn_uc.model_copy(update={"grain": "week", "online": OnlineSpec(max_age="1 period")})
    assert not is_stale(weekly, dt.datetime(2026, 3, 2), _AT)  # the 10th is in the week of the 9th
    assert is_stale(weekly, dt.datetime(2026, 2, 23), _AT)


def test_the_online_section_is_checked_on_load():
    assert OnlineSpec().stale == "refuse"
    with pytest.raises(ValidationError, match="online.max_age must look like"):
        OnlineSpec(max_age="3 events")
    with pytest.raises(ValidationError, match="stale"):
        OnlineSpec(stale="ignore")


def test_the_online_store_setting(monkeypatch):
    monkeypatch.delenv("ESTEIRA_ONLINE_STORE", raising=False)
    assert get_settings().online_store == "sqlite"
    monkeypatch.setenv("ESTEIRA_ONLINE_STORE", "redis://127.0.0.1:6379/3")
    assert get_settings().online_store == "redis://127.0.0.1:6379/3"
    monkeypatch.setenv("ESTEIRA_ONLINE_STORE", "memcached://x")
    with pytest.raises(ConfigError, match="ESTEIRA_ONLINE_STORE"):
        get_settings()
