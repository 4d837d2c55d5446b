"""A lock across processes on one machine, around each check-and-set on the registry.

MLflow has no atomic compare-and-set for aliases, so "move champion only if it still points
at version N" is a read then a write. An exclusive ``fcntl`` lock on a file under
``settings.home/locks`` makes that pair atomic for every process on this machine (the
embedded stack, LocalExecutor workers, the CLI), and for workers on several machines when
``ESTEIRA_HOME`` is on a shared volume (docker-compose). Where it is not shared, give the
promotion and rollback tasks an Airflow pool of one slot per model (README, Operations).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from esteira.config import get_settings


class LockTimeout(TimeoutError):
    """Another process held the registry lock for too long."""


@contextmanager
def registry_lock(model_name: str, timeout: float = 60.0) -> Iterator[None]:
    folder = get_settings().home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"registry-{model_name}.lock"
    deadline = time.monotonic() + timeout
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"registry lock {path} held by another process for over {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
