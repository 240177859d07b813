"""``atom-ood``: the command-line entry point.

Each subcommand lives in its own module under :mod:`atom_plugin.commands` and exposes
``add_parser(subparsers)`` (registers its options) and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__

#: subcommand name -> module under atom_plugin.commands
COMMANDS = {"demo": "demo", "train": "train", "eval": "evaluate", "attack": "attack"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atom-ood",
        description="Robust out-of-distribution detection: train (ATOM, NTOM, OE, ...), attack and evaluate OOD detectors.",
    )
    parser.add_argument("--version", action="version", version=f"atom_plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"atom_plugin.commands.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Input errors are reported as one sentence, not a traceback.
        print(f"atom-ood {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
