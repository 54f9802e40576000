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

from training.config import CELLS, SCALER_KINDS, TrainConfig

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
    "manifest's window hint",
    "burn_in": "steps at the start of each training subsequence left out of the loss",
    "batch_size": "subsequences per optimisation step",
    "lr": "Adam learning rate at the start of the cosine schedule",
    "lr_min": "learning rate at the end of the cosine schedule",
    "epochs": "maximum epochs (early stopping may end sooner)",
    "patience": "epochs without a better validation loss before stopping",
    "grad_clip": "maximum gradient norm",
    "ema": "decay of the moving average of the weights that is validated and kept (0: off)",
    "scaler": "per-column scaling fitted on the training part: " + " | ".join(SCALER_KINDS),
    "val_fraction": "validation share of the rows before the test part",
    "test_fraction": "test share of the series, taken from its end",
    "seed": "seed for weights and batch order",
    "threads": "CPU threads torch may use (fixed so results do not depend on the machine)",
    "device": "auto (CUDA when torch sees it) | cpu | cuda",
}


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--csv", type=Path, help="CSV file with a header row (default: the synthetic noisy sine)"
    )
    g.add_argument("--features", nargs="+", help="input columns of the CSV (required with --csv)")
    g.add_argument(
        "--targets", nargs="+", help="predicted columns of the CSV (default: --features)"
    )
    g.add_argument(
        "--fill", choices=("ffill", "zero"), help="fill empty/NaN cells (default: refuse them)"
    )
    g.add_argument(
        "--noise-seed",
        type=int,
        default=42,
        help="noise seed of the synthetic series sin(t) + N(0, 0.5^2) (default: 42)",
    )


def _add_config_options(p: argparse.ArgumentParser, with_cell: bool) -> None:
    g = p.add_argument_group("model and fitting")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name == "cell":
            if with_cell:
                g.add_argument(
                    "--cell", choices=CELLS, default=defaults.cell, help="recurrent cell"
                )
            continue
        default = getattr(defaults, f.name)
        kwargs: dict[str, Any] = {
            "default": default,
            "help": f"{_HELP[f.name]} (default: {default})",
        }
        if f.name == "scaler":
            kwargs["choices"] = SCALER_KINDS
        elif f.name == "device":
            kwargs["choices"] = ("auto", "cpu", "cuda")
        else:
            kwargs["type"] = type(default)
        g.add_argument("--" + f.name.replace("_", "-"), **kwargs)


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
        "and write <out>/<name>/<next version>/ with model.onnx, manifest.json and a report.",
    )
    _add_data_options(p)
    _add_config_options(p, with_cell=True)
    _add_output_options(p)
    p.add_argument("--name", help="model name (default: <data>-<cell>, e.g. sine-lstm)")
    p.set_defaults(func=_run_train)


def register_compare(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train several cells on the same data and write a comparison report",
        description="Train one forecaster per cell with the same data and settings, write each "
        "to the model repository as <prefix>-<cell>, and a comparison report (JSON metrics, PNG "
        "plots, Markdown summary).",
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
        help="evaluate a saved model (its ONNX file) on a fresh realization of the synthetic sine",
        description="Run a model version from the repository with ONNX Runtime on the synthetic "
        "series drawn with another noise seed, and print its metrics beside the manifest's.",
    )
    p.add_argument("model", type=Path, help="model version directory, e.g. models/sine-lstm/1")
    p.add_argument("--noise-seed", type=int, nargs="+", default=[7], help="noise seed(s) to try")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run_evaluate)


