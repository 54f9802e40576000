"""The `seqcast` command line: `seqcast serve` here, other subcommands by entry point.

Subcommands that need more than the serving install (``train``, ``compare``) live
with their own package and are found through the ``seqcast.commands`` entry-point
group, so this module never imports torch or the training code by name.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

_GROUP = "seqcast.commands"
_Subparsers = Any  # argparse's _SubParsersAction is private


def _register_serve(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the model repository over HTTP",
        description=(
            "Serve every model in the model repository. Options given here override "
            "the SEQCAST_ environment settings (see the README's settings table)."
        ),
    )
    p.add_argument("--host", help="interface to bind (SEQCAST_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (SEQCAST_PORT, default 8000)")
    p.add_argument("--model-dir", help="model repository (SEQCAST_MODEL_DIR, default ./models)")
    p.add_argument("--workers", type=int, help="worker processes (SEQCAST_WORKERS, default 1)")
    p.add_argument("--log-level", help="logging level (SEQCAST_LOG_LEVEL, default info)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from service.server import run

    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "model_dir": args.model_dir,
            "workers": args.workers,
            "log_level": args.log_level,
        }.items()
        if v is not None
    }
    return run(overrides)


def _plugin_commands() -> list[tuple[str, Callable[[_Subparsers], None] | None, str]]:
    """(name, register function or None, why it is unavailable) for each entry point."""
    found: list[tuple[str, Callable[[_Subparsers], None] | None, str]] = []
    for ep in entry_points(group=_GROUP):
        try:
            found.append((ep.name, ep.load(), ""))
        except ImportError as exc:
            # The training extra is not installed: say how to get the command.
            found.append((ep.name, None, f"{exc}; install it with: pip install 'seqcast[train]'"))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqcast",
        description="Train recurrent forecasters and serve them, state included, on ONNX Runtime.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_serve(subparsers)
    for name, register, why in _plugin_commands():
        if register is not None:
            register(subparsers)
        else:
            p = subparsers.add_parser(name, help=f"(unavailable: {why})", add_help=False)
            p.set_defaults(func=lambda _args, _why=why, _name=name: _unavailable(_name, _why))
    return parser


def _unavailable(name: str, why: str) -> int:
    print(f"seqcast {name}: unavailable: {why}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
