"""Oomnitza Connector: sync records from IT systems into Oomnitza."""

__version__ = "3.0.0"
