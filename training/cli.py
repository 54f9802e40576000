"""`seqcast train`, `seqcast compare` and `seqcast evaluate` (also `python -m training ...`).

    seqcast train --cell lstm --name sine-lstm --out models
    seqcast compare --cells rnn lstm gru --name-prefix sine --out models \
        --report-dir docs/reports/sine
    seqcast evaluate models/sine-lstm/1 --noise-seed 7

Everything the user gave is checked (options, data, length, names) before any file is
written; a problem prints one line, `seqcast <command>: error: <reason>`, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import (
    CELLS,
    DEFAULT_ENSEMBLE,
    DEFAULT_SEARCH_BUDGET,
    MAX_AUTO_WINDOW,
    SCALER_KINDS,
    TRANSFORMS,
    SearchConfig,
    TrainConfig,
)
from training.manifest import CALENDAR_NAMES

# `compare`'s exit status when some cells failed the export check: this plus one bit per
# failed cell. 0 is success, 2 bad input; 1 is `train`'s failed check.
COMPARE_FAILED = 8
CELL_BITS = {"rnn": 1, "lstm": 2, "gru": 4}

if TYPE_CHECKING:  # the data and torch modules load only when a command runs
    from training.data import Series
    from training.pipeline import Trained

log = logging.getLogger(__name__)

_Subparsers = Any  # argparse's _SubParsersAction is private

_HELP = {
    "hidden_size": "hidden units per layer",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout between stacked layers (needs --num-layers > 1)",
    "window": "training subsequence length; also the windowed evaluation's look-back and the "
    f"manifest's window hint (default: {MAX_AUTO_WINDOW}, or a third of the training rows "
    "when fewer)",
    "burn_in": "steps at the start of each training subsequence left out of the loss "
    "(default: window // 10)",
    "batch_size": "subsequences per optimisation step",
    "lr": "Adam learning rate at the start of the cosine schedule",
    "lr_min": "learning rate at the end of the cosine schedule and after it (at most --lr)",
    "lr_epochs": "length of the cosine schedule in epochs, whatever --epochs is",
    "epochs": "maximum epochs (early stopping may end sooner)",
    "patience": "epochs without a better validation loss before stopping (at least 1)",
    "grad_clip": "maximum gradient norm",
    "ema": "decay of the moving average of the weights that is validated and kept (0: off)",
    "scaler": "per-column scaling fitted on the training part: " + " | ".join(SCALER_KINDS),
    "val_fraction": "validation share of the rows before the test part",
    "test_fraction": "test share of the series, taken from its end",
    "test_rows": "test part: exactly this many rows at the end (instead of --test-fraction)",
    "val_rows": "validation part: exactly this many rows before the test part (instead of "
    "--val-fraction)",
    "seed": "seed for weights and batch order",
    "threads": "CPU threads torch may use (fixed so results do not depend on the machine)",
    "device": "auto (CUDA when torch sees it) | cpu | cuda",
    # Target transforms and seasons (training/transforms.py).
    "transform": "target transform, applied by the service too: auto (chosen from the "
    "training rows) | " + " | ".join(TRANSFORMS[1:]),
    "season": "season length in rows (e.g. 12 for monthly data): seasonal differencing and "
    "the seasonal-naive baseline",
    # Out-of-range warnings (training/ranges.py).
    "range_k": "a value lies far outside the training range beyond its min - k std or max + "
    "k std: test values so are warned of, and the service counts inputs so",
    # Multi-step training (training/fit.py).
    "rollout": "train on 1..N-step forecasts too: each subsequence goes on N - 1 steps on "
    "its own predictions, scored in levels (1: one-step loss only; differenced targets only, and "
    "every input a target)",
}


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def _add_data_options(p: argparse.ArgumentParser, for_training: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--csv", type=Path, help="CSV file with a header row (default: the synthetic noisy sine)"
    )
    if for_training:
        g.add_argument(
            "--features", nargs="+", help="input columns of the CSV (required with --csv)"
        )
        g.add_argument(
            "--targets", nargs="+", help="predicted columns of the CSV (default: --features)"
        )
    g.add_argument(
        "--fill",
        choices=("interpolate", "ffill", "zero"),
        help="fill empty/NaN cells and rows missing from a dated --time-column's grid "
        "(default: refuse them)",
    )
    g.add_argument(
        "--time-column",
        help="CSV column of increasing times: numbers (e.g. years) or ISO 8601 dates/times "
        "(also YYYY-MM); needed by --test-start, not an input",
    )
    g.add_argument(
        "--test-start",
        metavar="TIME",
        help="the test part starts at the first row whose --time-column is at or after TIME "
        "(instead of --test-fraction / --test-rows)",
    )
    # Dated rows (training/calendar.py): the grid, its zone, calendar inputs.
    if for_training:
        g.add_argument(
            "--freq",
            help="frequency of a dated --time-column: N then s, min, h, D, MS (month start) "
            "or ME (month end), e.g. 1h, 1D, 1MS, 3MS (default: inferred from the stamps)",
        )
        g.add_argument(
            "--tz",
            help="time zone of a dated --time-column, e.g. Europe/Berlin: naive stamps are "
            "local time there, others are converted (default: the stamps' own UTC offset)",
        )
        g.add_argument(
            "--calendar",
            nargs="+",
            choices=(*CALENDAR_NAMES, "none"),
            default=[],
            help="calendar inputs from the stamps, each a sin/cos pair: computed by the "
            "service too (also for forecast steps), so clients send only --features "
            "(default: train's search tries the cycle of the rows' frequency, month for "
            "monthly, quarter for quarterly, dayofweek for daily, hour for hourly, with "
            "and without, and validation decides; none: no calendar inputs)",
        )
    if not for_training:
        g.add_argument(
            "--test-rows",
            type=int,
            help="test part: the last N rows (default: the split recorded in the manifest)",
        )
    if for_training:
        g.add_argument(
            "--noise-seed",
            type=int,
            default=42,
            help="noise seed of the synthetic series sin(t) + N(0, 0.5^2) (default: 42)",
        )
    else:
        g.add_argument(
            "--noise-seed",
            type=int,
            nargs="+",
            help="synthetic models: noise seed(s) of the series to score on (default: 7)",
        )


# Settings that are on by default, each with its --no-<name> option's help.
_OFF_SWITCHES = {
    "early_stopping": "train all --epochs and keep the last epoch's weights (default: stop "
    "after --patience epochs without a better validation loss, keep the best)",
    "refit": "keep the model fitted on the training rows (default: once validation "
    "has chosen the epochs, train again on training + validation for as many)",
}


def _add_config_options(p: argparse.ArgumentParser, with_cell: bool) -> None:
    g = p.add_argument_group("model and fitting")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "cell":
            if with_cell:
                g.add_argument(
                    "--cell", choices=CELLS, default=defaults.cell, help="recurrent cell"
                )
            continue
        if f.name in _OFF_SWITCHES:  # on by default: the option turns it off
            g.add_argument(
                "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_false",
                help=_OFF_SWITCHES[f.name],
            )
            continue
        kwargs: dict[str, Any] = {"default": default, "help": f"{_HELP[f.name]}"}
        if f.name in ("window", "burn_in", "test_rows", "val_rows", "season"):
            kwargs.update(type=int, default=None)  # None: chosen from the data or the shares
        elif f.name == "transform":
            kwargs["choices"] = TRANSFORMS
        elif f.name == "scaler":
            kwargs["choices"] = SCALER_KINDS
        elif f.name == "device":
            kwargs["choices"] = ("auto", "cpu", "cuda")
        else:
            kwargs["type"] = type(default)
        if kwargs["default"] is not None:
            kwargs["help"] += f" (default: {default})"
        g.add_argument(option, **kwargs)


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--out", type=Path, default=Path("models"), help="model repository (default: models)"
    )
    g.add_argument(
        "--no-progress", action="store_true", help="no progress bar (off anyway without a TTY)"
    )
    g.add_argument("--log-level", default="warning", help="logging level (default: warning)")


def register_train(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one forecaster and write it to the model repository",
        description="Train an RNN, LSTM or GRU forecaster, verify its ONNX export against PyTorch "
        "and write <out>/<name>/<next version>/ with model.onnx, manifest.json and a report. "
        "Exit status: 0 written, 2 bad input (nothing written), 1 the export check failed.",
    )
    _add_data_options(p)
    _add_config_options(p, with_cell=True)
    _add_search_options(p)
    _add_output_options(p)
    p.add_argument("--name", help="model name (default: <data>-<cell>, e.g. sine-lstm)")
    p.set_defaults(func=_run_train)


def register_compare(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several cells on the same data and write a comparison report",
        description="Train one forecaster per cell with the same data and settings, write each "
        "to the model repository as <prefix>-<cell>, and a comparison report (JSON metrics, PNG "
        "plots, Markdown summary). A cell whose export check fails is not written; the others "
        "go on. Exit status: 0 all written, 2 bad input (nothing written), otherwise "
        f"{COMPARE_FAILED} plus "
        + " + ".join(f"{bit} if {cell}" for cell, bit in CELL_BITS.items())
        + " failed.",
    )
    _add_data_options(p)
    _add_config_options(p, with_cell=False)
    _add_output_options(p)
    p.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS), help="cells to train")
    p.add_argument(
        "--name-prefix", help="model names are <prefix>-<cell> (default: the data's name)"
    )
    p.add_argument(
        "--report-dir", type=Path, help="comparison report directory (default: reports/<prefix>)"
    )
    p.set_defaults(func=_run_compare)


def register_evaluate(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="re-score a saved model (its ONNX file) on a CSV or on fresh synthetic noise",
        description="Run a model version from the repository with ONNX Runtime, as the service "
        "does, on the test part of a CSV with its columns (--csv), or on the synthetic series "
        "drawn with other noise seeds, and print its metrics in original units.",
    )
    p.add_argument("model", type=Path, help="model version directory, e.g. models/sine-lstm/1")
    _add_data_options(p, for_training=False)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run_evaluate)


def _config(args: argparse.Namespace, cell: str, **resolved: Any) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "cell"}
    values.update(resolved)
    if values["window"] is None:  # not yet resolved: check the other options meanwhile
        values["window"] = TrainConfig.window
    if values["burn_in"] is None:
        from training.data import auto_burn_in

        values["burn_in"] = auto_burn_in(values["window"])
    try:
        return TrainConfig(cell=cell, **values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _check_data_options(args: argparse.Namespace) -> None:
    csv_only = ("features", "targets", "fill", "time_column", "test_start", "freq", "tz")
    if args.csv is None and any(getattr(args, n, None) for n in (*csv_only, "calendar")):
        raise UsageError(
            "--features, --targets, --fill, --time-column, --test-start, --freq, --tz and "
            "--calendar apply to --csv data only"
        )
    dated = ("freq", "tz", "calendar")
    if args.time_column is None and any(getattr(args, n, None) for n in dated):
        raise UsageError("--freq, --tz and --calendar need --time-column (dated rows)")
    if args.test_start is not None:
        if args.time_column is None:
            raise UsageError("--test-start needs --time-column (the CSV's time column)")
        if args.test_rows is not None:
            raise UsageError("give --test-start or --test-rows, not both")


def _series(args: argparse.Namespace) -> Series:
    from training.data import synthetic_sine

    _check_data_options(args)
    if args.csv is None:
        return synthetic_sine(args.noise_seed)
    if not args.features:
        raise UsageError("--csv needs --features (the input columns)")
    if "none" in args.calendar and len(args.calendar) > 1:
        raise UsageError("--calendar none takes no other names")
    return _load_csv(args, [n for n in args.calendar if n != "none"])


def _load_csv(args: argparse.Namespace, calendar: list[str]) -> Series:
    """The CSV the options name, with these calendar inputs."""
    from training.data import load_csv

    return load_csv(
        args.csv,
        args.features,
        args.targets or args.features,
        args.fill,
        args.time_column,
        args.freq,
        args.tz,
        calendar,
    )


def _calendar_variant(args: argparse.Namespace, series: Series) -> Series | None:
    """The series with the calendar inputs of its rows' cycle, for the search to try beside
    it: only when --calendar is not given and the time column's frequency has a cycle."""
    from training.calendar import default_calendar
    from training.data import DataError

    if args.calendar or series.time is None:
        return None
    name = default_calendar(series.time.freq)
    if name is None:
        return None
    try:
        return _load_csv(args, [name])
    except DataError as exc:  # e.g. a feature named like a calendar column
        log.info("calendar inputs %s not tried: %s", name, exc)
        return None


