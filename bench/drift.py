"""Benchmark: Esteira's drift step (seeded bounded-memory samples of two Delta tables, then
Evidently's DataDriftPreset) against Evidently's DataDriftPreset run directly on the full
frames, in the same run, with and without shifted columns.

Reference and current hold 1M rows each with the churn demo's nine feature columns (the
reference also has the label, by which Esteira stratifies its sample). Each side runs in
its own subprocess, so its peak memory (ru_maxrss) is its own. Both sides import the same
libraries (Evidently alone takes several seconds and about 170 MiB), so the step time
(reading, sampling, drift, HTML report) is measured after the imports: ``speedup`` compares
step times, ``speedup_wall`` the whole processes, interpreter start and imports included. Both sides use the use case's declared
per-column methods and thresholds. The last line printed is one JSON object.

    .venv/bin/python bench/drift.py [--rows 1000000] [--sample-size 50000]

Sample size and test sensitivity
--------------------------------
A p-value test (K-S, chi-squared, Z) answers "are these two samples from exactly the same
distribution?". Its power grows with the number of rows: on a million rows K-S rejects at
p < 0.05 a shift of a fiftieth of a standard deviation, which no model notices, so every
window "drifts" and the alert means nothing. Its verdict also changes with the traffic of
the window, not with the data. A fixed sample size (``monitoring.sample_size``, 50,000 by
default) keeps the power of a p-value test the same in every window, so one threshold keeps
one meaning; at 50,000 rows K-S still detects shifts of about 1% of the cumulative
distribution. Distance-based methods (normed Wasserstein for numbers, Jensen-Shannon for
categories, Evidently's defaults above 1,000 reference rows) measure how far the
distributions are, not how sure we are that they differ: their value converges to the
distance between the populations and hardly moves with the sample size once it is in the
thousands, so a sample gives the full-frame verdict at a fraction of the time and memory.
That is what ``same_verdicts`` checks here. Keep samples above 1,000 rows, or Evidently
switches its defaults to the p-value tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_USECASE = Path(__file__).resolve().parents[1] / "include" / "usecases" / "churn.yaml"
_SHIFTED = ("monthly_charges", "session_minutes", "device")
_SEED = 11
_GOAL_SPEEDUP = 5.0
_GOAL_RSS_MIB = 512.0


def _usecase(sample_size: int):
    """The demo use case; ``sample_size`` 0 keeps its declared sample size."""
    from esteira.config import load_usecase

    uc = load_usecase(_USECASE)
    if not sample_size:
        return uc
    monitoring = uc.monitoring.model_copy(update={"sample_size": sample_size})
    return uc.model_copy(update={"monitoring": monitoring})


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _frame(rows: int, seed: int, shifted: tuple[str, ...]):
    """Churn-like feature rows; shifted columns move as the demo generator's drift switch."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "device": rng.choice(
                np.array(["mobile", "desktop", "tv", None], dtype=object),
                rows,
                p=[0.5, 0.3, 0.15, 0.05],
            ),
            "monthly_charges": rng.gamma(4.0, 15.0, rows),
            "session_minutes": np.where(
                rng.random(rows) < 0.03, np.nan, rng.exponential(30.0, rows)
            ),
            "minutes_7d_mean": rng.normal(30.0, 8.0, rows),
            "tickets_30d_sum": rng.poisson(1.2, rows).astype(float),
            "payment_delay_30d_max": rng.poisson(3.0, rows).astype(float),
            "events_7d_count": rng.poisson(4.0, rows).astype(float) + 1,
            "churned": (rng.random(rows) < 0.15).astype("int64"),
        }
    )
    if "monthly_charges" in shifted:
        frame["monthly_charges"] *= 1.6
    if "session_minutes" in shifted:
        frame["session_minutes"] *= 0.5
    if "device" in shifted:
        frame.loc[rng.random(rows) < 0.5, "device"] = "tv"
    return frame


def _generate(rows: int, folder: Path) -> None:
    from esteira import tables

    sides = {"reference": (1, ()), "current_no_shift": (2, ()), "current_shifted": (3, _SHIFTED)}
    for name, (seed, shifted) in sides.items():
        tables.append(str(folder / name), _frame(rows, seed, shifted))


def _verdict(scores: dict, share: float, dataset_drift: bool) -> dict:
    return {
        "drifted_columns": sorted(c for c, s in scores.items() if s.drifted),
        "drift_share": share,
        "dataset_drift": dataset_drift,
    }


def _run_esteira(reference: str, current: str, sample_size: int, html: Path) -> dict:
    from esteira.monitoring.drift import compute_drift
    from esteira.monitoring.sampling import sample_table

    uc = _usecase(sample_size)
    size, seed = uc.monitoring.sample_size, uc.training.seed
    ref = sample_table(reference, size, seed, columns=uc.feature_names, stratify_by=uc.label.column)
    cur = sample_table(current, size, seed, columns=uc.feature_names)
    result = compute_drift(ref, cur, uc)
    result.snapshot.save_html(str(html))
    return _verdict(dict(result.columns), result.drift_share, result.dataset_drift) | {
        "reference_rows": result.reference_rows,
        "reference_sampled": result.reference_sampled,
        "current_rows": result.current_rows,
        "current_sampled": result.current_sampled,
    }


