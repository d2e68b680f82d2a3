"""A single-node, Kubernetes-API-compatible cluster in network namespaces (for demos and tests)."""
