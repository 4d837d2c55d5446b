"""The `esteira` command: the stack, triggers, the feature catalog, the registry."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time


def _up(args) -> int:
    from esteira.stack import embedded

    embedded.up()
    return 0


def _down(args) -> int:
    from esteira.stack import embedded

    embedded.down()
    return 0


def _status(args) -> int:
    from esteira.stack import embedded

    rows = embedded.status()
    for row in rows:
        state = "healthy" if row.healthy else ("running, not healthy" if row.running else "stopped")
        print(f"{row.name:<28} {state:<22} pid={row.pid or '-':<8} {row.url}")
    return 0 if all(r.healthy for r in rows) else 1


def _print_tasks(state: str, tasks: list[dict], started: float) -> None:
    from esteira.stack.airflow_api import describe_tasks

    elapsed = time.monotonic() - started
    print(f"  [{elapsed:6.1f}s] run {state}: {describe_tasks(tasks)}", flush=True)


def _trigger(args) -> int:
    from esteira.config import get_settings
    from esteira.stack.airflow_api import AirflowClient

    conf = json.loads(args.conf) if args.conf else {}
    client = AirflowClient.for_settings(get_settings())
    client.wait_for_dag(args.dag_id)
    client.unpause(args.dag_id)
    run_id = client.trigger(args.dag_id, conf)
    print(f"triggered {args.dag_id} run {run_id}", flush=True)
    if not args.wait:
        return 0
    started = time.monotonic()
    outcome = client.wait(
        args.dag_id,
        run_id,
        timeout=args.timeout,
        on_change=lambda state, tasks: _print_tasks(state, tasks, started),
    )
    print(f"{args.dag_id} run {run_id}: {outcome.state}")
    return 0 if outcome.ok else 1


def _generate(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.features.generator import generate_landing

    settings = get_settings()
    uc = get_usecase(args.usecase, settings)
    landing = settings.landing_dir / uc.source.landing
    files = generate_landing(uc, landing, drift=not args.no_drift)
    print(f"wrote {len(files)} files to {landing}")
    return 0


def _features_list(args) -> int:
    from esteira.config import get_settings
    from esteira.features.catalog import list_tables

    tables = list_tables(get_settings())
    if not tables:
        print("no feature tables yet: run a feature refresh first")
    for table in tables:
        print(json.dumps(table, default=str))
    return 0


def _features_describe(args) -> int:
    from esteira.config import get_settings
    from esteira.features.catalog import describe_table

    print(json.dumps(describe_table(get_settings(), args.table), indent=2, default=str))
    return 0


def _features_get(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.features.online import entity_key, is_stale, open_store

    settings = get_settings()
    uc = get_usecase(args.usecase, settings)
    if uc.online is None:
        print(f"esteira: use case '{uc.name}' declares no online store (add an 'online:' "
              "section to its YAML)", file=sys.stderr)
        return 2
    try:
        key = entity_key(uc, args.key)
    except ValueError as error:
        print(f"esteira: {error}", file=sys.stderr)
        return 2
    store = open_store(settings, uc)
    entry = store.get_many([key])[0]
    if entry is None:
        print(f"no stored features for {uc.entity} {key} in {store.location}", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    print(json.dumps({uc.entity: key, "feature_ts": entry.feature_ts.isoformat(),
                      "age_seconds": round((now - entry.feature_ts).total_seconds(), 3),
                      "stale": is_stale(uc, entry.feature_ts, now), "version": entry.version,
                      "features": entry.features, "store": store.location}, indent=2))
    return 0


def _predict(args) -> int:
    """POST the keys to the model server (by entity key: the rest from the online store)."""
    import httpx

    from esteira.config import get_settings, get_usecase

    settings = get_settings()
    uc = get_usecase(args.usecase, settings)
    if settings.model_server_url == "off":
        print("esteira: ESTEIRA_MODEL_SERVER_URL=off: there is no model server to ask", file=sys.stderr)
        return 2
    body = {"dataframe_records": [{uc.entity: key} for key in args.keys]}
    if args.probabilities:
        body["params"] = {"probabilities": True}
    url = f"{settings.model_server_url}/models/{uc.name}/invocations"
    try:
        answer = httpx.post(url, json=body, timeout=30)
    except httpx.HTTPError as error:
        print(f"esteira: the model server at {settings.model_server_url} did not answer: {error} "
              "(is the stack up? esteira status)", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"esteira: {url} answered {answer.status_code}: {answer.text}", file=sys.stderr)
        return 1
    print(json.dumps(answer.json(), indent=2))
    return 0


def _reproduce(args) -> int:
    from esteira.training.reproduce import reproduce

    report = reproduce(args.run_id)
    print(report.describe())
    return 0 if report.matches else 1


def registry_history(usecase: str) -> list[dict]:
    """Every registry decision of the use case's model, oldest first (``ui.overview.history_view``)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    from esteira import tracking
    from esteira.config import get_settings, get_usecase
    from esteira.ui.overview import history_view

    settings = get_settings()
    uc = get_usecase(usecase, settings)
    client = tracking.client(settings)
    try:
        tags = client.get_registered_model(uc.model_name).tags
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return []
        raise
    return history_view(client, uc, tags, settings.mlflow_ui_url)


