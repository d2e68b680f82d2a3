"""tpengine.engine."""
