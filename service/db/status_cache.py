"""Job-status responses cached in the API process, dropped when PostgreSQL says the job row changed.

Why it exists: clients poll job status (the SDK's ``--wait``, the dashboard, platforms' schedulers) far
more often than a job changes. Each poll was a PostgreSQL round trip plus serialization, most of the
API's CPU per request on a loaded box. A trigger on ``jobs`` (migration 0003) sends ``NOTIFY
lowbit_jobs, '<job id>'`` in the transaction of every UPDATE or DELETE; PostgreSQL delivers it only
when that transaction commits. This process LISTENs on one connection of its own and drops the entry.

Correctness, case by case:

- A read that raced a change: ``put`` takes the generation seen *before* the query and stores only if
  no notification (for any job) arrived since. A notification that arrives after the put drops the
  entry. So an entry is never older than the last notification this process has handled.
- Notifications lost with the listening connection: while it is down nothing is served or stored,
  and every entry is dropped when it goes down. Serving resumes only after LISTEN runs again.
  A connection that dies silently is found by a ping after ``ping_s`` seconds without traffic.
- The window left: a commit is visible to other readers a moment before this process has handled
  its notification (the loop reads it as it reads the next request; under a millisecond idle).
  A change made through this API process (a cancel) drops the entry itself before it answers, so a
  client sees its own writes at once.

Entries are the exact response bytes, keyed by job id and checked against the caller's project;
at most ``max_entries`` (least recently stored first out). The listener belongs to the event loop that
started it; a cache used from another loop (tests) starts over on that loop.

>>> cache = JobStatusCache(connect_kwargs, max_entries=10_000)  # doctest: +SKIP
>>> cache.ensure_listening()  # on the running loop  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import psycopg

log = logging.getLogger("lowbit.api.status_cache")

CHANNEL = "lowbit_jobs"
_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # reconnect back-off after the listening connection is lost


class JobStatusCache:
    """Response bytes of job-status reads; see the module docstring for when they are served."""

    def __init__(
        self, connect_kwargs: Mapping[str, Any], max_entries: int = 10_000, ping_s: float = 5.0
    ) -> None:
        self.connect_kwargs, self.max_entries, self.ping_s = dict(connect_kwargs), max_entries, ping_s
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # job id -> (project id, body)
        self._generation = 0  # bumped by every drop: a put from before a drop is refused
        self._live = False  # LISTEN is in effect on a connection this process reads
        self._lock = threading.Lock()  # drops also come from threadpool routes (cancel)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.hits = 0  # reads answered from the cache
        self.misses = 0  # reads asked of the cache that went to the database
        self.losses = 0  # times the listening connection went down (or could not listen)

    # --- the request path -------------------------------------------------------------------
    def get(self, job_id: str, project_id: str) -> bytes | None:
        """The cached response for the caller's job, or None (not cached, another project's, not live)."""
        entry = self._entries.get(job_id) if self._live else None
        if entry is None or entry[0] != project_id:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def generation(self) -> int | None:
        """Take before reading the row; None: do not store what is read (not listening)."""
        return self._generation if self._live else None

    def put(self, job_id: str, project_id: str, body: bytes, generation: int | None) -> None:
        """Store ``body`` unless a drop happened since ``generation`` was taken."""
        if generation is None:
            return
        with self._lock:
            if not self._live or generation != self._generation:
                return
            self._entries[job_id] = (project_id, body)
            self._entries.move_to_end(job_id)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, job_id: str) -> None:
        """Forget ``job_id`` (its row changed or is about to be answered as changed)."""
        with self._lock:
            self._generation += 1
            self._entries.pop(job_id, None)

    @property
    def live(self) -> bool:
        return self._live

    @property
    def size(self) -> int:
        return len(self._entries)

    # --- the listener -----------------------------------------------------------------------
    def ensure_listening(self) -> None:
        """Start the listener on the running loop (once per loop; a no-op when it runs)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        self._stop_serving()
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._loop = loop
        self._task = loop.create_task(self._listen(), name="lowbit-job-status-listener")

    def close(self) -> None:
        """Stop serving; the listener task stops with its loop (or now, when on this loop)."""
        self._stop_serving()
        task, self._task = self._task, None
        if task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(task.cancel)

    def _stop_serving(self) -> None:
        with self._lock:
            self._live = False
            self._generation += 1
            self._entries.clear()

    async def _listen(self) -> None:
        # A listener replaced by one on another loop (ensure_listening) may still be running there until
        # its cancellation arrives: it must then neither switch serving on nor off for its successor.
        me = asyncio.current_task()
        failures = 0
        while self._task is me:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    **self.connect_kwargs, autocommit=True, application_name="lowbit-job-status-cache"
                )
            except psycopg.Error as exc:
                self.losses += 1
                log.warning("job-status cache: cannot connect to listen (%s); reads go to the database", exc)
            else:
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    with self._lock:
                        if self._task is not me:
                            return
                        self._generation += 1
                        self._live = True
                    failures = 0
                    await self._follow(conn, me)
                except (psycopg.Error, TimeoutError) as exc:
                    log.warning("job-status cache: listening connection lost (%r); not serving", exc)
                finally:
                    if self._task is me:
                        self.losses += 1
                        self._stop_serving()
                    with contextlib.suppress(Exception):
                        conn.pgconn.finish()
            await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
            failures += 1

    async def _follow(self, conn: psycopg.AsyncConnection[Any], me: asyncio.Task[None] | None) -> None:
        """Drop entries as notifications arrive; ping when quiet, so a dead connection is noticed."""
        while True:
            async for note in conn.notifies(timeout=self.ping_s):
                self.drop(note.payload)
            # A peer that stopped answering leaves the socket open: without a bound the ping waits
            # forever while entries stay served and notifications go unheard. An unanswered ping stops
            # serving at once; psycopg's cancellation of the query (up to seconds more) runs after.
            ping = asyncio.ensure_future(conn.execute("SELECT 1"))
            if not (await asyncio.wait({ping}, timeout=self.ping_s))[0]:
                if self._task is me:
                    self._stop_serving()
                ping.cancel()
                await asyncio.wait({ping})
                if not ping.cancelled():
                    ping.exception()  # retrieved: the connection is dropped either way
                raise TimeoutError(f"no answer to a ping within {self.ping_s} s")
            await ping
