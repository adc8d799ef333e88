"""Routing consumers: read the family topics and deliver matching events to sinks.

``gateway.routing.config`` reads the routing YAML; ``match`` and ``transform`` hold a
route's selection and reshaping; the sinks live in ``gateway.sinks``.
"""
