"""The training commands as a user runs them: `python -m training ...` in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TINY = ["--hidden-size", "4", "--window", "10", "--burn-in", "2", "--epochs", "2", "--no-progress"]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _good_rows(n: int) -> str:
    return "".join(f"{i},{(i * 7) % 11 - 5}\n" for i in range(n))


@pytest.mark.parametrize(
    ("csv_text", "extra", "reason"),
    [
        (
            "t,value\n" + _good_rows(100),
            ["--features", "nope"],
            "column(s) 'nope' not in the header",
        ),
        (
            "t,value\n0,1\n1,nan\n" + _good_rows(100),
            [],
            "missing values in column 'value' on line(s) 3",
        ),
        (
            "t,value\n0,1\n1,\n" + _good_rows(100),
            [],
            "missing values in column 'value' on line(s) 3",
        ),
        ("t,value\n0,1\n1,abc\n" + _good_rows(100), [], "non-numeric value 'abc' on line 3"),
        (
            "t,value\n" + _good_rows(12),
            [],
            "has 12 rows, split as train 8, validation 2, test 2; window 10 needs at least 11 "
            "training rows: the largest window that fits is 7",
        ),
    ],
    ids=["missing-column", "nan", "empty-cell", "text", "too-short"],
)
def test_bad_csv_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, csv_text: str, extra: list[str], reason: str
) -> None:
    (tmp_path / "data.csv").write_text(csv_text)
    features = [] if "--features" in extra else ["--features", "value"]
    result = _run(tmp_path, "train", "--csv", "data.csv", *features, *extra, *TINY, "--out", "repo")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqcast train: error: ")
    assert reason in lines[0]
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_bad_option_value_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, "compare", *TINY, "--burn-in", "10", "--out", "repo")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "seqcast compare: error: burn_in must be in [0, window), got 10"
    )
    assert list(tmp_path.iterdir()) == []


def test_fill_option_lets_gaps_through(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("t,value\n0,1\n1,\n" + _good_rows(100))
    args = ["--csv", "data.csv", "--features", "value", "--fill", "ffill", *TINY, "--out", "repo"]
    args += ["--search-budget", "0"]
    result = _run(tmp_path, "train", *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "repo" / "data-lstm" / "1" / "manifest.json").read_text())
    assert manifest["training"]["dataset"]["rows"] == 102
    assert manifest["training"]["config"]["cell"] == "lstm"
    assert "noiseless" not in manifest["metrics"]["test"]


def test_train_twice_writes_two_versions_and_evaluate_reads_them(tmp_path: Path) -> None:
    for expected in ("1", "2"):
        args = ["--cell", "rnn", "--name", "s", *TINY, "--out", "repo", "--search-budget", "0"]
        result = _run(tmp_path, "train", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"repo/s/{expected}: rnn, window 10; split train 640, ")
    v1 = tmp_path / "repo" / "s" / "1"
    m1 = json.loads((v1 / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "repo" / "s" / "2" / "manifest.json").read_text())
    assert m1["metrics"] == m2["metrics"]  # same seed, same data: the same model
    assert m1["onnx"]["sha256"] == m2["onnx"]["sha256"]
    assert sorted(p.name for p in (v1 / "report").iterdir()) == [
        "README.md",
        "errors.png",
        "forecast.png",
        "loss.png",
        "metrics.json",
        "scatter.png",
    ]
    result = _run(tmp_path, "evaluate", str(v1), "--noise-seed", "42", "43", "--json")
    assert result.returncode == 0, result.stderr
    same, other = json.loads(result.stdout)
    assert same["difference"] == pytest.approx(0.0, abs=1e-5)  # ONNX reproduces the manifest
    assert same["test"]["streaming"]["rmse"] == pytest.approx(
        m1["metrics"]["test"]["streaming"]["rmse"], abs=1e-5
    )
    assert other["noise_seed"] == 43
    assert other["test"]["noiseless"]["rmse"] != same["test"]["noiseless"]["rmse"]


def test_compare_writes_models_and_report(tmp_path: Path) -> None:
    args = ["--cells", "rnn", "gru", "--name-prefix", "t", "--report-dir", "rep"]
    result = _run(tmp_path, "compare", *args, *TINY, "--out", "repo")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["t-gru", "t-rnn"]
    report = tmp_path / "rep"
    metrics = json.loads((report / "metrics.json").read_text())
    assert sorted(metrics) == ["t-gru/1", "t-rnn/1"]
    assert metrics["t-rnn/1"]["cell"] == "rnn"
    assert len(metrics["t-rnn/1"]["loss"]["train"]) == metrics["t-rnn/1"]["epochs"]
    summary = (report / "README.md").read_text()
    for png in ("loss.png", "forecast.png", "errors.png", "scatter.png"):
        assert f"]({png})" in summary
        size = (report / png).stat().st_size
        assert 1_000 < size < 150_000
    assert "| t-gru/1 |" in summary
    assert "report: rep/README.md; 2 of 2 models written, total " in result.stdout
    assert result.stdout.count("time: fit ") == 2
    assert "| fit s | total s |" in summary
    assert metrics["t-rnn/1"]["total_seconds"] >= metrics["t-rnn/1"]["fit_seconds"] > 0


def test_help_explains_every_option(tmp_path: Path) -> None:
    for command in ("train", "compare", "evaluate"):
        result = _run(tmp_path, command, "--help")
        assert result.returncode == 0
        options = [w for w in result.stdout.split() if w.startswith("--") and w != "--help"]
        assert options, command
    text = _run(tmp_path, "train", "--help").stdout
    for option in (
        "--csv",
        "--features",
        "--targets",
        "--fill",
        "--cell",
        "--hidden-size",
        "--window",
        "--lr",
        "--epochs",
        "--patience",
        "--device",
        "--out",
        "--name",
    ):
        assert option in text


def test_cuda_without_a_gpu_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _run(tmp_path, "train", "--device", "cuda", *TINY, "--out", "repo")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "seqcast train: error: device cuda requested but torch sees no CUDA device"
    )
    assert list(tmp_path.iterdir()) == []


# The real series: no --window, so the default must adapt to 100 rows.
NILE = ["--csv", "nile.csv", "--features", "volume", "--time-column", "year"]
# No search: these tests are about the split, the window and the refit of one model.
SMALL = [
    "--hidden-size",
    "4",
    "--epochs",
    "3",
    "--no-progress",
    "--out",
    "repo",
    "--search-budget",
    "0",
]


def _manifest(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    return result


def test_short_real_series_trains_with_defaults_and_a_test_start(
    tmp_path: Path, nile_csv: Path
) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    result = _run(tmp_path, "train", *NILE, "--test-start", "1951", *SMALL)
    assert result.returncode == 0, result.stderr
    m = _manifest(tmp_path / "repo" / "nile-lstm" / "1")
    t = m["training"]
    # 100 rows: test from 1951 (20), validation 20 % of the 80 before (16), training 64.
    assert t["split"] == {
        "train": 64,
        "validation": 16,
        "test": 20,
        "time_column": "year",
        "test_starts_at": "1951",
    }
    assert (m["window"], t["config"]["burn_in"], t["config"]["test_rows"]) == (21, 2, 20)
    assert t["refit"]["rows"] == 80
    assert t["refit"]["epochs"] == t["best_epoch"]
    assert set(m["metrics"]["validation"]) == {"streaming", "windowed", "persistence"}
    lines = result.stdout.splitlines()
    assert lines[0] == "repo/nile-lstm/1: lstm, window 21; split train 64, validation 16, test 20"
    assert lines[1].startswith("  validation streaming RMSE ")
    assert lines[2].startswith("  test       streaming RMSE ")
    # Original units: the figures are those of the manifest, in the series' own units.
    rmse = m["metrics"]["test"]["streaming"]["rmse"]
    assert f"streaming RMSE {rmse:.4g}," in lines[2]
    assert rmse > 50  # the Nile's flow is in 10^8 m^3, hundreds to a thousand
    assert "(volume, original units)" in lines[2]
    assert f"refit on training + validation (80 rows) for {t['best_epoch']} epochs" in lines[3]


def test_a_window_that_does_not_fit_names_the_largest_that_does(
    tmp_path: Path, nile_csv: Path
) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    # Untransformed: the auto transform would difference the Nile (one row fewer).
    result = _run(tmp_path, "train", *NILE, "--window", "90", "--transform", "none", *SMALL)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "seqcast train: error: nile.csv has 100 rows, split as train 64, validation 16, "
        "test 20; window 90 needs at least 91 training rows: the largest window that fits is 63"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nile.csv"]
    # The largest window then trains, and its burn-in follows from it without being asked.
    result = _run(
        tmp_path, "train", *NILE, "--window", "63", "--transform", "none", "--no-refit", *SMALL
    )
    assert result.returncode == 0, result.stderr
    m = _manifest(tmp_path / "repo" / "nile-lstm" / "1")
    assert (m["window"], m["training"]["config"]["burn_in"]) == (63, 6)
    assert m["training"]["refit"] is None
    assert "; no refit" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--patience", "0"], "patience must be at least 1, got 0 (--no-early-stopping"),
        (["--patience", "-1"], "patience must be at least 1, got -1"),
        (["--lr", "0.001", "--lr-min", "0.01"], "lr_min must be in [0, lr] = [0, 0.001], got 0.01"),
        (["--test-rows", "0"], "test_rows must be at least 1, got 0"),
        (["--csv", "x.csv", "--features", "v", "--test-start", "1951"], "needs --time-column"),
        (["--test-rows", "5", "--csv", "x.csv", "--features", "v", "--time-column", "t",
          "--test-start", "3"], "give --test-start or --test-rows, not both"),
    ],
    ids=["patience-0", "patience-negative", "lr-min-above-lr", "test-rows-0", "test-start-alone",
         "test-start-and-rows"],
)  # fmt: skip
def test_misleading_options_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = _run(tmp_path, "train", *TINY, *args, "--out", "repo")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqcast train: error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_no_early_stopping_runs_every_epoch(tmp_path: Path) -> None:
    args = ["--patience", "1", "--lr", "0.05", "--lr-min", "0.05", "--no-early-stopping"]
    args += ["--search-budget", "0"]
    result = _run(tmp_path, "train", "--cell", "rnn", *TINY, "--epochs", "4", *args, "--out", "r")
    assert result.returncode == 0, result.stderr
    t = _manifest(tmp_path / "r" / "sine-rnn" / "1")["training"]
    assert (t["epochs"], t["best_epoch"], t["refit"]["epochs"]) == (4, 4, 4)
    assert t["config"]["early_stopping"] is False
    assert "4 epochs, no early stopping" in result.stdout


def test_evaluate_rescores_a_csv_model_in_original_units(tmp_path: Path, nile_csv: Path) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    result = _run(tmp_path, "train", *NILE, "--test-rows", "20", "--cell", "gru", *SMALL)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "repo" / "nile-gru" / "1"
    m = _manifest(model)

    result = _run(tmp_path, "evaluate", str(model), "--csv", "nile.csv", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["test_rows"] == {"count": 20, "first_line": 82, "last_line": 101}
    for way, block in m["metrics"]["test"].items():  # ONNX reproduces the training figures
        for metric, value in block.items():
            assert got["test"][way][metric] == pytest.approx(value, rel=1e-5), (way, metric)
    assert got["manifest_test"] == m["metrics"]["test"]

    args = ["--csv", "nile.csv", "--time-column", "year", "--test-rows", "30"]
    result = _run(tmp_path, "evaluate", str(model), *args)
    assert result.returncode == 0, result.stderr
    head, test, windowed = result.stdout.splitlines()
    assert (
        head == f"{model} on nile.csv: test = the last 30 of 100 rows (lines 72-101, 1941 to 1970)"
    )
    assert test.startswith("  test       streaming RMSE ")
    assert test.endswith("(volume, original units)")
    assert windowed.startswith("  windowed RMSE ")

    args = ["--csv", "nile.csv", "--time-column", "year", "--test-start", "1961", "--json"]
    result = _run(tmp_path, "evaluate", str(model), *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["test_rows"] == {
        "count": 10,
        "first_line": 92,
        "last_line": 101,
        "first_time": "1961",
        "last_time": "1970",
    }

    result = _run(tmp_path, "evaluate", str(model), "--csv", "nile.csv", "--test-rows", "90")
    assert result.returncode == 2
    assert "windowed evaluation needs 21 (at most 79 test rows)" in result.stderr


@pytest.fixture(scope="module")
def nile_model(tmp_path_factory: pytest.TempPathFactory, nile_csv: Path) -> Path:
    """A quick model of the Nile series (one epoch), for evaluate's refusals."""
    cwd = tmp_path_factory.mktemp("nile-model")
    shutil.copy(nile_csv, cwd / "nile.csv")
    result = _run(cwd, "train", *NILE, "--cell", "rnn", "--epochs", "1", *SMALL)
    assert result.returncode == 0, result.stderr
    return cwd / "repo" / "nile-rnn" / "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "was trained on 'nile.csv', not on the synthetic series: give that data with --csv"),
        (["--csv", "other.csv"], "column(s) 'volume' not in the header of other.csv"),
        (["--csv", "nile.csv", "--noise-seed", "3"], "--noise-seed applies to the synthetic"),
        (["--csv", "absent.csv"], "cannot read absent.csv"),
    ],
    ids=["no-csv", "other-columns", "noise-seed", "no-file"],
)
def test_evaluate_explains_what_it_needs(
    tmp_path: Path, nile_csv: Path, nile_model: Path, args: list[str], message: str
) -> None:
    shutil.copy(nile_csv, tmp_path / "nile.csv")
    (tmp_path / "other.csv").write_text("t,value\n" + _good_rows(50))
    result = _run(tmp_path, "evaluate", str(nile_model), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqcast evaluate: error: ")
    assert message in lines[0]


def test_evaluate_refuses_a_model_whose_file_changed(tmp_path: Path, nile_model: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(nile_model, copy)
    (copy / "model.onnx").write_bytes(b"not the model")
    result = _run(tmp_path, "evaluate", str(copy), "--csv", "nile.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"seqcast evaluate: error: {copy}/model.onnx does not match the sha256 in its manifest"
    )


def test_compare_goes_on_after_a_failed_export_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deliberately wrong LSTM export: the real check refuses it, the other cells go on."""
    from tests.training.test_onnx_export import perturbed
    from training import onnx_export
    from training.__main__ import main

    real_export = onnx_export.export_onnx

    def export(model: Any) -> bytes:
        blob = real_export(model)
        return blob if model.cell != "lstm" else perturbed(blob)

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.chdir(tmp_path)
    args = ["--name-prefix", "t", "--report-dir", "rep", "--out", "repo"]
    status = main(["compare", *args, *TINY])
    out = capsys.readouterr()
    assert status == 8 + 2  # COMPARE_FAILED + the LSTM's bit
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["t-gru", "t-rnn"]
    assert "seqcast compare: error: ONNX export check failed, t-lstm not written: " in out.err
    assert "report: rep/README.md; 2 of 3 models written" in out.out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert sorted(metrics) == ["failed", "t-gru/1", "t-rnn/1"]
    assert "max abs error" in metrics["failed"]["t-lstm"]
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "## Not written: the ONNX export check failed" in readme
    assert "- `t-lstm`: " in readme
