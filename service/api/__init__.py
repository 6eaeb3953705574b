"""The HTTP layer (FastAPI). Workers never import this package."""