def history_lines(events: list[dict]) -> list[str]:
    """One line per decision (when, what, which version, who, why); each promotion followed by
    the gate's comparison against the champion it replaced, on the same test set."""
    lines = []
    for event in events:
        version = f"v{event['version']}" if event.get("version") else "-"
        if event.get("previous"):
            version += f" (was v{event['previous']})"
        lines.append(f"{event['at']}  {event['action']:<20} {version:<14} by {event['actor']}: {event['reason']}")
        if event["action"] == "promote" and event.get("comparison"):
            from esteira.evaluation.comparison import text_lines

            lines += text_lines(event["comparison"], event.get("compared_champion"), indent=" " * 6)
    return lines


def _registry_history(args) -> int:
    events = registry_history(args.usecase)
    if not events:
        print(f"no registry decisions yet for {args.usecase}", file=sys.stderr)
    for line in [json.dumps(e) for e in events] if args.json else history_lines(events):
        print(line)
    return 0


def _init(args) -> int:
    from esteira.config import get_settings
    from esteira.onboarding import init_usecase

    path = init_usecase(get_settings(), args.name, args.source, args.entity, args.timestamp,
                        args.target, args.grain, force=args.force)
    print(f"wrote {path}\nnext: review the lines marked REVIEW, then: esteira check {args.name}")
    return 0