def _default_prefix(args: argparse.Namespace) -> str:
    if args.csv is None:
        return "sine"
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in args.csv.stem.lower())
    return stem.lstrip("._-") or "model"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _fail(command: str, reason: str, status: int = 2) -> int:
    """One line on stderr; 2 for bad input (nothing written), else a failed run."""
    print(f"seqcast {command}: error: {reason}", file=sys.stderr)
    return status


def _resolve(args: argparse.Namespace, series: Series, cell: str) -> TrainConfig:
    """The run's config: test rows from --test-start, window and burn-in from the data."""
    from training.data import auto_burn_in, auto_window, count_test_rows, split_series
    from training.pipeline import model_data, resolve_transform, shifted

    test_rows = args.test_rows
    if args.test_start is not None:
        test_rows = count_test_rows(series, args.test_start)
    draft = _config(args, cell, test_rows=test_rows)
    split = split_series(
        series.rows, draft.val_fraction, draft.test_fraction, test_rows, draft.val_rows
    )
    if split.train_end >= 2:  # differences leave `lag` fewer rows to fit a window in
        split = shifted(split, resolve_transform(series, draft, split).lag)
    window = args.window if args.window is not None else auto_window(split)
    burn_in = args.burn_in if args.burn_in is not None else auto_burn_in(window)
    if args.window is None and burn_in >= window:
        raise UsageError(
            f"--burn-in {burn_in} must be below the window, which is {window} for "
            f"{series.name} (or set --window)"
        )
    cfg = _config(args, cell, test_rows=test_rows, window=window, burn_in=burn_in)
    model_data(series, cfg)  # DataError naming the largest window that fits
    return cfg


