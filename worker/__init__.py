"""lowbit's Celery workers: the only package that joins core (the engine) and service (DB, storage)."""
