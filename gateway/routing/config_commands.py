"""``check-config``: validate a routing YAML without starting or contacting anything."""

from __future__ import annotations

import argparse
import sys

from gateway.errors import ConfigError
from gateway.routing.config import load_routing_config

EXIT_INVALID = 2


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a routing YAML file",
        description="Validate a routing YAML file, including every route's sink settings, and print every "
        "problem with its line. Connects to nothing and does not read secrets. Exits 0 when the file is "
        f"valid, {EXIT_INVALID} when it is not.",
    )
    check.add_argument("file", metavar="FILE", help="the routing YAML, e.g. config/routes.yaml")
    check.set_defaults(run=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_routing_config(args.file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID

    count = len(config.routes)
    print(f"{args.file}: OK, {count} route{'' if count == 1 else 's'}")
    return 0