def _check(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.onboarding import check_usecase

    settings = get_settings()
    report = check_usecase(get_usecase(args.usecase, settings), settings)
    print("\n".join(report.lines))
    if report.problems:
        print(f"{len(report.problems)} problem(s): fix them before esteira enable {args.usecase}")
        return 1
    print(f"ok: a first refresh would succeed; next: esteira enable {args.usecase}")
    return 0


def _enable(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.onboarding import enable
    from esteira.stack.airflow_api import AirflowClient

    settings = get_settings()
    enable(get_usecase(args.usecase, settings), AirflowClient.for_settings(settings))
    return 0


def _approve(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.onboarding import approve
    from esteira.stack.airflow_api import AirflowClient

    settings = get_settings()
    answer = approve(get_usecase(args.usecase, settings), AirflowClient.for_settings(settings),
                     args.reason, reject=args.reject, wait=args.wait)
    done = "rejected" if args.reject else "approved"
    print(f"{done} {answer['dag_id']} run {answer['run_id']}: {answer['subject']}")
    if answer["state"]:
        print(f"{answer['dag_id']} run {answer['run_id']}: {answer['state']}")
        return 0 if answer["state"] == "success" else 1
    return 0


def _runs(args) -> int:
    from esteira.config import get_settings, get_usecase
    from esteira.onboarding import runs
    from esteira.stack.airflow_api import AirflowClient

    settings = get_settings()
    rows = runs(get_usecase(args.usecase, settings), AirflowClient.for_settings(settings), settings, args.limit)
    if not rows:
        print(f"no runs yet for {args.usecase} (esteira enable {args.usecase} starts them)")
    for row in rows:
        print(f"{row['dag_id']:<40} {row['state']:<10} {row['start'] or '-':<33} {row['link']}")
    return 0


def _demo(args) -> int:
    from esteira.demo import DemoError, run_demo

    try:
        return run_demo(short=args.short)
    except DemoError as exc:
        print(f"esteira demo: {exc}", file=sys.stderr)
        return 1


def _databricks_deploy(args) -> int:
    import os
    import shlex
    import tempfile
    from pathlib import Path

    from esteira.config import get_settings, usecase_paths
    from esteira.databricks import deploy, workspace

    with tempfile.TemporaryDirectory(prefix="esteira-deploy-") as tmp:
        wheel = Path(args.wheel) if args.wheel else deploy.build_wheel(Path(tmp))
        result = deploy.deploy(workspace.client(args.conn_id), args.volume, wheel, usecase_paths(get_settings()))
    for path in result.uploaded:
        print(f"uploaded {path}", file=sys.stderr)
    print(f"{len(result.uploaded)} uploaded, {len(result.skipped)} unchanged", file=sys.stderr)
    cluster_json = os.environ.get("ESTEIRA_DATABRICKS_CLUSTER_JSON")
    print("# on the Airflow workers (scheduler, triggerer and dag-processor too)")
    for key, value in result.settings(cluster_json).items():
        print(f"export {key}={shlex.quote(value)}")
    if not cluster_json:  # an existing cluster, or a new_cluster spec still to write
        print(f"# in the cluster's environment (spark_env_vars), not the workers': {json.dumps(result.cluster_env())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esteira", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the embedded stack (safe to repeat)").set_defaults(func=_up)
    sub.add_parser("down", help="stop every process of the stack").set_defaults(func=_down)
    sub.add_parser("status", help="show each service and its health").set_defaults(func=_status)

    trigger = sub.add_parser("trigger", help="trigger a DAG run through Airflow's REST API")
    trigger.add_argument("dag_id")
    trigger.add_argument("--conf", help="the run's conf as JSON (the Params)")
    trigger.add_argument("--wait", action="store_true", help="wait and exit non-zero on failure")
    trigger.add_argument("--timeout", type=float, default=3600)
    trigger.set_defaults(func=_trigger)

    generate = sub.add_parser("generate", help="write a use case's synthetic landing files")
    generate.add_argument("usecase")
    generate.add_argument("--no-drift", action="store_true", help="turn the drift switch off")
    generate.set_defaults(func=_generate)

    features = sub.add_parser("features", help="the feature catalog")
    fsub = features.add_subparsers(dest="features_command", required=True)
    fsub.add_parser("list").set_defaults(func=_features_list)
    describe = fsub.add_parser("describe")
    describe.add_argument("table")
    describe.set_defaults(func=_features_describe)
    get = fsub.add_parser("get", help="what the online store holds for an entity")
    get.add_argument("usecase")
    get.add_argument("key", help="the entity key")
    get.set_defaults(func=_features_get)

    predict = sub.add_parser("predict", help="score entities by key on the model server (features "
                             "from the online store)")
    predict.add_argument("usecase")
    predict.add_argument("keys", nargs="+", help="entity keys")
    predict.add_argument("--probabilities", action="store_true", help="a classifier's probabilities too")
    predict.set_defaults(func=_predict)

    reproduce = sub.add_parser("reproduce", help="retrain an MLflow run and compare metrics")
    reproduce.add_argument("run_id")
    reproduce.set_defaults(func=_reproduce)

    registry = sub.add_parser("registry", help="the model registry")
    rsub = registry.add_subparsers(dest="registry_command", required=True)
    hist = rsub.add_parser(
        "history", help="every registry decision of a model (alias moves, approvals, rejections, "
        "timeouts, gate decisions, failed deploys), each promotion with the gate's comparison",
    )
    hist.add_argument("usecase")
    hist.add_argument("--json", action="store_true", help="one JSON object per decision")
    hist.set_defaults(func=_registry_history)

    init = sub.add_parser("init", help="write a new use case's YAML from a data file or Delta table")
    init.add_argument("name")
    init.add_argument("--from", dest="source", required=True, help="a CSV/Parquet file, folder, glob or Delta table")
    init.add_argument("--entity", required=True, help="the column naming who a row is about")
    init.add_argument("--timestamp", required=True, help="the column saying when (date, datetime, year, YYYY-MM)")
    init.add_argument("--target", required=True, help="the column to predict (0/1, or a number)")
    init.add_argument("--grain", choices=["event", "day", "week", "month", "year"],
                      help="one row per event, or per entity and period (default: inferred)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=_init)

    check = sub.add_parser("check", help="validate a use case and show what a first refresh would do")
    check.add_argument("usecase")
    check.set_defaults(func=_check)

    enable = sub.add_parser("enable", help="unpause every DAG of a use case together")
    enable.add_argument("usecase")
    enable.set_defaults(func=_enable)

    approve = sub.add_parser("approve", help="answer a use case's pending promotion approval")
    approve.add_argument("usecase")
    approve.add_argument("--reject", action="store_true")
    approve.add_argument("--reason", required=True, help="recorded with the decision")
    approve.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                         help="wait this long for training to ask, then for the promotion to end "
                         "(default: answer only what waits now)")
    approve.set_defaults(func=_approve)

    runs = sub.add_parser("runs", help="the latest runs of a use case's DAGs, with links")
    runs.add_argument("usecase")
    runs.add_argument("--limit", type=int, default=3, help="runs per DAG")
    runs.set_defaults(func=_runs)

    databricks = sub.add_parser("databricks", help="the Databricks workspace")
    dsub = databricks.add_subparsers(dest="databricks_command", required=True)
    ship = dsub.add_parser(
        "deploy", help="build the wheel and upload it, esteira/jobs and the use-case files to a volume "
        "(content-addressed: unchanged files are not uploaded again); print the settings the runs need",
    )
    ship.add_argument("--volume", required=True, help="/Volumes/<catalog>/<schema>/<volume>[/<folder>]")
    ship.add_argument("--wheel", help="upload this wheel instead of building one from the checkout")
    ship.add_argument("--conn-id", help="the Airflow connection (default: ESTEIRA_DATABRICKS_CONN_ID "
                      "or databricks_default)")
    ship.set_defaults(func=_databricks_deploy)

    demo = sub.add_parser("demo", help="run the whole belt through the scheduler")
    demo.add_argument("--short", action="store_true", help="fewer days, for CI")
    demo.set_defaults(func=_demo)
    return parser


# The errors shown as one line instead of a traceback: (module, class).
_REPORTED = (
    ("esteira.config", "ConfigError"),
    ("esteira.stack.process", "ServiceError"),
    ("esteira.onboarding", "OnboardingError"),
    ("esteira.stack.airflow_api", "AirflowApiError"),
    ("esteira.features.online", "OnlineStoreError"),
)


def _reported_errors() -> tuple[type[Exception], ...]:
    """The classes of _REPORTED whose module the command loaded: a command that never
    imported the REST client (about 2 s) cannot raise its error, so it need not import it."""
    return tuple(getattr(sys.modules[module], name) for module, name in _REPORTED if module in sys.modules)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Commands that read MLflow go through esteira.tracking: the stack's server, never ./mlruns.
    try:
        return args.func(args)
    except Exception as exc:
        if not isinstance(exc, _reported_errors()):
            raise
        print(f"esteira: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
