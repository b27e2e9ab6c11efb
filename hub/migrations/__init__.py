"""Alembic migrations for the hub database (run them with ``hub.db.upgrade``)."""
