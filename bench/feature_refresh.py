"""Benchmark: ~1M raw events → validated features → Delta merge, against a plain pandas
read-all → compute → write-Parquet baseline of the same features, measured in the same run.

Each side runs in its own subprocess so its peak memory (ru_maxrss) is its own. The
Esteira side also validates every row and quarantines bad ones; the baseline only
coerces types. The last line printed is one JSON object with the figures.

    .venv/bin/python bench/feature_refresh.py [--events 1000000] [--days 90]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

_USECASE = Path(__file__).resolve().parents[1] / "include" / "usecases" / "churn.yaml"


def _usecase(events: int, days: int):
    from esteira.config import load_usecase

    uc = load_usecase(_USECASE)
    # about one event per customer and day (two half-day slots, mean activity 0.5)
    spec = uc.source.generator.model_copy(update={"entities": max(events // days, 1), "days": days})
    return uc.model_copy(update={"source": uc.source.model_copy(update={"generator": spec})})


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_esteira(uc) -> dict:
    from esteira.config import get_settings
    from esteira.features.refresh import refresh_features

    spec = uc.source.generator
    started = time.perf_counter()
    result = refresh_features(
        uc, get_settings(), spec.start, spec.start + timedelta(days=spec.days), run_id="bench"
    )
    seconds = time.perf_counter() - started
    return {"rows": result.raw_rows, "feature_rows": result.rows_written,
            "quarantined": result.rows_quarantined, "seconds": seconds}


def _run_pandas(uc, out: Path) -> dict:
    import pandas as pd

    from esteira.config import get_settings
    from esteira.features.definitions import window_days

    started = time.perf_counter()
    folder = get_settings().landing_dir / uc.source.landing
    frame = pd.concat(
        [pd.read_csv(p) for p in sorted(folder.glob(uc.source.events_pattern.format(date="*")))],
        ignore_index=True,
    )
    rows = len(frame)
    for name, rule in uc.schema_.columns.items():
        if rule.type in ("int", "float"):
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    frame[uc.timestamp] = pd.to_datetime(frame[uc.timestamp], errors="coerce")
    frame = frame.dropna(subset=[uc.entity, uc.timestamp]).sort_values([uc.entity, uc.timestamp])
    frame["_key"] = 1.0  # the group key itself cannot be aggregated by the rolling window
    groups = frame.groupby(uc.entity, sort=False)
    features = frame[[uc.entity, uc.timestamp]].copy()
    for feature in uc.features.definitions:
        if feature.function == "identity":
            features[feature.name] = frame[feature.source]
            continue
        source = "_key" if feature.source == uc.entity else feature.source
        window = groups.rolling(f"{window_days(feature.window)}D", on=uc.timestamp)[source]
        aggregate = feature.function.removeprefix("rolling_")
        features[feature.name] = getattr(window, aggregate)().to_numpy()
    features.to_parquet(out / "features.parquet", index=False)
    return {"rows": rows, "feature_rows": len(features), "seconds": time.perf_counter() - started}


def _child(side: str, events: int, days: int, workdir: Path) -> None:
    uc = _usecase(events, days)
    figures = _run_esteira(uc) if side == "esteira" else _run_pandas(uc, workdir)
    figures["peak_rss_mb"] = _peak_mb()
    print(json.dumps(figures))


def _measure(side: str, events: int, days: int, workdir: Path) -> dict:
    env = dict(os.environ, ESTEIRA_HOME=str(workdir))
    command = [sys.executable, __file__, "--side", side, "--events", str(events),
               "--days", str(days), "--workdir", str(workdir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the {side} side failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["rows_per_s"] = figures["rows"] / figures["seconds"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--side", choices=("esteira", "pandas"))
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    if args.side:
        _child(args.side, args.events, args.days, args.workdir)
        return 0

    with tempfile.TemporaryDirectory(prefix="esteira-bench-") as tmp:
        workdir = Path(tmp)
        os.environ["ESTEIRA_HOME"] = str(workdir)
        from esteira.config import get_settings
        from esteira.features.generator import generate_landing

        started = time.perf_counter()
        uc = _usecase(args.events, args.days)
        generate_landing(uc, get_settings().landing_dir / uc.source.landing)
        print(f"generated landing files in {time.perf_counter() - started:.1f} s")
        esteira = _measure("esteira", args.events, args.days, workdir)
        pandas = _measure("pandas", args.events, args.days, workdir)

    for name, figures in (("esteira refresh (validate, features, Delta merge)", esteira),
                          ("pandas baseline (read all, features, Parquet)", pandas)):
        print(f"{name}: {figures['rows']:,} raw rows in {figures['seconds']:.1f} s = "
              f"{figures['rows_per_s']:,.0f} rows/s, peak RSS {figures['peak_rss_mb']:,.0f} MB")
    speed = esteira["rows_per_s"] / pandas["rows_per_s"]
    memory = esteira["peak_rss_mb"] / pandas["peak_rss_mb"]
    print(f"esteira / pandas: {speed:.2f}x the throughput, {memory:.2f}x the peak memory")
    print(json.dumps({
        "raw_rows": esteira["rows"],
        "esteira_rows_per_s": round(esteira["rows_per_s"]),
        "esteira_seconds": round(esteira["seconds"], 2),
        "esteira_peak_rss_mb": round(esteira["peak_rss_mb"]),
        "esteira_quarantined": esteira["quarantined"],
        "pandas_rows_per_s": round(pandas["rows_per_s"]),
        "pandas_seconds": round(pandas["seconds"], 2),
        "pandas_peak_rss_mb": round(pandas["peak_rss_mb"]),
        "throughput_ratio": round(speed, 3),
        "memory_ratio": round(memory, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
