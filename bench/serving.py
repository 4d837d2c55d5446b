"""Benchmark: Esteira's model server against ``mlflow models serve`` (and MLServer), same model.

One registered churn pipeline (one-hot + imputer + 10-tree random forest), logged and
compiled the way training and the registration hook do it (``pyfunc_flavor.log_model``,
``compile_version``), on a private MLflow server. Served by:

- ``mlflow`` — ``mlflow models serve --env-manager local`` (1 worker): the baseline;
- ``esteira`` — ``python -m esteira.serving.server`` scoring with the version's ONNX graph;
- ``esteira-sklearn`` — the same server with ``--no-compiled`` (the sklearn pipeline);
- ``mlserver`` — MLServer 1.7 with its MLflow runtime (default settings, ``/invocations``),
  installed in a virtualenv of its own under this run's temporary folder, if it installs
  and loads the model (otherwise the output says why).

A keep-alive HTTP client on loopback sends a 1-row and a 100-row ``dataframe_split``
payload at client concurrency 1 and 8 for a fixed time per round; each scenario runs
``--repeats`` rounds (servers in rotating order, so a shift in the shared machine's load
hits all alike) and reports the median of the rounds. The by-key scenario serves the same
version for churn with ``online:`` declared, the row's features in the online store
(``ESTEIRA_ONLINE_STORE``: SQLite by default), and sends only ``customer_id``: its p50
against the compiled server's on the full row, at concurrency 1, is the lookup's cost. The ceilings are the in-process
calls: sklearn ``predict`` on a one-row frame, and onnxruntime on one row of numpy columns.
The last line printed is one JSON object.

    .venv/bin/python bench/serving.py [--seconds 2] [--repeats 3] [--no-mlserver]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_MODEL = "churn"
_GOALS = {"single_row_rps_ratio": 8.0, "single_row_rps_ratio_c8": 15.0, "hundred_rows_rps_ratio": 5.0}
_BY_KEY_GOAL = 1.25  # the lookup adds at most 25% to p50 at concurrency 1 (compiled path)
# MLServer 1.7.1's worker pool calls asyncio.get_event_loop() outside a loop, which uvloop
# 0.22+ refuses: the worker dies and the model never loads. uvloop 0.21 is what it shipped with.
_MLSERVER = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop==0.21.0")


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
    """Log and register as training does, and point ``champion`` at the version."""
    import mlflow
    from mlflow.models import infer_signature

    from esteira import tracking
    from esteira.serving import pyfunc_flavor

    example = x.head(5)
    with mlflow.start_run():
        info = pyfunc_flavor.log_model(
            model, name="model", signature=infer_signature(example, model.predict(example)),
            input_example=example, serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"], registered_model_name=_MODEL,
        )
    version = str(info.registered_model_version)
    tracking.client().set_registered_model_alias(_MODEL, "champion", version)
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


def _round(port: int, body: bytes, concurrency: int, seconds: float) -> dict:
    """``concurrency`` keep-alive connections sending for ``seconds``; rps, p50, p99, errors."""
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def client() -> None:
        conn = _Connection(port, body)
        mine = []
        ready.wait()
        while time.perf_counter() < deadline[0]:
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
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    ready.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return {"rps": len(lat) / elapsed, "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": lat[min(int(len(lat) * 0.99), len(lat) - 1)] * 1000, "errors": len(errors)}


def _scenario(servers: dict, body: bytes, concurrency: int, seconds: float, repeats: int) -> dict:
    """Each server ``repeats`` rounds, in rotating order; the median of the rounds."""
    rounds: dict[str, list[dict]] = {name: [] for name in servers}
    names = list(servers)
    for name in names:
        _round(servers[name].port, body, concurrency, 0.3)  # warm up
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rounds[name].append(_round(servers[name].port, body, concurrency, seconds))
    return {
        name: {key: statistics.median(x[key] for x in results) for key in ("rps", "p50_ms", "p99_ms")}
        | {"errors": sum(x["errors"] for x in results),
           "rps_rounds": [round(x["rps"], 1) for x in results]}
        for name, results in rounds.items()
    }


def _paired(full_port: int, full: bytes, key_port: int, by_key: bytes, seconds: float,
            repeats: int) -> dict:
    """The same row sent in full and by key, at concurrency 1, alternating which goes first;
    the median p50 of each and their ratio."""
    sides = {"full": (full_port, full), "by_key": (key_port, by_key)}
    for port, body in sides.values():
        _round(port, body, 1, 0.3)  # warm up
    rounds: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            rounds[name].append(_round(*sides[name], 1, seconds))
    p50 = {name: statistics.median(x["p50_ms"] for x in results) for name, results in rounds.items()}
    return {"full_p50_ms": round(p50["full"], 3), "by_key_p50_ms": round(p50["by_key"], 3),
            "by_key_p50_ratio": round(p50["by_key"] / p50["full"], 3),
            "errors": sum(x["errors"] for results in rounds.values() for x in results)}


def _by_key_server(uc, settings, home: Path, one, port: int, service):
    """A server of churn with ``online:`` declared (a use-case folder of its own) and the
    online entry of customer 1 holding ``one``'s features; returns its Service."""
    import dataclasses
    import datetime as dt

    from esteira.features.online import Entry, open_store
    from esteira.usecase import OnlineSpec

    folder = home / "usecases-online"
    folder.mkdir()
    (folder / "churn.yaml").write_text((settings.usecases_dir / "churn.yaml").read_text() + "\nonline: {}\n")
    row = one.astype(object).where(one.notna(), None).iloc[0].to_dict()
    features = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    store = open_store(settings, uc.model_copy(update={"online": OnlineSpec()}))
    store.write([Entry("1", features, dt.datetime.now(dt.UTC).replace(tzinfo=None), 0, "bench")], [], 0)
    server = service(port)
    return dataclasses.replace(server, env={**server.env, "ESTEIRA_USECASES_DIR": str(folder)}), store


