"""Point-in-time training sets: each label joined with the features known at its time.

A label stamped t for entity e gets the latest feature row of e stamped at or before t,
never after, so no information from the future leaks into training. With ``online.max_age``
and ``online.stale: refuse``, a label whose feature row is stale at t is dropped: the row the
model server would refuse at that time is not trained on either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from esteira import tables
from esteira.config import Settings
from esteira.usecase import UseCase

log = logging.getLogger("esteira.features")

FEATURE_TIMESTAMP = "feature_timestamp"


@dataclass(frozen=True)
class TrainingSetRef:
    """Which table versions and label interval a training set was built from."""

    table_uri: str
    version: int
    labels_uri: str
    labels_version: int
    start: datetime
    end: datetime
    rows: int
    source: str | None = None  # what the feature table's commit at ``version`` was read from
    source_version: int | None = None  # that source's Delta version, when it has versions


def point_in_time_join(
    labels: pd.DataFrame, features: pd.DataFrame, entity: str, timestamp: str
) -> pd.DataFrame:
    """Join each label row with the latest feature row of its entity at or before it.

    The feature row's own time is kept as ``feature_timestamp``; labels without such a
    row are dropped. The result is sorted by (timestamp, entity).
    """
    features = features.rename(columns={timestamp: FEATURE_TIMESTAMP})
    features[FEATURE_TIMESTAMP] = features[FEATURE_TIMESTAMP].astype("datetime64[us]")
    labels = labels.assign(**{timestamp: labels[timestamp].astype("datetime64[us]")})
    joined = pd.merge_asof(
        labels.sort_values(timestamp, kind="stable"),
        features.sort_values(FEATURE_TIMESTAMP, kind="stable"),
        left_on=timestamp,
        right_on=FEATURE_TIMESTAMP,
        by=entity,
        direction="backward",
        allow_exact_matches=True,
    )
    joined = joined[joined[FEATURE_TIMESTAMP].notna()]
    return joined.sort_values([timestamp, entity], kind="stable").reset_index(drop=True)


def _pinned(uri: str, version: int | None) -> int:
    """``version``, or the latest one: read and recorded alike, so the reference is exact."""
    latest = tables.current_version(uri) if version is None else version
    if latest is None:
        raise tables.TableNotFound(f"no Delta table at {uri}: run a feature refresh first")
    return latest


def build_training_set(
    uc: UseCase,
    settings: Settings,
    start: datetime,
    end: datetime,
    version: int | None = None,
    labels_version: int | None = None,
) -> tuple[pd.DataFrame, TrainingSetRef]:
    """Labels stamped in [start, end) with their point-in-time features.

    ``version`` and ``labels_version`` pin the feature and labels tables (latest when
    None); the versions read are recorded in the returned reference, so passing them
    back rebuilds the same set. Columns: entity, timestamp, ``feature_timestamp``, the
    feature names, the label column.
    """
    table_uri = tables.table_uri(settings, uc, tables.FEATURES)
    labels_uri = tables.table_uri(settings, uc, tables.LABELS)
    version, labels_version = _pinned(table_uri, version), _pinned(labels_uri, labels_version)
    key = [uc.entity, uc.timestamp]
    labels = tables.read_interval(
        labels_uri, uc.timestamp, start, end, [*key, uc.label.column], version=labels_version
    )
    features = tables.read_table(
        table_uri, version, [*key, *uc.feature_names], filters=[(uc.timestamp, "<", end)]
    )
    joined = point_in_time_join(labels, features, uc.entity, uc.timestamp)
    dropped = len(labels) - len(joined)
    stale = 0
    if uc.online is not None and uc.online.stale == "refuse":
        from esteira.features.online import stale_rows

        refused = stale_rows(uc, joined[FEATURE_TIMESTAMP], joined[uc.timestamp])
        joined, stale = joined[~refused].reset_index(drop=True), int(refused.sum())
    log.info(
        "training set [%s, %s): %d labels, %d joined, %d dropped (no feature row at or "
        "before the label), %d stale (online.max_age); features v%d, labels v%d",
        start, end, len(labels), len(joined), dropped, stale, version, labels_version,
    )
    columns = [*key, FEATURE_TIMESTAMP, *uc.feature_names, uc.label.column]
    written_from = tables.commit_metadata_of(table_uri, version)
    source_version = written_from.get(tables.SOURCE_VERSION_KEY)
    ref = TrainingSetRef(
        table_uri=table_uri,
        version=version,
        labels_uri=labels_uri,
        labels_version=labels_version,
        start=start,
        end=end,
        rows=len(joined),
        source=written_from.get(tables.SOURCE_KEY),
        source_version=None if source_version is None else int(source_version),
    )
    return joined[columns], ref
