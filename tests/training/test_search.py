"""The automatic model choice: its order, its budget, validation only, the average as one
ONNX graph, and what `seqcast train` prints and records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.training.conftest import tiny_config
from training.config import SearchConfig
from training.data import Series
from training.ensemble import Ensemble
from training.models import Forecaster
from training.onnx_export import check_parity, export_onnx, io_shapes
from training.pipeline import refit_trained, train
from training.search import SHORT, candidate_config, search, structures

# Tiny candidates: the cell and the seed vary, the rest is held.
HELD = {"hidden_size", "window", "transform"}


def _still() -> float:
    """A clock that never moves: every candidate fits the budget."""
    return 0.0


@pytest.fixture
def work_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A clock that moves 10 s per model fitted (candidate or refit), and only then."""
    import training.search as module

    now = [0.0]

    def costs_ten(fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            now[0] += 10.0
            return result

        return timed

    monkeypatch.setattr(module, "train", costs_ten(module.train))
    monkeypatch.setattr(module, "refit_trained", costs_ten(module.refit_trained))
    return lambda: now[0]


def test_structures_start_from_the_default_and_hold_what_is_given() -> None:
    cfg = tiny_config("lstm", window=40, burn_in=4)
    shapes = structures(cfg, fixed={"transform"})
    assert shapes[0] == {"cell": "lstm", "hidden_size": 32, "window": "auto", "transform": "auto"}
    assert [sum(s[k] != shapes[0][k] for k in s) for s in shapes] == [0, 1, 1, 1, 2, 2, 2, 3]
    # --cell gru: the GRU first, the cell never varies; a given window is held as given.
    held = structures(replace(cfg, cell="gru"), fixed={"cell", "window", "transform"})
    assert [s["cell"] for s in held] == ["gru", "gru"]
    assert {s["window"] for s in held} == {40}
    short = candidate_config(cfg, {"window": SHORT}, seed=7)
    assert (short.window, short.burn_in, short.seed, short.refit) == (10, 1, 7, False)


def test_a_zero_budget_trains_one_candidate(sine: Series, work_clock: Any) -> None:
    cfg = tiny_config("gru")
    (trained,) = search(sine, cfg, SearchConfig(budget=0.0), fixed=HELD, clock=work_clock)
    record = trained.search
    assert record is not None
    assert len(record["candidates"]) == 1
    assert record["chosen"] == "best"
    assert trained.config.cell == "gru"
    assert trained.refit is not None  # the chosen model is refit on training + validation


def test_the_budget_bounds_the_candidates(sine: Series, work_clock: Any) -> None:
    cfg = tiny_config("gru")
    space = SearchConfig(budget=1e9, ensemble=1, seeds=3)
    everything = search(sine, cfg, space, fixed=HELD, clock=work_clock)[0].search
    assert everything is not None
    assert len(everything["candidates"]) == 2 + 2 * 2  # two cells, then two more seeds each
    # Each fit costs 10 s; a candidate starts only while it and the refit of the chosen one
    # (10 s x 800 / 640 rows, estimated) fit: in 60 s, the default cell (10 s; the other
    # cell would end at 32.5 s, beyond half the budget), then two more seeds (20 s, 30 s).
    bounded = search(sine, cfg, replace(space, budget=60.0), fixed=HELD, clock=work_clock)
    record = bounded[0].search
    assert record is not None
    assert [(c["cell"], c["seed"]) for c in record["candidates"]] == [
        ("gru", 42),
        ("gru", 43),
        ("gru", 44),
    ]
    assert record["search_seconds"] == 30.0
    assert record["seconds"] == 40.0  # and the refit: within the budget
    assert all(c["seconds"] == 10.0 for c in record["candidates"])


def _altered_test_span(series: Series, rows: int) -> Series:
    """The same series, with its last `rows` values replaced by something else entirely."""
    targets = series.targets.copy()
    targets[-rows:] = 5.0 - 3.0 * targets[-rows:]
    return replace(series, targets=targets, features=targets.copy(), clean_targets=None)


def test_the_choice_reads_the_validation_rows_only(sine: Series) -> None:
    cfg = tiny_config("lstm", test_rows=200)
    space = SearchConfig(budget=1e9, ensemble=3, seeds=2)
    honest = search(sine, cfg, space, fixed=HELD, clock=_still)[0]
    leaked = search(_altered_test_span(sine, 200), cfg, space, fixed=HELD, clock=_still)[0]
    a, b = honest.search, leaked.search
    assert a is not None
    assert b is not None
    # Every candidate scores the same and the same members are chosen, however different
    # the test rows: nothing about them took part.
    assert [c["score"] for c in a["candidates"]] == [c["score"] for c in b["candidates"]]
    assert (a["chosen"], a["members"]) == (b["chosen"], b["members"])
    assert honest.evaluation.metrics != leaked.evaluation.metrics  # the test rows did differ


def test_refit_trained_is_train_with_refit(sine: Series) -> None:
    cfg = tiny_config("gru")
    once = train(sine, cfg)
    twice = refit_trained(train(sine, replace(cfg, refit=False)))
    assert twice.config == once.config
    assert twice.evaluation.metrics == once.evaluation.metrics
    assert export_onnx(twice.model) == export_onnx(once.model)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_average_is_one_graph_whose_state_continues_exactly(cell: str) -> None:
    torch.manual_seed(0)
    members = [Forecaster(cell, 2, 3, output_size=2), Forecaster(cell, 2, 5, output_size=2)]  # type: ignore[arg-type]
    ensemble = Ensemble(members)
    blob = export_onnx(ensemble)
    check_parity(ensemble, blob, window=12)  # raises beyond the tolerance
    shapes = io_shapes(ensemble)
    assert [t["shape"] for t in shapes["inputs"][1:]] == [[1, "batch", 8]] * (1 + (cell == "lstm"))
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    x = np.random.default_rng(1).normal(size=(2, 30, 2)).astype(np.float32)
    zero = np.zeros((1, 2, 8), np.float32)

    def run(xs: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, [xs, *state], strict=True)))  # type: ignore[no-any-return]

    whole = run(x, [zero] * (len(names) - 1))
    first = run(x[:, :11], [zero] * (len(names) - 1))
    rest = run(x[:, 11:], first[1:])
    np.testing.assert_allclose(np.concatenate([first[0], rest[0]], axis=1), whole[0], atol=1e-5)
    for got, want in zip(rest[1:], whole[1:], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The prediction is the mean of the members', each on its own slice of the state.
    with torch.no_grad():
        y = torch.stack([m(torch.from_numpy(x))[0] for m in members]).mean(0).numpy()
    np.testing.assert_allclose(whole[0], y, atol=1e-5)


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


NILE = ["--csv", "nile.csv", "--features", "volume", "--time-column", "year", "--test-rows", "20"]
QUICK = ["--hidden-size", "4", "--epochs", "3", "--no-progress", "--out", "repo"]


def test_train_searches_and_prints_validation_test_and_baselines(
    tmp_path: Path, nile_csv: Path
) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    result = _run(tmp_path, "train", *NILE, *QUICK, "--season", "5", "--transform", "none")
    assert result.returncode == 0, result.stderr
    (name,) = [p.name for p in (tmp_path / "repo").iterdir()]
    assert name in ("nile-lstm", "nile-gru")  # named after the cell the search chose
    m = json.loads((tmp_path / "repo" / name / "1" / "manifest.json").read_text())
    record = m["training"]["search"]
    assert record["config"]["budget"] == 60.0
    assert len(record["candidates"]) >= 1
    assert all("validation_rmse" in c and "test" not in json.dumps(c) for c in record["candidates"])
    assert m["architecture"]["cell"] == m["training"]["config"]["cell"]
    if record["chosen"] != "best":  # an average: one state, the members' concatenated
        sizes = [a["hidden_size"] for a in m["architecture"]["members"]]
        assert m["architecture"]["hidden_size"] == sum(sizes)
    forecasts = m["metrics"]["forecasts"]
    assert forecasts["season"] == 5
    assert set(forecasts["horizons"]["5"]) >= {"seqcast", "persistence", "seasonal_naive"}
    assert {"arima", "ets"} <= set(forecasts["horizons"]["1"])
    report = json.loads((tmp_path / "repo" / name / "1" / "report" / "metrics.json").read_text())
    assert report[name]["forecasts"] == forecasts

    out = result.stdout.splitlines()
    assert out[1].startswith("  validation streaming RMSE ")
    assert out[2].startswith("  test       streaming RMSE ")
    choice = next(line for line in out if line.startswith("  model choice on validation: "))
    assert f"of {len(record['candidates'])} candidates" in choice
    assert "of a 60 s budget" in choice
    table = out.index(next(line for line in out if line.startswith("  test RMSE by horizon")))
    assert out[table + 1].split() == ["method", "1", "step", "5", "step"]
    rows = {line.split()[0]: line.split()[1:] for line in out[table + 2 : table + 7]}
    h1 = forecasts["horizons"]["1"]
    assert float(rows["seqcast"][0]) == pytest.approx(h1["seqcast"]["rmse"], rel=1e-3)
    assert float(rows["persistence"][1]) == pytest.approx(
        forecasts["horizons"]["5"]["persistence"]["rmse"], rel=1e-3
    )
    assert "seasonal" in rows  # "seasonal naive"
    assert any(k.startswith("ARIMA(") for k in rows)


def test_search_budget_zero_trains_the_config_alone(tmp_path: Path, nile_csv: Path) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    args = [*NILE, *QUICK, "--search-budget", "0", "--no-statistical-baselines"]
    result = _run(tmp_path, "train", *args)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "repo" / "nile-lstm" / "1" / "manifest.json").read_text())
    assert m["training"]["search"] is None
    assert "model choice" not in result.stdout
    assert set(m["metrics"]["forecasts"]["horizons"]["1"]) == {"seqcast", "persistence"}
    assert "note: ARIMA/ETS not fitted (--no-statistical-baselines)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search-budget", "-1"], "search budget must be at least 0 seconds, got -1.0"),
        (["--ensemble", "0"], "ensemble must be at least 1, got 0"),
        (["--season", "1"], "season must be at least 2, got 1"),
        (["--hidden-size", "0"], "hidden_size must be at least 1, got 0"),
        (["--rollout", "0"], "rollout must be at least 1, got 0"),
    ],
    ids=["budget", "ensemble", "season", "hidden-size", "rollout"],
)
def test_bad_search_options_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = _run(tmp_path, "train", *args, "--out", "repo")
    assert result.returncode == 2
    assert result.stderr.strip() == f"seqcast train: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_the_choice_is_the_structure_with_the_best_mean_over_its_seeds(sine: Series) -> None:
    cfg = tiny_config("lstm")
    space = SearchConfig(budget=1e9, ensemble=3, seeds=3)
    trained = search(sine, cfg, space, fixed=HELD, clock=_still)[0]
    record = trained.search
    assert record is not None
    candidates = record["candidates"]
    by_cell: dict[str, list[float]] = {}
    for c in candidates:
        by_cell.setdefault(c["cell"], []).append(c["score"])
    # Both cells got three seeds; the chosen one has the lower mean score, not necessarily
    # the single best candidate.
    assert sorted(len(v) for v in by_cell.values()) == [3, 3]
    cell = min(by_cell, key=lambda k: float(np.mean(by_cell[k])))
    members = [candidates[i] for i in record["members"]]
    assert {m["cell"] for m in members} == {cell}
    assert trained.config.cell == cell
    # The members are its best seeds; the most whose average scores no worse than the mean
    # seed score of the structure.
    assert [m["score"] for m in members] == sorted(by_cell[cell])[: len(members)]
    mean = float(np.mean(by_cell[cell]))
    scores = {int(k): v for k, v in record["validation_score_by_k"].items()}
    assert scores[len(members)] <= mean
    assert all(v > mean for n, v in scores.items() if n > len(members))


