"""The real-series figures of docs/forecasting-real-data.md: seqcast with defaults against
persistence, seasonal naive and the best ARIMA/SARIMA/ETS, at 1 and 5 steps.

    .venv/bin/python scripts/real_series_table.py --work /tmp/real --seeds 5
    .venv/bin/python scripts/real_series_table.py --work /tmp/unseen --seeds 5 --unseen

For each development series (statsmodels' bundled data; never sunspots or co2, which are
kept aside as unseen checks: `--unseen` runs those two instead, once) it writes a CSV and
runs `seqcast train` (as `python -m training train`) as a user would: only the CSV, the
column, the time column and the test rows. Once per seed with the defaults (search and
averaging), and once per seed with the search off (`--search-budget 0`, the single-seed
training of before).
Baselines come from the manifest (the same rows, rolling origin); "best statistical" is
the lowest test RMSE over the AIC-chosen ARIMA and ETS of the manifest and a wider table
of (S)ARIMA orders fitted here on the same rows: an oracle choice, kind to the baselines.
Writes results.json and tables.md under --work and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Dev:
    """One development series: its CSV columns and test rows."""

    name: str
    column: str
    test_rows: int
    what: str


DEV = (
    Dev("nile", "volume", 20, "yearly Nile flow 1871-1970, a level shift"),
    Dev("elnino", "temp", 120, "monthly sea surface temperature 1950-2010, seasonal"),
    Dev("elec_equip", "orders", 36, "monthly electrical equipment orders 1995-2016, seasonal"),
    Dev("realgdp", "realgdp", 40, "quarterly US real GDP 1959-2009, trend"),
    Dev("cpi", "cpi", 40, "quarterly US CPI 1959-2009, trend"),
    Dev("unemp", "unemp", 40, "quarterly US unemployment rate 1959-2009"),
)
# The unseen checks (`--unseen`): run once, after the defaults were final, never tuned on.
UNSEEN = (
    Dev("sunspots", "sunactivity", 40, "yearly sunspot activity 1700-2008, an 11-year cycle"),
    Dev("co2", "co2", 120, "monthly means of weekly Mauna Loa CO2 1958-2001, gaps interpolated"),
)
HORIZONS = ("1", "5")


def write_csv(dev: Dev, path: Path) -> None:
    """The series as a CSV with a date column (a year for the Nile)."""
    from statsmodels.datasets import elec_equip, elnino, macrodata, nile

    if dev.name == "sunspots":
        from statsmodels.datasets import sunspots

        df = sunspots.load_pandas().data
        rows = [f"{int(y)},{v:g}" for y, v in zip(df["YEAR"], df["SUNACTIVITY"], strict=True)]
        head = "year,sunactivity"
    elif dev.name == "co2":
        from statsmodels.datasets import co2

        monthly = co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
        rows = [f"{d:%Y-%m},{v:.4f}" for d, v in zip(monthly.index, monthly, strict=True)]
        head = "month,co2"
    elif dev.name == "nile":
        df = nile.load_pandas().data
        rows = [f"{int(y)},{v:g}" for y, v in zip(df["year"], df["volume"], strict=True)]
        head = "year,volume"
    elif dev.name == "elnino":
        df = elnino.load_pandas().data
        rows = [
            f"{int(r['YEAR'])}-{m + 1:02d},{r.iloc[m + 1]:g}"
            for _, r in df.iterrows()
            for m in range(12)
        ]
        head = "month,temp"
    elif dev.name == "elec_equip":
        df = elec_equip.load().data
        rows = [f"{d:%Y-%m},{v:g}" for d, v in zip(df.index, df.iloc[:, 0], strict=True)]
        head = "month,orders"
    else:
        df = macrodata.load_pandas().data
        rows = [
            f"{int(y)}-{3 * int(q) - 2:02d},{v:g}"
            for y, q, v in zip(df["year"], df["quarter"], df[dev.column], strict=True)
        ]
        head = f"quarter,{dev.column}"
    path.write_text(head + "\n" + "\n".join(rows) + "\n")


def train(dev: Dev, csv: Path, out: Path, seed: int, search: bool) -> dict[str, Any]:
    """`seqcast train` on the CSV; returns the manifest and the wall time."""
    name = f"{dev.name}-{'auto' if search else 'single'}-s{seed}"
    time_column = csv.read_text().split(",", 1)[0]
    argv = [
        sys.executable, "-m", "training", "train", "--csv", str(csv),
        "--features", dev.column, "--time-column", time_column,
        "--test-rows", str(dev.test_rows), "--seed", str(seed),
        "--out", str(out), "--name", name, "--no-progress",
    ]  # fmt: skip
    if not search:
        argv += ["--search-budget", "0"]
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    version = max(int(p.name) for p in (out / name).iterdir() if p.name.isdigit())
    manifest = json.loads((out / name / str(version) / "manifest.json").read_text())
    return {"manifest": manifest, "wall": wall, "stdout": done.stdout}


# A wider table than the CLI's: every (p, d, q) with p <= 3, q <= 2, d <= 1, and with a
# season the CLI's seasonal orders around each of the three best.
WIDE_PQ = [(p, q) for p in range(4) for q in range(3) if p + q > 0]


def wide_statistical(y: np.ndarray, fitted: int, start: int, season: int) -> dict[str, Any]:
    """The lowest test RMSE per horizon over a wide (S)ARIMA table (the oracle choice)."""
    from statsmodels.tsa.arima.model import ARIMA

    from training.baselines import Span, score_paths
    from training.data import Series
    from training.statistical import SEASONAL_ORDERS, _quiet, paths_of

    series = Series("s", "", ("v",), ("v",), y[:, None], y[:, None])
    span = Span(series, start, y.shape[0])
    origins = span.origins(5)
    found: list[tuple[str, dict[int, dict[str, float]]]] = []
    fits: list[tuple[float, tuple[int, int, int]]] = []
    for d in (0, 1):
        for p, q in WIDE_PQ:
            order = (p, d, q)
            trend = "c" if d == 0 else "n"
            res = _quiet(lambda o=order, t=trend: ARIMA(y[:fitted], order=o, trend=t).fit())
            if res is None:
                continue
            paths = paths_of(res, y, origins, 5)
            if paths is not None:
                found.append((f"ARIMA{order}", score_paths(paths[..., None], span, (1, 5))))
                fits.append((float(res.aic), order))
    if 1 < season <= 52:
        for _, order in sorted(fits)[:3]:
            for so in SEASONAL_ORDERS:
                seasonal = (*so, season)
                trend = "c" if order[1] == 0 and so[1] == 0 else "n"

                def fit(o: tuple[int, int, int] = order, s: Any = seasonal, t: str = trend) -> Any:
                    return ARIMA(y[:fitted], order=o, seasonal_order=s, trend=t).fit()

                res = _quiet(fit)
                if res is None:
                    continue
                paths = paths_of(res, y, origins, 5)
                if paths is not None:
                    label = f"ARIMA{order}{seasonal}"
                    found.append((label, score_paths(paths[..., None], span, (1, 5))))
    best: dict[str, Any] = {}
    for h in (1, 5):
        label, scores = min(found, key=lambda f: f[1][h]["rmse"])
        best[str(h)] = {"label": label, "rmse": scores[h]["rmse"]}
    return best


def summarise(dev: Dev, runs: list[dict[str, Any]], singles: list[dict[str, Any]], y: np.ndarray):  # type: ignore[no-untyped-def]
    first = runs[0]["manifest"]
    fc = first["metrics"]["forecasts"]
    fitted = fc["baselines_fitted_on"]
    wide = wide_statistical(y, fitted, fc["rows"]["first"], fc["season"])
    table: dict[str, Any] = {}
    for h in HORIZONS:
        row = fc["horizons"][h]
        ours = [
            r["manifest"]["metrics"]["forecasts"]["horizons"][h]["seqcast"]["rmse"] for r in runs
        ]
        single = [
            s["manifest"]["metrics"]["forecasts"]["horizons"][h]["seqcast"]["rmse"] for s in singles
        ]
        stats = {k: row[k]["rmse"] for k in ("arima", "ets") if k in row}
        labels = {k: fc["statistical"][k] for k in stats}
        stats["wide"] = wide[h]["rmse"]
        labels["wide"] = wide[h]["label"]
        best_key = min(stats, key=lambda k: stats[k])
        table[h] = {
            "seqcast": {"first_seed": ours[0], "median": statistics.median(ours), "all": ours},
            "single_seed": {"median": statistics.median(single), "all": single},
            "persistence": row["persistence"]["rmse"],
            "seasonal_naive": row.get("seasonal_naive", {}).get("rmse"),
            "statistical": stats,
            "statistical_labels": labels,
            "best_statistical": {"rmse": stats[best_key], "label": labels[best_key]},
        }
    return {
        "series": dev.name,
        "what": dev.what,
        "rows": first["training"]["dataset"]["rows"],
        "test_rows": dev.test_rows,
        "season": fc["season"],
        "chosen": [r["manifest"]["training"]["search"]["chosen"] for r in runs],
        "candidates": [len(r["manifest"]["training"]["search"]["candidates"]) for r in runs],
        "wall_seconds": [round(r["wall"], 1) for r in runs],
        "single_wall_seconds": [round(s["wall"], 1) for s in singles],
        "table": table,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| series | h | seqcast (median of seeds) | persistence | seasonal naive "
        "| best statistical | vs persistence | vs seasonal naive | vs best statistical |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        for h in HORIZONS:
            t = r["table"][h]
            ours = t["seqcast"]["median"]
            sn = t["seasonal_naive"]
            best = t["best_statistical"]
            lines.append(
                f"| {r['series']} | {h} | {ours:.4g} | {t['persistence']:.4g} | "
                f"{'-' if sn is None else f'{sn:.4g}'} | {best['rmse']:.4g} {best['label']} | "
                f"{ours / t['persistence']:.3f} | {'-' if sn is None else f'{ours / sn:.3f}'} | "
                f"{ours / best['rmse']:.3f} |"
            )
    lines += [
        "",
        "| series | h | defaults: test RMSE over seeds (min-max, sd) | search off (single seed) "
        "(min-max, sd) | spread ratio |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for r in results:
        for h in HORIZONS:
            a = r["table"][h]["seqcast"]["all"]
            s = r["table"][h]["single_seed"]["all"]
            ratio = (max(a) - min(a)) / (max(s) - min(s)) if max(s) > min(s) else float("nan")
            lines.append(
                f"| {r['series']} | {h} | {min(a):.4g}-{max(a):.4g} (sd {_sd(a):.3g}) | "
                f"{min(s):.4g}-{max(s):.4g} (sd {_sd(s):.3g}) | {ratio:.2f} |"
            )
    lines += [
        "",
        "| series | rows | defaults wall s (per seed) | chosen |",
        "| --- | ---: | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['series']} | {r['rows']} | {', '.join(map(str, r['wall_seconds']))} | "
            f"{'; '.join(sorted(set(r['chosen'])))} |"
        )
    return "\n".join(lines)


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/real-series"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--series", nargs="+", help="default: every series of the set")
    parser.add_argument(
        "--unseen",
        action="store_true",
        help="the unseen checks (sunspots, co2) instead of the development series",
    )
    args = parser.parse_args()
    chosen = UNSEEN if args.unseen else DEV
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for dev in chosen:
        if args.series and dev.name not in args.series:
            continue
        csv = args.work / f"{dev.name}.csv"
        write_csv(dev, csv)
        seeds = [42 + 100 * i for i in range(args.seeds)]  # apart: no search shares a seed
        runs = [train(dev, csv, args.work / "models", s, True) for s in seeds]
        singles = [train(dev, csv, args.work / "models", s, False) for s in seeds]
        y = np.array([float(line.split(",")[1]) for line in csv.read_text().splitlines()[1:]])
        results.append(summarise(dev, runs, singles, y))
        print(runs[0]["stdout"], flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.work / "tables.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