def _plan(
    args: argparse.Namespace, cells: list[str], names: list[str]
) -> tuple[Series, list[TrainConfig]]:
    """Validate everything the run needs; raises UsageError or DataError before any write."""
    from training.manifest import check_name
    from training.pipeline import prepare

    for cell in cells:
        _config(args, cell)  # bad options are reported before the data is read
    for name in names:
        try:
            check_name(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    series = _series(args)
    configs = [_resolve(args, series, cell) for cell in cells]
    for cfg in configs:
        prepare(series, cfg)  # the split and the scalers (a constant column is refused)
    if any(cfg.device == "cuda" for cfg in configs):
        from training.fit import resolve_device

        try:
            resolve_device("cuda")
        except RuntimeError as exc:
            raise UsageError(str(exc)) from exc
    return series, configs


def _train_and_write(
    series: Series, cfg: TrainConfig, name: str, out: Path, progress: bool, command: str
) -> tuple[Trained, Path]:
    from training.pipeline import train

    t0 = time.perf_counter()
    trained = train(series, cfg, progress=progress)
    return trained, _export_and_write(trained, name, out, command, t0)


def _export_and_write(trained: Trained, name: str, out: Path, command: str, t0: float) -> Path:
    """Export, check parity (ParityError when it fails) and write the next version."""
    from training.onnx_export import check_parity, export_onnx, parity_record
    from training.pipeline import training_inputs
    from training.report import Entry, write_report
    from training.repository import build_manifest, write_version

    cfg = trained.config
    onnx_bytes = export_onnx(trained.model)
    pool = training_inputs(trained)
    parity = parity_record(
        check_parity(trained.model, onnx_bytes, cfg.window, pool=pool), cfg.window, True
    )

    def add_report(version_dir: Path) -> None:
        seconds = time.perf_counter() - t0
        write_report([Entry(name, trained, seconds)], version_dir / "report", command)

    return write_version(
        out,
        name,
        onnx_bytes,
        lambda v: build_manifest(trained, name, v, onnx_bytes, parity),
        add_report,
    )


def _metrics_line(label: str, m: dict[str, dict[str, float]], units: str) -> str:
    s, p = m["streaming"], m["persistence"]
    gain = (1 - s["rmse"] / p["rmse"]) * 100
    text = (
        f"  {label:<10} streaming RMSE {s['rmse']:.4g}, MAE {s['mae']:.4g}, "
        f"sMAPE {s['smape']:.2f}%; persistence RMSE {p['rmse']:.4g} "
        f"({abs(gain):.1f}% {'below' if gain >= 0 else 'above'} it)"
    )
    if "noiseless" in m:
        text += f"; {s['rmse'] / m['noiseless']['rmse']:.4f}x noiseless"
    return text + units


def summary(path: Path | str, trained: Trained, seconds: float) -> str:
    """What a run gives, for the terminal: validation and test metrics in original units."""
    split, h, ev = trained.split, trained.history, trained.evaluation
    units = f" ({', '.join(trained.series.target_names)}, original units)"
    lines = [
        f"{path}: {trained.config.cell}, window {trained.config.window}; split train "
        f"{split.train_end}, validation {split.n_val}, test {split.n_test}",
    ]
    if ev.validation is not None:
        lines.append(_metrics_line("validation", ev.validation, units))
    lines.append(_metrics_line("test", ev.metrics, units))
    if trained.config.early_stopping:
        chosen = f"{h.epochs_run} epochs, best on validation {h.best_epoch}"
    else:
        chosen = f"{h.epochs_run} epochs, no early stopping"
    if trained.refit is not None:
        chosen += (
            f"; refit on training + validation ({trained.fitted_rows} rows) for "
            f"{trained.refit.epochs_run} epochs: the test figures are the refit model's, the "
            "validation figures the model before it"
        )
    else:
        chosen += "; no refit"
    lines.append(f"  {chosen}")
    lines += _data_notes(trained)
    if trained.search is not None:
        lines.append(_choice_line(trained.search))
    if ev.forecasts is not None:
        lines += _forecast_lines(ev.forecasts)
    fit_s = h.seconds + (trained.refit.seconds if trained.refit is not None else 0.0)
    lines.append(
        f"  time: fit {fit_s:.1f} s (training{' and refit' if trained.refit else ''}), "
        f"total {seconds:.1f} s (with evaluation, export, parity check and writing)"
    )
    return "\n".join(lines)


def _data_notes(trained: Trained) -> list[str]:
    """What the data needed (filled gaps, the time grid) and test values far out of range."""
    from training.ranges import far_out

    s, lines = trained.series, []
    if s.time is not None:
        calendar = f", calendar inputs {', '.join(s.time.calendar)}" if s.time.calendar else ""
        zone = f" ({s.time.tz})" if s.time.tz else ""
        lines.append(f"  time: {s.time.column} every {s.time.freq}{zone}{calendar}")
    if s.filled and (s.filled.get("missing_rows") or s.filled.get("filled_cells")):
        cells: dict[str, int] = s.filled.get("filled_cells") or {}  # type: ignore[assignment]
        lines.append(
            f"  filled ({s.filled['fill']}): {s.filled['missing_rows']} row(s) missing from "
            f"the grid; cells filled: "
            + (", ".join(f"{c} {n}" for c, n in cells.items()) or "none")
        )
    k = trained.config.range_k
    for f in far_out(s, trained.fitted_rows, trained.split.val_end, k):
        text = (
            f"{f.count} of {f.rows} test values of {f.column!r} lie more than {k:g} std "
            f"outside the training range (up to {f.worst:.1f} std): expect poor forecasts; "
            "a transform (--transform diff or log-diff) may help"
        )
        log.warning("%s: %s", s.name, text)
        lines.append(f"  warning: {text}")
    return lines


def _command_line(argv0: str) -> str:
    return shlex.join([argv0, *sys.argv[1:]])


def _run_train(args: argparse.Namespace) -> int:
    from training.data import DataError

    _setup_logging(args.log_level)
    # What the command line fixes is not searched; the rest takes TrainConfig's defaults.
    fixed = {n for n in ("cell", "hidden_size", "window") if getattr(args, n) is not None}
    if args.cell is None:
        args.cell = TrainConfig.cell
    if args.hidden_size is None:
        args.hidden_size = TrainConfig.hidden_size
    name = args.name or f"{_default_prefix(args)}-{args.cell}"
    try:
        search_cfg = _search_config(args)
        series, (cfg,) = _plan(args, [args.cell], [name])
    except (UsageError, DataError) as exc:
        return _fail("train", str(exc))
    from training.baselines import start_baselines
    from training.onnx_export import ParityError
    from training.pipeline import make_split, train
    from training.search import search

    t0 = time.perf_counter()
    split = make_split(series, cfg)
    fitted_rows = split.val_end if cfg.refit else split.train_end
    baselines = start_baselines(
        series, fitted_rows, split.val_end, cfg.season, not args.no_statistical_baselines
    )
    if search_cfg.budget > 0:
        variant = _calendar_variant(args, series)
        choices = search(series, cfg, search_cfg, fixed, progress=_progress(args), calendar=variant)
    else:
        choices = [train(series, cfg, progress=_progress(args))]
    for i, trained in enumerate(choices):
        trained = _with_forecasts(trained, baselines)
        if args.name is None:  # named after the cell the search chose
            name = f"{_default_prefix(args)}-{trained.config.cell}"
        try:
            path = _export_and_write(trained, name, args.out, _command_line("seqcast"), t0)
            break
        except ParityError as exc:
            if i + 1 == len(choices):
                return _fail("train", f"ONNX export check failed, {name} not written: {exc}", 1)
            log.warning("the average failed the export check (%s); keeping the best alone", exc)
            choices[i + 1].search["export_check_failed"] = {  # type: ignore[index]
                "chosen": trained.search["chosen"],  # type: ignore[index]
                "error": str(exc),
            }
    print(summary(path, trained, time.perf_counter() - t0))
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from training.data import DataError

    _setup_logging(args.log_level)
    prefix = args.name_prefix or _default_prefix(args)
    names = [f"{prefix}-{cell}" for cell in args.cells]
    report_dir = args.report_dir or Path("reports") / prefix
    try:
        if report_dir.exists() and not report_dir.is_dir():
            raise UsageError(f"--report-dir {report_dir} exists and is not a directory")
        series, configs = _plan(args, list(args.cells), names)
    except (UsageError, DataError) as exc:
        return _fail("compare", str(exc))
    from training.onnx_export import ParityError
    from training.report import Entry, write_report

    command = _command_line("seqcast")
    entries, failed = [], {}
    start = time.perf_counter()
    for cfg, name in zip(configs, names, strict=True):
        t0 = time.perf_counter()
        try:
            trained, path = _train_and_write(series, cfg, name, args.out, _progress(args), command)
        except ParityError as exc:
            failed[name] = str(exc)
            _fail("compare", f"ONNX export check failed, {name} not written: {exc}", 1)
            continue
        seconds = time.perf_counter() - t0
        print(summary(path, trained, seconds), flush=True)
        entries.append(Entry(f"{name}/{path.name}", trained, seconds))
    total = time.perf_counter() - start
    write_report(entries, report_dir, command, failed)
    print(
        f"report: {report_dir}/README.md; {len(entries)} of {len(names)} models written, "
        f"total {total:.1f} s"
    )
    if not failed:
        return 0
    status = COMPARE_FAILED
    for cfg, name in zip(configs, names, strict=True):
        if name in failed:
            status |= CELL_BITS[cfg.cell]
    return status


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.data import DataError

    try:
        _check_data_options(args)
        if args.csv is not None:
            return _evaluate_csv(args)
        if args.test_rows is not None:
            raise UsageError("--test-rows applies to --csv data only")
        return _evaluate_sine(args)
    except (UsageError, DataError) as exc:
        return _fail("evaluate", str(exc))


def _evaluate_csv(args: argparse.Namespace) -> int:
    from training.data import count_test_rows, load_csv
    from training.generalization import load_saved, rescore

    if args.noise_seed is not None:
        raise UsageError("--noise-seed applies to the synthetic series, not to --csv data")
    saved = load_saved(args.model)
    m = saved.manifest
    if m.time is not None:  # the stamps give the calendar inputs, on the model's grid
        column = args.time_column or m.time.column
        series = load_csv(
            args.csv,
            m.client_features,
            m.targets,
            args.fill,
            column,
            m.time.freq,
            m.time.tz,
            m.time.calendar,
        )
    else:
        series = load_csv(args.csv, m.features, m.targets, args.fill, args.time_column)
    test_rows = args.test_rows
    if args.test_start is not None:
        test_rows = count_test_rows(series, args.test_start)
    result = rescore(saved, series, test_rows)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t = result["test"]
    units = f" ({', '.join(m.targets)}, original units)"
    rows = result["test_rows"]
    span = f"lines {rows['first_line']}-{rows['last_line']}"
    if "first_time" in rows:
        span += f", {rows['first_time']} to {rows['last_time']}"
    print(
        f"{args.model} on {args.csv}: test = the last {rows['count']} of {series.rows} rows "
        f"({span})"
    )
    print(_metrics_line("test", t, units))
    print(f"  windowed RMSE {t['windowed']['rmse']:.4g} (look-back {m.window})")
    return 0


def _evaluate_sine(args: argparse.Namespace) -> int:
    from training.generalization import evaluate_saved, load_saved

    saved = load_saved(args.model)
    if not saved.synthetic:
        raise UsageError(
            f"{args.model} was trained on {saved.dataset!r}, not on the synthetic series: "
            "give that data with --csv FILE"
        )
    results = [evaluate_saved(args.model, seed) for seed in args.noise_seed or [7]]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"{args.model} noise seed {r['noise_seed']}: streaming/noiseless "
            f"{r['ratios']['streaming_vs_noiseless']:.4f} (manifest {r['manifest_ratio']:.4f}, "
            f"difference {r['difference']:+.4f}), streaming/persistence "
            f"{r['ratios']['streaming_vs_persistence']:.4f}"
        )
    return 0


