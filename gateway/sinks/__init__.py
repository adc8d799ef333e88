"""Sinks: where routing consumers deliver events.

Built-in sinks and those of other packages are found through the entry-point group
``hitl_gateway.sinks``; see ``gateway.sinks.base`` for the interface a sink implements.
"""
