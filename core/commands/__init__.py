"""Engine sub-commands of the `lowbit` CLI; each module registers itself (see core/cli.py)."""
