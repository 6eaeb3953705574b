"""Per-resource queries, always scoped to a project where the resource belongs to one."""
