"""tpengine.fs."""
