"""Pydantic request/response models of the API (also read by workers: job specs, statuses)."""
