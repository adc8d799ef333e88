"""``check-config``: validate a routing or gateway YAML without starting or contacting anything."""

from __future__ import annotations

import argparse
import sys

from gateway.errors import ConfigError
from gateway.routing.config import load_routing_config
from gateway.settings import GatewaySettings, load_settings
from gateway.yamlsource import load_yaml

EXIT_INVALID = 2


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a routing or gateway YAML file",
        description="Validate a routing YAML file (including every route's sink settings) or a gateway YAML "
        "file, and print every problem with its line. Connects to nothing, reads no secrets and ignores "
        f"environment overrides. Exits 0 when the file is valid, {EXIT_INVALID} when it is not.",
    )
    check.add_argument("file", metavar="FILE", help="the YAML file, e.g. config/routes.yaml or config/gateway.yaml")
    check.add_argument(
        "--kind",
        choices=["auto", "routes", "gateway"],
        default="auto",
        help="what the file configures (default: auto, a gateway file when it has no 'routes' key "
        "and only gateway sections)",
    )
    check.set_defaults(run=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    try:
        kind = args.kind if args.kind != "auto" else guess_kind(args.file)
        if kind == "gateway":
            load_settings(args.file, environ={})
            print(f"{args.file}: OK, gateway configuration")
            return 0
        config = load_routing_config(args.file, environ={})
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID

    count = len(config.routes)
    print(f"{args.file}: OK, {count} route{'' if count == 1 else 's'}")
    return 0


def guess_kind(path: str) -> str:
    data, _ = load_yaml(path)
    if isinstance(data, dict) and data and "routes" not in data and set(data) <= set(GatewaySettings.model_fields):
        return "gateway"
    return "routes"
