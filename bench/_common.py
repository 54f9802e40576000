"""What both benchmarks need: free ports, the model to serve, process stop and CPU time."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "sine-lstm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pick_model(workdir: Path) -> tuple[Path, str]:
    """(model repository, name): the shipped sine-lstm, else a tiny LSTM exported here."""
    repo = workdir / "models"
    versions = (
        [p for p in DEFAULT_MODEL.iterdir() if p.name.isdigit()] if DEFAULT_MODEL.is_dir() else []
    )
    if versions:
        latest = max(versions, key=lambda p: int(p.name))
        shutil.copytree(latest, repo / "sine-lstm" / latest.name)
        return repo, "sine-lstm"
    sys.path.insert(0, str(ROOT))
    from tests.modelkit import write_model

    write_model(repo, "bench-lstm", "lstm", hidden=32, layers=1)
    return repo, "bench-lstm"


def checkout(rev: str, into: Path, stack: ExitStack) -> Path:
    """A git worktree of this repository at `rev` in `into`, removed when `stack` closes:
    an earlier seqcast to run beside this one in the same benchmark run."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), rev],
        check=True, capture_output=True,
    )  # fmt: skip
    stack.callback(
        subprocess.run,
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(into)],
        check=False,
    )
    return into


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (robust to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
