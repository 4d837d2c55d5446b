"""Start services in their own process group, wait for health, and stop the whole group.

`airflow standalone` forks children that survive a SIGTERM to the parent, and idle
LocalExecutor workers ignore SIGTERM (docs/stack-facts.md): stopping means signalling the group,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A service could not start or be reached; the message says which and why."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: Sequence[str]
    port: int
    health_url: str
    env: Mapping[str, str]
    cwd: Path | None = None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0, check: Callable[[bytes], bool] | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            return response.status == 200 and (check is None or check(body))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(service: Service, log_path: Path) -> int:
    """Start ``service`` as the leader of a new process group; returns its pid (= pgid)."""
    if not port_is_free(service.port):
        raise ServiceError(
            f"{service.name}: port {service.port} is already taken by another process; "
            f"stop it or choose another port (see README, 'Configuration')"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(service.argv),
            env={**os.environ, **service.env},
            cwd=service.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def wait_healthy(
    service: Service,
    pid: int,
    timeout: float,
    log_path: Path | None = None,
    check: Callable[[bytes], bool] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(service.health_url, check=check):
            return
        if not pid_alive(pid) or _is_zombie(pid):
            tail = _tail(log_path) if log_path else ""
            raise ServiceError(f"{service.name} exited while starting.{tail}")
        time.sleep(0.5)
    tail = _tail(log_path) if log_path else ""
    raise ServiceError(
        f"{service.name} did not become healthy at {service.health_url} within {timeout:.0f} s.{tail}"
    )


def stop_group(pgid: int, grace: float = 10.0) -> bool:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL. True if it was running."""
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < deadline:
        _reap(pgid)
        time.sleep(0.1)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_zombie(pid: int) -> bool:
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return not pid_alive(pid)
    return state == "Z"


def _tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nLast lines of {log_path}:\n" + "\n".join(text)


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (by parent pid), children first found first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def marked_processes(marker: str, value: str) -> list[int]:
    """Processes whose environment has ``marker=value``: the stack's own, orphans included.

    Task processes call setsid and can outlive their group; the marker finds them without
    matching on process names.
    """
    needle = f"{marker}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        pid = int(environ.parent.name)
        if pid == os.getpid():
            continue
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def stop_processes(pids: Sequence[int], grace: float = 10.0) -> None:
    """SIGTERM each process, then SIGKILL what is left after ``grace`` seconds."""
    pids = [p for p in pids if pid_alive(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for pid in pids:
                _reap(pid)
            pids = [p for p in pids if pid_alive(p) and not _is_zombie(p)]
            if not pids:
                return
            time.sleep(0.2)
