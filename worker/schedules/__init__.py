"""Nightly requantization: the beat tick that enqueues due schedule runs, the comparison of a run
with the schedule's previous successful run, and the signed regression webhook."""
