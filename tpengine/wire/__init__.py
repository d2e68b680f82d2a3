"""tpengine.wire."""
