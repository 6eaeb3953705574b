"""Embedded one-machine mode: ``lowbit serve`` runs the API, a worker, the relay and beat as supervised
child processes on SQLite, a local object directory and the filesystem broker (same code as the
distributed mode; only the settings differ)."""
