"""Persistence: SQLAlchemy models, the session factory and per-resource repositories."""