@pytest.fixture
def monthly_csv(tmp_path: Path) -> Path:
    """20 years of a monthly cycle with noise: month,value."""
    rng = np.random.default_rng(3)
    rows = [
        f"{1990 + i // 12}-{i % 12 + 1:02d},"
        f"{10 + 2 * np.sin(2 * np.pi * i / 12) + 0.3 * rng.standard_normal():.4f}"
        for i in range(240)
    ]
    path = tmp_path / "monthly.csv"
    path.write_text("month,value\n" + "\n".join(rows) + "\n")
    return path


MONTHLY = ["--csv", "monthly.csv", "--features", "value", "--time-column", "month"]
# Every searched dimension held but the calendar inputs: two structures, a few seeds.
HELD_ARGS = ["--test-rows", "24", "--window", "24", "--transform", "none", "--ensemble", "2"]


def _manifest(repo: Path) -> dict[str, Any]:
    (model,) = repo.iterdir()
    return json.loads((model / "1" / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_the_search_tries_the_calendar_of_monthly_rows_and_validation_decides(
    tmp_path: Path, monthly_csv: Path
) -> None:
    args = [*MONTHLY, *HELD_ARGS, *QUICK, "--no-statistical-baselines"]
    result = _run(tmp_path, "train", *args)
    assert result.returncode == 0, result.stderr
    m = _manifest(tmp_path / "repo")
    record = m["training"]["search"]
    assert record["calendar_tried"] == ["month"]
    tried = {tuple(c["calendar"]) for c in record["candidates"]}
    assert tried == {(), ("month",)}  # each structure with and without
    # The choice is the validation's, and the model is the one chosen: its inputs, its
    # manifest's time block, and its rolled-forward 5-step figure.
    assert m["time"]["calendar"] == record["calendar"]
    members = [record["candidates"][i] for i in record["members"]]
    assert all(c["calendar"] == record["calendar"] for c in members)
    assert "seqcast" in m["metrics"]["forecasts"]["horizons"]["5"]
    if record["calendar"]:
        assert "calendar inputs month" in result.stdout


def test_calendar_none_turns_the_default_off_and_a_given_calendar_holds(
    tmp_path: Path, monthly_csv: Path
) -> None:
    base = [*MONTHLY, *HELD_ARGS, *QUICK, "--no-statistical-baselines"]
    off = _run(tmp_path, "train", *base, "--calendar", "none")
    assert off.returncode == 0, off.stderr
    record = _manifest(tmp_path / "repo")["training"]["search"]
    assert record["calendar_tried"] == []
    assert all(c["calendar"] == [] for c in record["candidates"])
    shutil.rmtree(tmp_path / "repo")
    given = _run(tmp_path, "train", *base, "--calendar", "quarter")
    assert given.returncode == 0, given.stderr
    m = _manifest(tmp_path / "repo")
    assert m["time"]["calendar"] == ["quarter"]  # given: not searched
    assert m["training"]["search"]["calendar_tried"] == []
    bad = _run(tmp_path, "train", *base, "--calendar", "none", "month")
    assert bad.returncode == 2
    assert "--calendar none takes no other names" in bad.stderr


def test_calendar_inputs_are_rolled_forward_for_the_multi_step_figures(
    tmp_path: Path, monthly_csv: Path
) -> None:
    args = [*MONTHLY, *HELD_ARGS, *QUICK, "--search-budget", "0", "--calendar", "month"]
    result = _run(tmp_path, "train", *args, "--no-statistical-baselines")
    assert result.returncode == 0, result.stderr
    five = _manifest(tmp_path / "repo")["metrics"]["forecasts"]["horizons"]["5"]
    assert five["seqcast"]["rmse"] < five["persistence"]["rmse"]
