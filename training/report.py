"""Report of one or several models trained on the same data: JSON metrics, PNG plots, Markdown.

The plots: loss curves, test forecast against actual, error histogram and
predicted-against-actual scatter (streaming predictions).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from training.pipeline import Trained
from training.ranges import far_out

log = logging.getLogger(__name__)

DPI = 80  # keeps each PNG well under 150 KB
_COLOURS = {"rnn": "crimson", "lstm": "mediumseagreen", "gru": "dodgerblue"}
PLOTS = {
    "loss.png": "Loss curves (scaled MSE; dashed: validation, streaming)",
    "forecast.png": "Test forecast against actual (streaming, one step ahead)",
    "errors.png": "Error histogram (streaming, original units)",
    "scatter.png": "Predicted against actual (streaming)",
}


@dataclass(frozen=True)
class Entry:
    """One model in a report: its label (model name and version) and its training run."""

    label: str
    trained: Trained
    total_seconds: float | None = None  # the whole run: fit, evaluation, export, check, write


def _colour(entry: Entry) -> str:
    return _COLOURS.get(entry.trained.config.cell, "darkorange")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_loss(entries: Sequence[Entry], path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for e in entries:
        h = e.trained.history
        epochs = np.arange(1, h.epochs_run + 1)
        ax.plot(epochs, h.train_loss, color=_colour(e), label=f"{e.label} train")
        ax.plot(epochs, h.val_loss, color=_colour(e), linestyle="--", label=f"{e.label} val")
        ax.axvline(h.best_epoch, color=_colour(e), alpha=0.3, linewidth=1)
    ax.set(xlabel="epoch", ylabel="MSE (scaled)", title="Loss per epoch (vertical: best epoch)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def plot_forecast(entries: Sequence[Entry], path: Path) -> None:
    """Test rows against the streaming predictions; dated rows on a date axis, and the first
    model's calibrated one-step 80 % and 95 % intervals shaded."""
    t0 = entries[0].trained
    ev0 = t0.evaluation
    steps: Any = np.arange(ev0.actual.shape[0])
    xlabel = "test step"
    spec = t0.series.time
    if spec is not None:  # row i of a dated series is grid position i: local wall times
        stamps = spec.stamps(t0.split.val_end, ev0.actual.shape[0])
        steps = [s.replace(tzinfo=None) for s in stamps]
        xlabel = spec.column if spec.tz is None else f"{spec.column} ({spec.tz})"
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for level, alpha in ((0.95, 0.15), (0.8, 0.25)):
        band = one_step_band(t0, ev0.predictions["streaming"][:, 0], level)
        if band is not None:
            colour = _colour(entries[0])
            label = f"{entries[0].label} {level:.0%} interval"
            ax.fill_between(steps, *band, color=colour, alpha=alpha, linewidth=0, label=label)
    ax.plot(steps, ev0.actual[:, 0], ".", color="grey", markersize=3, label="actual")
    if "noiseless" in ev0.predictions:
        ax.plot(steps, ev0.predictions["noiseless"][:, 0], color="black", label="noiseless sine")
    for e in entries:
        pred = e.trained.evaluation.predictions["streaming"][:, 0]
        ax.plot(steps, pred, color=_colour(e), label=e.label)
    ax.set(xlabel=xlabel, ylabel=t0.series.target_names[0])
    ax.set_title("Test forecast against actual (streaming)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    if xlabel != "test step":
        fig.autofmt_xdate()
    _save(fig, path)


def one_step_band(
    t: Trained, pred: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The calibrated one-step interval at `level` around predictions of the first target
    (lower, upper), or None when the model has no intervals."""
    if t.intervals is None:
        return None
    grid = np.asarray(t.intervals["levels"])
    width: Any = float(np.interp(level, grid, np.asarray(t.intervals["widths"][0][0])))
    if t.intervals["method"] == "normalized-conformal":
        width = width * _test_scale(t)  # (n_test,): the scale at each prediction's origin
    space = t.intervals["space"]
    if space == "log":
        return pred * np.exp(-width), pred * np.exp(width)
    if space == "log1p":
        z = np.log1p(pred)
        return np.maximum(np.expm1(z - width), 0.0), np.expm1(z + width)
    return pred - width, pred + width


def _test_scale(t: Trained) -> np.ndarray:
    """The normalized-conformal scale (first target) at the origin of each test row's
    one-step prediction, followed from the start of the series as the service does."""
    from training.intervals import one_step_errors, running_mean_square

    assert t.intervals is not None
    tr = t.transform
    identity = tr.lag == 0 and tr.log is None
    mseries = t.series if identity else t.model_series
    levels = None if identity else t.series
    errors = one_step_errors(t.model, mseries, t.scalers, mseries.rows, tr, levels)
    base = np.asarray(t.intervals["base"])
    m = running_mean_square(errors, base, t.intervals["decay"])
    origins = np.arange(t.split.val_end, t.split.rows) - tr.lag - 1  # model rows
    return np.asarray(np.sqrt(base + m[origins])[:, 0])


def plot_errors(entries: Sequence[Entry], path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for e in entries:
        ev = e.trained.evaluation
        err = (ev.predictions["streaming"] - ev.actual).ravel()
        ax.hist(err, bins=30, alpha=0.45, color=_colour(e), label=e.label)
    ax.set(xlabel="prediction - actual", ylabel="count", title="Error histogram (streaming)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def plot_scatter(entries: Sequence[Entry], path: Path) -> None:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    lo, hi = np.inf, -np.inf
    for e in entries:
        ev = e.trained.evaluation
        a, p = ev.actual.ravel(), ev.predictions["streaming"].ravel()
        ax.scatter(a, p, s=6, alpha=0.5, color=_colour(e), label=e.label)
        lo, hi = min(lo, a.min(), p.min()), max(hi, a.max(), p.max())
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted against actual")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def fit_seconds(t: Trained) -> float:
    """Seconds spent fitting: the validated run plus the refit, when there is one."""
    return t.history.seconds + (t.refit.seconds if t.refit is not None else 0.0)


def metrics_json(entries: Sequence[Entry], failed: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in entries:
        t = e.trained
        out[e.label] = {
            "cell": t.config.cell,
            **t.evaluation.summary(),
            "epochs": t.history.epochs_run,
            "best_epoch": t.history.best_epoch,
            "refit_epochs": t.refit.epochs_run if t.refit is not None else None,
            "fit_seconds": round(fit_seconds(t), 2),
            "total_seconds": None if e.total_seconds is None else round(e.total_seconds, 2),
            "loss": {"train": t.history.train_loss, "val": t.history.val_loss},
        }
        if t.series.filled is not None:
            out[e.label]["filled"] = t.series.filled
        far = far_out(t.series, t.fitted_rows, t.split.val_end, t.config.range_k)
        out[e.label]["out_of_range"] = {
            "k": t.config.range_k,
            "columns": {
                f.column: {"count": f.count, "of": f.rows, "worst_std": f.worst} for f in far
            },
        }
    if failed:
        out["failed"] = failed
    return out


def markdown(
    entries: Sequence[Entry], command: str | None, failed: dict[str, str] | None = None
) -> str:
    lines = ["# Training report", ""]
    if entries:
        t0 = entries[0].trained
        refit = (
            f" The models were then refit on training + validation ({t0.fitted_rows} rows) "
            "for the epochs validation chose: validation figures are the model before the "
            "refit, test figures the refit model."
            if t0.refit is not None
            else ""
        )
        lines += [
            f"Data: `{t0.series.name}` ({t0.series.rows} rows; split train "
            f"{t0.split.train_end}, validation {t0.split.n_val}, test {t0.split.n_test}). "
            "Metrics in original units; streaming carries the state over the whole series, "
            f"windowed predicts each row from the previous {t0.config.window} rows from a zero "
            f"state.{refit}",
            "",
        ]
    if command:
        lines += ["Produced by:", "", "```bash", command, "```", ""]
    if entries:
        lines += _table(entries)
        lines += ["", "Metrics as JSON: [metrics.json](metrics.json)", ""]
    if failed:
        lines += ["## Not written: the ONNX export check failed", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in failed.items()]
        lines.append("")
    if entries:
        for file, title in PLOTS.items():
            lines += [f"## {title}", "", f"![{title}]({file})", ""]
    return "\n".join(lines)


def _table(entries: Sequence[Entry]) -> list[str]:
    t0 = entries[0].trained
    has_floor = "noiseless" in t0.evaluation.metrics
    has_val = t0.evaluation.validation is not None
    head = "| model |"
    rule = "| --- |"
    if has_val:
        head += " validation RMSE | validation persistence |"
        rule += " ---: | ---: |"
    head += " streaming RMSE | windowed RMSE | persistence RMSE |"
    rule += " ---: | ---: | ---: |"
    if has_floor:
        head += " noiseless RMSE | streaming / noiseless | windowed / noiseless |"
        rule += " ---: | ---: | ---: |"
    head += " streaming / persistence | MAE | sMAPE % | epochs (best) | refit epochs |"
    head += " fit s | total s |"
    rule += " ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    lines = [head, rule]
    for e in entries:
        t = e.trained
        m, r, h = t.evaluation.metrics, t.evaluation.ratios(), t.history
        row = f"| {e.label} |"
        if t.evaluation.validation is not None:
            v = t.evaluation.validation
            row += f" {v['streaming']['rmse']:.4f} | {v['persistence']['rmse']:.4f} |"
        row += (
            f" {m['streaming']['rmse']:.4f} | {m['windowed']['rmse']:.4f} "
            f"| {m['persistence']['rmse']:.4f} |"
        )
        if has_floor:
            row += (
                f" {m['noiseless']['rmse']:.4f} | {r['streaming_vs_noiseless']:.4f} "
                f"| {r['windowed_vs_noiseless']:.4f} |"
            )
        refit = str(t.refit.epochs_run) if t.refit is not None else "no refit"
        total = "" if e.total_seconds is None else f"{e.total_seconds:.1f}"
        row += (
            f" {r['streaming_vs_persistence']:.4f} | {m['streaming']['mae']:.4f} "
            f"| {m['streaming']['smape']:.2f} | {h.epochs_run} ({h.best_epoch}) | {refit} "
            f"| {fit_seconds(t):.1f} | {total} |"
        )
        lines.append(row)
    lines += [
        "",
        "fit s: fitting (with the refit); total s: the whole run of that model (fit, "
        "evaluation, ONNX export, parity check, writing).",
    ]
    return lines


def write_report(
    entries: Sequence[Entry],
    directory: Path,
    command: str | None = None,
    failed: dict[str, str] | None = None,
) -> Path:
    """Write metrics.json, the four plots and README.md into `directory` (created if needed).

    `failed` lists models whose export check failed (name: reason); with no entries at all
    the report holds only that list.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(
        json.dumps(metrics_json(entries, failed), indent=2) + "\n"
    )
    if entries:
        plot_loss(entries, directory / "loss.png")
        plot_forecast(entries, directory / "forecast.png")
        plot_errors(entries, directory / "errors.png")
        plot_scatter(entries, directory / "scatter.png")
    (directory / "README.md").write_text(markdown(entries, command, failed))
    log.info("report written to %s", directory)
    return directory
