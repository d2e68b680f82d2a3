"""The package version, read once from the installed distribution."""

from importlib import metadata

try:
    __version__ = metadata.version("tpengine")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
