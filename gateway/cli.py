"""The ``hitl-gateway`` command line.

Each group of commands lives beside the code it drives and registers itself here through
an ``add_commands(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway import __version__
from gateway.errors import ConfigError

COMMAND_MODULES = ("gateway.ingress_commands", "gateway.routing.commands", "gateway.routing.config_commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hitl-gateway",
        description="Receive signed HITL.sh webhooks into Apache Kafka and route them to downstream systems.",
    )
    parser.add_argument("--version", action="version", version=f"hitl-gateway {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ConfigError as error:
        print(f"hitl-gateway: configuration error:\n{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
