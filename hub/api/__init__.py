"""The hub's HTTP layer."""