def _post(port: int, body: bytes) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer


def _rows_and_calls(port: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("esteira_predicted_rows_total", "esteira_model_calls_total"))}
    return values["esteira_predicted_rows_total"], values["esteira_model_calls_total"]


def _per_second(call, seconds: float = 2.0) -> float:
    call()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        count += 1
    return count / (time.perf_counter() - started)


def _ceilings(settings, version: str, one, hundred) -> dict[str, float]:
    """In-process calls per second: the product's loaded model, both paths, 1 and 100 rows."""
    from esteira.serving.model_loader import load_version

    model = load_version(settings, _MODEL, version)
    out = {}
    for label, rows in (("1_row", one), ("100_rows", hundred)):
        columns = {c.name: rows[c.name].to_numpy() for c in model.columns}
        out[f"sklearn_{label}"] = _per_second(lambda r=rows: model.predict(r))
        out[f"onnx_{label}"] = _per_second(lambda c=columns: model.compiled.run(c))
    return out


def _mlserver(home: Path, settings, version: str, port: int):
    """MLServer in a virtualenv of its own, serving a local copy of the version.

    Returns (Service, None) or (None, why it cannot be measured).
    """
    import mlflow

    from esteira.stack import process

    venv = home / "mlserver-venv"
    uv = Path(sys.executable).parent / "uv"
    steps = [[str(uv), "venv", str(venv), "--python", sys.executable, "-q"],
             [str(uv), "pip", "install", "--python", str(venv / "bin" / "python"), "-q", *_MLSERVER,
              "scikit-learn==1.9.1", "mlflow==3.17.2", "pandas==2.3.3", "numpy==2.4.6", "cloudpickle"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return None, f"MLServer did not install: {done.stderr.strip()[-300:]}"
    models = home / "mlserver-models"
    models.mkdir()
    local = mlflow.artifacts.download_artifacts(f"models:/{_MODEL}/{version}", dst_path=str(models / "model"),
                                                tracking_uri=settings.tracking_uri)
    (models / "settings.json").write_text(json.dumps(
        {"http_port": port, "grpc_port": process.free_port(), "metrics_port": process.free_port()}))
    (models / "model-settings.json").write_text(json.dumps(
        {"name": _MODEL, "implementation": "mlserver_mlflow.MLflowRuntime", "parameters": {"uri": local}}))
    return process.Service(
        name="MLServer", argv=[str(venv / "bin" / "mlserver"), "start", str(models)], port=port,
        health_url=f"http://127.0.0.1:{port}/v2/models/{_MODEL}/ready",
        env={"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
    ), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round per server")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per scenario (the median is reported)")
    parser.add_argument("--no-mlserver", action="store_true", help="skip the MLServer peer")
    args = parser.parse_args(argv)

    import dataclasses

    from esteira.config import get_settings, get_usecase
    from esteira.serving.compilation import compile_version
    from esteira.stack import process
    from esteira.stack.mlflow_server import mlflow_service

    load_before = os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="esteira-bench-serving-"))
    uc = get_usecase("churn")
    mlflow_port, mlflow_serve_port, esteira_port, sklearn_port, mlserver_port = (
        process.free_port() for _ in range(5))
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    os.environ.update(MLFLOW_TRACKING_URI=tracking_uri, ESTEIRA_HOME=str(home),
                      MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
                      ESTEIRA_ONLINE_PREFIX=f"esteira-bench-{home.name}")  # never a real prefix
    settings = dataclasses.replace(get_settings(), home=home)
    bin_dir = Path(sys.executable).parent
    pids = []
    finished = False
    mlserver_note = "skipped (--no-mlserver)"
    try:
        tracking_service = mlflow_service(mlflow_port, f"sqlite:///{home / 'mlflow.db'}",
                                          home / "artifacts")
        pids.append(process.start(tracking_service, home / "mlflow.log"))
        process.wait_healthy(tracking_service, pids[-1], timeout=90, log_path=home / "mlflow.log")
        model, x = _train(uc)
        version = _register(model, x)
        compiled = compile_version(uc, settings, version, x.sample(500, random_state=3))
        if not compiled.equivalent:
            raise SystemExit(f"the bench model did not compile equivalently: {compiled.reason}")

        def esteira(port: int, *extra: str) -> process.Service:
            return process.Service(
                name="Esteira model server",
                argv=[sys.executable, "-m", "esteira.serving.server", "--usecase", "churn",
                      "--port", str(port), "--log-level", "warning", *extra],
                port=port, health_url=f"http://127.0.0.1:{port}/health",
                env={"ESTEIRA_MODEL_SERVER_API_KEY": ""},
            )

        servers = {
            "mlflow": process.Service(
                name="mlflow models serve",
                argv=[str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{_MODEL}@champion",
                      "--env-manager", "local", "-w", "1", "-h", "127.0.0.1",
                      "-p", str(mlflow_serve_port)],
                port=mlflow_serve_port, health_url=f"http://127.0.0.1:{mlflow_serve_port}/ping",
                env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},  # its uvicorn
            ),
            "esteira": esteira(esteira_port),
            "esteira-sklearn": esteira(sklearn_port, "--no-compiled"),
        }
        if not args.no_mlserver:
            service, mlserver_note = _mlserver(home, settings, version, mlserver_port)
            if service is not None:
                servers["mlserver"] = service
        for name, service in list(servers.items()):
            log = home / f"{name}.log"
            pids.append(process.start(service, log))
            try:
                process.wait_healthy(service, pids[-1], timeout=180, log_path=log)
            except process.ServiceError as exc:
                if name != "mlserver":
                    raise
                mlserver_note = f"MLServer did not load the model ({str(exc).splitlines()[0]}; see {log})"
                del servers[name]

        one, hundred = x.sample(1, random_state=1), x.sample(100, random_state=2)
        by_key_port = process.free_port()
        by_key, store = _by_key_server(uc, settings, home, one, by_key_port, esteira)
        pids.append(process.start(by_key, home / "by-key.log"))
        process.wait_healthy(by_key, pids[-1], timeout=180, log_path=home / "by-key.log")
        payloads = {
            "1 row": json.dumps({"dataframe_split": json.loads(one.to_json(orient="split", index=False))}).encode(),
            "100 rows": json.dumps({"dataframe_split": json.loads(hundred.to_json(orient="split", index=False))}).encode(),
        }
        for label, body in payloads.items():
            answers = {name: _post(s.port, body) for name, s in servers.items()}
            if any(a != answers["mlflow"] for a in answers.values()):
                raise SystemExit(f"the servers disagree on the {label} payload: {answers}")
        key_body = json.dumps({"dataframe_split": {"columns": ["customer_id"], "data": [[1]]}}).encode()
        looked_up, sent = _post(by_key_port, key_body), _post(esteira_port, payloads["1 row"])
        if looked_up.get("predictions") != sent["predictions"] or "online" not in looked_up:
            raise SystemExit(f"by key the server answers {looked_up}, with the row sent {sent}")
        if "mlserver" in servers:
            mlserver_note = "MLServer 1.7.1 + mlserver-mlflow 1.7.1, default settings, /invocations"

        results: dict[str, dict] = {}
        for label, body in payloads.items():
            for concurrency in (1, 8):
                rows_before, calls_before = _rows_and_calls(esteira_port)
                measured = _scenario(servers, body, concurrency, args.seconds, args.repeats)
                rows, calls = _rows_and_calls(esteira_port)
                measured["esteira"]["rows_per_call"] = (rows - rows_before) / max(calls - calls_before, 1)
                for name, result in measured.items():
                    results[f"{name}|{label}|c{concurrency}"] = result
        by_key_result = _paired(esteira_port, payloads["1 row"], by_key_port, key_body,
                                args.seconds, args.repeats)
        by_key_result["store"] = store.location.split()[0]
        store.clear()
        ceilings = _ceilings(settings, version, one, hundred)
        finished = True
    finally:
        for pid in reversed(pids):
            process.stop_group(pid)
        if finished:  # after a failure the logs stay for a look; MLServer's venv is large
            shutil.rmtree(home, ignore_errors=True)

    _report(results, ceilings, list(servers), args, load_before, version, mlserver_note, by_key_result)
    return 0