# -- automatic model choice and baselines (training.search, training.baselines) -----------


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "automatic model choice and baselines",
        "Without --cell, --hidden-size or --window, train searches them (and seeds) on the "
        "validation rows; an option given holds that dimension.",
    )
    g.add_argument(
        "--search-budget",
        type=float,
        default=DEFAULT_SEARCH_BUDGET,
        metavar="SECONDS",
        help="time for fitting candidates and refitting the chosen ones; 0 trains the given "
        f"config alone (default: {DEFAULT_SEARCH_BUDGET:g})",
    )
    g.add_argument(
        "--ensemble",
        type=int,
        default=DEFAULT_ENSEMBLE,
        metavar="K",
        help="average up to K candidates into one model when validation prefers it; 1 keeps "
        f"the best (default: {DEFAULT_ENSEMBLE})",
    )
    g.add_argument(
        "--no-statistical-baselines",
        action="store_true",
        help="skip the ARIMA and ETS baselines (statsmodels)",
    )
    # None marks an option left out: the search varies it (see _run_train).
    p.set_defaults(cell=None, hidden_size=None)


def _search_config(args: argparse.Namespace) -> SearchConfig:
    try:
        return SearchConfig(budget=args.search_budget, ensemble=args.ensemble)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _with_forecasts(trained: Trained, baselines: Any) -> Trained:
    """`trained` with its 1- and 5-step forecasts scored beside the baselines."""
    from dataclasses import replace

    from training.baselines import forecast_table

    if baselines.span.series is not trained.series:  # the search chose calendar inputs
        baselines = replace(baselines, span=replace(baselines.span, series=trained.series))
    table = forecast_table(baselines, trained.model, trained.scalers, trained.transform)
    return replace(trained, evaluation=replace(trained.evaluation, forecasts=table))


