"""``ccserver-admin``: administration without a running daemon."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ccserver import __version__
from ccserver.config import ConfigError, load


def check_config(args: argparse.Namespace) -> int:
    """Validate the configuration file without connecting to anything."""
    config = load(args.config)
    where = config.source or "no configuration file found; built-in defaults"
    store = f"MongoDB ({config.mongo.db})" if config.mongo else f"embedded ({config.embedded.path})"
    nodes = ", ".join(n.name for n in config.docker.nodes)
    print(f"{where}: OK; store: {store}; Docker nodes: {nodes}")
    for section in config.ignored_sections:
        print(f"note: [{section}] is accepted and ignored by ccserver")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccserver-admin", description="Administer ccserver.")
    parser.add_argument("--version", action="version", version=f"ccserver {__version__}")
    parser.add_argument("--config", "-c", metavar="PATH", help="config.toml (default: as twistd ccserver)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check-config", help="validate the configuration file and exit")
    check.set_defaults(func=check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"ccserver-admin: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
