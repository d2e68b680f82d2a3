"""tpengine.kube."""
