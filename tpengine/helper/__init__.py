"""The privileged helper: the only code that runs as root."""
