"""lowbit's quantization engine: pure PyTorch, usable alone (Python API and the `lowbit` CLI).

See shared/ARCHITECTURE.md for the package map; core never imports service or worker.
"""
