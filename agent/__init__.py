"""tpengine agent (cluster side)."""
