"""`python -m training train|compare|evaluate ...`: the training commands without the service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.cli import register_compare, register_evaluate, register_train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Train, compare and evaluate seqcast forecasters."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_train(sub)
    register_compare(sub)
    register_evaluate(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
