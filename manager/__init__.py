"""tpengine manager (cluster side)."""
