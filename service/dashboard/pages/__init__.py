"""Dashboard page routes, one module per area."""
