"""The online feature store: the latest feature row per entity, served by entity key.

After a refresh, `materialize` writes each entity's latest feature row (by the feature
timestamp, at or before the time of materialization) from the Delta feature table, read
through the table seam at one version, into the online store, with that row's timestamp and
the table version it was read at. It is
incremental and idempotent: an entry is written only when its row differs from the stored
one (a digest of the row), and an entity gone from the table is deleted; a rerun on the same
version writes nothing. Two backends behind one interface, chosen by ``ESTEIRA_ONLINE_STORE``:
SQLite under ``ESTEIRA_HOME/online`` (the embedded default, no server) and Redis (a hash per
use case under ``ESTEIRA_ONLINE_PREFIX``, in the URL's logical database).

`is_stale` is the freshness rule of ``online.max_age``: a row is stale when its feature
timestamp is older than ``max_age`` before the time it is used (periods counted in the grain,
as the feature windows count them). The server applies it at request time, the training set
(`stale_rows`) at each label's time, so with ``stale: refuse`` a model is never trained on a
row the server would refuse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from esteira import tables
from esteira.config import Settings
from esteira.features.definitions import parse_window, period_floor, shift_back
from esteira.usecase import UseCase


class OnlineStoreError(RuntimeError):
    """The online store cannot be reached or holds something unreadable."""


@dataclass(frozen=True)
class Entry:
    """What the store holds for one entity: its latest feature row and where it came from."""

    key: str
    features: dict[str, Any]
    feature_ts: dt.datetime
    version: int
    digest: str

    def to_json(self) -> str:
        return json.dumps({"features": self.features, "feature_ts": self.feature_ts.isoformat(),
                           "version": self.version, "digest": self.digest})

    @classmethod
    def from_json(cls, key: str, text: str | bytes) -> Entry:
        doc = json.loads(text)
        return cls(key, doc["features"], dt.datetime.fromisoformat(doc["feature_ts"]),
                   doc["version"], doc["digest"])


class OnlineStore(Protocol):
    """One use case's entries; ``write`` applies puts and deletes in one transaction."""

    location: str

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]: ...

    def digests(self) -> dict[str, str]: ...

    def write(self, puts: Sequence[Entry], deletes: Sequence[str], version: int,
              as_of: dt.datetime | None = None) -> None: ...

    def materialized_version(self) -> int | None: ...

    def materialized_as_of(self) -> dt.datetime | None: ...

    def clear(self) -> None: ...


class SqliteStore:
    """Entries in ``<dir>/<uc>.sqlite`` (WAL: the server reads while a refresh writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = f"sqlite:{path}"
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS entries "
                       "(key TEXT PRIMARY KEY, digest TEXT NOT NULL, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            self._local.db = db
        return db

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        found: dict[str, Entry] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db().execute(
                    f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                found[key] = Entry.from_json(key, value)
        return [found.get(key) for key in keys]

    def digests(self) -> dict[str, str]:
        return dict(self._db().execute("SELECT key, digest FROM entries"))

    def write(self, puts: Sequence[Entry], deletes: Sequence[str], version: int,
              as_of: dt.datetime | None = None) -> None:
        db = self._db()
        with _transaction(db):
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                           [(e.key, e.digest, e.to_json()) for e in puts])
            db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in deletes])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(version),))
            if as_of is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('as_of', ?)", (as_of.isoformat(),))

    def materialized_version(self) -> int | None:
        value = self._meta("version")
        return None if value is None else int(value)

    def materialized_as_of(self) -> dt.datetime | None:
        value = self._meta("as_of")
        return None if value is None else dt.datetime.fromisoformat(value)

    def _meta(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def clear(self) -> None:
        db = self._db()
        with _transaction(db):
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM meta")


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


class RedisStore:
    """Entries in the hash ``<prefix>:<uc>:online`` (key -> JSON), their digests in
    ``...:digests`` and the materialized version in ``...:meta``; a write is one MULTI."""

    def __init__(self, url: str, prefix: str, usecase: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        base = f"{prefix}:{usecase}:online"
        self._entries, self._digests, self._meta = base, f"{base}:digests", f"{base}:meta"
        self.location = f"{_without_password(url)} {base}"

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        if not keys:
            return []
        values = self._call(self._client.hmget, self._entries, list(keys))
        return [None if v is None else Entry.from_json(k, v) for k, v in zip(keys, values, strict=True)]

    def digests(self) -> dict[str, str]:
        stored = self._call(self._client.hgetall, self._digests)
        return {k.decode(): v.decode() for k, v in stored.items()}

    def write(self, puts: Sequence[Entry], deletes: Sequence[str], version: int,
              as_of: dt.datetime | None = None) -> None:
        pipe = self._client.pipeline(transaction=True)
        if puts:
            pipe.hset(self._entries, mapping={e.key: e.to_json() for e in puts})
            pipe.hset(self._digests, mapping={e.key: e.digest for e in puts})
        if deletes:
            pipe.hdel(self._entries, *deletes)
            pipe.hdel(self._digests, *deletes)
        pipe.hset(self._meta, "version", version)
        if as_of is not None:
            pipe.hset(self._meta, "as_of", as_of.isoformat())
        self._call(pipe.execute)

    def materialized_version(self) -> int | None:
        value = self._call(self._client.hget, self._meta, "version")
        return None if value is None else int(value)

    def materialized_as_of(self) -> dt.datetime | None:
        value = self._call(self._client.hget, self._meta, "as_of")
        return None if value is None else dt.datetime.fromisoformat(value.decode())

    def clear(self) -> None:
        self._call(self._client.delete, self._entries, self._digests, self._meta)

    def _call(self, method, *args, **kwargs):
        import redis

        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            raise OnlineStoreError(f"the online store {self.location} failed: {error}") from error


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def open_store(settings: Settings, uc: UseCase) -> OnlineStore:
    """The use case's online store, as ``ESTEIRA_ONLINE_STORE`` chooses."""
    if settings.online_store == "sqlite":
        return SqliteStore(settings.online_dir / f"{uc.name}.sqlite")
    return RedisStore(settings.online_store, settings.online_prefix, uc.name)


