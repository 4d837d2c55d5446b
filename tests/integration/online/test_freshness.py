"""The training set, batch scoring and the online lookup apply the same freshness rule to the
same row: with ``online.stale: refuse``, a label whose features are older than
``online.max_age`` at its time is left out of the training set exactly when the server refuses
that row at that age; batch scoring scores the row at its own time, where its age is zero, so
it scores it under either max_age."""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pytest

from esteira import tables
from esteira.features.online import open_store
from esteira.features.refresh import labels_schema
from esteira.features.training_set import build_training_set
from esteira.serving.batch import score_batch
from esteira.serving.lookup import Lookup
from esteira.serving.protocol import RequestError
from esteira.stages.window import RunWindow
from esteira.usecase import OnlineSpec, RegistrySpec
from tests.helpers import TEST_START
from tests.integration.serving import models

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


def _batch_scored(uc, settings, window: RunWindow, entry, max_age: int) -> bool:
    """Whether batch scoring of the row's window scored the row (with a champion of its own)."""
    uc = uc.model_copy(update={"online": OnlineSpec(max_age=f"{max_age}s", stale="refuse"),
                               "registry": RegistrySpec(model_name=f"churn_{uuid.uuid4().hex[:8]}")})
    models.set_champion(uc, models.register(uc, models.train(uc, seed=3)))
    batch = score_batch(uc, settings, window.start_at, window.end_at, run_id="batch")
    scored = tables.read_table(batch["table_uri"])
    row = scored[(scored[uc.entity] == int(entry.key)) & (scored[uc.timestamp] == entry.feature_ts)
                 & (scored["model_name"] == uc.model_name)]
    return len(row) == 1


def test_training_batch_and_serving_apply_the_same_rule_to_the_same_row(mlflow_server, churn, settings):
    window = RunWindow(TEST_START, TEST_START + dt.timedelta(days=3))
    refresh_and_publish(churn, window, run_id="fresh")
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
        assert _batch_scored(churn, settings, window, entry, max_age)
