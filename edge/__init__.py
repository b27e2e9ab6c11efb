"""Edge node: capture, plate recognition, tracking, spool and uplink."""

__version__ = "0.1.0"
