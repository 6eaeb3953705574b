"""lowbit's HTTP service: REST API, dashboard, persistence, object storage. Never imports core or torch."""
