"""Errors raised by the gateway.

    GatewayError
    ├── ConfigError                 the configuration is invalid; fix the file or variable it names
    ├── RequestError                the sender's request is bad; retrying it unchanged cannot help
    │   ├── BodyTooLarge            413
    │   ├── SignatureRejected       401
    │   └── InvalidEvent            400
    └── UnavailableError            our side or a remote system failed; a retry later can succeed
        ├── BrokerUnavailable       Kafka did not acknowledge the record in time
        └── DedupUnavailable        the deduplication store cannot answer

aiokafka, redis and asyncpg errors are converted into these at the boundary, with the
original kept as ``__cause__``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""

    retriable = False


class ConfigError(GatewayError):
    """Raised when a configuration file or environment variable is invalid."""


class RequestError(GatewayError):
    """Raised when an incoming webhook request is rejected."""

    status = 400
    reason = "invalid_request"


class BodyTooLarge(RequestError):
    status = 413
    reason = "body_too_large"


class SignatureRejected(RequestError):
    status = 401
    reason = "invalid_signature"


class InvalidEvent(RequestError):
    status = 400
    reason = "invalid_event"


class UnavailableError(GatewayError):
    """Raised when the event could not be accepted now; the sender should retry later."""

    retriable = True
    status = 503
    reason = "unavailable"


class BrokerUnavailable(UnavailableError):
    reason = "broker_unavailable"


class DedupUnavailable(UnavailableError):
    reason = "dedup_unavailable"
