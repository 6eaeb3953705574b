"""The job pipeline: fetch → prepare → technique → evaluate → export → upload, driven by
:func:`worker.pipeline.run.run_pipeline`. Stages own no HTTP and no status transitions."""