def _run_evidently(reference: str, current: str, sample_size: int, html: Path) -> dict:
    from evidently import DataDefinition, Dataset, Report

    from esteira import tables
    from esteira.monitoring.drift import drift_columns, drift_preset, drift_verdicts

    uc = _usecase(sample_size)
    numeric, categorical = drift_columns(uc)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = tables.read_table(reference, columns=numeric + categorical)
    cur = tables.read_table(current, columns=numeric + categorical)
    snapshot = Report([drift_preset(uc)], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    snapshot.save_html(str(html))
    return _verdict(*drift_verdicts(snapshot)) | {
        "reference_rows": len(ref),
        "current_rows": len(cur),
    }


def _side(args: argparse.Namespace) -> None:
    """One measured side, in its own process: prints one JSON line."""
    import deltalake  # noqa: F401
    import evidently.presets  # noqa: F401

    import esteira.monitoring.drift  # noqa: F401
    import esteira.monitoring.sampling  # noqa: F401

    started = time.perf_counter()
    run = _run_esteira if args.side == "esteira" else _run_evidently
    result = run(args.reference, args.current, args.sample_size, Path(args.html))
    result |= {
        "step_s": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(_peak_mib(), 1),
    }
    print(json.dumps(result))


def _child(argv: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def _measure(side: str, folder: Path, current: str, sample_size: int) -> dict:
    result, wall = _child(
        ["--side", side, "--reference", str(folder / "reference"),
         "--current", str(folder / current), "--sample-size", str(sample_size),
         "--html", str(folder / f"{side}_{current}.html")]
    )  # fmt: skip
    return result | {"wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> int:
    """The parent only starts children: it imports no data library and holds no frame,
    because a child's ru_maxrss starts from its parent's peak (it is kept across exec)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-size", type=int, default=0, help="default: the use case's")
    parser.add_argument("--side", choices=["generate", "esteira", "evidently"])
    parser.add_argument("--reference")
    parser.add_argument("--current")
    parser.add_argument("--html")
    parser.add_argument("--folder")
    args = parser.parse_args(argv)
    if args.side == "generate":
        _generate(args.rows, Path(args.folder))
        uc = _usecase(args.sample_size)
        print(
            json.dumps(
                {"feature_columns": len(uc.feature_names), "sample_size": uc.monitoring.sample_size}
            )
        )
        return 0
    if args.side:
        _side(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="esteira-bench-drift-") as tmp:
        folder = Path(tmp)
        setup, seconds = _child(["--side", "generate", "--rows", str(args.rows), "--folder", tmp,
                                 "--sample-size", str(args.sample_size)])  # fmt: skip
        print(f"generated 3 Delta tables of {args.rows} rows in {seconds:.1f}s")
        scenarios = {}
        for scenario in ("no_shift", "shifted"):
            sides = {
                side: _measure(side, folder, f"current_{scenario}", setup["sample_size"])
                for side in ("esteira", "evidently")
            }
            same = all(
                sides["esteira"][key] == sides["evidently"][key]
                for key in ("drifted_columns", "dataset_drift")
            )
            scenarios[scenario] = {
                "esteira": sides["esteira"],
                "evidently_full": sides["evidently"],
                "same_verdicts": same,
            }
            print(f"{scenario}: {json.dumps(scenarios[scenario])}")

    def total(side: str, key: str) -> float:
        return sum(s[side][key] for s in scenarios.values())

    summary = {
        "rows": args.rows,
        **setup,
        "scenarios": scenarios,
        "esteira_step_s": round(total("esteira", "step_s") / len(scenarios), 2),
        "evidently_full_step_s": round(total("evidently_full", "step_s") / len(scenarios), 2),
        "esteira_wall_s": round(total("esteira", "wall_s") / len(scenarios), 2),
        "evidently_full_wall_s": round(total("evidently_full", "wall_s") / len(scenarios), 2),
        "esteira_peak_rss_mib": max(s["esteira"]["peak_rss_mib"] for s in scenarios.values()),
        "evidently_full_peak_rss_mib": max(
            s["evidently_full"]["peak_rss_mib"] for s in scenarios.values()
        ),
        "speedup": round(total("evidently_full", "step_s") / total("esteira", "step_s"), 2),
        "speedup_wall": round(total("evidently_full", "wall_s") / total("esteira", "wall_s"), 2),
        "same_verdicts": all(s["same_verdicts"] for s in scenarios.values()),
    }
    summary["goals_met"] = (
        summary["speedup"] >= _GOAL_SPEEDUP
        and summary["esteira_peak_rss_mib"] < _GOAL_RSS_MIB
        and summary["same_verdicts"]
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
