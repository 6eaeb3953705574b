"""Uploads of models and datasets: structural checks and the finalize step that turns bytes into blobs."""
