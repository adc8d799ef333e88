"""Webhook signature schemes, verified over the raw request body before any parsing.

Two schemes are supported:

- ``hitl``: HITL.sh's own. The signature header contains the hex HMAC-SHA256 of the body under
  a shared secret, optionally prefixed with ``sha256=``, in either case of hex. An optional
  timestamp header bounds replays.
- ``standard_webhooks``: the Standard Webhooks scheme (https://www.standardwebhooks.com/),
  which signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 and sends
  space-separated ``v1,<base64>`` entries in ``webhook-signature``. Secrets carry a
  ``whsec_`` prefix before their base64 bytes.

Every active secret is tried, so a sender can move to a new secret while the old one is
still accepted. Comparisons run in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from gateway.errors import ConfigError, SignatureRejected


class SignatureVerifier(Protocol):
    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise SignatureRejected unless the body carries a valid signature."""


def sign_hitl(body: bytes, secret: str) -> str:
    """Return the hex signature HITL.sh sends for ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HitlVerifier:
    def __init__(
        self,
        secrets: Sequence[str],
        *,
        header: str = "X-HITL-Signature",
        timestamp_header: str | None = None,
        tolerance_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ConfigError("no webhook secret configured; set HITL_WEBHOOK_SECRETS or signature.secrets_file")
        self._keys = [secret.encode() for secret in secrets]
        self._header = header
        self._timestamp_header = timestamp_header
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        supplied = headers.get(self._header)
        if not supplied:
            raise SignatureRejected(f"missing {self._header} header; sign the raw body with HMAC-SHA256")
        if self._timestamp_header:
            _check_timestamp(headers.get(self._timestamp_header), self._timestamp_header, self._tolerance_s, self._clock)

        supplied = supplied.strip()
        if supplied[:7].lower() == "sha256=":
            supplied = supplied[7:]
        try:
            supplied_digest = bytes.fromhex(supplied)
        except ValueError:
            raise SignatureRejected(f"{self._header} is not a hex HMAC-SHA256 digest") from None

        matched = False
        for key in self._keys:
            expected = hmac.new(key, body, hashlib.sha256).digest()
            # Check every key, not just until the first match, so timing does not reveal
            # which of the rotated secrets is in use.
            matched |= hmac.compare_digest(expected, supplied_digest)
        if not matched:
            raise SignatureRejected(f"{self._header} does not match the body under any configured secret")


class StandardWebhooksVerifier:
    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ConfigError("no webhook secret configured; set HITL_WEBHOOK_SECRETS or signature.secrets_file")
        self._keys = [decode_standard_secret(secret) for secret in secrets]
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        message_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        for name, value in (("webhook-id", message_id), ("webhook-timestamp", timestamp), ("webhook-signature", signatures)):
            if not value:
                raise SignatureRejected(f"missing {name} header required by the Standard Webhooks scheme")
        _check_timestamp(timestamp, "webhook-timestamp", self._tolerance_s, self._clock)

        signed = b"%s.%s.%s" % (message_id.encode(), timestamp.encode(), body)
        expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys]
        matched = False
        for entry in signatures.split():
            version, _, encoded = entry.partition(",")
            if version != "v1":
                continue
            try:
                supplied = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            for digest in expected:
                matched |= hmac.compare_digest(digest, supplied)
        if not matched:
            raise SignatureRejected("webhook-signature has no v1 entry that matches the body under any configured secret")


def decode_standard_secret(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a Standard Webhooks secret must be 'whsec_' followed by base64; "
            "check the secrets in the environment variable or secrets file"
        ) from None


def sign_standard(body: bytes, secret: str, message_id: str, timestamp: int) -> str:
    """Return one ``v1,<base64>`` entry for the Standard Webhooks ``webhook-signature`` header."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(decode_standard_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _check_timestamp(value: str | None, header: str, tolerance_s: float, clock: Callable[[], float]) -> None:
    if not value:
        raise SignatureRejected(f"missing {header} header")
    sent_at = _parse_timestamp(value)
    if sent_at is None:
        raise SignatureRejected(f"{header} is not a Unix timestamp in seconds or an ISO 8601 time")
    skew_s = abs(clock() - sent_at)
    if skew_s > tolerance_s:
        raise SignatureRejected(
            f"{header} is {skew_s:.0f} s away from the gateway's clock, more than the {tolerance_s:.0f} s tolerance"
        )


def _parse_timestamp(value: str) -> float | None:
    value = value.strip()
    try:
        return float(int(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def build_verifier(scheme: str, secrets: Sequence[str], **options) -> SignatureVerifier:
    if scheme == "standard_webhooks":
        return StandardWebhooksVerifier(secrets, tolerance_s=options.get("tolerance_s", 300.0))
    return HitlVerifier(secrets, **options)