def _choice_line(record: dict[str, Any]) -> str:
    members = [record["candidates"][i] for i in record["members"]]
    what = ", ".join(
        f"{m['cell']} {m['hidden_size']}/{m['window']}/{m.get('transform', 'none')}/seed "
        f"{m['seed']}{' +' + '+'.join(m['calendar']) if m.get('calendar') else ''}"
        for m in members
    )
    scores = record["validation_score_by_k"]
    k = len(members)
    failed = record.get("export_check_failed")
    if failed is not None:
        record = {**record, "chosen": f"best ({failed['chosen']} failed the export check)"}
    text = (
        f"  model choice on validation: {record['chosen']} of {len(record['candidates'])} "
        f"candidates (cell hidden/window/transform/seed[ +calendar]: {what}); "
        f"score {scores[str(k)]:.4f}"
    )
    if k > 1:
        text += f" against {scores['1']:.4f} for the best alone"
    if "seed_mean_score" in record:  # what one seed of the structure may be expected to score
        text += f", {record['seed_mean_score']:.4f} for one seed on average"
    elif len(scores) > 1:
        text += f" (averaging scored {min(v for n, v in scores.items() if n != '1'):.4f})"
    return (
        text + f"; search {record['search_seconds']:.1f} s of a {record['config']['budget']:g} s "
        "budget (score: validation RMSE / persistence RMSE, mean over 1 and 5 steps)"
    )


_LABELS = {"seqcast": "seqcast", "persistence": "persistence", "seasonal_naive": "seasonal naive"}


def _forecast_lines(table: dict[str, Any]) -> list[str]:
    rows = table["rows"]
    lines = [
        f"  test RMSE by horizon (rolling origin over the last {rows['count']} rows; baselines "
        f"fitted on the first {table['baselines_fitted_on']} rows; season {table['season']}, "
        f"{table['season_from']}):"
    ]
    methods = list(next(iter(table["horizons"].values())))
    names = [_LABELS.get(m, table["statistical"].get(m, m)) for m in methods]
    width = max(12, *(len(n) for n in names))
    lines.append(
        "    " + f"{'method':<{width}}" + "".join(f"{h + ' step':>12}" for h in table["horizons"])
    )
    for m, n in zip(methods, names, strict=True):
        cells = "".join(
            f"{table['horizons'][h][m]['rmse']:>12.4g}"
            if m in table["horizons"][h]
            else f"{'-':>12}"
            for h in table["horizons"]
        )
        lines.append(f"    {n:<{width}}{cells}")
    lines += [f"    note: {note}" for note in table["notes"]]
    return lines
