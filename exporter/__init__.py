"""claude-budget-exporter: how much Claude credit is left, billed and estimated."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("claude-budget-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
