"""The local cluster's Kubernetes API server (HTTPS, discovery, verbs, subresources)."""
