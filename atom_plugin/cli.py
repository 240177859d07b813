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
COMMANDS = {"demo": "demo", "train": "train", "eval": "evaluate", "attack": "attack", "bench": "bench"}


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
    except (ValueError, TypeError, OSError, ImportError) as err:
        # Input errors (bad options, unreadable or unsafe files, a missing optional package)
        # are reported as one sentence, not a traceback.
        msg = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in msg:
            msg = f"{err.filename}: {msg}"
        print(f"atom-ood {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"atom-ood {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