def _report(results, ceilings, names, args, load_before, version, mlserver_note, by_key) -> None:
    print(f"model: {_MODEL} version {version} (one-hot + imputer + 10-tree random forest, compiled "
          f"equivalent); load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (shared machine: servers measured in rotating rounds)")
    print(f"each figure: median of {args.repeats} rounds of {args.seconds:g} s; MLServer: {mlserver_note}")
    print(f"{'scenario':<15}{'server':<17}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"{'rows/call':>11}   rounds req/s")
    for key, r in results.items():
        name, label, conc = key.split("|")
        per_call = f"{r['rows_per_call']:.1f}" if "rows_per_call" in r else ""
        print(f"{label + ' ' + conc:<15}{name:<17}{r['rps']:>9.1f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['errors']:>8}{per_call:>11}   {r['rps_rounds']}")
    summary: dict = {}
    for peer in (n for n in names if n != "mlflow"):
        prefix = "" if peer == "esteira" else f"{peer.replace('-', '_')}_"
        for label, short in (("1 row", "single_row"), ("100 rows", "hundred_rows")):
            for conc in ("c1", "c8"):
                e, m = results[f"{peer}|{label}|{conc}"], results[f"mlflow|{label}|{conc}"]
                suffix = "" if conc == "c1" else "_c8"
                summary[f"{prefix}{short}_rps_ratio{suffix}"] = round(e["rps"] / m["rps"], 2)
                summary[f"{prefix}{short}_p99_ratio{suffix}"] = round(e["p99_ms"] / m["p99_ms"], 3)
    print("ratios to mlflow models serve (req/s ratio; p99 ratio):")
    for peer in (n for n in names if n != "mlflow"):
        prefix = "" if peer == "esteira" else f"{peer.replace('-', '_')}_"
        print(f"  {peer:<16}" + ", ".join(
            f"{short}{suffix} {summary[f'{prefix}{short}_rps_ratio{suffix}']}x; "
            f"p99 {summary[f'{prefix}{short}_p99_ratio{suffix}']}"
            for short in ("single_row", "hundred_rows") for suffix in ("", "_c8")))
    verdicts = [f"{key} {summary[key]} (goal >= {goal})  {'met' if summary[key] >= goal else 'NOT met'}"
                for key, goal in _GOALS.items()]
    p99 = [k for k in summary if k.startswith(("single_row_p99", "hundred_rows_p99"))]
    verdicts.append("p99 <= 1/3 of MLflow's in every scenario: "
                    + ("met" if all(summary[k] <= 1 / 3 for k in p99) else
                       "NOT met (" + ", ".join(f"{k} {summary[k]}" for k in p99 if summary[k] > 1 / 3) + ")"))
    print(f"by key (online store {by_key['store']}), 1 row c1: p50 {by_key['by_key_p50_ms']} ms "
          f"against {by_key['full_p50_ms']} ms with the row sent")
    verdicts.append(f"by_key_p50_ratio {by_key['by_key_p50_ratio']} (goal <= {_BY_KEY_GOAL})  "
                    + ("met" if by_key["by_key_p50_ratio"] <= _BY_KEY_GOAL else "NOT met"))
    summary.update({f"by_key_{k}" if not k.startswith("by_key") else k: v for k, v in by_key.items()})
    print("goals (esteira, compiled path):\n  " + "\n  ".join(verdicts))
    single = results["esteira|1 row|c1"]["rps"]
    print("in-process ceilings (calls/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items())
          + f"; esteira at 1 row c1 reaches {single / ceilings['onnx_1_row']:.0%} of the onnx ceiling")
    summary.update({f"ceiling_{k}": round(v, 1) for k, v in ceilings.items()})
    summary.update({f"{k.replace('|', '_').replace(' ', '_')}_rps": round(v["rps"], 1) for k, v in results.items()})
    summary.update({f"{k.replace('|', '_').replace(' ', '_')}_p99_ms": round(v["p99_ms"], 2)
                    for k, v in results.items()})
    summary["errors"] = sum(v["errors"] for v in results.values())
    summary["esteira_rows_per_model_call_1_row_c8"] = round(results["esteira|1 row|c8"]["rows_per_call"], 2)
    summary["mlserver"] = mlserver_note
    summary["load_average"] = round(os.getloadavg()[0], 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
