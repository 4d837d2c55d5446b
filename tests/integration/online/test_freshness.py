"""The training set and the online lookup apply the same freshness rule to the same row:
with ``online.stale: refuse``, a label whose features are older than ``online.max_age`` at its
time is left out of the training set exactly when the server refuses that row at that age."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from esteira import tables
from esteira.features.online import open_store
from esteira.features.refresh import labels_schema
from esteira.features.training_set import build_training_set
from esteira.serving.lookup import Lookup
from esteira.serving.protocol import RequestError
from esteira.stages.window import RunWindow
from esteira.usecase import OnlineSpec
from tests.helpers import TEST_START

from .conftest import refresh_and_publish

pytestmark = pytest.mark.integration

_MARGIN = 120  # seconds either side of the row's age: far more than the test takes


def _served(uc, store, key: str, max_age: int) -> bool:
    """Whether the server takes the row by key (it refuses stale rows)."""
    uc = uc.model_copy(update={"online": OnlineSpec(max_age=f"{max_age}s", stale="refuse")})
    try:
        Lookup(uc, store).fill({uc.entity: [key]}, uc.feature_names)
    except RequestError as refusal:
        assert refusal.status == 422
        return False
    return True


def _trained(uc, settings, label_at: dt.datetime, max_age: int) -> bool:
    uc = uc.model_copy(update={"online": OnlineSpec(max_age=f"{max_age}s", stale="refuse")})
    rows, _ = build_training_set(uc, settings, label_at, label_at + dt.timedelta(seconds=1))
    return len(rows) == 1


def test_training_and_serving_refuse_the_same_stale_row(churn, settings):
    refresh_and_publish(churn, RunWindow(TEST_START, TEST_START + dt.timedelta(days=3)), run_id="fresh")
    store = open_store(settings, churn)
    entry = store.get_many(sorted(store.digests())[:1])[0]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    age = (now - entry.feature_ts).total_seconds()
    # The same row used at the same age: a label stamped now, with no later feature row.
    label_at = entry.feature_ts + dt.timedelta(seconds=int(age))
    labels = pd.DataFrame({churn.entity: [int(entry.key)], churn.timestamp: [label_at],
                           churn.label.column: [1]})
    tables.append(tables.table_uri(settings, churn, tables.LABELS), labels, schema=labels_schema(churn))

    for max_age, expected in ((int(age) + _MARGIN, True), (int(age) - _MARGIN, False)):
        assert _trained(churn, settings, label_at, max_age) is expected
        assert _served(churn, store, entry.key, max_age) is expected
