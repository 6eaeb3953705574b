"""Prometheus view of the job-status cache (service.db.status_cache): hits, misses, listener state.

A collector reads the cache's plain counters at scrape time, so the request path pays no metric calls.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.db.status_cache import JobStatusCache


class StatusCacheCollector(Collector):
    def __init__(self, cache: JobStatusCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        c = self.cache
        yield CounterMetricFamily(
            "lowbit_job_status_cache_hits", "Job-status reads answered from the cache", value=c.hits
        )
        yield CounterMetricFamily(
            "lowbit_job_status_cache_misses", "Job-status reads that went to the database", value=c.misses
        )
        yield CounterMetricFamily(
            "lowbit_job_status_cache_listener_losses", "Times the LISTEN connection was lost", value=c.losses
        )
        yield GaugeMetricFamily(
            "lowbit_job_status_cache_live",
            "1 while LISTEN is in effect and entries are served",
            value=float(c.live),
        )
        yield GaugeMetricFamily(
            "lowbit_job_status_cache_entries", "Cached job-status responses", value=c.size
        )
