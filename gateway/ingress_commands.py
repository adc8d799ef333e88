"""``serve`` and ``send-test``: run the ingress, and send it a signed sample event."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from gateway.errors import ConfigError, UnavailableError
from gateway.logs import configure_logging
from gateway.samples import EVENT_TYPES, new_object_id, sample_body
from gateway.settings import DEFAULT_CONFIG_PATH, load_settings, load_webhook_secrets
from gateway.signatures import sign_hitl, sign_standard


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the webhook ingress",
        description="Receive signed webhooks and produce them into Kafka. Needs at least one webhook secret "
        "in HITL_WEBHOOK_SECRETS (comma-separated) or in the file named by signature.secrets_file.",
    )
    serve.add_argument(
        "--config",
        default=None,
        help=f"gateway YAML file (default: $GATEWAY_CONFIG, else built-in defaults; example: {DEFAULT_CONFIG_PATH})",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes sharing the port (default: serve.workers or GATEWAY_WORKERS, else one per core "
        "with dedup.backend redis and 1 with the in-memory store; more than 1 needs Redis)",
    )
    serve.add_argument("--log-format", choices=["auto", "json", "console"], help="log format (default: logging.format)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log level (default: logging.level)")
    serve.set_defaults(run=run_serve)

    send = subparsers.add_parser(
        "send-test",
        help="sign a sample event and send it to a gateway",
        description="Sign a sample HITL.sh event (or the exact bytes of --file) and POST it. Prints the "
        "response body on standard output and the HTTP status on standard error; exits 0 on a 2xx status.",
    )
    send.add_argument("--url", required=True, help="the gateway's webhook URL, e.g. http://127.0.0.1:8080/webhooks/hitl")
    send.add_argument("--secret", required=True, help="the shared webhook secret to sign with")
    send.add_argument("--event", default="request.completed", help=f"event type of the sample body (one of: {', '.join(EVENT_TYPES)})")
    send.add_argument("--file", type=Path, help="send this file's bytes as the body instead of a sample")
    send.add_argument("--loop-id", help="loop id for the sample body (default: a new random id)")
    send.add_argument(
        "--scheme", choices=["hitl", "standard_webhooks"], default="hitl", help="signature scheme (default: hitl)"
    )
    send.add_argument("--timeout-s", type=float, default=30.0, help="seconds to wait for the response (default: 30)")
    send.set_defaults(run=run_send_test)


def run_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    logging_overrides = {"format": args.log_format, "level": args.log_level}
    logging_overrides = {key: value for key, value in logging_overrides.items() if value}
    if logging_overrides:
        settings = settings.model_copy(update={"logging": settings.logging.model_copy(update=logging_overrides)})
    configure_logging(format=settings.logging.format, level=settings.logging.level, access_log=settings.http.access_log)
    secrets = load_webhook_secrets(settings.signature)
    if not secrets:
        raise ConfigError(
            f"no webhook secret configured: set {settings.signature.secrets_env} (comma-separated, several for rotation) "
            f"or signature.secrets_file; for local development use `make run`, which generates one"
        )

    from gateway.app import warn_without_speedups
    from gateway.workers import Supervisor, reserve_port, resolve_worker_count

    workers = resolve_worker_count(settings, args.workers)
    warn_without_speedups()
    if workers > 1:
        return Supervisor(settings, secrets, workers).run()

    import uvloop

    from gateway.app import serve

    # Bound before anything starts, so a port in use is a one-line error, not a
    # traceback after the producer already connected.
    sock, _address = reserve_port(settings.http.host, settings.http.port, reuse_port=False)
    try:
        uvloop.run(serve(settings, secrets, sock=sock))
    except UnavailableError as error:
        print(f"hitl-gateway serve: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def run_send_test(args: argparse.Namespace) -> int:
    if args.file:
        try:
            body = args.file.read_bytes()
        except OSError as error:
            print(f"send-test: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return 2
    else:
        body = sample_body(args.event, loop_id=args.loop_id)

    headers = {"Content-Type": "application/json"}
    if args.scheme == "hitl":
        headers["X-HITL-Signature"] = "sha256=" + sign_hitl(body, args.secret)
    else:
        message_id, timestamp = "msg_" + new_object_id(), int(time.time())
        headers.update(
            {
                "webhook-id": message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_standard(body, args.secret, message_id, timestamp),
            }
        )
    return asyncio.run(_post(args.url, body, headers, args.timeout_s))


async def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.post(url, data=body, headers=headers) as response:
                text = await response.text()
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        print(f"send-test: request to {url} failed: {error or type(error).__name__}; is the gateway running?", file=sys.stderr)
        return 1

    print(f"HTTP {status}", file=sys.stderr)
    try:
        print(text.strip(), flush=True)
    except BrokenPipeError:
        # The reader (such as `head`) went away; what it did not read is not an error.
        # Pointing stdout at /dev/null keeps the interpreter's final flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if 200 <= status < 300 else 1
