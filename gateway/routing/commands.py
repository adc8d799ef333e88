"""``route``, ``replay`` and ``dlq redrive``: run the router, and send stored events through a route again."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging

DEFAULT_ROUTES_PATH = "config/routes.yaml"
DEFAULT_METRICS_PORT = 9464

log = structlog.get_logger("gateway.routing.commands")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_route(subparsers)
    _add_replay(subparsers)
    _add_dlq(subparsers)


def _add_route(subparsers: argparse._SubParsersAction) -> None:
    route = subparsers.add_parser(
        "route",
        help="run the routing consumer",
        description="Read the family topics as one consumer group and deliver each event to every matching route. "
        "Reloads the routing file when it changes and on SIGHUP; stops gracefully on SIGTERM or SIGINT.",
    )
    _add_config_argument(route)
    route.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics and /healthz (default: 127.0.0.1)")
    route.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"port of /metrics and /healthz (default: {DEFAULT_METRICS_PORT}; 0 picks a free one)",
    )
    route.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=15.0,
        help="on SIGTERM, how long deliveries in flight may take before they are left for the next start (default: 15)",
    )
    route.add_argument("--reload-interval-s", type=float, default=1.0, help="how often to check the routing file for changes (default: 1)")
    _add_logging_arguments(route)
    route.set_defaults(run=run_route)


def _add_replay(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="deliver stored events through one route again",
        description="Read the family topics from --since (to --until, else to their end when the command "
        "started) and deliver the events the route matches, with its transform, sink and retries. "
        "Uses no consumer group, so the running router is not disturbed.",
    )
    _add_config_argument(replay)
    replay.add_argument("--route", required=True, help="name of the route in the routing file")
    replay.add_argument("--since", required=True, help="start time: ISO 8601 (2025-01-31T12:00:00Z) or Unix seconds")
    replay.add_argument("--until", help="end time, same forms (default: the end of the topics at start)")
    _add_logging_arguments(replay)
    replay.set_defaults(run=run_replay)


def _add_dlq(subparsers: argparse._SubParsersAction) -> None:
    dlq = subparsers.add_parser("dlq", help="work with the dead-letter topics", description="Work with the dead-letter topics.")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    redrive = actions.add_parser(
        "redrive",
        help="deliver a route's parked events again",
        description="Read the dead-letter topics up to their end when the command started and send the events "
        "parked by --route through that route again. An event that fails again follows the route's on_failure.",
    )
    _add_config_argument(redrive)
    redrive.add_argument("--route", required=True, help="name of the route whose parked events to redrive")
    redrive.add_argument("--since", help="only events parked at or after this time: ISO 8601 or Unix seconds")
    _add_logging_arguments(redrive)
    redrive.set_defaults(run=run_redrive)


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_ROUTES_PATH, help=f"routing YAML file (default: {DEFAULT_ROUTES_PATH})")


def _add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto", help="log format (default: auto)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info", help="log level (default: info)")


def run_route(args: argparse.Namespace) -> int:
    from gateway.routing.config import load_routing_config

    config = load_routing_config(args.config)
    configure_logging(format=args.log_format, level=args.log_level)

    import uvloop

    return uvloop.run(_route(args, config))


async def _route(args: argparse.Namespace, config) -> int:
    from gateway.routing.consumer import Router, RouterOptions
    from gateway.routing.metrics import MetricsServer, RouterMetrics
    from gateway.routing.reload import ConfigWatcher

    metrics = RouterMetrics()
    router = Router(config, metrics=metrics, options=RouterOptions(shutdown_timeout_s=args.shutdown_timeout_s))
    server = MetricsServer(metrics, args.metrics_host, args.metrics_port, lambda: router.healthy)
    watcher = ConfigWatcher(Path(args.config), router.apply_config, metrics, interval_s=args.reload_interval_s)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, watcher.request_reload)

    try:
        await server.start()
        await router.start()
        await watcher.start()
        return await _until_stopped(router, stop_requested)
    except ConfigError:
        raise
    except GatewayError as error:
        print(f"hitl-gateway route: {error}", file=sys.stderr)
        return 1
    finally:
        await watcher.stop()
        await router.stop()
        await server.stop()


async def _until_stopped(router, stop_requested: asyncio.Event) -> int:
    stop_wait = asyncio.create_task(stop_requested.wait())
    failure_wait = asyncio.create_task(router.wait_failed())
    done, pending = await asyncio.wait([stop_wait, failure_wait], return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if failure_wait in done:
        log.error("router_failed", reason=repr(failure_wait.result()))
        return 1
    log.info("stop_requested")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from gateway.routing.config import load_routing_config
    from gateway.routing.replay import parse_timestamp, replay

    config = load_routing_config(args.config)
    since = parse_timestamp(args.since)
    until = parse_timestamp(args.until) if args.until else None
    configure_logging(format=args.log_format, level=args.log_level)
    return _run_pass(replay(config, args.route, since, until), f"replay of route {args.route}", "replay")


def run_redrive(args: argparse.Namespace) -> int:
    from gateway.routing.config import load_routing_config
    from gateway.routing.dlq import redrive
    from gateway.routing.replay import parse_timestamp

    config = load_routing_config(args.config)
    since = parse_timestamp(args.since) if args.since else None
    configure_logging(format=args.log_format, level=args.log_level)
    return _run_pass(redrive(config, args.route, since), f"redrive of route {args.route}", "dlq redrive")


def _run_pass(work, title: str, command: str) -> int:
    """Run a replay or redrive and print its counts; a configuration error propagates (exit 2)."""
    try:
        report = asyncio.run(work)
    except ConfigError:
        raise
    except GatewayError as error:
        print(f"hitl-gateway {command}: {error}", file=sys.stderr)
        return 1
    print(report.summary(title))
    return 0
