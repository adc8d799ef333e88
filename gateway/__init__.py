"""HITL.sh global webhooks into Apache Kafka, and from Kafka to downstream sinks."""

__version__ = "0.1.0"
