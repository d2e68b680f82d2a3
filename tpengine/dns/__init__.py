"""tpengine.dns."""
