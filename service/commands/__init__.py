"""The service's `lowbit` sub-commands, one module per group; service/cli.py registers them."""
