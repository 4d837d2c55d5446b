"""The registry lock around each read-check-write on a model's aliases and tags, and the
named points inside it where a test holds a transition.

MLflow has no atomic compare-and-set for aliases or tags: "move champion only if it still
points at version N" is a read, then a write. An exclusive ``fcntl.flock`` on
``settings.home/locks/registry-<model>.lock`` makes every Esteira transition of one model
run one at a time, so each sees the state the previous one left.

What it guarantees:

- mutual exclusion among the processes that take it (every transition in
  ``registry.transitions``: tasks, the CLI, the demo) on one host, and on several hosts when
  ``ESTEIRA_HOME`` is on a filesystem that shares locks between them (NFSv4, where Linux
  turns ``flock`` into byte-range locks the server arbitrates);
- no stale lock: the kernel releases it when the holder dies, SIGKILL included, so a crashed
  transition leaves at worst a partial write, which the next attempt completes (each
  transition is idempotent by its key and re-reads the state under the lock).

Where it does not hold:

- across hosts whose ``ESTEIRA_HOME`` is local, or on a mount without shared locks (NFS with
  ``nolock`` or ``local_lock``, most FUSE and object-store mounts): each host then has its
  own lock. The DAG factory's one-slot pool per model (``orchestration.pools``) serializes
  the promotion, rollback and deploy tasks on any executor for that case;
- against writers that do not take it: a person moving an alias in MLflow's UI, or another
  tool, between Esteira's read and write is overwritten;
- it is not a lease with fencing: a request the holder sent just before it died may still
  reach the MLflow server after the lock was released.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from esteira.config import get_settings

BARRIER_ENV = "ESTEIRA_REGISTRY_BARRIER"


class LockTimeout(TimeoutError):
    """Another process held the registry lock for too long."""


@contextmanager
def registry_lock(model_name: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold the model's lock for the block; LockTimeout after ``timeout`` seconds of waiting."""
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


def checkpoint(step: str, timeout: float = 600.0) -> None:
    """A named point between two registry writes (``promote.alias_moved``, ...).

    Tests hold a transition here to meet it with a fault (a SIGKILL, MLflow stopped, a
    racing process) exactly between two writes, in whichever process runs it: with
    ``ESTEIRA_REGISTRY_BARRIER`` naming a folder that holds ``<step>.hold``, the process
    writes its pid to ``<step>.reached`` and waits until the hold file is removed. Without
    the variable or the hold file it returns at once.
    """
    folder = os.environ.get(BARRIER_ENV)
    if not folder:
        return
    hold = Path(folder) / f"{step}.hold"
    if not hold.exists():
        return
    (Path(folder) / f"{step}.reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while hold.exists():
        if time.monotonic() > deadline:
            raise LockTimeout(f"{hold} was not released within {timeout:.0f} s")
        time.sleep(0.05)