def entity_key(uc: UseCase, value: Any) -> str:
    """The store's key of an entity value (an int entity accepts 123 and "123" alike).

    Raises ValueError naming the column when the value cannot be one of its keys.
    """
    kind = uc.schema_.columns[uc.entity].type
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ValueError(f"'{uc.entity}' must be an integer; got {value!r}")
        try:
            number = int(value) if not isinstance(value, float) else value
        except ValueError:
            raise ValueError(f"'{uc.entity}' must be an integer; got {value!r}") from None
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"'{uc.entity}' must be an integer; got {value!r}")
        return str(int(number))
    if value is None:
        raise ValueError(f"'{uc.entity}' must not be null")
    return str(value)


def is_stale(uc: UseCase, feature_ts: dt.datetime, at: dt.datetime) -> bool:
    """The freshness rule: older than ``online.max_age`` before ``at`` (never without one).

    An age in periods counts whole periods of the grain: ``at`` is floored to its period
    first, so with ``max_age: 1 period`` at a monthly grain, on any day of March February's
    row (stamped February 1) is fresh and January's is stale."""
    max_age = uc.online.max_age if uc.online is not None else None
    if max_age is None:
        return False
    if parse_window(max_age).unit == "periods":
        at = period_floor(at, uc.grain)
    oldest = shift_back(at, max_age, uc.grain)
    return oldest is not None and feature_ts < oldest


def stale_rows(uc: UseCase, feature_ts, at):
    """`is_stale` of each pair of ``feature_ts`` and ``at`` (pandas Series), as a boolean array:
    the rule applied row by row, so the training set and the server cannot disagree."""
    import numpy as np

    if uc.online is None or uc.online.max_age is None:
        return np.zeros(len(feature_ts), dtype=bool)
    pairs = zip(feature_ts.tolist(), at.tolist(), strict=True)
    return np.fromiter((is_stale(uc, f, a) for f, a in pairs), dtype=bool, count=len(feature_ts))


@dataclass(frozen=True)
class Materialized:
    """What a materialization did (a reference for the refresh's Asset metadata)."""

    store: str
    version: int
    entities: int
    written: int
    deleted: int
    skew_checked: int  # entries read back and compared with the table after the write
    skew_mismatched: int


