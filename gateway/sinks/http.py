"""The ``http`` sink: POST each event's JSON to a URL.

One pooled aiohttp session per sink. A 2xx status means delivered. A connection error,
a timeout, 408, 429 and 5xx are retriable, with the delay of a ``Retry-After`` header.
Any other status is a permanent failure. Redirects are not followed, because a POST
turned into a GET would lose the event.

Logs and errors show the URL without user info and query string, which often carry
credentials or a token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit
from typing import ClassVar

import aiohttp
import structlog
from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from gateway.routing.config import SecretRef
from gateway.sinks.base import DeliveryFailed, RoutedEvent, SinkContext, SinkSettings

log = structlog.get_logger("gateway.sinks.http")

RETRIABLE_STATUSES = frozenset({408, 429})
# Headers the sink sets itself; the configured extra headers may not replace them.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "x-event-id", "x-event-type"})
# Headers that carry credentials by convention; their values belong in secret_headers.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})


class HttpSettings(SinkSettings):
    url: str
    timeout_s: PositiveFloat = 10.0
    headers: dict[str, str] = Field(default_factory=dict)
    # Headers whose values are secrets, such as Authorization: {env: CRM_TOKEN}.
    secret_headers: dict[str, SecretRef] = Field(default_factory=dict)
    # HMAC-SHA256 of the body with this secret goes into signature_header as sha256=<hex>.
    secret: SecretRef | None = None
    signature_header: str = Field("X-Gateway-Signature", min_length=1)
    max_connections: PositiveInt = 100

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("an absolute http:// or https:// URL such as 'https://crm.example/hooks'")
        return value

    @field_validator("headers", "secret_headers")
    @classmethod
    def _no_reserved_headers(cls, value: dict) -> dict:
        for name in value:
            if name.lower() in RESERVED_HEADERS or name.lower().startswith("ce-"):
                raise ValueError(f"headers other than the ones the sink sets itself ({name!r} is one of those)")
        return value

    @field_validator("headers")
    @classmethod
    def _no_literal_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in CREDENTIAL_HEADERS:
                raise ValueError(
                    f"no credentials in plain headers: move {name!r} to secret_headers as "
                    "{env: NAME} or {file: /path}"
                )
        return value


class HttpSink:
    Settings: ClassVar[type[SinkSettings]] = HttpSettings
    supports_batches: ClassVar[bool] = False

    def __init__(self, settings: HttpSettings, context: SinkContext) -> None:
        self._settings = settings
        self._context = context
        self._shown_url = shown_url(settings.url)
        self._secret: bytes | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        settings = self._settings
        if settings.secret is not None:
            self._secret = settings.secret.resolve().encode()
        headers = {**settings.headers, **{name: ref.resolve() for name, ref in settings.secret_headers.items()}}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_connections),
            timeout=aiohttp.ClientTimeout(total=settings.timeout_s),
            headers=headers,
        )
        log.info("http_sink_started", route=self._context.route, url=self._shown_url, signed=self._secret is not None)

    async def deliver(self, event: RoutedEvent) -> None:
        if self._session is None:
            raise RuntimeError(f"the http sink of route {self._context.route!r} is used before start()")
        headers = self._headers(event)

        try:
            async with self._session.post(
                self._settings.url, data=event.value, headers=headers, allow_redirects=False
            ) as response:
                # Reading the response body returns the connection to the pool.
                await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as error:
            raise DeliveryFailed(
                f"POST {self._shown_url} timed out after {self._settings.timeout_s} s", retriable=True
            ) from error
        except aiohttp.ClientError as error:
            raise DeliveryFailed(f"POST {self._shown_url} failed: {_describe(error)}", retriable=True) from error

        _check_status(status, retry_after, self._shown_url)

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        for event in events:
            await self.deliver(event)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> "HttpSink":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _headers(self, event: RoutedEvent) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Event-Id": event.event_id, "X-Event-Type": event.event_type}
        for name, value in (*event.headers, *event.extra_headers):
            # The HTTP binding of CloudEvents spells the Kafka binding's ce_id as ce-id.
            if name.startswith("ce_"):
                headers["ce-" + name[3:]] = value.decode("utf-8", "replace")
            elif name.lower() != "content-type":
                headers[name] = value.decode("utf-8", "replace")
        if self._secret is not None:
            digest = hmac.new(self._secret, event.value, hashlib.sha256).hexdigest()
            headers[self._settings.signature_header] = "sha256=" + digest
        return headers


def shown_url(url: str) -> str:
    """Return the URL without user info, query string and fragment, which may carry credentials."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _check_status(status: int, retry_after: str | None, display_url: str) -> None:
    if 200 <= status < 300:
        return
    message = f"POST {display_url} returned HTTP {status}"
    if status >= 500 or status in RETRIABLE_STATUSES:
        raise DeliveryFailed(message, retriable=True, retry_after_s=parse_retry_after(retry_after))
    if 300 <= status < 400:
        raise DeliveryFailed(f"{message} (a redirect); configure the final URL instead", retriable=False)
    raise DeliveryFailed(f"{message}; the receiver rejected the event", retriable=False)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (moment - now).total_seconds())


def _describe(error: aiohttp.ClientError) -> str:
    # The text of some aiohttp errors contains the full request URL, query string included.
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or type(error.os_error).__name__})"
    return type(error).__name__
