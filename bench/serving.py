"""Benchmark: Esteira's model server against ``mlflow models serve``, same model, same payloads.

One registered churn pipeline (one-hot + imputer + 10-tree random forest) on a private
MLflow server, served by ``mlflow models serve --env-manager local`` (1 worker) and by
``python -m esteira.serving.server`` (1 worker, inference log on). A keep-alive HTTP
client on loopback sends a 1-row and a 100-row ``dataframe_split`` payload at client
concurrency 1 and 8, a bounded number of requests each. The ceiling is the same model's
in-process ``predict`` on one row. The last line printed is one JSON object.

    .venv/bin/python bench/serving.py [--requests 400]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

_MODEL = "churn"


def _train(uc, rows: int = 2000):
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(7)
    data = {}
    for f in uc.features.definitions:
        if f.type == "category":
            data[f.name] = rng.choice(uc.schema_.columns[f.source].allowed, rows).astype(object)
        else:
            data[f.name] = rng.gamma(2.0, 10.0, rows).round(2)
    x = pd.DataFrame(data)
    x.loc[::9, "device"] = None
    x.loc[::7, "session_minutes"] = np.nan
    y = (x["monthly_charges"] / 20 - x["tickets_30d_sum"] / 20 + rng.normal(0, 0.5, rows) > 0)
    categorical = [f.name for f in uc.features.definitions if f.type == "category"]
    numeric = [f.name for f in uc.features.definitions if f.type != "category"]
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                             ("num", SimpleImputer(), numeric)])
    model = Pipeline([("pre", pre),
                      ("clf", RandomForestClassifier(n_estimators=10, max_depth=8, random_state=0))])
    return model.fit(x, y.astype(int)), x


def _register(model, x) -> str:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    example = x.head(5)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(example, model.predict(example)),
            input_example=example, serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"], registered_model_name=_MODEL,
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(_MODEL, "champion", version)
    return version


class _Connection:
    """A keep-alive HTTP/1.1 client on a raw socket: the request bytes are built once, so
    the client spends microseconds per request and the servers, not the client, are measured."""

    def __init__(self, port: int, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.buffer = b""

    def send(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def _load(port: int, body: bytes, concurrency: int, total: int) -> tuple[list[float], float, int]:
    """Send ``total`` requests from ``concurrency`` keep-alive connections.

    Returns the latencies, the elapsed wall time and the number of non-200 answers.
    """
    per_client = max(total // concurrency, 1)
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = _Connection(port, body)
        mine = []
        ready.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            status, _ = conn.send()
            mine.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started, len(errors)


def _compare(servers: dict, body: bytes, concurrency: int, total: int, rounds: int) -> dict:
    """Alternate the servers over ``rounds`` rounds, so a shift in the machine's load
    (it is shared) hits both alike; returns figures per server."""
    figures = {name: {"latencies": [], "seconds": 0.0, "errors": 0} for name in servers}
    for _ in range(rounds):
        for name, service in servers.items():
            latencies, seconds, errors = _load(service.port, body, concurrency, total // rounds)
            figures[name]["latencies"] += latencies
            figures[name]["seconds"] += seconds
            figures[name]["errors"] += errors
    out = {}
    for name, f in figures.items():
        lat = sorted(f["latencies"])
        out[name] = {
            "rps": len(lat) / f["seconds"],
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[min(int(len(lat) * 0.99), len(lat) - 1)] * 1000,
            "errors": f["errors"],
        }
    return out


def _post(port: int, body: bytes) -> dict:
    conn = _Connection(port, body)
    status, answer = conn.send()
    conn.close()
    return json.loads(answer)


def _rows_and_calls(port: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("esteira_predicted_rows_total", "esteira_model_calls_total"))}
    return values["esteira_predicted_rows_total"], values["esteira_model_calls_total"]


def _post(port: int, body: bytes) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return answer


def _ceiling(model, row, seconds: float = 3.0) -> float:
    model.predict(row)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(row)
        count += 1
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per 1-row scenario")
    args = parser.parse_args(argv)

    from esteira.config import get_usecase
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service

    load_before = os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="esteira-bench-serving-"))
    uc = get_usecase("churn")
    mlflow_port, mlflow_serve_port, esteira_port = (process.free_port() for _ in range(3))
    tracking = f"http://127.0.0.1:{mlflow_port}"
    os.environ.update(MLFLOW_TRACKING_URI=tracking, ESTEIRA_HOME=str(home),
                      MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    bin_dir = Path(sys.executable).parent
    pids = []
    try:
        tracking_service = mlflow_service(mlflow_port, f"sqlite:///{home / 'mlflow.db'}",
                                          home / "artifacts")
        pids.append(process.start(tracking_service, home / "mlflow.log"))
        process.wait_healthy(tracking_service, pids[-1], timeout=90, log_path=home / "mlflow.log")
        model, x = _train(uc)
        version = _register(model, x)

        servers = {
            "mlflow": process.Service(
                name="mlflow models serve",
                argv=[str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{_MODEL}@champion",
                      "--env-manager", "local", "-w", "1", "-h", "127.0.0.1",
                      "-p", str(mlflow_serve_port)],
                port=mlflow_serve_port, health_url=f"http://127.0.0.1:{mlflow_serve_port}/ping",
                env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},  # its uvicorn
            ),
            "esteira": process.Service(
                name="Esteira model server",
                argv=[sys.executable, "-m", "esteira.serving.server", "--usecase", "churn",
                      "--port", str(esteira_port), "--log-level", "warning"],
                port=esteira_port, health_url=f"http://127.0.0.1:{esteira_port}/health",
                env={"ESTEIRA_MODEL_SERVER_API_KEY": ""},
            ),
        }
        for name, service in servers.items():
            log = home / f"{name}.log"
            pids.append(process.start(service, log))
            process.wait_healthy(service, pids[-1], timeout=120, log_path=log)

        one, hundred = x.sample(1, random_state=1), x.sample(100, random_state=2)
        payloads = {
            "1 row": json.dumps({"dataframe_split": json.loads(one.to_json(orient="split", index=False))}).encode(),
            "100 rows": json.dumps({"dataframe_split": json.loads(hundred.to_json(orient="split", index=False))}).encode(),
        }
        for label, body in payloads.items():
            answers = {name: _post(s.port, body) for name, s in servers.items()}
            if answers["mlflow"] != answers["esteira"]:
                raise SystemExit(f"the servers disagree on the {label} payload: {answers}")

        results: dict[str, dict] = {}
        for label, body in payloads.items():
            total = args.requests if label == "1 row" else max(args.requests // 4, 80)
            for concurrency in (1, 8):
                for service in servers.values():
                    _load(service.port, body, concurrency, 40)  # warm up
                rows_before, calls_before = _rows_and_calls(esteira_port)
                measured = _compare(servers, body, concurrency, total, rounds=4)
                rows, calls = _rows_and_calls(esteira_port)
                measured["esteira"]["rows_per_call"] = (rows - rows_before) / max(calls - calls_before, 1)
                for name, result in measured.items():
                    results[f"{name}|{label}|c{concurrency}"] = result
        ceiling = _ceiling(model, one)
    finally:
        for pid in reversed(pids):
            process.stop_group(pid)

    print(f"model: {_MODEL} version {version} (one-hot + imputer + 10-tree random forest); "
          f"machine load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(a shared machine: both servers were measured in alternating rounds)")
    print(f"{'scenario':<16}{'server':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'rows/model call':>17}")
    for key, r in results.items():
        name, label, conc = key.split("|")
        per_call = f"{r['rows_per_call']:.1f}" if "rows_per_call" in r else ""
        print(f"{label + ' ' + conc:<16}{name:<9}{r['rps']:>9.1f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['errors']:>8}{per_call:>17}")
    ratios = {}
    for label, short in (("1 row", "single_row"), ("100 rows", "hundred_rows")):
        for conc in ("c1", "c8"):
            e, m = results[f"esteira|{label}|{conc}"], results[f"mlflow|{label}|{conc}"]
            suffix = "" if conc == "c1" else "_c8"
            ratios[f"{short}_rps_ratio{suffix}"] = round(e["rps"] / m["rps"], 2)
            ratios[f"{short}_p99_ratio{suffix}"] = round(e["p99_ms"] / m["p99_ms"], 3)
    print("ratios (esteira / mlflow):", ", ".join(f"{k}={v}" for k, v in ratios.items()))
    single = results["esteira|1 row|c1"]["rps"]
    print(f"ceiling: in-process predict of one row = {ceiling:.1f} req/s; "
          f"esteira at c1 reaches {single / ceiling:.0%} of it")
    summary = {
        **ratios,
        "ceiling_rps": round(ceiling, 1),
        "esteira_share_of_ceiling_c1": round(single / ceiling, 3),
        **{f"{k.replace('|', '_').replace(' ', '_')}_rps": round(v["rps"], 1) for k, v in results.items()},
        **{f"{k.replace('|', '_').replace(' ', '_')}_p99_ms": round(v["p99_ms"], 2)
           for k, v in results.items()},
        "errors": sum(v["errors"] for v in results.values()),
        "esteira_rows_per_model_call_1_row_c8": round(results["esteira|1 row|c8"]["rows_per_call"], 2),
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
