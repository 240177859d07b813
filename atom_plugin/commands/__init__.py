"""Subcommands of ``atom-ood``: each module has ``add_parser(subparsers)``; the parser
it registers sets ``run=<callable(args) -> int>`` through ``set_defaults``."""
