"""The training commands as a user runs them: `python -m training ...` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        ("t,value\n" + _good_rows(12), [], "has 12 rows; window 10"),
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
    result = _run(tmp_path, "train", *args)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "repo" / "data-lstm" / "1" / "manifest.json").read_text())
    assert manifest["training"]["dataset"]["rows"] == 102
    assert manifest["training"]["config"]["cell"] == "lstm"
    assert "noiseless" not in manifest["metrics"]["test"]


def test_train_twice_writes_two_versions_and_evaluate_reads_them(tmp_path: Path) -> None:
    for expected in ("1", "2"):
        result = _run(tmp_path, "train", "--cell", "rnn", "--name", "s", *TINY, "--out", "repo")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"repo/s/{expected}: streaming RMSE ")
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
    assert "report: rep/README.md; 2 models in" in result.stdout


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
