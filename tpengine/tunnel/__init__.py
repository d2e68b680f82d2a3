"""tpengine.tunnel."""
