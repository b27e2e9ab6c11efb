"""Hub: ingest, storage, hot lists, dispatch alerts, retention and access control."""

__version__ = "0.1.0"