def _config(args: argparse.Namespace, cell: str) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "cell"}
    try:
        return TrainConfig(cell=cell, **values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _series(args: argparse.Namespace) -> Series:
    from training.data import load_csv, synthetic_sine

    if args.csv is None:
        if args.features or args.targets or args.fill:
            raise UsageError("--features, --targets and --fill apply to --csv data only")
        return synthetic_sine(args.noise_seed)
    if not args.features:
        raise UsageError("--csv needs --features (the input columns)")
    return load_csv(args.csv, args.features, args.targets or args.features, args.fill)


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
    """One line on stderr; 2 for bad input (nothing written), 1 for a failed run."""
    print(f"seqcast {command}: error: {reason}", file=sys.stderr)
    return status


def _plan(
    args: argparse.Namespace, cells: list[str], names: list[str]
) -> tuple[Series, list[TrainConfig]]:
    """Validate everything the run needs; raises UsageError or DataError before any write."""
    from training.data import check_length
    from training.manifest import check_name

    configs = [_config(args, cell) for cell in cells]
    for name in names:
        try:
            check_name(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    series = _series(args)
    for cfg in configs:
        check_length(series, cfg.window, cfg.val_fraction, cfg.test_fraction)
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
    from training.onnx_export import check_parity, export_onnx, parity_record
    from training.pipeline import train, training_inputs
    from training.report import Entry, write_report
    from training.repository import build_manifest, write_version

    trained = train(series, cfg, progress=progress)
    onnx_bytes = export_onnx(trained.model)
    pool = training_inputs(trained)
    parity = parity_record(
        check_parity(trained.model, onnx_bytes, cfg.window, pool=pool), cfg.window, True
    )

    def add_report(version_dir: Path) -> None:
        write_report([Entry(name, trained)], version_dir / "report", command)

    path = write_version(
        out,
        name,
        onnx_bytes,
        lambda v: build_manifest(trained, name, v, onnx_bytes, parity),
        add_report,
    )
    return trained, path


def _summary_line(path: Path, trained: Trained, seconds: float) -> str:
    r = trained.evaluation.ratios()
    m = trained.evaluation.metrics
    text = f"{path}: streaming RMSE {m['streaming']['rmse']:.4f}"
    if "streaming_vs_noiseless" in r:
        text += f" ({r['streaming_vs_noiseless']:.4f}x noiseless)"
    gain = (1 - r["streaming_vs_persistence"]) * 100
    side = "below" if gain >= 0 else "above"
    return text + (
        f", persistence {m['persistence']['rmse']:.4f} ({abs(gain):.1f}% {side}), "
        f"{trained.history.epochs_run} epochs (best {trained.history.best_epoch}), {seconds:.1f} s"
    )


def _command_line(argv0: str) -> str:
    return shlex.join([argv0, *sys.argv[1:]])


def _run_train(args: argparse.Namespace) -> int:
    from training.data import DataError

    _setup_logging(args.log_level)
    name = args.name or f"{_default_prefix(args)}-{args.cell}"
    try:
        series, (cfg,) = _plan(args, [args.cell], [name])
    except (UsageError, DataError) as exc:
        return _fail("train", str(exc))
    from training.onnx_export import ParityError

    t0 = time.perf_counter()
    try:
        trained, path = _train_and_write(
            series, cfg, name, args.out, _progress(args), _command_line("seqcast")
        )
    except ParityError as exc:
        return _fail("train", f"ONNX export check failed, {name} not written: {exc}", 1)
    print(_summary_line(path, trained, time.perf_counter() - t0))
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
    entries = []
    start = time.perf_counter()
    for cfg, name in zip(configs, names, strict=True):
        t0 = time.perf_counter()
        try:
            trained, path = _train_and_write(series, cfg, name, args.out, _progress(args), command)
        except ParityError as exc:
            return _fail("compare", f"ONNX export check failed, {name} not written: {exc}", 1)
        print(_summary_line(path, trained, time.perf_counter() - t0), flush=True)
        entries.append(Entry(f"{name}/{path.name}", trained))
    total = time.perf_counter() - start
    write_report(entries, report_dir, command)
    print(f"report: {report_dir}/README.md; {len(entries)} models in {total:.1f} s")
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.generalization import evaluate_saved

    try:
        results = [evaluate_saved(args.model, seed) for seed in args.noise_seed]
    except (OSError, ValueError, KeyError) as exc:
        return _fail("evaluate", str(exc))
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