def materialize(uc: UseCase, settings: Settings, version: int | None = None,
                skew_sample: int = 100, now: dt.datetime | None = None) -> Materialized:
    """Bring the online store to the feature table's latest rows per entity at ``version``
    (the latest when None) and at or before ``now`` (naive UTC; a row stamped later is not
    served before its time, a later refresh materializes it), writing only the entries that
    changed; then read back a sample of ``skew_sample`` entries and count those that differ
    from the table."""
    store = open_store(settings, uc)
    uri = tables.table_uri(settings, uc, tables.FEATURES)
    version = tables.current_version(uri) if version is None else version
    if version is None:
        raise tables.TableNotFound(f"no Delta table at {uri}: refresh the features first")
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    expected = {e.key: e for e in _entries(uc, latest_rows(uc, uri, version, now), version)}
    stored = store.digests()
    puts = [entry for key, entry in expected.items() if stored.get(key) != entry.digest]
    deletes = sorted(set(stored) - set(expected))
    store.write(puts, deletes, version, now)
    digests = {key: entry.digest for key, entry in expected.items()}
    checked, mismatched = _skew(digests, set(stored) | set(expected), store, skew_sample, version)
    return Materialized(store.location, version, len(expected), len(puts), len(deletes),
                        len(checked), len(mismatched))


@dataclass(frozen=True)
class Skew:
    """A skew check: of ``checked`` sampled entities, those whose online entry differs from
    the feature table's latest row at ``version`` (or is missing, or should be gone)."""

    version: int
    checked: int
    mismatched: list[str]


def check_skew(uc: UseCase, settings: Settings, sample: int = 1000, seed: int = 0) -> Skew:
    """Compare the values of a sample of entities (of the table and of the store) with the
    table at the store's materialized version and time. Materialization writes only the entries whose
    stored digest differs, so an entry damaged in the store is found here, not repaired there."""
    store = open_store(settings, uc)
    version = store.materialized_version()
    if version is None:
        raise OnlineStoreError(f"nothing was materialized into {store.location} yet")
    uri = tables.table_uri(settings, uc, tables.FEATURES)
    rows = latest_rows(uc, uri, version, store.materialized_as_of())
    expected = {e.key: e.digest for e in _entries(uc, rows, version)}
    checked, mismatched = _skew(expected, set(expected) | set(store.digests()), store, sample, seed)
    return Skew(version, len(checked), mismatched)


def _skew(expected: dict[str, str], keys: set[str], store: OnlineStore, sample: int,
          seed: int) -> tuple[list[str], list[str]]:
    """A sample of ``keys``, and those whose stored values (not their stored digest) differ
    from the ``expected`` digests (or are missing, or should be gone)."""
    import random

    picked = sorted(random.Random(seed).sample(sorted(keys), min(sample, len(keys))))
    held = {e.key: _digest(e.feature_ts, e.features) for e in store.get_many(picked) if e is not None}
    return picked, [k for k in picked if expected.get(k) != held.get(k)]


def latest_rows(uc: UseCase, uri: str, version: int, at: dt.datetime | None = None):
    """Each entity's row with the latest feature timestamp (at or before ``at`` when given),
    at ``version`` (streamed: memory holds one batch plus one row per entity)."""
    import pandas as pd

    columns = [uc.entity, uc.timestamp, *uc.feature_names]
    latest = None
    for batch in tables.iter_batches(uri, columns, version):
        rows = batch.to_pandas()
        if at is not None:
            rows = rows[rows[uc.timestamp] <= at]
        frames = [rows] if latest is None else [latest, rows]
        joined = pd.concat(frames, ignore_index=True)
        latest = joined.sort_values(uc.timestamp, kind="stable").drop_duplicates(uc.entity, keep="last")
    if latest is None:
        return pd.DataFrame(columns=columns)
    return latest.reset_index(drop=True)


def _entries(uc: UseCase, latest, version: int) -> Iterable[Entry]:
    names = uc.feature_names
    values = latest[names].astype(object).where(latest[names].notna(), None)
    for key, stamp, row in zip(latest[uc.entity].tolist(), latest[uc.timestamp].tolist(),
                               values.to_dict("records"), strict=True):
        features = {name: _plain(value) for name, value in row.items()}
        feature_ts = stamp.to_pydatetime() if hasattr(stamp, "to_pydatetime") else stamp
        yield Entry(entity_key(uc, key), features, feature_ts, version, _digest(feature_ts, features))


def _digest(feature_ts: dt.datetime, features: dict[str, Any]) -> str:
    """What decides whether a stored entry is current: its timestamp and values."""
    return hashlib.sha256(json.dumps([feature_ts.isoformat(), features]).encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python, timestamps as ISO strings."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value
