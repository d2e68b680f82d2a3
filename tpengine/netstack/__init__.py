"""tpengine.netstack."""
